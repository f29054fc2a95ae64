// Mints an HS256 JWT for local use: node scripts/mint-token.mjs SECRET USER_ID USERNAME [TTL_SECONDS]
import { createHmac } from "node:crypto";

const [secret, sub, username, ttl = "86400"] = process.argv.slice(2);
if (!secret || !sub || !username) {
  console.error("usage: mint-token.mjs SECRET USER_ID USERNAME [TTL_SECONDS]");
  process.exit(2);
}
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, username, iat: now, exp: now + Number(ttl) })}`;
const sig = createHmac("sha256", secret).update(body).digest("base64url");
console.log(`${body}.${sig}`);

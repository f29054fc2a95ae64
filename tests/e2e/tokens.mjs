// JWT minting for the tests (HS256/384/512 or "none"), so that tests can craft
// valid tokens and every kind of bad one.
import { createHmac, randomUUID } from "node:crypto";
import { JWT_SECRET } from "./harness.mjs";

const HASH = { HS256: "sha256", HS384: "sha384", HS512: "sha512" };

export function b64url(value) {
  const buf = Buffer.isBuffer(value) ? value : Buffer.from(typeof value === "string" ? value : JSON.stringify(value), "utf8");
  return buf.toString("base64url");
}

/**
 * mintToken(claims, {secret, alg, header}): header defaults to {alg, typ:"JWT"};
 * alg "none" gives an empty signature. header overrides the header written,
 * while alg still picks how it is signed.
 */
export function mintToken(claims, { secret = JWT_SECRET, alg = "HS256", header } = {}) {
  const h = header ?? { alg, typ: "JWT" };
  const signingInput = `${b64url(h)}.${b64url(claims)}`;
  if (alg === "none") return `${signingInput}.`;
  const hash = HASH[alg];
  if (!hash) throw new Error(`unsupported alg ${alg}`);
  const sig = createHmac(hash, secret).update(signingInput).digest("base64url");
  return `${signingInput}.${sig}`;
}

/**
 * An HS256 token over raw JSON texts (duplicate keys, odd headers: what
 * mintToken cannot express); pad adds "=" to the claims segment before signing.
 */
export function signRaw(headerJson, claimsJson, { secret = JWT_SECRET, pad = false } = {}) {
  const signingInput = `${b64url(headerJson)}.${b64url(claimsJson)}${pad ? "=" : ""}`;
  return `${signingInput}.${createHmac("sha256", secret).update(signingInput).digest("base64url")}`;
}

export const nowSec = () => Math.floor(Date.now() / 1000);

/** A fresh user: {id, username, claims, token}. */
export function makeUser(username = "user", extraClaims = {}) {
  const id = randomUUID();
  const claims = { sub: id, username, exp: nowSec() + 3600, ...extraClaims };
  return { id, username, claims, token: mintToken(claims) };
}

// The deployment test's client checks (tests/deploy/run.sh): the stock
// socket.io-client drives the Compose stack through its load balancer only.
//
//   node client.mjs ready URL                  the balancer answers /healthz 200
//   node client.mjs chat URL SECRET_FILE MODES PAIRS
//       MODES: comma-separated default (polling, then the WebSocket upgrade),
//       websocket, polling; PAIRS pairs of users per mode, all at once
//   node client.mjs write URL SECRET_FILE STATE_FILE    stores a message, notes it
//   node client.mjs verify URL SECRET_FILE STATE_FILE   finds that message in history
//   node client.mjs devlogin URL on|off        POST /dev/login answers 200 / 404
//   node client.mjs forged URL                 a forged X-Forwarded-For changes nothing
//
// Prints one line per check passed; on a failure prints why and exits 1.
// Every wait is bounded.
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { io } from "socket.io-client";

const WAIT_MS = 10000;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function check(ok, what) {
  if (!ok) throw new Error(what);
}

/** An HS256 token for a new or given user, signed with the stack's secret. */
function user(secret, username, id = randomUUID()) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: id, username, exp: now + 3600 })}`;
  const sig = createHmac("sha256", secret).update(body).digest("base64url");
  return { id, username, token: `${body}.${sig}` };
}

const TRANSPORTS = { default: undefined, websocket: ["websocket"], polling: ["polling"] };

/** Connects u with the given mode; for "default", also waits for the WebSocket upgrade. */
async function connect(url, u, mode) {
  const socket = io(url, { auth: { token: u.token }, transports: TRANSPORTS[mode], reconnection: false, forceNew: true });
  const upgraded =
    mode === "default" ? new Promise((resolve) => socket.io.on("open", () => socket.io.engine.once("upgrade", resolve))) : null;
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`${u.username} (${mode}): connect_error ${err.message}`)));
    }),
    WAIT_MS,
    `${u.username} (${mode}) to connect`,
  );
  if (upgraded) await withTimeout(upgraded, WAIT_MS, `${u.username}: the WebSocket upgrade`);
  const want = mode === "polling" ? "polling" : "websocket";
  check(socket.io.engine.transport.name === want, `${u.username} (${mode}): transport ${socket.io.engine.transport.name}, want ${want}`);
  return socket;
}

function nextEvent(socket, event, what) {
  return withTimeout(new Promise((resolve) => socket.once(event, resolve)), WAIT_MS, what);
}

async function send(socket, to, content) {
  const res = await socket.timeout(WAIT_MS).emitWithAck("message:send", {
    recipientId: to.id,
    content,
    type: "text",
    clientMessageId: randomUUID(),
  });
  check(res?.ok === true && res.message?.content === content, `message:send ack: ${JSON.stringify(res)}`);
  return res.message;
}

async function history(socket, withUser) {
  const res = await socket.timeout(WAIT_MS).emitWithAck("message:history", { withUserId: withUser.id });
  check(res?.ok === true && Array.isArray(res.messages), `message:history ack: ${JSON.stringify(res)}`);
  return res.messages;
}

/** Two users on mode: a message each way, both delivered live, both in history, newest first. */
async function pair(url, secret, mode, n) {
  const a = user(secret, `alice-${mode}-${n}`);
  const b = user(secret, `bob-${mode}-${n}`);
  const sa = await connect(url, a, mode);
  const sb = await connect(url, b, mode);
  try {
    const received = nextEvent(sb, "message:received", `${b.username}: message:received`);
    const m1 = await send(sa, b, `hello from ${a.username}`);
    check((await received).id === m1.id, `${b.username} received another message than ${m1.id}`);
    const back = nextEvent(sa, "message:received", `${a.username}: message:received`);
    const m2 = await send(sb, a, `hello back from ${b.username}`);
    check((await back).id === m2.id, `${a.username} received another message than ${m2.id}`);
    const ids = (await history(sa, b)).map((m) => m.id);
    check(ids.length === 2 && ids[0] === m2.id && ids[1] === m1.id, `history of ${a.username}: ${ids}, want ${m2.id},${m1.id}`);
  } finally {
    sa.close();
    sb.close();
  }
}

async function httpStatus(url, method = "GET", body) {
  const res = await fetch(url, {
    method,
    body,
    headers: body ? { "content-type": "application/json" } : {},
    signal: AbortSignal.timeout(5000),
  });
  await res.arrayBuffer();
  return res.status;
}

const commands = {
  async ready(url) {
    // The balancer may still be finding its edges: retry, within a bound.
    const deadline = Date.now() + 60000;
    let last = "no answer";
    while (Date.now() < deadline) {
      try {
        const status = await httpStatus(`${url}/healthz`);
        if (status === 200) return console.log(`ok: ${url}/healthz answers 200 through the balancer`);
        last = `status ${status}`;
      } catch (err) {
        last = err.message;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`${url}/healthz: ${last} after 60 s`);
  },

  async chat(url, secretFile, modes, pairs) {
    const secret = readFileSync(secretFile, "utf8").trim();
    for (const mode of modes.split(",")) {
      check(mode in TRANSPORTS, `unknown mode ${mode}`);
      const runs = Array.from({ length: Number(pairs) }, (_, i) => pair(url, secret, mode, i));
      await Promise.all(runs);
      console.log(`ok: ${pairs} pair(s) with transports ${mode}: connect, a message each way, history`);
    }
  },

  async write(url, secretFile, stateFile) {
    const secret = readFileSync(secretFile, "utf8").trim();
    const a = user(secret, "alice-persist");
    const b = user(secret, "bob-persist");
    // Messaging stores messages to users it knows: bob signs in once first.
    (await connect(url, b, "websocket")).close();
    const sa = await connect(url, a, "websocket");
    try {
      const m = await send(sa, b, "written before down");
      writeFileSync(stateFile, JSON.stringify({ a, b, id: m.id }));
      console.log(`ok: message ${m.id} stored`);
    } finally {
      sa.close();
    }
  },

  async verify(url, secretFile, stateFile) {
    const secret = readFileSync(secretFile, "utf8").trim();
    const { a, b, id } = JSON.parse(readFileSync(stateFile, "utf8"));
    // Fresh tokens for the same users: the stack's secret may be read anew.
    const sb = await connect(url, user(secret, b.username, b.id), "websocket");
    try {
      const ids = (await history(sb, a)).map((m) => m.id);
      check(ids.includes(id), `history after down/up: ${ids}, want ${id}`);
      console.log(`ok: message ${id} is in history after down and up`);
    } finally {
      sb.close();
    }
  },

  async devlogin(url, want) {
    const status = await httpStatus(`${url}/dev/login`, "POST", JSON.stringify({ username: "mallory" }));
    const expected = want === "on" ? 200 : 404;
    check(status === expected, `POST /dev/login: ${status}, want ${expected} (dev login ${want})`);
    console.log(`ok: dev login is ${want} (POST /dev/login ${status})`);
  },

  // The edges bind a long-polling session to the client's address, which
  // they take from the balancer's X-Forwarded-For. A client that sends its own
  // header, a different one on each request, keeps its session only if the
  // balancer replaces it with the real address: were it passed through, the
  // second request would come "from elsewhere" and get 400.
  async forged(url) {
    const poll = (sid, forged, init = {}) =>
      fetch(`${url}/socket.io/?EIO=4&transport=polling${sid ? `&sid=${sid}` : ""}`, {
        ...init,
        headers: { "X-Forwarded-For": forged, ...(init.headers || {}) },
        signal: AbortSignal.timeout(5000),
      });
    const open = await poll(null, "203.0.113.7");
    const text = await open.text();
    check(open.status === 200 && text.startsWith("0{"), `handshake: ${open.status} ${text.slice(0, 80)}`);
    const { sid } = JSON.parse(text.slice(1));
    const close = await poll(sid, "198.51.100.9", { method: "POST", body: "1", headers: { "content-type": "text/plain" } });
    const answer = await close.text();
    check(close.status === 200 && answer === "ok", `the same session with another forged address: ${close.status} ${answer}`);
    console.log("ok: a client's own X-Forwarded-For is replaced by the balancer");
  },
};

const [cmd, ...args] = process.argv.slice(2);
if (!commands[cmd]) {
  console.error(`usage: client.mjs ${Object.keys(commands).join("|")} ...`);
  process.exit(2);
}
commands[cmd](...args).then(
  () => process.exit(0),
  (err) => {
    console.error(`FAILED: client.mjs ${cmd}: ${err.message}`);
    process.exit(1);
  },
);

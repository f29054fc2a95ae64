// The edge's abuse limits, each on its own edge with small explicit values
// (the harness turns them off by default): the token bucket of client events
// per socket (EDGE_EVENTS_PER_S / EDGE_EVENTS_BURST: refused events get
// chat:error or the ack's error "rate_limited"; EDGE_RATE_DISCONNECT refusals
// in a row get a Socket.IO DISCONNECT and the session closed), sockets per
// user per edge (EDGE_MAX_SOCKETS_PER_USER: CONNECT_ERROR "too many
// connections"), Engine.IO sessions per client address (EDGE_MAX_CONN_PER_IP)
// and handshakes per second per address (EDGE_HANDSHAKES_PER_S, burst twice
// that): a WebSocket over the limit is accepted then closed at once, a polling
// handshake gets HTTP 429; ghost text size (EDGE_MAX_GHOST_TEXT), presence:request
// size (EDGE_MAX_PRESENCE_QUERY), the Origin check of WebSocket upgrades when
// EDGE_CORS_ORIGINS is set, the token lifetime (DISCONNECT at exp; a client
// whose auth is a callback gets in again with a fresh token), and a leak check:
// the edge's RSS after a connect/disconnect churn of 3,000 sockets.
//
// Client addresses: the edge listens on 127.0.0.1; clients bind other loopback
// addresses (127.0.0.2, ...) as their source to be other "clients".
import assert from "node:assert/strict";
import http from "node:http";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { before, after, describe } from "node:test";
import WebSocket from "ws";
import { io } from "socket.io-client";
import {
  test,
  startNats,
  startPostgres,
  startPresence,
  startEdge,
  connectClient,
  clientOptions,
  UpgradeGate,
  transportOf,
  record,
  httpRequest,
  shutdown,
  withTimeout,
  delay,
  EDGE_BIN,
  TRANSPORTS,
  sessionTag,
} from "./harness.mjs";
import { makeUser, mintToken, nowSec } from "./tokens.mjs";

// Every limit, explicitly; a describe() overrides the ones it tests.
const LIMITS_OFF = {
  EDGE_MAX_CONN_PER_IP: "0",
  EDGE_HANDSHAKES_PER_S: "0",
  EDGE_EVENTS_PER_S: "1000000",
  EDGE_EVENTS_BURST: "1000000",
  EDGE_RATE_DISCONNECT: "1000000",
  EDGE_MAX_SOCKETS_PER_USER: "100000",
};

let nats;
let pg;
let presence;

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  presence = await startPresence({ nats, pg });
});

const sockets = new Set();
after(() => {
  for (const s of sockets) s.close();
  return shutdown();
});

const edgeWith = (name, env) => startEdge({ nats, name, env: { ...LIMITS_OFF, ...env } });
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");

// ---------------------------------------------------------------- raw clients from any loopback address

const NOISE = /^42\["(user:status|presence:update)",/;

/** A raw Engine.IO WebSocket from localAddress; frames queued, presence noise skipped by next(). */
function rawWs(edge, { localAddress = "127.0.0.1", headers, query = "EIO=4&transport=websocket" } = {}) {
  const ws = new WebSocket(`${edge.wsBase}/socket.io/?${query}`, { perMessageDeflate: false, localAddress, headers });
  const c = { ws, frames: [], cursor: 0, waiters: [], closeInfo: null, status: null };
  const wake = () => {
    for (const w of c.waiters.splice(0)) w();
  };
  c.opened = new Promise((resolve) => {
    ws.once("open", () => resolve({ ok: true }));
    ws.once("unexpected-response", (_req, res) => {
      resolve({ ok: false, status: res.statusCode });
      res.resume();
      ws.terminate();
    });
    ws.once("close", () => resolve({ ok: false, closedBeforeOpen: true }));
  });
  c.closed = new Promise((resolve) => {
    ws.once("close", (code, reason) => {
      c.closeInfo = { code, reason: reason.toString() };
      wake();
      resolve(c.closeInfo);
    });
  });
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    c.frames.push(isBinary ? `<binary ${data.length}>` : data.toString());
    wake();
  });
  /** The next text frame that is not presence noise; rejects on close or after ms. */
  c.next = async (ms = 3000, what = "the next frame") => {
    const end = Date.now() + ms;
    for (;;) {
      while (c.cursor < c.frames.length) {
        const f = c.frames[c.cursor++];
        if (!NOISE.test(f)) return f;
      }
      if (c.closeInfo) throw new Error(`connection closed (${c.closeInfo.code}) while waiting for ${what}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise((r) => {
        const t = setTimeout(r, left);
        c.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  /** Every frame (noise skipped) until the server closes; bounded. */
  c.restUntilClosed = async (ms = 3000) => {
    const rest = [];
    for (;;) {
      try {
        rest.push(await c.next(ms, "the server to close the connection"));
      } catch (err) {
        if (c.closeInfo) return rest;
        throw err;
      }
    }
  };
  c.send = (t) => ws.send(t);
  c.close = () => ws.terminate();
  sockets.add(c);
  return c;
}

/** A raw WebSocket session that must open; returns the client with .sid. */
async function openWs(edge, opts) {
  const c = rawWs(edge, opts);
  const r = await withTimeout(c.opened, 3000, "the WebSocket upgrade");
  assert.deepEqual(r, { ok: true }, "the upgrade");
  const open = await c.next(3000, "the open packet");
  assert.match(open, /^0\{/);
  c.sid = JSON.parse(open.slice(1)).sid;
  return c;
}

/** openWs + CONNECT with user's token, accepted. */
async function connectRaw(edge, user, opts) {
  const c = await openWs(edge, opts);
  c.send("40" + JSON.stringify({ token: user.token }));
  assert.match(await c.next(3000, "the CONNECT reply"), /^40\{"sid":/);
  return c;
}

/**
 * A WebSocket refused by an address limit: the upgrade is accepted (101) and
 * the connection closed at once, with no frame (no open packet).
 */
async function expectWsRefused(edge, opts, what) {
  const c = rawWs(edge, opts);
  const r = await withTimeout(c.opened, 3000, `the upgrade (${what})`);
  const rest = await c.restUntilClosed(3000);
  assert.deepEqual({ upgraded: r.ok, frames: rest }, { upgraded: true, frames: [] }, `${what}: accepted, then closed with nothing sent`);
}

/** An HTTP request from localAddress (fetch cannot choose its source address). */
function requestFrom(edge, path, localAddress, { method = "GET", body, ms = 3000 } = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const headers = body === undefined ? {} : { "Content-Type": "text/plain;charset=UTF-8", "Content-Length": Buffer.byteLength(body) };
      const req = http.request({ host: "127.0.0.1", port: edge.port, path, method, headers, localAddress, agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode, text }));
      });
      req.on("error", reject);
      req.end(body);
    }),
    ms,
    `${method} ${path} from ${localAddress}`,
  );
}
const getFrom = (edge, path, localAddress, ms) => requestFrom(edge, path, localAddress, { ms });

let pollT = 0;
const pollPath = (sid) => `/socket.io/?EIO=4&transport=polling${sid ? `&sid=${sid}` : ""}&t=${++pollT}`;

/** A polling handshake from localAddress: the sid, or the refusal {status, text}. */
async function pollHandshake(edge, localAddress) {
  const r = await getFrom(edge, pollPath(), localAddress);
  if (r.status !== 200) return r;
  const open = r.text.split("\x1e")[0];
  assert.match(open, /^0\{/);
  return { status: 200, sid: JSON.parse(open.slice(1)).sid };
}

/** Closes a polling session with POST "1", from the address that opened it (any other is refused). */
const closePolling = (edge, sid, localAddress) => requestFrom(edge, pollPath(sid), localAddress, { method: "POST", body: "1" }).catch(() => {});

/** Waits for the edge's log of the end of session sid (the address's count is released then). */
const sessionClosed = (edge, sid) => edge.child.waitForLine(new RegExp(`session closed session=${sessionTag(sid)} `), 3000, `the edge closing session ${sid}`);

/**
 * socket.io-client from a chosen address. A WebSocket refused by an address
 * limit is closed before the open packet, which the client reports only when
 * its connect `timeout` runs out: 1 s here (20 s by default).
 */
function ioFrom(edge, auth, { localAddress, transport = "websocket", reconnection = false } = {}) {
  const o = clientOptions(auth, { transport });
  if (localAddress) o.localAddress = localAddress;
  o.reconnection = reconnection;
  o.timeout = 1000;
  const s = io(edge.url, o);
  sockets.add(s);
  return s;
}

function connectOutcome(socket, ms = 5000) {
  return withTimeout(
    new Promise((resolve) => {
      socket.once("connect", () => resolve({ connected: true }));
      socket.once("connect_error", (err) => resolve({ connected: false, message: err.message }));
    }),
    ms,
    "connect or connect_error",
  );
}

/** The value of one series of the edge's /metrics, or 0. */
async function metric(edge, series) {
  const r = await httpRequest(`${edge.url}/metrics`);
  const line = r.text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

const ack = (frame) => {
  const m = /^43(\d+)(\[.*\])$/s.exec(frame);
  assert.ok(m, `expected an ack, got ${JSON.stringify(frame)}`);
  return { id: Number(m[1]), res: JSON.parse(m[2])[0] };
};
const RATE_LIMITED = { ok: false, error: { code: "rate_limited", message: "too many events: slow down" } };

/** Sends n acked typing:stop to `to` (ids from first); resolves with the n acks {id, res} in order. */
async function burst(c, n, to, first = 1) {
  for (let i = 0; i < n; i++) c.send(`42${first + i}${JSON.stringify(["typing:stop", { recipientId: to }])}`);
  const acks = [];
  for (let i = 0; i < n; i++) acks.push(ack(await c.next(3000, `ack ${first + i}`)));
  assert.deepEqual(acks.map((a) => a.id), Array.from({ length: n }, (_, i) => first + i), "one ack per event, in order");
  return acks;
}
const oks = (acks) => acks.filter((a) => a.res.ok === true).length;

// ---------------------------------------------------------------- events per socket

describe("EDGE_EVENTS_PER_S=5, EDGE_EVENTS_BURST=10: a token bucket per socket", () => {
  const RATE = 5;
  const BURST = 10;
  let edge;
  let rita; // a recipient (socket.io-client)
  before(async () => {
    edge = await edgeWith("abuse-rate", { EDGE_EVENTS_PER_S: String(RATE), EDGE_EVENTS_BURST: String(BURST), EDGE_RATE_DISCONNECT: "1000" });
    rita = makeUser("rita");
    rita.c = await connectClient(edge.url, rita.token);
  });

  /** Marker from another user: it must be rita's next event. */
  async function marker(what) {
    const m = makeUser("marker");
    const mc = await connectRaw(edge, m);
    mc.send("42" + JSON.stringify(["typing:start", { recipientId: rita.id }]));
    const e = await rita.c.rec.next(3000, `the marker (${what})`);
    assert.deepEqual(e, { event: "typing:start", args: [{ userId: m.id, username: "marker" }] }, `${what}: the marker is rita's next event`);
    mc.close();
  }

  test("a burst of BURST + 4 acked events at once: the first BURST are taken and relayed, the next 4 get {ok:false, error:{code:'rate_limited'}} and are not relayed", async () => {
    const m = makeUser("mallory");
    const c = await connectRaw(edge, m);
    const acks = await burst(c, BURST + 4, rita.id);
    assert.deepEqual(acks.map((a) => a.res), [...Array(BURST).fill({ ok: true }), ...Array(4).fill(RATE_LIMITED)]);
    for (let i = 0; i < BURST; i++) assert.deepEqual(await rita.c.rec.next(3000, `relay ${i + 1}`), { event: "typing:stop", args: [{ userId: m.id }] });
    await marker("no 11th relay");
    c.close();
  });

  test("without an ack: a refused event gets chat:error {event, code:'rate_limited', message}", async () => {
    const c = await connectRaw(edge, makeUser("mallory"));
    await burst(c, BURST, randomUUID());
    c.send(`42${JSON.stringify(["ghost:typing", { recipientId: rita.id, text: "x" }])}`);
    assert.equal(await c.next(3000, "chat:error"), `42${JSON.stringify(["chat:error", { event: "ghost:typing", code: "rate_limited", message: "too many events: slow down" }])}`);
    await marker("the refused ghost:typing was not relayed");
    c.close();
  });

  test("the bucket refills at EDGE_EVENTS_PER_S: after 1 s about 5 events pass, not the burst", async () => {
    const c = await connectRaw(edge, makeUser("mallory"));
    const t0 = Date.now();
    assert.equal(oks(await burst(c, BURST, randomUUID())), BURST, "the full burst first");
    const t1 = Date.now(); // every take of the burst happened before this
    await delay(1000); // the refill window under test
    const t2 = Date.now(); // every take of the next batch happens after this
    const acks = await burst(c, BURST, randomUUID(), 100);
    const t3 = Date.now();
    // Tokens at the second batch: elapsed × RATE, elapsed between the two batches' takes.
    const lo = Math.floor(((t2 - t1) * RATE) / 1000);
    const hi = Math.min(BURST, Math.ceil(((t3 - t0) * RATE) / 1000));
    const n = oks(acks);
    assert.ok(n >= lo && n <= hi, `${n} of ${BURST} taken after ${t2 - t1}–${t3 - t0} ms; expected ${lo}..${hi}`);
    assert.ok(n < BURST, "the rate, not the burst");
    assert.deepEqual(acks.slice(n).map((a) => a.res), Array(BURST - n).fill(RATE_LIMITED), "the taken ones first, then refusals");
    c.close();
  });

  test("per socket: with one socket's bucket empty, another socket of the same user and a socket of another user are not limited", async () => {
    const m = makeUser("mallory");
    const c1 = await connectRaw(edge, m);
    await burst(c1, BURST, randomUUID());
    assert.deepEqual((await burst(c1, 1, randomUUID(), 50))[0].res, RATE_LIMITED, "the first socket is limited");
    const c2 = await connectRaw(edge, m);
    assert.equal(oks(await burst(c2, BURST, randomUUID())), BURST, "a second socket of the same user: its own bucket");
    const c3 = await connectRaw(edge, makeUser("other"));
    assert.equal(oks(await burst(c3, BURST, randomUUID())), BURST, "another user");
    for (const c of [c1, c2, c3]) c.close();
  });

  test("socket.io-client: ghost:typing is paced by the same bucket; the refused emitWithAck resolves {ok:false, error:{code:'rate_limited'}}; rita gets taken texts only, in order, the last taken one surely", async () => {
    const g = makeUser("gina");
    const { socket } = await connectClient(edge.url, g.token);
    sockets.add(socket);
    const res = await Promise.all(Array.from({ length: BURST + 2 }, (_, i) => socket.timeout(3000).emitWithAck("ghost:typing", { recipientId: rita.id, text: `t${i}` })));
    assert.deepEqual(res, [...Array(BURST).fill({ ok: true }), RATE_LIMITED, RATE_LIMITED]);
    // A ghost:typing still queued for rita is replaced by the next one (latest
    // text wins), so some of t0..t(BURST-1) may be skipped, never reordered.
    for (let last = -1; last < BURST - 1; ) {
      const ev = await rita.c.rec.next(3000, `ghost texts up to t${BURST - 1}`);
      assert.equal(ev.event, "ghost:typing");
      assert.equal(ev.args[0].userId, g.id);
      const i = Number(ev.args[0].text.slice(1));
      assert.ok(i > last && i < BURST, `t${i} after t${last}`);
      last = i;
    }
    await marker("no ghost text past the burst");
    assert.equal(socket.connected, true, "refusals alone do not disconnect");
    socket.close();
  });
});

// ---------------------------------------------------------------- persistent abuse

describe("EDGE_RATE_DISCONNECT=10 (EDGE_EVENTS_PER_S=5, EDGE_EVENTS_BURST=5): persistent abuse is disconnected", () => {
  const RATE = 5;
  const BURST = 5;
  const KICK = 10;
  let edge;
  before(async () => {
    edge = await edgeWith("abuse-kick", { EDGE_EVENTS_PER_S: String(RATE), EDGE_EVENTS_BURST: String(BURST), EDGE_RATE_DISCONNECT: String(KICK) });
  });

  test("raw: BURST taken, KICK − 1 refused, and the KICK-th refusal in a row gets `41` (no ack) and the WebSocket closed; chat_edge_disconnects_total{reason=\"rate_limited\"} counts it", async () => {
    const m = makeUser("mallory");
    const c = await connectRaw(edge, m);
    const before = await metric(edge, 'chat_edge_disconnects_total{reason="rate_limited"}');
    for (let i = 1; i <= BURST + KICK; i++) c.send(`42${i}${JSON.stringify(["typing:stop", { recipientId: randomUUID() }])}`);
    const frames = [];
    for (let i = 0; i < BURST + KICK - 1; i++) frames.push(ack(await c.next(3000, `ack ${i + 1}`)).res);
    assert.deepEqual(frames, [...Array(BURST).fill({ ok: true }), ...Array(KICK - 1).fill(RATE_LIMITED)]);
    assert.equal(await c.next(3000, "the DISCONNECT"), "41", "a Socket.IO DISCONNECT instead of the last ack");
    assert.deepEqual(await c.restUntilClosed(3000), [], "then the connection is closed, nothing else sent");
    await edge.child.waitForLine(new RegExp(`rate limit: disconnecting user=${m.id} `), 3000, "the edge's log of the kick");
    assert.equal(await metric(edge, 'chat_edge_disconnects_total{reason="rate_limited"}'), before + 1);
  });

  test("only refusals in a row count: KICK − 1 refused, one taken after a refill, KICK − 1 refused again → still connected; one more → disconnected", async () => {
    const c = await connectRaw(edge, makeUser("mallory"));
    const to = randomUUID();
    let id = 1;
    const acks1 = await burst(c, BURST + KICK - 1, to, id);
    id += BURST + KICK - 1;
    assert.equal(oks(acks1), BURST);
    await delay(Math.ceil(1000 / RATE) + 50); // one token comes back
    const [reset] = await burst(c, 1, to, id++);
    assert.deepEqual(reset.res, { ok: true }, "an event taken after the refill");
    const acks2 = await burst(c, KICK - 1, to, id);
    id += KICK - 1;
    assert.deepEqual(acks2.map((a) => a.res), Array(KICK - 1).fill(RATE_LIMITED), "KICK − 1 refusals again, still connected");
    c.send(`42${id}${JSON.stringify(["typing:stop", { recipientId: to }])}`);
    assert.equal(await c.next(3000, "the DISCONNECT"), "41");
    assert.deepEqual(await c.restUntilClosed(3000), []);
  });

  test("socket.io-client flooding without acks: chat:error rate_limited KICK − 1 times, then disconnect with reason 'io server disconnect'", async () => {
    const u = makeUser("flooder");
    const { socket, rec, disconnects } = await connectClient(edge.url, u.token);
    sockets.add(socket);
    const gone = new Promise((resolve) => socket.once("disconnect", resolve));
    for (let i = 0; i < BURST + KICK; i++) socket.emit("typing:start", { recipientId: randomUUID() });
    assert.equal(await withTimeout(gone, 3000, "the disconnect"), "io server disconnect");
    assert.deepEqual(rec.events, Array(KICK - 1).fill({ event: "chat:error", args: [{ event: "typing:start", code: "rate_limited", message: "too many events: slow down" }] }));
    assert.deepEqual(disconnects, ["io server disconnect"]);
    assert.equal(socket.connected, false);
  });
});

// ---------------------------------------------------------------- sockets per user

describe("EDGE_MAX_SOCKETS_PER_USER=3, per edge", () => {
  const MAX = 3;
  let edge1;
  let edge2;
  before(async () => {
    [edge1, edge2] = await Promise.all([
      edgeWith("abuse-user-1", { EDGE_MAX_SOCKETS_PER_USER: String(MAX) }),
      edgeWith("abuse-user-2", { EDGE_MAX_SOCKETS_PER_USER: String(MAX) }),
    ]);
  });

  test("the 4th socket of a user on one edge gets CONNECT_ERROR {message:'too many connections'} (raw: exactly that); another user connects; the same user connects on the other edge; after one of the 3 closes, a new one connects", async () => {
    const u = makeUser("ursula");
    const three = [];
    for (let i = 0; i < MAX; i++) three.push(await connectClient(edge1.url, u.token));
    for (const c of three) sockets.add(c.socket);

    const s4 = ioFrom(edge1, { token: u.token });
    assert.deepEqual(await connectOutcome(s4), { connected: false, message: "too many connections" });
    s4.close();
    const raw = await openWs(edge1);
    raw.send("40" + JSON.stringify({ token: u.token }));
    assert.equal(await raw.next(3000, "the CONNECT_ERROR"), '44{"message":"too many connections"}');
    raw.close();

    const other = await connectClient(edge1.url, makeUser("other").token);
    sockets.add(other.socket);
    const elsewhere = await connectClient(edge2.url, u.token);
    sockets.add(elsewhere.socket);

    const sid = three[0].socket.id;
    three[0].socket.close();
    await edge1.child.waitForLine(new RegExp(`disconnect user=${u.id} socket=${esc(sid)} `), 3000, "the edge's disconnect of the first socket");
    const again = await connectClient(edge1.url, u.token);
    sockets.add(again.socket);
    assert.equal(again.socket.connected, true);
    for (const c of [...three, other, elsewhere, again]) c.socket.close();
  });
});

// ---------------------------------------------------------------- sessions per address

describe("EDGE_MAX_CONN_PER_IP=3: Engine.IO sessions per client address", () => {
  let edge;
  before(async () => {
    edge = await edgeWith("abuse-ip", { EDGE_MAX_CONN_PER_IP: "3", EDGE_HANDSHAKES_PER_S: "0" });
  });

  test("from 127.0.0.2: 2 WebSockets + 1 polling session open; a 4th WebSocket is accepted then closed at once, a polling handshake gets 429 {code:4, message:'Forbidden'}, socket.io-client gets connect_error; 127.0.0.3 is not limited; a closed session frees its place", async () => {
    const A2 = "127.0.0.2";
    const w1 = await openWs(edge, { localAddress: A2 });
    const w2 = await openWs(edge, { localAddress: A2 });
    const p = await pollHandshake(edge, A2);
    assert.equal(p.status, 200, `the polling session: ${JSON.stringify(p)}`);

    await expectWsRefused(edge, { localAddress: A2 }, "a 4th session over WebSocket");
    assert.deepEqual(await pollHandshake(edge, A2), { status: 429, text: '{"code":4,"message":"Forbidden"}' }, "a 4th session over polling");
    const s = ioFrom(edge, { token: makeUser("x").token }, { localAddress: A2 });
    const out = await connectOutcome(s);
    assert.equal(out.connected, false, "socket.io-client from the full address");
    s.close();

    const other = await openWs(edge, { localAddress: "127.0.0.3" });
    other.close();

    w1.close();
    await sessionClosed(edge, w1.sid);
    const w3 = await openWs(edge, { localAddress: A2 });
    await expectWsRefused(edge, { localAddress: A2 }, "full again");
    await closePolling(edge, p.sid, A2);
    await sessionClosed(edge, p.sid);
    const p2 = await pollHandshake(edge, A2);
    assert.equal(p2.status, 200, "a polling session after the previous one closed");
    await closePolling(edge, p2.sid, A2);
    for (const c of [w2, w3]) c.close();
  });
});

// ---------------------------------------------------------------- handshakes per address

describe("EDGE_HANDSHAKES_PER_S=2 (burst 4): new sessions per second per address", () => {
  const RATE = 2;
  const BURST = 2 * RATE;
  let edge;
  before(async () => {
    edge = await edgeWith("abuse-handshakes", { EDGE_HANDSHAKES_PER_S: String(RATE), EDGE_MAX_CONN_PER_IP: "0" });
  });

  test("from 127.0.0.4: 4 handshakes pass, the 5th WebSocket is accepted then closed, a polling handshake gets 429; 127.0.0.5 is not limited; after 1/RATE s one more passes, and only one", async () => {
    const A4 = "127.0.0.4";
    const t0 = Date.now();
    const open = [];
    for (let i = 0; i < BURST; i++) open.push(await openWs(edge, { localAddress: A4 }));
    const t4 = Date.now(); // the last token was taken before this
    await expectWsRefused(edge, { localAddress: A4 }, "the 5th handshake");
    assert.deepEqual(await pollHandshake(edge, A4), { status: 429, text: '{"code":4,"message":"Forbidden"}' });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 1000 / RATE, `the burst took ${elapsed} ms, longer than one token's refill (${1000 / RATE} ms): the refusals above prove nothing`);
    (await openWs(edge, { localAddress: "127.0.0.5" })).close();

    await delay(Math.max(0, t4 + 1000 / RATE + 100 - Date.now())); // one token's refill (and less than two)
    open.push(await openWs(edge, { localAddress: A4 }));
    await expectWsRefused(edge, { localAddress: A4 }, "the next one right after");
    // (socket.io-client's long-polling in Node ignores localAddress: WebSocket only.)
    const s = ioFrom(edge, { token: makeUser("x").token }, { localAddress: A4 });
    assert.equal((await connectOutcome(s)).connected, false, "socket.io-client from the throttled address");
    s.close();
    for (const c of open) c.close();
  });
});

// ---------------------------------------------------------------- sizes

describe("EDGE_MAX_GHOST_TEXT=16 and EDGE_MAX_PRESENCE_QUERY=5", () => {
  let edge;
  let rita;
  before(async () => {
    edge = await edgeWith("abuse-sizes", { EDGE_MAX_GHOST_TEXT: "16", EDGE_MAX_PRESENCE_QUERY: "5" });
    rita = makeUser("rita");
    rita.c = await connectClient(edge.url, rita.token);
    sockets.add(rita.c.socket);
  });

  test("ghost:typing: 16 bytes (8 × 'é') are relayed; 17 ASCII bytes and 9 × 'é' (18 bytes, 9 characters) get too_large (ack and chat:error) and are not relayed", async () => {
    const g = makeUser("gina");
    const { socket, rec } = await connectClient(edge.url, g.token);
    sockets.add(socket);
    assert.deepEqual(await socket.timeout(3000).emitWithAck("ghost:typing", { recipientId: rita.id, text: "é".repeat(8) }), { ok: true });
    assert.deepEqual(await rita.c.rec.next(3000, "the 16-byte ghost text"), { event: "ghost:typing", args: [{ userId: g.id, text: "é".repeat(8) }] });
    const tooLarge = { ok: false, error: { code: "too_large", message: "text is longer than EDGE_MAX_GHOST_TEXT bytes" } };
    assert.deepEqual(await socket.timeout(3000).emitWithAck("ghost:typing", { recipientId: rita.id, text: "a".repeat(17) }), tooLarge);
    assert.deepEqual(await socket.timeout(3000).emitWithAck("ghost:typing", { recipientId: rita.id, text: "é".repeat(9) }), tooLarge);
    socket.emit("ghost:typing", { recipientId: rita.id, text: "b".repeat(17) });
    assert.deepEqual(await rec.next(3000, "chat:error"), { event: "chat:error", args: [{ event: "ghost:typing", code: "too_large", message: tooLarge.error.message }] });
    socket.emit("typing:stop", { recipientId: rita.id });
    assert.deepEqual(await rita.c.rec.next(3000, "the marker"), { event: "typing:stop", args: [{ userId: g.id }] }, "nothing too large was relayed before the marker");
    socket.close();
  });

  test("presence:request: 5 ids → {ok:true, users} of 5 and presence:response; 6 ids → too_large (ack and chat:error)", async () => {
    const u = makeUser("quinn");
    const { socket, rec } = await connectClient(edge.url, u.token);
    sockets.add(socket);
    const others = [makeUser("o1"), makeUser("o2"), makeUser("o3")]; // seen: presence answers for them
    for (const o of others) sockets.add((await connectClient(edge.url, o.token)).socket);
    const five = [u.id, rita.id, ...others.map((o) => o.id)];
    const res = await socket.timeout(3000).emitWithAck("presence:request", five);
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.deepEqual(res.users.map((x) => x.userId), five);
    assert.deepEqual(await rec.next(3000, "presence:response"), { event: "presence:response", args: [res.users] });
    const tooLarge = { ok: false, error: { code: "too_large", message: "more user ids than EDGE_MAX_PRESENCE_QUERY" } };
    assert.deepEqual(await socket.timeout(3000).emitWithAck("presence:request", [...five, randomUUID()]), tooLarge);
    socket.emit("presence:request", [...five, randomUUID()]);
    assert.deepEqual(await rec.next(3000, "chat:error"), { event: "chat:error", args: [{ event: "presence:request", code: "too_large", message: tooLarge.error.message }] });
    socket.close();
  });
});

// ---------------------------------------------------------------- Origin of WebSocket upgrades

describe("EDGE_CORS_ORIGINS and WebSocket upgrades", () => {
  let listed;
  let any;
  let none;
  before(async () => {
    [listed, any, none] = await Promise.all([
      edgeWith("abuse-origin-list", { EDGE_CORS_ORIGINS: "https://app.example, https://admin.example" }),
      edgeWith("abuse-origin-any", { EDGE_CORS_ORIGINS: "*" }),
      edgeWith("abuse-origin-none", { EDGE_CORS_ORIGINS: "" }),
    ]);
  });

  const upgrade = async (edge, origin) => {
    const c = rawWs(edge, { headers: origin === undefined ? {} : { Origin: origin } });
    const r = await withTimeout(c.opened, 3000, `the upgrade with Origin ${origin}`);
    if (r.ok) assert.match(await c.next(3000, "the open packet"), /^0\{/);
    c.close();
    return r.ok;
  };

  test("a list: each listed origin and no Origin header are upgraded", async () => {
    assert.equal(await upgrade(listed, "https://app.example"), true);
    assert.equal(await upgrade(listed, "https://admin.example"), true);
    assert.equal(await upgrade(listed, undefined), true, "no Origin (not a browser)");
  });

  test("a list: an Origin not in it is refused (no WebSocket): another host, another port, another scheme, a suffix, null", async () => {
    const foreign = ["https://evil.example", "https://app.example:8443", "http://app.example", "https://app.example.evil.example", "null"];
    const upgraded = {};
    for (const origin of foreign) upgraded[origin] = await upgrade(listed, origin);
    assert.deepEqual(upgraded, Object.fromEntries(foreign.map((o) => [o, false])), "origin → upgraded");
  });

  test("socket.io-client with a foreign Origin cannot connect over WebSocket", async () => {
    const o = clientOptions({ token: makeUser("x").token }, { transport: "websocket" });
    o.extraHeaders = { Origin: "https://evil.example" };
    const s = io(listed.url, o);
    sockets.add(s);
    const out = await connectOutcome(s);
    assert.equal(out.connected, false, `connected with Origin https://evil.example (${JSON.stringify(out)})`);
    s.close();
  });

  test("'*': any Origin is upgraded; empty (the default): no check, any Origin is upgraded", async () => {
    assert.equal(await upgrade(any, "https://evil.example"), true);
    assert.equal(await upgrade(none, "https://evil.example"), true);
  });
});

// ---------------------------------------------------------------- token lifetime

describe("token lifetime: DISCONNECT at exp", () => {
  let edge;
  before(async () => {
    edge = await edgeWith("abuse-expiry", {});
  });

  /** Waits until the wall clock is `frac` into a second, so that exp lands away from the edge's second boundaries. */
  const alignTo = (frac) => delay((1000 + frac * 1000 - (Date.now() % 1000)) % 1000);

  /**
   * Connects u with auth as a callback returning the current token (tokenRef.token)
   * over transport; resolves {socket, rec, calls()} once connected (and upgraded).
   */
  async function connectWithCallback(tokenRef, transport) {
    let calls = 0;
    const gate = transport === "default" ? new UpgradeGate() : undefined;
    const socket = io(edge.url, { ...clientOptions(undefined, { transport, gate }), auth: (cb) => (calls++, cb({ token: tokenRef.token })) });
    sockets.add(socket);
    const rec = record(socket);
    await withTimeout(new Promise((res, rej) => (socket.once("connect", res), socket.once("connect_error", rej))), 5000, "connect");
    if (gate) {
      gate.release();
      await withTimeout(new Promise((res) => socket.io.engine.once("upgrade", res)), 5000, "the upgrade");
    }
    assert.equal(transportOf(socket), "websocket");
    return { socket, rec, calls: () => calls };
  }

  for (const transport of TRANSPORTS) {
    test(`${transport}: the socket gets DISCONNECT at exp: client reason 'io server disconnect', within 250 ms of exp, no event with it`, { timeout: 20000 }, async () => {
      const u = makeUser("tess");
      await alignTo(0.6); // connect 0.6 s into a second: a rounding of the delay to whole seconds would show
      const exp = nowSec() + 2;
      const { socket, rec } = await connectWithCallback({ token: mintToken({ ...u.claims, exp }) }, transport);
      const firstId = socket.id;
      const reason = await withTimeout(new Promise((res) => socket.once("disconnect", res)), 5000, "the disconnect at exp");
      const at = Date.now();
      assert.equal(reason, "io server disconnect");
      assert.deepEqual(rec.events, [], "no event with the DISCONNECT");
      await edge.child.waitForLine(new RegExp(`token expired user=${u.id} socket=${esc(firstId)}: disconnecting`), 3000, "the edge's log");
      assert.ok(at >= exp * 1000 - 50, `disconnected ${exp * 1000 - at} ms before exp`);
      assert.ok(at <= exp * 1000 + 250, `disconnected ${at - exp * 1000} ms after exp (the token's exp is ${new Date(exp * 1000).toISOString()}, the socket connected at about ${new Date(exp * 1000 - 1400).toISOString()})`);
      socket.close();
    });

    test(`${transport}: a client whose auth is a callback calls socket.connect() after the DISCONNECT and gets in again with a fresh token; relays reach it`, { timeout: 20000 }, async () => {
      const u = makeUser("tess");
      const r = makeUser("rita");
      const rc = await connectClient(edge.url, r.token);
      sockets.add(rc.socket);
      const ref = { token: mintToken({ ...u.claims, exp: nowSec() + 2 }) };
      const { socket, rec, calls } = await connectWithCallback(ref, transport);
      const firstId = socket.id;
      assert.equal(await withTimeout(new Promise((res) => socket.once("disconnect", res)), 5000, "the disconnect at exp"), "io server disconnect");
      ref.token = mintToken({ ...u.claims, exp: nowSec() + 3600 });
      socket.connect();
      await withTimeout(new Promise((res, rej) => (socket.once("connect", res), socket.once("connect_error", rej))), 5000, "connect with the fresh token");
      assert.notEqual(socket.id, firstId);
      assert.equal(calls(), 2, "the auth callback was asked again");
      rc.socket.emit("typing:stop", { recipientId: u.id });
      assert.deepEqual(await rec.next(3000, "a relay after reconnecting"), { event: "typing:stop", args: [{ userId: r.id }] });
      socket.close();
      rc.socket.close();
    });
  }

  test("raw: exactly `41` at exp, then the Engine.IO session is still open: a CONNECT with a fresh token on it is accepted", { timeout: 20000 }, async () => {
    const u = makeUser("rex");
    const c = await openWs(edge);
    c.send("40" + JSON.stringify({ token: mintToken({ ...u.claims, exp: nowSec() + 2 }) }));
    assert.match(await c.next(3000, "the CONNECT reply"), /^40\{"sid":/);
    assert.equal(await c.next(5000, "the DISCONNECT at exp"), "41");
    c.send("40" + JSON.stringify({ token: u.token }));
    assert.match(await c.next(3000, "the CONNECT reply on the same session"), /^40\{"sid":/);
    c.send(`421${JSON.stringify(["typing:stop", { recipientId: randomUUID() }])}`);
    assert.equal(await c.next(3000, "an ack"), '431[{"ok":true}]');
    c.close();
  });
});

// ---------------------------------------------------------------- leak check

describe("leak check: connect/disconnect churn of 3,000 sockets", () => {
  const ROUND = 500;
  const ROUNDS = 6; // after a warm-up round
  const CONCURRENCY = 50;
  const POLLING_EVERY = 10; // every 10th session over long-polling
  const SOURCES = Array.from({ length: 8 }, (_, i) => `127.0.1.${i + 1}`);
  const asan = readFileSync(EDGE_BIN).includes("__asan_init");
  let edge;
  before(async () => {
    const env = {
      // The limits on (the address table is part of the churn), high enough not to refuse.
      EDGE_MAX_CONN_PER_IP: "1024",
      EDGE_HANDSHAKES_PER_S: "100000",
      EDGE_EVENTS_PER_S: "30",
      EDGE_EVENTS_BURST: "60",
      EDGE_RATE_DISCONNECT: "200",
      EDGE_MAX_SOCKETS_PER_USER: "32",
      LOG_LEVEL: "info",
    };
    // ASan keeps freed memory in a 256 MB quarantine: RSS would only measure that.
    if (asan) env.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, "quarantine_size_mb=0", "thread_local_quarantine_size_kb=0"].filter(Boolean).join(":");
    edge = await startEdge({ nats, name: "abuse-churn", env });
  });

  const rssKb = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${edge.child.proc.pid}/status`, "utf8"))[1]);
  const users = Array.from({ length: 40 }, (_, i) => makeUser(`churn${i}`));
  let n = 0;

  /** One WebSocket socket: open, CONNECT, one acked event, close. */
  async function wsOnce(u, localAddress) {
    const c = rawWs(edge, { localAddress });
    try {
      const r = await withTimeout(c.opened, 5000, "churn upgrade");
      assert.equal(r.ok, true, `churn upgrade ${JSON.stringify(r)}`);
      assert.match(await c.next(5000, "open"), /^0\{/);
      c.send("40" + JSON.stringify({ token: u.token }));
      assert.match(await c.next(5000, "CONNECT reply"), /^40\{/);
      c.send(`421${JSON.stringify(["typing:stop", { recipientId: u.id }])}`);
      for (;;) if ((await c.next(5000, "the ack")).startsWith("431")) break; // the user's other sockets' relays may come first
    } finally {
      c.close();
      sockets.delete(c);
    }
  }

  /** One long-polling socket: handshake, CONNECT, its reply, POST "1". */
  async function pollOnce(u, localAddress) {
    const p = await pollHandshake(edge, localAddress);
    assert.equal(p.status, 200, `churn polling handshake ${JSON.stringify(p)}`);
    const post = await requestFrom(edge, pollPath(p.sid), localAddress, { method: "POST", body: "40" + JSON.stringify({ token: u.token }) });
    assert.equal(post.text, "ok");
    const got = await requestFrom(edge, pollPath(p.sid), localAddress, { ms: 5000 });
    assert.match(got.text, /^40\{/);
    const bye = await requestFrom(edge, pollPath(p.sid), localAddress, { method: "POST", body: "1" });
    assert.equal(bye.text, "ok");
  }

  async function round(count) {
    let left = count;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (left > 0) {
          left--;
          const k = n++;
          const u = users[k % users.length];
          const from = SOURCES[k % SOURCES.length];
          if (k % POLLING_EVERY === 0) await pollOnce(u, from);
          else await wsOnce(u, from);
        }
      }),
    );
  }

  async function sessionsGone(what) {
    const deadline = Date.now() + 10000;
    for (;;) {
      const open = (await metric(edge, 'chat_edge_sessions{transport="websocket"}')) + (await metric(edge, 'chat_edge_sessions{transport="polling"}'));
      if (open === 0) return;
      assert.ok(Date.now() < deadline, `${open} sessions still open 10 s after ${what}`);
      await delay(50); // the edge has no event for "all closed": a bounded poll of its gauge
    }
  }

  test(`RSS of the edge after ${ROUND} warm-up sockets and after ${ROUNDS * ROUND} more (10% long-polling, 8 source addresses): growth < 8 MB overall and < 2 MB over the second half; every session closed; presence's session count back`, { timeout: 240000 }, async () => {
    const presenceSessions = async () => {
      await httpRequest(`${presence.healthUrl}/healthz`); // presence updates its gauges when asked for its health
      const r = await httpRequest(`${presence.healthUrl}/metrics`);
      return Number(/^chat_presence_sessions (\d+)/m.exec(r.text)[1]);
    };
    const presence0 = await presenceSessions();
    const t0 = Date.now();
    await round(ROUND);
    await sessionsGone("the warm-up");
    const base = rssKb();
    const samples = [base];
    for (let i = 0; i < ROUNDS; i++) {
      await round(ROUND);
      await sessionsGone(`round ${i + 1}`);
      samples.push(rssKb());
    }
    const mid = samples[Math.floor(ROUNDS / 2)];
    const last = samples[samples.length - 1];
    console.log(`# churn: ${n} sockets in ${Date.now() - t0} ms; VmRSS kB after warm-up and each round: ${samples.join(" ")}${asan ? " (ASan, quarantine off)" : ""}`);
    assert.ok(last - base < 8 * 1024, `RSS grew ${last - base} kB over ${ROUNDS * ROUND} sockets (samples ${samples.join(" ")})`);
    assert.ok(last - mid < 2 * 1024, `RSS grew ${last - mid} kB over the last ${(ROUNDS - Math.floor(ROUNDS / 2)) * ROUND} sockets (samples ${samples.join(" ")})`);
    const deadline = Date.now() + 5000;
    while ((await presenceSessions()) !== presence0) {
      assert.ok(Date.now() < deadline, `presence holds ${await presenceSessions()} sessions, ${presence0} before the churn`);
      await delay(50); // presence's gauge has no event either
    }
  });
});

// Connection state recovery (README "Recovery"), with the stock
// socket.io-client and nothing configured on it: a client that drops and
// comes back, to the same edge, to another one, after the first was killed
// or restarted, gets socket.recovered, its old id and every message:received,
// message:sent and message:read it missed, in order, once. And a socket that
// stays connected misses nothing while nats-server is killed and restarted.
//
// Topology: 1 nats (its own store) + 1 PostgreSQL + messaging + presence +
// edges per test (two shared ones; the kill, restart and window tests have
// their own).
import { after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";

import {
  TRANSPORTS,
  clientOptions,
  closeAll,
  delay,
  openSioSession,
  shutdown,
  startEdge,
  startMessaging,
  startNats,
  startPostgres,
  startPresence,
  test,
  withTimeout,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const RECOVERABLE = ["message:received", "message:sent", "message:read"];
let nats, pg, edge1, edge2;
const sockets = new Set();

before(async () => {
  nats = await startNats();
  pg = await startPostgres();
  await startMessaging({ nats, pg });
  await startPresence({ nats, pg });
  [edge1, edge2] = await Promise.all([startEdge({ nats, name: "rec-1" }), startEdge({ nats, name: "rec-2" })]);
});
after(async () => {
  for (const s of sockets) s.close();
  closeAll();
  await shutdown();
});

/** A promise of cond() becoming true (checked at every event, connect and disconnect of c), bounded. */
function until(c, cond, what, ms = 10000) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => (cond() ? resolve() : c.waiters.push(check));
      check();
    }),
    ms,
    what,
  );
}

function attachUntil(c) {
  c.until = (cond, what, ms) => until(c, cond, what, ms);
  return c;
}

async function connect(url, user, transport) {
  const o = { ...clientOptions({ token: user.token }, { transport }), reconnection: true, reconnectionDelay: 50,
    reconnectionDelayMax: 100, randomizationFactor: 0 };
  const socket = io(url, o);
  sockets.add(socket);
  const c = attachUntil({ socket, user, events: [], connects: [], waiters: [] });
  socket.onAny((event, ...args) => {
    c.events.push({ event, args });
    for (const w of c.waiters.splice(0)) w();
  });
  socket.on("connect", () => {
    c.connects.push({ id: socket.id, recovered: socket.recovered });
    for (const w of c.waiters.splice(0)) w();
  });
  socket.on("disconnect", () => {
    for (const w of c.waiters.splice(0)) w();
  });
  await c.until(() => c.connects.length === 1, "the first connect");
  return c;
}

/** The recoverable events of c, as [event, id] pairs, in the order received. */
function recoverable(c, from = 0) {
  return c.events.slice(from).filter((e) => RECOVERABLE.includes(e.event))
    .map((e) => [e.event, e.args[0].id ?? e.args[0].messageId]);
}

async function send(c, to, content) {
  const res = await c.socket.timeout(5000).emitWithAck("message:send", { recipientId: to.id, content, type: "text" });
  assert.equal(res.ok, true, `message:send: ${JSON.stringify(res)}`);
  return res.message;
}

async function markRead(c, m) {
  const res = await c.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: m.senderId });
  assert.equal(res.ok, true, `message:read: ${JSON.stringify(res)}`);
}

/** Drops c's connection (the transport closes, as on a network loss) and keeps it down until resume(). */
async function drop(c) {
  c.socket.io.reconnection(false);
  const gone = c.until(() => !c.socket.connected, "the drop");
  c.socket.io.engine.close();
  await gone;
}

/** Lets c reconnect (to url, the way a load balancer may send it elsewhere) and waits for the connect. */
async function resume(c, url) {
  const n = c.connects.length;
  if (url) c.socket.io.uri = url;
  c.socket.io.reconnection(true);
  c.socket.connect();
  await c.until(() => c.connects.length > n, "the reconnect");
  return c.connects[c.connects.length - 1];
}

/**
 * The scenario of every recovery: a (the tested client, transport) and b on
 * the edges given; a gets a message and sends one (received before the drop);
 * a drops; b sends three messages and reads a's; a comes back on `back`.
 * Returns what a must have got after the drop, in order.
 */
async function scenario(a, b, back, { beforeResume } = {}) {
  const m0 = await send(b.c, a.user, "before the drop");
  const mine = await send(a, b.c.user, "mine, before the drop");
  await a.until(() => recoverable(a).length >= 2, "a's events before the drop");
  const before = recoverable(a);
  const firstId = a.socket.id;
  await drop(a);
  const missed = [];
  for (let i = 0; i < 3; i++) missed.push(["message:received", (await send(b.c, a.user, `missed ${i}`)).id]);
  await markRead(b.c, mine);
  missed.push(["message:read", mine.id]);
  if (beforeResume) await beforeResume();
  const from = a.events.length;
  const back_ = await resume(a, back);
  return { m0, before, firstId, missed, from, back: back_ };
}

function assertRecovered(a, s) {
  assert.equal(s.back.recovered, true, "socket.recovered");
  assert.equal(s.back.id, s.firstId, "the same socket id");
  return a.until(() => recoverable(a, s.from).length >= s.missed.length, "the missed events").then(async () => {
    await delay(200); // nothing more may come: no duplicate of the seam
    assert.deepEqual(recoverable(a, s.from), s.missed, "every missed event once, in order, nothing from before the drop");
    assert.deepEqual(recoverable(a).slice(0, s.before.length), s.before);
    const offsets = a.events.filter((e) => RECOVERABLE.includes(e.event)).map((e) => BigInt(e.args[e.args.length - 1]));
    for (let i = 1; i < offsets.length; i++) assert.ok(offsets[i] > offsets[i - 1], `offsets increase: ${offsets}`);
  });
}

function peer(name, url) {
  const user = makeUser(name);
  return { user, url, c: null };
}

for (const transport of TRANSPORTS) {
  describe(`transport: ${transport}`, () => {
    test("a drop and a reconnect to the same edge: recovered, the same id, the missed events once, in order", async () => {
      const b = peer("bob", edge2.url);
      b.c = await connect(edge2.url, b.user, "websocket");
      const a = await connect(edge1.url, makeUser("ada"), transport);
      assert.match(a.socket._pid ?? "", /^[A-Za-z0-9_-]{103}$/, "the CONNECT reply carries a pid");
      const s = await scenario(a, b, null);
      await assertRecovered(a, s);
      // It goes on living: a live message after the recovery, once.
      const live = await send(b.c, a.user, "after");
      await a.until(() => recoverable(a).some(([, id]) => id === live.id), "the live message");
    });

    test("a reconnect to another edge recovers the same way", async () => {
      const b = peer("bob", edge1.url);
      b.c = await connect(edge1.url, b.user, "websocket");
      const a = await connect(edge1.url, makeUser("ada"), transport);
      const s = await scenario(a, b, edge2.url);
      await assertRecovered(a, s);
    });

    test("messages sent while the client reconnects: each once, in order (the seam)", async () => {
      const b = peer("bob", edge2.url);
      b.c = await connect(edge2.url, b.user, "websocket");
      const a = await connect(edge1.url, makeUser("ada"), transport);
      const sent = [];
      let stop = false;
      const sender = (async () => {
        for (let i = 0; !stop && i < 200; i++) {
          sent.push((await send(b.c, a.user, `stream ${i}`)).id);
          await delay(5);
        }
      })();
      await delay(100);
      await drop(a);
      await delay(100);
      const back = await resume(a, edge2.url);
      await delay(200);
      stop = true;
      await sender;
      assert.equal(back.recovered, true);
      await a.until(() => recoverable(a).length >= sent.length, `all ${sent.length} messages`);
      await delay(200);
      assert.deepEqual(recoverable(a).map(([, id]) => id), sent, "each message once, in send order");
    });
  });
}

describe("recovery after the first edge is gone", () => {
  test("kill -9 of the edge a client is on: it comes back on another edge, recovered, and misses nothing", async () => {
    const doomed = await startEdge({ nats, name: "rec-killed" });
    const b = peer("bob", edge2.url);
    b.c = await connect(edge2.url, b.user, "websocket");
    const a = await connect(doomed.url, makeUser("ada"), "websocket");
    const m0 = await send(b.c, a.user, "before");
    await a.until(() => recoverable(a).length === 1, "the first message");
    const firstId = a.socket.id;
    a.socket.io.reconnection(false);
    const gone = a.until(() => !a.socket.connected, "the drop");
    await doomed.stop("SIGKILL");
    await gone;
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(["message:received", (await send(b.c, a.user, `missed ${i}`)).id]);
    const from = a.events.length;
    const back = await resume(a, edge2.url);
    assert.equal(back.recovered, true, "recovered after its edge was killed");
    assert.equal(back.id, firstId);
    await a.until(() => recoverable(a, from).length >= 3, "the missed messages");
    await delay(200);
    assert.deepEqual(recoverable(a, from), missed);
    assert.deepEqual(recoverable(a)[0], ["message:received", m0.id]);
  });

  test("an edge restarted under its EDGE_ID (SIGTERM): its clients come back to it and recover", async () => {
    let edge = await startEdge({ nats, name: "rec-restart" });
    const port = edge.port;
    const b = peer("bob", edge2.url);
    b.c = await connect(edge2.url, b.user, "websocket");
    const a = await connect(edge.url, makeUser("ada"), "websocket");
    await send(b.c, a.user, "before");
    await a.until(() => recoverable(a).length === 1, "the first message");
    const firstId = a.socket.id;
    a.socket.io.reconnection(false);
    const gone = a.until(() => !a.socket.connected, "the drop");
    await edge.stop("SIGTERM");
    await gone;
    const missed = [];
    for (let i = 0; i < 2; i++) missed.push(["message:received", (await send(b.c, a.user, `missed ${i}`)).id]);
    edge = await startEdge({ nats, name: "rec-restart", env: { EDGE_PORT: String(port) } });
    const from = a.events.length;
    const back = await resume(a, `http://127.0.0.1:${port}`); /* its old address */
    assert.equal(back.recovered, true, "recovered on the restarted edge");
    assert.equal(back.id, firstId);
    await a.until(() => recoverable(a, from).length >= 2, "the missed messages");
    await delay(200);
    assert.deepEqual(recoverable(a, from), missed);
  });
});

describe("a half-open connection: the old socket's edge has not noticed the drop", () => {
  for (const [where, other] of [["the same edge", false], ["another edge", true]]) {
    test(`the client comes back to ${where}: its old socket is closed, the session recovered`, async () => {
      const ada = makeUser("ada");
      const old = await openSioSession(edge1, { token: ada.token });
      const reply = JSON.parse(old.client.frames.find((f) => f.text?.startsWith("40")).text.slice(2));
      // The old connection stays open (never closed by the client): its edge still holds the socket.
      const again = await openSioSession(other ? edge2 : edge1, { token: ada.token, pid: reply.pid });
      assert.equal(again.sid, reply.sid, "recovered: the old socket id");
      const closed = await withTimeout(old.client.closed, 5000, "the old connection closed by its edge");
      assert.ok(closed.code === 1000 || closed.code === 1001 || closed.code === 1005 || closed.code === 1006, `closed (${closed.code})`);
      again.client.close();
    });
  }
});

describe("what is not recovered gets a new session, with no error", () => {
  test("past EDGE_RECOVERY_WINDOW_MS: a new session (new id, presence:update), the missed messages only in history", async () => {
    const short = await startEdge({ nats, name: "rec-window", env: { EDGE_RECOVERY_WINDOW_MS: "300" } });
    const b = peer("bob", edge2.url);
    b.c = await connect(edge2.url, b.user, "websocket");
    const a = await connect(short.url, makeUser("ada"), "websocket");
    const firstId = a.socket.id;
    await drop(a);
    const m = await send(b.c, a.user, "missed");
    await delay(1000); // past the window (300 ms)
    const from = a.events.length;
    const back = await resume(a, short.url);
    assert.equal(back.recovered, false, "not recovered");
    assert.notEqual(back.id, firstId, "a new socket id");
    await a.until(() => a.events.slice(from).some((e) => e.event === "presence:update"), "presence:update of the new session");
    await delay(200);
    assert.deepEqual(recoverable(a, from), [], "nothing replayed");
    const h = await a.socket.timeout(5000).emitWithAck("message:history", { withUserId: b.user.id });
    assert.ok(h.ok && h.messages.some((x) => x.id === m.id), `the missed message is in history: ${JSON.stringify(h)}`);
  });

  test("a bogus pid, a pid with a bad offset, another user's pid: a new session each, the token still checked", async () => {
    const ada = makeUser("ada");
    const eve = makeUser("eve");
    const first = await openSioSession(edge1, { token: ada.token });
    const pid = JSON.parse(first.client.frames.find((f) => f.text?.startsWith("40")).text.slice(2)).pid;
    assert.match(pid ?? "", /^[A-Za-z0-9_-]{103}$/, "a CONNECT reply with a pid");
    first.client.close();
    for (const [what, auth] of [
      ["garbage", { token: ada.token, pid: "garbage", offset: "1" }],
      ["a pid of the right form, not signed", { token: ada.token, pid: "A".repeat(103), offset: "1" }],
      ["a bad offset", { token: ada.token, pid, offset: "01" }],
      ["an offset that is not a string", { token: ada.token, pid, offset: 5 }],
      ["an offset no record ever had", { token: ada.token, pid, offset: "18446744073709551615" }],
      ["another user's pid", { token: eve.token, pid, offset: "0" }],
    ]) {
      const s = await openSioSession(edge1, auth);
      assert.notEqual(s.sid, first.sid, `${what}: a new socket id`);
      const reply = JSON.parse(s.client.frames.find((f) => f.text?.startsWith("40")).text.slice(2));
      assert.notEqual(reply.pid, pid, `${what}: a new pid`);
      const next = await s.client.nextText(3000, "presence:update");
      assert.ok(next.startsWith('42["presence:update"'), `${what}: a new session's first event, got ${next}`);
      s.client.close();
    }
    const refused = await openSioSession(edge1, { token: "nope", pid, offset: "0" }).catch((e) => e);
    assert.ok(refused instanceof Error && /44/.test(refused.message), "a pid does not stand in for a token");
  });

  test("EDGE_RECOVERY_WINDOW_MS=0: no pid, no offsets", async () => {
    const off = await startEdge({ nats, name: "rec-off", env: { EDGE_RECOVERY_WINDOW_MS: "0" } });
    const b = peer("bob", edge2.url);
    b.c = await connect(edge2.url, b.user, "websocket");
    const a = await connect(off.url, makeUser("ada"), "websocket");
    assert.equal(a.socket._pid, undefined, "no pid");
    await send(b.c, a.user, "hello");
    await a.until(() => recoverable(a).length === 1, "the message");
    const e = a.events.find((x) => x.event === "message:received");
    assert.equal(e.args.length, 1, "no offset argument");
  });
});

describe("nats-server killed and restarted: sockets that stay connected miss nothing", () => {
  test("kill -9 of nats-server in the middle of a stream of messages: every acked message reaches every tab once, in order", { timeout: 120000 }, async () => {
    // Its own NATS and PostgreSQL: messaging replicas sharing a database share its partitions.
    const own = await startNats();
    const ownPg = await startPostgres();
    await startMessaging({ nats: own, pg: ownPg, env: { MESSAGING_ACK_WAIT_MS: "1000" } });
    const e1 = await startEdge({ nats: own, name: "rec-nats-1" });
    const e2 = await startEdge({ nats: own, name: "rec-nats-2" });
    const b = peer("bob", e2.url);
    b.c = await connect(e2.url, b.user, "websocket");
    const ada = makeUser("ada");
    const tabs = [await connect(e1.url, ada, "websocket"), await connect(e2.url, ada, "websocket"), await connect(e1.url, ada, "default")];
    const acked = [];
    let killed = false;
    const sender = (async () => {
      for (let i = 0; i < 60; i++) {
        let last = "";
        for (let attempt = 0; ; attempt++) { // resent until acked: a client does that on error or timeout
          assert.ok(attempt < 40, `message ${i}: no ok ack after 40 attempts (last: ${last})`);
          try {
            const res = await b.c.socket.timeout(3000).emitWithAck("message:send",
              { recipientId: ada.id, content: `n${i}`, type: "text", clientMessageId: `n-${i}` });
            if (res.ok) {
              if (!acked.includes(res.message.id)) acked.push(res.message.id);
              break;
            }
            last = JSON.stringify(res);
          } catch (err) {
            last = err.message; /* timeout: resend */
          }
          await delay(100);
        }
        await delay(10);
      }
    })();
    await delay(200);
    const { port, dir } = own;
    await own.stop("SIGKILL");
    killed = true;
    await delay(500);
    await startNats({ port, dir });
    await sender;
    assert.ok(killed);
    for (const t of tabs) {
      await t.until(() => recoverable(t).length >= acked.length, `all ${acked.length} messages on a tab`, 30000);
      await delay(300);
      assert.deepEqual(recoverable(t).map(([, id]) => id), acked, "every acked message once, in order");
      assert.equal(t.connects.length, 1, "the tab stayed connected");
    }
  });
});

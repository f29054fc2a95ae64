// Presence end to end: the real chat-presence (PostgreSQL table `users`) behind
// two chat-edges on one nats-server, driven by socket.io-client. Covered: the
// presence:update list that is a socket's first event; user:status on a user's
// first session anywhere and on the last close (users.last_seen); several tabs
// on two edges; presence:update (chosen status) and presence:request; invalid
// input; per client transport (TRANSPORTS). The presence here runs with
// PRESENCE_GRACE_MS=0 (harness): offline the moment the last session closes.
// The grace period, per client transport too, on a stack of its own (its own
// nats-server, database, presence with PRESENCE_GRACE_MS 3000 and two edges):
// a connection that drops and comes back by itself (socket.io-client's
// reconnection) within the grace, and one held off past it. WebSocket
// clients only: an edge killed with SIGKILL (heartbeat timeout), an edge
// restarted under the same EDGE_ID (new boot id; its own nats-server and
// presence with a long timeout), and the presence service killed with SIGKILL
// and restarted (resync).
//
// "Nothing was broadcast" is proven with a marker: a fresh user connects on the
// edge whose NATS connection carried the event under test (after that edge has
// taken it in), and the next user:status about the users of the test that each
// observer receives must be the marker's online. user:status events about
// users of other tests are skipped (they are legitimately broadcast to all).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { before, after, afterEach, describe } from "node:test";
import { io } from "socket.io-client";
import {
  test,
  startNats,
  startPostgres,
  startPresence,
  startEdge,
  record,
  clientOptions,
  UpgradeGate,
  transportOf,
  withTimeout,
  delay,
  shutdown,
  TRANSPORTS,
} from "./harness.mjs";
import { makeUser, mintToken } from "./tokens.mjs";

const HEARTBEAT_MS = 200; // EDGE_HEARTBEAT_MS of every edge here
const EDGE_TIMEOUT_MS = 1500; // PRESENCE_EDGE_TIMEOUT_MS
const RESYNC_MS = 1000; // PRESENCE_RESYNC_MS
const EDGE_ENV = { EDGE_HEARTBEAT_MS: String(HEARTBEAT_MS) };
const PRESENCE_ENV = { PRESENCE_EDGE_TIMEOUT_MS: String(EDGE_TIMEOUT_MS), PRESENCE_RESYNC_MS: String(RESYNC_MS) };
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

let nats;
let pg;
let presence;
let edge1;
let edge2;

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  presence = await startPresence({ nats, pg, env: PRESENCE_ENV });
  [edge1, edge2] = await Promise.all([
    startEdge({ nats, name: "presence-edge-1", env: EDGE_ENV }),
    startEdge({ nats, name: "presence-edge-2", env: EDGE_ENV }),
  ]);
});

// ---------------------------------------------------------------- clients

const allSockets = new Set(); // for the end of the file
let testSockets = new Set(); // closed after each test

after(() => {
  for (const s of allSockets) s.close();
  allSockets.clear();
  return shutdown();
});

afterEach(() => {
  for (const s of testSockets) s.close();
  testSockets = new Set();
});

/**
 * harness record() (presence events included) plus take(pred): the earliest
 * event not taken yet that matches pred, waiting up to ms for it.
 */
function recorder(socket) {
  const base = record(socket, { ignore: [] });
  const taken = new Set();
  const wakers = new Set();
  socket.onAny(() => {
    for (const w of [...wakers]) w();
  });
  const untaken = () => base.events.filter((_, i) => !taken.has(i));
  return {
    events: base.events,
    untaken,
    take(pred, ms, what) {
      return new Promise((resolve, reject) => {
        let timer;
        const check = () => {
          const i = base.events.findIndex((e, k) => !taken.has(k) && pred(e));
          if (i < 0) return false;
          taken.add(i);
          clearTimeout(timer);
          wakers.delete(check);
          resolve(base.events[i]);
          return true;
        };
        if (check()) return;
        timer = setTimeout(() => {
          wakers.delete(check);
          reject(new Error(`timed out after ${ms} ms waiting for ${what}; not taken: ${JSON.stringify(untaken()).slice(0, 1500)}`));
        }, ms);
        wakers.add(check);
      });
    },
  };
}

/** Stands for "any ISO 8601 UTC time with milliseconds" in an expected PresenceInfo. */
const ANY_TIME = Object.freeze({ anyTime: true });
/** A PresenceInfo as clients get it; lastSeen is always a time (ANY_TIME: any, checked by assertLike). */
const info = (user, status, lastSeen = ANY_TIME) => ({ userId: user.id, username: user.username, status, lastSeen });

/** actual with every value that matches an ANY_TIME of expected replaced by ANY_TIME (deep). */
function likeExpected(actual, expected) {
  if (expected === ANY_TIME) return typeof actual === "string" && ISO_MS.test(actual) ? ANY_TIME : actual;
  if (Array.isArray(expected) && Array.isArray(actual)) return actual.map((a, i) => likeExpected(a, expected[i]));
  if (expected && typeof expected === "object" && actual && typeof actual === "object" && !Array.isArray(actual)) {
    return Object.fromEntries(Object.entries(actual).map(([k, v]) => [k, likeExpected(v, expected[k])]));
  }
  return actual;
}

/** deepEqual where ANY_TIME in expected accepts any ISO time. */
function assertLike(actual, expected, msg) {
  assert.deepEqual(likeExpected(actual, expected), expected, msg);
}
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * Connects user to edge; checks that the socket's first event is
 * presence:update with an array. transport "default": connected over polling
 * with the upgrade held, a presence:request ack round trip goes over polling,
 * then the upgrade. Returns {user, edge, socket, rec, sid, list}.
 */
async function connect(user, edge, { transport = "websocket", token = user.token } = {}) {
  const gate = transport === "default" ? new UpgradeGate() : undefined;
  const socket = io(edge.url, clientOptions({ token }, { transport, gate }));
  allSockets.add(socket);
  testSockets.add(socket);
  const rec = recorder(socket);
  const upgraded = gate ? new Promise((resolve) => socket.io.engine.once("upgrade", () => resolve())) : null;
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    5000,
    `${user.username} connecting to ${edge.name}`,
  );
  assert.equal(transportOf(socket), transport === "websocket" ? "websocket" : "polling");
  const sid = socket.id;
  const first = await rec.take(() => true, 3000, `the first event of ${user.username}'s socket`);
  assert.equal(first.event, "presence:update", `first event: ${first.event} ${JSON.stringify(first.args)}`);
  assert.equal(first.args.length, 1);
  assert.ok(Array.isArray(first.args[0]), `presence:update payload ${JSON.stringify(first.args[0])}`);
  if (gate) {
    const res = await socket.timeout(3000).emitWithAck("presence:request", [user.id]);
    assert.equal(res.ok, true, `presence:request over polling: ${JSON.stringify(res)}`);
    assert.equal(res.users.length, 1);
    assert.equal(res.users[0].userId, user.id);
    const ev = await rec.take((e) => e.event === "presence:response", 3000, "presence:response over polling");
    assert.deepEqual(ev.args, [res.users]);
    gate.release();
    await withTimeout(upgraded, 5000, "the client's upgrade to WebSocket");
    assert.equal(transportOf(socket), "websocket");
  }
  return { user, edge, socket, rec, sid, list: first.args[0] };
}

/** Closes a socket and waits until its edge has handled the disconnect (and told presence). */
async function closeSocket(c) {
  c.socket.close();
  await c.edge.child.waitForLine(new RegExp(`disconnect user=${c.user.id} socket=${esc(c.sid)} `), 3000, `the edge's disconnect of ${c.user.username}`);
}

/**
 * The next event of c that is about users (user:status with one of their ids,
 * or any other event at all): must be a user:status; returns its payload.
 * skipOnline: users whose user:status online is passed over.
 */
async function nextStatus(c, users, what, ms = 3000, { skipOnline = [] } = {}) {
  const ids = new Set(users.map((u) => u.id));
  const skip = new Set(skipOnline.map((u) => u.id));
  const relevant = (ev) =>
    ev.event !== "user:status" || (ids.has(ev.args[0]?.userId) && !(ev.args[0]?.status === "online" && skip.has(ev.args[0]?.userId)));
  const e = await c.rec.take(relevant, ms, `${what} on ${c.user.username}'s socket`);
  assert.equal(e.event, "user:status", `${what}: got ${e.event} ${JSON.stringify(e.args)}`);
  assert.equal(e.args.length, 1);
  return e.args[0];
}

/** Every observer gets user:status expected next (ANY_TIME: the same time on all); returns the first. */
async function expectStatus(observers, expected, users, what, ms) {
  let first;
  for (const o of observers) {
    const s = await nextStatus(o, users, what, ms);
    assertLike(s, first ?? expected, `${what} on ${o.user.username}'s socket`);
    first ??= s;
  }
  return first;
}

/** Every observer gets user:status offline for user, with the same ISO lastSeen; returns it. */
async function expectOffline(observers, user, users, what, ms, opts) {
  let lastSeen;
  for (const o of observers) {
    const s = await nextStatus(o, users, what, ms, opts);
    assert.match(String(s.lastSeen), ISO_MS, `${what}: lastSeen ${JSON.stringify(s.lastSeen)}`);
    lastSeen ??= s.lastSeen;
    assertLike(s, info(user, "offline", lastSeen), `${what} on ${o.user.username}'s socket`);
  }
  return lastSeen;
}

/**
 * Marker: a fresh user connects on edge; for every observer the next
 * user:status about users (or the marker) must be the marker's online.
 * skipOnline: users whose user:status online may be skipped.
 */
async function marker(edge, observers, users, what, { skipOnline = [] } = {}) {
  const m = makeUser("marker");
  const mc = await connect(m, edge);
  for (const o of observers) {
    const s = await nextStatus(o, [...users, m], `${what} (the marker)`, 3000, { skipOnline });
    assertLike(s, info(m, "online"), `${what}: the marker must be the next user:status on ${o.user.username}'s socket`);
  }
  return mc;
}

/** presence:request with an ack: checks ack and presence:response agree; returns the list. */
async function request(c, ids) {
  const res = await c.socket.timeout(3000).emitWithAck("presence:request", ids);
  assert.equal(res.ok, true, `presence:request: ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ["ok", "users"]);
  const ev = await c.rec.take((e) => e.event !== "user:status", 3000, "presence:response");
  assert.equal(ev.event, "presence:response", `got ${ev.event} ${JSON.stringify(ev.args)}`);
  assert.deepEqual(ev.args, [res.users], "presence:response and the ack carry the same list");
  return res.users;
}

/** The users row: {username, status, online, lastSeen (ISO ms Z or null)}, or null. */
function dbUser(id) {
  const rows = pg.psql(
    `SELECT username, status, online, to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM users WHERE id = '${id}'`,
  );
  if (rows.length === 0) return null;
  const [username, status, online, lastSeen] = rows[0].split("|");
  return { username, status, online: online === "t", lastSeen: lastSeen || null };
}

/** The entries of list about user (there must be exactly one), or assert none with absent. */
function entryOf(list, user, { absent = false } = {}) {
  const found = list.filter((e) => e.userId === user.id);
  if (absent) {
    assert.deepEqual(found, [], `${user.username} must not be listed`);
    return null;
  }
  assert.equal(found.length, 1, `${user.username} listed ${found.length} times in ${JSON.stringify(list)}`);
  return found[0];
}

// ---------------------------------------------------------------- the grace period's stack

const GRACE_MS = 3000; // PRESENCE_GRACE_MS of the grace stack
const RECONNECT_MS = 1000; // the reconnecting clients' reconnectionDelay: a drop of about a second
let graceStack; // a promise: started once, by the first test that needs it

/** Its own nats-server, database (presence_grace) and presence with PRESENCE_GRACE_MS, and two edges. */
function grace() {
  graceStack ??= (async () => {
    const n = await startNats();
    pg.psql("CREATE DATABASE presence_grace");
    const svc = await startPresence({
      nats: n,
      pg: { url: pg.url.replace(/\/postgres$/, "/presence_grace") },
      name: "grace",
      env: { ...PRESENCE_ENV, PRESENCE_GRACE_MS: String(GRACE_MS) },
    });
    const [e1, e2] = await Promise.all([
      startEdge({ nats: n, name: "grace-edge-1", env: EDGE_ENV }),
      startEdge({ nats: n, name: "grace-edge-2", env: EDGE_ENV }),
    ]);
    return { presence: svc, edge1: e1, edge2: e2 };
  })();
  return graceStack;
}

/** dbUser() of the grace stack's database. */
function graceDbUser(id) {
  const rows = execFileSync(
    "psql",
    ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "presence_grace", "-tA", "-v", "ON_ERROR_STOP=1", "-c",
      `SELECT username, status, online, to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM users WHERE id = '${id}'`],
    { encoding: "utf8", timeout: 30000 },
  ).split("\n").filter((l) => l !== "");
  if (rows.length === 0) return null;
  const [username, status, online, lastSeen] = rows[0].split("|");
  return { username, status, online: online === "t", lastSeen: lastSeen || null };
}

/**
 * user on edge with socket.io-client's own reconnection on (RECONNECT_MS
 * between attempts, not randomised); transport "default": once upgraded to
 * WebSocket. Returns {user, edge, socket, connects: [{id, recovered, at}], until(cond, what, ms)}.
 */
async function reconnecting(user, edge, transport) {
  const socket = io(edge.url, {
    ...clientOptions({ token: user.token }, { transport }),
    reconnection: true,
    reconnectionDelay: RECONNECT_MS,
    reconnectionDelayMax: RECONNECT_MS,
    randomizationFactor: 0,
  });
  allSockets.add(socket);
  testSockets.add(socket);
  const c = { user, edge, socket, connects: [], waiters: [] };
  const wake = () => {
    for (const w of c.waiters.splice(0)) w();
  };
  socket.on("connect", () => {
    c.connects.push({ id: socket.id, recovered: socket.recovered, at: Date.now() });
    wake();
  });
  socket.on("disconnect", wake);
  socket.io.on("upgrade", wake);
  c.until = (cond, what, ms = 5000) =>
    withTimeout(new Promise((resolve) => { const check = () => (cond() ? resolve() : c.waiters.push(check)); check(); }), ms, what);
  await c.until(() => c.connects.length === 1, `${user.username} connecting to ${edge.name}`);
  if (transport === "default") await c.until(() => transportOf(socket) === "websocket", `${user.username}'s upgrade`);
  return c;
}

/** Waits for presence's log line of the close of user's last session that starts the grace period. */
function graceStarted(svc, user, what) {
  return svc.child.waitForLine(new RegExp(`session close user=${user.id} .*result=1 grace`), 5000, what);
}

// ---------------------------------------------------------------- per client transport

for (const transport of TRANSPORTS) describe(`transport: ${transport}`, () => {
  const conn = (user, edge) => connect(user, edge, { transport });

  describe("connect and disconnect", () => {
    test("a socket's first event is presence:update: every online user, itself included, {userId, username, status, lastSeen}", async () => {
      const O = makeUser("olga");
      const G = makeUser("gone");
      const N = makeUser("nina");
      const o = await conn(O, edge1);
      const g = await conn(G, edge1);
      await expectStatus([o], info(G, "online"), [G], "gone's online");
      await closeSocket(g);
      await expectOffline([o], G, [G], "gone's offline");
      const n = await conn(N, edge2);
      assertLike(entryOf(n.list, N), info(N, "online"));
      assertLike(entryOf(n.list, O), info(O, "online"));
      entryOf(n.list, G, { absent: true });
      const ids = n.list.map((e) => e.userId);
      assert.equal(new Set(ids).size, ids.length, "no user twice");
      for (const e of n.list) {
        assert.deepEqual(Object.keys(e).sort(), ["lastSeen", "status", "userId", "username"]);
        assert.ok(e.status === "online" || e.status === "away", `listed with status ${e.status}`);
      }
    });

    test("a user's first session → user:status online {lastSeen: the time of that change} on every socket of both edges; users row created", async () => {
      const o1 = await conn(makeUser("olga"), edge1);
      const o2 = await conn(makeUser("oscar"), edge2);
      const N = makeUser("nina");
      assert.equal(dbUser(N.id), null, "no row before the first connect");
      const before = Date.now();
      const n = await conn(N, edge2);
      const s = await expectStatus([o1, o2], info(N, "online"), [N], "nina's online");
      const ms = Date.parse(s.lastSeen);
      assert.ok(ms >= before - 5 && ms <= Date.now() + 5, `lastSeen ${s.lastSeen} within the connect`);
      assertLike(entryOf(n.list, N), info(N, "online", s.lastSeen), "her own list says the same");
      assert.deepEqual(dbUser(N.id), { username: "nina", status: "online", online: true, lastSeen: s.lastSeen });
    });

    test("another session of an online user, on the same edge or the other one, broadcasts nothing", async () => {
      const o1 = await conn(makeUser("olga"), edge1);
      const o2 = await conn(makeUser("oscar"), edge2);
      const N = makeUser("nina");
      const n1 = await conn(N, edge1);
      await expectStatus([o1, o2], info(N, "online"), [N], "nina's online");
      const n2 = await conn(N, edge1);
      assertLike(entryOf(n2.list, N), info(N, "online"));
      await marker(edge1, [o1, o2, n1], [N], "nothing for a second tab on the same edge");
      const n3 = await conn(N, edge2);
      assertLike(entryOf(n3.list, N), info(N, "online"));
      await marker(edge2, [o1, o2, n1, n2], [N], "nothing for a third tab on the other edge");
    });

    test("multi-tab: two tabs on one edge and one on the other; closing two keeps the user online, closing the last → offline", async () => {
      const o1 = await conn(makeUser("olga"), edge1);
      const o2 = await conn(makeUser("oscar"), edge2);
      const U = makeUser("ursula");
      const t1 = await conn(U, edge1);
      await expectStatus([o1, o2], info(U, "online"), [U], "ursula's online");
      const t2 = await conn(U, edge1);
      const t3 = await conn(U, edge2);
      await closeSocket(t1);
      await marker(edge1, [o1, o2, t2, t3], [U], "nothing when one of three tabs closes");
      await closeSocket(t3);
      await marker(edge2, [o1, o2, t2], [U], "nothing when the tab on the other edge closes");
      assertLike(await request(o1, [U.id]), [info(U, "online")], "still online with one tab left");
      assert.equal(dbUser(U.id).online, true);
      const before = Date.now();
      await closeSocket(t2);
      const lastSeen = await expectOffline([o1, o2], U, [U], "ursula's offline after her last tab");
      const ms = Date.parse(lastSeen);
      assert.ok(ms >= before - 5 && ms <= Date.now() + 5, `lastSeen ${lastSeen} within the close`);
      assert.deepEqual(dbUser(U.id), { username: "ursula", status: "online", online: false, lastSeen });
    });

    test("last close: users.last_seen written; user:status offline {lastSeen} on every socket of both edges; presence:request agrees", async () => {
      const o1 = await conn(makeUser("olga"), edge1);
      const o2 = await conn(makeUser("oscar"), edge2);
      const L = makeUser("leo");
      const l = await conn(L, edge2);
      const on = await expectStatus([o1, o2], info(L, "online"), [L], "leo's online");
      assert.equal(dbUser(L.id).lastSeen, on.lastSeen, "users.last_seen: when he came online");
      const before = Date.now();
      await closeSocket(l);
      const lastSeen = await expectOffline([o1, o2], L, [L], "leo's offline");
      const ms = Date.parse(lastSeen);
      assert.ok(ms >= before - 5 && ms <= Date.now() + 5, `lastSeen ${lastSeen} within the close`);
      const row = dbUser(L.id);
      assert.equal(row.online, false);
      assert.equal(row.lastSeen, lastSeen, "users.last_seen is the broadcast lastSeen");
      assertLike(await request(o2, [L.id]), [info(L, "offline", lastSeen)]);
    });

    test("a returning user: users.username updated; user:status online carries the new username and the time it came back", async () => {
      const o = await conn(makeUser("olga"), edge1);
      const R = makeUser("ann");
      const r1 = await conn(R, edge1);
      await expectStatus([o], info(R, "online"), [R], "ann's online");
      await closeSocket(r1);
      const left = await expectOffline([o], R, [R], "ann's offline");
      const R2 = { ...R, username: "anne", token: mintToken({ ...R.claims, username: "anne" }) };
      const r2 = await conn(R2, edge2);
      const { lastSeen } = await expectStatus([o], info(R2, "online"), [R], "anne's online");
      assert.ok(Date.parse(lastSeen) >= Date.parse(left), `back at ${lastSeen}, after leaving at ${left}`);
      assertLike(entryOf(r2.list, R2), info(R2, "online", lastSeen));
      assert.deepEqual(dbUser(R.id), { username: "anne", status: "online", online: true, lastSeen });
    });
  });

  describe("presence:update {status}", () => {
    test("away → user:status away on every socket (the user's tabs on both edges too); users.status; presence:request and a new socket's list agree", async () => {
      const o1 = await conn(makeUser("olga"), edge1);
      const o2 = await conn(makeUser("oscar"), edge2);
      const A = makeUser("amy");
      const a1 = await conn(A, edge1);
      await expectStatus([o1, o2], info(A, "online"), [A], "amy's online");
      const a2 = await conn(A, edge2);
      a1.socket.emit("presence:update", { status: "away" });
      await expectStatus([o1, o2, a1, a2], info(A, "away"), [A], "amy's away");
      assert.equal(dbUser(A.id).status, "away");
      assertLike(await request(o2, [A.id]), [info(A, "away")]);
      const p = await conn(makeUser("pat"), edge2);
      assertLike(entryOf(p.list, A), info(A, "away"));
    });

    test("with an ack: offline → {ok:true}, user:status offline while connected, hidden from the list; online → back", async () => {
      const o1 = await conn(makeUser("olga"), edge1);
      const o2 = await conn(makeUser("oscar"), edge2);
      const A = makeUser("amy");
      const a = await conn(A, edge2);
      await expectStatus([o1, o2], info(A, "online"), [A], "amy's online");
      assert.deepEqual(await a.socket.timeout(3000).emitWithAck("presence:update", { status: "offline" }), { ok: true });
      await expectStatus([o1, o2, a], info(A, "offline"), [A], "amy appears offline");
      const row = dbUser(A.id);
      assert.equal(row.status, "offline");
      assert.equal(row.online, true, "still connected");
      assertLike(await request(o1, [A.id]), [info(A, "offline")]);
      const p = await conn(makeUser("pat"), edge1);
      entryOf(p.list, A, { absent: true });
      assert.deepEqual(await a.socket.timeout(3000).emitWithAck("presence:update", { status: "online" }), { ok: true });
      await expectStatus([o1, o2, a, p], info(A, "online"), [A], "amy back online");
      assert.equal(dbUser(A.id).status, "online");
    });

    test("the next first session sets a chosen status back to online", async () => {
      const o = await conn(makeUser("olga"), edge1);
      const A = makeUser("amy");
      const a1 = await conn(A, edge1);
      await expectStatus([o], info(A, "online"), [A], "amy's online");
      a1.socket.emit("presence:update", { status: "away" });
      await expectStatus([o, a1], info(A, "away"), [A], "amy's away");
      await closeSocket(a1);
      const left = await expectOffline([o], A, [A], "amy's offline");
      const a2 = await conn(A, edge2);
      const { lastSeen } = await expectStatus([o], info(A, "online"), [A], "amy online again");
      assert.ok(Date.parse(lastSeen) >= Date.parse(left));
      assertLike(entryOf(a2.list, A), info(A, "online", lastSeen));
      assert.equal(dbUser(A.id).status, "online");
    });
  });

  describe("presence:request [ids]", () => {
    test("presence:response: one PresenceInfo per id seen, in request order (duplicates kept): online, offline with lastSeen; never-seen ids left out", async () => {
      const O = makeUser("olga");
      const G = makeUser("gone");
      const o = await conn(O, edge1);
      const g = await conn(G, edge2);
      await expectStatus([o], info(G, "online"), [G], "gone's online");
      await closeSocket(g);
      const lastSeen = await expectOffline([o], G, [G], "gone's offline");
      const unknown = randomUUID();
      const q = await conn(makeUser("quinn"), edge2);
      q.socket.emit("presence:request", [unknown, O.id, G.id, O.id]);
      const ev = await q.rec.take((e) => e.event !== "user:status", 3000, "presence:response");
      assert.equal(ev.event, "presence:response", `got ${ev.event} ${JSON.stringify(ev.args)}`);
      assertLike(ev.args, [[info(O, "online"), info(G, "offline", lastSeen), info(O, "online")]]);
    });

    test("with an ack: {ok:true, users} and presence:response with the same list", async () => {
      const O = makeUser("olga");
      const o = await conn(O, edge1);
      const unknown = randomUUID();
      assertLike(await request(o, [O.id, unknown]), [info(O, "online")]);
    });

    test("an empty array → [] (ack and presence:response)", async () => {
      const o = await conn(makeUser("olga"), edge2);
      assert.deepEqual(await request(o, []), []);
    });

    test("exactly EDGE_MAX_PRESENCE_QUERY (500) ids → 500 entries (users presence knows from the database)", async () => {
      const O = makeUser("olga");
      const o = await conn(O, edge1);
      const ids = Array.from({ length: 499 }, () => randomUUID());
      // Users seen long ago: rows only, none in presence's memory (one written before lastSeen was kept).
      pg.psql(
        `INSERT INTO users (id, username, status, online, last_seen, created_at) SELECT id::uuid, 'old-' || ord, 'online', false,` +
          ` CASE WHEN ord = 1 THEN NULL ELSE timestamptz '2026-01-02T03:04:05.678Z' END, timestamptz '2025-12-31T00:00:00.001Z'` +
          ` FROM unnest('{${ids.join(",")}}'::text[]) WITH ORDINALITY AS t(id, ord)`,
      );
      ids.splice(250, 0, O.id);
      const users = await request(o, ids);
      assert.equal(users.length, 500);
      assert.deepEqual(users.map((u) => u.userId), ids);
      assertLike(users[250], info(O, "online"));
      assert.deepEqual(users[0], { userId: ids[0], username: "old-1", status: "offline", lastSeen: "2025-12-31T00:00:00.001Z" }, "no last_seen: the row's creation");
      for (const [i, u] of users.entries())
        if (i !== 250 && i !== 0) assert.deepEqual(u, { userId: ids[i], username: `old-${i < 250 ? i + 1 : i}`, status: "offline", lastSeen: "2026-01-02T03:04:05.678Z" });
    });
  });

  describe("invalid input", () => {
    let A;
    let a;
    let o;
    before(async () => {
      A = makeUser("amy");
      o = await conn(makeUser("olga"), edge2);
      a = await conn(A, edge1);
      await expectStatus([o], info(A, "online"), [A], "amy's online");
      testSockets = new Set(); // kept for the whole describe (closed by after())
    });

    const uuid = () => randomUUID();
    // [name, event, args (function → emit arguments), code]
    const cases = [
      ["presence:update without payload", "presence:update", () => [], "bad_request"],
      ["presence:update payload a string", "presence:update", () => ["away"], "bad_request"],
      ["presence:update payload null", "presence:update", () => [null], "bad_request"],
      ["presence:update payload an array", "presence:update", () => [["away"]], "bad_request"],
      ["presence:update empty object", "presence:update", () => [{}], "bad_request"],
      ["presence:update status a number", "presence:update", () => [{ status: 1 }], "bad_request"],
      ["presence:update status null", "presence:update", () => [{ status: null }], "bad_request"],
      ["presence:update unknown status", "presence:update", () => [{ status: "busy" }], "bad_request"],
      ["presence:update status in capitals", "presence:update", () => [{ status: "Away" }], "bad_request"],
      ["presence:update status empty", "presence:update", () => [{ status: "" }], "bad_request"],
      ["presence:request without payload", "presence:request", () => [], "bad_request"],
      ["presence:request payload an object", "presence:request", () => [{ userIds: [uuid()] }], "bad_request"],
      ["presence:request payload a string", "presence:request", () => [uuid()], "bad_request"],
      ["presence:request payload null", "presence:request", () => [null], "bad_request"],
      ["presence:request payload a number", "presence:request", () => [5], "bad_request"],
      ["presence:request an entry not a uuid", "presence:request", () => [[uuid(), "bob"]], "bad_request"],
      ["presence:request an entry a number", "presence:request", () => [[5]], "bad_request"],
      ["presence:request an entry null", "presence:request", () => [[null]], "bad_request"],
      ["presence:request an entry an object", "presence:request", () => [[{ id: uuid() }]], "bad_request"],
      ["presence:request a uuid with junk", "presence:request", () => [[uuid() + "0"]], "bad_request"],
      ["presence:request 501 ids (EDGE_MAX_PRESENCE_QUERY 500)", "presence:request", () => [Array.from({ length: 501 }, uuid)], "too_large"],
    ];

    /** The connection still works and nothing else came: the next non-status event is the answer to a request. */
    async function stillWorks() {
      assertLike(await request(a, [A.id]), [info(A, "online")]);
    }

    for (const [name, ev, args, code] of cases) {
      test(`no ack: ${name} → chat:error {event, code: ${code}, message}`, async () => {
        a.socket.emit(ev, ...args());
        const got = await a.rec.take((e) => e.event !== "user:status", 3000, "chat:error");
        assert.equal(got.event, "chat:error", `got ${got.event} ${JSON.stringify(got.args)}`);
        assert.equal(got.args.length, 1);
        const [err] = got.args;
        assert.deepEqual(Object.keys(err).sort(), ["code", "event", "message"]);
        assert.equal(err.event, ev);
        assert.equal(err.code, code);
        assert.equal(typeof err.message, "string");
        assert.ok(err.message.length > 0);
        await stillWorks();
      });
    }

    for (const [name, ev, args, code] of cases) {
      test(`with ack: ${name} → {ok:false, error:{code: ${code}}}, no chat:error`, async () => {
        const res = await a.socket.timeout(3000).emitWithAck(ev, ...args());
        assert.equal(res.ok, false, JSON.stringify(res));
        assert.equal(res.error.code, code);
        assert.equal(typeof res.error.message, "string");
        assert.ok(res.error.message.length > 0);
        await stillWorks();
      });
    }

    test("no user:status went out for any refused presence:update; amy is still online", async () => {
      await marker(edge1, [o, a], [A], "nothing for refused presence:update events");
      assertLike(await request(o, [A.id]), [info(A, "online")]);
      assert.equal(dbUser(A.id).status, "online");
    });
  });

  describe(`the grace period (PRESENCE_GRACE_MS ${GRACE_MS}; a stack of its own)`, () => {
    test("a connection that drops and comes back by itself within the grace: nothing about the user on another edge, presence:request says online throughout, the row stays online", async () => {
      const g = await grace();
      const U = makeUser("ursula");
      const o = await conn(makeUser("olga"), g.edge2);
      const u = await reconnecting(U, g.edge1, transport);
      const on = await expectStatus([o], info(U, "online"), [U], "ursula's online");
      const row = { username: "ursula", status: "online", online: true, lastSeen: on.lastSeen };
      assert.deepEqual(graceDbUser(U.id), row);
      const t0 = Date.now();
      u.socket.io.engine.close(); // the network drops; the client reconnects by itself, RECONNECT_MS later
      await graceStarted(g.presence, U, "presence starting ursula's grace period");
      assertLike(await request(o, [U.id]), [info(U, "online", on.lastSeen)], "while she is away");
      assert.deepEqual(graceDbUser(U.id), row, "the row while she is away");
      assert.equal(u.connects.length, 1, "asked while her connection was down");
      await u.until(() => u.connects.length === 2, "ursula's reconnection");
      assert.ok(u.connects[1].at - t0 < GRACE_MS, `back ${u.connects[1].at - t0} ms after the drop`);
      assertLike(await request(o, [U.id]), [info(U, "online", on.lastSeen)], "once she is back");
      // A deliberate window: past the time her grace period would have ended.
      await delay(Math.max(0, t0 + GRACE_MS + 500 - Date.now()));
      await marker(g.edge1, [o], [U], "no offline and no online for ursula through the drop and the grace");
      assertLike(await request(o, [U.id]), [info(U, "online", on.lastSeen)], "after the grace");
      assert.deepEqual(graceDbUser(U.id), row, "the row after the grace");
    });

    test("a connection held off past the grace: user:status offline {lastSeen: the drop} after PRESENCE_GRACE_MS, then online when it comes back, as without the grace", async () => {
      const g = await grace();
      const U = makeUser("ursula");
      const o = await conn(makeUser("olga"), g.edge2);
      const u = await reconnecting(U, g.edge1, transport);
      const on = await expectStatus([o], info(U, "online"), [U], "ursula's online");
      u.socket.io.reconnection(false); // held off
      const t0 = Date.now();
      u.socket.io.engine.close();
      await graceStarted(g.presence, U, "presence starting ursula's grace period");
      assertLike(await request(o, [U.id]), [info(U, "online", on.lastSeen)], "during the grace");
      const lastSeen = await expectOffline([o], U, [U], "ursula's offline after the grace", GRACE_MS + 3000);
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= GRACE_MS - 50, `offline ${elapsed} ms after the drop, before PRESENCE_GRACE_MS ${GRACE_MS}`);
      const ms = Date.parse(lastSeen);
      assert.ok(ms >= t0 - 5 && ms <= t0 + 500, `lastSeen ${lastSeen}: the drop (${new Date(t0).toISOString()}), not the end of the grace`);
      assert.deepEqual(graceDbUser(U.id), { username: "ursula", status: "online", online: false, lastSeen });
      assertLike(await request(o, [U.id]), [info(U, "offline", lastSeen)]);
      u.socket.io.reconnection(true); // resumed
      u.socket.connect();
      await u.until(() => u.connects.length === 2, "ursula's reconnection");
      const back = await expectStatus([o], info(U, "online"), [U], "ursula online again");
      assert.ok(Date.parse(back.lastSeen) >= ms, `back at ${back.lastSeen}, after leaving at ${lastSeen}`);
      assert.equal(graceDbUser(U.id).online, true);
    });
  });
});

// ---------------------------------------------------------------- crashes (WebSocket clients)

describe("an edge killed with SIGKILL (WebSocket clients)", () => {
  test("after PRESENCE_EDGE_TIMEOUT_MS without its heartbeat: offline for a user only there (users.last_seen), nothing for a user with a tab elsewhere", async () => {
    const crash = await startEdge({ nats, name: "presence-crash-edge", env: EDGE_ENV });
    const C = makeUser("carl");
    const D = makeUser("dora");
    const users = [C, D];
    const o = await connect(makeUser("olga"), edge1);
    await connect(C, crash);
    await expectStatus([o], info(C, "online"), users, "carl's online");
    await connect(D, crash);
    await expectStatus([o], info(D, "online"), users, "dora's online");
    const d2 = await connect(D, edge1);
    assertLike(entryOf(d2.list, C), info(C, "online"));
    const t0 = Date.now();
    await crash.stop("SIGKILL");
    const lastSeen = await expectOffline([o, d2], C, users, "carl's offline after the edge timeout", EDGE_TIMEOUT_MS + 3000);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= EDGE_TIMEOUT_MS - HEARTBEAT_MS - 300, `offline ${elapsed} ms after the kill: too early for PRESENCE_EDGE_TIMEOUT_MS ${EDGE_TIMEOUT_MS}`);
    const ms = Date.parse(lastSeen);
    assert.ok(ms >= t0 && ms <= Date.now() + 5, `lastSeen ${lastSeen} between the kill and now`);
    await marker(edge1, [o, d2], users, "nothing for dora (still on edge 1)");
    assertLike(await request(o, [C.id, D.id]), [info(C, "offline", lastSeen), info(D, "online")]);
    assert.deepEqual(dbUser(C.id), { username: "carl", status: "online", online: false, lastSeen });
    assert.equal(dbUser(D.id).online, true);
  });
});

describe("an edge restarted under the same EDGE_ID (WebSocket clients; presence with PRESENCE_EDGE_TIMEOUT_MS 20000)", () => {
  const LONG_TIMEOUT_MS = 20000;
  let nats2;
  let edgeB;
  before(async () => {
    nats2 = await startNats();
    pg.psql("CREATE DATABASE presence_edge_restart");
    await startPresence({
      nats: nats2,
      pg: { url: pg.url.replace(/\/postgres$/, "/presence_edge_restart") },
      name: "long-edge-timeout",
      env: { PRESENCE_EDGE_TIMEOUT_MS: String(LONG_TIMEOUT_MS), PRESENCE_RESYNC_MS: String(RESYNC_MS) },
    });
    edgeB = await startEdge({ nats: nats2, name: "restart-b", env: EDGE_ENV });
  });

  test("the new boot id drops the old sessions at once: offline for a user only there, nothing for a user with a tab elsewhere", async () => {
    const edgeA = await startEdge({ nats: nats2, name: "restart-a", env: EDGE_ENV });
    const O = makeUser("olga");
    const C = makeUser("carl");
    const D = makeUser("dora");
    const users = [C, D];
    const o = await connect(O, edgeB);
    await connect(C, edgeA);
    await expectStatus([o], info(C, "online"), users, "carl's online");
    await connect(D, edgeA);
    await expectStatus([o], info(D, "online"), users, "dora's online");
    const d2 = await connect(D, edgeB);
    const t0 = Date.now();
    await edgeA.stop("SIGKILL");
    const edgeA2 = await startEdge({ nats: nats2, name: "restart-a", env: EDGE_ENV });
    const lastSeen = await expectOffline([o, d2], C, users, "carl's offline after the restart", 5000);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < LONG_TIMEOUT_MS / 4, `offline ${elapsed} ms after the kill`);
    const ms = Date.parse(lastSeen);
    assert.ok(ms >= t0 && ms <= Date.now() + 5, `lastSeen ${lastSeen} between the kill and now`);
    await marker(edgeB, [o, d2], users, "nothing for dora (still on edge B)");
    assertLike(await request(o, [C.id, D.id]), [info(C, "offline", lastSeen), info(D, "online")]);
    const R = makeUser("rita");
    const r = await connect(R, edgeA2);
    assertLike(entryOf(r.list, R), info(R, "online"));
    assertLike(entryOf(r.list, O), info(O, "online"));
    assertLike(entryOf(r.list, D), info(D, "online"));
    entryOf(r.list, C, { absent: true });
  });
});

describe("presence killed with SIGKILL and restarted (WebSocket clients)", () => {
  test("users who stayed connected are never shown offline and are online after; a user who left meanwhile goes offline after PRESENCE_RESYNC_MS", async () => {
    const A = makeUser("amy");
    const B = makeUser("ben");
    const X = makeUser("xena");
    const users = [A, B, X];
    const a = await connect(A, edge1);
    const b = await connect(B, edge2);
    await expectStatus([a], info(B, "online"), users, "ben's online");
    const x = await connect(X, edge2);
    await expectStatus([a, b], info(X, "online"), users, "xena's online");
    for (const u of users) assert.equal(dbUser(u.id).online, true);

    await presence.stop("SIGKILL");
    const tClose = Date.now();
    await closeSocket(x); // its close goes to nobody
    presence = await startPresence({ nats, pg, name: "restarted", env: PRESENCE_ENV });
    const tUp = Date.now(); // the resync request went out just before
    // Only offline is forbidden for amy and ben ("nobody flaps offline"): a
    // repeated online would be harmless and is passed over.
    const stayed = { skipOnline: [A, B] };
    const lastSeen = await expectOffline([a, b], X, users, "xena's offline after the resync window", RESYNC_MS + 3000, stayed);
    const elapsed = Date.now() - tUp;
    assert.ok(elapsed >= RESYNC_MS - 300, `xena offline ${elapsed} ms after the restart, before the ${RESYNC_MS} ms resync window ended`);
    const ms = Date.parse(lastSeen);
    assert.ok(ms >= tClose && ms <= Date.now() + 5, `lastSeen ${lastSeen} after she left`);
    assert.deepEqual(dbUser(X.id), { username: "xena", status: "online", online: false, lastSeen });

    // A deliberate window: past the restarted presence's own edge timeout too.
    await delay(Math.max(0, tUp + EDGE_TIMEOUT_MS + 500 - Date.now()));
    const m = await marker(edge1, [a, b], users, "no offline for amy and ben during and after the restart", stayed);
    assertLike(entryOf(m.list, A), info(A, "online"));
    assertLike(entryOf(m.list, B), info(B, "online"));
    entryOf(m.list, X, { absent: true });
    assertLike(await request(a, [A.id, B.id, X.id]), [info(A, "online"), info(B, "online"), info(X, "offline", lastSeen)]);
    assert.equal(dbUser(A.id).online, true);
    assert.equal(dbUser(B.id).online, true);
  });
});

// The edges' own copy of the online list: a connect's presence:update comes
// from it, whole, however many users are online (presence answers session
// opens with an empty list: PRESENCE_LIST_IN_REPLY's default is 0).
//
// 1. 100,000 users (the real presence, PostgreSQL, a fake edge over raw NATS
//    announcing their session opens and keeping them with heartbeats): a new
//    socket's presence:update lists all of them and itself, per client
//    transport, timed from the CONNECT; an edge started after them takes a
//    snapshot in chunks; a change it misses (a gap in seq) or a change of
//    another epoch makes an edge take a new snapshot, and what presence never
//    said is gone from its lists.
// 2. A presence takeover (two replicas, the active killed with SIGKILL): the
//    new active's changes are of a new epoch; the edge takes a new snapshot.
// 3. A scripted presence (raw NATS, playing the wire contract message by
//    message) behind one edge: a snapshot in chunks then changes in order; a
//    reply that waits for a snapshot on its way, with the changes heard
//    meanwhile; no snapshot in time (the list presence's reply carries); a
//    chunk out of order; another epoch and the old one's stray changes; a
//    NATS restart; ResyncRequests for this edge, none, or another edge.
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import net from "node:net";
import { readFileSync } from "node:fs";
import { before, after, describe } from "node:test";
import { io } from "socket.io-client";
import {
  test,
  startNats,
  startPostgres,
  startPresence,
  startEdge,
  clientOptions,
  withTimeout,
  delay,
  shutdown,
  httpRequest,
  TRANSPORTS,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const N_USERS = 100000; // the synthetic users of the first part
const LIST_BOUND_MS = 10000; // CONNECT to the whole list, on this project's 2-core machine
const ONLINE = 1;
const AWAY = 2;
const OFFLINE = 3;

// ---------------------------------------------------------------- raw NATS

/** A NATS client over raw TCP: publish, subscribe, flush (PING/PONG). Handlers get copies of the payloads. */
class RawNats {
  constructor(port) {
    this.sock = net.connect({ host: "127.0.0.1", port });
    this.sock.setNoDelay(true);
    this.rest = null;
    this.subs = new Map(); // sid -> handler(subject, reply, payload)
    this.nextSid = 1;
    this.pongs = [];
    this.errors = [];
    this.sock.on("error", () => {});
    this.ready = new Promise((resolve, reject) => {
      this.onReady = resolve;
      this.sock.once("error", reject);
      this.sock.once("close", () => reject(new Error("closed before INFO")));
    });
    this.sock.on("data", (chunk) => this.parse(chunk));
  }

  parse(chunk) {
    const buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    let i = 0;
    for (;;) {
      const eol = buf.indexOf("\r\n", i);
      if (eol < 0) break;
      if (buf[i] === 0x4d /* MSG <subject> <sid> [reply] <len> */) {
        const parts = buf.toString("latin1", i, eol).split(" ");
        const len = Number(parts[parts.length - 1]);
        if (buf.length < eol + 2 + len + 2) break;
        const payload = Buffer.from(buf.subarray(eol + 2, eol + 2 + len));
        i = eol + 2 + len + 2;
        this.subs.get(Number(parts[2]))?.(parts[1], parts.length === 5 ? parts[3] : null, payload);
        continue;
      }
      const line = buf.toString("latin1", i, eol);
      i = eol + 2;
      if (line.startsWith("INFO")) {
        this.sock.write('CONNECT {"verbose":false,"pedantic":false,"name":"e2e-online"}\r\n');
        this.onReady();
      } else if (line === "PING") this.sock.write("PONG\r\n");
      else if (line === "PONG") this.pongs.shift()?.();
      else if (line.startsWith("-ERR")) this.errors.push(line);
    }
    this.rest = i < buf.length ? Buffer.from(buf.subarray(i)) : null;
  }

  /** Returns the subscription's sid. */
  subscribe(subject, handler) {
    const sid = this.nextSid++;
    this.subs.set(sid, handler);
    this.sock.write(`SUB ${subject} ${sid}\r\n`);
    return sid;
  }

  unsubscribe(sid) {
    this.subs.delete(sid);
    this.sock.write(`UNSUB ${sid}\r\n`);
  }

  /** One PUB command (a Buffer), for batching. */
  static pub(subject, payload, reply) {
    return Buffer.concat([Buffer.from(`PUB ${subject}${reply ? " " + reply : ""} ${payload.length}\r\n`), payload, Buffer.from("\r\n")]);
  }

  publish(subject, payload, reply) {
    this.sock.write(RawNats.pub(subject, payload, reply));
  }

  write(buf) {
    return this.sock.write(buf);
  }

  /** Resolves once the server has processed everything sent before (PING/PONG); bounded. */
  flush(ms = 10000) {
    const p = new Promise((resolve) => this.pongs.push(resolve));
    this.sock.write("PING\r\n");
    return withTimeout(p, ms, "a PONG from nats-server");
  }

  close() {
    this.sock.destroy();
  }
}

async function rawNats(port) {
  const c = new RawNats(port);
  await withTimeout(c.ready, 5000, "a raw NATS connection");
  await c.flush();
  return c;
}

// ---------------------------------------------------------------- protobuf (proto/chat.proto): what these tests send and read

function varint(v) {
  const out = [];
  let n = BigInt(v);
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Buffer.from(out);
}
const pbBytes = (field, b) => Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
const pbString = (field, s) => pbBytes(field, Buffer.from(s));
const pbUint = (field, v) => Buffer.concat([varint(field << 3), varint(v)]);

/** The top-level fields of a message: Map(field -> [value (Buffer or BigInt)]). */
function pbFields(buf) {
  const fields = new Map();
  let i = 0;
  const readVarint = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const tag = Number(readVarint());
    let value;
    if ((tag & 7) === 0) value = readVarint();
    else if ((tag & 7) === 2) {
      const len = Number(readVarint());
      value = buf.subarray(i, i + len);
      i += len;
    } else throw new Error(`wire type ${tag & 7} not expected`);
    if (!fields.has(tag >> 3)) fields.set(tag >> 3, []);
    fields.get(tag >> 3).push(value);
  }
  return fields;
}
const str = (f, n) => (f.get(n)?.[0] ?? Buffer.alloc(0)).toString();
const num = (f, n) => Number(f.get(n)?.[0] ?? 0n);

/** PresenceInfo {user_id 1, username 2, status 3, last_seen_ms 4}. */
const presenceInfo = ({ id, name, status, lastSeen }) =>
  Buffer.concat([pbString(1, id), pbString(2, name), pbUint(3, status), pbUint(4, lastSeen)]);
/** PresenceChange {info 1, seq 2, epoch 3}. */
const presenceChange = (user, seq, epoch) => Buffer.concat([pbBytes(1, presenceInfo(user)), pbUint(2, seq), pbString(3, epoch)]);
/** PresenceSnapshot {epoch 1, seq 2, chunk 3, chunks 4, users 5}. */
const presenceSnapshot = (epoch, seq, chunk, chunks, users) =>
  Buffer.concat([pbString(1, epoch), pbUint(2, seq), pbUint(3, chunk), pbUint(4, chunks), ...users.map((u) => pbBytes(5, presenceInfo(u)))]);
/** PresenceList {users 1}. */
const presenceList = (users) => Buffer.concat(users.map((u) => pbBytes(1, presenceInfo(u))));
/** SessionEvent {kind 1, edge_id 2, boot_id 3, conn_id 4, user_id 5, username 6, resync 7}. */
const sessionEvent = ({ kind, edge, boot, conn, id, name }) =>
  Buffer.concat([pbUint(1, kind), pbString(2, edge), pbString(3, boot), pbUint(4, conn), pbString(5, id), pbString(6, name)]);
/** EdgeHeartbeat {edge_id 1, boot_id 2, open_sessions 3, interval_ms 4}. */
const edgeHeartbeat = ({ edge, boot, open, intervalMs }) =>
  Buffer.concat([pbString(1, edge), pbString(2, boot), pbUint(3, open), pbUint(4, intervalMs)]);
/** ResyncRequest {presence_boot_id 1, edge_id 2}. */
const resyncRequest = (boot, edgeId) => Buffer.concat([pbString(1, boot), pbString(2, edgeId)]);

function decodeChange(buf) {
  const f = pbFields(buf);
  const info = pbFields(f.get(1)?.[0] ?? Buffer.alloc(0));
  return { id: str(info, 1), name: str(info, 2), status: num(info, 3), lastSeen: num(info, 4), seq: num(f, 2), epoch: str(f, 3) };
}

function decodeSessionEvent(buf) {
  const f = pbFields(buf);
  return { kind: num(f, 1), edge: str(f, 2), boot: str(f, 3), conn: num(f, 4), id: str(f, 5), name: str(f, 6), resync: num(f, 7) === 1 };
}

// ---------------------------------------------------------------- clients and edges

const sockets = new Set();
let pg; // one throwaway PostgreSQL, a database per part
before(async () => {
  pg = await startPostgres();
});
after(() => {
  for (const s of sockets) s.close();
  return shutdown();
});

/**
 * A socket.io-client socket of user on edge, recording presence:update and
 * user:status. Resolves once connected: {user, socket, lists, statuses,
 * t0 (before io()), connectedAt, listAt (first presence:update)}.
 */
async function client(user, edge, { transport = "websocket", ms = 5000 } = {}) {
  const t0 = Date.now();
  const socket = io(edge.url, clientOptions({ token: user.token }, { transport }));
  sockets.add(socket);
  const c = { user, socket, lists: [], statuses: [], t0, watchers: new Set() };
  const wake = () => {
    for (const w of [...c.watchers]) w();
  };
  socket.on("presence:update", (l) => {
    c.listAt ??= Date.now();
    c.lists.push(l);
    wake();
  });
  socket.on("user:status", (s) => (c.statuses.push(s), wake()));
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    ms,
    `${user.username} connecting to ${edge.name}`,
  );
  c.connectedAt = Date.now();
  return c;
}

/** Resolves when pred() holds, checked on every event of c; bounded. */
function until(c, pred, ms, what) {
  let check;
  return withTimeout(
    new Promise((resolve) => {
      check = () => {
        if (pred()) resolve();
      };
      c.watchers.add(check);
      check();
    }),
    ms,
    what,
  ).finally(() => c.watchers.delete(check));
}

/** c's first presence:update (waited for); returns the list. */
async function firstList(c, ms = 5000) {
  await until(c, () => c.lists.length > 0, ms, `${c.user.username}'s presence:update`);
  return c.lists[0];
}

/** The sorted userIds of a list. */
const idsOf = (list) => list.map((e) => e.userId).sort();
const sorted = (users) => users.map((u) => u.id).sort();

/** How far an edge's output has got: for lineAfter. */
const mark = (edge) => edge.child.output.length;

/** The first line of edge's output after from (a mark) that matches re; bounded. */
function lineAfter(edge, from, re, ms, what) {
  const child = edge.child;
  let check;
  return withTimeout(
    new Promise((resolve, reject) => {
      check = () => {
        const line = child.output.slice(from).split("\n").find((l) => re.test(l));
        if (line !== undefined) resolve(line);
        else if (child.exited) reject(new Error(`${child.name} exited before ${what}`));
      };
      child.watchers.push(check);
      check();
    }),
    ms,
    `${edge.name}: ${what}`,
  ).finally(() => {
    child.watchers = child.watchers.filter((w) => w !== check);
  });
}

/** A counter or gauge of an edge's /metrics (labels: the inside of the braces, or none). */
async function edgeMetric(edge, name, labels = "") {
  const r = await httpRequest(`${edge.url}/metrics`, { ms: 3000, what: `${edge.name} /metrics` });
  const key = labels ? `${name}{${labels}} ` : `${name} `;
  const line = r.text.split("\n").find((l) => l.startsWith(key));
  return line === undefined ? 0 : Number(line.slice(key.length));
}

/** The edge process's resident memory, in MiB. */
function rssMiB(edge) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${edge.child.proc.pid}/status`, "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : -1;
}

// ================================================================ 1. 100,000 users

describe(`${N_USERS.toLocaleString("en")} users online: real presence, a fake edge over raw NATS`, () => {
  let nats;
  let presence;
  let edge1;
  let edge2;
  let fake; // the fake edge's connection
  let watch; // hears chat.presence.status
  let heartbeat;
  const prefix = randomBytes(4).toString("hex");
  const synth = (i) => ({ id: `${prefix}-0000-4000-8000-${String(i).padStart(12, "0")}`, name: `crowd-${i}` });
  const synthIds = Array.from({ length: N_USERS }, (_, i) => synth(i).id);
  const FAKE = { edge: "fake-crowd-edge", boot: randomBytes(8).toString("hex") };
  let last = { epoch: "", seq: 0 }; // the last change heard
  const connected = []; // the real users connected in this part
  const mine = []; // their sockets

  before(async () => {
    nats = await startNats();
    pg.psql("CREATE DATABASE online_crowd");
    const db = { url: pg.url.replace(/\/postgres$/, "/online_crowd") };
    presence = await startPresence({ nats, pg: db, env: { LOG_LEVEL: "info" } }); // PRESENCE_LIST_IN_REPLY: its default
    edge1 = await startEdge({ nats, name: "online-edge-1" });
    [fake, watch] = await Promise.all([rawNats(nats.port), rawNats(nats.port)]);
  });

  // The crowd's processes are stopped (and checked for a clean exit) before the other parts run.
  after(async () => {
    clearInterval(heartbeat);
    fake?.close();
    watch?.close();
    for (const s of mine) s.close();
    for (const p of [edge1, edge2, presence]) await p?.stop();
  });

  /** Every synthetic id once, the connected users, and nobody else. */
  function assertWhole(list, what) {
    const ids = idsOf(list);
    const want = [...synthIds, ...connected.map((u) => u.id)].sort();
    assert.equal(ids.length, want.length, `${what}: ${ids.length} users listed, want ${want.length}`);
    assert.deepEqual(ids, want, `${what}: not the users online`);
  }

  test(`${N_USERS.toLocaleString("en")} users announced: a new socket's presence:update lists them all and itself, in one event, per client transport`, { timeout: 180000 }, async () => {
    let ours = 0;
    let allHeard;
    const heard = new Promise((resolve) => (allHeard = resolve));
    watch.subscribe("chat.presence.status", (_s, _r, payload) => {
      const ch = decodeChange(payload);
      last = { epoch: ch.epoch, seq: ch.seq };
      if (ch.id.startsWith(prefix) && ch.status === ONLINE && ++ours === N_USERS) allHeard();
    });
    await watch.flush();
    const rssBefore = rssMiB(edge1);
    const hb = () => fake.publish("chat.edge.heartbeat", edgeHeartbeat({ ...FAKE, open: N_USERS, intervalMs: 1000 }));
    hb();
    heartbeat = setInterval(hb, 1000);
    const t0 = Date.now();
    for (let i = 0; i < N_USERS; i += 1000) {
      const batch = [];
      for (let k = i; k < Math.min(N_USERS, i + 1000); k++) {
        const u = synth(k);
        batch.push(RawNats.pub("chat.presence.session", sessionEvent({ kind: 1, ...FAKE, conn: k + 1, id: u.id, name: u.name })));
      }
      if (!fake.write(Buffer.concat(batch))) await new Promise((resolve) => fake.sock.once("drain", resolve));
    }
    await fake.flush(60000);
    await withTimeout(heard, 120000, `presence's user:status online for the ${N_USERS} users`);
    console.log(`# ${N_USERS} session opens announced over NATS until presence published every change: ${Date.now() - t0} ms`);

    for (const transport of TRANSPORTS) {
      const U = makeUser(`looker-${transport}`);
      const c = await client(U, edge1, { transport, ms: LIST_BOUND_MS + 5000 });
      connected.push(U);
      mine.push(c.socket);
      const list = await firstList(c, LIST_BOUND_MS);
      const ms = c.listAt - c.t0;
      const bytes = Buffer.byteLength(JSON.stringify(list));
      console.log(`# ${transport}: from io() (handshake, CONNECT) to a presence:update of ${list.length} users (${(bytes / 1e6).toFixed(1)} MB of JSON): ${ms} ms, the client's parse and schema check included; its connect event after ${c.connectedAt - c.t0} ms`);
      assert.equal(c.lists.length, 1, "one presence:update");
      assertWhole(list, `${transport}'s list`);
      const self = list.find((e) => e.userId === U.id);
      assert.equal(self.username, U.username);
      assert.equal(self.status, "online");
      const one = list.find((e) => e.userId === synthIds[12345]);
      assert.equal(one.username, "crowd-12345");
      assert.equal(one.status, "online");
      assert.ok(ms < LIST_BOUND_MS, `the list took ${ms} ms, over ${LIST_BOUND_MS}`);
    }
    assert.equal(await edgeMetric(edge1, "chat_edge_online_users"), N_USERS + connected.length);
    assert.equal(await edgeMetric(edge1, "chat_edge_online_in_step"), 1);
    console.log(`# edge 1: VmRSS ${rssBefore} MiB before the users, ${rssMiB(edge1)} MiB after the lists; out of step meanwhile: gap ${await edgeMetric(edge1, "chat_edge_online_out_of_step_total", 'reason="gap"')}, epoch ${await edgeMetric(edge1, "chat_edge_online_out_of_step_total", 'reason="epoch"')}; snapshots ${await edgeMetric(edge1, "chat_edge_online_snapshots_total")}`);
  });

  test("PRESENCE_LIST_IN_REPLY's default (0): presence answers a session open with an empty list", async () => {
    const u = makeUser("raw-open");
    const inbox = `_INBOX.e2e.${randomUUID()}`;
    let reply;
    const got = new Promise((resolve) => (reply = resolve));
    fake.subscribe(inbox, (_s, _r, payload) => reply(payload));
    fake.publish("chat.presence.session", sessionEvent({ kind: 1, ...FAKE, conn: N_USERS + 1, id: u.id, name: u.username }), inbox);
    const payload = await withTimeout(got, 5000, "presence's reply to a session open");
    assert.equal(payload.length, 0, `an empty PresenceList, got ${payload.length} bytes`);
    fake.publish("chat.presence.session", sessionEvent({ kind: 2, ...FAKE, conn: N_USERS + 1, id: u.id, name: u.username }));
    await fake.flush();
  });

  test("an edge started after them takes a snapshot in chunks: its first socket's list is whole", { timeout: 60000 }, async () => {
    edge2 = await startEdge({ nats, name: "online-edge-2" });
    const line = await edge2.child.waitForLine(/online list in step: snapshot \d+ of \d+ users/, 10000, "its first snapshot");
    const [, users, chunks, ms] = /of (\d+) users in (\d+) chunks, .* (\d+) ms after asking/.exec(line);
    console.log(`# a late edge's snapshot: ${users} users in ${chunks} chunks, ${ms} ms from the request to the last chunk applied`);
    assert.ok(Number(users) >= N_USERS, `${users} users in the snapshot`);
    assert.ok(Number(chunks) >= 20, `${chunks} chunks of at most 256 KiB`);
    const U = makeUser("late-looker");
    const c = await client(U, edge2, { ms: LIST_BOUND_MS + 5000 });
    connected.push(U);
    mine.push(c.socket);
    const list = await firstList(c, LIST_BOUND_MS);
    console.log(`# the late edge: from io() to a presence:update of ${list.length} users: ${c.listAt - c.t0} ms; VmRSS ${rssMiB(edge2)} MiB`);
    assertWhole(list, "the late edge's list");
    assert.equal(await edgeMetric(edge2, "chat_edge_online_snapshots_total"), 1);
  });

  test("a change an edge did not hear (a gap in seq), or a change of another epoch: a new snapshot, and the unheard-of user is not listed", { timeout: 60000 }, async () => {
    for (const [why, re, fake0] of [
      ["gap", /online list out of step \(a change skipped a seq\)/, () => ({ epoch: last.epoch, seq: last.seq + 1000 })],
      ["epoch", /online list out of step \(a change of another epoch\)/, () => ({ epoch: `not-${last.epoch}`, seq: 1 })],
    ]) {
      const ghost = { id: randomUUID(), name: `ghost-${why}`, status: ONLINE, lastSeen: Date.now() };
      const before1 = await edgeMetric(edge1, "chat_edge_online_snapshots_total");
      const from = mark(edge1);
      const { epoch, seq } = fake0();
      // a change presence never made: applied as it stands it would list the ghost
      fake.publish("chat.presence.status", presenceChange(ghost, seq, epoch));
      await lineAfter(edge1, from, re, 5000, `out of step (${why})`);
      await lineAfter(edge1, from, /online list in step: snapshot/, 10000, `a new snapshot (${why})`);
      assert.equal(await edgeMetric(edge1, "chat_edge_online_snapshots_total"), before1 + 1);
      assert.ok((await edgeMetric(edge1, "chat_edge_online_out_of_step_total", `reason="${why}"`)) >= 1);
      const U = makeUser(`after-${why}`);
      const c = await client(U, edge1, { ms: LIST_BOUND_MS + 5000 });
      connected.push(U);
      mine.push(c.socket);
      const list = await firstList(c, LIST_BOUND_MS);
      assert.equal(list.find((e) => e.userId === ghost.id), undefined, `the ${why} ghost is listed`);
      assertWhole(list, `the list after a ${why}`);
    }
  });
});

// ================================================================ 2. a presence takeover

describe("a presence takeover: the new active's changes are of a new epoch; the edge takes a new snapshot", () => {
  let nats;
  let edge;
  const replicas = [];

  before(async () => {
    nats = await startNats();
    pg.psql("CREATE DATABASE online_takeover");
    const db = { url: pg.url.replace(/\/postgres$/, "/online_takeover") };
    const env = { PRESENCE_EDGE_TIMEOUT_MS: "5000", PRESENCE_RESYNC_MS: "1000" };
    replicas.push(await startPresence({ nats, pg: db, name: "presence-a", env })); // alone: the active
    replicas.push(await startPresence({ nats, pg: db, name: "presence-b", env })); // a standby with its state
    edge = await startEdge({ nats, name: "takeover-edge", env: { EDGE_HEARTBEAT_MS: "200" } });
  });

  test("the active killed: who left and who came meanwhile are right in a later list", { timeout: 60000 }, async () => {
    assert.match(replicas[1].child.output, /standby synced/, "presence-b is a standby");
    const O = makeUser("olga");
    const S = makeUser("sam");
    const L = makeUser("leo"); // leaves while nobody is active
    const N = makeUser("nia"); // comes then
    const o = await client(O, edge);
    await firstList(o);
    const l = await client(L, edge);
    await client(S, edge);
    await until(o, () => [S, L].every((u) => o.statuses.some((s) => s.userId === u.id && s.status === "online")), 3000, "sam and leo online");
    const from = mark(edge);
    await replicas[0].stop("SIGKILL");
    l.socket.close();
    await edge.child.waitForLine(new RegExp(`disconnect user=${L.id} `), 3000, "leo's disconnect");
    await client(N, edge, { ms: 8000 }); // answered after the edge's 2 s wait: nobody is active
    await until(o, () => o.statuses.some((s) => s.userId === L.id && s.status === "offline") && o.statuses.some((s) => s.userId === N.id && s.status === "online"), 10000, "leo offline and nia online from the new active");
    const out = await lineAfter(edge, from, /online list out of step \(a change of another epoch\)/, 5000, "the new epoch seen");
    const inStep = await lineAfter(edge, from, /online list in step: snapshot/, 5000, "a snapshot of the new epoch");
    console.log(`# takeover: ${out.replace(/^.*online list/, "online list")}; then ${inStep.replace(/^.*online list/, "online list")}`);
    const F = makeUser("fay");
    const f = await client(F, edge);
    assert.deepEqual(idsOf(await firstList(f)), sorted([O, S, N, F]));
  });
});

// ================================================================ 3. a scripted presence

/**
 * Plays presence on raw NATS, by the wire contract: numbered changes in an
 * epoch (published before the reply to the open that caused them), snapshots
 * in chunks of perChunk users as of the moment the request came, session
 * opens answered with replyList(event) as the PresenceList. mode: "auto"
 * (answers snapshot requests at once), "hold" (keeps them for release()),
 * "ignore" (never answers), "bad-once" (answers the next with its last chunk
 * first, then goes back to auto). log: every session event and snapshot
 * request, in the order heard.
 */
class ScriptedPresence {
  constructor({ perChunk = 2 } = {}) {
    this.perChunk = perChunk;
    this.epoch = "E1";
    this.seq = 0;
    this.users = new Map(); // id -> {id, name, status, lastSeen}
    this.sessions = new Map(); // user id -> number of sessions
    this.mode = "auto";
    this.held = [];
    this.requests = [];
    this.log = [];
    this.replyList = () => [];
    this.watchers = new Set();
  }

  async connect(port) {
    this.nc = await rawNats(port);
    this.answerSnapshots();
    this.nc.subscribe("chat.presence.session", (_s, reply, payload) => this.onSession(reply, payload));
    await this.nc.flush();
  }

  /** Subscribes chat.presence.snapshot (an active presence does). */
  answerSnapshots() {
    this.snapshotSid = this.nc.subscribe("chat.presence.snapshot", (_s, reply) => this.onSnapshot(reply));
  }

  /** Unsubscribes it: the edge's requests find no responder (no presence active). */
  stopSnapshots() {
    this.nc.unsubscribe(this.snapshotSid);
  }

  wake() {
    for (const w of [...this.watchers]) w();
  }

  /** Resolves when pred() holds, checked on every message heard; bounded. */
  until(pred, ms, what) {
    let check;
    return withTimeout(
      new Promise((resolve) => {
        check = () => pred() && resolve();
        this.watchers.add(check);
        check();
      }),
      ms,
      what,
    ).finally(() => this.watchers.delete(check));
  }

  state() {
    return { epoch: this.epoch, seq: this.seq, users: [...this.users.values()] };
  }

  send(reply, { epoch, seq, users }, { badOrder = false } = {}) {
    const chunks = [];
    for (let i = 0; i < users.length; i += this.perChunk) chunks.push(users.slice(i, i + this.perChunk));
    if (chunks.length === 0) chunks.push([]);
    const order = chunks.map((_, k) => k);
    if (badOrder) order.reverse();
    for (const k of order) this.nc.publish(reply, presenceSnapshot(epoch, seq, k, chunks.length, chunks[k]));
  }

  onSnapshot(reply) {
    const r = { reply, state: this.state(), n: Number(/\.s(\d+)$/.exec(reply)?.[1]) };
    this.requests.push(r);
    this.log.push({ what: "snapshot", n: r.n });
    if (this.mode === "auto") this.send(reply, r.state);
    else if (this.mode === "hold") this.held.push(r);
    else if (this.mode === "bad-once") {
      this.send(reply, r.state, { badOrder: true });
      this.mode = "auto";
    }
    this.wake();
  }

  /** Answers the held requests with the state they were asked at. */
  release() {
    for (const r of this.held.splice(0)) this.send(r.reply, r.state);
  }

  onSession(reply, payload) {
    const ev = decodeSessionEvent(payload);
    this.log.push({ what: "session", ev });
    const n = this.sessions.get(ev.id) ?? 0;
    if (ev.kind === 1 && !ev.resync) {
      this.sessions.set(ev.id, n + 1);
      if (n === 0) this.change({ id: ev.id, name: ev.name }, ONLINE);
      this.beforeReply?.(ev);
      if (reply) this.nc.publish(reply, presenceList(this.replyList(ev)));
    } else if (ev.kind === 2 && n > 0) {
      this.sessions.set(ev.id, n - 1);
      if (n === 1) this.change({ id: ev.id, name: ev.name }, OFFLINE);
    }
    this.wake();
  }

  /** A change, numbered and published (on the status subject, before anything sent after it). */
  change(user, status) {
    const u = { id: user.id, name: user.name ?? user.username, status, lastSeen: Date.now() };
    this.seq++;
    if (status === OFFLINE) this.users.delete(u.id);
    else this.users.set(u.id, u);
    this.nc.publish("chat.presence.status", presenceChange(u, this.seq, this.epoch));
  }

  /** A change whose publication failed: its number is used all the same. */
  skip() {
    this.seq++;
  }

  newEpoch(epoch) {
    this.epoch = epoch;
    this.seq = 0;
  }
}

describe("a scripted presence behind one edge: each message of the contract", () => {
  let nats;
  let edge;
  let p;
  const decoy = { id: randomUUID(), name: "decoy", status: ONLINE, lastSeen: Date.now() };
  const named = (name) => ({ id: randomUUID(), name });
  const A = named("ann");
  const B = named("bob");
  const C = named("cid");
  const D = named("dan");
  const G = named("gus");
  const H = named("hal");
  const M = named("max");
  const stray = named("stray");
  const open = []; // users with a socket open on the edge

  before(async () => {
    nats = await startNats();
    p = new ScriptedPresence({ perChunk: 2 });
    await p.connect(nats.port);
    p.seq = 10;
    for (const u of [A, B, C]) p.users.set(u.id, { ...u, status: ONLINE, lastSeen: Date.now() });
    edge = await startEdge({ nats, name: "scripted-edge" });
  });

  /** Connects user; resolves with the client once its list came. */
  async function connect(user, opts) {
    const c = await client(user, edge, opts);
    open.push(user);
    await firstList(c);
    return c;
  }
  const ids = (...users) => users.map((u) => u.id).sort();

  test("a snapshot in 2 chunks, then changes in order: a connect's list is the copy's, not the list presence's reply carries", async () => {
    await edge.child.waitForLine(/online list in step: snapshot \d+ of 3 users in 2 chunks, epoch=E1 seq=10/, 5000, "the first snapshot");
    p.change(D, ONLINE);
    p.change(B, OFFLINE);
    p.replyList = () => [decoy];
    const U = makeUser("ursula");
    const u = await connect(U);
    assert.deepEqual(idsOf(u.lists[0]), ids(A, C, D, U));
    const self = u.lists[0].find((e) => e.userId === U.id);
    assert.deepEqual(Object.keys(self).sort(), ["lastSeen", "status", "userId", "username"]);
    assert.equal(self.status, "online");
  });

  test("out of step with a snapshot on its way: the CONNECT reply waits for it; a change heard meanwhile is applied after it", async () => {
    p.mode = "hold";
    const asked = p.requests.length;
    p.skip(); // a change presence could not publish
    p.change(G, ONLINE); // the edge sees the gap
    await p.until(() => p.held.length === 1, 5000, "the edge's snapshot request");
    assert.equal(p.requests.length, asked + 1);
    const V = makeUser("vera");
    const opened = p.log.length;
    const pending = client(V, edge);
    await p.until(() => p.log.slice(opened).some((e) => e.what === "session" && e.ev.id === V.id), 5000, "vera's session open");
    // The edge gives no sign of a reply it holds: a short window in which the client must not be answered.
    await delay(300);
    assert.equal(p.held.length, 1);
    const released = Date.now();
    p.release(); // as of the request: without vera, whose change the edge buffered
    const v = await pending;
    open.push(V);
    assert.ok(v.connectedAt >= released, "the CONNECT was answered before the snapshot came");
    assert.deepEqual(idsOf(await firstList(v)), ids(A, C, D, G, ...open));
    p.mode = "auto";
  });

  test("no snapshot within the CONNECT's 2 s: the list presence's reply carries; the edge asks again until one comes", { timeout: 20000 }, async () => {
    p.mode = "ignore";
    p.skip();
    p.change(H, ONLINE);
    const asked = p.requests.length;
    await p.until(() => p.requests.length > asked, 5000, "the edge's snapshot request");
    const W = makeUser("wes");
    p.replyList = (ev) => [decoy, { id: ev.id, name: ev.name, status: ONLINE, lastSeen: Date.now() }];
    const w = await client(W, edge, { ms: 8000 });
    open.push(W);
    // It waits until the snapshot is given up (2 s after it was asked, just before this CONNECT) or
    // the CONNECT's own 2 s are over, whichever comes first.
    const waited = w.connectedAt - w.t0;
    console.log(`# no snapshot in time: the CONNECT answered after ${waited} ms, with presence's list`);
    assert.ok(waited >= 1000, `answered after ${waited} ms: it did not wait for the snapshot`);
    assert.deepEqual(idsOf(await firstList(w)), ids(decoy, W));
    p.replyList = () => [decoy];
    const from = mark(edge);
    p.mode = "auto"; // the edge gives a request up after 2 s and asks again 250 ms later
    await lineAfter(edge, from, /online list in step/, 8000, "a snapshot once presence answers again");
    const X = makeUser("xia");
    const x = await connect(X);
    assert.deepEqual(idsOf(x.lists[0]), ids(A, C, D, G, H, ...open));
  });

  test("a snapshot whose chunks come out of order is refused and asked again", async () => {
    p.mode = "bad-once";
    const asked = p.requests.length;
    const from = mark(edge);
    p.skip();
    p.change(M, ONLINE);
    await lineAfter(edge, from, /online list: snapshot \d+ refused \(a chunk out of order/, 5000, "the refusal");
    await lineAfter(edge, from, /online list in step/, 5000, "the next snapshot");
    assert.equal(p.requests.length, asked + 2);
    const Y = makeUser("yan");
    const y = await connect(Y);
    assert.deepEqual(idsOf(y.lists[0]), ids(A, C, D, G, H, M, ...open));
  });

  test("another epoch: a new snapshot; the old epoch's stray changes are skipped", async () => {
    const from = mark(edge);
    p.newEpoch("E2");
    p.users.delete(M.id); // the new active's view: max left while nobody was active
    p.change(H, AWAY);
    await lineAfter(edge, from, /online list out of step \(a change of another epoch\)/, 5000, "the new epoch seen");
    await lineAfter(edge, from, /online list in step: .* epoch=E2 /, 5000, "a snapshot of E2");
    const asked = p.requests.length;
    // the old active's last words, numbered as E1 would go on: skipped, no snapshot asked
    p.nc.publish("chat.presence.status", presenceChange({ ...stray, status: ONLINE, lastSeen: Date.now() }, 1000, "E1"));
    const Z = makeUser("zoe");
    const z = await connect(Z);
    assert.equal(p.requests.length, asked, "no snapshot asked for the old epoch's change");
    const list = z.lists[0];
    assert.deepEqual(idsOf(list), ids(A, C, D, G, H, ...open));
    assert.equal(list.find((e) => e.userId === H.id).status, "away");
  });

  test("no responder for snapshots a moment ago: presence's answer to an open makes the edge ask again at once, and the reply waits for it", async () => {
    const from = mark(edge);
    p.stopSnapshots(); // as while no presence replica is active
    await p.nc.flush();
    p.skip();
    p.change(D, ONLINE); // a gap: the edge asks, finds no responder, asks again every 250 ms
    await lineAfter(edge, from, /online list out of step \(a change skipped a seq\)/, 5000, "the gap seen");
    await delay(300); // the edge gives no sign of a request that found no responder: at least one did
    const asked = p.requests.length;
    const K = makeUser("kim");
    // presence is back just before it answers kim's open: without the edge asking at once, the reply
    // would find the copy out of step and nothing on its way (the decoy list)
    p.beforeReply = () => p.answerSnapshots();
    const k = await connect(K);
    p.beforeReply = undefined;
    assert.ok(p.requests.length > asked, "a snapshot asked after the open's answer");
    assert.deepEqual(idsOf(k.lists[0]), ids(A, C, D, G, H, ...open));
  });

  test("ResyncRequest: the edge announces its sockets again when it names this edge or none, not another edge", async () => {
    const cases = [
      ["another edge", "someone-else", false],
      ["this edge", "scripted-edge", true],
      ["every edge", "", true],
    ];
    for (const [what, edgeId, answers] of cases) {
      const from = p.log.length;
      const asked = p.requests.length;
      p.nc.publish("chat.presence.resync", resyncRequest("scripted-presence", edgeId));
      // then a gap: the edge's snapshot request is the marker (one NATS connection: its messages come in order)
      p.skip();
      p.change(D, AWAY);
      await p.until(() => p.requests.length > asked, 5000, `the marker after a ResyncRequest for ${what}`);
      const before1 = p.log.slice(from, p.log.findIndex((e, i) => i >= from && e.what === "snapshot"));
      const reopened = before1.filter((e) => e.what === "session" && e.ev.resync && e.ev.kind === 1).map((e) => e.ev.id).sort();
      if (answers) assert.deepEqual(reopened, ids(...open), `${what}: every open socket announced again`);
      else assert.deepEqual(reopened, [], `${what}: nothing announced`);
    }
  });

  test("NATS restarted: the edge takes a new snapshot", { timeout: 30000 }, async () => {
    const from = mark(edge);
    const before1 = await edgeMetric(edge, "chat_edge_online_out_of_step_total", 'reason="reconnect"');
    p.nc.close();
    await nats.stop("SIGKILL");
    const again = await startNats({ port: nats.port, dir: nats.dir });
    nats = again;
    p.replyList = () => [];
    await p.connect(nats.port); // the same presence, on the new server
    await lineAfter(edge, from, /online list out of step \(NATS connected again\)/, 10000, "the reconnection");
    await lineAfter(edge, from, /online list in step/, 10000, "a snapshot after it");
    assert.equal(await edgeMetric(edge, "chat_edge_online_out_of_step_total", 'reason="reconnect"'), before1 + 1);
    const Q = makeUser("quin");
    const q = await connect(Q);
    assert.deepEqual(idsOf(q.lists[0]), ids(A, C, D, G, H, ...open));
  });
});

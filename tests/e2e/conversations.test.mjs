// Conversations end to end: conversation:list and conversation:read through
// real edges, nats-server (JetStream), chat-messaging, chat-presence (the
// usernames) and PostgreSQL, driven by socket.io-client. The README's
// contract: the list's order (latest activity first, both directions), its
// items {withUserId, username, lastMessage, unread}, keyset pages (nextBefore),
// unread counts, conversation:read (every message of the other user up to
// upTo, one message:read per message to every tab of the sender, in order,
// nobody else), validation (ack and chat:error), `unavailable` without
// messaging or NATS; the receipts on CHAT_EVENTS, once each; a sender whose
// connection dropped getting them on recovery; and a kill -9 of messaging in
// the middle of a conversation:read of 2,000 messages (each receipt once).
// Light tests run once per client transport; the heavy ones over WebSocket only.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { before, after, describe } from "node:test";
import { io } from "socket.io-client";
import {
  test,
  startNats,
  startPostgres,
  startMessaging,
  startPresence,
  startEdge,
  connectClient,
  clientOptions,
  shutdown,
  withTimeout,
  delay,
  TRANSPORTS,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const CURSOR = /^(0|[1-9][0-9]{0,15})\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let nats;
let pg;
let edge1;
let edge2;

before(async () => {
  nats = await startNats();
  pg = await startPostgres();
  await startPresence({ nats, pg });
  await startMessaging({ nats, pg, name: "messaging" });
  edge1 = await startEdge({ nats, name: "conv-edge-1" });
  edge2 = await startEdge({ nats, name: "conv-edge-2" });
});

after(() => shutdown());

// ---------------------------------------------------------------- helpers

/** Connects user on edge over transport; with "default" an ack goes over polling before the upgrade. */
async function connectAs(user, edge, transport = "websocket") {
  const c = await connectClient(edge.url, user.token, {
    transport,
    beforeUpgrade: async ({ socket }) => {
      const res = await socket.timeout(3000).emitWithAck("typing:stop", { recipientId: randomUUID() });
      assert.deepEqual(res, { ok: true }, "an ack over polling, before the upgrade");
    },
  });
  return { user, ...c };
}

async function expectEvent(rec, event, what = event) {
  const got = await rec.next(5000, what);
  assert.equal(got.event, event, `${what}: expected ${event}, got ${got.event} ${JSON.stringify(got.args)}`);
  return got.args[0];
}

/** The next event named event, skipping others (bounded). */
async function nextOf(rec, event, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await rec.next(Math.max(1, deadline - Date.now()), event);
    if (got.event === event) return got.args[0];
  }
}

/** Marker: from relays typing:stop to each tab of to; it must be the next event of each. */
async function expectNothingBefore(from, tabs, what = "nothing before the marker") {
  from.socket.emit("typing:stop", { recipientId: tabs[0].user.id });
  for (const t of tabs) assert.deepEqual(await expectEvent(t.rec, "typing:stop", what), { userId: from.user.id }, what);
}

async function send(from, to, content) {
  const res = await from.socket.timeout(5000).emitWithAck("message:send", { recipientId: to.id ?? to.user.id, content, type: "text" });
  assert.equal(res.ok, true, `message:send → ${JSON.stringify(res)}`);
  return res.message;
}

/** conversation:list with an ack that must be {ok, conversations, nextBefore}. */
async function list(c, query = {}) {
  const res = await c.socket.timeout(5000).emitWithAck("conversation:list", query);
  assert.equal(res.ok, true, `conversation:list ${JSON.stringify(query)} → ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ["conversations", "nextBefore", "ok"]);
  if (res.nextBefore !== null) assert.match(res.nextBefore, CURSOR);
  for (const conv of res.conversations) assert.deepEqual(Object.keys(conv).sort(), ["lastMessage", "unread", "username", "withUserId"]);
  return res;
}

/** The list as [username, lastMessage content, unread] rows. */
const rows = (res) => res.conversations.map((c) => [c.username, c.lastMessage.content, c.unread]);

async function readUpTo(c, withUserId, upTo) {
  const res = await c.socket.timeout(5000).emitWithAck("conversation:read", { withUserId, upTo });
  assert.deepEqual(res, { ok: true }, `conversation:read → ${JSON.stringify(res)}`);
}

function assertRefused(res, code, what) {
  assert.equal(res.ok, false, `${what}: ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ["error", "ok"], what);
  assert.equal(res.error.code, code, `${what}: ${JSON.stringify(res)}`);
  assert.ok(typeof res.error.message === "string" && res.error.message.length > 0);
}

const sqlStr = (s) => `'${String(s).replace(/'/g, "''")}'`;

/** Every payload of one event on a socket; until(pred, ms, what) resolves when pred(items) holds. */
function collect(socket, event) {
  const items = [];
  const watchers = new Set();
  socket.on(event, (...args) => {
    items.push(args);
    for (const w of [...watchers]) w();
  });
  return {
    items,
    until(pred, ms, what) {
      let check;
      return withTimeout(
        new Promise((resolve) => {
          check = () => pred(items) && resolve(items);
          watchers.add(check);
          check();
        }),
        ms,
        what,
      ).finally(() => watchers.delete(check));
    },
  };
}

/** One request over a fresh raw NATS connection; resolves with the JSON reply. */
function natsRequest(port, subject, body, ms = 3000) {
  let sock;
  return withTimeout(
    new Promise((resolve, reject) => {
      sock = net.connect({ host: "127.0.0.1", port });
      let buf = Buffer.alloc(0);
      let sent = false;
      sock.on("error", reject);
      sock.on("data", (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          const eol = buf.indexOf("\r\n");
          if (eol < 0) return;
          const line = buf.subarray(0, eol).toString();
          if (line.startsWith("MSG ")) {
            const len = Number(line.split(" ").pop());
            if (buf.length < eol + 2 + len + 2) return;
            resolve(JSON.parse(buf.subarray(eol + 2, eol + 2 + len).toString()));
            return;
          }
          buf = buf.subarray(eol + 2);
          if (line.startsWith("-ERR")) return reject(new Error(`nats: ${line}`));
          if (line.startsWith("PING")) sock.write("PONG\r\n");
          if (line.startsWith("INFO") && !sent) {
            sent = true;
            const payload = Buffer.from(JSON.stringify(body));
            sock.write(`CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.e2e.conv 1\r\nPUB ${subject} _INBOX.e2e.conv ${payload.length}\r\n`);
            sock.write(Buffer.concat([payload, Buffer.from("\r\n")]));
          }
        }
      });
    }),
    ms,
    `a NATS reply to ${subject}`,
  ).finally(() => sock?.destroy());
}

// ---------------------------------------------------------------- per client transport

for (const transport of TRANSPORTS) describe(`transport: ${transport}`, () => {
  const user = (name, edge = edge1) => connectAs(makeUser(name), edge, transport);
  const tab = (u, edge = edge1) => connectAs(u, edge, transport);

  test("conversation:list: latest activity first, both directions, each {withUserId, username, lastMessage, unread}; both sides see it", async () => {
    const a = await user("alice");
    const b = await user("bob", edge2);
    const c = await user("carol");
    const dave = makeUser("dave"); // never connects: no username
    const m1 = await send(a, b, "hi bob");
    await send(b, a.user, "hi alice");
    const m3 = await send(b, a.user, "again");
    const m4 = await send(c, a.user, "from carol");
    const m5 = await send(a, dave, "to dave");
    const la = await list(a);
    assert.deepEqual(rows(la), [["", "to dave", 0], ["carol", "from carol", 1], ["bob", "again", 2]]);
    assert.deepEqual(la.conversations.map((x) => x.withUserId), [dave.id, c.user.id, b.user.id]);
    assert.deepEqual(la.conversations.map((x) => x.lastMessage), [m5, m4, m3], "lastMessage is the stored message");
    assert.equal(la.nextBefore, null);
    const lb = await list(b);
    assert.deepEqual(rows(lb), [["alice", "again", 1]], "bob: his own last message, alice's one unread");
    assert.equal(lb.conversations[0].withUserId, a.user.id);
    assert.equal(lb.conversations[0].lastMessage.id, m3.id);
    assert.notEqual(m1.id, m3.id);
    const lc = await list(c);
    assert.deepEqual(rows(lc), [["alice", "from carol", 0]]);
    assert.deepEqual(rows(await list(await user("nobody"))), [], "a user without messages: an empty list");
  });

  test("unread: message:read lowers it; conversation:read up to a message reads the rest up to it, one message:read per message to every tab of the sender, in order; the reader's tabs get nothing", async () => {
    const alice = makeUser("alice");
    const a1 = await tab(alice, edge1);
    const a2 = await tab(alice, edge2);
    const bob = makeUser("bob");
    const b1 = await tab(bob, edge1);
    const b2 = await tab(bob, edge2);
    const c = await user("carol");
    const sent = [];
    for (const t of ["one", "two", "three", "four"]) sent.push(await send(b1, alice, t));
    for (const b of [b1, b2]) for (const m of sent) assert.equal((await expectEvent(b.rec, "message:sent")).id, m.id);
    for (const a of [a1, a2]) for (const m of sent) assert.equal((await expectEvent(a.rec, "message:received")).id, m.id);
    assert.deepEqual(rows(await list(a1)), [["bob", "four", 4]]);

    assert.equal((await a1.socket.timeout(5000).emitWithAck("message:read", { messageId: sent[0].id, senderId: bob.id })).ok, true);
    for (const b of [b1, b2]) assert.equal((await expectEvent(b.rec, "message:read")).messageId, sent[0].id);
    assert.deepEqual(rows(await list(a2)), [["bob", "four", 3]]);

    await readUpTo(a2, bob.id, sent[2].id); // two and three
    for (const b of [b1, b2]) {
      const got = [await expectEvent(b.rec, "message:read"), await expectEvent(b.rec, "message:read")];
      assert.deepEqual(got.map((r) => r.messageId), [sent[1].id, sent[2].id], "one message:read per message, in order");
      for (const r of got) assert.match(r.readAt, ISO_MS);
      assert.equal(got[0].readAt, got[1].readAt, "read in one statement: one readAt");
    }
    await expectNothingBefore(c, [b1, b2], "the marker on bob's tabs (no other message:read)");
    await expectNothingBefore(c, [a1, a2], "the marker on alice's tabs (the reader gets no message:read)");
    assert.deepEqual(rows(await list(a1)), [["bob", "four", 1]]);
    assert.deepEqual(rows(await list(b1)), [["alice", "four", 0]], "the sender's list counts only what was sent to him");

    await readUpTo(a1, bob.id, sent[3].id);
    for (const b of [b1, b2]) assert.equal((await expectEvent(b.rec, "message:read")).messageId, sent[3].id);
    assert.deepEqual(rows(await list(a1)), [["bob", "four", 0]], "unread reset");
    const h = await a1.socket.timeout(5000).emitWithAck("message:history", { withUserId: bob.id });
    assert.ok(h.messages.every((m) => m.readAt !== null), "history shows every message read");

    // Nothing left to read: ok, and no event.
    await readUpTo(a1, bob.id, sent[3].id);
    await expectNothingBefore(c, [b1, b2], "the marker on bob's tabs (a second read: nothing)");
  });

  test("conversation:read: upTo may be the reader's own message; a message of another conversation or an unknown id → not_found (ack and chat:error), nothing read", async () => {
    const a = await user("alice");
    const b = await user("bob", edge2);
    const c = await user("carol");
    await send(a, b, "a1");
    const x1 = await send(b, a.user, "b1");
    const x2 = await send(b, a.user, "b2");
    const mine = await send(a, b, "a2");
    const other = await send(c, a.user, "from carol");
    for (const [name, payload] of [
      ["upTo a message of another conversation", { withUserId: b.user.id, upTo: other.id }],
      ["upTo an unknown id", { withUserId: b.user.id, upTo: randomUUID() }],
      ["withUserId someone who never wrote", { withUserId: randomUUID(), upTo: x2.id }],
      ["withUserId the reader herself", { withUserId: a.user.id, upTo: x2.id }],
    ]) {
      assertRefused(await a.socket.timeout(5000).emitWithAck("conversation:read", payload), "not_found", name);
    }
    a.socket.emit("conversation:read", { withUserId: b.user.id, upTo: other.id });
    const err = await nextOf(a.rec, "chat:error");
    assert.deepEqual((({ event, code }) => ({ event, code }))(err), { event: "conversation:read", code: "not_found" });
    assert.equal(pg.psql(`SELECT count(*) FROM messages WHERE recipient_id = ${sqlStr(a.user.id)} AND read_at IS NOT NULL`)[0], "0", "nothing read");

    await readUpTo(a, b.user.id, mine.id);
    const got = [(await nextOf(b.rec, "message:read")).messageId, (await nextOf(b.rec, "message:read")).messageId];
    assert.deepEqual(got, [x1.id, x2.id]);
    assert.deepEqual(rows(await list(a)), [["carol", "from carol", 1], ["bob", "a2", 0]]);
  });

  test("pagination: nextBefore walks every conversation once, in order; limit defaults to 20; new activity moves one to the top", async () => {
    const a = await user("alice");
    const others = Array.from({ length: 23 }, (_, i) => makeUser(`u${String(i).padStart(2, "0")}`));
    for (const [i, o] of others.entries()) await send(a, o, `to ${i}`);
    const newestFirst = [...others].reverse().map((o) => o.id);
    const first = await list(a);
    assert.equal(first.conversations.length, 20, "default limit 20");
    assert.notEqual(first.nextBefore, null);
    const second = await list(a, { before: first.nextBefore });
    assert.equal(second.nextBefore, null, "the last page");
    assert.deepEqual([...first.conversations, ...second.conversations].map((c) => c.withUserId), newestFirst);

    const seen = [];
    let before = null;
    let pages = 0;
    do {
      const page = await list(a, { before, limit: 7 });
      pages++;
      seen.push(...page.conversations.map((c) => c.withUserId));
      before = page.nextBefore;
    } while (before);
    assert.equal(pages, 4);
    assert.deepEqual(seen, newestFirst);
    const exact = await list(a, { limit: 23 });
    assert.equal(exact.conversations.length, 23);
    assert.equal(exact.nextBefore, null, "a page that ends with the last conversation says so");
    assert.deepEqual((await list(a, { before: null, limit: null })).conversations.length, 20);
    assert.deepEqual((await list(a, { limit: 50 })).conversations.length, 23);

    await send(a, others[0], "again");
    const top = await list(a, { limit: 2 });
    assert.deepEqual(top.conversations.map((c) => [c.withUserId, c.lastMessage.content]), [[others[0].id, "again"], [others[22].id, "to 22"]]);
    const rest = await list(a, { before: top.nextBefore, limit: 50 });
    assert.equal(rest.conversations.length, 21);
    assert.ok(!rest.conversations.some((c) => c.withUserId === others[0].id), "no conversation twice");
  });

  describe("validation", () => {
    let a;
    before(async () => {
      a = await user("alice");
    });
    const id = () => randomUUID();
    const cases = [
      ["conversation:list", "payload a string", () => ["x"]],
      ["conversation:list", "payload an array", () => [[]]],
      ["conversation:list", "limit 0", () => [{ limit: 0 }]],
      ["conversation:list", "limit 51", () => [{ limit: 51 }]],
      ["conversation:list", 'limit "5"', () => [{ limit: "5" }]],
      ["conversation:list", "limit 1.5", () => [{ limit: 1.5 }]],
      ["conversation:list", "before a number", () => [{ before: 5 }]],
      ["conversation:list", 'before "yesterday"', () => [{ before: "yesterday" }]],
      ["conversation:list", "before a uuid alone", () => [{ before: id() }]],
      ["conversation:list", "before with a leading zero", () => [{ before: `0123.${id()}` }]],
      ["conversation:list", "before of 17 digits", () => [{ before: `12345678901234567.${id()}` }]],
      ["conversation:list", "before with a bad uuid", () => [{ before: `1733600000000000.${id()}x` }]],
      ["conversation:read", "payload a string", () => ["x"]],
      ["conversation:read", "no payload", () => []],
      ["conversation:read", "withUserId missing", () => [{ upTo: id() }]],
      ["conversation:read", "upTo missing", () => [{ withUserId: id() }]],
      ["conversation:read", "withUserId not a uuid", () => [{ withUserId: "bob", upTo: id() }]],
      ["conversation:read", "upTo a number", () => [{ withUserId: id(), upTo: 7 }]],
      ["conversation:read", "upTo null", () => [{ withUserId: id(), upTo: null }]],
    ];
    for (const [event, name, args] of cases) {
      test(`${event} ${name} → {ok:false, error:{code:bad_request}}`, async () => {
        assertRefused(await a.socket.timeout(3000).emitWithAck(event, ...args()), "bad_request", name);
      });
    }
    for (const [event, name, args] of cases.filter(([e]) => e === "conversation:read")) {
      test(`no ack: ${event} ${name} → chat:error {event:"${event}", code:bad_request}`, async () => {
        a.socket.emit(event, ...args());
        const err = await expectEvent(a.rec, "chat:error");
        assert.deepEqual([err.event, err.code], [event, "bad_request"]);
      });
    }
    test("conversation:list without an ack → chat:error bad_request; the connection stays", async () => {
      a.socket.emit("conversation:list", {});
      const err = await expectEvent(a.rec, "chat:error");
      assert.deepEqual([err.event, err.code], ["conversation:list", "bad_request"]);
      assert.deepEqual((await list(a)).conversations, []);
      assert.deepEqual(a.disconnects, []);
    });
  });

  test("no messaging: conversation:list → unavailable at once; NATS down: conversation:list and conversation:read → unavailable at once", async () => {
    const ownNats = await startNats();
    const edge = await startEdge({ nats: ownNats, name: `conv-edge-nats-${transport}` });
    const a = await connectAs(makeUser("alice"), edge, transport);
    let t0 = Date.now();
    assertRefused(await a.socket.timeout(2000).emitWithAck("conversation:list", {}), "unavailable", "no messaging replica");
    assert.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`);
    await ownNats.stop("SIGKILL");
    await edge.child.waitForLine(/nats disconnected/, 5000, "the edge noticing NATS is gone");
    t0 = Date.now();
    assertRefused(await a.socket.timeout(2000).emitWithAck("conversation:list", {}), "unavailable", "conversation:list, NATS down");
    assertRefused(await a.socket.timeout(2000).emitWithAck("conversation:read", { withUserId: randomUUID(), upTo: randomUUID() }), "unavailable", "conversation:read, NATS down");
    assert.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`);
    assert.equal(a.socket.connected, true);
    a.socket.close();
    await edge.stop();
  });
});

// ---------------------------------------------------------------- receipts: records, recovery (WebSocket only)

describe("the receipts of conversation:read", () => {
  test("are recorded on CHAT_EVENTS once each, as chat.event.message.read.<sender>.<reader>", async () => {
    const a = await connectAs(makeUser("alice"), edge1);
    const b = await connectAs(makeUser("bob"), edge2);
    let seq = (await natsRequest(nats.port, "$JS.API.STREAM.INFO.CHAT_EVENTS", {})).state.last_seq;
    const sent = [await send(b, a.user, "r1"), await send(b, a.user, "r2"), await send(b, a.user, "r3")];
    await readUpTo(a, b.user.id, sent[2].id);
    await readUpTo(a, b.user.id, sent[2].id); // again: nothing new
    const marker = await send(b, a.user, "marker");
    assert.equal((await a.socket.timeout(5000).emitWithAck("message:read", { messageId: marker.id, senderId: b.user.id })).ok, true);
    const subject = `chat.event.message.read.${b.user.id}.${a.user.id}`;
    const taps = [];
    const deadline = Date.now() + 5000;
    while (!taps.some((t) => t.subject === subject && t.data.includes(Buffer.from(marker.id)))) {
      assert.ok(Date.now() < deadline, "the marker's receipt did not arrive within 5 s");
      const last = (await natsRequest(nats.port, "$JS.API.STREAM.INFO.CHAT_EVENTS", {})).state.last_seq;
      if (last === seq) await delay(50);
      for (; seq < last; ) {
        const r = await natsRequest(nats.port, "$JS.API.STREAM.MSG.GET.CHAT_EVENTS", { seq: ++seq });
        if (r.message) taps.push({ subject: r.message.subject, data: Buffer.from(r.message.data ?? "", "base64") });
      }
    }
    const reads = taps.filter((t) => t.subject === subject);
    assert.deepEqual(
      reads.map((t) => [...sent, marker].findIndex((m) => t.data.includes(Buffer.from(m.id)))),
      [0, 1, 2, 3],
      "one receipt per message, in order, then the marker's",
    );
  });

  test("a sender whose connection dropped gets them when it comes back: recovered, each once, in order", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = await connectAs(alice, edge1);
    const socket = io(edge2.url, { ...clientOptions({ token: bob.token }), reconnection: false });
    const reads = collect(socket, "message:read");
    await withTimeout(new Promise((resolve) => socket.once("connect", resolve)), 5000, "bob's connect");
    const firstId = socket.id;
    const sent = [];
    for (const t of ["x", "y", "z"]) {
      const res = await socket.timeout(5000).emitWithAck("message:send", { recipientId: alice.id, content: t, type: "text" });
      sent.push(res.message);
    }
    // The transport closes as on a network loss; the client may come back.
    const down = new Promise((resolve) => socket.once("disconnect", resolve));
    socket.io.engine.close();
    await down;
    await readUpTo(a, bob.id, sent[2].id);
    socket.io.reconnection(true);
    socket.connect();
    await withTimeout(new Promise((resolve) => socket.once("connect", resolve)), 5000, "bob's reconnect");
    assert.equal(socket.recovered, true, "the session recovered");
    assert.equal(socket.id, firstId);
    await reads.until((items) => items.length >= 3, 5000, "the three message:read");
    const marker = await send(a, bob, "marker");
    assert.equal((await socket.timeout(5000).emitWithAck("message:read", { messageId: marker.id, senderId: alice.id })).ok, true);
    assert.equal((await nextOf(a.rec, "message:read")).messageId, marker.id);
    await delay(200);
    assert.deepEqual(reads.items.map((args) => args[0].messageId), sent.map((m) => m.id), "each once, in order");
    const offsets = reads.items.map((args) => BigInt(args[1]));
    assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), "increasing offsets");
    socket.close();
  });
});

// ---------------------------------------------------------------- kill -9 of messaging (WebSocket only)

describe("kill -9 of messaging during a conversation:read of 2,000 messages", () => {
  test("after the restart every message is read and the sender got each message:read once", { timeout: 90000 }, async () => {
    const ownNats = await startNats();
    const db = await startPostgres();
    const env = { MESSAGING_ACK_WAIT_MS: "1000" };
    let svc = await startMessaging({ nats: ownNats, pg: db, name: "conv-crash-1", env });
    const e = await startEdge({ nats: ownNats, name: "conv-crash-edge" });
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = await connectAs(alice, e);
    const b = await connectAs(bob, e);
    const reads = collect(b.socket, "message:read");
    const N = 2000;
    // Seeded in PostgreSQL (the trigger keeps the conversations), one a millisecond.
    db.psql(
      `INSERT INTO messages (id, sender_id, recipient_id, type, content, created_at) SELECT gen_random_uuid(), ${sqlStr(bob.id)}, ${sqlStr(alice.id)}, 'text', 'seed ' || i, now() - interval '1 hour' + i * interval '1 millisecond' FROM generate_series(1, ${N}) i`,
    );
    const last = db.psql(`SELECT id FROM messages WHERE sender_id = ${sqlStr(bob.id)} ORDER BY created_at DESC LIMIT 1`)[0];
    const page = await list(a);
    assert.deepEqual(rows(page), [["", `seed ${N}`, N]]);
    a.socket.emit("conversation:read", { withUserId: bob.id, upTo: last });
    await reads.until((items) => items.length >= 1, 10000, "the first message:read");
    const r = await svc.stop("SIGKILL");
    assert.equal(r.signal, "SIGKILL");
    const before = reads.items.length;
    svc = await startMessaging({ nats: ownNats, pg: db, name: "conv-crash-2", env });
    await reads.until((items) => new Set(items.map((x) => x[0].messageId)).size >= N, 30000, `${N} distinct message:read`);
    const marker = await send(a, bob, "marker");
    assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: marker.id, senderId: alice.id })).ok, true);
    assert.equal((await nextOf(a.rec, "message:read", 10000)).messageId, marker.id);
    await delay(300);
    const ids = reads.items.map((x) => x[0].messageId);
    assert.equal(ids.length, N, `each message:read once (${before} before the kill, ${ids.length} in all)`);
    assert.equal(new Set(ids).size, N);
    assert.equal(db.psql(`SELECT count(*) FROM messages WHERE recipient_id = ${sqlStr(alice.id)} AND read_at IS NULL`)[0], "0");
    assert.deepEqual(rows(await list(a)), [["", "marker", 0]]);
    console.log(`kill -9 after ${before} of ${N} message:read had arrived`);
    a.socket.close();
    b.socket.close();
  });
});

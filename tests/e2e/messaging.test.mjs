// Messages end to end: message:send / message:read / message:history through
// real edges, nats-server (JetStream), chat-messaging and PostgreSQL, driven by
// socket.io-client. The README's contract: payload shapes, fan-out to every
// socket of the sender and the recipient on two edges (and nobody else),
// validation, idempotent resends by clientMessageId, history with keyset
// pagination, read receipts, "unavailable" at once without messaging or NATS,
// taps on CHAT_EVENTS (read with the JetStream API over a raw NATS socket), and
// the delivery guarantee, checked in the database: kill -9 of messaging (a
// batch inside its transaction; the middle of a stream of 1,000 messages), a
// PostgreSQL outage, three replicas sharing the partitions (and one killed).
// Light tests run once per client transport; the heavy ones over WebSocket only.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { spawn } from "node:child_process";
import { before, after, describe } from "node:test";
import {
  test,
  startNats,
  startPostgres,
  startMessaging,
  startEdge,
  connectClient,
  shutdown,
  withTimeout,
  delay,
  TRANSPORTS,
  transportOf,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const MAX_BYTES = 100; // EDGE_MAX_MESSAGE_BYTES of the edges of this file
const EDGE_ENV = { EDGE_MAX_MESSAGE_BYTES: String(MAX_BYTES) };
const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const TYPES = ["text", "audio", "image"];

// The shared set-up of the light tests: one nats-server, one PostgreSQL, one
// messaging replica, two edges.
let nats;
let pg;
let edge1;
let edge2;

before(async () => {
  nats = await startNats();
  pg = await startPostgres();
  await startMessaging({ nats, pg, name: "messaging" });
  edge1 = await startEdge({ nats, name: "msg-edge-1", env: EDGE_ENV });
  edge2 = await startEdge({ nats, name: "msg-edge-2", env: EDGE_ENV });
});

after(() => shutdown());

// ---------------------------------------------------------------- helpers

/**
 * Connects user on edge over transport. With "default", an ack round trip (a
 * typing:stop to nobody) goes over long-polling before the upgrade.
 */
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

async function expectEvent(rec, event, payload, what = event) {
  const got = await rec.next(5000, what);
  assert.equal(got.event, event, `${what}: expected ${event}, got ${got.event} ${JSON.stringify(got.args)}`);
  if (payload !== undefined) assert.deepEqual(got.args, [payload], what);
  return got.args[0];
}

/** Marker: `from` relays typing:stop to `to`; it must be the next event on each of to's recorders. */
async function expectNothingBefore(from, to, what = "nothing before the marker") {
  from.socket.emit("typing:stop", { recipientId: to.user.id });
  for (const r of Array.isArray(to.rec) ? to.rec : [to.rec]) {
    await expectEvent(r, "typing:stop", { userId: from.user.id }, what);
  }
}

/** message:send with an ack that must be {ok:true, message}; returns the message. */
async function send(socket, payload, ms = 5000) {
  const res = await socket.timeout(ms).emitWithAck("message:send", payload);
  assert.equal(res.ok, true, `message:send ${JSON.stringify(payload).slice(0, 120)} → ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ["message", "ok"]);
  return res.message;
}

/** message:history with an ack that must be {ok:true, messages}; returns the messages. */
async function history(socket, query, ms = 5000) {
  const res = await socket.timeout(ms).emitWithAck("message:history", query);
  assert.equal(res.ok, true, `message:history ${JSON.stringify(query)} → ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ["messages", "ok"]);
  assert.ok(Array.isArray(res.messages));
  return res.messages;
}

/** An ack {ok:false, error:{code, message}} with that code. */
function assertRefused(res, code, what) {
  assert.equal(res.ok, false, `${what}: ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ["error", "ok"], what);
  assert.equal(res.error.code, code, `${what}: ${JSON.stringify(res)}`);
  assert.equal(typeof res.error.message, "string");
  assert.ok(res.error.message.length > 0);
}

/** The exact shape of a Message: {id, senderId, recipientId, content, type, createdAt, readAt} (+ clientMessageId when sent). */
function assertMessage(m, { senderId, recipientId, content, type, clientMessageId }) {
  const keys = ["id", "senderId", "recipientId", "content", "type", "createdAt", "readAt"];
  if (clientMessageId !== undefined) keys.push("clientMessageId");
  assert.deepEqual(Object.keys(m).sort(), keys.sort(), `message keys of ${JSON.stringify(m)}`);
  assert.match(m.id, UUID7, "id is a UUIDv7");
  assert.equal(m.senderId, senderId);
  assert.equal(m.recipientId, recipientId);
  assert.equal(m.content, content);
  assert.equal(m.type, type);
  assert.match(m.createdAt, ISO_MS, "createdAt is ISO 8601 UTC with milliseconds");
  assert.equal(new Date(m.createdAt).toISOString(), m.createdAt);
  assert.ok(Math.abs(Date.parse(m.createdAt) - Date.now()) < 60000, `createdAt ${m.createdAt} is about now`);
  // The UUIDv7's time (the edge's clock at send) is close to createdAt.
  const idMs = parseInt(m.id.replace(/-/g, "").slice(0, 12), 16);
  assert.ok(Math.abs(idMs - Date.parse(m.createdAt)) < 10000, `id time ${idMs} vs createdAt ${m.createdAt}`);
  assert.equal(m.readAt, null);
  if (clientMessageId !== undefined) assert.equal(m.clientMessageId, clientMessageId);
}

const sqlStr = (s) => `'${String(s).replace(/'/g, "''")}'`;
const countRows = (db, where) => Number(db.psql(`SELECT count(*) FROM messages WHERE ${where}`)[0]);

/**
 * Collects every payload of one event on a socket; until(pred, ms) resolves
 * when pred(items) holds (checked at each new item), bounded by ms.
 */
function collect(socket, event) {
  const items = [];
  const watchers = new Set();
  socket.on(event, (payload) => {
    items.push(payload);
    for (const w of [...watchers]) w();
  });
  return {
    items,
    until(pred, ms, what) {
      return withTimeout(
        new Promise((resolve) => {
          const check = () => {
            if (pred(items)) {
              watchers.delete(check);
              resolve(items);
            }
          };
          watchers.add(check);
          check();
        }),
        ms,
        what,
      ).catch((err) => {
        watchers.clear();
        throw err;
      });
    },
  };
}

/** Resolves when pred() holds, checked whenever one of the children prints something; bounded. */
function waitForOutput(children, pred, ms, what) {
  let check;
  const unhook = () => {
    for (const c of children) c.watchers = c.watchers.filter((w) => w !== check);
  };
  return withTimeout(
    new Promise((resolve) => {
      check = () => {
        if (pred()) {
          unhook();
          resolve();
        }
      };
      for (const c of children) c.watchers.push(check);
      check();
    }),
    ms,
    what,
  ).finally(unhook);
}

/** The partitions a messaging replica holds now, from its log ("taken", "released", "lost"). */
function ownedPartitions(output) {
  const owned = new Set();
  for (const m of output.matchAll(/partition (\d+) (taken|released|lost)/g)) {
    if (m[2] === "taken") owned.add(Number(m[1]));
    else owned.delete(Number(m[1]));
  }
  return owned;
}

/**
 * Sends payload until an ack {ok:true}: again with the same clientMessageId
 * after an error ack or no ack within boundMs. Returns the message.
 */
async function sendUntilAcked(socket, payload, { boundMs, attempts, stats }) {
  let last;
  for (let i = 1; ; i++) {
    try {
      last = await socket.timeout(boundMs).emitWithAck("message:send", payload);
    } catch {
      last = "no ack";
    }
    if (last?.ok === true) return last.message;
    if (i >= attempts) throw new Error(`no ok ack for ${payload.clientMessageId} after ${i} attempts (last: ${JSON.stringify(last)})`);
    stats.resends++;
  }
}

/**
 * A stream: each sender emits perSender messages (with acks and
 * clientMessageIds `${tag}-${sender}-${n}`) round-robin to the recipients, at
 * most `window` unacked at a time per sender. onAck(count) after each first ok
 * ack. Resolves with {emitted (in emission order per sender), acks (cmid →
 * message), stats} once every message is acked.
 */
async function stream({ senders, recipients, perSender, window, tag, onAck, boundMs = 10000, attempts = 3 }) {
  // onAck(acked, emitted): counts so far
  const emitted = [];
  const acks = new Map();
  const stats = { resends: 0 };
  await Promise.all(
    senders.map(async (s, si) => {
      const inflight = new Set();
      for (let n = 0; n < perSender; n++) {
        while (inflight.size >= window) await Promise.race(inflight);
        const to = recipients[(si + n) % recipients.length].user.id;
        const cmid = `${tag}-${si}-${n}`;
        emitted.push({ senderId: s.user.id, recipientId: to, cmid });
        const p = sendUntilAcked(s.socket, { recipientId: to, content: `${tag} ${si} ${n}`, type: "text", clientMessageId: cmid }, { boundMs, attempts, stats }).then((m) => {
          acks.set(cmid, m);
          onAck?.(acks.size, emitted.length);
        });
        const tracked = p.finally(() => inflight.delete(tracked));
        inflight.add(tracked);
      }
      await Promise.all(inflight);
    }),
  );
  return { emitted, acks, stats };
}

/**
 * Exactly once in the database: one row per emitted (sender, clientMessageId),
 * no other row with the tag, and each ack's message is the stored row.
 * Returns the stored rows (id, sender, recipient, cmid) in createdAt order.
 */
function assertStoredOnce(db, { emitted, acks }, tag) {
  const dupes = db.psql(`SELECT sender_id, client_message_id, count(*) FROM messages WHERE client_message_id LIKE ${sqlStr(tag + "-%")} GROUP BY 1, 2 HAVING count(*) <> 1`);
  assert.deepEqual(dupes, [], "messages stored more than once (sender|clientMessageId|count)");
  const rows = db
    .psql(`SELECT id, sender_id, recipient_id, client_message_id FROM messages WHERE client_message_id LIKE ${sqlStr(tag + "-%")} ORDER BY created_at, id`)
    .map((l) => {
      const [id, senderId, recipientId, cmid] = l.split("|");
      return { id, senderId, recipientId, cmid };
    });
  const distinct = new Set(emitted.map((e) => `${e.senderId}|${e.cmid}`));
  assert.equal(rows.length, distinct.size, "stored rows = distinct clientMessageIds emitted");
  const stored = new Map(rows.map((r) => [`${r.senderId}|${r.cmid}`, r]));
  for (const e of emitted) {
    const r = stored.get(`${e.senderId}|${e.cmid}`);
    assert.ok(r, `${e.cmid} (acked) is not stored`);
    assert.equal(r.recipientId, e.recipientId);
    assert.equal(acks.get(e.cmid).id, r.id, `the ack of ${e.cmid} carries the stored message's id`);
  }
  return rows;
}

/** Per (sender, recipient), the createdAt order of the stored rows is the emission order; no two rows of a sender share a createdAt. */
function assertCreatedOrder(db, rows, emitted, tag) {
  const ties = db.psql(`SELECT sender_id, created_at, count(*) FROM messages WHERE client_message_id LIKE ${sqlStr(tag + "-%")} GROUP BY 1, 2 HAVING count(*) > 1`);
  assert.deepEqual(ties, [], "one sender's messages share a createdAt (sender|createdAt|count)");
  const group = (list) => {
    const g = new Map();
    for (const x of list) {
      const k = `${x.senderId}→${x.recipientId}`;
      if (!g.has(k)) g.set(k, []);
      g.get(k).push(x.cmid);
    }
    return g;
  };
  const want = group(emitted);
  const got = group(rows);
  for (const [k, cmids] of want) assert.deepEqual(got.get(k), cmids, `createdAt order of ${k}`);
}

// ---------------------------------------------------------------- raw NATS (JetStream API), for the taps

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
            sock.write(`CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.e2e.taps 1\r\nPUB ${subject} _INBOX.e2e.taps ${payload.length}\r\n`);
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

  describe("message:send", () => {
    test("both tabs of the recipient get message:received, both tabs of the sender message:sent (two edges each), the ack {ok, message}; a third user nothing", async () => {
      const alice = makeUser("alice");
      const a1 = await tab(alice, edge1);
      const a2 = await tab(alice, edge2);
      const b = await user("bob", edge2);
      const b2 = await tab(b.user, edge1);
      const c = await user("carol", edge1);
      const payload = { recipientId: b.user.id, content: "héllo \"bob\" 😀", type: "text", clientMessageId: "c-42" };
      const m = await send(a1.socket, payload);
      assertMessage(m, { senderId: alice.id, ...payload });
      // The ack means committed: the row is there as soon as the ack is.
      assert.deepEqual(pg.psql(`SELECT sender_id, recipient_id, content, type, client_message_id FROM messages WHERE id = ${sqlStr(m.id)}`), [`${alice.id}|${b.user.id}|${payload.content}|text|c-42`]);
      assert.deepEqual(await expectEvent(b.rec, "message:received", undefined, "message:received on bob's tab on edge 2"), m);
      assert.deepEqual(await expectEvent(b2.rec, "message:received", undefined, "message:received on bob's tab on edge 1"), m);
      assert.deepEqual(await expectEvent(a1.rec, "message:sent", undefined, "message:sent on the sending tab"), m);
      assert.deepEqual(await expectEvent(a2.rec, "message:sent", undefined, "message:sent on the tab on edge 2"), m);
      await expectNothingBefore(c, { user: b.user, rec: [b.rec, b2.rec] }, "the marker on bob's tabs (message:received exactly once each)");
      await expectNothingBefore(c, { user: alice, rec: [a1.rec, a2.rec] }, "the marker on alice's tabs (message:sent exactly once each)");
      await expectNothingBefore(b, c, "the marker on carol (a third user gets nothing)");
    });

    for (const type of TYPES) {
      test(`type ${type}, no clientMessageId: the message has no clientMessageId key`, async () => {
        const a = await user("alice");
        const b = await user("bob", edge2);
        const payload = { recipientId: b.user.id, content: `https://cdn.example/${type}/1`, type };
        const m = await send(a.socket, payload);
        assertMessage(m, { senderId: a.user.id, ...payload });
        assert.deepEqual(await expectEvent(b.rec, "message:received"), m);
        assert.deepEqual(await expectEvent(a.rec, "message:sent"), m);
      });
    }

    test("content of exactly EDGE_MAX_MESSAGE_BYTES bytes (multi-byte) and a clientMessageId of 64 bytes are accepted", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const payload = { recipientId: b.user.id, content: "é".repeat(MAX_BYTES / 2), type: "text", clientMessageId: "ü".repeat(32) };
      const m = await send(a.socket, payload);
      assertMessage(m, { senderId: a.user.id, ...payload });
      assert.deepEqual(await expectEvent(b.rec, "message:received"), m);
    });

    test("emitted without an ack: message:received and message:sent all the same, no chat:error", async () => {
      const a = await user("alice");
      const b = await user("bob", edge2);
      a.socket.emit("message:send", { recipientId: b.user.id, content: "no ack", type: "text", clientMessageId: "na-1" });
      const m = await expectEvent(b.rec, "message:received");
      assertMessage(m, { senderId: a.user.id, recipientId: b.user.id, content: "no ack", type: "text", clientMessageId: "na-1" });
      assert.deepEqual(await expectEvent(a.rec, "message:sent", undefined, "message:sent (and no chat:error)"), m);
    });

    test("quotes, backslashes, braces, commas, NULL, newlines and emoji round-trip exactly (ack, delivery, history, database)", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const payload = { recipientId: b.user.id, content: 'q"\\{a,b},NULL\n\t é😀 \u2028 ', type: "text", clientMessageId: 'c"\\,{}NULL ' };
      const m = await send(a.socket, payload);
      assertMessage(m, { senderId: a.user.id, ...payload });
      assert.deepEqual(await expectEvent(b.rec, "message:received"), m);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id }), [m]);
      assert.deepEqual(pg.psql(`SELECT content = ${sqlStr(payload.content)}, client_message_id = ${sqlStr(payload.clientMessageId)} FROM messages WHERE id = ${sqlStr(m.id)}`), ["t|t"]);
    });

    test("a recipientId in capitals reaches the recipient", async () => {
      const a = await user("alice");
      const b = await user("bob", edge2);
      const m = await send(a.socket, { recipientId: b.user.id.toUpperCase(), content: "caps", type: "text" });
      assert.equal(m.recipientId.toLowerCase(), b.user.id);
      assert.deepEqual(await expectEvent(b.rec, "message:received"), m);
    });

    test("content with U+0000 (valid JSON) is answered and the connection stays up", async () => {
      const a = await user("alice");
      const b = await user("bob");
      let res;
      try {
        res = await a.socket.timeout(3000).emitWithAck("message:send", { recipientId: b.user.id, content: "a\u0000b", type: "text" });
      } catch (err) {
        res = `no ack (${err.message}); disconnects: ${JSON.stringify(a.disconnects)}`;
      }
      assert.equal(typeof res, "object", `message:send with U+0000 in content: ${res}`);
      if (res.ok) assert.equal(res.message.content, "a\u0000b");
      else assert.equal(res.error.code, "bad_request");
      assert.equal(a.socket.connected, true);
      assert.deepEqual(a.disconnects, []);
    });

    test("a message to oneself: every tab gets message:received and message:sent", async () => {
      const alice = makeUser("alice");
      const a1 = await tab(alice, edge1);
      const a2 = await tab(alice, edge2);
      const m = await send(a1.socket, { recipientId: alice.id, content: "note", type: "text" });
      for (const r of [a1.rec, a2.rec]) {
        const got = [await r.next(5000, "first event"), await r.next(5000, "second event")];
        assert.deepEqual(got.map((e) => e.event).sort(), ["message:received", "message:sent"]);
        for (const e of got) assert.deepEqual(e.args, [m, got[0].args[1]]);
        assert.match(got[0].args[1], /^[1-9][0-9]*$/, "one record, one recovery offset for both events");
      }
    });
  });

  describe("message:send validation", () => {
    let a;
    let b;
    before(async () => {
      a = await user("alice");
      b = await user("bob");
    });
    const big = () => "x".repeat(MAX_BYTES + 1);
    // [name, args (emit arguments after the event name), code]
    const cases = [
      ["no payload", () => [], "bad_request"],
      ["payload a string", () => ["hi"], "bad_request"],
      ["payload an array", () => [[b.user.id, "hi", "text"]], "bad_request"],
      ["payload null", () => [null], "bad_request"],
      ["payload a number", () => [7], "bad_request"],
      ["recipientId missing", () => [{ content: "hi", type: "text" }], "bad_request"],
      ["recipientId not a uuid", () => [{ recipientId: "bob", content: "hi", type: "text" }], "bad_request"],
      ["recipientId a number", () => [{ recipientId: 42, content: "hi", type: "text" }], "bad_request"],
      ["recipientId a uuid with junk", () => [{ recipientId: b.user.id + "x", content: "hi", type: "text" }], "bad_request"],
      ["content missing", () => [{ recipientId: b.user.id, type: "text" }], "bad_request"],
      ["content empty", () => [{ recipientId: b.user.id, content: "", type: "text" }], "bad_request"],
      ["content a number", () => [{ recipientId: b.user.id, content: 5, type: "text" }], "bad_request"],
      ["content an object", () => [{ recipientId: b.user.id, content: { text: "hi" }, type: "text" }], "bad_request"],
      [`content of ${MAX_BYTES + 1} bytes`, () => [{ recipientId: b.user.id, content: big(), type: "text" }], "too_large"],
      [`content of ${MAX_BYTES / 2 + 1} two-byte characters (${MAX_BYTES + 2} bytes)`, () => [{ recipientId: b.user.id, content: "é".repeat(MAX_BYTES / 2 + 1), type: "text" }], "too_large"],
      ["type missing", () => [{ recipientId: b.user.id, content: "hi" }], "bad_request"],
      ["type video", () => [{ recipientId: b.user.id, content: "hi", type: "video" }], "bad_request"],
      ["type TEXT", () => [{ recipientId: b.user.id, content: "hi", type: "TEXT" }], "bad_request"],
      ["type a number", () => [{ recipientId: b.user.id, content: "hi", type: 1 }], "bad_request"],
      ["clientMessageId of 65 bytes", () => [{ recipientId: b.user.id, content: "hi", type: "text", clientMessageId: "k".repeat(65) }], "bad_request"],
      ["clientMessageId of 33 two-byte characters (66 bytes)", () => [{ recipientId: b.user.id, content: "hi", type: "text", clientMessageId: "ü".repeat(33) }], "bad_request"],
      ["clientMessageId a number", () => [{ recipientId: b.user.id, content: "hi", type: "text", clientMessageId: 42 }], "bad_request"],
      ["clientMessageId an object", () => [{ recipientId: b.user.id, content: "hi", type: "text", clientMessageId: { id: "x" } }], "bad_request"],
      ["clientMessageId true", () => [{ recipientId: b.user.id, content: "hi", type: "text", clientMessageId: true }], "bad_request"],
    ];

    for (const [name, args, code] of cases) {
      test(`with ack: ${name} → {ok:false, error:{code:${code}}}`, async () => {
        const res = await a.socket.timeout(3000).emitWithAck("message:send", ...args());
        assertRefused(res, code, name);
      });
    }

    for (const [name, args, code] of cases) {
      test(`no ack: ${name} → chat:error {event:"message:send", code:${code}}`, async () => {
        a.socket.emit("message:send", ...args());
        const err = await expectEvent(a.rec, "chat:error", undefined, `chat:error for ${name}`);
        assert.deepEqual(Object.keys(err).sort(), ["code", "event", "message"]);
        assert.equal(err.event, "message:send");
        assert.equal(err.code, code);
        assert.ok(typeof err.message === "string" && err.message.length > 0);
      });
    }

    test("nothing of all that was stored or delivered; the connection still works", async () => {
      assert.equal(a.socket.connected, true);
      assert.deepEqual(a.disconnects, []);
      // A valid message from the same sender (same partition, so behind anything
      // published before it) is the only row and bob's next event.
      const m = await send(a.socket, { recipientId: b.user.id, content: "valid", type: "text" });
      assert.deepEqual(await expectEvent(b.rec, "message:received", undefined, "the valid message is bob's next event"), m);
      assert.equal(countRows(pg, `sender_id = ${sqlStr(a.user.id)}`), 1, "rows stored for the sender");
      assert.equal(countRows(pg, `recipient_id = ${sqlStr(b.user.id)}`), 1, "rows stored for bob");
    });
  });

  describe("idempotent resend (clientMessageId)", () => {
    test("the same clientMessageId twice → the same stored message, one row", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const payload = { recipientId: b.user.id, content: "once", type: "text", clientMessageId: "dup-1" };
      const m1 = await send(a.socket, payload);
      const m2 = await send(a.socket, payload);
      assert.deepEqual(m2, m1);
      assert.deepEqual(await expectEvent(b.rec, "message:received"), m1);
      assert.equal(countRows(pg, `sender_id = ${sqlStr(a.user.id)}`), 1);
      assert.equal(pg.psql(`SELECT id FROM messages WHERE sender_id = ${sqlStr(a.user.id)} AND client_message_id = 'dup-1'`)[0], m1.id);
    });

    test("a resend gets the stored message back even if its content differs; nothing new is stored", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const m1 = await send(a.socket, { recipientId: b.user.id, content: "first", type: "text", clientMessageId: "dup-x" });
      const m2 = await send(a.socket, { recipientId: b.user.id, content: "second", type: "audio", clientMessageId: "dup-x" });
      assert.deepEqual(m2, m1);
      assert.equal(pg.psql(`SELECT content FROM messages WHERE sender_id = ${sqlStr(a.user.id)}`).join(","), "first");
    });

    test("three concurrent sends with one clientMessageId → one message (same id) in every ack, one row", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const payload = { recipientId: b.user.id, content: "racy", type: "text", clientMessageId: "dup-3" };
      const ms = await Promise.all([send(a.socket, payload), send(a.socket, payload), send(a.socket, payload)]);
      assert.deepEqual(ms[1], ms[0]);
      assert.deepEqual(ms[2], ms[0]);
      assertMessage(ms[0], { senderId: a.user.id, ...payload });
      assert.equal(countRows(pg, `sender_id = ${sqlStr(a.user.id)}`), 1);
      // At least once, always with the stored id.
      const got = await expectEvent(b.rec, "message:received");
      assert.deepEqual(got, ms[0]);
    });

    test("40 sends at once, resends of earlier ones among them: every ack is the message as history reads it back", async () => {
      // One burst lands in few batches: messaging answers the rows it stored
      // from what it sent, and reads back only the ones already there.
      const a = await user("alice");
      const b = await user("bob");
      const payloads = [];
      for (let i = 0; i < 30; i++)
        payloads.push({ recipientId: b.user.id, content: `burst ${i} "q" \\ {x}`, type: TYPES[i % 3], clientMessageId: `burst-${i}` });
      for (let i = 0; i < 10; i++) payloads.push({ ...payloads[i * 3], content: `resend of ${i * 3}` });
      const acks = await Promise.all(payloads.map((p) => send(a.socket, p)));
      const stored = await history(a.socket, { withUserId: b.user.id, limit: 100 });
      assert.equal(stored.length, 30, "one message per clientMessageId");
      const byId = new Map(stored.map((m) => [m.id, m]));
      acks.forEach((m, i) => {
        assert.deepEqual(m, byId.get(m.id), `ack ${i} equals the stored message`);
        assert.equal(m.clientMessageId, payloads[i].clientMessageId);
      });
      for (let i = 0; i < 10; i++) assert.deepEqual(acks[30 + i], acks[i * 3], `resend ${i} gets the first send back`);
      assert.equal(countRows(pg, `sender_id = ${sqlStr(a.user.id)}`), 30);
    });

    test("clientMessageId \"NULL\" is a string like any other; messages without one are never merged", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const n1 = await send(a.socket, { recipientId: b.user.id, content: "n1", type: "text", clientMessageId: "NULL" });
      const n2 = await send(a.socket, { recipientId: b.user.id, content: "n2", type: "text", clientMessageId: "NULL" });
      assert.deepEqual(n2, n1);
      assert.equal(n1.clientMessageId, "NULL");
      const x1 = await send(a.socket, { recipientId: b.user.id, content: "x", type: "text" });
      const x2 = await send(a.socket, { recipientId: b.user.id, content: "x", type: "text" });
      assert.notEqual(x1.id, x2.id);
      assert.equal(countRows(pg, `sender_id = ${sqlStr(a.user.id)}`), 3);
    });

    test("another sender may use the same clientMessageId: two messages", async () => {
      const a = await user("alice");
      const c = await user("carol");
      const b = await user("bob");
      const payload = { recipientId: b.user.id, content: "same id", type: "text", clientMessageId: "shared-1" };
      const ma = await send(a.socket, payload);
      const mc = await send(c.socket, payload);
      assert.notEqual(ma.id, mc.id);
      assert.equal(mc.senderId, c.user.id);
      assert.equal(countRows(pg, `client_message_id = 'shared-1' AND sender_id IN (${sqlStr(a.user.id)}, ${sqlStr(c.user.id)})`), 2);
      const received = [await expectEvent(b.rec, "message:received"), await expectEvent(b.rec, "message:received")];
      const byId = (x, y) => (x.id < y.id ? -1 : 1);
      assert.deepEqual(received.sort(byId), [ma, mc].sort(byId));
    });
  });

  describe("offline recipient and message:history", () => {
    test("an offline recipient finds 3 messages newest first with message:history; the sender sees the same", async () => {
      const a = await user("alice");
      const bob = makeUser("bob");
      const sent = [];
      for (let i = 1; i <= 3; i++) sent.push(await send(a.socket, { recipientId: bob.id, content: `offline ${i}`, type: TYPES[i - 1], clientMessageId: `off-${i}` }));
      const b = await tab(bob, edge2);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id }), [...sent].reverse());
      assert.deepEqual(await history(a.socket, { withUserId: bob.id }), [...sent].reverse());
      assert.ok(Date.parse(sent[0].createdAt) <= Date.parse(sent[1].createdAt) && Date.parse(sent[1].createdAt) <= Date.parse(sent[2].createdAt));
    });

    test("pagination: before (the oldest id the client has) and limit walk the conversation back to the start", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const sent = [];
      for (let i = 1; i <= 5; i++) sent.push(await send(a.socket, { recipientId: b.user.id, content: `page ${i}`, type: "text" }));
      const [p1, p2, p3, p4, p5] = sent;
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, limit: 2 }), [p5, p4]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, before: p4.id, limit: 2 }), [p3, p2]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, before: p2.id, limit: 2 }), [p1]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, before: p1.id, limit: 2 }), []);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, before: p5.id }), [p4, p3, p2, p1]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, limit: 1 }), [p5]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, limit: 100 }), [p5, p4, p3, p2, p1]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id, before: null, limit: null }), [p5, p4, p3, p2, p1]);
    });

    test("limit defaults to 50", async () => {
      const a = await user("alice");
      const bob = makeUser("bob");
      const sent = await Promise.all(Array.from({ length: 52 }, (_, i) => send(a.socket, { recipientId: bob.id, content: `n${i}`, type: "text" })));
      const got = await history(a.socket, { withUserId: bob.id });
      assert.equal(got.length, 50);
      // Emitted in this order on one socket: stored in this order.
      assert.deepEqual(got.map((m) => m.content), sent.slice(2).reverse().map((m) => m.content));
    });

    test("history holds that conversation only, in both directions", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const c = await user("carol");
      const m1 = await send(a.socket, { recipientId: b.user.id, content: "a→b", type: "text" });
      await send(a.socket, { recipientId: c.user.id, content: "a→c", type: "text" });
      await send(c.socket, { recipientId: b.user.id, content: "c→b", type: "text" });
      await send(c.socket, { recipientId: a.user.id, content: "c→a", type: "text" });
      const m2 = await send(b.socket, { recipientId: a.user.id, content: "b→a", type: "image" });
      assert.deepEqual(await history(a.socket, { withUserId: b.user.id }), [m2, m1]);
      assert.deepEqual(await history(b.socket, { withUserId: a.user.id }), [m2, m1]);
      assert.deepEqual(await history(a.socket, { withUserId: randomUUID() }), []);
    });

    const bad = [
      ["limit 0", (w) => ({ withUserId: w, limit: 0 }), "bad_request"],
      ["limit 101", (w) => ({ withUserId: w, limit: 101 }), "bad_request"],
      ["limit -1", (w) => ({ withUserId: w, limit: -1 }), "bad_request"],
      ["limit a string", (w) => ({ withUserId: w, limit: "5" }), "bad_request"],
      ["limit 1.5", (w) => ({ withUserId: w, limit: 1.5 }), "bad_request"],
      ["withUserId missing", () => ({ limit: 5 }), "bad_request"],
      ["withUserId not a uuid", () => ({ withUserId: "bob" }), "bad_request"],
      ["before not a uuid", (w) => ({ withUserId: w, before: "m-1" }), "bad_request"],
    ];
    for (const [name, query, code] of bad) {
      test(`message:history ${name} → {ok:false, error:{code:${code}}}`, async () => {
        const a = await user("alice");
        assertRefused(await a.socket.timeout(3000).emitWithAck("message:history", query(randomUUID())), code, name);
      });
    }

    test("message:history without an ack → chat:error {event:\"message:history\"}; the connection stays", async () => {
      const a = await user("alice");
      a.socket.emit("message:history", { withUserId: randomUUID() });
      const err = await expectEvent(a.rec, "chat:error");
      assert.equal(err.event, "message:history");
      assert.ok(typeof err.code === "string" && err.code.length > 0);
      assert.deepEqual(await history(a.socket, { withUserId: randomUUID() }), []);
      assert.deepEqual(a.disconnects, []);
    });
  });

  describe("read receipts", () => {
    test("the recipient marks read → every socket of the sender gets message:read {messageId, readAt}; history shows readAt", async () => {
      const alice = makeUser("alice");
      const a1 = await tab(alice, edge1);
      const a2 = await tab(alice, edge2);
      const b = await user("bob", edge2);
      const c = await user("carol");
      const m = await send(a1.socket, { recipientId: b.user.id, content: "read me", type: "text" });
      await expectEvent(b.rec, "message:received");
      await expectEvent(a1.rec, "message:sent");
      await expectEvent(a2.rec, "message:sent");

      const res = await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: alice.id });
      assert.equal(res.ok, true, JSON.stringify(res));
      const r1 = await expectEvent(a1.rec, "message:read");
      assert.deepEqual(Object.keys(r1).sort(), ["messageId", "readAt"]);
      assert.equal(r1.messageId, m.id);
      assert.match(r1.readAt, ISO_MS);
      assert.ok(Date.parse(r1.readAt) >= Date.parse(m.createdAt));
      assert.deepEqual(await expectEvent(a2.rec, "message:read"), r1);

      const [h] = await history(b.socket, { withUserId: alice.id });
      assert.deepEqual(h, { ...m, readAt: r1.readAt });
      assert.deepEqual(await history(a1.socket, { withUserId: b.user.id }), [h]);

      await expectNothingBefore(c, b, "the marker on bob (the reader gets no message:read)");
      await expectNothingBefore(b, c, "the marker on carol (nothing for a third user)");

      // A second read by the recipient: ok, and no second message:read.
      const again = await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: alice.id });
      assert.equal(again.ok, true, JSON.stringify(again));
      // Read receipts are one stream (one consumer): a read of another message
      // after it is a marker on the same path.
      const m2 = await send(a1.socket, { recipientId: b.user.id, content: "marker", type: "text" });
      assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m2.id, senderId: alice.id })).ok, true);
      for (const r of [a1.rec, a2.rec]) {
        assert.equal((await expectEvent(r, "message:sent")).id, m2.id);
        assert.equal((await expectEvent(r, "message:read", undefined, "the marker read (no second message:read before it)")).messageId, m2.id);
      }
      const [h2] = await history(b.socket, { withUserId: alice.id, before: m2.id });
      assert.equal(h2.readAt, r1.readAt, "readAt is not changed by a second read");
    });

    test("the sender or a third user marking it read → forbidden; an unknown id → not_found; with and without ack", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const c = await user("carol");
      const m = await send(a.socket, { recipientId: b.user.id, content: "mine", type: "text" });
      assertRefused(await a.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: a.user.id }), "forbidden", "the sender marks read");
      assertRefused(await c.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: a.user.id }), "forbidden", "a third user marks read");
      assertRefused(await b.socket.timeout(5000).emitWithAck("message:read", { messageId: randomUUID(), senderId: a.user.id }), "not_found", "an unknown message");
      c.socket.emit("message:read", { messageId: m.id, senderId: a.user.id });
      assert.deepEqual(
        (({ event, code }) => ({ event, code }))(await expectEvent(c.rec, "chat:error")),
        { event: "message:read", code: "forbidden" },
      );
      b.socket.emit("message:read", { messageId: randomUUID(), senderId: a.user.id });
      assert.equal((await expectEvent(b.rec, "message:received")).id, m.id);
      assert.deepEqual(
        (({ event, code }) => ({ event, code }))(await expectEvent(b.rec, "chat:error")),
        { event: "message:read", code: "not_found" },
      );
      assert.equal(pg.psql(`SELECT read_at IS NULL FROM messages WHERE id = ${sqlStr(m.id)}`)[0], "t", "still unread");
      assert.equal((await expectEvent(a.rec, "message:sent")).id, m.id);
      await expectNothingBefore(c, a, "the marker on alice (no message:read for refused reads)");
    });

    test("message:read bad input → bad_request", async () => {
      const a = await user("alice");
      for (const [name, payload] of [
        ["no messageId", { senderId: randomUUID() }],
        ["messageId not a uuid", { messageId: "m1", senderId: randomUUID() }],
        ["senderId not a uuid", { messageId: randomUUID(), senderId: "alice" }],
      ]) {
        assertRefused(await a.socket.timeout(3000).emitWithAck("message:read", payload), "bad_request", name);
      }
      assertRefused(await a.socket.timeout(3000).emitWithAck("message:read", "x"), "bad_request", "payload a string");
    });

    test("senderId is only a hint: a wrong one still notifies the real sender only", async () => {
      const a = await user("alice");
      const b = await user("bob");
      const c = await user("carol");
      const m = await send(a.socket, { recipientId: b.user.id, content: "hint", type: "text" });
      assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: c.user.id })).ok, true);
      assert.equal((await expectEvent(a.rec, "message:sent")).id, m.id);
      assert.equal((await expectEvent(a.rec, "message:read")).messageId, m.id);
      await expectNothingBefore(b, c, "the marker on carol (the wrong senderId gets nothing)");
    });
  });

  describe("NATS down", () => {
    test("no messaging: message:history → unavailable at once; NATS down: message:send, message:read, message:history → unavailable at once; the connection stays up", async () => {
      const ownNats = await startNats();
      const edge = await startEdge({ nats: ownNats, name: `msg-edge-nats-${transport}`, env: EDGE_ENV });
      const a = await connectAs(makeUser("alice"), edge, transport);
      // No messaging replica on this NATS: a history query has no responder.
      let t0 = Date.now();
      assertRefused(await a.socket.timeout(2000).emitWithAck("message:history", { withUserId: randomUUID() }), "unavailable", "message:history with no messaging replica");
      assert.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`);

      await ownNats.stop("SIGKILL");
      await edge.child.waitForLine(/nats disconnected/, 5000, "the edge noticing NATS is gone");

      t0 = Date.now();
      const res = await a.socket.timeout(2000).emitWithAck("message:send", { recipientId: randomUUID(), content: "hi", type: "text", clientMessageId: "down-1" });
      const took = Date.now() - t0;
      assertRefused(res, "unavailable", "message:send with NATS down");
      assert.ok(took < 1000, `answered after ${took} ms`);

      t0 = Date.now();
      assertRefused(await a.socket.timeout(2000).emitWithAck("message:read", { messageId: randomUUID(), senderId: randomUUID() }), "unavailable", "message:read with NATS down");
      assertRefused(await a.socket.timeout(2000).emitWithAck("message:history", { withUserId: randomUUID() }), "unavailable", "message:history with NATS down");
      assert.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`);

      a.socket.emit("message:send", { recipientId: randomUUID(), content: "hi", type: "text" });
      const err = await expectEvent(a.rec, "chat:error");
      assert.equal(err.event, "message:send");
      assert.equal(err.code, "unavailable");

      assert.equal(a.socket.connected, true);
      assert.deepEqual(a.disconnects, []);
      a.socket.close();
      await edge.stop();
    });
  });
});

describe("default transports: messages over long-polling, then after the upgrade", () => {
  test("send, ack, message:received, message:sent, message:read and history over polling; the same after the upgrade", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = { user: alice, ...(await connectClient(edge1.url, alice.token, { transport: "default", holdUpgrade: true })) };
    const b = { user: bob, ...(await connectClient(edge2.url, bob.token, { transport: "default", holdUpgrade: true })) };
    assert.deepEqual([transportOf(a.socket), transportOf(b.socket)], ["polling", "polling"]);

    const m1 = await send(a.socket, { recipientId: bob.id, content: "over polling", type: "text", clientMessageId: "poll-1" });
    assertMessage(m1, { senderId: alice.id, recipientId: bob.id, content: "over polling", type: "text", clientMessageId: "poll-1" });
    assert.deepEqual(await expectEvent(b.rec, "message:received"), m1);
    assert.deepEqual(await expectEvent(a.rec, "message:sent"), m1);
    assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m1.id, senderId: alice.id })).ok, true);
    const r1 = await expectEvent(a.rec, "message:read");
    assert.equal(r1.messageId, m1.id);
    assert.deepEqual(await history(b.socket, { withUserId: alice.id }), [{ ...m1, readAt: r1.readAt }]);

    await a.upgrade();
    await b.upgrade();
    assert.deepEqual([transportOf(a.socket), transportOf(b.socket)], ["websocket", "websocket"]);
    const m2 = await send(b.socket, { recipientId: alice.id, content: "after the upgrade", type: "image" });
    assert.deepEqual(await expectEvent(a.rec, "message:received"), m2);
    assert.deepEqual(await expectEvent(b.rec, "message:sent"), m2);
    assert.deepEqual(await history(a.socket, { withUserId: bob.id }), [m2, { ...m1, readAt: r1.readAt }]);
    await expectNothingBefore(a, b, "the marker on bob (nothing duplicated by the upgrade)");
    await expectNothingBefore(b, a, "the marker on alice (nothing duplicated by the upgrade)");
  });
});

// ---------------------------------------------------------------- taps

describe("taps on JetStream CHAT_EVENTS", () => {
  test("a stored message and its read receipt are recorded once each, under subjects naming both users (a resend and a second read add nothing)", async () => {
    const a = await connectAs(makeUser("alice"), edge1);
    const b = await connectAs(makeUser("bob"), edge2);
    const info = await natsRequest(nats.port, "$JS.API.STREAM.INFO.CHAT_EVENTS", {});
    assert.ok(info.state, `stream CHAT_EVENTS: ${JSON.stringify(info)}`);
    let seq = info.state.last_seq;

    const payload = { recipientId: b.user.id, content: "tap me", type: "audio", clientMessageId: "tap-1" };
    const m = await send(a.socket, payload);
    assert.deepEqual(await send(a.socket, payload), m);
    assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: a.user.id })).ok, true);
    assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: m.id, senderId: a.user.id })).ok, true);
    // Markers behind them on the same paths (the sender's partition; the read consumer).
    const marker = await send(a.socket, { recipientId: b.user.id, content: "tap marker", type: "text" });
    assert.equal((await b.socket.timeout(5000).emitWithAck("message:read", { messageId: marker.id, senderId: a.user.id })).ok, true);

    // Nothing can be awaited on a stream without a consumer: read it until both markers are there (bounded).
    const taps = [];
    // The records name both users: created.<sender>.<recipient>, read.<sender>.<reader>.
    const created_ = `chat.event.message.created.${a.user.id}.${b.user.id}`;
    const read_ = `chat.event.message.read.${a.user.id}.${b.user.id}`;
    const has = (subject, id) => taps.some((t) => t.subject === subject && t.data.includes(Buffer.from(id)));
    const deadline = Date.now() + 5000;
    while (!(has(created_, marker.id) && has(read_, marker.id))) {
      assert.ok(Date.now() < deadline, `the marker's taps did not arrive within 5 s; taps: ${JSON.stringify(taps.map((t) => t.subject))}`);
      const last = (await natsRequest(nats.port, "$JS.API.STREAM.INFO.CHAT_EVENTS", {})).state.last_seq;
      if (last === seq) await delay(50);
      for (; seq < last; ) {
        const r = await natsRequest(nats.port, "$JS.API.STREAM.MSG.GET.CHAT_EVENTS", { seq: ++seq });
        if (r.message) taps.push({ subject: r.message.subject, data: Buffer.from(r.message.data ?? "", "base64") });
      }
    }
    const of = (subject, id) => taps.filter((t) => t.subject === subject && t.data.includes(Buffer.from(id)));
    const created = of(created_, m.id);
    assert.equal(created.length, 1, "one created tap for the message");
    for (const s of [a.user.id, b.user.id, "tap me", "tap-1"]) assert.ok(created[0].data.includes(Buffer.from(s)), `the created tap holds ${s}`);
    const read = of(read_, m.id);
    assert.equal(read.length, 1, "one read tap for the message");
    for (const s of [a.user.id, b.user.id]) assert.ok(read[0].data.includes(Buffer.from(s)), `the read tap holds ${s}`);
  });
});

// ---------------------------------------------------------------- the delivery guarantee (WebSocket only)

describe("kill -9 of messaging", () => {
  const env = { MESSAGING_ACK_WAIT_MS: "1000" };
  let ownNats;
  let db;
  let svc;
  let e1;
  let e2;
  let generation = 1;
  const restartMessaging = async () => {
    const r = await svc.stop("SIGKILL");
    assert.equal(r.signal, "SIGKILL", "messaging was running when killed");
    svc = await startMessaging({ nats: ownNats, pg: db, name: `crash-${++generation}`, env });
  };

  before(async () => {
    ownNats = await startNats();
    db = await startPostgres();
    svc = await startMessaging({ nats: ownNats, pg: db, name: "crash-1", env });
    e1 = await startEdge({ nats: ownNats, name: "crash-edge-1", env: EDGE_ENV });
    e2 = await startEdge({ nats: ownNats, name: "crash-edge-2", env: EDGE_ENV });
  });

  after(async () => {
    await Promise.all([svc, e1, e2].filter(Boolean).map((x) => x.stop()));
    await ownNats?.destroy();
    await db?.destroy();
  });

  test("killed with a batch inside its database transaction: redelivered, stored once in emission order, the acks arrive without a resend", { timeout: 60000 }, async () => {
    const a = await connectAs(makeUser("alice"), e1);
    const b = await connectAs(makeUser("bob"), e2);
    // Another session holds the table: messaging's INSERT waits inside its transaction.
    const locker = spawn("psql", ["-h", "127.0.0.1", "-p", String(db.port), "-U", "postgres", "-d", "postgres", "-tA", "-v", "ON_ERROR_STOP=1"], { stdio: ["pipe", "pipe", "pipe"] });
    const lockerExit = new Promise((resolve) => locker.once("close", resolve));
    try {
      let out = "";
      const locked = new Promise((resolve, reject) => {
        locker.stdout.on("data", (d) => (out += d) && out.includes("locked") && resolve());
        locker.once("close", (code) => reject(new Error(`psql exited (${code}) before the lock was held`)));
      });
      locked.catch(() => {});
      locker.stdin.write("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n");
      await withTimeout(locked, 5000, "the table lock");

      const acked = [];
      const acks = [1, 2, 3].map((i) =>
        a.socket
          .timeout(30000)
          .emitWithAck("message:send", { recipientId: b.user.id, content: `in flight ${i}`, type: "text", clientMessageId: `tx-${i}` })
          .then((res) => {
            acked.push(i);
            return res;
          }),
      );
      // Nothing to await: poll PostgreSQL (bounded) until messaging's INSERT waits for the lock.
      const deadline = Date.now() + 5000;
      while (Number(db.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO messages%'")[0]) < 1) {
        assert.ok(Date.now() < deadline, "messaging's INSERT did not start within 5 s");
        await delay(50);
      }
      assert.deepEqual(acked, [], "no ack before the commit");
      await restartMessaging();
      locker.stdin.end("COMMIT;\n");
      await withTimeout(lockerExit, 5000, "psql to end");

      const res = await withTimeout(Promise.all(acks), 20000, "the 3 acks after the restart");
      assert.deepEqual(res.map((r) => r.ok && r.message.clientMessageId), ["tx-1", "tx-2", "tx-3"], JSON.stringify(res));
      const stored = db.psql(`SELECT client_message_id, id FROM messages WHERE sender_id = ${sqlStr(a.user.id)} ORDER BY created_at, id`).map((l) => l.split("|"));
      assert.deepEqual(stored, res.map((r) => [r.message.clientMessageId, r.message.id]), "stored once each, in emission order, with the acked ids");
      const delivered = [];
      for (let i = 0; i < 3; i++) delivered.push(await expectEvent(b.rec, "message:received", undefined, "the messages delivered to bob"));
      // A fail-over may reorder the delivery of a redelivered batch (README, Limits): compare as sets.
      const byId = (x, y) => (x.id < y.id ? -1 : 1);
      assert.deepEqual(delivered.sort(byId), res.map((r) => r.message).sort(byId));
    } finally {
      if (locker.exitCode === null) locker.kill("SIGKILL");
      a.socket.close();
      b.socket.close();
    }
  });

  test("in the middle of a stream of 1,000 messages: every acked message stored exactly once, delivered to its recipient, createdAt in emission order", { timeout: 90000 }, async () => {
    const senders = await Promise.all([0, 1, 2, 3].map((i) => connectAs(makeUser(`sender${i}`), i % 2 ? e2 : e1)));
    const recipients = await Promise.all([0, 1, 2, 3].map((i) => connectAs(makeUser(`recipient${i}`), i % 2 ? e1 : e2)));
    const received = recipients.map((r) => collect(r.socket, "message:received"));

    let killedAt = -1;
    let inFlightAtKill = 0;
    let restart;
    const result = await stream({
      senders,
      recipients,
      perSender: 250,
      window: 25,
      tag: "crash",
      onAck: (n, emittedSoFar) => {
        if (n !== 300) return;
        killedAt = n;
        inFlightAtKill = emittedSoFar - n;
        restart = restartMessaging();
      },
    });
    await restart;
    assert.equal(killedAt, 300, "the kill happened mid-stream");
    assert.ok(inFlightAtKill > 0, "messages were in flight at the kill");
    assert.equal(result.emitted.length, 1000);
    assert.equal(result.acks.size, 1000);

    const rows = assertStoredOnce(db, result, "crash");
    assertCreatedOrder(db, rows, result.emitted, "crash");
    // At least once to the recipient (duplicates with the same id allowed).
    await Promise.all(
      recipients.map((r, i) => {
        const want = rows.filter((x) => x.recipientId === r.user.id).map((x) => x.id);
        return received[i].until((items) => {
          const ids = new Set(items.map((m) => m.id));
          return want.every((id) => ids.has(id));
        }, 15000, `every stored message delivered to ${r.user.username}`);
      }),
    );
    const dupes = received.reduce((n, c) => n + c.items.length - new Set(c.items.map((m) => m.id)).size, 0);
    console.log(`# crash stream: ${inFlightAtKill} in flight at the kill, ${result.stats.resends} resends, ${dupes} duplicate deliveries`);
    for (const c of [...senders, ...recipients]) c.socket.close();
  });
});

describe("PostgreSQL outage", () => {
  test("no ack while PostgreSQL is down (history: unavailable); after it comes back all 5 acks arrive, stored and delivered in order", { timeout: 60000 }, async () => {
    const ownNats = await startNats();
    const db = await startPostgres();
    const svc = await startMessaging({ nats: ownNats, pg: db, name: "pgdown" });
    const edge = await startEdge({ nats: ownNats, name: "pgdown-edge", env: EDGE_ENV });
    const a = await connectAs(makeUser("alice"), edge);
    const b = await connectAs(makeUser("bob"), edge);
    await send(a.socket, { recipientId: b.user.id, content: "before", type: "text", clientMessageId: "pg-0" });
    await expectEvent(b.rec, "message:received");
    await expectEvent(a.rec, "message:sent");

    db.stop();
    const acked = [];
    const acks = [1, 2, 3, 4, 5].map((i) =>
      a.socket
        .timeout(20000)
        .emitWithAck("message:send", { recipientId: b.user.id, content: `during ${i}`, type: "text", clientMessageId: `pg-${i}` })
        .then((res) => {
          acked.push(i);
          return res;
        }),
    );
    // History reads PostgreSQL: refused at once, not left unanswered.
    const t0 = Date.now();
    assertRefused(await a.socket.timeout(3000).emitWithAck("message:history", { withUserId: b.user.id }), "unavailable", "message:history while PostgreSQL is down");
    assert.ok(Date.now() - t0 < 2000, `answered after ${Date.now() - t0} ms`);
    await delay(Math.max(0, 1000 - (Date.now() - t0))); // the outage window: nothing may be acknowledged in it
    assert.deepEqual(acked, [], "no ack while PostgreSQL is down");
    assert.deepEqual(a.rec.pending(), [], "no message:sent while PostgreSQL is down");
    assert.deepEqual(b.rec.pending(), [], "no message:received while PostgreSQL is down");
    db.start();

    const res = await withTimeout(Promise.all(acks), 20000, "the 5 acks after PostgreSQL came back");
    for (const [i, r] of res.entries()) {
      assert.equal(r.ok, true, JSON.stringify(r));
      assertMessage(r.message, { senderId: a.user.id, recipientId: b.user.id, content: `during ${i + 1}`, type: "text", clientMessageId: `pg-${i + 1}` });
    }
    assert.deepEqual(acked, [1, 2, 3, 4, 5], "acks in emission order");
    const stored = db.psql(`SELECT client_message_id, id FROM messages WHERE sender_id = ${sqlStr(a.user.id)} ORDER BY created_at, id`).map((l) => l.split("|"));
    assert.deepEqual(stored.map(([cmid]) => cmid), ["pg-0", "pg-1", "pg-2", "pg-3", "pg-4", "pg-5"], "stored once each, in emission order");
    assert.deepEqual(stored.slice(1).map(([, id]) => id), res.map((r) => r.message.id), "the acks carry the stored ids");
    for (let i = 1; i <= 5; i++) assert.equal((await expectEvent(b.rec, "message:received")).clientMessageId, `pg-${i}`, "delivered in order");

    a.socket.close();
    b.socket.close();
    await Promise.all([svc.stop(), edge.stop()]);
    await ownNats.destroy();
    await db.destroy();
  });
});

describe("three messaging replicas", () => {
  const env = { MESSAGING_ACK_WAIT_MS: "1000" };
  let ownNats;
  let db;
  let replicas;
  let e1;
  let e2;
  let senders;
  let recipients;
  let received;
  const dead = new Set();

  before(async () => {
    ownNats = await startNats();
    db = await startPostgres();
    replicas = await Promise.all([1, 2, 3].map((i) => startMessaging({ nats: ownNats, pg: db, name: `replica-${i}`, env })));
    e1 = await startEdge({ nats: ownNats, name: "replicas-edge-1", env: EDGE_ENV });
    e2 = await startEdge({ nats: ownNats, name: "replicas-edge-2", env: EDGE_ENV });
    senders = await Promise.all(Array.from({ length: 20 }, (_, i) => connectAs(makeUser(`sender${i}`), i % 2 ? e2 : e1)));
    recipients = await Promise.all(Array.from({ length: 5 }, (_, i) => connectAs(makeUser(`recipient${i}`), i % 2 ? e1 : e2)));
    received = recipients.map((r) => collect(r.socket, "message:received"));
  });

  /** Waits until the 8 partitions are held once each, by every replica in `among`, at most ceil(8/n) each. */
  async function balanced(among, ms = 15000) {
    const fair = Math.ceil(8 / among.length);
    const ok = () => {
      const sets = among.map((r) => ownedPartitions(r.child.output));
      const all = sets.flatMap((s) => [...s]);
      return all.length === 8 && new Set(all).size === 8 && sets.every((s) => s.size >= 1 && s.size <= fair);
    };
    const show = () => among.map((r) => `${r.name}: [${[...ownedPartitions(r.child.output)]}]`).join("; ");
    await waitForOutput(among.map((r) => r.child), ok, ms, "the 8 partitions held once each, spread evenly").catch((err) => {
      throw new Error(`${err.message} (${show()})`);
    });
  }

  test("the partitions are spread over the replicas (each takes some)", async () => {
    await balanced(replicas);
    for (const r of replicas) assert.match(r.child.output, /partition \d+ taken/, `${r.name} took a partition`);
  });

  test("600 messages from 20 senders: stored exactly once, delivered per sender in emission order, by at least 2 replicas", { timeout: 60000 }, async () => {
    const offsets = replicas.map((r) => r.child.output.length);
    const result = await stream({ senders, recipients, perSender: 30, window: 30, tag: "multi" });
    const rows = assertStoredOnce(db, result, "multi");
    assertCreatedOrder(db, rows, result.emitted, "multi");
    // Delivery order per (sender, recipient): the first arrival of each id.
    await Promise.all(
      recipients.map(async (r, i) => {
        const want = result.emitted.filter((e) => e.recipientId === r.user.id);
        const items = await received[i].until((list) => new Set(list.filter((m) => m.clientMessageId?.startsWith("multi-")).map((m) => m.id)).size >= want.length, 15000, `every message delivered to ${r.user.username}`);
        const seen = new Set();
        const firsts = items.filter((m) => m.clientMessageId?.startsWith("multi-") && !seen.has(m.id) && seen.add(m.id));
        for (const s of senders) {
          assert.deepEqual(
            firsts.filter((m) => m.senderId === s.user.id).map((m) => m.clientMessageId),
            want.filter((e) => e.senderId === s.user.id).map((e) => e.cmid),
            `delivery order from ${s.user.username} to ${r.user.username}`,
          );
        }
      }),
    );
    const working = replicas.filter((r, i) => /stored batch partition=/.test(r.child.output.slice(offsets[i])));
    assert.ok(working.length >= 2, `batches stored by ${working.map((r) => r.name)} only`);
  });

  test("kill -9 of one replica mid-stream: the others take its partitions and every message is stored once", { timeout: 90000 }, async () => {
    await balanced(replicas);
    const owned = replicas.map((r) => ownedPartitions(r.child.output));
    const vi = owned.reduce((best, s, i) => (s.size > owned[best].size ? i : best), 0);
    const victim = replicas[vi];
    const survivors = replicas.filter((_, i) => i !== vi);
    let lost;
    let offsets;
    let killed;
    const result = await stream({
      senders,
      recipients,
      perSender: 30,
      window: 5,
      tag: "failover",
      onAck: (n) => {
        if (n !== 200) return;
        offsets = survivors.map((r) => r.child.output.length);
        lost = [...ownedPartitions(victim.child.output)];
        killed = victim.stop("SIGKILL");
        dead.add(victim);
      },
    });
    const r = await killed;
    assert.equal(r.signal, "SIGKILL", "the victim was running when killed");
    // The survivors hold every partition now, the victim's included.
    const taken = survivors.map((s, i) => [...s.child.output.slice(offsets[i]).matchAll(/partition (\d+) taken/g)].map((m) => Number(m[1])));
    for (const p of lost) assert.ok(taken.flat().includes(p), `partition ${p} of ${victim.name} taken over (${survivors.map((s, i) => `${s.name}: ${taken[i]}`).join("; ")})`);
    await balanced(survivors);
    assertStoredOnce(db, result, "failover");
    console.log(`# failover stream: ${result.stats.resends} resends; ${victim.name} held ${lost}`);
  });

  after(async () => {
    for (const c of [...(senders ?? []), ...(recipients ?? [])]) c.socket.close();
    await Promise.all([...(replicas ?? []), e1, e2].filter((s) => s && !dead.has(s)).map((s) => s.stop()));
    await ownNats?.destroy();
    await db?.destroy();
  });
});

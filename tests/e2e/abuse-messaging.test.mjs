// Messaging's abuse limits, as attacks against the real stack (nats-server,
// PostgreSQL, chat-presence, chat-messaging, one chat-edge with its default
// per-socket limits), each with a canary pair that must keep chatting during
// the attack, and messaging's memory checked after the floods:
//   - the history flood: 16 sockets of one user (raw WebSockets that read
//     fast), each within the edge's per-socket event rate, asking
//     100-message pages (200 KB each) of a 20,000-message conversation:
//     another user's history answers within 1 s 95% of the time, and
//     everything answers normally after it;
//   - the history queue (raw NATS for the queries that hold the workers): a
//     full queue answers "unavailable" at once, a user over its limit
//     "rate_limited" at once, and a query whose asker has given up is dropped
//     before it runs, unanswered;
//   - send quotas: the per-minute budget (rate_limited with retryAfterMs in
//     the ack and in chat:error, a hint that is right, nothing stored past the
//     budget, from four sockets at once) and the per-day budget across a kill
//     -9 of messaging (the count is in PostgreSQL);
//   - known recipients: a message to an id nobody ever used gets not_found
//     and is not stored, to a user who connected once it is, a flood of
//     unknown ids stores nothing;
//   - the JetStream limits: CHAT_EVENTS' age and size and CHAT_CMD's size are
//     messaging's configuration, applied at start (an older stream is
//     updated), changed on a restart, left alone by the edge, and enforced.
// The messaging limits are set explicitly per describe (the harness lifts
// them by default); each describe runs its own messaging replica.
import assert from "node:assert/strict";
import net from "node:net";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { spawn } from "node:child_process";
import { before, after, describe } from "node:test";
import WebSocket from "ws";
import {
  test,
  startNats,
  startPostgres,
  startPresence,
  startMessaging,
  startEdge,
  connectClient,
  shutdown,
  withTimeout,
  delay,
  MESSAGING_BIN,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

// The edge's per-socket defaults (README, Abuse limits): the attacks stay within them.
const EDGE_DEFAULTS = { EDGE_EVENTS_PER_S: "30", EDGE_EVENTS_BURST: "60", EDGE_RATE_DISCONNECT: "200", EDGE_MAX_SOCKETS_PER_USER: "32" };
// Messaging's defaults (README, Abuse limits), which a describe changes where it tests one.
const MESSAGING_DEFAULTS = {
  MESSAGING_HISTORY_CONNS: "4",
  MESSAGING_HISTORY_QUEUE: "1000",
  MESSAGING_HISTORY_PER_USER: "16",
  MESSAGING_HISTORY_PER_S: "20",
  MESSAGING_SENDS_PER_MIN: "120",
  MESSAGING_SENDS_PER_DAY: "10000",
  MESSAGING_REQUIRE_KNOWN_RECIPIENT: "1",
};
const asan = readFileSync(MESSAGING_BIN).includes("__asan_init");
// ASan keeps freed memory in a 256 MB quarantine: RSS would only measure that.
const RSS_ENV = asan ? { ASAN_OPTIONS: [process.env.ASAN_OPTIONS, "quarantine_size_mb=0", "thread_local_quarantine_size_kb=0"].filter(Boolean).join(":") } : {};

let nats;
let pg;
let edge;

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  await startPresence({ nats, pg });
  edge = await startEdge({ nats, name: "abuse-msg-edge", env: EDGE_DEFAULTS });
});

after(() => shutdown());

// ---------------------------------------------------------------- helpers

const sqlStr = (s) => `'${String(s).replace(/'/g, "''")}'`;
const countRows = (where) => Number(pg.psql(`SELECT count(*) FROM messages WHERE ${where}`)[0]);

/** A user connected over WebSocket (so presence has seen it): {user, socket, rec}. */
async function connectAs(user) {
  const c = await connectClient(edge.url, user.token);
  return { user, ...c };
}

/** messaging with the defaults, then env; its /metrics and VmRSS. */
async function messagingWith(env, name) {
  const svc = await startMessaging({ nats, pg, name, env: { ...MESSAGING_DEFAULTS, ...RSS_ENV, ...env } });
  svc.metrics = async () => {
    const res = await withTimeout(fetch(`${svc.healthUrl}/metrics`), 3000, "GET /metrics of messaging");
    return res.text();
  };
  svc.rssKb = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${svc.child.proc.pid}/status`, "utf8"))[1]);
  return svc;
}

/** The value of a series in Prometheus text (name with its labels), or 0 when absent. */
function metric(text, series) {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** Polls messaging's /metrics until pred(text) holds; bounded. */
async function untilMetrics(svc, pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const text = await svc.metrics();
    if (pred(text)) return text;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}; metrics:\n${text.split("\n").filter((l) => l.startsWith("chat_messaging_")).join("\n")}`);
    await delay(50);
  }
}

function percentile(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/** An ack within ms, or {timeout: true}. */
async function emitAck(socket, event, payload, ms = 6000) {
  try {
    return await socket.timeout(ms).emitWithAck(event, payload);
  } catch {
    return { timeout: true };
  }
}

/**
 * The canary pair: two users who keep chatting (alternately, one message
 * every `every` ms, each with an ack) until stop(). stop() checks that every
 * message was acked ok and received by the other, and returns the
 * send → received latencies.
 */
async function canary(every = 200) {
  const [c1, c2] = await Promise.all([connectAs(makeUser("canary1")), connectAs(makeUser("canary2"))]);
  const received = new Map(); // content -> time received
  const watch = (c) => c.socket.on("message:received", (m) => received.set(m.content, Date.now()));
  watch(c1);
  watch(c2);
  const sent = [];
  let running = true;
  let paused = null; // {resume, idle}: between two messages, until resume()
  const loop = (async () => {
    for (let i = 0; running; i++) {
      if (paused) {
        paused.idle();
        await paused.resumed;
      }
      const [from, to] = i % 2 ? [c2, c1] : [c1, c2];
      const content = `canary ${i}`;
      const t0 = Date.now();
      sent.push({ content, t0, res: await emitAck(from.socket, "message:send", { recipientId: to.user.id, content, type: "text" }, 5000) });
      await delay(Math.max(0, every - (Date.now() - t0)));
    }
  })();
  return {
    /** Resolves once the canary is between two messages and sends no more until resume(). */
    pause() {
      let resume;
      const resumed = new Promise((r) => (resume = r));
      return new Promise((idle) => (paused = { idle, resumed, resume }));
    },
    resume() {
      const p = paused;
      paused = null;
      p?.resume();
    },
    async stop() {
      // It chats at least three times, however short the attack was.
      await withTimeout(
        (async () => {
          while (sent.length < 3) await delay(20);
        })(),
        15000,
        "three canary messages",
      );
      running = false;
      await loop;
      for (const s of sent) assert.equal(s.res.ok, true, `canary ${s.content}: ${JSON.stringify(s.res)}`);
      await withTimeout(
        (async () => {
          while (!sent.every((s) => received.has(s.content))) await delay(20);
        })(),
        5000,
        "every canary message received",
      );
      c1.socket.close();
      c2.socket.close();
      const latencies = sent.map((s) => received.get(s.content) - s.t0);
      return latencies;
    },
  };
}

// ---------------------------------------------------------------- raw NATS (core protocol), for queries the edge cannot make

/** A raw NATS connection: publish with a reply subject, collect replies per subject, JSON requests to the JetStream API. */
class RawNats {
  constructor(port) {
    this.sock = net.connect({ host: "127.0.0.1", port });
    this.buf = Buffer.alloc(0);
    this.replies = new Map(); // subject -> [payload]
    this.waiters = new Set();
    this.sock.on("error", () => {});
    this.ready = new Promise((resolve, reject) => {
      this.onInfo = resolve;
      this.sock.once("error", reject);
    });
    this.sock.on("data", (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.parse();
    });
  }

  parse() {
    for (;;) {
      const eol = this.buf.indexOf("\r\n");
      if (eol < 0) return;
      const line = this.buf.subarray(0, eol).toString();
      if (line.startsWith("MSG ")) {
        const parts = line.split(" ");
        const len = Number(parts[parts.length - 1]);
        if (this.buf.length < eol + 2 + len + 2) return;
        const payload = Buffer.from(this.buf.subarray(eol + 2, eol + 2 + len));
        this.buf = this.buf.subarray(eol + 2 + len + 2);
        if (!this.replies.has(parts[1])) this.replies.set(parts[1], []);
        this.replies.get(parts[1]).push(payload);
        for (const w of [...this.waiters]) w();
        continue;
      }
      this.buf = this.buf.subarray(eol + 2);
      if (line.startsWith("INFO")) {
        this.sock.write('CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.raw.> 1\r\n');
        this.onInfo();
      } else if (line.startsWith("PING")) this.sock.write("PONG\r\n");
    }
  }

  publish(subject, reply, payload) {
    this.sock.write(`PUB ${subject} ${reply} ${payload.length}\r\n`);
    this.sock.write(Buffer.concat([payload, Buffer.from("\r\n")]));
  }

  /** Resolves with the first reply on subject; bounded. */
  reply(subject, ms, what = `a reply on ${subject}`) {
    let w;
    return withTimeout(
      new Promise((resolve) => {
        w = () => {
          const got = this.replies.get(subject);
          if (got?.length) {
            this.waiters.delete(w);
            resolve(got[0]);
          }
        };
        this.waiters.add(w);
        w();
      }),
      ms,
      what,
    ).finally(() => this.waiters.delete(w));
  }

  async jsApi(subject, body = {}) {
    const inbox = `_INBOX.raw.${randomUUID()}`;
    this.publish(subject, inbox, Buffer.from(JSON.stringify(body)));
    return JSON.parse((await this.reply(inbox, 3000, subject)).toString());
  }

  close() {
    this.sock.destroy();
  }
}

async function rawNats(n) {
  const c = new RawNats(n.port);
  await withTimeout(c.ready, 3000, "the raw NATS connection");
  return c;
}

// protobuf (proto/chat.proto): just what these tests send and read.
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
const pbString = (field, s) => {
  const b = Buffer.from(s);
  return Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
};
const pbUint = (field, v) => Buffer.concat([varint(field << 3), varint(v)]);

/** HistoryQuery {user_id 1, with_user_id 2, limit 5, timeout_ms 6}. */
const historyQuery = ({ userId, withUserId, limit = 10, timeoutMs }) =>
  Buffer.concat([pbString(1, userId), pbString(2, withUserId), pbUint(5, limit), ...(timeoutMs ? [pbUint(6, timeoutMs)] : [])]);

/** The top-level fields of a protobuf message: [{field, value (Buffer or BigInt)}]. */
function pbFields(buf) {
  const fields = [];
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
    const wt = tag & 7;
    if (wt === 0) fields.push({ field: tag >> 3, value: readVarint() });
    else if (wt === 2) {
      const len = Number(readVarint());
      fields.push({ field: tag >> 3, value: buf.subarray(i, i + len) });
      i += len;
    } else throw new Error(`wire type ${wt} not expected`);
  }
  return fields;
}

/** MessageList {messages 1, error 2 {code 1, message 2, retry_after_ms 3}} → {messages (count), error}. */
function messageList(buf) {
  const f = pbFields(buf);
  const e = f.find((x) => x.field === 2);
  let error = null;
  if (e) {
    const ef = pbFields(e.value);
    error = { code: ef.find((x) => x.field === 1)?.value.toString() ?? "", retryAfterMs: Number(ef.find((x) => x.field === 3)?.value ?? 0) };
  }
  return { messages: f.filter((x) => x.field === 1).length, error };
}

// ---------------------------------------------------------------- a raw Socket.IO client that reads fast

/**
 * A Socket.IO client over a raw WebSocket that asks with acks and reads only
 * the head of each answer (a page of 100 long messages is 200 KB of
 * JSON: socket.io-client parsing it would make the attacker the slow one, and
 * the edge would cut it off for not reading). ask() resolves with "ok", the
 * error code (the edge's own per-socket refusal spelled out), "timeout" or
 * "closed".
 */
async function rawAsker(token) {
  const ws = new WebSocket(`${edge.wsBase}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  const waiting = new Map(); // ack id -> resolve
  let nextId = 1;
  let connected;
  const ready = new Promise((resolve, reject) => {
    connected = resolve;
    ws.once("error", reject);
    ws.once("close", () => reject(new Error("closed before the Socket.IO CONNECT")));
  });
  ws.on("error", () => {});
  ws.on("close", () => {
    for (const r of waiting.values()) r("closed");
    waiting.clear();
  });
  ws.on("message", (data) => {
    const head = data.subarray(0, 64).toString("latin1");
    if (head[0] === "0") ws.send(`40${JSON.stringify({ token })}`);
    else if (head.startsWith("40")) connected();
    else if (head === "2") ws.send("3");
    else {
      const m = /^43(\d+)\[\{"ok":(true|false)/.exec(head);
      if (!m) return; // events (presence:update)
      const r = waiting.get(Number(m[1]));
      waiting.delete(Number(m[1]));
      if (m[2] === "true") return r?.("ok");
      const { code, message } = JSON.parse(data.toString("utf8").slice(2 + m[1].length))[0].error;
      r?.(/too many events/.test(message) ? `the edge's per-socket limit: ${message}` : code);
    }
  });
  await withTimeout(ready, 5000, "a raw Socket.IO connection");
  return {
    ask(event, payload, ms = 6000) {
      const id = nextId++;
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          resolve("timeout");
        }, ms);
        waiting.set(id, (v) => {
          clearTimeout(timer);
          resolve(v);
        });
        ws.send(`42${id}${JSON.stringify([event, payload])}`);
      });
    },
    close: () => ws.terminate(),
  };
}

// ---------------------------------------------------------------- the history flood

describe("history flood: 16 sockets of one user asking 100-message pages of a 20,000-message conversation", () => {
  const FLOOD_SOCKETS = 16;
  const PER_SOCKET_PER_S = 25; // under the edge's 30 events/s per socket
  const FLOOD_MS = 8000;
  let svc;
  const flooder = makeUser("flooder");
  const partner = randomUUID(); // the other side of the long conversation, seeded in PostgreSQL
  let pageIds; // ids inside the conversation, for `before`

  before(async () => {
    svc = await messagingWith({}, "history-flood");
    pg.psql(
      `INSERT INTO messages (id, sender_id, recipient_id, type, content, created_at) ` +
        `SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN ${sqlStr(flooder.id)}::uuid ELSE ${sqlStr(partner)}::uuid END, ` +
        `CASE WHEN i % 2 = 0 THEN ${sqlStr(partner)}::uuid ELSE ${sqlStr(flooder.id)}::uuid END, 'text', repeat('x', 2000) || i, ` +
        `now() - (20000 - i) * interval '1 second' FROM generate_series(1, 20000) AS i`,
    );
    pageIds = pg.psql(`SELECT id FROM messages WHERE sender_id = ${sqlStr(flooder.id)} ORDER BY random() LIMIT 500`);
  });

  after(() => svc?.stop());

  test("another user's history answers within 1 s for 95% of its queries during the flood; the canary keeps chatting; afterwards everything answers at once; messaging's memory is back", { timeout: 90000 }, async () => {
    const timed = await connectAs(makeUser("timed"));
    const other = await connectAs(makeUser("other"));
    for (let i = 0; i < 3; i++) assert.equal((await emitAck(timed.socket, "message:send", { recipientId: other.user.id, content: `t${i}`, type: "text" })).ok, true);
    const floods = await Promise.all(Array.from({ length: FLOOD_SOCKETS }, () => rawAsker(flooder.token)));
    // Warm-up: the workers' connections and the pages' buffers exist before the baseline.
    for (const f of floods.slice(0, 4)) assert.equal(await f.ask("message:history", { withUserId: partner, limit: 100 }), "ok");
    const rssBefore = svc.rssKb();

    const chat = await canary();
    const outcomes = { ok: 0, rate_limited: 0, unavailable: 0, timeout: 0, other: [] };
    const pending = [];
    const end = Date.now() + FLOOD_MS;
    const flood = floods.map(async (f, k) => {
      for (let i = 0; Date.now() < end; i++) {
        const t0 = Date.now();
        const before = pageIds[(k * 997 + i * 31) % pageIds.length];
        pending.push(
          f.ask("message:history", { withUserId: partner, before, limit: 100 }).then((res) => {
            if (res in outcomes && res !== "other") outcomes[res]++;
            else outcomes.other.push(res);
          }),
        );
        await delay(Math.max(0, 1000 / PER_SOCKET_PER_S - (Date.now() - t0)));
      }
    });
    const latencies = [];
    const probe = (async () => {
      while (Date.now() < end) {
        const t0 = Date.now();
        const res = await emitAck(timed.socket, "message:history", { withUserId: other.user.id, limit: 50 }, 5000);
        latencies.push(res.ok && res.messages.length === 3 ? Date.now() - t0 : Infinity);
        await delay(Math.max(0, 100 - (Date.now() - t0)));
      }
    })();
    await Promise.all([...flood, probe]);
    await withTimeout(Promise.all(pending), 15000, "an answer to every flood query");
    const canaryLatencies = await chat.stop();

    const p95 = percentile(latencies, 95);
    const asked = outcomes.ok + outcomes.rate_limited + outcomes.unavailable + outcomes.timeout + outcomes.other.length;
    console.log(
      `# history flood: ${asked} queries from ${FLOOD_SOCKETS} sockets in ${FLOOD_MS} ms: ${JSON.stringify(outcomes)}; ` +
        `another user's history: ${latencies.length} queries, p50 ${percentile(latencies, 50)} ms, p95 ${p95} ms, max ${Math.max(...latencies)} ms; ` +
        `canary p95 ${percentile(canaryLatencies, 95)} ms${asan ? " (ASan)" : ""}`,
    );
    assert.deepEqual(outcomes.other, [], "every flood query is answered ok, rate_limited or unavailable (none by the edge's per-socket limit)");
    assert.ok(asked >= FLOOD_SOCKETS * PER_SOCKET_PER_S * (FLOOD_MS / 1000) * 0.6, `the flood asked ${asked} queries`);
    assert.ok(outcomes.rate_limited > 0, "the flooder was told rate_limited");
    // MESSAGING_HISTORY_PER_S (20/s, burst 40) bounds what the flooder gets answered.
    assert.ok(outcomes.ok <= 20 * (FLOOD_MS / 1000 + 2) + 40, `${outcomes.ok} flood queries answered`);
    assert.ok(latencies.length >= 20, `${latencies.length} probes`);
    assert.ok(p95 <= 1000, `another user's history: p95 ${p95} ms (latencies ${latencies.join(" ")})`);
    assert.ok(percentile(canaryLatencies, 95) <= 1000, `the canary's messages: p95 ${percentile(canaryLatencies, 95)} ms`);

    // After the flood: everyone is answered at once, nothing is queued.
    const text = await untilMetrics(svc, (t) => metric(t, "chat_messaging_history_queue") === 0, 5000, "an empty history queue");
    assert.ok(metric(text, 'chat_messaging_history_refused_total{reason="user_rate"}') > 0);
    await delay(2000); // the flooder's bucket refills (2 s at 20/s: full)
    const again = await connectAs(flooder);
    for (const [who, socket, withUserId] of [["the flooder", again.socket, partner], ["the other user", timed.socket, other.user.id]]) {
      const t0 = Date.now();
      const res = await emitAck(socket, "message:history", { withUserId, limit: 100 }, 3000);
      assert.equal(res.ok, true, `${who}: ${JSON.stringify(res).slice(0, 200)}`);
      assert.ok(Date.now() - t0 < 1000, `${who} answered in ${Date.now() - t0} ms`);
    }
    const rssAfter = svc.rssKb();
    console.log(`# history flood: messaging VmRSS ${rssBefore} kB before, ${rssAfter} kB after`);
    assert.ok(rssAfter - rssBefore < 32 * 1024, `messaging's RSS grew ${rssAfter - rssBefore} kB`);
    for (const f of floods) f.close();
    again.socket.close();
    timed.socket.close();
    other.socket.close();
  });
});

// ---------------------------------------------------------------- the history queue's bounds

describe("history queue: full, per user, and the asker's deadline (workers held by a locked table)", () => {
  let svc;
  let raw;
  let locker;

  before(async () => {
    svc = await messagingWith(
      { MESSAGING_HISTORY_CONNS: "2", MESSAGING_HISTORY_QUEUE: "3", MESSAGING_HISTORY_PER_USER: "2", MESSAGING_HISTORY_PER_S: "0" },
      "history-bounds",
    );
    raw = await rawNats(nats);
  });

  after(async () => {
    if (locker && locker.exitCode === null) locker.kill("SIGKILL");
    raw?.close();
    await svc?.stop();
  });

  test("2 workers held, 3 queued: the next query of a user with 2 waiting gets rate_limited at once, another user's unavailable at once; a queued query past its timeout is dropped unanswered; the rest is answered once the table is free", { timeout: 60000 }, async () => {
    // Another session holds the messages table: every history query waits.
    // (No canary here: nobody can chat through a locked table; these are the
    // bounds themselves, the attacks are in the other describes.)
    locker = spawn("psql", ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "postgres", "-tA", "-v", "ON_ERROR_STOP=1"], { stdio: ["pipe", "pipe", "pipe"] });
    const lockerExit = new Promise((resolve) => locker.once("close", resolve));
    let out = "";
    const locked = new Promise((resolve, reject) => {
      locker.stdout.on("data", (d) => (out += d) && out.includes("locked") && resolve());
      locker.once("close", (code) => reject(new Error(`psql exited (${code}) before the lock was held`)));
    });
    locked.catch(() => {});
    locker.stdin.write("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n");
    await withTimeout(locked, 5000, "the table lock");
    const [u1, u2, u3] = [randomUUID(), randomUUID(), randomUUID()];
    raw.publish("chat.query.messages", "_INBOX.raw.hold1", historyQuery({ userId: u1, withUserId: randomUUID(), timeoutMs: 20000 }));
    raw.publish("chat.query.messages", "_INBOX.raw.hold2", historyQuery({ userId: u2, withUserId: randomUUID(), timeoutMs: 20000 }));
    // Both workers are inside their SELECT, waiting for the lock.
    const deadline = Date.now() + 5000;
    while (Number(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT m.id%'")[0]) < 2) {
      assert.ok(Date.now() < deadline, "the two history queries did not reach PostgreSQL within 5 s");
      await delay(50);
    }
    // Queued: one raw query that gives up after 300 ms, and two of user v through the edge.
    raw.publish("chat.query.messages", "_INBOX.raw.expire", historyQuery({ userId: u3, withUserId: randomUUID(), timeoutMs: 300 }));
    const queuedAt = Date.now();
    const v = await connectAs(makeUser("v"));
    const w = await connectAs(makeUser("w"));
    const vQueued = [emitAck(v.socket, "message:history", { withUserId: w.user.id }, 20000), emitAck(v.socket, "message:history", { withUserId: w.user.id }, 20000)];
    await untilMetrics(svc, (t) => metric(t, "chat_messaging_history_queue") === 3, 3000, "3 queries queued");

    let t0 = Date.now();
    const busy = await emitAck(v.socket, "message:history", { withUserId: w.user.id }, 3000);
    assert.equal(busy.ok, false, JSON.stringify(busy));
    assert.equal(busy.error.code, "rate_limited", JSON.stringify(busy));
    assert.ok(Date.now() - t0 < 1000, `rate_limited after ${Date.now() - t0} ms`);
    t0 = Date.now();
    const full = await emitAck(w.socket, "message:history", { withUserId: v.user.id }, 3000);
    assert.equal(full.ok, false, JSON.stringify(full));
    assert.equal(full.error.code, "unavailable", JSON.stringify(full));
    assert.ok(Date.now() - t0 < 1000, `unavailable after ${Date.now() - t0} ms`);

    await delay(Math.max(0, 400 - (Date.now() - queuedAt))); // the 300 ms query's asker gives up meanwhile
    locker.stdin.end("COMMIT;\n");
    await withTimeout(lockerExit, 5000, "psql to end");

    const hold = await Promise.all([raw.reply("_INBOX.raw.hold1", 10000), raw.reply("_INBOX.raw.hold2", 10000)]);
    for (const r of hold) assert.deepEqual(messageList(r), { messages: 0, error: null });
    for (const r of await Promise.all(vQueued)) assert.deepEqual(r, { ok: true, messages: [] });
    const text = await untilMetrics(svc, (t) => metric(t, "chat_messaging_history_expired_total") >= 1, 5000, "the expired query counted");
    assert.equal(metric(text, "chat_messaging_history_expired_total"), 1);
    assert.equal(metric(text, 'chat_messaging_history_refused_total{reason="user_busy"}'), 1);
    assert.equal(metric(text, 'chat_messaging_history_refused_total{reason="queue_full"}'), 1);
    // The dropped query got no answer: u3's next query is answered on its own inbox, and the old one is still silent.
    raw.publish("chat.query.messages", "_INBOX.raw.after", historyQuery({ userId: u3, withUserId: randomUUID(), timeoutMs: 5000 }));
    assert.deepEqual(messageList(await raw.reply("_INBOX.raw.after", 5000)), { messages: 0, error: null });
    assert.equal(raw.replies.get("_INBOX.raw.expire"), undefined, "no answer to the query whose asker had given up");
    v.socket.close();
    w.socket.close();
  });
});

// ---------------------------------------------------------------- send quotas

describe("send quota per minute: MESSAGING_SENDS_PER_MIN=30 (one more every 2 s once used up)", () => {
  const PER_MIN = 30;
  let svc;
  before(async () => {
    svc = await messagingWith({ MESSAGING_SENDS_PER_MIN: String(PER_MIN), MESSAGING_SENDS_PER_DAY: "0" }, "quota-minute");
  });
  after(() => svc?.stop());

  test("four sockets of one user send 120 messages at once: 30 stored (plus what refilled meanwhile), the rest rate_limited with retryAfterMs in the ack and in chat:error; the hint is right; the canary and other users are not affected", { timeout: 60000 }, async () => {
    const spammer = makeUser("spammer");
    const target = await connectAs(makeUser("target"));
    const socks = await Promise.all([0, 1, 2, 3].map(() => connectAs(spammer)));
    const received = [];
    target.socket.on("message:received", (m) => received.push(m));
    const rssBefore = svc.rssKb();
    const chat = await canary();
    const t0 = Date.now();
    const acks = await Promise.all(
      socks.flatMap((s, k) => Array.from({ length: 30 }, (_, i) => emitAck(s.socket, "message:send", { recipientId: target.user.id, content: `spam ${k}-${i}`, type: "text" }))),
    );
    const elapsedMs = Date.now() - t0;
    const ok = acks.filter((r) => r.ok);
    const limited = acks.filter((r) => !r.ok && r.error?.code === "rate_limited");
    assert.equal(ok.length + limited.length, 120, `every send answered ok or rate_limited: ${JSON.stringify(acks.filter((r) => !r.ok && r.error?.code !== "rate_limited")).slice(0, 300)}`);
    const refilled = Math.ceil((elapsedMs / 60000) * PER_MIN) + 1;
    assert.ok(ok.length >= PER_MIN && ok.length <= PER_MIN + refilled, `${ok.length} stored in ${elapsedMs} ms`);
    for (const r of limited) {
      assert.deepEqual(Object.keys(r.error).sort(), ["code", "message", "retryAfterMs"]);
      assert.ok(Number.isInteger(r.error.retryAfterMs) && r.error.retryAfterMs > 0 && r.error.retryAfterMs <= 60000 / PER_MIN + 1, `retryAfterMs ${r.error.retryAfterMs}`);
    }
    assert.equal(countRows(`sender_id = ${sqlStr(spammer.id)}`), ok.length, "only the accepted sends are stored");

    // Without an ack: chat:error with the hint; nothing stored, nothing delivered.
    socks[0].socket.emit("message:send", { recipientId: target.user.id, content: "no ack", type: "text" });
    let err;
    await withTimeout(
      (async () => {
        for (;;) {
          const e = await socks[0].rec.next(5000, "chat:error");
          if (e.event === "chat:error") return (err = e.args[0]);
        }
      })(),
      5000,
      "chat:error for the send without an ack",
    );
    assert.equal(err.event, "message:send");
    assert.equal(err.code, "rate_limited");
    assert.ok(Number.isInteger(err.retryAfterMs) && err.retryAfterMs > 0 && err.retryAfterMs <= 60000 / PER_MIN + 1, JSON.stringify(err));

    // The hint is right: before it, still refused; after it, accepted.
    const hinted = await emitAck(socks[1].socket, "message:send", { recipientId: target.user.id, content: "probe", type: "text" });
    assert.equal(hinted.error?.code, "rate_limited", JSON.stringify(hinted));
    await delay(hinted.error.retryAfterMs + 50);
    const later = await emitAck(socks[1].socket, "message:send", { recipientId: target.user.id, content: "after the hint", type: "text" });
    assert.equal(later.ok, true, JSON.stringify(later));
    // Another user is not affected by the spammer's budget.
    assert.equal((await emitAck(target.socket, "message:send", { recipientId: spammer.id, content: "hi", type: "text" })).ok, true);
    const latencies = await chat.stop();
    // The target got exactly the accepted messages.
    await withTimeout(
      (async () => {
        while (received.length < ok.length + 1) await delay(20);
      })(),
      5000,
      "the accepted messages delivered",
    );
    assert.deepEqual(new Set(received.map((m) => m.id)), new Set([...ok.map((r) => r.message.id), later.message.id]));
    const text = await svc.metrics();
    assert.ok(metric(text, 'chat_messaging_sends_refused_total{reason="quota"}') >= limited.length + 2);
    const rssAfter = svc.rssKb();
    console.log(`# send quota: ${ok.length} of 120 stored in ${elapsedMs} ms; canary p95 ${percentile(latencies, 95)} ms; messaging VmRSS ${rssBefore} → ${rssAfter} kB`);
    assert.ok(rssAfter - rssBefore < 16 * 1024, `messaging's RSS grew ${rssAfter - rssBefore} kB`);
    for (const s of [...socks, target]) s.socket.close();
  });

  test("a resend (same clientMessageId) of a stored message gets it back even while the budget is used up", async () => {
    const user = await connectAs(makeUser("resender"));
    const target = await connectAs(makeUser("target2"));
    const payload = { recipientId: target.user.id, content: "keep", type: "text", clientMessageId: "keep-1" };
    const first = await emitAck(user.socket, "message:send", payload);
    assert.equal(first.ok, true);
    const burst = await Promise.all(Array.from({ length: PER_MIN }, (_, i) => emitAck(user.socket, "message:send", { ...payload, clientMessageId: `fill-${i}` })));
    assert.ok(burst.some((r) => r.error?.code === "rate_limited"), "the budget is used up");
    assert.deepEqual(await emitAck(user.socket, "message:send", payload), first);
    assert.equal(countRows(`sender_id = ${sqlStr(user.user.id)} AND client_message_id = 'keep-1'`), 1);
    user.socket.close();
    target.socket.close();
  });
});

describe("send quota per day: MESSAGING_SENDS_PER_DAY=8, across a kill -9 of messaging", () => {
  const env = { MESSAGING_SENDS_PER_MIN: "0", MESSAGING_SENDS_PER_DAY: "8", MESSAGING_ACK_WAIT_MS: "1000" };
  let svc;
  before(async () => {
    svc = await messagingWith(env, "quota-day-1");
  });
  after(() => svc?.stop());

  test("4 sends, kill -9, restart: 4 more are accepted, the 9th gets rate_limited until midnight UTC; the count is in message_quota", { timeout: 60000 }, async () => {
    const sender = await connectAs(makeUser("daily"));
    const target = await connectAs(makeUser("target3"));
    const chat = await canary(1000); // slowly: the canary's users have 8 a day too
    const send = (i) => emitAck(sender.socket, "message:send", { recipientId: target.user.id, content: `d${i}`, type: "text", clientMessageId: `d-${i}` }, 15000);
    for (let i = 1; i <= 4; i++) assert.equal((await send(i)).ok, true, `send ${i}`);
    // JetStream has the acks of all four and of the canary's messages (else a
    // redelivery would ack one twice: allowed, but not this test's point).
    await withTimeout(chat.pause(), 5000, "the canary between two messages");
    const raw = await rawNats(nats);
    try {
      const deadline = Date.now() + 5000;
      for (;;) {
        const infos = await Promise.all(Array.from({ length: 8 }, (_, p) => raw.jsApi(`$JS.API.CONSUMER.INFO.CHAT_CMD.messaging-send-${p}`)));
        if (infos.every((i) => i.num_ack_pending === 0 && i.num_pending === 0)) break;
        assert.ok(Date.now() < deadline, `commands still pending: ${JSON.stringify(infos.map((i) => [i.num_pending, i.num_ack_pending]))}`);
        await delay(50);
      }
    } finally {
      raw.close();
    }
    const r = await svc.stop("SIGKILL");
    assert.equal(r.signal, "SIGKILL");
    svc = await messagingWith(env, "quota-day-2");
    chat.resume();
    for (let i = 5; i <= 8; i++) assert.equal((await send(i)).ok, true, `send ${i} after the restart`);
    const refused = await send(9);
    assert.equal(refused.error?.code, "rate_limited", JSON.stringify(refused));
    const now = new Date();
    const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
    assert.ok(Math.abs(refused.error.retryAfterMs - (midnight - Date.now())) < 10000, `retryAfterMs ${refused.error.retryAfterMs}, midnight UTC in ${midnight - Date.now()} ms`);
    assert.equal(countRows(`sender_id = ${sqlStr(sender.user.id)}`), 8);
    assert.deepEqual(pg.psql(`SELECT n FROM message_quota WHERE sender_id = ${sqlStr(sender.user.id)}`), ["8"]);
    await chat.stop();
    sender.socket.close();
    target.socket.close();
  });
});

// ---------------------------------------------------------------- known recipients

describe("known recipients: MESSAGING_REQUIRE_KNOWN_RECIPIENT=1 (the default)", () => {
  let svc;
  before(async () => {
    svc = await messagingWith({}, "known");
  });
  after(() => svc?.stop());

  test("a never-seen uuid → not_found (ack and chat:error), nothing stored; a user who connected once → stored; one who connects later can be messaged then", async () => {
    const a = await connectAs(makeUser("alice"));
    const b = await connectAs(makeUser("bob"));
    const nobody = randomUUID();
    const res = await emitAck(a.socket, "message:send", { recipientId: nobody, content: "hello?", type: "text" });
    assert.deepEqual(res, { ok: false, error: { code: "not_found", message: "no such user" } });
    a.socket.emit("message:send", { recipientId: nobody.toUpperCase(), content: "hello??", type: "text" });
    const e = await a.rec.next(5000, "chat:error");
    assert.deepEqual(e, { event: "chat:error", args: [{ event: "message:send", code: "not_found", message: "no such user" }] });
    assert.equal(countRows(`recipient_id = ${sqlStr(nobody)}`), 0);
    const ok = await emitAck(a.socket, "message:send", { recipientId: b.user.id, content: "hi bob", type: "text" });
    assert.equal(ok.ok, true, JSON.stringify(ok));
    // Bob goes offline: still known.
    b.socket.close();
    assert.equal((await emitAck(a.socket, "message:send", { recipientId: b.user.id, content: "offline bob", type: "text" })).ok, true);
    // Carol has never connected: refused; once she has, accepted (nothing is cached as unknown).
    const carol = makeUser("carol");
    assert.equal((await emitAck(a.socket, "message:send", { recipientId: carol.id, content: "carol?", type: "text" })).error?.code, "not_found");
    const c = await connectAs(carol);
    assert.equal((await emitAck(a.socket, "message:send", { recipientId: carol.id, content: "carol!", type: "text" })).ok, true);
    assert.equal(countRows(`sender_id = ${sqlStr(a.user.id)}`), 3);
    a.socket.close();
    c.socket.close();
  });

  test("a flood of 400 sends to ids nobody used, from 4 sockets: every one not_found, none stored; the canary keeps chatting; messaging's memory stays", { timeout: 60000 }, async () => {
    const spammer = makeUser("spammer2");
    const socks = await Promise.all([0, 1, 2, 3].map(() => connectAs(spammer)));
    // Warm-up: the known-id cache and the batch statements exist before the baseline.
    await Promise.all(socks.map((s) => emitAck(s.socket, "message:send", { recipientId: randomUUID(), content: "x", type: "text" })));
    const rssBefore = svc.rssKb();
    const chat = await canary();
    const acks = [];
    for (let round = 0; round < 4; round++) {
      // 25 per socket at once (the edge's burst is 60), then a pause (its rate is 30/s)
      acks.push(...(await Promise.all(socks.flatMap((s) => Array.from({ length: 25 }, () => emitAck(s.socket, "message:send", { recipientId: randomUUID(), content: "x".repeat(1000), type: "text" }))))));
      await delay(900);
    }
    const latencies = await chat.stop();
    assert.equal(acks.length, 400);
    assert.deepEqual([...new Set(acks.map((r) => r.error?.code ?? JSON.stringify(r)))], ["not_found"]);
    assert.equal(countRows(`sender_id = ${sqlStr(spammer.id)}`), 0);
    const rssAfter = svc.rssKb();
    console.log(`# unknown recipients: 400 refused; canary p95 ${percentile(latencies, 95)} ms; messaging VmRSS ${rssBefore} → ${rssAfter} kB`);
    assert.ok(percentile(latencies, 95) <= 1000, `the canary's messages: p95 ${percentile(latencies, 95)} ms`);
    assert.ok(rssAfter - rssBefore < 16 * 1024, `messaging's RSS grew ${rssAfter - rssBefore} kB`);
    const text = await svc.metrics();
    assert.ok(metric(text, 'chat_messaging_sends_refused_total{reason="unknown_recipient"}') >= 400);
    for (const s of socks) s.socket.close();
  });
});

// ---------------------------------------------------------------- JetStream limits

describe("JetStream limits: CHAT_EVENTS (age, size) and CHAT_CMD (size) are messaging's", () => {
  let raw;
  before(async () => {
    raw = await rawNats(nats);
  });
  after(() => raw?.close());

  const config = async (stream) => {
    const info = await raw.jsApi(`$JS.API.STREAM.INFO.${stream}`);
    assert.equal(info.error, undefined, JSON.stringify(info.error));
    return info;
  };

  test("applied at start, changed on a restart with other values, left alone by an edge that starts later; CHAT_EVENTS keeps no more than its size", { timeout: 60000 }, async () => {
    let svc = await messagingWith({ CHAT_EVENTS_MAX_AGE_S: "3600", CHAT_EVENTS_MAX_BYTES: "30000", CHAT_CMD_MAX_BYTES: "20000000", MESSAGING_SENDS_PER_MIN: "0" }, "streams-1");
    let ev = (await config("CHAT_EVENTS")).config;
    let cmd = (await config("CHAT_CMD")).config;
    assert.deepEqual([ev.max_age, ev.max_bytes, ev.discard], [3600e9, 30000, "old"]);
    assert.deepEqual([cmd.max_bytes, cmd.discard], [20000000, "new"]);

    // Enforced: 60 taps of ~1 KB do not fit in 30,000 bytes; the oldest go. The canary chats meanwhile.
    const chat = await canary();
    const a = await connectAs(makeUser("tapper"));
    const b = await connectAs(makeUser("tapped"));
    for (let i = 0; i < 3; i++) {
      const acks = await Promise.all(Array.from({ length: 20 }, (_, k) => emitAck(a.socket, "message:send", { recipientId: b.user.id, content: `${i}-${k} `.padEnd(1000, "t"), type: "text" })));
      assert.ok(acks.every((r) => r.ok), JSON.stringify(acks.find((r) => !r.ok)));
      await delay(700); // the edge's per-socket rate
    }
    await chat.stop();
    const state = (await config("CHAT_EVENTS")).state;
    assert.ok(state.bytes <= 30000, `CHAT_EVENTS holds ${state.bytes} bytes`);
    assert.ok(state.first_seq > 1, "the oldest taps were removed");
    a.socket.close();
    b.socket.close();

    await svc.stop();
    svc = await messagingWith({ CHAT_EVENTS_MAX_AGE_S: "7200", CHAT_EVENTS_MAX_BYTES: "50000000", CHAT_CMD_MAX_BYTES: "30000000" }, "streams-2");
    ev = (await config("CHAT_EVENTS")).config;
    cmd = (await config("CHAT_CMD")).config;
    assert.deepEqual([ev.max_age, ev.max_bytes], [7200e9, 50000000]);
    assert.equal(cmd.max_bytes, 30000000);
    assert.match(svc.child.output, /stream CHAT_EVENTS updated max_bytes=30000->50000000 max_age_s=3600->7200/);

    const late = await startEdge({ nats, name: "streams-late-edge", env: EDGE_DEFAULTS });
    await late.child.waitForLine(/jetstream streams ready/, 10000, "the edge's stream check");
    ev = (await config("CHAT_EVENTS")).config;
    cmd = (await config("CHAT_CMD")).config;
    assert.deepEqual([ev.max_age, ev.max_bytes, cmd.max_bytes], [7200e9, 50000000, 30000000], "the edge changed nothing");
    await late.stop();
    await svc.stop();
  });

  test("CHAT_CMD full while messaging is away: new sends get unavailable at once, the queued ones are kept and stored when it is back", { timeout: 60000 }, async () => {
    let svc = await messagingWith({ CHAT_CMD_MAX_BYTES: "6000" }, "cmd-full-1");
    assert.equal((await config("CHAT_CMD")).config.max_bytes, 6000);
    await svc.stop(); // nobody consumes CHAT_CMD now
    const a = await connectAs(makeUser("queued"));
    const b = await connectAs(makeUser("queued-to"));
    const results = [];
    const acks = [];
    for (let i = 0; i < 12; i++) {
      acks.push(emitAck(a.socket, "message:send", { recipientId: b.user.id, content: `${i} `.padEnd(1000, "q"), type: "text", clientMessageId: `q-${i}` }, 30000).then((r) => results.push([i, r])));
    }
    await withTimeout(
      (async () => {
        while (!results.some(([, r]) => r.error?.code === "unavailable")) await delay(20);
      })(),
      5000,
      "an unavailable for a send that does not fit",
    );
    const state = (await config("CHAT_CMD")).state;
    assert.ok(state.bytes <= 6000 && state.messages >= 1, `CHAT_CMD holds ${state.messages} commands, ${state.bytes} bytes`);
    svc = await messagingWith({}, "cmd-full-2"); // the default size again
    await withTimeout(Promise.all(acks), 20000, "an answer to every send");
    const ok = results.filter(([, r]) => r.ok).map(([i]) => i);
    const refused = results.filter(([, r]) => r.error?.code === "unavailable").map(([i]) => i);
    assert.equal(ok.length + refused.length, 12, JSON.stringify(results));
    assert.equal(ok.length, state.messages, "every queued command was stored");
    assert.deepEqual(pg.psql(`SELECT client_message_id FROM messages WHERE sender_id = ${sqlStr(a.user.id)} ORDER BY created_at`), ok.map((i) => `q-${i}`));
    assert.equal((await config("CHAT_CMD")).config.max_bytes, 2 ** 30);
    a.socket.close();
    b.socket.close();
    await svc.stop();
  });

  test("streams made by an older version (no size limit, CHAT_CMD dropping its oldest) are updated to the defaults", { timeout: 60000 }, async () => {
    const own = await startNats();
    const ownRaw = await rawNats(own);
    try {
      for (const [name, subject, retention] of [["CHAT_CMD", "chat.cmd.>", "workqueue"], ["CHAT_EVENTS", "chat.event.>", "limits"]]) {
        const r = await ownRaw.jsApi(`$JS.API.STREAM.CREATE.${name}`, { name, subjects: [subject], storage: "file", retention, duplicate_window: 120e9, max_age: 7 * 86400e9, discard: "old" });
        assert.equal(r.error, undefined, JSON.stringify(r.error));
      }
      const svc = await startMessaging({ nats: own, pg, name: "streams-old", env: MESSAGING_DEFAULTS });
      const ev = (await ownRaw.jsApi("$JS.API.STREAM.INFO.CHAT_EVENTS")).config;
      const cmd = (await ownRaw.jsApi("$JS.API.STREAM.INFO.CHAT_CMD")).config;
      assert.deepEqual([ev.max_age, ev.max_bytes, ev.discard], [7 * 86400e9, 4 * 2 ** 30, "old"]);
      assert.deepEqual([cmd.max_bytes, cmd.discard], [2 ** 30, "new"]);
      await svc.stop();
    } finally {
      ownRaw.close();
      await own.destroy();
    }
  });
});

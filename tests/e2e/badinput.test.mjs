// Bad input against the running stack (nats-server, PostgreSQL, chat-messaging,
// chat-presence, one chat-edge with its default limits): a table of cases, each
// row {name, send, expect}. `send` says how the input travels (a raw WebSocket
// after or before the Socket.IO CONNECT, a raw TCP WebSocket for framing
// faults, raw HTTP long-polling, a raw CONNECT with a token, raw HTTP);
// `expect` is the documented outcome (README "Acks" / "Connecting a client"):
//   - protocol-level bad input (undecodable, a packet before CONNECT, a second
//     CONNECT, reserved names, attachment lies, over EDGE_MAX_PAYLOAD, invalid
//     UTF-8, WebSocket framing faults) closes the connection, and nothing is
//     sent before the close;
//   - chat-level bad input gets chat:error {event, code, message} (or the
//     ack's {ok:false, error}) and the connection keeps working (a marker ack
//     on the same connection);
//   - a bad token gets exactly CONNECT_ERROR {"message":"unauthorized"};
//   - long-polling misuse gets its Engine.IO HTTP error (400 {code, message},
//     411, 413), or ends the session.
// After every case: a healthy control pair (alice and bob, socket.io-client
// over WebSocket) still relays both ways, bob's and alice's next events are
// exactly the control relays (nothing of the bad input reached them), the
// edge is running, and the `messages` table (rows and their contents and
// read_at) did not change. None of the rows is a valid send.
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { spawn, execFileSync } from "node:child_process";
import { randomUUID, randomBytes } from "node:crypto";
import { before, after, describe } from "node:test";
import {
  test,
  startNats,
  startPostgres,
  startMessaging,
  startPresence,
  startEdge,
  connectClient,
  openSession,
  openPolling,
  rawHttp,
  httpRequest,
  shutdown,
  withTimeout,
  delay,
  sessionTag,
} from "./harness.mjs";
import { makeUser, mintToken, nowSec, b64url, signRaw } from "./tokens.mjs";

// The edge's defaults (README, Configuration), which this file relies on.
const MAX_PAYLOAD = 1000000; // EDGE_MAX_PAYLOAD
const MAX_MESSAGE_BYTES = 10000; // EDGE_MAX_MESSAGE_BYTES
const MAX_GHOST_TEXT = 2000; // EDGE_MAX_GHOST_TEXT
const MAX_PRESENCE_QUERY = 500; // EDGE_MAX_PRESENCE_QUERY
const HOLD_WINDOW = 150; // harness convention: time for the edge to take in a request that gives no signal
// Messaging's per-user limits at their defaults (README, Abuse limits; the harness lifts them).
const MESSAGING_DEFAULTS = {
  MESSAGING_HISTORY_PER_USER: "16",
  MESSAGING_HISTORY_PER_S: "20",
  MESSAGING_SENDS_PER_MIN: "120",
  MESSAGING_SENDS_PER_DAY: "10000",
  MESSAGING_REQUIRE_KNOWN_RECIPIENT: "1",
};

let nats;
let pg;
let edge;
let alice; // control pair
let bob;
const mallory = makeUser("mallory"); // the user of every raw connection
const A = makeUser("alice");
const B = makeUser("bob");
let stored; // the message alice sent bob in before(): a real id for message:read cases
let cleanups = []; // closers of the raw clients of the running case

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  await Promise.all([startMessaging({ nats, pg, env: MESSAGING_DEFAULTS }), startPresence({ nats, pg })]);
  // Explicit: the defaults of EDGE_MAX_* above; the abuse limits off (one
  // address sends every case, abuse.test.mjs covers them).
  edge = await startEdge({
    nats,
    name: "badinput-edge",
    env: {
      EDGE_MAX_PAYLOAD: String(MAX_PAYLOAD),
      EDGE_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
      EDGE_MAX_GHOST_TEXT: String(MAX_GHOST_TEXT),
      EDGE_MAX_PRESENCE_QUERY: String(MAX_PRESENCE_QUERY),
    },
  });
  alice = await connectClient(edge.url, A.token);
  bob = await connectClient(edge.url, B.token);
  const res = await alice.socket.timeout(5000).emitWithAck("message:send", { recipientId: B.id, content: "the one valid message", type: "text", clientMessageId: "setup-1" });
  assert.equal(res.ok, true, JSON.stringify(res));
  stored = res.message;
  assert.equal((await alice.rec.next(5000, "message:sent")).event, "message:sent");
  assert.equal((await bob.rec.next(5000, "message:received")).event, "message:received");
});

after(() => {
  db?.close();
  return shutdown();
});

// ---------------------------------------------------------------- checks run after every case

/**
 * One psql process for the whole file (pg.psql spawns one per statement,
 * ~80 ms; this file asks twice per case). query(sql) resolves with the rows.
 */
class Psql {
  constructor(db) {
    const bin = path.join(execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim(), "psql");
    this.proc = spawn(bin, ["-h", "127.0.0.1", "-p", String(db.port), "-U", "postgres", "-d", "postgres", "-tA", "-q"], { stdio: ["pipe", "pipe", "pipe"] });
    this.out = "";
    this.err = "";
    this.waiter = null;
    this.proc.stdout.on("data", (d) => {
      this.out += d;
      this.waiter?.();
    });
    this.proc.stderr.on("data", (d) => (this.err += d));
    this.proc.on("close", () => this.waiter?.());
  }

  query(sql) {
    const mark = `__end_${randomUUID()}__`;
    this.proc.stdin.write(`${sql};\n\\echo ${mark}\n`);
    return withTimeout(
      new Promise((resolve, reject) => {
        this.waiter = () => {
          const i = this.out.indexOf(mark + "\n");
          if (i >= 0) {
            const rows = this.out.slice(0, i).split("\n").filter((l) => l !== "");
            this.out = this.out.slice(i + mark.length + 1);
            this.waiter = null;
            if (this.err) reject(new Error(`psql: ${this.err}`));
            else resolve(rows);
          } else if (this.proc.exitCode !== null) reject(new Error(`psql exited: ${this.err}`));
        };
        this.waiter();
      }),
      5000,
      `psql: ${sql.slice(0, 60)}`,
    );
  }

  close() {
    this.proc.stdin.end();
  }
}
let db;

/** The messages table: count and a digest of every row (ids, contents, read_at). */
async function snapshot() {
  db ??= new Psql(pg);
  const [row] = await db.query(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(id::text || sender_id || recipient_id || type || content || coalesce(client_message_id, '-') || created_at || coalesce(read_at::text, '-'), ',' ORDER BY id)), '') FROM messages",
  );
  return row;
}

let controls = 0;

/** Events of rec up to the one that matches: every event before it is a stray (returned). */
async function upTo(rec, match, what) {
  const strays = [];
  for (;;) {
    const e = await rec.next(3000, what);
    if (match(e)) return strays;
    strays.push(e);
  }
}

/**
 * The control pair relays both ways (ghost:typing with a text unique to this
 * check), and those relays are the next events each of them gets: anything
 * before them came from the bad input. Strays are consumed, so a failed case
 * does not spill into the next one.
 */
async function control(what) {
  assert.equal(edge.child.exited, false, `the edge is running (exit code ${edge.child.exitCode}, signal ${edge.child.exitSignal})`);
  const n = ++controls;
  alice.socket.emit("ghost:typing", { recipientId: B.id, text: `control ${n}` });
  const toBob = await upTo(bob.rec, (e) => e.event === "ghost:typing" && e.args[0]?.text === `control ${n}`, `the control relay alice → bob after ${what}`);
  assert.deepEqual(await bob.socket.timeout(3000).emitWithAck("ghost:typing", { recipientId: A.id, text: `control ${n}` }), { ok: true }, "bob's ack");
  const toAlice = await upTo(alice.rec, (e) => e.event === "ghost:typing" && e.args[0]?.text === `control ${n}`, `the control relay bob → alice after ${what}`);
  assert.deepEqual(toBob, [], "bob's next event is the control relay: nothing of the bad input reached him");
  assert.deepEqual(toAlice, [], "alice's next event is the control relay: nothing of the bad input reached her");
}

// ---------------------------------------------------------------- raw clients

// Frames about presence (the raw user's own session comes and goes) are not part of any outcome.
const NOISE = /^42\["(user:status|presence:update)",/;
const isNoise = (f) => f.text !== undefined && NOISE.test(f.text);

/** The next frame of a RawClient that is not presence noise. */
async function nextFrame(c, ms = 3000, what = "the next frame") {
  for (;;) {
    const f = await c.next(ms, what);
    if (!isNoise(f)) return f;
  }
}

/** A raw WebSocket session, CONNECTed as mallory unless connected is false. */
async function wsSession(connected) {
  const { client, open } = await openSession(edge);
  cleanups.push(() => client.close());
  if (connected) {
    client.send("40" + JSON.stringify({ token: mallory.token }));
    const reply = (await nextFrame(client, 3000, "the CONNECT reply")).text;
    assert.match(reply, /^40\{"sid":"[^"]+"(,"pid":"[A-Za-z0-9_-]{103}")?\}$/, "CONNECT accepted");
  }
  return { client, sid: open.sid };
}

/** A minimal RFC 6455 client over TCP, for frames the ws library will not send. */
class TcpWs {
  constructor(port) {
    this.sock = net.connect({ host: "127.0.0.1", port });
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.upgraded = false;
    this.closed = false;
    this.waiters = [];
    this.sock.on("error", () => {});
    this.sock.on("close", () => {
      this.closed = true;
      this.wake();
    });
    this.sock.on("connect", () => {
      this.sock.write(`GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    this.sock.on("data", (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
      this.wake();
    });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  parse() {
    if (!this.upgraded) {
      const i = this.buf.indexOf("\r\n\r\n");
      if (i < 0) return;
      this.status = Number(/^HTTP\/1\.1 (\d+)/.exec(this.buf.subarray(0, i).toString())?.[1]);
      this.buf = this.buf.subarray(i + 4);
      this.upgraded = true;
    }
    for (;;) {
      if (this.buf.length < 2) return;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) return;
      const op = this.buf[0] & 0x0f;
      const data = this.buf.subarray(off, off + len);
      this.frames.push(op === 8 ? { close: data.length >= 2 ? data.readUInt16BE(0) : null } : { op, text: data.toString() });
      this.buf = this.buf.subarray(off + len);
    }
  }

  /** Resolves true once pred() holds, false after ms. */
  async until(pred, ms) {
    const end = Date.now() + ms;
    while (!pred()) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return true;
  }

  /** The next text frame not yet read (presence noise skipped). */
  async nextText(ms, what) {
    this.cursor ??= 0;
    for (;;) {
      const ok = await this.until(() => this.cursor < this.frames.length || this.closed, ms);
      if (this.cursor < this.frames.length) {
        const f = this.frames[this.cursor++];
        if (f.text !== undefined && NOISE.test(f.text)) continue;
        if (f.text === undefined) throw new Error(`expected ${what}, got ${JSON.stringify(f)}`);
        return f.text;
      }
      throw new Error(ok ? `connection closed while waiting for ${what}` : `timed out after ${ms} ms waiting for ${what}`);
    }
  }

  write(b) {
    this.sock.write(b);
  }

  destroy() {
    this.sock.destroy();
  }
}

/** One WebSocket frame (masked unless mask is false); lenBytes forces the length field. */
function wsFrame(opcode, payload = "", { fin = true, mask = true, rsv = 0, lenBytes } = {}) {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  let hdr;
  if (lenBytes) hdr = Buffer.concat([Buffer.from([0, 0]), lenBytes]);
  else if (p.length < 126) (hdr = Buffer.alloc(2)), (hdr[1] = p.length);
  else if (p.length < 65536) (hdr = Buffer.alloc(4)), (hdr[1] = 126), hdr.writeUInt16BE(p.length, 2);
  else (hdr = Buffer.alloc(10)), (hdr[1] = 127), hdr.writeBigUInt64BE(BigInt(p.length), 2);
  if (lenBytes) hdr[1] = lenBytes.length === 2 ? 126 : 127;
  hdr[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  if (!mask) return Buffer.concat([hdr, p]);
  hdr[1] |= 0x80;
  const key = randomBytes(4);
  const m = Buffer.from(p);
  for (let i = 0; i < m.length; i++) m[i] ^= key[i % 4];
  return Buffer.concat([hdr, key, m]);
}
const TEXT = 1;
const BINARY = 2;
const CLOSE_OP = 8;
const PING = 9;

/** A raw TCP WebSocket session CONNECTed as mallory; returns {client, sid}. */
async function tcpSession() {
  const c = new TcpWs(edge.port);
  cleanups.push(() => c.destroy());
  const open = await c.nextText(3000, "the open packet");
  assert.match(open, /^0\{/);
  c.write(wsFrame(TEXT, "40" + JSON.stringify({ token: mallory.token })));
  assert.match(await c.nextText(3000, "the CONNECT reply"), /^40\{"sid":/);
  return { client: c, sid: JSON.parse(open.slice(1)).sid };
}

/** The next packet of a PollingClient that is not presence noise. */
async function nextPacket(c, ms = 3000, what = "the next packet") {
  for (;;) {
    const p = await c.next(ms, what);
    if (typeof p === "string" && NOISE.test(p)) continue;
    return p;
  }
}

/** A raw long-polling session, CONNECTed as mallory unless connected is false. */
async function pollSession(connected) {
  const { client } = await openPolling(edge);
  cleanups.push(() => client.close());
  if (connected) {
    await client.send("40" + JSON.stringify({ token: mallory.token }));
    assert.match(await nextPacket(client, 3000, "the CONNECT reply"), /^40\{"sid":/);
  }
  return { client, sid: client.sid };
}

// ---------------------------------------------------------------- how a case is sent

// frames: a string (text frame), {bin: Buffer} (binary frame), {raw: Buffer}
// (these bytes as a text frame, unchecked), {frags: [strings]} (one message
// in fragments); a function of nothing returning any of these.
const ws = (...frames) => ({ via: "ws", connected: true, frames });
const wsPre = (...frames) => ({ via: "ws", connected: false, frames });
const tcp = (bytes, { end = false } = {}) => ({ via: "tcp", bytes, end }); // bytes: () => Buffer, written after the CONNECT
const poll = (...bodies) => ({ via: "poll", connected: true, bodies });
const pollPre = (...bodies) => ({ via: "poll", connected: false, bodies });
const connectAs = (payload) => ({ via: "connect", payload }); // payload: () => the text after "40"
const http = (fn) => ({ via: "http", fn }); // fn() → {status, text} (may also assert)

// ---------------------------------------------------------------- what must come back

const CLOSE = { kind: "close" }; // the connection is closed, nothing sent before
const closeCode = (code) => ({ kind: "close", code }); // ... with this WebSocket close code
const chatError = (event, code) => ({ kind: "chat:error", event, code });
const ackError = (id, code) => ({ kind: "ack", id, code });
const ackOk = (id) => ({ kind: "ack-ok", id });
const UNAUTHORIZED = { kind: "connect_error", message: "unauthorized" };
const httpError = (status, body) => ({ kind: "http", status, body });
const pollEnds = (postStatus) => ({ kind: "poll-ends", postStatus }); // the POST's status, then the session is over
const SESSION_ENDS = { kind: "session-ends" }; // (tcp) the edge ends the session (its log), nothing is relayed

function describeExpect(e) {
  switch (e.kind) {
    case "close":
      return e.code ? `closed with ${e.code}` : "connection closed";
    case "chat:error":
      return `chat:error {event: ${JSON.stringify(e.event)}, code: ${e.code}}`;
    case "ack":
      return `ack {ok:false, error:{code: ${e.code}}}`;
    case "ack-ok":
      return "ack {ok:true}";
    case "connect_error":
      return `CONNECT_ERROR {message: ${JSON.stringify(e.message)}}`;
    case "http":
      return `HTTP ${e.status}${e.body ? " " + JSON.stringify(e.body) : ""}`;
    case "poll-ends":
      return `POST ${e.postStatus}, then the session is over`;
    case "session-ends":
      return "the session ends, nothing relayed";
  }
  return e.kind;
}

const ERR = (code) => JSON.stringify({ code, message: ["Transport unknown", "Session ID unknown", "Bad handshake method", "Bad request", "Forbidden", "Unsupported protocol version"][code] });

// ---------------------------------------------------------------- the table

const uuid = () => randomUUID();
const ev = (name, payload, ack = "") => `42${ack}${JSON.stringify(payload === undefined ? [name] : [name, payload])}`;
const send = (over = {}) => ({ recipientId: B.id, content: "hi", type: "text", ...over });
const deep = (n, leaf = "0") => "[".repeat(n) + leaf + "]".repeat(n);
const placeholder = { _placeholder: true, num: 0 };
const claims = (over = {}) => ({ sub: randomUUID(), username: "eve", exp: nowSec() + 3600, ...over });
const without = (obj, key) => {
  const o = { ...obj };
  delete o[key];
  return o;
};
const tok = (t) => () => JSON.stringify({ token: typeof t === "function" ? t() : t });

const rows = [
  // ---- Engine.IO over WebSocket
  { name: "empty text frame", send: ws(""), expect: CLOSE },
  { name: "Engine.IO packet type 9", send: ws("9"), expect: CLOSE },
  { name: "Engine.IO open (0) from the client", send: ws("0"), expect: CLOSE },
  { name: "Engine.IO ping (2) from the client (a v3 habit)", send: ws("2"), expect: CLOSE },
  { name: "Engine.IO upgrade (5) on a WebSocket session", send: ws("5"), expect: CLOSE },
  { name: "Engine.IO noop (6) from the client", send: ws("6"), expect: CLOSE },
  { name: "Engine.IO message (4) with an empty Socket.IO packet", send: ws("4"), expect: CLOSE },
  { name: "one frame of EDGE_MAX_PAYLOAD + 1 bytes", send: ws(() => "4" + "x".repeat(MAX_PAYLOAD)), expect: closeCode(1009) },
  // The limit is crossed by the last byte sent: a close the client gets while still writing would be lost to a TCP reset.
  { name: "one message of EDGE_MAX_PAYLOAD + 1 bytes in 6 fragments", send: ws(() => ({ frags: ["4", ...Array(5).fill("x".repeat(MAX_PAYLOAD / 5))] })), expect: closeCode(1009) },
  { name: "invalid UTF-8 in a text frame (0xff)", send: ws({ raw: Buffer.from('42["typing:stop",{"recipientId":"\xff"}]', "latin1") }), expect: closeCode(1007) },
  { name: "overlong UTF-8 (C0 AF) in a text frame", send: ws({ raw: Buffer.concat([Buffer.from('42["x","'), Buffer.from([0xc0, 0xaf]), Buffer.from('"]')]) }), expect: closeCode(1007) },
  { name: "a UTF-16 surrogate encoded in UTF-8 (ED A0 80)", send: ws({ raw: Buffer.concat([Buffer.from('42["x","'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"]')]) }), expect: closeCode(1007) },
  { name: "a UTF-8 sequence truncated at the end of the frame (E2 82)", send: ws({ raw: Buffer.concat([Buffer.from('42["x","'), Buffer.from([0xe2, 0x82])]) }), expect: closeCode(1007) },
  { name: "a binary frame with no attachment header pending", send: ws({ bin: Buffer.from([1, 2, 3]) }), expect: CLOSE },

  // ---- WebSocket framing (raw TCP)
  { name: "truncated frame: 10 bytes of a typing:start to bob, then the client ends the TCP stream", send: tcp(() => wsFrame(TEXT, ev("typing:start", { recipientId: B.id })).subarray(0, 10), { end: true }), expect: SESSION_ENDS },
  { name: "truncated frame: a 16-bit length header and 20 bytes of its payload, then the end of the stream", send: tcp(() => wsFrame(TEXT, ev("typing:start", { recipientId: B.id, pad: "p".repeat(120) })).subarray(0, 28), { end: true }), expect: SESSION_ENDS },
  { name: "a frame length with the most significant bit set (2^63 bytes; RFC 6455 §5.2)", send: tcp(() => wsFrame(TEXT, "", { lenBytes: Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 5]) })), expect: CLOSE },
  { name: "RSV1 set without a negotiated extension", send: tcp(() => wsFrame(TEXT, ev("typing:stop", { recipientId: B.id }), { rsv: 4 })), expect: closeCode(1002) },
  { name: "reserved opcode 0x3", send: tcp(() => wsFrame(3, "abc")), expect: closeCode(1002) },
  { name: "a continuation frame with no message to continue", send: tcp(() => wsFrame(0, ev("typing:stop", { recipientId: B.id }))), expect: closeCode(1002) },
  { name: "a new text frame inside a fragmented message", send: tcp(() => Buffer.concat([wsFrame(TEXT, '42["typing:st', { fin: false }), wsFrame(TEXT, "x")])), expect: closeCode(1002) },
  { name: "a fragmented control frame (ping without FIN)", send: tcp(() => wsFrame(PING, "ab", { fin: false })), expect: closeCode(1002) },
  { name: "a ping with a 126-byte payload (control frames hold ≤ 125)", send: tcp(() => wsFrame(PING, Buffer.alloc(126))), expect: CLOSE },
  { name: "a close frame with the invalid code 999", send: tcp(() => wsFrame(CLOSE_OP, Buffer.from([0x03, 0xe7]))), expect: closeCode(1002) },
  // Not in the table: an unmasked client frame. RFC 6455 §5.1 says the server
  // must close, but libwebsockets 4.1.6 accepts it and exposes nothing to tell
  // (README "Limits").

  // ---- Socket.IO before CONNECT
  { name: "EVENT before CONNECT", send: wsPre(ev("typing:start", { recipientId: B.id })), expect: CLOSE },
  { name: "ACK before CONNECT", send: wsPre("430[]"), expect: CLOSE },
  { name: "DISCONNECT before CONNECT", send: wsPre("41"), expect: CLOSE },
  { name: "CONNECT_ERROR (44) from the client", send: wsPre('44{"message":"x"}'), expect: CLOSE },
  { name: "CONNECT whose payload is a string", send: wsPre('40"token"'), expect: CLOSE },
  { name: "CONNECT whose payload is an array", send: wsPre("40[]"), expect: CLOSE },
  { name: "CONNECT with an ack id", send: wsPre(() => "401" + JSON.stringify({ token: mallory.token })), expect: CLOSE },
  { name: "EVENT before CONNECT over long-polling", send: pollPre(ev("typing:start", { recipientId: B.id })), expect: pollEnds(200) },

  // ---- Socket.IO protocol after CONNECT
  { name: "a second CONNECT to / on the same session", send: ws(() => "40" + JSON.stringify({ token: mallory.token })), expect: CLOSE },
  { name: "EVENT to a namespace never joined", send: ws(`42/admin,${JSON.stringify(["typing:start", { recipientId: B.id }])}`), expect: CLOSE },
  ...["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"].map((name) => ({ name: `reserved event name "${name}"`, send: ws(ev(name, { recipientId: B.id })), expect: CLOSE })),
  { name: "Socket.IO packet type 7", send: ws('47["x"]'), expect: CLOSE },
  { name: "EVENT whose payload is an object", send: ws('42{"event":"typing:stop"}'), expect: CLOSE },
  { name: "EVENT with an empty array", send: ws("42[]"), expect: CLOSE },
  { name: "EVENT whose name is null", send: ws('42[null,{"recipientId":"x"}]'), expect: CLOSE },
  { name: "truncated JSON", send: ws(`42["typing:start",{"recipientId":"${B.id}"`), expect: CLOSE },
  { name: "bytes after the JSON", send: ws(`42["typing:start",{"recipientId":"${B.id}"}]xyz`), expect: CLOSE },
  { name: "a duplicate key in an object", send: ws(`42["typing:start",{"recipientId":"${B.id}","recipientId":"${B.id}"}]`), expect: CLOSE },
  { name: "a lone surrogate escape (\\ud800) in a string", send: ws('42["ghost:typing",{"recipientId":"00000000-0000-4000-8000-000000000000","text":"\\ud800"}]'), expect: CLOSE },
  { name: "JSON nested 100,000 deep", send: ws(() => `42["typing:stop",${deep(100000)}]`), expect: CLOSE },
  { name: "an ack id of 16 digits", send: ws(`421234567890123456${JSON.stringify(["typing:stop", { recipientId: B.id }])}`), expect: CLOSE },
  { name: "ACK without an id", send: ws("43[]"), expect: CLOSE },
  { name: "an attachment header on a plain EVENT", send: ws(`421-${JSON.stringify(["typing:stop", { recipientId: B.id }])}`), expect: CLOSE },
  { name: "attachment count lie: 0 attachments announced", send: ws(`450-${JSON.stringify(["message:send", placeholder])}`), expect: CLOSE },
  { name: "attachment count lie: 2 announced, 1 sent, then a text frame", send: ws(`452-${JSON.stringify(["message:send", placeholder, { _placeholder: true, num: 1 }])}`, { bin: Buffer.from([1]) }, ev("typing:stop", { recipientId: B.id })), expect: CLOSE },
  { name: "attachment count lie: a placeholder numbered past the attachments", send: ws(`451-${JSON.stringify(["message:send", { _placeholder: true, num: 5 }])}`, { bin: Buffer.from([1]) }), expect: CLOSE },
  { name: "attachment count lie: 1 announced, no placeholder uses it", send: ws(`451-${JSON.stringify(["message:send", send()])}`, { bin: Buffer.from([1]) }), expect: CLOSE },
  { name: "attachment count lie: 1,000,000 announced", send: ws(`451000000-${JSON.stringify(["message:send", placeholder])}`), expect: CLOSE },
  { name: "BINARY_EVENT without an attachment header", send: ws(`45${JSON.stringify(["message:send", placeholder])}`), expect: CLOSE },

  // ---- events (chat level): refused, the connection stays
  { name: "unknown event", send: ws(ev("foo", {})), expect: chatError("foo", "unknown_event") },
  { name: "unknown event with an ack", send: ws(ev("foo", {}, "7")), expect: ackError(7, "unknown_event") },
  { name: "an event named by a number", send: ws('42[42,{"recipientId":"x"}]'), expect: chatError("", "unknown_event") },
  { name: "an event name with U+0000 after a real name", send: ws('42["typing:start\\u0000x",{}]'), expect: chatError("", "unknown_event") },
  { name: 'event "__proto__"', send: ws(ev("__proto__", {})), expect: chatError("__proto__", "unknown_event") },
  { name: "message:send with a binary attachment (valid placeholder)", send: ws(`451-${JSON.stringify(["message:send", placeholder])}`, { bin: Buffer.from("hi") }), expect: chatError("message:send", "bad_request") },
  { name: "message:send payload a string", send: ws(ev("message:send", "hi")), expect: chatError("message:send", "bad_request") },
  { name: "message:send payload null", send: ws(ev("message:send", null)), expect: chatError("message:send", "bad_request") },
  { name: "message:send with no payload", send: ws(ev("message:send")), expect: chatError("message:send", "bad_request") },
  { name: "message:send without recipientId", send: ws(ev("message:send", without(send(), "recipientId"))), expect: chatError("message:send", "bad_request") },
  { name: "message:send recipientId a number", send: ws(ev("message:send", send({ recipientId: 42 }))), expect: chatError("message:send", "bad_request") },
  { name: 'message:send recipientId "bob" (not a uuid)', send: ws(ev("message:send", send({ recipientId: "bob" }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send recipientId a uuid with one character more", send: ws(ev("message:send", send({ recipientId: B.id + "0" }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send recipientId a uuid with a non-hex digit", send: ws(ev("message:send", send({ recipientId: B.id.slice(0, -1) + "g" }))), expect: chatError("message:send", "bad_request") },
  { name: 'message:send type "video"', send: ws(ev("message:send", send({ type: "video" }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send without type", send: ws(ev("message:send", without(send(), "type"))), expect: chatError("message:send", "bad_request") },
  { name: "message:send content a number", send: ws(ev("message:send", send({ content: 42 }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send content an array of 100,000 numbers", send: ws(() => ev("message:send", send({ content: Array(100000).fill(0) }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send content nested 1,000 deep", send: ws(() => `42["message:send",{"recipientId":"${B.id}","type":"text","content":${deep(1000)}}]`), expect: chatError("message:send", "bad_request") },
  { name: "message:send content empty", send: ws(ev("message:send", send({ content: "" }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send content of EDGE_MAX_MESSAGE_BYTES + 1 bytes (multi-byte)", send: ws(() => ev("message:send", send({ content: "é".repeat(MAX_MESSAGE_BYTES / 2) + "x" }))), expect: chatError("message:send", "too_large") },
  { name: "message:send content with U+0000", send: ws(ev("message:send", send({ content: "a\u0000b" }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send clientMessageId of 65 bytes", send: ws(ev("message:send", send({ clientMessageId: "c".repeat(65) }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send clientMessageId a number", send: ws(ev("message:send", send({ clientMessageId: 7 }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send clientMessageId empty", send: ws(ev("message:send", send({ clientMessageId: "" }))), expect: chatError("message:send", "bad_request") },
  { name: "message:send with an ack, recipientId not a uuid", send: ws(ev("message:send", send({ recipientId: "x" }), "3")), expect: ackError(3, "bad_request") },
  { name: "message:read messageId not a uuid", send: ws(ev("message:read", { messageId: "m-1", senderId: A.id }, "4")), expect: ackError(4, "bad_request") },
  { name: "message:read senderId null", send: ws(() => ev("message:read", { messageId: stored.id, senderId: null }, "5")), expect: ackError(5, "bad_request") },
  { name: "message:send to a uuid nobody ever used (through messaging)", send: ws(() => ev("message:send", send({ recipientId: uuid() }))), expect: chatError("message:send", "not_found") },
  { name: "message:send to a uuid nobody ever used, with an ack (through messaging)", send: ws(() => ev("message:send", send({ recipientId: uuid(), clientMessageId: "to-nobody" }), "10")), expect: ackError(10, "not_found") },
  { name: "message:read of an unknown message id (through messaging)", send: ws(() => ev("message:read", { messageId: uuid(), senderId: A.id })), expect: chatError("message:read", "not_found") },
  { name: "message:read of alice → bob's message by mallory (not its recipient; through messaging)", send: ws(() => ev("message:read", { messageId: stored.id, senderId: A.id }, "6")), expect: ackError(6, "forbidden") },
  { name: "message:history without an ack", send: ws(ev("message:history", { withUserId: B.id })), expect: chatError("message:history", "bad_request") },
  { name: "message:history limit 0", send: ws(ev("message:history", { withUserId: B.id, limit: 0 }, "8")), expect: ackError(8, "bad_request") },
  { name: "message:history limit 101", send: ws(ev("message:history", { withUserId: B.id, limit: 101 }, "9")), expect: ackError(9, "bad_request") },
  { name: 'message:history limit "10" (a string)', send: ws(ev("message:history", { withUserId: B.id, limit: "10" }, "10")), expect: ackError(10, "bad_request") },
  { name: "message:history before not a uuid", send: ws(ev("message:history", { withUserId: B.id, before: "yesterday" }, "11")), expect: ackError(11, "bad_request") },
  { name: "message:history without withUserId", send: ws(ev("message:history", {}, "12")), expect: ackError(12, "bad_request") },
  { name: "conversation:list without an ack", send: ws(ev("conversation:list", {})), expect: chatError("conversation:list", "bad_request") },
  { name: "conversation:list payload a string", send: ws(ev("conversation:list", "all")), expect: chatError("conversation:list", "bad_request") },
  { name: "conversation:list limit 51", send: ws(ev("conversation:list", { limit: 51 }, "21")), expect: ackError(21, "bad_request") },
  { name: "conversation:list limit 0.5", send: ws(ev("conversation:list", { limit: 0.5 }, "22")), expect: ackError(22, "bad_request") },
  { name: 'conversation:list before "yesterday" (not a cursor)', send: ws(ev("conversation:list", { before: "yesterday" }, "23")), expect: ackError(23, "bad_request") },
  { name: "conversation:list before a uuid alone (not a cursor)", send: ws(ev("conversation:list", { before: B.id }, "24")), expect: ackError(24, "bad_request") },
  { name: "conversation:list before a cursor of 17 digits", send: ws(ev("conversation:list", { before: `12345678901234567.${B.id}` }, "25")), expect: ackError(25, "bad_request") },
  { name: "conversation:read payload an array", send: ws(ev("conversation:read", [B.id])), expect: chatError("conversation:read", "bad_request") },
  { name: "conversation:read without upTo", send: ws(ev("conversation:read", { withUserId: A.id })), expect: chatError("conversation:read", "bad_request") },
  { name: "conversation:read withUserId a number", send: ws(ev("conversation:read", { withUserId: 1, upTo: B.id }, "26")), expect: ackError(26, "bad_request") },
  { name: "conversation:read upTo not a uuid", send: ws(ev("conversation:read", { withUserId: A.id, upTo: "latest" }, "27")), expect: ackError(27, "bad_request") },
  { name: "conversation:read up to alice → bob's message by mallory (not in it; through messaging)", send: ws(() => ev("conversation:read", { withUserId: A.id, upTo: stored.id }, "28")), expect: ackError(28, "not_found") },
  { name: "conversation:read up to an unknown id (through messaging)", send: ws(() => ev("conversation:read", { withUserId: A.id, upTo: uuid() })), expect: chatError("conversation:read", "not_found") },
  { name: "typing:start recipientId an object", send: ws(ev("typing:start", { recipientId: { id: B.id } })), expect: chatError("typing:start", "bad_request") },
  { name: "typing:stop payload an array", send: ws(ev("typing:stop", [B.id])), expect: chatError("typing:stop", "bad_request") },
  { name: "ghost:typing text a number", send: ws(ev("ghost:typing", { recipientId: B.id, text: 1 })), expect: chatError("ghost:typing", "bad_request") },
  { name: "ghost:typing text of EDGE_MAX_GHOST_TEXT + 1 bytes", send: ws(() => ev("ghost:typing", { recipientId: B.id, text: "g".repeat(MAX_GHOST_TEXT + 1) })), expect: chatError("ghost:typing", "too_large") },
  { name: "ghost:typing text with U+0000", send: ws(ev("ghost:typing", { recipientId: B.id, text: "a\u0000" })), expect: chatError("ghost:typing", "bad_request") },
  { name: 'audio:listening isPlaying "yes"', send: ws(() => ev("audio:listening", { messageId: stored.id, senderId: A.id, isPlaying: "yes" })), expect: chatError("audio:listening", "bad_request") },
  { name: "audio:listening without messageId", send: ws(ev("audio:listening", { senderId: A.id, isPlaying: true })), expect: chatError("audio:listening", "bad_request") },
  { name: "audio:recording:start recipientId null", send: ws(ev("audio:recording:start", { recipientId: null })), expect: chatError("audio:recording:start", "bad_request") },
  { name: 'presence:update status "busy"', send: ws(ev("presence:update", { status: "busy" })), expect: chatError("presence:update", "bad_request") },
  { name: "presence:update payload an array", send: ws(ev("presence:update", ["away"])), expect: chatError("presence:update", "bad_request") },
  { name: "presence:request payload an object", send: ws(ev("presence:request", { ids: [B.id] })), expect: chatError("presence:request", "bad_request") },
  { name: "presence:request of EDGE_MAX_PRESENCE_QUERY + 1 ids", send: ws(() => ev("presence:request", Array.from({ length: MAX_PRESENCE_QUERY + 1 }, uuid))), expect: chatError("presence:request", "too_large") },
  { name: "presence:request of an array of 100,000 numbers", send: ws(() => ev("presence:request", Array(100000).fill(1))), expect: chatError("presence:request", "too_large") },
  { name: "presence:request with an id that is not a uuid", send: ws(ev("presence:request", [B.id, "bob"], "13")), expect: ackError(13, "bad_request") },
  { name: "presence:request of arrays", send: ws(ev("presence:request", [[B.id]])), expect: chatError("presence:request", "bad_request") },
  { name: "a payload nested 1,000 deep in an extra field of typing:stop (within the parser's depth) is handled", send: ws(() => `4214["typing:stop",{"recipientId":"${uuid()}","x":${deep(1000)}}]`), expect: ackOk(14) },

  // ---- tokens (a raw CONNECT): exactly 44{"message":"unauthorized"}, the session stays open
  { name: "CONNECT without auth", send: connectAs(() => ""), expect: UNAUTHORIZED },
  { name: "auth without token", send: connectAs(() => "{}"), expect: UNAUTHORIZED },
  { name: "token a number", send: connectAs(tok(12345)), expect: UNAUTHORIZED },
  { name: "token an object", send: connectAs(tok({ sub: mallory.id })), expect: UNAUTHORIZED },
  { name: "token an empty string", send: connectAs(tok("")), expect: UNAUTHORIZED },
  { name: "token of two segments", send: connectAs(tok(() => mallory.token.split(".").slice(0, 2).join("."))), expect: UNAUTHORIZED },
  { name: "token of four segments", send: connectAs(tok(() => mallory.token + ".x")), expect: UNAUTHORIZED },
  { name: "token with characters outside base64url", send: connectAs(tok("@@@.###.$$$")), expect: UNAUTHORIZED },
  { name: "token whose header is not JSON", send: connectAs(tok(() => `${b64url("not json")}.${mallory.token.split(".")[1]}.${mallory.token.split(".")[2]}`)), expect: UNAUTHORIZED },
  { name: "token whose payload is a JSON array (HS256-signed)", send: connectAs(tok(() => mintToken([1, 2]))), expect: UNAUTHORIZED },
  { name: "token with U+0000 inside", send: connectAs(tok(() => mallory.token.slice(0, 10) + "\u0000" + mallory.token.slice(10))), expect: UNAUTHORIZED },
  { name: "alg none, empty signature", send: connectAs(tok(() => mintToken(claims(), { alg: "none", header: { alg: "none" } }))), expect: UNAUTHORIZED },
  { name: "alg none header with an HS256 signature", send: connectAs(tok(() => mintToken(claims(), { header: { alg: "none", typ: "JWT" } }))), expect: UNAUTHORIZED },
  { name: "HS384 with the right secret", send: connectAs(tok(() => mintToken(claims(), { alg: "HS384" }))), expect: UNAUTHORIZED },
  { name: "HS512 with the right secret", send: connectAs(tok(() => mintToken(claims(), { alg: "HS512" }))), expect: UNAUTHORIZED },
  { name: "RS256 header with a 256-byte signature", send: connectAs(tok(() => `${b64url({ alg: "RS256", typ: "JWT" })}.${b64url(claims())}.${randomBytes(256).toString("base64url")}`)), expect: UNAUTHORIZED },
  { name: "HS256 with a wrong secret", send: connectAs(tok(() => mintToken(claims(), { secret: "not-the-secret" }))), expect: UNAUTHORIZED },
  // what libjwt alone took: duplicate claims (the last one wins there), a lowercase alg, crit, padding
  { name: "a duplicate sub (HS256-signed): {sub: A, sub: B}", send: connectAs(tok(() => signRaw('{"alg":"HS256","typ":"JWT"}', `{"sub":"${randomUUID()}","sub":"${mallory.id}","username":"m","exp":${nowSec() + 3600}}`))), expect: UNAUTHORIZED },
  { name: "a duplicate exp (HS256-signed): a past one, then a future one", send: connectAs(tok(() => signRaw('{"alg":"HS256","typ":"JWT"}', `{"sub":"${mallory.id}","username":"m","exp":${nowSec() - 60},"exp":${nowSec() + 3600}}`))), expect: UNAUTHORIZED },
  { name: "a duplicate alg in the header", send: connectAs(tok(() => signRaw('{"alg":"none","alg":"HS256"}', JSON.stringify(claims())))), expect: UNAUTHORIZED },
  { name: "alg \"hs256\" (lowercase), HS256-signed", send: connectAs(tok(() => signRaw('{"alg":"hs256","typ":"JWT"}', JSON.stringify(claims())))), expect: UNAUTHORIZED },
  { name: "a crit header, HS256-signed", send: connectAs(tok(() => signRaw('{"alg":"HS256","crit":["exp"]}', JSON.stringify(claims())))), expect: UNAUTHORIZED },
  { name: "base64 '=' padding on the claims, signed over it", send: connectAs(tok(() => signRaw('{"alg":"HS256","typ":"JWT"}', JSON.stringify(claims({ username: "eve!" })), { pad: true }))), expect: UNAUTHORIZED },
  { name: "a valid signature over another payload", send: connectAs(tok(() => { const [h, , s] = mallory.token.split("."); return `${h}.${b64url(claims({ sub: mallory.id, username: "admin" }))}.${s}`; })), expect: UNAUTHORIZED },
  { name: "expired (exp one second ago)", send: connectAs(tok(() => mintToken(claims({ exp: nowSec() - 1 })))), expect: UNAUTHORIZED },
  { name: "nbf an hour ahead", send: connectAs(tok(() => mintToken(claims({ nbf: nowSec() + 3600 })))), expect: UNAUTHORIZED },
  { name: "no exp", send: connectAs(tok(() => mintToken(without(claims(), "exp")))), expect: UNAUTHORIZED },
  { name: "exp a string", send: connectAs(tok(() => mintToken(claims({ exp: String(nowSec() + 3600) })))), expect: UNAUTHORIZED },
  { name: "exp not an integer (3600.5 s ahead)", send: connectAs(tok(() => mintToken(claims({ exp: nowSec() + 3600.5 })))), expect: UNAUTHORIZED },
  { name: "sub not a uuid", send: connectAs(tok(() => mintToken(claims({ sub: "mallory" })))), expect: UNAUTHORIZED },
  { name: "neither sub nor userId", send: connectAs(tok(() => mintToken(without(claims(), "sub")))), expect: UNAUTHORIZED },
  { name: "username empty", send: connectAs(tok(() => mintToken(claims({ username: "" })))), expect: UNAUTHORIZED },
  { name: "username a number", send: connectAs(tok(() => mintToken(claims({ username: 7 })))), expect: UNAUTHORIZED },
  { name: "username of 129 bytes", send: connectAs(tok(() => mintToken(claims({ username: "u".repeat(129) })))), expect: UNAUTHORIZED },
  { name: "a correctly signed token of 6 KB", send: connectAs(tok(() => mintToken(claims({ pad: "p".repeat(6000) })))), expect: UNAUTHORIZED },

  // ---- long-polling
  { name: "polling: a POST for an unknown sid", send: http(() => httpRequest(`${edge.url}/socket.io/?EIO=4&transport=polling&sid=nope`, { method: "POST", body: "40" })), expect: httpError(400, ERR(1)) },
  { name: "polling: a handshake with POST", send: http(() => httpRequest(`${edge.url}/socket.io/?EIO=4&transport=polling`, { method: "POST", body: "40" })), expect: httpError(400, ERR(2)) },
  { name: "polling: EIO=3", send: http(() => httpRequest(`${edge.url}/socket.io/?EIO=3&transport=polling`)), expect: httpError(400, ERR(5)) },
  { name: "polling: transport=flashsocket", send: http(() => httpRequest(`${edge.url}/socket.io/?EIO=4&transport=flashsocket`)), expect: httpError(400, ERR(0)) },
  { name: "polling: a PUT", send: http(() => httpRequest(`${edge.url}/socket.io/?EIO=4&transport=polling`, { method: "PUT", body: "x" })), expect: httpError(400, ERR(2)) },
  {
    name: "polling: a POST with Content-Type application/octet-stream",
    send: http(async () => {
      const { client } = await pollSession(true);
      return client.post(ev("typing:start", { recipientId: B.id }), { headers: { "Content-Type": "application/octet-stream" } });
    }),
    expect: httpError(400, ERR(3)),
  },
  {
    name: "polling: a POST without Content-Length (chunked)",
    send: http(async () => {
      const { sid } = await pollSession(true);
      const h = await rawHttp(edge);
      h.request({ method: "POST", path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { "Transfer-Encoding": "chunked" } });
      h.write(`${ev("typing:start", { recipientId: B.id }).length.toString(16)}\r\n${ev("typing:start", { recipientId: B.id })}\r\n0\r\n\r\n`);
      const r = await h.response(3000, "the answer to a chunked POST");
      return { status: r.status, text: r.body };
    }),
    expect: httpError(411, "length required"),
  },
  {
    name: "polling: a POST announcing EDGE_MAX_PAYLOAD + 1 bytes",
    send: http(async () => {
      const { sid } = await pollSession(true);
      const h = await rawHttp(edge);
      h.request({ method: "POST", path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { "Content-Length": String(MAX_PAYLOAD + 1) } });
      const r = await h.response(3000, "the answer to an oversize POST");
      return { status: r.status, text: r.body };
    }),
    expect: httpError(413, "payload too large"),
  },
  {
    name: "polling: a POST with Content-Length and Transfer-Encoding (a smuggled request behind it is never answered)",
    send: http(async () => {
      const { sid } = await pollSession(true);
      const h = await rawHttp(edge);
      const body = ev("typing:start", { recipientId: B.id });
      h.request({ method: "POST", path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { "Content-Length": String(body.length), "Transfer-Encoding": "chunked" }, body });
      h.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); // would be a second request
      const r = await h.response(3000, "the answer to an ambiguous POST");
      await h.waitClosed(3000, "the edge to close the connection");
      assert.equal(h.responses.length, 0, "the smuggled request was not answered");
      return { status: r.status, text: r.body };
    }),
    expect: httpError(400, ERR(3)),
  },
  ...[
    ["Content-Length: 2abc", { "Content-Length": "2abc" }],
    ["two Content-Length headers that differ", { "Content-Length": ["2", "3"] }],
    ["Content-Length with a sign", { "Content-Length": "+2" }],
  ].map(([what, headers]) => ({
    name: `polling: a POST with ${what}`,
    send: http(async () => {
      const { sid } = await pollSession(true);
      const h = await rawHttp(edge);
      const lines = Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => `${k}: ${x}`) : [`${k}: ${v}`]));
      h.write(`POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n${lines.join("\r\n")}\r\n\r\n40`);
      const r = await h.response(3000, `the answer to ${what}`);
      await h.waitClosed(3000, "the edge to close the connection");
      return { status: r.status, text: r.body };
    }),
    expect: httpError(400, ERR(3)),
  })),
  {
    name: "HTTP CONNECT: 405, and the connection is closed (lws would hold it as a raw socket)",
    send: http(async () => {
      const h = await rawHttp(edge);
      h.write("CONNECT x:22 HTTP/1.1\r\nHost: x\r\n\r\n");
      const r = await h.response(3000, "the answer to CONNECT");
      await h.waitClosed(3000, "the edge to close the connection");
      return { status: r.status, text: r.body };
    }),
    expect: httpError(405, ""),
  },
  {
    name: "HTTP DELETE outside Engine.IO: 405, the connection closed",
    send: http(async () => {
      const h = await rawHttp(edge);
      h.request({ method: "DELETE", path: "/healthz" });
      const r = await h.response(3000, "the answer to DELETE");
      await h.waitClosed(3000, "the edge to close the connection");
      return { status: r.status, text: r.body };
    }),
    expect: httpError(405, "method not allowed\n"),
  },
  { name: "polling: Engine.IO packet type 9", send: poll("9"), expect: pollEnds(400) },
  { name: "polling: Engine.IO upgrade (5) without a probe", send: poll("5"), expect: pollEnds(400) },
  { name: "polling: Engine.IO ping (2) from the client", send: poll("2"), expect: pollEnds(400) },
  { name: "polling: undecodable Socket.IO packet", send: poll('42["typing:start",'), expect: pollEnds(200) },
  { name: "polling: invalid UTF-8 in the body", send: poll(() => Buffer.from('42["x","\xff"]', "latin1")), expect: pollEnds(200) },
  { name: "polling: a binary packet with no attachment header pending", send: poll("bAQID"), expect: pollEnds(200) },
  { name: "polling: reserved event name", send: poll(ev("disconnect")), expect: pollEnds(200) },
  { name: "polling: unknown event (chat level, the session stays)", send: poll(ev("foo", {})), expect: chatError("foo", "unknown_event") },
  { name: "polling: message:send to a uuid nobody ever used, with an ack (through messaging)", send: poll(() => ev("message:send", send({ recipientId: uuid() }), "22")), expect: ackError(22, "not_found") },
  { name: "polling: message:send recipientId not a uuid, with an ack", send: poll(ev("message:send", send({ recipientId: "nobody" }), "21")), expect: ackError(21, "bad_request") },
  {
    name: "polling: a second concurrent GET",
    send: http(async () => {
      const { client } = await pollSession(true);
      const held = client.get({ ms: 3000, what: "the held GET" });
      await delay(HOLD_WINDOW); // the edge takes the GET in and holds it (no signal)
      const second = await client.get({ what: "the second GET" });
      const first = await held;
      assert.deepEqual([first.status, first.text], [200, "1"], "the held GET gets the close packet");
      return second;
    }),
    expect: httpError(400, ERR(3)),
  },
  {
    name: "polling: a second POST while one is unfinished",
    send: http(async () => {
      const { client, sid } = await pollSession(true);
      const h = await rawHttp(edge);
      h.request({ method: "POST", path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { "Content-Length": "40" } });
      h.write("42"); // 2 of 40 bytes
      await delay(HOLD_WINDOW); // the edge takes the first POST in (no signal)
      const second = await client.post(ev("typing:start", { recipientId: B.id }), { what: "the second POST" });
      const after = await client.get({ what: "a GET after the second POST" });
      assert.ok(after.text === "1" || after.text === ERR(1), `the session is over: ${after.status} ${after.text}`);
      return second;
    }),
    expect: httpError(400, ERR(3)),
  },
  {
    name: "polling: a GET naming a WebSocket session's sid (the WebSocket stays)",
    send: http(async () => {
      const { client, sid } = await wsSession(true);
      const r = await httpRequest(`${edge.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
      client.send(`4230${JSON.stringify(["typing:stop", { recipientId: uuid() }])}`);
      assert.equal((await nextFrame(client, 3000, "the marker ack")).text, '4330[{"ok":true}]', "the WebSocket session still works");
      return r;
    }),
    expect: httpError(400, ERR(3)),
  },

  // ---- last: what may take the edge down
  {
    name: "an HTTP request with a 10 KB header (lws holds 4 KB)",
    send: http(async () => {
      const h = await rawHttp(edge);
      h.request({ method: "GET", path: "/socket.io/?EIO=4&transport=polling", headers: { "X-Padding": "a".repeat(10000) } });
      try {
        const r = await h.response(3000, "the answer to a 10 KB header");
        return { status: r.status, text: r.body };
      } catch (err) {
        if (!h.isClosed) throw err;
        return { status: "closed", text: "" };
      }
    }),
    expect: { kind: "http-refused" },
  },
];

// ---------------------------------------------------------------- the runner

/** A marker on a raw WebSocket: an acked typing:stop to nobody must be the next frame. */
async function wsMarker(client) {
  client.send(`4299${JSON.stringify(["typing:stop", { recipientId: uuid() }])}`);
  assert.equal((await nextFrame(client, 3000, "the marker ack")).text, '4399[{"ok":true}]', "the connection still works, and nothing else came first");
}

async function pollMarker(client) {
  await client.send(`4299${JSON.stringify(["typing:stop", { recipientId: uuid() }])}`);
  assert.equal(await nextPacket(client, 3000, "the marker ack"), '4399[{"ok":true}]', "the session still works, and nothing else came first");
}

function assertChatError(text, { event, code }) {
  assert.ok(text.startsWith('42["chat:error",'), `expected chat:error, got ${JSON.stringify(text.slice(0, 300))}`);
  const [name, body] = JSON.parse(text.slice(2));
  assert.equal(name, "chat:error");
  assert.deepEqual(Object.keys(body).sort(), ["code", "event", "message"]);
  assert.deepEqual({ event: body.event, code: body.code }, { event, code }, text.slice(0, 300));
  assert.ok(typeof body.message === "string" && body.message.length > 0);
}

function assertAckError(text, { id, code }) {
  const m = /^43(\d+)(.*)$/s.exec(text);
  assert.ok(m, `expected an ack, got ${JSON.stringify(text.slice(0, 300))}`);
  assert.equal(Number(m[1]), id, "the ack id");
  const args = JSON.parse(m[2]);
  assert.equal(args.length, 1);
  assert.deepEqual(Object.keys(args[0]).sort(), ["error", "ok"]);
  assert.equal(args[0].ok, false);
  assert.equal(args[0].error.code, code, text.slice(0, 300));
  assert.ok(typeof args[0].error.message === "string" && args[0].error.message.length > 0);
}

/** Every frame until the server closes must be presence noise; returns the close info. */
async function expectWsClosed(client) {
  const extra = [];
  const deadline = Date.now() + 3000;
  for (;;) {
    let f;
    try {
      f = await client.next(Math.max(1, deadline - Date.now()), "the server to close the connection");
    } catch (err) {
      if (client.closeInfo) break;
      throw err;
    }
    if (!isNoise(f)) extra.push(f.text !== undefined ? f.text.slice(0, 200) : `<binary ${f.binary.length} bytes>`);
  }
  assert.deepEqual(extra, [], "nothing is sent before the close");
  return client.closeInfo;
}

async function runWs(row) {
  const { client } = await wsSession(row.send.connected);
  try {
    for (let f of row.send.frames) {
      if (typeof f === "function") f = f();
      if (typeof f === "string") client.send(f);
      else if (f.bin) client.ws.send(f.bin, { binary: true });
      else if (f.raw) client.ws.send(f.raw, { binary: false });
      else if (f.frags) f.frags.forEach((part, i) => client.ws.send(part, { binary: false, fin: i === f.frags.length - 1 }));
    }
    const e = row.expect;
    if (e.kind === "close") {
      const info = await expectWsClosed(client);
      if (e.code) assert.equal(info.code, e.code, `close code (reason ${JSON.stringify(info.reason)})`);
      return;
    }
    const text = (await nextFrame(client, 5000, describeExpect(e))).text;
    if (e.kind === "chat:error") assertChatError(text, e);
    else if (e.kind === "ack") assertAckError(text, e);
    else if (e.kind === "ack-ok") assert.equal(text, `43${e.id}[{"ok":true}]`);
    else throw new Error(`no ${e.kind} over ws`);
    await wsMarker(client);
  } finally {
    client.close();
  }
}

async function runTcp(row) {
  const { client, sid } = await tcpSession();
  try {
    client.write(row.send.bytes());
    if (row.send.end) client.sock.end();
    const e = row.expect;
    if (e.kind === "session-ends") {
      await edge.child.waitForLine(new RegExp(`session closed session=${sessionTag(sid)} `), 3000, `the edge to close session ${sid}`);
      return;
    }
    // A close frame with the code, or the TCP connection closed without one.
    const closed = await client.until(() => client.closed || client.frames.slice(client.cursor ?? 0).some((f) => f.close !== undefined), 3000);
    const after = client.frames.slice(client.cursor ?? 0).filter((f) => !(f.text !== undefined && NOISE.test(f.text)));
    assert.ok(closed, `the edge neither sent a close frame nor closed the connection within 3 s (received ${JSON.stringify(after)})`);
    const close = after.find((f) => f.close !== undefined);
    assert.deepEqual(after.filter((f) => f.close === undefined), [], "nothing is sent before the close");
    if (e.code) assert.equal(close?.close, e.code, `close frame with ${e.code} (got ${close ? close.close : "no close frame, the TCP connection was closed"})`);
  } finally {
    client.destroy();
  }
}

async function runPoll(row) {
  const { client } = await pollSession(row.send.connected);
  try {
    const e = row.expect;
    for (let b of row.send.bodies) {
      if (typeof b === "function") b = b();
      const r = await client.post(b, { what: "the POST of the case" });
      if (e.kind === "poll-ends") {
        assert.equal(r.status, e.postStatus, `the POST's status (body ${r.text})`);
      } else {
        assert.deepEqual([r.status, r.text], [200, "ok"], "the POST is taken");
      }
    }
    if (e.kind === "poll-ends") {
      // The session is over: the next GET holds the close packet "1" (nothing
      // else before it), or the session is gone already (400 Session ID unknown).
      const seen = [];
      const deadline = Date.now() + 3000;
      for (;;) {
        assert.ok(Date.now() < deadline, `the session did not end within 3 s; received ${JSON.stringify(seen)}`);
        const g = await client.get({ ms: Math.max(1, deadline - Date.now()), what: "a GET after the case" });
        if (g.status === 400) {
          assert.equal(g.text, ERR(1), "a GET after the session ended");
          break;
        }
        assert.equal(g.status, 200);
        const packets = g.text.split("\x1e").filter((p) => !NOISE.test(p));
        if (packets.includes("1")) {
          seen.push(...packets.slice(0, packets.indexOf("1")));
          break;
        }
        seen.push(...packets);
      }
      assert.deepEqual(seen, [], "nothing is sent before the close packet");
      client.sid = null; // nothing to close at the end
      return;
    }
    const text = await nextPacket(client, 5000, describeExpect(e));
    if (e.kind === "chat:error") assertChatError(text, e);
    else if (e.kind === "ack") assertAckError(text, e);
    else throw new Error(`no ${e.kind} over polling`);
    await pollMarker(client);
  } finally {
    await client.close();
  }
}

async function runConnect(row) {
  const { client } = await wsSession(false);
  try {
    client.send("40" + row.send.payload());
    assert.equal((await nextFrame(client, 3000, "the CONNECT_ERROR")).text, `44${JSON.stringify({ message: row.expect.message })}`, "exactly CONNECT_ERROR {message}");
    // Marker: the session is open and nothing came after the refusal.
    client.send("40/nope,");
    assert.equal((await nextFrame(client, 3000, "the marker CONNECT_ERROR")).text, '44/nope,{"message":"Invalid namespace"}');
  } finally {
    client.close();
  }
}

async function runHttp(row) {
  const r = await row.send.fn();
  const e = row.expect;
  if (e.kind === "http-refused") {
    // A request the edge cannot hold: refused with a 4xx (431) or the connection closed.
    assert.ok(r.status === "closed" || (r.status >= 400 && r.status < 500), `got ${r.status} ${r.text}`);
    await delay(HOLD_WINDOW); // a crash shows up as an exit; give it the time to be reported
    return;
  }
  assert.equal(r.status, e.status, `HTTP status (body ${JSON.stringify(r.text)})`);
  if (e.body !== undefined) assert.equal(r.text, e.body);
}

const RUNNERS = { ws: runWs, tcp: runTcp, poll: runPoll, connect: runConnect, http: runHttp };

describe(`bad input: ${rows.length} cases, each with its documented outcome; the control pair keeps working and nothing is written to the messages table`, () => {
  test("the table has at least 50 cases, with unique names", () => {
    assert.ok(rows.length >= 50, `${rows.length} cases`);
    assert.equal(new Set(rows.map((r) => r.name)).size, rows.length);
  });

  for (const row of rows) {
    const expectText = row.expect.kind === "http-refused" ? "a 4xx or the connection closed, the edge stays up" : describeExpect(row.expect);
    test(`${row.name} → ${expectText}`, async () => {
      const before = await snapshot();
      let failure = null;
      try {
        await RUNNERS[row.send.via](row);
      } catch (err) {
        failure = err;
      } finally {
        await Promise.all(cleanups.splice(0).map((close) => close()));
      }
      // The control runs after a failed case too (it consumes the case's strays); the case's own failure is reported first.
      try {
        await control(row.name);
        assert.equal(await snapshot(), before, "the messages table did not change");
      } catch (err) {
        if (!failure) throw err;
        const also = `\n(and after it, the control: ${err.message.split("\n")[0]})`;
        failure.message += also;
        if (failure.stack) failure.stack += also;
      }
      if (failure) throw failure;
    });
  }

  test("users: only the three users who connected have a row (no refused token and no id of a bad payload wrote one)", async () => {
    const ids = await db.query("SELECT id FROM users ORDER BY id");
    assert.deepEqual(ids, [A.id, B.id, mallory.id].sort());
    const count = Number((await db.query("SELECT count(*) FROM messages"))[0]);
    assert.equal(count, 1, "the one message of the set-up");
  });
});

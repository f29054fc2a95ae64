// Attacks on the edge, as an outsider and as one authenticated user would make
// them, against the real stack (nats-server, PostgreSQL, messaging, presence,
// edges): each runs while a canary pair keeps chatting (a message each way,
// acked and received, over and over), and the edge's memory and open files are
// checked after it. The README's "Abuse limits" section lists each limit.
//   - HTTP CONNECT, which lws holds as a raw socket: 405 and closed, in numbers;
//   - idle TCP connections from one address: EDGE_MAX_TCP_PER_IP;
//   - a low open-files soft limit: raised to the hard one at start; with a low
//     hard limit the edge refuses new connections without spinning or flooding
//     its log;
//   - non-reading sockets asking for big answers: EDGE_READ_PAUSE_BYTES stops
//     reading them, EDGE_MAX_OUTPUT_BYTES bounds what the edge holds for all;
//   - a long-polling sid used from another address (POST, GET, WebSocket
//     upgrade): refused; sids never in the edge's log; behind a trusted proxy
//     the forwarded address counts;
//   - an office behind one NAT address: the default limits take 1,200 sessions;
//   - a validly signed token with a huge exp;
//   - one user flooding another: EDGE_EVENTS_TO_USER_PER_S.
import assert from "node:assert/strict";
import net from "node:net";
import http from "node:http";
import { readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { before, after, describe } from "node:test";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { test, startNats, startPostgres, startMessaging, startPresence, startEdge, connectClient, shutdown, withTimeout, delay, httpRequest, EDGE_BIN } from "./harness.mjs";
import { makeUser, signRaw, nowSec } from "./tokens.mjs";

let nats;
let pg;

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  await Promise.all([startMessaging({ nats, pg }), startPresence({ nats, pg })]);
});

const closers = new Set();
after(async () => {
  for (const c of closers) c();
  await shutdown();
});

/** An edge with the default limits (the harness lifts them for other files) and env. */
const DEFAULTS = {
  EDGE_MAX_CONN_PER_IP: undefined,
  EDGE_HANDSHAKES_PER_S: undefined,
  EDGE_EVENTS_PER_S: undefined,
  EDGE_EVENTS_BURST: undefined,
  EDGE_MAX_SOCKETS_PER_USER: undefined,
  EDGE_MAX_TCP_PER_IP: undefined,
  EDGE_EVENTS_TO_USER_PER_S: undefined,
  EDGE_QUERIES_PER_USER_PER_S: undefined,
};
// A sanitizer build keeps what is freed in ASan's quarantine (256 MiB by
// default), which the RSS bounds below would count as held: its edges here run
// with a 1 MiB quarantine (a use after a recent free is still caught).
const SANITIZED = readFileSync(EDGE_BIN).includes("__asan_init");
const ASAN_SMALL = SANITIZED ? { ASAN_OPTIONS: [process.env.ASAN_OPTIONS, "quarantine_size_mb=1"].filter(Boolean).join(":") } : {};
const edgeWith = (name, env = {}, opts = {}) => startEdge({ nats, name, env: { ...DEFAULTS, ...ASAN_SMALL, ...env }, ...opts });

// ---------------------------------------------------------------- what the edge holds

const procStatus = (pid) => readFileSync(`/proc/${pid}/status`, "utf8");
const rssKiB = (edge) => Number(/VmRSS:\s+(\d+)/.exec(procStatus(edge.child.proc.pid))[1]);
const openFiles = (edge) => readdirSync(`/proc/${edge.child.proc.pid}/fd`).length;
const cpuTicks = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime
};
async function metric(edge, name) {
  const r = await httpRequest(`${edge.url}/metrics`);
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "m").exec(r.text);
  return m ? Number(m[1]) : 0;
}

// ---------------------------------------------------------------- the canary pair

/**
 * Two users on edge chatting in the background: a message each way per
 * round, each acked and received within 3 s. stop() ends it and resolves with
 * the number of rounds; a round that fails rejects it.
 */
async function canary(edge) {
  const A = makeUser("canary-a");
  const B = makeUser("canary-b");
  const a = await connectClient(edge.url, A.token);
  const b = await connectClient(edge.url, B.token);
  closers.add(() => a.socket.close());
  closers.add(() => b.socket.close());
  let stopping = false;
  let rounds = 0;
  const received = (socket, id) =>
    withTimeout(
      new Promise((resolve) => {
        const on = (m) => {
          if (m.clientMessageId === id) {
            socket.off("message:received", on);
            resolve();
          }
        };
        socket.on("message:received", on);
      }),
      3000,
      `the canary's message ${id}`,
    );
  const one = async (from, to, toUser) => {
    const id = randomUUID();
    const got = received(to.socket, id);
    const res = await from.socket.timeout(3000).emitWithAck("message:send", { recipientId: toUser.id, content: "still here", type: "text", clientMessageId: id });
    assert.equal(res.ok, true, `the canary's send: ${JSON.stringify(res)}`);
    await got;
  };
  const loop = (async () => {
    while (!stopping) {
      await one(a, b, B);
      await one(b, a, A);
      rounds++;
      await delay(100); // a pair chatting, well within EDGE_EVENTS_TO_USER_PER_S
    }
  })();
  loop.catch(() => {}); // seen by stop()
  await withTimeout(
    (async () => {
      while (rounds < 1) await delay(20);
    })(),
    5000,
    "the canary's first round",
  );
  return {
    async stop() {
      stopping = true;
      await loop;
      a.socket.close();
      b.socket.close();
      return rounds;
    },
  };
}

// ---------------------------------------------------------------- raw clients

/** A TCP connection from localAddress: resolves once connected; .closed resolves at EOF. */
function tcp(edge, localAddress = "127.0.0.1") {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port: edge.port, localAddress });
    const c = { s, data: "", isClosed: false };
    c.closed = new Promise((r) => s.once("close", () => ((c.isClosed = true), r())));
    s.on("data", (d) => (c.data += d.toString("latin1")));
    s.once("connect", () => resolve(c));
    s.once("error", (err) => (c.isClosed ? null : reject(err)));
    closers.add(() => s.destroy());
  });
}

/** HTTP from localAddress with headers; resolves {status, text}. */
function request(edge, path, { localAddress = "127.0.0.1", method = "GET", body, headers = {} } = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const h = { ...headers };
      if (body !== undefined) h["Content-Length"] = Buffer.byteLength(body);
      const req = http.request({ host: "127.0.0.1", port: edge.port, path, method, headers: h, localAddress, agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode, text }));
      });
      req.on("error", reject);
      req.end(body);
    }),
    5000,
    `${method} ${path} from ${localAddress}`,
  );
}

let t = 0;
const poll = (sid) => `/socket.io/?EIO=4&transport=polling${sid ? `&sid=${sid}` : ""}&t=${++t}`;

/** A Socket.IO session over raw long-polling from localAddress, connected as user. */
async function pollingSession(edge, user, opts = {}) {
  const r = await request(edge, poll(), opts);
  assert.equal(r.status, 200, `the handshake: ${r.status} ${r.text}`);
  const sid = JSON.parse(r.text.split("\x1e")[0].slice(1)).sid;
  const post = await request(edge, poll(sid), { ...opts, method: "POST", body: "40" + JSON.stringify({ token: user.token }) });
  assert.equal(post.text, "ok");
  const got = await request(edge, poll(sid), opts);
  assert.match(got.text, /^40\{/);
  closers.add(() => request(edge, poll(sid), { ...opts, method: "POST", body: "1" }).catch(() => {}));
  return sid;
}

/** A raw Engine.IO WebSocket from localAddress; .opened resolves with the open packet or null. */
function rawWs(edge, { localAddress = "127.0.0.1", query = "EIO=4&transport=websocket" } = {}) {
  const ws = new WebSocket(`${edge.wsBase}/socket.io/?${query}`, { perMessageDeflate: false, localAddress });
  ws.on("error", () => {});
  const c = { ws, frames: [] };
  c.opened = new Promise((resolve) => {
    ws.once("message", (d) => resolve(d.toString()));
    ws.once("close", () => resolve(null));
  });
  c.closed = new Promise((resolve) => ws.once("close", resolve));
  ws.on("message", (d) => c.frames.push(d.toString()));
  closers.add(() => ws.terminate());
  return c;
}

// ---------------------------------------------------------------- HTTP CONNECT

describe("HTTP CONNECT", () => {
  let edge;
  before(async () => {
    edge = await edgeWith("atk-connect", { EDGE_MAX_TCP_PER_IP: "300" });
  });

  test("one CONNECT gets 405 and its connection is closed", async () => {
    const c = await tcp(edge);
    c.s.write("CONNECT x:22 HTTP/1.1\r\nHost: x\r\n\r\n");
    await withTimeout(c.closed, 2000, "the edge to close a CONNECT");
    assert.match(c.data, /^HTTP\/1\.1 405 /);
  });

  test("1,000 CONNECTs from one address while a pair chats: all closed, the edge's open files and memory come back", async () => {
    const pair = await canary(edge);
    const files0 = openFiles(edge);
    const rss0 = rssKiB(edge);
    for (let round = 0; round < 10; round++) {
      const conns = await Promise.all(Array.from({ length: 100 }, () => tcp(edge, "127.0.0.2")));
      for (const c of conns) c.s.write("CONNECT x:22 HTTP/1.1\r\nHost: x\r\n\r\n");
      await withTimeout(Promise.all(conns.map((c) => c.closed)), 5000, "the edge to close 100 CONNECTs");
      assert.ok(conns.every((c) => c.data.startsWith("HTTP/1.1 405 ")), "each was answered (none refused: their places came back)");
    }
    assert.ok((await pair.stop()) >= 1);
    await withTimeout(
      (async () => {
        while (openFiles(edge) > files0 + 5) await delay(50);
      })(),
      3000,
      `the edge's open files back to ${files0} (now ${openFiles(edge)})`,
    );
    assert.ok(rssKiB(edge) - rss0 < 8192, `RSS grew by ${rssKiB(edge) - rss0} KiB`);
  });
});

// ---------------------------------------------------------------- TCP connections per address

describe("EDGE_MAX_TCP_PER_IP=50", () => {
  let edge;
  before(async () => {
    edge = await edgeWith("atk-tcp", { EDGE_MAX_TCP_PER_IP: "50" });
  });

  test("60 idle connections from one address: 50 held, the rest closed at once; others still connect and chat; the place comes back", async () => {
    const pair = await canary(edge);
    const conns = [];
    for (let i = 0; i < 60; i++) conns.push(await tcp(edge, "127.0.0.3"));
    await withTimeout(
      (async () => {
        while (conns.filter((c) => c.isClosed).length < 10) await delay(20);
      })(),
      3000,
      "10 connections over the limit to be closed",
    );
    await delay(300); // a deliberate window: nothing more may be closed
    assert.equal(conns.filter((c) => c.isClosed).length, 10, "exactly the ones over the limit");
    const other = await tcp(edge, "127.0.0.4"); // another address is not limited
    await delay(100);
    assert.equal(other.isClosed, false);
    assert.ok((await metric(edge, "chat_edge_tcp_refused_total")) >= 10);
    for (const c of conns) c.s.destroy();
    await withTimeout(Promise.all(conns.map((c) => c.closed)), 3000, "our side closed");
    await withTimeout(
      (async () => {
        for (;;) {
          const again = await tcp(edge, "127.0.0.3");
          await delay(100);
          if (!again.isClosed) return;
        }
      })(),
      3000,
      "a connection from the address accepted again",
    );
    assert.ok((await pair.stop()) >= 1);
  });
});

// ---------------------------------------------------------------- open files

function hardNofile() {
  return Number(/Max open files\s+\d+\s+(\d+)/.exec(readFileSync("/proc/self/limits", "utf8"))[1]);
}

describe("the open-files limit", () => {
  test("a soft limit of 1,024 is raised to the hard one at start: 1,100 idle connections from one address do not lock others out", { timeout: 60000 }, async (t) => {
    const hard = hardNofile();
    if (hard < 1400) return t.skip(`hard limit ${hard}: too low to show it`);
    const edge = await edgeWith("atk-nofile", {}, { wrap: ["prlimit", `--nofile=1024:${hard}`, "--"] });
    const soft = Number(/Max open files\s+(\d+)/.exec(readFileSync(`/proc/${edge.child.proc.pid}/limits`, "utf8"))[1]);
    assert.equal(soft, hard, "the edge raised its soft limit");
    const conns = [];
    for (let i = 0; i < 1100; i++) conns.push(await tcp(edge, "127.0.0.5"));
    const pair = await canary(edge);
    assert.ok((await pair.stop()) >= 1);
    for (const c of conns) c.s.destroy();
    await edge.stop();
  });

  test("with a hard limit of 200 the edge refuses what it cannot hold without spinning or flooding its log", { timeout: 60000 }, async () => {
    const edge = await edgeWith("atk-nofile-low", {}, { wrap: ["prlimit", "--nofile=200:200", "--"] });
    const conns = [];
    for (let i = 0; i < 260; i++) {
      try {
        conns.push(await tcp(edge, "127.0.0.6"));
      } catch {}
    }
    await delay(300);
    const lines0 = edge.child.output.split("\n").length;
    const ticks0 = cpuTicks(edge.child.proc.pid);
    await delay(2000); // a deliberate window: the CPU and the log over it
    const ticks = cpuTicks(edge.child.proc.pid) - ticks0;
    const lines = edge.child.output.split("\n").length - lines0;
    assert.ok(ticks < 60, `the edge used ${ticks} ticks of CPU in 2 s with its connections full`);
    assert.ok(lines <= 4, `${lines} log lines in 2 s`);
    for (const c of conns) c.s.destroy();
    const back = await connectClient(edge.url, makeUser("back").token, { ms: 5000 }); // it serves again
    back.socket.close();
    await edge.stop();
  });
});

// ---------------------------------------------------------------- memory

describe("non-reading sockets asking for big answers", () => {
  test("64 sockets that never read, sending presence:request for 500 online users: read paused, the output budget held, memory bounded", { timeout: 60000 }, async () => {
    const BUDGET = 32 << 20;
    const edge = await edgeWith("atk-memory", { EDGE_MAX_OUTPUT_BYTES: String(BUDGET), EDGE_EVENTS_PER_S: "100000", EDGE_EVENTS_BURST: "100000", EDGE_QUERIES_PER_USER_PER_S: "0" });
    const pair = await canary(edge);
    const rss0 = rssKiB(edge);
    const users = Array.from({ length: 64 }, () => makeUser("greedy-user-with-a-longish-name"));
    const ids = Array.from({ length: 500 }, (_, i) => users[i % 64].id); // online, so answered from memory; duplicates kept
    const request = `42${JSON.stringify(["presence:request", ids])}`;
    const readers = [];
    for (const u of users) {
      const c = rawWs(edge, { localAddress: "127.0.0.7" });
      assert.match(await withTimeout(c.opened, 3000, "open"), /^0\{/);
      c.ws.send("40" + JSON.stringify({ token: u.token }));
      await withTimeout(new Promise((r) => c.ws.once("message", r)), 3000, "CONNECT reply");
      c.ws._socket.pause(); // never read again
      readers.push(c);
    }
    const until = Date.now() + 4000;
    while (Date.now() < until) {
      for (const c of readers) if (c.ws.readyState === WebSocket.OPEN && c.ws.bufferedAmount < 1 << 20) c.ws.send(request);
      await delay(20);
    }
    const rss = rssKiB(edge) - rss0;
    const held = await metric(edge, "chat_edge_output_bytes");
    assert.ok((await pair.stop()) >= 1, "the canary kept chatting");
    assert.ok(held <= BUDGET + (1 << 20), `the edge holds ${held} bytes of output`);
    assert.ok(rss < (BUDGET >> 10) + 40960, `RSS grew by ${rss} KiB during the attack`);
    for (const c of readers) c.ws.terminate();
    await edge.stop();
  });
});

// ---------------------------------------------------------------- sids

describe("a long-polling sid used by another client", () => {
  let edge;
  before(async () => {
    edge = await edgeWith("atk-sid", {});
  });

  test("POST and GET with the victim's sid from another address: 400 'Session ID unknown'; the victim's session goes on", async () => {
    const victim = makeUser("victim");
    const bob = makeUser("bob");
    const b = await connectClient(edge.url, bob.token);
    closers.add(() => b.socket.close());
    const sid = await pollingSession(edge, victim);
    const steal = await request(edge, poll(sid), { localAddress: "127.0.0.8", method: "POST", body: `42${JSON.stringify(["message:send", { recipientId: bob.id, content: "as the victim", type: "text" }])}` });
    assert.deepEqual(steal, { status: 400, text: JSON.stringify({ code: 1, message: "Session ID unknown" }) });
    const peek = await request(edge, poll(sid), { localAddress: "127.0.0.8" });
    assert.equal(peek.status, 400);
    const relayed = withTimeout(new Promise((r) => b.socket.once("typing:start", r)), 3000, "the victim's relay");
    const own = await request(edge, poll(sid), { method: "POST", body: `42${JSON.stringify(["typing:start", { recipientId: bob.id }])}` });
    assert.equal(own.text, "ok", "the victim still posts");
    const ev = await relayed;
    assert.equal(ev.userId, victim.id);
    assert.ok(!edge.child.output.includes(sid), "the sid is in no log line");
  });

  test("a WebSocket upgrade with the victim's sid from another address is refused; from the victim's address it works", async () => {
    const sid = await pollingSession(edge, makeUser("victim2"));
    const thief = rawWs(edge, { localAddress: "127.0.0.9", query: `EIO=4&transport=websocket&sid=${sid}` });
    await withTimeout(thief.closed, 3000, "the thief's upgrade to be closed");
    assert.deepEqual(thief.frames, [], "nothing was sent to the thief");
    const own = rawWs(edge, { query: `EIO=4&transport=websocket&sid=${sid}` });
    await withTimeout(new Promise((r) => own.ws.once("open", r)), 3000, "the victim's upgrade");
    own.ws.send("2probe");
    assert.equal(await withTimeout(new Promise((r) => own.ws.once("message", (d) => r(d.toString()))), 3000, "3probe"), "3probe");
    own.ws.terminate();
  });

  test("behind a trusted proxy the forwarded address is the client's: sessions per address count it, and binds the sid to it", async () => {
    const proxied = await edgeWith("atk-proxy", { EDGE_TRUSTED_PROXIES: "127.0.0.1", EDGE_MAX_CONN_PER_IP: "2", EDGE_HANDSHAKES_PER_S: "0" });
    const from = (ip) => ({ headers: { "X-Forwarded-For": `203.0.113.9, ${ip}` } });
    const s1 = await request(proxied, poll(), from("198.51.100.1"));
    const s2 = await request(proxied, poll(), from("198.51.100.1"));
    const s3 = await request(proxied, poll(), from("198.51.100.1"));
    const other = await request(proxied, poll(), from("198.51.100.2"));
    assert.deepEqual([s1.status, s2.status, s3.status, other.status], [200, 200, 429, 200]);
    const sid = JSON.parse(s1.text.slice(1).split("\x1e")[0]).sid;
    const stolen = await request(proxied, poll(sid), from("198.51.100.2"));
    assert.equal(stolen.status, 400, "another forwarded client cannot use the sid");
    const own = await request(proxied, poll(sid), { ...from("198.51.100.1"), method: "POST", body: "1" });
    assert.equal(own.text, "ok");
    const untrusted = await request(proxied, poll(), { localAddress: "127.0.0.10", headers: { "X-Forwarded-For": "198.51.100.1" } });
    assert.equal(untrusted.status, 200, "an X-Forwarded-For from anyone else is ignored (its address has room)");
    assert.equal(await metric(proxied, "chat_edge_forwarded_total"), 6, "each of the six requests from the proxy, not the one from elsewhere");
  });
});

// ---------------------------------------------------------------- an office behind one address

describe("an office behind one NAT address, with the default limits", () => {
  test("1,200 sessions from one address, opened at 150 a second: every one gets its open packet", { timeout: 60000 }, async () => {
    const edge = await edgeWith("atk-nat", {});
    const pair = await canary(edge);
    const clients = [];
    for (let i = 0; i < 1200; i++) {
      clients.push(rawWs(edge, { localAddress: "127.0.0.11" }));
      if (i % 15 === 14) await delay(100);
    }
    const opened = await withTimeout(Promise.all(clients.map((c) => c.opened)), 20000, "1,200 open packets");
    assert.equal(opened.filter((o) => o && o.startsWith("0{")).length, 1200);
    assert.ok((await pair.stop()) >= 1);
    for (const c of clients) c.ws.terminate();
    await edge.stop();
  });
});

// ---------------------------------------------------------------- tokens

describe("a validly signed token with a huge exp", () => {
  test("exp 2^63-1 and 10^15: connected (the lifetime is bounded, not overflowed), and chatting", async () => {
    const edge = await edgeWith("atk-exp", {});
    for (const exp of ["9223372036854775807", "1000000000000000"]) {
      const u = makeUser("forever");
      const token = signRaw('{"alg":"HS256","typ":"JWT"}', `{"sub":"${u.id}","username":"forever","exp":${exp}}`);
      const c = await connectClient(edge.url, token);
      const res = await c.socket.timeout(3000).emitWithAck("typing:start", { recipientId: randomUUID() });
      assert.deepEqual(res, { ok: true });
      c.socket.close();
    }
    await edge.stop(); // a sanitizer build fails here on any overflow
  });
});

// ---------------------------------------------------------------- one user flooding another

describe("EDGE_EVENTS_TO_USER_PER_S=5, burst 10", () => {
  test("ghost text and messages to one victim: 10 at once, then 5 a second, the rest rate_limited; to someone else: not limited", async () => {
    const edge = await edgeWith("atk-pair", { EDGE_EVENTS_TO_USER_PER_S: "5", EDGE_EVENTS_TO_USER_BURST: "10", EDGE_EVENTS_PER_S: "1000", EDGE_EVENTS_BURST: "1000" });
    const mallory = makeUser("mallory");
    const victim = makeUser("victim");
    const m = await connectClient(edge.url, mallory.token);
    const v = await connectClient(edge.url, victim.token);
    closers.add(() => m.socket.close());
    closers.add(() => v.socket.close());
    let received = 0;
    v.socket.on("ghost:typing", () => received++);
    const start = Date.now();
    const results = [];
    for (let i = 0; i < 60; i++) results.push(await m.socket.timeout(3000).emitWithAck("ghost:typing", { recipientId: victim.id, text: "x".repeat(1000) }));
    const elapsed = (Date.now() - start) / 1000;
    const ok = results.filter((r) => r.ok).length;
    assert.ok(ok >= 10 && ok <= 10 + Math.ceil(elapsed * 5) + 1, `${ok} accepted in ${elapsed} s`);
    const refused = results.find((r) => !r.ok);
    assert.equal(refused.error.code, "rate_limited");
    const send = await m.socket.timeout(3000).emitWithAck("message:send", { recipientId: victim.id, content: "hi", type: "text" });
    assert.deepEqual(send.ok ? "ok" : send.error.code, "rate_limited", "messages to the victim share the budget");
    const other = makeUser("other");
    const o = await connectClient(edge.url, other.token);
    closers.add(() => o.socket.close());
    assert.deepEqual(await m.socket.timeout(3000).emitWithAck("typing:start", { recipientId: other.id }), { ok: true }, "to someone else");
    // A marker once the bucket has a token again: everything accepted before it has arrived by then.
    const marker = withTimeout(new Promise((r) => v.socket.on("typing:start", r)), 3000, "the marker");
    await delay(300);
    assert.deepEqual(await m.socket.timeout(3000).emitWithAck("typing:start", { recipientId: victim.id }), { ok: true });
    await marker;
    assert.ok(received <= ok, `the victim got ${received} ghost texts, ${ok} were accepted`);
  });
});

describe("EDGE_QUERIES_PER_USER_PER_S=5 (burst 10)", () => {
  test("one user's sockets share the budget of presence:request and message:history; another user's queries go on", async () => {
    const edge = await edgeWith("atk-queries", { EDGE_QUERIES_PER_USER_PER_S: "5", EDGE_EVENTS_PER_S: "1000", EDGE_EVENTS_BURST: "1000" });
    const hog = makeUser("hog");
    const tabs = [];
    for (let i = 0; i < 4; i++) {
      const c = await connectClient(edge.url, hog.token);
      closers.add(() => c.socket.close());
      tabs.push(c);
    }
    const start = Date.now();
    const results = [];
    for (let i = 0; i < 40; i++) {
      const tab = tabs[i % 4].socket;
      results.push(await tab.timeout(5000).emitWithAck(i % 2 ? "presence:request" : "message:history", i % 2 ? [hog.id] : { withUserId: randomUUID() }));
    }
    const elapsed = (Date.now() - start) / 1000;
    const ok = results.filter((r) => r.ok).length;
    assert.ok(ok >= 10 && ok <= 10 + Math.ceil(elapsed * 5) + 1, `${ok} answered in ${elapsed} s`);
    assert.equal(results.find((r) => !r.ok).error.code, "rate_limited");
    const other = await connectClient(edge.url, makeUser("other").token);
    closers.add(() => other.socket.close());
    assert.equal((await other.socket.timeout(3000).emitWithAck("presence:request", [hog.id])).ok, true, "another user is not limited by the hog");
  });
});

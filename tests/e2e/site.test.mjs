// The edge's plain HTTP routes and the services' health endpoints:
// GET /healthz and /metrics (edge on its port; messaging and presence on
// HEALTH_PORT), the demo's static files (EDGE_STATIC_DIR, nothing outside
// it), and the demo-only POST /dev/login (EDGE_DEV_LOGIN=1 with a "dev-"
// secret; refused at start otherwise).
import { after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import {
  EDGE_BIN, RawHttp, connectClient, freePort, httpRequest, shutdown, startEdge, startMessaging, startNats, startPostgres,
  startPresence, test, withTimeout,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const DEV_SECRET = "dev-e2e-secret-0123456789";

/** One request on its own connection, bytes as given (no URL normalisation). */
async function raw(edge, method, p, { body, headers = {} } = {}) {
  const c = new RawHttp(edge.port);
  await withTimeout(c.connected, 3000, `connect to ${edge.name}`);
  c.request({ method, path: p, body, headers: { Connection: "close", ...headers } });
  try {
    return await c.response(3000, `${method} ${p}`);
  } finally {
    c.abort();
  }
}

/** Polls url until its status is want (bounded). */
async function statusBecomes(url, want, ms = 10000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = (await httpRequest(url, { ms: 2000 })).status;
      if (last === want) return;
    } catch (err) {
      last = err.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer ${want} within ${ms} ms (last: ${last})`);
}

describe("health, metrics, static files, dev login", () => {
  let nats, pg, edge, devEdge, messaging, presence, staticDir;

  before(async () => {
    staticDir = mkdtempSync(path.join(os.tmpdir(), "e2e-static-"));
    mkdirSync(path.join(staticDir, "js"));
    writeFileSync(path.join(staticDir, "index.html"), "<!doctype html><title>demo</title>");
    writeFileSync(path.join(staticDir, "js", "app.js"), "console.log(1);");
    writeFileSync(path.join(path.dirname(staticDir), "e2e-outside.txt"), "secret");
    nats = await startNats();
    pg = await startPostgres();
    messaging = await startMessaging({ nats, pg });
    presence = await startPresence({ nats, pg });
    edge = await startEdge({ nats, name: "site", env: { EDGE_STATIC_DIR: staticDir } });
    devEdge = await startEdge({ nats, name: "dev", env: { JWT_SECRET: DEV_SECRET, EDGE_DEV_LOGIN: "1" } });
  });
  after(() => shutdown());

  test("GET /healthz: 200 while NATS is up on the edge, messaging and presence", async () => {
    for (const url of [edge.url, messaging.healthUrl, presence.healthUrl]) await statusBecomes(`${url}/healthz`, 200);
    const r = await raw(edge, "GET", "/healthz");
    assert.deepEqual(JSON.parse(r.body), { status: "ok" });
  });

  test("GET /metrics: Prometheus text with sessions, events and errors", async () => {
    const u = makeUser("metrics");
    const { socket: s } = await connectClient(edge.url, u.token);
    const res = await s.timeout(3000).emitWithAck("typing:start", { recipientId: "nope" });
    assert.equal(res.ok, false);
    s.close();
    const r = await raw(edge, "GET", "/metrics");
    assert.equal(r.status, 200);
    assert.match(r.headers["content-type"], /^text\/plain/);
    assert.match(r.body, /^# TYPE chat_edge_sessions gauge$/m);
    assert.match(r.body, /^chat_edge_events_in_total\{event="typing:start"\} [1-9]/m);
    assert.match(r.body, /^chat_edge_errors_total\{code="bad_request"\} [1-9]/m);
    assert.match(r.body, /^chat_edge_connects_total\{result="ok"\} [1-9]/m);
    const m = await httpRequest(`${messaging.healthUrl}/metrics`);
    assert.match(m.text, /^chat_messaging_postgres_up 1$/m);
    const p = await httpRequest(`${presence.healthUrl}/metrics`);
    assert.match(p.text, /^chat_presence_postgres_up 1$/m);
  });

  test("messaging's /healthz is 503 while PostgreSQL is down, 200 again after", async () => {
    pg.stop();
    try {
      await statusBecomes(`${messaging.healthUrl}/healthz`, 503, 15000);
    } finally {
      pg.start();
    }
    await statusBecomes(`${messaging.healthUrl}/healthz`, 200, 15000);
  });

  test("static files: / is index.html, files below the folder, nothing outside it", async () => {
    const index = await raw(edge, "GET", "/");
    assert.equal(index.status, 200);
    assert.match(index.headers["content-type"], /^text\/html/);
    assert.match(index.body, /<title>demo<\/title>/);
    const js = await raw(edge, "GET", "/js/app.js");
    assert.equal(js.status, 200);
    assert.equal(js.headers["content-type"], "application/javascript");
    for (const p of ["/missing.html", "/../e2e-outside.txt", "/js/../../e2e-outside.txt", "/%2e%2e/e2e-outside.txt"]) {
      const r = await raw(edge, "GET", p);
      assert.equal(r.status, 404, `${p} must be 404, got ${r.status}`);
    }
    const none = await raw(devEdge, "GET", "/"); // no EDGE_STATIC_DIR
    assert.equal(none.status, 404);
  });

  test("POST /dev/login is not served unless EDGE_DEV_LOGIN=1; GET /dev/login says whether it is", async () => {
    const r = await raw(edge, "POST", "/dev/login", { body: '{"username":"alice"}' });
    assert.equal(r.status, 404);
    assert.equal((await raw(edge, "GET", "/dev/login")).status, 404);
    const on = await raw(devEdge, "GET", "/dev/login");
    assert.equal(on.status, 200);
    assert.deepEqual(JSON.parse(on.body), { devLogin: true });
  });

  test("POST /dev/login issues a working token; the same name gets the same id", async () => {
    const login = async (username) => {
      const r = await raw(devEdge, "POST", "/dev/login", { body: JSON.stringify({ username }) });
      assert.equal(r.status, 200);
      return JSON.parse(r.body);
    };
    const a = await login("alice");
    const again = await login("alice");
    const b = await login("bob");
    assert.equal(a.username, "alice");
    assert.match(a.userId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(again.userId, a.userId);
    assert.notEqual(b.userId, a.userId);
    const { socket: s } = await connectClient(devEdge.url, a.token);
    assert.ok(s.connected);
    s.close();
    for (const body of ['{"username":""}', '{"username":42}', "not json", `{"username":"${"x".repeat(40)}"}`]) {
      const r = await raw(devEdge, "POST", "/dev/login", { body });
      assert.equal(r.status, 400, `${body} must be refused`);
    }
  });

  test("LOG_FORMAT=json: every log line is one JSON object with time, level, service and msg", async () => {
    const port = await freePort();
    const r = spawnSync(EDGE_BIN, [], {
      env: { PATH: process.env.PATH, EDGE_HOST: "127.0.0.1", EDGE_PORT: String(port), EDGE_MODE: "conformance", LOG_FORMAT: "json", LSAN_OPTIONS: process.env.LSAN_OPTIONS },
      encoding: "utf8",
      timeout: 1500,
    });
    const lines = r.stderr.split("\n").filter((l) => l);
    assert.ok(lines.length >= 2, r.stderr);
    for (const l of lines) {
      const o = JSON.parse(l);
      assert.deepEqual(Object.keys(o), ["time", "level", "service", "msg"]);
      assert.match(o.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(o.service, "edge");
    }
    assert.ok(lines.some((l) => JSON.parse(l).msg.startsWith("listening ")));
  });

  test("EDGE_DEV_LOGIN=1 with a secret that is not a dev secret: the edge refuses to start", async () => {
    const r = spawnSync(EDGE_BIN, [], {
      env: { PATH: process.env.PATH, EDGE_HOST: "127.0.0.1", EDGE_PORT: "1", JWT_SECRET: "production-secret", EDGE_DEV_LOGIN: "1", LSAN_OPTIONS: process.env.LSAN_OPTIONS },
      encoding: "utf8",
      timeout: 10000,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /EDGE_DEV_LOGIN=1 needs a dev secret/);
  });
});

describe("chat-tap", () => {
  let nats, pg, edge;
  before(async () => {
    nats = await startNats();
    pg = await startPostgres();
    await startMessaging({ nats, pg });
    edge = await startEdge({ nats, name: "tap" });
  });
  after(() => shutdown());

  /** Runs chat-tap with args; resolves with its JSON lines once until(lines) is true (bounded). */
  function tap(args, until, ms = 10000) {
    const bin = path.join(path.dirname(EDGE_BIN), "chat-tap");
    const child = spawn(bin, args, { env: { PATH: process.env.PATH, NATS_URL: nats.url, LSAN_OPTIONS: process.env.LSAN_OPTIONS } });
    let out = "";
    let err = "";
    const subscribed = new Promise((resolve) => child.stderr.on("data", (d) => { err += d; if (/subscribed/.test(err)) resolve(); }));
    const lines = () => out.split("\n").filter((l) => l).map((l) => JSON.parse(l));
    const done = new Promise((resolve, reject) => {
      child.stdout.on("data", (d) => {
        out += d;
        if (until(lines())) resolve();
      });
      child.once("exit", (code) => reject(new Error(`chat-tap exited (${code}) early: ${out}`)));
    });
    const stopped = () => new Promise((resolve) => { child.once("close", resolve); child.kill("SIGTERM"); });
    return {
      ready: () => withTimeout(subscribed, ms, "chat-tap to subscribe"),
      result: withTimeout(done, ms, `chat-tap ${args.join(" ")}`).then(lines),
      stopped,
    };
  }

  test("live subjects as JSON lines, and a replay of CHAT_EVENTS with --since", async () => {
    const alice = makeUser("alice"), bob = makeUser("bob");
    const createdSubject = `chat.event.message.created.${alice.id}.${bob.id}`;
    const live = tap(["chat.>"], (ls) => ls.some((l) => l.subject === createdSubject));
    await live.ready();
    const { socket } = await connectClient(edge.url, alice.token);
    const res = await socket.timeout(5000).emitWithAck("message:send", { recipientId: bob.id, content: "tapped", type: "text" });
    assert.equal(res.ok, true);
    const lines = await live.result;
    await live.stopped();
    const created = lines.find((l) => l.subject === createdSubject);
    assert.equal(created.type, "chat.v1.Message");
    assert.equal(created.data.id, res.message.id);
    assert.equal(created.data.content, "tapped");
    socket.close();

    const replay = tap(["--since", "600", "chat.event.>"], (ls) => ls.some((l) => l.data.id === res.message.id));
    const replayed = await replay.result;
    await replay.stopped();
    assert.equal(replayed[0].subject, createdSubject);
  });

  test("a relay between two sockets of one edge (delivered there without NATS) is still on chat.user.<id>", async () => {
    const alice = makeUser("alice"), bob = makeUser("bob");
    const live = tap(["chat.user.>"], (ls) => ls.some((l) => l.data.ghost_typing?.text === "seen by the tap"));
    await live.ready();
    const a = await connectClient(edge.url, alice.token);
    const b = await connectClient(edge.url, bob.token);
    const got = new Promise((resolve) => b.socket.on("ghost:typing", resolve));
    const res = await a.socket.timeout(5000).emitWithAck("ghost:typing", { recipientId: bob.id, text: "seen by the tap" });
    assert.deepEqual(res, { ok: true });
    assert.deepEqual(await withTimeout(got, 5000, "bob's ghost:typing"), { userId: alice.id, text: "seen by the tap" });
    const lines = await live.result;
    await live.stopped();
    const hit = lines.filter((l) => l.data.ghost_typing?.text === "seen by the tap");
    assert.equal(hit.length, 1);
    assert.equal(hit[0].subject, `chat.user.${bob.id}`);
    assert.equal(hit[0].data.ghost_typing.user_id, alice.id);
    a.socket.close();
    b.socket.close();
  });

  test("a bad argument is refused with a usage line", () => {
    const bin = path.join(path.dirname(EDGE_BIN), "chat-tap");
    const r = spawnSync(bin, ["--since", "yesterday", "chat.>"], { encoding: "utf8", timeout: 5000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--since takes/);
  });
});

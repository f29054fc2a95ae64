// Harness for the chat-edge end-to-end tests: free ports, nats-server and
// chat-edge child processes (an edge stopped with SIGTERM must exit 0 with no
// sanitizer report), bounded waits, recorders for socket.io-client sockets
// (WebSocket only, or the client's default transports with a controllable
// upgrade), raw Engine.IO clients over WebSocket and over HTTP long-polling,
// and a raw HTTP/1.1 client. Every wait here is bounded.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test as nodeTest } from "node:test";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { markChatEdge, takeViolations, checkEvent, SERVER_EVENTS } from "./contract.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));

export const EDGE_BIN = process.env.CHAT_EDGE_BIN
  ? path.resolve(process.env.CHAT_EDGE_BIN)
  : path.resolve(here, "../../build/bin/chat-edge");
export const NATS_BIN = process.env.NATS_SERVER_BIN || "nats-server";
const BIN_DIR = path.dirname(EDGE_BIN);
export const MESSAGING_BIN = process.env.CHAT_MESSAGING_BIN ? path.resolve(process.env.CHAT_MESSAGING_BIN) : path.join(BIN_DIR, "chat-messaging");
export const PRESENCE_BIN = process.env.CHAT_PRESENCE_BIN ? path.resolve(process.env.CHAT_PRESENCE_BIN) : path.join(BIN_DIR, "chat-presence");
const TESTPG = path.resolve(here, "../../scripts/testpg.sh");
export const JWT_SECRET = "e2e-test-secret-0123456789abcdef";

// ---------------------------------------------------------------- timing

/** Rejects with a clear message when promise does not settle within ms. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A plain delay; only for deliberate time windows (an outage), never to wait for an event. */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- ports

/** A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it back). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tryConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

/** Resolves once 127.0.0.1:port accepts TCP; bounded number of attempts. */
export async function waitForTcp(port, { attempts = 100, interval = 50, what = `port ${port}` } = {}) {
  for (let i = 0; i < attempts; i++) {
    if (await tryConnect(port)) return;
    await delay(interval);
  }
  throw new Error(`${what} did not accept TCP after ${attempts} attempts`);
}

// ---------------------------------------------------------------- processes

const live = new Set(); // every child still running, for cleanup
const started = new Set(); // every child of this test file, for log dumps

class Child {
  constructor(name, cmd, args, env, tailLines = 150) {
    this.name = name;
    this.tailLines = tailLines;
    this.output = "";
    this.stderr = "";
    this.exited = false;
    this.exitCode = null;
    this.exitSignal = null;
    this.proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.exitPromise = new Promise((resolve) => {
      // "close", not "exit": stdout and stderr are read to the end by then
      // (a sanitizer report is the last thing a process writes).
      this.proc.once("close", (code, signal) => {
        this.exited = true;
        this.exitCode = code;
        this.exitSignal = signal;
        live.delete(this);
        resolve({ code, signal });
      });
      this.proc.once("error", (err) => {
        this.output += `\n[spawn error] ${err.message}\n`;
        this.exited = true;
        live.delete(this);
        resolve({ code: null, signal: null, error: err });
      });
    });
    this.watchers = [];
    const onData = (chunk) => {
      this.output += chunk.toString("utf8");
      for (const w of this.watchers.slice()) w();
    };
    this.proc.stdout.on("data", onData);
    this.proc.stderr.on("data", (chunk) => {
      this.stderr += chunk.toString("utf8");
      onData(chunk);
    });
    live.add(this);
    started.add(this);
  }

  /** Resolves with the first line of output (from the start) that matches re. */
  waitForLine(re, ms, what = String(re)) {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          const line = this.output.split("\n").find((l) => re.test(l));
          if (line !== undefined) {
            this.watchers = this.watchers.filter((w) => w !== check);
            resolve(line);
          } else if (this.exited) {
            this.watchers = this.watchers.filter((w) => w !== check);
            reject(new Error(`${this.name} exited (code ${this.exitCode}, signal ${this.exitSignal}) before ${what}`));
          }
        };
        this.watchers.push(check);
        this.exitPromise.then(check);
        check();
      }),
      ms,
      `${this.name}: ${what}`,
    );
  }

  /** SIGTERM (or signal), then SIGKILL after graceMs. Resolves with {code, signal}. */
  async stop(signal = "SIGTERM", graceMs = 3000) {
    if (this.exited) return this.exitPromise;
    try {
      this.proc.kill(signal);
    } catch {}
    const timer = setTimeout(() => {
      try {
        this.proc.kill("SIGKILL");
      } catch {}
    }, graceMs);
    const r = await this.exitPromise;
    clearTimeout(timer);
    return r;
  }

  tail(lines = this.tailLines) {
    const all = this.output.split("\n");
    return all.slice(-lines).join("\n");
  }
}

/** Prints the recent output of every child started by this file (called when a test fails). */
export function dumpLogs(reason = "") {
  for (const c of started) {
    const state = c.exited ? ` (exited: code ${c.exitCode}, signal ${c.exitSignal})` : "";
    console.error(`----- ${c.name}${state} output, last lines${reason ? " — " + reason : ""} -----\n${c.tail()}\n----- end ${c.name} -----`);
  }
}

process.on("exit", () => {
  for (const c of live) {
    try {
      c.proc.kill("SIGKILL");
    } catch {}
  }
});

/** node:test's test(), with the children's logs printed when the test fails. */
export function test(name, optsOrFn, maybeFn) {
  const fn = typeof optsOrFn === "function" ? optsOrFn : maybeFn;
  const opts = typeof optsOrFn === "function" ? {} : optsOrFn;
  return nodeTest(name, { timeout: 30000, ...opts }, async (t) => {
    try {
      const r = await fn(t);
      assertContract(`test "${name}"`);
      return r;
    } catch (err) {
      await delay(300); // let a child that just died report its exit status before the dump
      dumpLogs(`failed: ${name}`);
      throw err;
    }
  });
}

/**
 * What the edge's logs call a session: FNV-1a 32 of its sid, in hex (the sid
 * itself is a credential and never reaches a log).
 */
export function sessionTag(sid) {
  let h = 2166136261;
  for (const c of Buffer.from(sid, "utf8")) h = Math.imul(h ^ c, 16777619) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** Throws when a chat edge sent any client of these tests a payload that breaks docs/schema/chat.schema.json. */
export function assertContract(what) {
  const v = takeViolations();
  if (v.length) throw new Error(`${what}: ${v.length} payload(s) do not match docs/schema/chat.schema.json:\n${v.slice(0, 20).join("\n")}`);
}

const startedNats = new Set(); // every nats-server of this file, for shutdown()
const startedEdges = new Set(); // every chat-edge, chat-messaging and chat-presence of this file, for shutdown()
const startedPg = new Set(); // every throwaway PostgreSQL of this file, for shutdown()

/**
 * Starts a throwaway PostgreSQL (scripts/testpg.sh) on a free loopback port.
 * Returns {url, host, port, dir, stop(), start(), psql(sql)}: stop/start keep the
 * data (for outage tests); psql runs one statement and returns its rows as text.
 */
export async function startPostgres() {
  const out = execFileSync(TESTPG, ["start"], { encoding: "utf8", timeout: 60000 }).trim();
  const kv = Object.fromEntries(out.split(/\s+/).map((w) => w.split("=")));
  const pgbin = execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim();
  const asPg = (cmd, args) =>
    process.getuid && process.getuid() === 0 ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args];
  const ctl = (action) => {
    const [cmd, args] = asPg(path.join(pgbin, "pg_ctl"), [
      "-D", path.join(kv.DIR, "pg", "data"), "-l", path.join(kv.DIR, "pg", "server.log"), "-w", "-t", "30",
      ...(action === "stop" ? ["-m", "immediate"] : ["-o", `-p ${kv.PGPORT} -k ${path.join(kv.DIR, "pg")} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200`]),
      action,
    ]);
    execFileSync(cmd, args, { stdio: "ignore", timeout: 60000 });
  };
  const pg = {
    host: kv.PGHOST,
    port: Number(kv.PGPORT),
    dir: kv.DIR,
    url: `postgresql://postgres@127.0.0.1:${kv.PGPORT}/postgres`,
    /** Stops the server at once (data kept). */
    stop: () => ctl("stop"),
    /** Starts it again on the same port. */
    start: () => ctl("start"),
    /** Runs one SQL statement with psql; returns the rows (unaligned, "|"-separated). */
    psql(sql) {
      return execFileSync("psql", ["-h", "127.0.0.1", "-p", String(kv.PGPORT), "-U", "postgres", "-d", "postgres", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], { encoding: "utf8", timeout: 30000 })
        .split("\n")
        .filter((l) => l !== "");
    },
    async destroy() {
      startedPg.delete(pg);
      try {
        execFileSync(TESTPG, ["stop", kv.DIR], { stdio: "ignore", timeout: 60000 });
      } catch {}
    },
  };
  startedPg.add(pg);
  return pg;
}

/**
 * Starts a service binary (chat-messaging or chat-presence) and waits for the
 * log line ready (a RegExp). Stopping it with SIGTERM checks a clean exit like
 * an edge. env is added to NATS_URL / DATABASE_URL / LOG_LEVEL.
 */
async function startService(kind, bin, { nats, pg, name = kind, env = {}, ready, readyTimeout = 15000 } = {}) {
  if (!existsSync(bin)) throw new Error(`${kind} binary not found at ${bin} (build it with make)`);
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? "/tmp",
    ASAN_OPTIONS: process.env.ASAN_OPTIONS,
    LSAN_OPTIONS: process.env.LSAN_OPTIONS,
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS,
    LOG_LEVEL: "debug",
    HEALTH_HOST: "127.0.0.1",
    HEALTH_PORT: String(await freePort()),
    ...(nats ? { NATS_URL: nats.url } : {}),
    ...(pg ? { DATABASE_URL: pg.url } : {}),
    ...env,
  };
  for (const k of Object.keys(fullEnv)) if (fullEnv[k] === undefined) delete fullEnv[k];
  const child = new Child(`${kind}:${name}`, bin, [], fullEnv);
  if (ready) {
    try {
      await child.waitForLine(ready, readyTimeout, `a ${ready} log line`);
    } catch (err) {
      const out = child.tail();
      await child.stop("SIGKILL");
      throw new Error(`${err.message}\n--- ${kind} output ---\n${out}`);
    }
  }
  const svc = {
    name,
    child,
    /** GET /healthz and /metrics of the service. */
    healthUrl: `http://127.0.0.1:${fullEnv.HEALTH_PORT}`,
    /** SIGTERM (checked: exit 0, no sanitizer report) or another signal (not checked). */
    async stop(signal = "SIGTERM", grace = 10000) {
      startedEdges.delete(svc);
      const r = await child.stop(signal, grace);
      if (signal === "SIGTERM") assertCleanExit(child, r);
      return r;
    },
  };
  startedEdges.add(svc);
  return svc;
}

/**
 * Starts any binary of ours with env (added to PATH/HOME and the sanitizer
 * options) and waits for a log line matching ready. Returns {child, stop()}:
 * stop() sends SIGTERM and checks the clean exit like an edge's.
 */
export async function startBinary({ name, bin, env = {}, ready = /listening/, readyTimeout = 10000 }) {
  if (!existsSync(bin)) throw new Error(`${name}: binary not found at ${bin} (build it with make)`);
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? "/tmp",
    ASAN_OPTIONS: process.env.ASAN_OPTIONS,
    LSAN_OPTIONS: process.env.LSAN_OPTIONS,
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS,
    ...env,
  };
  for (const k of Object.keys(fullEnv)) if (fullEnv[k] === undefined) delete fullEnv[k];
  const child = new Child(name, bin, [], fullEnv);
  try {
    await child.waitForLine(ready, readyTimeout, `a ${ready} log line`);
  } catch (err) {
    const out = child.tail();
    await child.stop("SIGKILL");
    throw new Error(`${err.message}\n--- ${name} output ---\n${out}`);
  }
  const proc = {
    name,
    child,
    async stop(signal = "SIGTERM", grace = 10000) {
      startedEdges.delete(proc);
      const r = await child.stop(signal, grace);
      if (signal === "SIGTERM") assertCleanExit(child, r);
      return r;
    },
  };
  startedEdges.add(proc);
  return proc;
}

/** The directory of the binaries under test (beside chat-edge). */
export { BIN_DIR };

/**
 * Messaging's per-user limits, lifted like the edge's: tests send fast from
 * one user on purpose, and to users who never connected. A test of a limit
 * sets it (abuse-messaging.test.mjs); badinput.test.mjs runs the defaults.
 */
export const MESSAGING_LIMITS_OFF = {
  MESSAGING_HISTORY_PER_USER: "0",
  MESSAGING_HISTORY_PER_S: "0",
  MESSAGING_SENDS_PER_MIN: "0",
  MESSAGING_SENDS_PER_DAY: "0",
  MESSAGING_REQUIRE_KNOWN_RECIPIENT: "0",
};

/** chat-messaging; resolves once it has set up JetStream and its schema ("ready" log line). env is added to MESSAGING_LIMITS_OFF. */
export function startMessaging(opts = {}) {
  return startService("chat-messaging", MESSAGING_BIN, { ready: /\bready partitions=/, ...opts, env: { ...MESSAGING_LIMITS_OFF, ...opts.env } });
}

/**
 * chat-presence; resolves once it is active (its "resync" request went out) or a
 * standby with the active's state ("standby synced"), unless ready says otherwise.
 * PRESENCE_GRACE_MS is 0 unless opts.env sets it: the tests see a user go
 * offline the moment their last session closes, as before the grace period;
 * the tests of the grace set it.
 */
export function startPresence(opts = {}) {
  return startService("chat-presence", PRESENCE_BIN, { ready: /resync requested|standby synced/, ...opts, env: { PRESENCE_GRACE_MS: "0", ...opts.env } });
}

/** A gauge or counter of a service's /metrics (startPresence's healthUrl), or null. */
export async function metricOf(svc, name) {
  const r = await httpRequest(`${svc.healthUrl}/metrics`, { ms: 2000, what: `${svc.name} /metrics` }).catch(() => null);
  if (!r || r.status !== 200) return null;
  const line = r.text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? null : Number(line.slice(name.length + 1));
}

/** Starts nats-server with JetStream on 127.0.0.1 (port and store dir reusable for a restart). */
export async function startNats({ port, dir } = {}) {
  port = port ?? (await freePort());
  dir = dir ?? mkdtempSync(path.join(os.tmpdir(), "e2e-nats-"));
  const child = new Child(`nats-server:${port}`, NATS_BIN, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], process.env, 15);
  try {
    await waitForTcp(port, { what: `nats-server on ${port}` });
  } catch (err) {
    await child.stop("SIGKILL");
    throw new Error(`${err.message}\n${child.tail()}`);
  }
  const nats = {
    port,
    dir,
    url: `nats://127.0.0.1:${port}`,
    child,
    stop: (signal) => child.stop(signal),
    /** Removes the store dir too; for the final cleanup. */
    async destroy() {
      startedNats.delete(nats);
      await child.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  startedNats.add(nats);
  return nats;
}

async function httpOk(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.text();
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * Starts a cluster of `nodes` nats-servers on 127.0.0.1: routes between free
 * ports, JetStream on every node, each its own store dir, a monitoring port
 * each. Resolves once every node answers /healthz 200 (JetStream in contact and
 * current with its meta leader). Returns {nodes, url, urlFrom(i), healthy(),
 * destroy()}: url lists every node comma-separated (a NATS_URL), urlFrom(i)
 * the same from node i on (a process given it goes to node i first); each node
 * is {index, port, url, dir, child, kill(signal = "SIGKILL"), restart()}, and
 * restart() starts it again with its port and store, then waits for the
 * cluster to be healthy. Services and edges take {url} as their nats option.
 */
export async function startNatsCluster({ nodes: count = 3, name = "chat-e2e" } = {}) {
  const ports = [];
  for (let i = 0; i < count; i++) ports.push({ port: await freePort(), cluster: await freePort(), monitor: await freePort() });
  const nodes = ports.map((p, index) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), `e2e-nats-n${index + 1}-`));
    const routes = ports.filter((_, j) => j !== index).map((q) => `nats://127.0.0.1:${q.cluster}`).join(",");
    const args = ["-a", "127.0.0.1", "-p", String(p.port), "-m", String(p.monitor), "-n", `n${index + 1}`, "-js", "-sd", dir,
                  "--cluster_name", name, "--cluster", `nats://127.0.0.1:${p.cluster}`, "--routes", routes];
    const node = {
      index,
      port: p.port,
      monitor: p.monitor,
      url: `nats://127.0.0.1:${p.port}`,
      dir,
      child: null,
      spawn() {
        node.child = new Child(`nats-server:n${index + 1}:${p.port}`, NATS_BIN, args, process.env, 15);
      },
      /** Kills the node (SIGKILL by default); its store stays for restart(). */
      kill: (signal = "SIGKILL") => node.child.stop(signal),
      async restart() {
        node.spawn();
        await cluster.healthy();
      },
    };
    return node;
  });
  const cluster = {
    nodes,
    url: nodes.map((n) => n.url).join(","),
    urlFrom: (i) => nodes.map((_, k) => nodes[(i + k) % count].url).join(","),
    /** Resolves once every running node answers /healthz 200 (bounded: 30 s). */
    async healthy(ms = 30000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const up = nodes.filter((n) => n.child && !n.child.exited);
        const ok = await Promise.all(up.map((n) => httpOk(`http://127.0.0.1:${n.monitor}/healthz`)));
        if (ok.every(Boolean)) return;
        if (Date.now() > deadline) throw new Error(`the NATS cluster is not healthy after ${ms} ms\n${nodes.map((n) => n.child?.tail()).join("\n")}`);
        await delay(50);
      }
    },
    async destroy() {
      startedNats.delete(cluster);
      for (const n of nodes) if (n.child) await n.child.stop();
      for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
    },
  };
  startedNats.add(cluster);
  for (const n of nodes) n.spawn();
  try {
    await cluster.healthy();
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

// What a sanitizer build prints when it finds a bug or a leak (ASan, LSan, UBSan).
const SANITIZER_REPORTS = [/ERROR: AddressSanitizer/, /ERROR: LeakSanitizer/, /runtime error:/];

/**
 * Throws unless an edge that was asked to stop with SIGTERM exited by itself
 * with code 0 and printed no sanitizer report on stderr: a leak of any
 * session (freed by timeout, client close, error or upgrade) shows up here
 * when the edge is built with SANITIZE=address,undefined.
 */
export function assertCleanExit(child, { code, signal } = { code: child.exitCode, signal: child.exitSignal }) {
  const problems = [];
  if (signal !== null || code !== 0) problems.push(`exit code ${code}, signal ${signal} (expected code 0 after SIGTERM)`);
  let first = -1;
  for (const re of SANITIZER_REPORTS) {
    const m = re.exec(child.stderr);
    if (m) {
      problems.push(`stderr contains ${JSON.stringify(m[0])}`);
      if (first < 0 || m.index < first) first = m.index;
    }
  }
  if (problems.length === 0) return;
  const lines = first >= 0 ? child.stderr.slice(child.stderr.lastIndexOf("\n", first) + 1).split("\n").slice(0, 120) : child.tail(40).split("\n");
  throw new Error(`${child.name} did not stop cleanly: ${problems.join("; ")}\n--- ${first >= 0 ? "sanitizer report" : "last output"} ---\n${lines.join("\n")}\n---`);
}

/** Starts chat-edge and waits for its "listening" log line. nats: result of startNats, or null. */
export async function startEdge({ nats = null, name = "edge", env = {}, listenTimeout = 10000, wrap = [], waitRecords = true } = {}) {
  if (!existsSync(EDGE_BIN)) {
    throw new Error(`chat-edge binary not found at ${EDGE_BIN} (build it with make, or set CHAT_EDGE_BIN)`);
  }
  const port = await freePort();
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? "/tmp",
    // A sanitizer build reads these (suppressions for nats.c's own leaks, halt on UBSan errors).
    ASAN_OPTIONS: process.env.ASAN_OPTIONS,
    LSAN_OPTIONS: process.env.LSAN_OPTIONS,
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS,
    EDGE_HOST: "127.0.0.1",
    EDGE_PORT: String(port),
    EDGE_ID: name,
    // Every test client comes from 127.0.0.1 and some send fast on purpose:
    // the abuse limits are off unless a test sets them (abuse.test.mjs).
    EDGE_MAX_CONN_PER_IP: "0",
    EDGE_HANDSHAKES_PER_S: "0",
    EDGE_EVENTS_PER_S: "1000000",
    EDGE_EVENTS_BURST: "1000000",
    EDGE_MAX_SOCKETS_PER_USER: "100000",
    EDGE_MAX_TCP_PER_IP: "0",
    EDGE_EVENTS_TO_USER_PER_S: "0",
    EDGE_QUERIES_PER_USER_PER_S: "0",
    JWT_SECRET,
    LOG_LEVEL: "debug",
    ...(nats ? { NATS_URL: nats.url } : {}),
    ...env,
  };
  for (const k of Object.keys(fullEnv)) if (fullEnv[k] === undefined) delete fullEnv[k];
  if (fullEnv.EDGE_MODE !== "conformance") markChatEdge(port);
  // wrap: a command that runs the edge (e.g. prlimit and its arguments, then "--").
  const child = wrap.length
    ? new Child(`chat-edge:${name}:${port}`, wrap[0], [...wrap.slice(1), EDGE_BIN], fullEnv)
    : new Child(`chat-edge:${name}:${port}`, EDGE_BIN, [], fullEnv);
  try {
    await child.waitForLine(/listening/, listenTimeout, "a 'listening' log line");
    // A chat edge with NATS delivers stored events (and gives recovery ids)
    // once its records consumer has started, a moment after it listens.
    if (nats && waitRecords && fullEnv.EDGE_MODE !== "conformance")
      await child.waitForLine(/records consumer started/, listenTimeout, "the records consumer's start");
  } catch (err) {
    const out = child.tail();
    await child.stop("SIGKILL");
    throw new Error(`${err.message}\n--- edge output ---\n${out}`);
  }
  const edge = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    wsBase: `ws://127.0.0.1:${port}`,
    child,
    /**
     * Stops the edge (SIGTERM, SIGKILL after grace ms). After a SIGTERM, or when
     * the edge had already exited, throws unless it exited 0 without a
     * sanitizer report (assertCleanExit). Another signal is not checked.
     */
    async stop(signal = "SIGTERM", grace = 10000) {
      startedEdges.delete(edge);
      const r = await child.stop(signal, grace);
      if (signal === "SIGTERM") assertCleanExit(child, r);
      return r;
    },
  };
  startedEdges.add(edge);
  return edge;
}

/**
 * Closes every client (long-polling sessions with POST "1": an edge waits for
 * idle polling sessions when it stops), then stops every edge still running
 * (checked as in edge.stop) and every nats-server started by this file. Meant
 * for a file's after() hook: a dirty exit of any edge fails the file.
 */
export async function shutdown() {
  closeAll();
  await closeAllPolling();
  const errors = [];
  for (const edge of [...startedEdges]) {
    try {
      await edge.stop();
    } catch (err) {
      errors.push(err);
    }
  }
  for (const nats of [...startedNats]) await nats.destroy();
  for (const pg of [...startedPg]) await pg.destroy();
  try {
    assertContract("after the last test");
  } catch (err) {
    errors.push(err);
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new Error(errors.map((e) => e.message).join("\n\n"));
}

// ---------------------------------------------------------------- socket.io-client

/**
 * Records every event a socket.io-client socket receives, in order.
 * ignore: event names skipped (presence:update / user:status come from the
 * presence service, which is not part of these tests).
 */
export function record(socket, { ignore = ["presence:update", "user:status"] } = {}) {
  const events = [];
  const waiters = [];
  let cursor = 0;
  socket.onAny((event, ...args) => {
    if (ignore.includes(event)) return;
    events.push({ event, args });
    const w = waiters.shift();
    if (w) w();
  });
  const rec = {
    events,
    /** The next event not yet consumed by next(). */
    next(ms = 3000, what = "the next event") {
      if (cursor < events.length) return Promise.resolve(events[cursor++]);
      return new Promise((resolve, reject) => {
        const waiter = () => {
          clearTimeout(timer);
          resolve(events[cursor++]);
        };
        const timer = setTimeout(() => {
          // A timed-out waiter must not consume a later event.
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          reject(new Error(`timed out after ${ms} ms waiting for ${what} on socket ${socket.id}`));
        }, ms);
        waiters.push(waiter);
      });
    },
    /** Unconsumed events, for diagnostics. */
    pending() {
      return events.slice(cursor);
    },
  };
  return rec;
}

/**
 * How the chat tests connect socket.io-client, each test file running its chat
 * tests once per entry: "websocket" (transports: ["websocket"]) and "default"
 * (the client's defaults: HTTP long-polling first, then the upgrade to
 * WebSocket). "polling" (transports: ["polling"]) is there for single tests.
 */
export const TRANSPORTS = ["websocket", "default"];

/**
 * An http.Agent for the client's WebSocket transport that holds every TCP
 * connection until release(): with it, a client on the default transports
 * stays on long-polling (its upgrade probe waits) until the test lets the
 * upgrade go. Nothing else about the client changes.
 */
export class UpgradeGate extends http.Agent {
  constructor() {
    super({ keepAlive: false });
    this.released = false;
    this.waiting = [];
  }

  createConnection(options, cb) {
    if (this.released) return net.createConnection(options);
    this.waiting.push([options, cb]);
    return undefined; // http.Agent: cb is called later
  }

  release() {
    this.released = true;
    for (const [options, cb] of this.waiting.splice(0)) cb(null, net.createConnection(options));
  }
}

/** socket.io-client options; transport: "websocket" | "default" | "polling"; gate: an UpgradeGate. */
export function clientOptions(auth, { transport = "websocket", gate } = {}) {
  const o = { reconnection: false, forceNew: true, timeout: 5000 };
  if (transport === "websocket") o.transports = ["websocket"];
  else if (transport === "polling") o.transports = ["polling"];
  else if (transport !== "default") throw new Error(`unknown transport ${transport}`);
  if (gate) o.transportOptions = { websocket: { agent: gate } };
  if (auth !== undefined) o.auth = auth;
  return o;
}

const openSockets = new Set();

/** The name of the Engine.IO transport a socket.io-client socket uses right now. */
export function transportOf(socket) {
  return socket.io.engine?.transport?.name;
}

/**
 * Connects a socket.io-client socket with auth {token}; resolves once connected
 * with {socket, rec, disconnects, upgrade, upgraded}.
 *
 * transport "default": the client connects over long-polling with its upgrade
 * held (UpgradeGate), so the CONNECT and its reply always travel over polling;
 * then beforeUpgrade({socket, rec}) runs (still on polling), then the upgrade
 * is let go and awaited (the engine's "upgrade" event), unless holdUpgrade:
 * then the test calls upgrade() itself. upgraded: a promise of the upgrade.
 */
export async function connectClient(url, token, { nsp = "/", auth, ms = 5000, transport = "websocket", beforeUpgrade, holdUpgrade = false } = {}) {
  const gate = transport === "default" ? new UpgradeGate() : undefined;
  const socket = io(url + (nsp === "/" ? "" : nsp), clientOptions(auth !== undefined ? auth : { token }, { transport, gate }));
  openSockets.add(socket);
  const rec = record(socket);
  const disconnects = [];
  socket.on("disconnect", (reason) => disconnects.push(reason));
  const upgraded = gate ? new Promise((resolve) => socket.io.engine.once("upgrade", () => resolve())) : null;
  upgraded?.catch(() => {});
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    ms,
    "socket.io connect",
  );
  const expected = transport === "websocket" ? "websocket" : "polling";
  if (transportOf(socket) !== expected) throw new Error(`connected over ${transportOf(socket)}, expected ${expected}`);
  const upgrade = async (upgradeMs = 5000) => {
    if (!gate) throw new Error(`no upgrade with transport ${transport}`);
    gate.release();
    await withTimeout(upgraded, upgradeMs, "the client's upgrade to WebSocket (engine 'upgrade' event)");
    if (transportOf(socket) !== "websocket") throw new Error(`after the upgrade the client is on ${transportOf(socket)}`);
  };
  if (gate) {
    if (beforeUpgrade) await beforeUpgrade({ socket, rec });
    if (!holdUpgrade) await upgrade();
  }
  return { socket, rec, disconnects, upgrade, upgraded };
}

/**
 * Connects with the given auth (undefined: no auth option) and expects a
 * CONNECT_ERROR. opts: a number (ms) or {ms, transport}; with "default" the
 * refusal comes over long-polling (the upgrade is held).
 */
export async function expectRefused(url, auth, opts = {}) {
  const { ms = 5000, transport = "websocket" } = typeof opts === "number" ? { ms: opts } : opts;
  const gate = transport === "default" ? new UpgradeGate() : undefined;
  const socket = io(url, clientOptions(auth, { transport, gate }));
  openSockets.add(socket);
  const seen = [];
  socket.onAny((event) => seen.push(event));
  try {
    const err = await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", () => reject(new Error("connected but should have been refused")));
        socket.once("connect_error", resolve);
      }),
      ms,
      "connect_error",
    );
    return { err, socket, seen, transport: transportOf(socket) };
  } finally {
    socket.close();
  }
}

export function closeAllClients() {
  for (const s of openSockets) s.close();
  openSockets.clear();
}

// ---------------------------------------------------------------- raw Engine.IO over ws

/**
 * A raw WebSocket client that queues every message ({text} or {binary}) and
 * records close/error. Never throws on errors: open() reports them.
 */
export class RawClient {
  constructor(url, { headers } = {}) {
    this.url = url;
    this.frames = [];
    this.cursor = 0;
    this.waiters = [];
    this.closeInfo = null;
    this.errors = [];
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024, headers });
    this.upgradeHeaders = null; // the headers of the 101, once open
    this.ws.once("upgrade", (res) => (this.upgradeHeaders = res.headers));
    this.opened = new Promise((resolve) => {
      this.ws.once("open", () => resolve({ ok: true }));
      this.ws.once("unexpected-response", (_req, res) => {
        resolve({ ok: false, status: res.statusCode });
        res.resume();
        this.ws.terminate?.();
      });
      this.ws.once("close", () => resolve({ ok: false, closedBeforeOpen: true }));
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const w of this.waiters.splice(0)) w();
        resolve(this.closeInfo);
      });
    });
    this.ws.on("error", (err) => this.errors.push(err));
    this.ws.on("message", (data, isBinary) => {
      this.frames.push(isBinary ? { binary: Buffer.from(data) } : { text: data.toString("utf8") });
      const w = this.waiters.shift();
      if (w) w();
    });
  }

  /** Next frame: {text} or {binary}; rejects if the connection closes first. */
  next(ms = 3000, what = "the next frame") {
    if (this.cursor < this.frames.length) return Promise.resolve(this.frames[this.cursor++]);
    if (this.closeInfo) return Promise.reject(new Error(`connection closed (code ${this.closeInfo.code}) while waiting for ${what}`));
    return new Promise((resolve, reject) => {
      const waiter = () => {
        clearTimeout(timer);
        if (this.cursor < this.frames.length) resolve(this.frames[this.cursor++]);
        else reject(new Error(`connection closed (code ${this.closeInfo?.code}) while waiting for ${what}`));
      };
      const timer = setTimeout(() => {
        // A timed-out waiter must not consume a later frame.
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** Next frame, which must be text; returns the string. */
  async nextText(ms, what = "a text frame") {
    const f = await this.next(ms, what);
    if (f.text === undefined) throw new Error(`expected ${what}, got a binary frame of ${f.binary.length} bytes`);
    return f.text;
  }

  async nextBinary(ms, what = "a binary frame") {
    const f = await this.next(ms, what);
    if (f.binary === undefined) throw new Error(`expected ${what}, got text ${JSON.stringify(f.text.slice(0, 200))}`);
    return f.binary;
  }

  send(data) {
    this.ws.send(data);
  }

  /** Resolves when the server has closed the connection; fails after ms. */
  waitClosed(ms = 3000, what = "the server to close the connection") {
    return withTimeout(this.closed, ms, what);
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

const rawClients = new Set();

/** Opens a raw WebSocket to an edge; path "/socket.io/" or "/engine.io/"; headers: extra request headers. */
export async function openRaw(edge, { path: p = "/socket.io/", query = "EIO=4&transport=websocket", headers } = {}) {
  const c = new RawClient(`${edge.wsBase}${p}${query === null ? "" : "?" + query}`, { headers });
  rawClients.add(c);
  return c;
}

/** Opens a raw session and reads the open packet; returns {client, open}. */
export async function openSession(edge, opts) {
  const client = await openRaw(edge, opts);
  const r = await withTimeout(client.opened, 5000, "WebSocket upgrade");
  if (!r.ok) throw new Error(`WebSocket upgrade refused: ${JSON.stringify(r)}`);
  const first = await client.nextText(3000, "the open packet");
  if (!first.startsWith("0")) throw new Error(`expected an open packet, got ${JSON.stringify(first)}`);
  return { client, open: JSON.parse(first.slice(1)) };
}

/** Raw session + Socket.IO CONNECT to "/" with auth payload; returns {client, open, sid}. */
export async function openSioSession(edge, auth, opts) {
  const { client, open } = await openSession(edge, opts);
  client.send("40" + (auth === undefined ? "" : JSON.stringify(auth)));
  const reply = await client.nextText(3000, "the CONNECT reply");
  if (!reply.startsWith("40")) throw new Error(`expected 40{...}, got ${JSON.stringify(reply)}`);
  return { client, open, sid: JSON.parse(reply.slice(2)).sid };
}

export function closeAllRaw() {
  for (const c of rawClients) c.close();
  rawClients.clear();
  for (const h of rawHttps) h.abort();
  rawHttps.clear();
}

/** Closes every client opened through the harness. */
export function closeAll() {
  closeAllClients();
  closeAllRaw();
}

// ---------------------------------------------------------------- HTTP long-polling

/** An Engine.IO v4 polling payload: packets joined by 0x1e, a Buffer as "b" + base64. */
export function encodePayload(packets) {
  return packets.map((p) => (Buffer.isBuffer(p) ? "b" + p.toString("base64") : p)).join("\x1e");
}

/** The packets of a polling payload: strings, and Buffers for "b<base64>". */
export function decodePayload(text) {
  return text.split("\x1e").map((p) => (p.startsWith("b") ? Buffer.from(p.slice(1), "base64") : p));
}

/**
 * One HTTP request with fetch, bounded by ms. Resolves {status, headers, text}
 * (headers: a fetch Headers). A timeout rejects with a clear message (and
 * aborts the request, which closes its connection).
 */
export async function httpRequest(url, { method = "GET", body, headers, ms = 3000, what } = {}) {
  const ac = new AbortController();
  const label = what ?? `${method} ${url}`;
  const timer = setTimeout(() => ac.abort(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  try {
    const res = await fetch(url, { method, body, headers, signal: ac.signal });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text };
  } catch (err) {
    if (ac.signal.aborted) throw ac.signal.reason;
    throw new Error(`${label} failed: ${err.message}${err.cause ? ` (${err.cause.message ?? err.cause})` : ""}`);
  } finally {
    clearTimeout(timer);
  }
}

let cacheBuster = 0;
const pollingClients = new Set();

/** Closes (POST "1") every long-polling session opened through the harness that is still open. */
export async function closeAllPolling() {
  await Promise.all([...pollingClients].map((c) => c.close()));
}

/**
 * A raw Engine.IO client over HTTP long-polling (fetch): get() and post() are
 * single requests, next() reads the server's packets one at a time, polling as
 * needed and answering pings ("2" → POST "3") unless told not to.
 */
export class PollingClient {
  constructor(edge, { path: p = "/socket.io/", sid = null } = {}) {
    this.edge = edge;
    this.path = p;
    this.sid = sid;
    this.buffered = [];
    pollingClients.add(this);
  }

  url(extra = "") {
    return `${this.edge.url}${this.path}?EIO=4&transport=polling${this.sid ? `&sid=${encodeURIComponent(this.sid)}` : ""}&t=${++cacheBuster}${extra}`;
  }

  get({ ms = 3000, what = `a GET on ${this.sid}`, headers } = {}) {
    return httpRequest(this.url(), { ms, what, headers });
  }

  /** POST body (a string, or an array of packets to encode). */
  post(body, { ms = 3000, what = `a POST on ${this.sid}`, headers } = {}) {
    const text = Array.isArray(body) ? encodePayload(body) : body;
    return httpRequest(this.url(), { method: "POST", body: text, headers, ms, what });
  }

  /** A GET that must succeed; returns its packets. */
  async poll(ms = 3000, what = "a poll") {
    const r = await this.get({ ms, what });
    if (r.status !== 200) throw new Error(`${what}: status ${r.status}, body ${JSON.stringify(r.text)}`);
    return decodePayload(r.text);
  }

  /** A POST that must be answered 200 "ok". */
  async send(body, what = `POST ${JSON.stringify(body).slice(0, 80)}`) {
    const r = await this.post(body, { what });
    if (r.status !== 200 || r.text !== "ok") throw new Error(`${what}: status ${r.status}, body ${JSON.stringify(r.text)}`);
  }

  /**
   * The next packet from the server (a string, or a Buffer), polling as
   * needed within ms overall. pong: answer and skip pings.
   */
  async next(ms = 3000, what = "the next packet", { pong = true } = {}) {
    const deadline = Date.now() + ms;
    for (;;) {
      while (this.buffered.length) {
        const p = this.buffered.shift();
        if (pong && p === "2") {
          await this.send("3", "the pong");
          continue;
        }
        return p;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      this.buffered.push(...(await this.poll(left, what)));
    }
  }

  /** Ends the session as a client does (POST "1"); errors are ignored. */
  async close() {
    pollingClients.delete(this);
    if (this.sid) await this.post("1", { ms: 1000, what: "the closing POST" }).catch(() => {});
  }

  /** The next packet, which must be text. */
  async nextText(ms, what, opts) {
    const p = await this.next(ms, what, opts);
    if (typeof p !== "string") throw new Error(`expected ${what} as text, got ${p.length} binary bytes`);
    return p;
  }
}

/**
 * Opens an Engine.IO session over long-polling (the handshake GET); returns
 * {client, open, res}. The handshake response must hold the open packet first;
 * anything after it is kept for client.next().
 */
export async function openPolling(edge, { path: p = "/socket.io/", headers } = {}) {
  const client = new PollingClient(edge, { path: p });
  const res = await client.get({ what: "the polling handshake", headers });
  if (res.status !== 200) throw new Error(`polling handshake: status ${res.status}, body ${JSON.stringify(res.text)}`);
  const [first, ...rest] = decodePayload(res.text);
  if (typeof first !== "string" || !first.startsWith("0")) throw new Error(`expected an open packet, got ${JSON.stringify(res.text)}`);
  const open = JSON.parse(first.slice(1));
  client.sid = open.sid;
  client.buffered.push(...rest);
  return { client, open, res };
}

// ---------------------------------------------------------------- raw HTTP/1.1

const rawHttps = new Set();

/**
 * A raw HTTP/1.1 connection, for what fetch hides: exact headers, requests
 * held open or aborted mid-way, partial bodies, connection reuse and close.
 * Responses are parsed in order ({status, headers (lower-case names), body}).
 */
export class RawHttp {
  constructor(port) {
    this.port = port;
    this.socket = net.connect({ host: "127.0.0.1", port });
    this.buf = Buffer.alloc(0);
    this.responses = [];
    this.waiters = [];
    this.isClosed = false;
    this.connected = new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
    this.connected.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.socket.once("close", () => {
        this.isClosed = true;
        for (const w of this.waiters.splice(0)) w();
        resolve();
      });
    });
    this.socket.on("error", () => {});
    this.socket.on("data", (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.parse();
    });
  }

  parse() {
    for (;;) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString("latin1").split("\r\n");
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
      if (!m) throw new Error(`bad status line ${JSON.stringify(head[0])}`);
      const headers = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(":");
        const k = line.slice(0, i).trim().toLowerCase();
        const v = line.slice(i + 1).trim();
        headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
      }
      const len = Number(headers["content-length"] ?? 0);
      if (this.buf.length < end + 4 + len) return;
      const body = this.buf.subarray(end + 4, end + 4 + len).toString("utf8");
      this.buf = this.buf.subarray(end + 4 + len);
      this.responses.push({ status: Number(m[1]), headers, body, rawHead: head.join("\n") });
      const w = this.waiters.shift();
      if (w) w();
    }
  }

  /** Writes a request; body (string) gets a Content-Length unless headers set one. */
  request({ method = "GET", path: p, headers = {}, body } = {}) {
    const h = { Host: `127.0.0.1:${this.port}`, ...headers };
    if (body !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === "content-length")) h["Content-Length"] = Buffer.byteLength(body);
    const lines = [`${method} ${p} HTTP/1.1`, ...Object.entries(h).map(([k, v]) => `${k}: ${v}`)];
    this.socket.write(lines.join("\r\n") + "\r\n\r\n" + (body ?? ""));
  }

  /** Writes raw bytes (e.g. the rest of a body). */
  write(data) {
    this.socket.write(data);
  }

  /** The next response; rejects if the connection closes first, or after ms. */
  response(ms = 3000, what = "an HTTP response") {
    if (this.responses.length) return Promise.resolve(this.responses.shift());
    if (this.isClosed) return Promise.reject(new Error(`connection closed while waiting for ${what}`));
    return new Promise((resolve, reject) => {
      const waiter = () => {
        clearTimeout(timer);
        if (this.responses.length) resolve(this.responses.shift());
        else reject(new Error(`connection closed while waiting for ${what}`));
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** Resolves when the server has closed the connection; fails after ms. */
  waitClosed(ms = 3000, what = "the server to close the HTTP connection") {
    return withTimeout(this.closed, ms, what);
  }

  /** Drops the connection (as a client that gives up a request). */
  abort() {
    this.socket.destroy();
  }
}

/** Opens a raw HTTP connection to an edge (connected when it resolves). */
export async function rawHttp(edge) {
  const h = new RawHttp(edge.port);
  rawHttps.add(h);
  await withTimeout(h.connected, 3000, `TCP connect to ${edge.name}`);
  return h;
}

/** Parses "42[...]" / "42/nsp,12[...]" style Socket.IO text (after the EIO "4"). */
export function parseSio(text) {
  const m = /^4(\d)(?:(\d+)-)?(?:(\/[^,]*),)?(\d*)(.*)$/s.exec(text);
  if (!m) return null;
  const p = {
    type: Number(m[1]),
    attachments: m[2] ? Number(m[2]) : 0,
    nsp: m[3] ?? "/",
    ackId: m[4] === "" ? null : Number(m[4]),
    data: m[5] === "" ? undefined : JSON.parse(m[5]),
  };
  // A chat event a raw client got is checked against the schema like the
  // socket.io-client ones (the raw clients do not know which edge mode they
  // talk to: events of the conformance application have other names).
  if (p.type === 2 && p.nsp === "/" && Array.isArray(p.data) && SERVER_EVENTS.includes(p.data[0])) {
    checkEvent(p.data[0], p.data.slice(1), " (raw client)");
  }
  return p;
}

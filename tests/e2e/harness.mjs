// Harness for the chat-edge end-to-end tests: free ports, nats-server and
// chat-edge child processes, bounded waits, recorders for socket.io-client
// sockets and raw Engine.IO WebSocket clients. Every wait here is bounded.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test as nodeTest } from "node:test";
import { io } from "socket.io-client";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));

export const EDGE_BIN = process.env.CHAT_EDGE_BIN
  ? path.resolve(process.env.CHAT_EDGE_BIN)
  : path.resolve(here, "../../build/bin/chat-edge");
export const NATS_BIN = process.env.NATS_SERVER_BIN || "nats-server";
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
    this.exited = false;
    this.exitCode = null;
    this.exitSignal = null;
    this.proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.exitPromise = new Promise((resolve) => {
      this.proc.once("exit", (code, signal) => {
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
    this.proc.stderr.on("data", onData);
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
      return await fn(t);
    } catch (err) {
      await delay(300); // let a child that just died report its exit status before the dump
      dumpLogs(`failed: ${name}`);
      throw err;
    }
  });
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
  return {
    port,
    dir,
    url: `nats://127.0.0.1:${port}`,
    child,
    stop: (signal) => child.stop(signal),
    /** Removes the store dir too; for the final cleanup. */
    async destroy() {
      await child.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts chat-edge and waits for its "listening" log line. nats: result of startNats, or null. */
export async function startEdge({ nats = null, name = "edge", env = {}, listenTimeout = 10000 } = {}) {
  if (!existsSync(EDGE_BIN)) {
    throw new Error(`chat-edge binary not found at ${EDGE_BIN} (build it with make, or set CHAT_EDGE_BIN)`);
  }
  const port = await freePort();
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? "/tmp",
    EDGE_HOST: "127.0.0.1",
    EDGE_PORT: String(port),
    EDGE_ID: name,
    JWT_SECRET,
    LOG_LEVEL: "debug",
    ...(nats ? { NATS_URL: nats.url } : {}),
    ...env,
  };
  for (const k of Object.keys(fullEnv)) if (fullEnv[k] === undefined) delete fullEnv[k];
  const child = new Child(`chat-edge:${name}:${port}`, EDGE_BIN, [], fullEnv);
  try {
    await child.waitForLine(/listening/, listenTimeout, "a 'listening' log line");
  } catch (err) {
    const out = child.tail();
    await child.stop("SIGKILL");
    throw new Error(`${err.message}\n--- edge output ---\n${out}`);
  }
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    wsBase: `ws://127.0.0.1:${port}`,
    child,
    stop: (signal, grace) => child.stop(signal, grace),
  };
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

export function clientOptions(auth) {
  const o = { transports: ["websocket"], reconnection: false, forceNew: true, timeout: 5000 };
  if (auth !== undefined) o.auth = auth;
  return o;
}

const openSockets = new Set();

/** Connects a socket.io-client socket with auth {token}; resolves {socket, rec} once connected. */
export async function connectClient(url, token, { nsp = "/", auth, ms = 5000 } = {}) {
  const socket = io(url + (nsp === "/" ? "" : nsp), clientOptions(auth !== undefined ? auth : { token }));
  openSockets.add(socket);
  const rec = record(socket);
  const disconnects = [];
  socket.on("disconnect", (reason) => disconnects.push(reason));
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    ms,
    "socket.io connect",
  );
  return { socket, rec, disconnects };
}

/** Connects with the given auth (undefined: no auth option) and expects a CONNECT_ERROR. */
export async function expectRefused(url, auth, ms = 5000) {
  const socket = io(url, clientOptions(auth));
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
    return { err, socket, seen };
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
  constructor(url) {
    this.url = url;
    this.frames = [];
    this.cursor = 0;
    this.waiters = [];
    this.closeInfo = null;
    this.errors = [];
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
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

/** Opens a raw WebSocket to an edge; path "/socket.io/" or "/engine.io/". */
export async function openRaw(edge, { path: p = "/socket.io/", query = "EIO=4&transport=websocket" } = {}) {
  const c = new RawClient(`${edge.wsBase}${p}${query === null ? "" : "?" + query}`);
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
}

/** Closes every client opened through the harness. */
export function closeAll() {
  closeAllClients();
  closeAllRaw();
}

/** Parses "42[...]" / "42/nsp,12[...]" style Socket.IO text (after the EIO "4"). */
export function parseSio(text) {
  const m = /^4(\d)(?:(\d+)-)?(?:(\/[^,]*),)?(\d*)(.*)$/s.exec(text);
  if (!m) return null;
  return {
    type: Number(m[1]),
    attachments: m[2] ? Number(m[2]) : 0,
    nsp: m[3] ?? "/",
    ackId: m[4] === "" ? null : Number(m[4]),
    data: m[5] === "" ? undefined : JSON.parse(m[5]),
  };
}

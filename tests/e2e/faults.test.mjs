// Fault injection on the real stack (loopback processes): one nats-server
// (JetStream, file store), one PostgreSQL, chat-messaging, chat-presence and
// two chat-edges, with short timeouts (MESSAGING_ACK_WAIT_MS=1000,
// PRESENCE_EDGE_TIMEOUT_MS=1500, PRESENCE_RESYNC_MS=1000, EDGE_HEARTBEAT_MS=200).
// Each test injects one fault in the middle of a stream of messages (4
// senders, clientMessageIds, acks; a message is sent again with the same
// clientMessageId after an error ack or no ack within 1.5 s, as a real client
// does) and of presence changes (a user toggling away/online, a tab opening
// and closing, a user leaving during the fault, a tab opened and closed right
// after the restart while the same user has another tab elsewhere): kill -9 and restart of
// messaging, of presence, of one edge of two (same port and EDGE_ID), of
// nats-server (same port and store dir), and a PostgreSQL outage (stop -m
// immediate, 1 s, start). After recovery:
//   - every emitted message was acked in the end; every message whose
//     message:sent or ok ack was received is stored exactly once (one row per
//     sender and clientMessageId, the acked id);
//   - every stored message reached its recipient: each of the recipient's
//     tabs got message:received with its id exactly once, the tabs that
//     stayed connected (through a nats-server kill too) and the ones that had
//     to reconnect (their sessions recovered);
//   - presence is right: presence:request answers online for everyone
//     connected (away for the user who chose it before the fault and for the
//     one who chose it last), offline with lastSeen for the user who left
//     during the fault (also in the users table); nobody who stayed connected
//     was ever broadcast offline;
//   - the edges kept their sockets through the NATS and service restarts (no
//     disconnect on any client, the same socket ids, the same edge processes);
//     after the edge restart its clients reconnected and recovered their
//     sessions (same socket ids; a client without reconnection stays offline)
//     and the other edge's clients never noticed.
import assert from "node:assert/strict";
import { before, after, describe } from "node:test";
import { io } from "socket.io-client";
import {
  test,
  startNats,
  startPostgres,
  startMessaging,
  startPresence,
  startEdge,
  clientOptions,
  freePort,
  httpRequest,
  shutdown,
  withTimeout,
  delay,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const HEARTBEAT_MS = 200;
const EDGE_ENV = { EDGE_HEARTBEAT_MS: String(HEARTBEAT_MS) };
const MESSAGING_ENV = { MESSAGING_ACK_WAIT_MS: "1000" };
const PRESENCE_ENV = { PRESENCE_EDGE_TIMEOUT_MS: "1500", PRESENCE_RESYNC_MS: "1000" };
const ACK_MS = 1500; // a client's ack timeout before it sends again
const RETRY_MS = 100; // a client's pause after an error ack
const SENDERS = 4;
const PER_SENDER = 30;
const WINDOW = 3; // unacked messages per sender
const OUTAGE_MS = 1000; // PostgreSQL's downtime

let nats;
let pg;
let messaging;
let presence;
let edge1;
let edge2;
let edge2Port;
const EDGE2_ID = "fault-edge-2";

/** Edge 2 on its fixed port and EDGE_ID (clients reconnect to the same address after a restart). */
async function startEdge2() {
  const e = await startEdge({ nats, name: EDGE2_ID, env: { ...EDGE_ENV, EDGE_PORT: String(edge2Port) } });
  return Object.assign(e, { port: edge2Port, url: `http://127.0.0.1:${edge2Port}`, wsBase: `ws://127.0.0.1:${edge2Port}` });
}

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  [messaging, presence] = await Promise.all([
    startMessaging({ nats, pg, name: "messaging-1", env: MESSAGING_ENV }),
    startPresence({ nats, pg, name: "presence-1", env: PRESENCE_ENV }),
  ]);
  edge2Port = await freePort();
  [edge1, edge2] = await Promise.all([startEdge({ nats, name: "fault-edge-1", env: EDGE_ENV }), startEdge2()]);
});

const everyClient = new Set();
after(() => {
  for (const c of everyClient) c.socket.close();
  return shutdown();
});

// ---------------------------------------------------------------- clients

/** Resolves when pred() holds, re-checked whenever c gets an event; bounded. */
function until(c, pred, ms, what) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        if (pred()) {
          c.watchers.delete(check);
          resolve();
        }
      };
      c.watchers.add(check);
      check();
    }),
    ms,
    what,
  );
}

/**
 * A socket.io-client (WebSocket) that reconnects as a real client does
 * (100–500 ms back-off) unless reconnection is false, and records its
 * connects, disconnects, message:sent, message:received and user:status.
 */
async function client(user, edge, { reconnection = true } = {}) {
  const o = clientOptions({ token: user.token }, { transport: "websocket" });
  Object.assign(o, { reconnection, reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0 });
  const socket = io(edge.url, o);
  const c = { user, edge, socket, connects: 0, disconnects: [], sent: [], received: [], statuses: [], watchers: new Set() };
  everyClient.add(c);
  const wake = () => {
    for (const w of [...c.watchers]) w();
  };
  socket.on("connect", () => (c.connects++, wake()));
  socket.on("disconnect", (reason) => (c.disconnects.push(reason), wake()));
  socket.on("message:sent", (m) => (c.sent.push(m), wake()));
  socket.on("message:received", (m) => (c.received.push(m), wake()));
  socket.on("user:status", (s) => (c.statuses.push(s), wake()));
  await until(c, () => c.connects === 1, 5000, `${user.username} connecting to ${edge.name}`);
  c.firstId = socket.id;
  return c;
}

/** presence:update with an ack that must be ok (sent again after an error or no ack, bounded). */
async function setStatus(c, status, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    let res;
    try {
      res = await c.socket.timeout(ACK_MS).emitWithAck("presence:update", { status });
    } catch {
      res = "no ack";
    }
    if (res?.ok === true) return;
    assert.ok(Date.now() < deadline, `presence:update ${status} of ${c.user.username}: ${JSON.stringify(res)}`);
    await delay(RETRY_MS); // a client's back-off
  }
}

/** presence:request with an ack that must be ok; returns the list. */
async function request(c, ids) {
  const res = await c.socket.timeout(3000).emitWithAck("presence:request", ids);
  assert.equal(res.ok, true, `presence:request: ${JSON.stringify(res)}`);
  return res.users;
}

// ---------------------------------------------------------------- the stream

/**
 * Sends payload until an ok ack: again with the same clientMessageId after an
 * error ack (after RETRY_MS) or no ack within ACK_MS; fails after 30 s.
 */
async function sendUntilAcked(c, payload, stats) {
  const deadline = Date.now() + 30000;
  for (let attempt = 1; ; attempt++) {
    let res;
    try {
      res = await c.socket.timeout(ACK_MS).emitWithAck("message:send", payload);
    } catch {
      res = null;
    }
    if (res?.ok === true) return res.message;
    const why = res ? res.error?.code ?? JSON.stringify(res) : "no ack";
    stats.retries[why] = (stats.retries[why] ?? 0) + 1;
    assert.ok(Date.now() < deadline, `${payload.clientMessageId}: no ok ack after ${attempt} attempts (last: ${why})`);
    if (res) await delay(RETRY_MS); // a client's back-off after an error
  }
}

/**
 * Each sender emits PER_SENDER messages round-robin to the recipients, at most
 * WINDOW unacked; onAck(n) after each first ok ack. Resolves {emitted, acks,
 * stats} once all are acked.
 */
async function stream(senders, recipients, tag, onAck) {
  const emitted = [];
  const acks = new Map();
  const stats = { retries: {} };
  await Promise.all(
    senders.map(async (s, si) => {
      const inflight = new Set();
      for (let n = 0; n < PER_SENDER; n++) {
        while (inflight.size >= WINDOW) await Promise.race(inflight);
        const to = recipients[(si + n) % recipients.length];
        const cmid = `${tag}-${si}-${n}`;
        emitted.push({ senderId: s.user.id, recipientId: to.id, cmid });
        const p = sendUntilAcked(s, { recipientId: to.id, content: `${tag} ${si} ${n}`, type: "text", clientMessageId: cmid }, stats).then((m) => {
          acks.set(cmid, m);
          onAck(acks.size);
        });
        const tracked = p.finally(() => inflight.delete(tracked));
        inflight.add(tracked);
      }
      await Promise.all(inflight);
    }),
  );
  return { emitted, acks, stats };
}

const sqlStr = (s) => `'${String(s).replace(/'/g, "''")}'`;

// ---------------------------------------------------------------- one scenario

/**
 * Connects the cast, runs the stream with inject({leave}) started at a third
 * of the acks, then checks everything of the file's header. edgeFault: edge 2
 * is the one restarted (its clients reconnect; kept2 does not).
 */
async function scenario(tag, inject, { edgeFault = false } = {}) {
  const observer = await client(makeUser("olga"), edge1);
  const senders = await Promise.all(Array.from({ length: SENDERS }, (_, i) => client(makeUser(`sender${i}`), i % 2 ? edge2 : edge1)));
  const recipientUsers = [0, 1, 2].map((i) => makeUser(`recipient${i}`));
  const tabs = (await Promise.all(recipientUsers.map((u) => Promise.all([client(u, edge1), client(u, edge2)])))).flat();
  const away = await client(makeUser("avery"), edge1); // chooses away before the fault
  const toggler = await client(makeUser("toby"), edge2); // toggles during the stream, away at the end
  const gone = await client(makeUser("gwen"), edge1, { reconnection: false }); // leaves during the fault
  const tabbed = await client(makeUser("tara"), edge1); // a second tab opens and closes on edge 2
  const kept2 = await client(makeUser("kim"), edge2, { reconnection: false }); // on edge 2, never reconnects
  const everyone = [observer, ...senders, ...tabs, away, toggler, gone, tabbed, kept2];
  try {
    await run(tag, inject, edgeFault, { observer, senders, recipientUsers, tabs, away, toggler, gone, tabbed, kept2, everyone });
  } finally {
    for (const c of everyone) c.socket.close(); // a failed scenario must not leave reconnecting clients behind
  }
}

async function run(tag, inject, edgeFault, { observer, senders, recipientUsers, tabs, away, toggler, gone, tabbed, kept2, everyone }) {
  const users = [...new Set(everyone.map((c) => c.user))];
  const pids = [edge1, edge2].map((e) => e.child.proc.pid);

  await setStatus(away, "away");
  await until(observer, () => observer.statuses.some((s) => s.userId === away.user.id && s.status === "away"), 5000, "avery's away");

  // Presence changes along the stream (best effort: some fall in the fault window).
  let secondTab = null;
  let togglerAway = false;
  const changes = [];
  const presenceChange = async (n) => {
    togglerAway = !togglerAway;
    toggler.socket.emit("presence:update", { status: togglerAway ? "away" : "online" });
    if (secondTab) {
      const t = secondTab;
      secondTab = null;
      t.socket.close();
    } else {
      const o = clientOptions({ token: tabbed.user.token }, { transport: "websocket" });
      Object.assign(o, { reconnection: false, timeout: 1000 });
      const s = io(edge2.url, o);
      everyClient.add({ socket: s });
      secondTab = { socket: s };
      await new Promise((resolve) => (s.once("connect", resolve), s.once("connect_error", resolve))); // refused during an edge outage: fine
    }
    changes.push(n);
  };

  const total = SENDERS * PER_SENDER;
  let fault = null;
  let faultAtAck = 0;
  const left = { at: 0, ms: 0 };
  const leave = async () => {
    left.at = Date.now();
    const sid = gone.socket.id;
    gone.socket.close();
    await edge1.child.waitForLine(new RegExp(`disconnect user=${gone.user.id} socket=${sid.replace(/[-]/g, "\\-")} `), 3000, "edge 1 closing gwen's socket");
  };
  // Right after the restart: tara opens a tab on edge 2 and closes it at once (her tab on edge 1 stays).
  const blink = async () => {
    const o = clientOptions({ token: tabbed.user.token }, { transport: "websocket" });
    Object.assign(o, { reconnection: false, timeout: 3000 });
    const s = io(edge2.url, o);
    everyClient.add({ socket: s });
    await withTimeout(new Promise((resolve, reject) => (s.once("connect", resolve), s.once("connect_error", reject))), 5000, "tara's extra tab");
    const sid = s.id;
    s.close();
    await edge2.child.waitForLine(new RegExp(`disconnect user=${tabbed.user.id} socket=${sid.replace(/[-]/g, "\\-")} `), 3000, "edge 2 closing tara's extra tab");
  };
  const t0 = Date.now();
  const result = await stream(senders, recipientUsers, tag, (n) => {
    if (n === Math.floor(total / 3)) {
      faultAtAck = n;
      fault = (async () => {
        const t = Date.now();
        await inject({ leave });
        const ms = Date.now() - t;
        await blink();
        return ms;
      })();
      fault.catch(() => {});
    }
    if (n % 15 === 0) presenceChange(n).catch(() => {});
  });
  const faultMs = await withTimeout(fault, 30000, "the fault and the restart");
  const streamMs = Date.now() - t0;

  // ---- the stream completed after recovery: everything acked.
  assert.ok(faultAtAck > 0, "the fault was injected mid-stream");
  assert.equal(result.acks.size, total, "every message acked in the end");

  // ---- stored exactly once: one row per (sender, clientMessageId), the acked id; nothing else with the tag.
  const dupes = pg.psql(`SELECT sender_id, client_message_id, count(*) FROM messages WHERE client_message_id LIKE ${sqlStr(tag + "-%")} GROUP BY 1, 2 HAVING count(*) <> 1`);
  assert.deepEqual(dupes, [], "stored more than once (sender|clientMessageId|count)");
  const rows = pg.psql(`SELECT id, sender_id, recipient_id, client_message_id FROM messages WHERE client_message_id LIKE ${sqlStr(tag + "-%")}`).map((l) => {
    const [id, senderId, recipientId, cmid] = l.split("|");
    return { id, senderId, recipientId, cmid };
  });
  assert.equal(rows.length, total, "one row per message emitted");
  const byCmid = new Map(rows.map((r) => [`${r.senderId}|${r.cmid}`, r]));
  for (const e of result.emitted) {
    const r = byCmid.get(`${e.senderId}|${e.cmid}`);
    assert.ok(r, `${e.cmid} not stored`);
    assert.equal(r.recipientId, e.recipientId, `${e.cmid}: recipient`);
    assert.equal(result.acks.get(e.cmid).id, r.id, `${e.cmid}: the ack carries the stored id`);
  }
  const storedIds = new Set(rows.map((r) => r.id));
  const sentEvents = senders.flatMap((s) => s.sent);
  for (const m of sentEvents) {
    assert.ok(storedIds.has(m.id), `message:sent ${m.clientMessageId} (${m.id}) is not stored`);
    assert.equal(byCmid.get(`${m.senderId}|${m.clientMessageId}`)?.id, m.id, `message:sent ${m.clientMessageId} carries the stored id`);
  }

  // The checks below all run, and report together: one fault may break several promises.
  const failures = [];
  const check = async (what, fn) => {
    try {
      await fn();
    } catch (err) {
      failures.push(`${what}: ${err.message.split("\n").slice(0, 14).join("\n")}`);
    }
  };

  // ---- delivered to its recipient: every tab, connected throughout or reconnected (and so recovered), got each message live, once.
  await check("delivery to the recipients", async () => {
    const problems = [];
    await Promise.all(
      tabs.map(async (tab) => {
        const want = rows.filter((r) => r.recipientId === tab.user.id);
        if (tab.disconnects.length > 0 && !edgeFault)
          problems.push(`${tab.user.username}'s tab on ${tab.edge.name} was disconnected: ${tab.disconnects.join(", ")}`);
        const how = tab.disconnects.length ? "reconnected" : "connected throughout";
        await until(tab, () => {
          const got = new Set(tab.received.map((m) => m.id));
          return want.every((r) => got.has(r.id));
        }, 10000, "").catch(() => {
          const got = new Set(tab.received.map((m) => m.id));
          const missing = want.filter((r) => !got.has(r.id));
          problems.push(`${tab.user.username}'s tab on ${tab.edge.name} (${how}): ${missing.length} of ${want.length} stored messages never delivered within 10 s (${missing.map((r) => r.cmid).join(", ")})`);
        });
        const dups = tab.received.length - new Set(tab.received.map((m) => m.id)).size;
        if (dups) problems.push(`${tab.user.username}'s tab on ${tab.edge.name} (${how}): ${dups} messages delivered twice`);
      }),
    );
    assert.deepEqual(problems, [], "every stored message reaches its recipient");
  });

  // ---- sockets: kept through NATS and service restarts; after an edge restart, its clients are back.
  const onEdge2 = (c) => c.edge === edge2 || c.edge.name === EDGE2_ID;
  await check("sockets", async () => {
    for (const c of everyone) {
      if (c === gone) continue;
      if (edgeFault && onEdge2(c)) {
        assert.ok(c.disconnects.length >= 1, `${c.user.username} on the restarted edge saw no disconnect`);
        if (c === kept2) {
          assert.equal(c.socket.connected, false, "kim (no reconnection) stays disconnected");
        } else {
          await until(c, () => c.socket.connected, 5000, `${c.user.username} reconnected to the restarted edge`);
          assert.equal(c.socket.recovered, true, `${c.user.username}: the session recovered after the restart`);
          assert.equal(c.socket.id, c.firstId, `${c.user.username}: the same socket after the restart`);
        }
      } else {
        assert.deepEqual(c.disconnects, [], `${c.user.username} on ${c.edge.name} was disconnected`);
        assert.equal(c.socket.id, c.firstId, `${c.user.username} keeps its socket`);
        assert.equal(c.connects, 1);
      }
    }
    assert.equal(edge1.child.exited, false, "edge 1 is running");
    assert.equal(edge1.child.proc.pid, pids[0], "edge 1 is the same process");
    if (!edgeFault) assert.equal(edge2.child.proc.pid, pids[1], "edge 2 is the same process");
    for (const e of [edge1, edge2]) assert.equal((await httpRequest(`${e.url}/healthz`)).status, 200, `${e.name} healthy`);
  });

  // ---- presence: the last changes, then the answers.
  if (secondTab) secondTab.socket.close();
  await setStatus(toggler, "away");
  assert.equal(tabbed.socket.connected, true);
  await check("presence broadcasts", () =>
    until(observer, () => {
      const last = (u) => observer.statuses.filter((s) => s.userId === u.id).at(-1);
      return last(toggler.user)?.status === "away" && last(gone.user)?.status === "offline" && (!edgeFault || last(kept2.user)?.status === "offline");
    }, 8000, "user:status for toby's away, gwen's offline" + (edgeFault ? " and kim's offline" : "")).catch((err) => {
      const last = (u) => JSON.stringify(observer.statuses.filter((s) => s.userId === u.id).at(-1) ?? null);
      throw new Error(`${err.message}; the last ones olga got: toby ${last(toggler.user)}, gwen ${last(gone.user)}, kim ${last(kept2.user)}`);
    }),
  );
  const list = await request(observer, users.map((u) => u.id));
  await check("presence:request", () => {
    const expected = users.map((u) => {
      if (u === gone.user || (edgeFault && u === kept2.user)) return { userId: u.id, username: u.username, status: "offline" };
      if (u === away.user || u === toggler.user) return { userId: u.id, username: u.username, status: "away" };
      return { userId: u.id, username: u.username, status: "online" };
    });
    assert.deepEqual(list.map(({ userId, username, status }) => ({ userId, username, status })), expected, "presence:request after recovery");
    const goneInfo = list.find((x) => x.userId === gone.user.id);
    assert.ok(goneInfo.lastSeen && Date.parse(goneInfo.lastSeen) >= left.at - 1000, `gwen's lastSeen ${goneInfo.lastSeen} is when she left (${new Date(left.at).toISOString()})`);
  });
  await check("users table", () => {
    const row = pg.psql(`SELECT online, last_seen IS NOT NULL FROM users WHERE id = ${sqlStr(gone.user.id)}`)[0];
    assert.equal(row, "f|t", "gwen's users row: offline, with last_seen");
  });
  await check("no offline flap", () => {
    const ours = new Set(users.map((u) => u.id)); // (user:status of other tests' users may pass by)
    const flapped = observer.statuses.filter(
      (s) => ours.has(s.userId) && s.status === "offline" && s.userId !== gone.user.id && !(edgeFault && everyone.some((c) => c.user.id === s.userId && onEdge2(c))),
    );
    assert.deepEqual(flapped.map((s) => `${s.username} offline (lastSeen ${s.lastSeen})`), [], "nobody who stayed connected was broadcast offline");
  });

  const dupDeliveries = tabs.reduce((n, t) => n + t.received.length - new Set(t.received.map((m) => m.id)).size, 0);
  console.log(`# ${tag}: ${total} messages in ${streamMs} ms; fault at ack ${faultAtAck}, injected and recovered in ${faultMs} ms; resends ${JSON.stringify(result.stats.retries)}; ${dupDeliveries} duplicate deliveries; presence changes at acks ${changes.join(",")}; ${failures.length} check(s) failed`);
  if (failures.length) throw new Error(`${failures.length} post-recovery check(s) failed after ${tag}:\n${failures.join("\n\n")}`);
}

// ---------------------------------------------------------------- the faults

describe("faults in the middle of a stream of messages and presence changes", () => {
  test("messaging killed with SIGKILL and restarted", { timeout: 60000 }, async () => {
    await scenario("f-messaging", async ({ leave }) => {
      const r = await messaging.stop("SIGKILL");
      assert.equal(r.signal, "SIGKILL", "messaging was running");
      await leave();
      messaging = await startMessaging({ nats, pg, name: "messaging-2", env: MESSAGING_ENV });
    });
  });

  test("presence killed with SIGKILL and restarted", { timeout: 60000 }, async () => {
    await scenario("f-presence", async ({ leave }) => {
      const r = await presence.stop("SIGKILL");
      assert.equal(r.signal, "SIGKILL", "presence was running");
      await leave();
      // Back as soon as it takes session events (its "ready"), which is before
      // it has connected PostgreSQL and asked the edges for their sessions.
      presence = await startPresence({ nats, pg, name: "presence-2", env: PRESENCE_ENV, ready: /\binfo\s+presence ready\b/ });
    });
  });

  test("one edge of two killed with SIGKILL and restarted (same port and EDGE_ID)", { timeout: 60000 }, async () => {
    await scenario(
      "f-edge",
      async ({ leave }) => {
        const r = await edge2.stop("SIGKILL");
        assert.equal(r.signal, "SIGKILL", "edge 2 was running");
        await leave();
        edge2 = await startEdge2();
      },
      { edgeFault: true },
    );
  });

  test("nats-server killed with SIGKILL and restarted (same port and store dir)", { timeout: 60000 }, async () => {
    await scenario("f-nats", async ({ leave }) => {
      const { port, dir } = nats;
      const r = await nats.stop("SIGKILL");
      assert.equal(r.signal, "SIGKILL", "nats-server was running");
      await leave();
      nats = await startNats({ port, dir });
    });
  });

  test("PostgreSQL stopped (immediate) for 1 s and started", { timeout: 60000 }, async () => {
    await scenario("f-postgres", async ({ leave }) => {
      pg.stop();
      await leave();
      await delay(OUTAGE_MS); // the outage
      pg.start();
    });
  });
});

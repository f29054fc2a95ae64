// The chaos test (README "Scaling"): one of everything killed with SIGKILL, one
// after the other, each restarted, while clients chat. The stack: a 3-node
// NATS cluster (JetStream R3, every node its own store), PostgreSQL, two
// messaging replicas, two presence replicas and two edges, every process on
// another node. Three pairs of users, each user with a tab on each edge
// (socket.io-client over WebSocket, reconnection on, sent by a "load
// balancer" to a live edge when it reconnects), stream messages (acks,
// clientMessageIds, resends on error or timeout, as a client does) and read
// receipts; one user toggles away and online; an observer on both edges
// records every user:status. The faults: a NATS node, the active presence
// replica, a messaging replica, an edge. After each: every acked message is
// stored once and reached every tab of its recipient (message:received) and
// of its sender (message:sent) exactly once (an edge's tabs recover their
// sessions on the other edge); every read receipt reached every tab of the
// sender once; presence answers everyone online with the right status; no
// connected user was ever shown offline. A table of fault, recovery time and
// losses is printed (losses must be 0).
//
// CHAOS_ROUNDS (1) repeats the four faults; CHAOS_MESSAGES_S (20) is each
// sender's rate. `make chaos` runs it longer (CHAOS_ROUNDS=3).
import assert from "node:assert/strict";
import { after, before, describe } from "node:test";
import { io } from "socket.io-client";

import {
  clientOptions,
  delay,
  freePort,
  metricOf,
  shutdown,
  startEdge,
  startMessaging,
  startNatsCluster,
  startPostgres,
  startPresence,
  test,
  withTimeout,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 1);
const RATE = Number(process.env.CHAOS_MESSAGES_S ?? 20); // per sender
const PAIRS = 3;
const ACK_MS = 2000;
const SETTLE_MS = 20000; // how long deliveries may take to catch up after a fault
const ENV = { CHAT_STREAM_REPLICAS: "3" };
const EDGE_ENV = { ...ENV, EDGE_HEARTBEAT_MS: "200" };
const PRESENCE_ENV = { ...ENV, PRESENCE_EDGE_TIMEOUT_MS: "3000", PRESENCE_RESYNC_MS: "1000" };
const MESSAGING_ENV = { ...ENV, MESSAGING_ACK_WAIT_MS: "1000" };

let cluster, pg;
const edges = []; // {name, node, port, edge}
const messaging = []; // {name, node, svc}
const presence = []; // {name, node, svc}
const tabs = []; // every socket of every user
const statuses = []; // user:status seen by the observer's tabs

async function startEdgeAt(e) {
  e.edge = await startEdge({ nats: { url: cluster.urlFrom(e.node) }, name: e.name, env: { ...EDGE_ENV, EDGE_PORT: String(e.port) } });
  e.url = `http://127.0.0.1:${e.port}`;
  return e;
}

const liveEdges = () => edges.filter((e) => e.edge && !e.edge.child.exited);

before(async () => {
  [cluster, pg] = await Promise.all([startNatsCluster({ nodes: 3, name: "chat-chaos" }), startPostgres()]);
  for (const [name, node] of [["presence-a", 0], ["presence-b", 1]])
    presence.push({ name, node, svc: await startPresence({ nats: { url: cluster.urlFrom(node) }, pg, name, env: PRESENCE_ENV }) });
  for (const [name, node] of [["messaging-a", 2], ["messaging-b", 0]])
    messaging.push({ name, node, svc: await startMessaging({ nats: { url: cluster.urlFrom(node) }, pg, name, env: MESSAGING_ENV }) });
  for (const [name, node] of [["chaos-edge-1", 0], ["chaos-edge-2", 1]]) edges.push(await startEdgeAt({ name, node, port: await freePort() }));
});

after(async () => {
  for (const t of tabs) t.socket.close();
  await shutdown();
});

/** A tab: socket.io-client on edge e, reconnecting (to a live edge) by itself; records what it receives. */
async function tab(user, e) {
  const o = { ...clientOptions({ token: user.token }, { transport: "websocket" }), reconnection: true, reconnectionDelay: 100,
    reconnectionDelayMax: 300, randomizationFactor: 0, timeout: 5000 };
  const socket = io(e.url, o);
  const t = { user, socket, received: [], sent: [], read: [], connects: [], watchers: new Set() };
  const wake = () => {
    for (const w of [...t.watchers]) w();
  };
  socket.on("message:received", (m) => (t.received.push(m.id), wake()));
  socket.on("message:sent", (m) => (t.sent.push(m.id), wake()));
  socket.on("message:read", (r) => (t.read.push(r.messageId), wake()));
  socket.on("user:status", (s) => statuses.push({ ...s, at: Date.now() }));
  socket.on("connect", () => (t.connects.push({ at: Date.now(), recovered: socket.recovered, id: socket.id }), wake()));
  // The load balancer: a reconnect goes to a live edge.
  socket.io.on("reconnect_attempt", () => {
    const live = liveEdges();
    if (live.length) socket.io.uri = live[Math.floor(Math.random() * live.length)].url;
  });
  tabs.push(t);
  await until(t, () => t.connects.length === 1, 5000, `${user.username} connecting`);
  return t;
}

function until(t, pred, ms, what) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        if (pred()) {
          t.watchers.delete(check);
          resolve();
        }
      };
      t.watchers.add(check);
      check();
    }),
    ms,
    what,
  );
}

/** A sender: messages to its recipient at RATE a second, each resent with its clientMessageId until acked. */
function sender(from, to, tag) {
  const s = { acked: new Map(), ackTimes: [], stopped: false, attempts: 0, failures: 0, lastAck: 0 };
  let n = 0;
  s.done = (async () => {
    while (!s.stopped) {
      const cmid = `${tag}-${n++}`;
      for (;;) {
        s.attempts++;
        try {
          const res = await from.socket.timeout(ACK_MS).emitWithAck("message:send", { recipientId: to.id, content: cmid, type: "text", clientMessageId: cmid });
          if (res.ok) {
            s.acked.set(cmid, res.message.id);
            s.lastAck = Date.now();
            s.ackTimes.push(s.lastAck);
            break;
          }
        } catch {
          /* no ack in time (or not connected): send again */
        }
        s.failures++;
        if (s.stopped) return;
        await delay(100);
      }
      await delay(1000 / RATE);
    }
  })();
  return s;
}

const sql = (v) => `'${String(v).replace(/'/g, "''")}'`;

describe("chaos: one of everything killed, one after the other", () => {
  test(`${ROUNDS} round(s) of four faults while three pairs chat: zero losses`, { timeout: 120000 + ROUNDS * 120000 }, async () => {
    const pairs = [];
    for (let i = 0; i < PAIRS; i++) pairs.push({ from: makeUser(`sender${i}`), to: makeUser(`recipient${i}`) });
    const toggler = makeUser("toggler");
    const observer = makeUser("observer");
    const tabsOf = new Map();
    for (const u of [...pairs.flatMap((p) => [p.from, p.to]), toggler, observer])
      tabsOf.set(u.id, [await tab(u, edges[0]), await tab(u, edges[1])]);
    const everyone = [...pairs.flatMap((p) => [p.from, p.to]), toggler];
    const senders = pairs.map((p, i) => ({ pair: p, s: sender(tabsOf.get(p.from.id)[i % 2], p.to, `c${i}-${Date.now()}`) }));
    // Read receipts: each recipient's first tab marks every 5th message it received read.
    const readsSent = new Set();
    const reader = setInterval(() => {
      for (const p of pairs) {
        const t = tabsOf.get(p.to.id)[0];
        t.received.forEach((id, i) => {
          if (i % 5 !== 0 || readsSent.has(id)) return;
          readsSent.add(id);
          t.socket.timeout(ACK_MS).emitWithAck("message:read", { messageId: id, senderId: p.from.id })
            .then((r) => r.ok || readsSent.delete(id), () => readsSent.delete(id)); // tried again later
        });
      }
    }, 200);
    let away = false;
    const toggle = setInterval(() => {
      away = !away;
      tabsOf.get(toggler.id)[0].socket.emit("presence:update", { status: away ? "away" : "online" });
    }, 700);

    const rows = [];
    const faults = [
      ["a NATS node (n1: edge 1, presence A, messaging B)", async (killed) => {
        await cluster.nodes[0].kill("SIGKILL");
        killed();
        await delay(500);
        await cluster.nodes[0].restart();
      }],
      ["the active presence replica", async (killed) => {
        let active = null;
        const deadline = Date.now() + 8000;
        while (!active && Date.now() < deadline) {
          for (const r of presence) if (!r.svc.child.exited && (await metricOf(r.svc, "chat_presence_active")) === 1) active = r;
          if (!active) await delay(100);
        }
        assert.ok(active, "an active presence replica");
        await active.svc.stop("SIGKILL");
        killed();
        await delay(500);
        active.svc = await startPresence({ nats: { url: cluster.urlFrom(active.node) }, pg, name: active.name, env: PRESENCE_ENV });
      }],
      ["a messaging replica", async (killed) => {
        const m = messaging[0];
        await m.svc.stop("SIGKILL");
        killed();
        await delay(500);
        m.svc = await startMessaging({ nats: { url: cluster.urlFrom(m.node) }, pg, name: m.name, env: MESSAGING_ENV });
      }],
      ["an edge (its tabs recover on the other)", async (killed) => {
        const e = edges[0];
        await e.edge.stop("SIGKILL");
        killed();
        await delay(500);
        await startEdgeAt(e);
      }],
    ];

    try {
      await delay(1000);
      for (let round = 1; round <= ROUNDS; round++) {
        for (const [what, inject] of faults) {
          let t0 = Date.now();
          await inject(() => (t0 = Date.now()));
          // Every sender has had a message acked since the restart.
          const restarted = Date.now();
          await withTimeout((async () => {
            while (!senders.every(({ s }) => s.lastAck > restarted)) await delay(20);
          })(), 30000, `every sender acked again after: ${what}`);
          // Let the stream run a little, then check everything acked so far.
          await delay(1000);
          // The disruption: the longest time any sender went without an ack, and
          // the observer without a status of the toggler (every 700 ms), from
          // just before the kill until now.
          const gap = (times) => {
            const t = [t0, ...times.filter((x) => x > t0), Date.now()];
            let g = 0;
            for (let i = 1; i < t.length; i++) g = Math.max(g, t[i] - t[i - 1]);
            return g;
          };
          const messagesMs = Math.max(...senders.map(({ s }) => gap(s.ackTimes)));
          const statusesMs = gap(statuses.filter((x) => x.userId === toggler.id).map((x) => x.at));
          const losses = await check(what);
          rows.push({ round, what, messagesMs, statusesMs, ...losses });
          console.log(`# chaos: round ${round}, ${what}: ${JSON.stringify(rows.at(-1))}`);
        }
      }
    } finally { // on a failure too: nothing keeps sending or ticking after the test
      for (const { s } of senders) s.stopped = true;
      await Promise.all(senders.map(({ s }) => s.done));
      clearInterval(reader);
      clearInterval(toggle);
    }
    const final = await check("the end");
    rows.push({ round: "-", what: "at the end", messagesMs: "-", statusesMs: "-", ...final });

    console.log("# chaos: | fault (round) | longest wait for an ack (ms) | longest wait for a status (ms) | acked so far | lost | duplicated | receipts lost | shown offline |");
    for (const r of rows)
      console.log(`# chaos: | ${r.what} (${r.round}) | ${r.messagesMs} | ${r.statusesMs} | ${r.acked} | ${r.lost} | ${r.duplicated} | ${r.receiptsLost} | ${r.shownOffline} |`);
    for (const r of rows) {
      assert.equal(r.lost, 0, `${r.what}: messages lost`);
      assert.equal(r.duplicated, 0, `${r.what}: messages delivered twice to a tab`);
      assert.equal(r.receiptsLost, 0, `${r.what}: read receipts lost`);
      assert.equal(r.shownOffline, 0, `${r.what}: connected users shown offline`);
    }

    /** Everything acked so far: stored once, delivered once to every tab (bounded wait). */
    async function check(what) {
      const acked = senders.flatMap(({ pair, s }) => [...s.acked].map(([cmid, id]) => ({ pair, cmid, id })));
      // Stored once each.
      const cmids = acked.map((a) => sql(a.cmid)).join(",");
      const stored = cmids ? pg.psql(`SELECT client_message_id || '|' || count(*) || '|' || min(id::text) FROM messages WHERE client_message_id IN (${cmids}) GROUP BY client_message_id`) : [];
      const byCmid = new Map(stored.map((l) => l.split("|")).map(([c, n, id]) => [c, { n: Number(n), id }]));
      let lost = 0, duplicated = 0;
      for (const a of acked) {
        const row = byCmid.get(a.cmid);
        if (!row || row.n !== 1 || row.id !== a.id) lost++;
      }
      // Delivered once to every tab of the recipient and of the sender.
      const want = (t, field, ids) => () => ids.every((id) => t[field].includes(id));
      const waits = [];
      for (const p of pairs) {
        const ids = acked.filter((a) => a.pair === p).map((a) => a.id);
        for (const t of tabsOf.get(p.to.id)) waits.push(until(t, want(t, "received", ids), SETTLE_MS, "").catch(() => {}));
        for (const t of tabsOf.get(p.from.id)) waits.push(until(t, want(t, "sent", ids), SETTLE_MS, "").catch(() => {}));
      }
      await Promise.all(waits);
      for (const p of pairs) {
        const ids = acked.filter((a) => a.pair === p).map((a) => a.id);
        for (const [t, field] of [...tabsOf.get(p.to.id).map((t) => [t, "received"]), ...tabsOf.get(p.from.id).map((t) => [t, "sent"])]) {
          const got = t[field];
          lost += ids.filter((id) => !got.includes(id)).length;
          duplicated += got.length - new Set(got).size;
        }
      }
      // Read receipts acked by the store reached every tab of the sender once.
      let receiptsLost = 0;
      const readIds = pg.psql(`SELECT id::text FROM messages WHERE read_at IS NOT NULL AND client_message_id IN (${cmids || "''"})`);
      for (const p of pairs) {
        for (const t of tabsOf.get(p.from.id)) {
          const mine = new Set(acked.filter((a) => a.pair === p).map((a) => a.id));
          const want = readIds.filter((id) => mine.has(id));
          await until(t, () => want.every((id) => t.read.includes(id)), SETTLE_MS, "").catch(() => {});
          receiptsLost += want.filter((id) => !t.read.includes(id)).length;
          duplicated += t.read.length - new Set(t.read).size;
        }
      }
      // Presence: nobody connected shown offline, and everyone online now.
      const ours = new Set(everyone.map((u) => u.id));
      const shownOffline = statuses.filter((s) => ours.has(s.userId) && s.status === "offline").length;
      const res = await tabsOf.get(observer.id)[1].socket.timeout(5000).emitWithAck("presence:request", everyone.map((u) => u.id)).catch((e) => ({ ok: false, e: e.message }));
      assert.equal(res.ok, true, `presence:request after ${what}: ${JSON.stringify(res)}`);
      for (const u of res.users) assert.notEqual(u.status, "offline", `after ${what}: ${u.username} answered offline`);
      return { acked: acked.length, lost, duplicated, receiptsLost, shownOffline };
    }
  });
});

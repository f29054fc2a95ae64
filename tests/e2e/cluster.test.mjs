// Messages on a 3-node NATS cluster (each node its own JetStream store):
// messaging on node 3, the edges on nodes 1 and 2, each given the whole list
// of servers in NATS_URL from its own node on. The streams and messaging's
// consumers follow CHAT_STREAM_REPLICAS: created with 1, updated to 3 when
// messaging restarts with 3. On a second cluster, made with 3 replicas from
// the start (nats-server 2.9.10 may leave a scaled-up replica unable to catch
// up after its node restarts: see README, Limits), the node of one edge is
// killed with SIGKILL: the edge fails over to another node, its sockets stay,
// and messages sent meanwhile are stored once and delivered (the R3 stream
// survives a node); the node restarts with its store.
import assert from "node:assert/strict";
import { before, after, describe } from "node:test";
import { io } from "socket.io-client";
import { test, startNatsCluster, startPostgres, startMessaging, startEdge, clientOptions, withTimeout, delay, shutdown, httpRequest } from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

let cluster;
let pg;
let messaging;
let edge1;
let edge2;

before(async () => {
  [cluster, pg] = await Promise.all([startNatsCluster({ nodes: 3 }), startPostgres()]);
  messaging = await startMessaging({ nats: { url: cluster.urlFrom(2) }, pg, name: "messaging-r1", env: { CHAT_STREAM_REPLICAS: "1" } });
});

const sockets = new Set();
after(() => {
  for (const s of sockets) s.close();
  return shutdown();
});

/** {stream: {replicas, nodes (hosting it)}, consumers: {name: replicas}} of every node's /jsz. */
async function jetstreamLayout() {
  const streams = {};
  const consumers = {};
  for (const n of cluster.nodes) {
    if (!n.child || n.child.exited) continue;
    const r = await httpRequest(`http://127.0.0.1:${n.monitor}/jsz?streams=1&consumers=1&config=1`, { what: "/jsz" });
    for (const a of JSON.parse(r.text).account_details ?? []) {
      for (const s of a.stream_detail ?? []) {
        streams[s.name] ??= { replicas: s.config.num_replicas, nodes: 0 };
        streams[s.name].nodes++;
        for (const c of s.consumer_detail ?? []) consumers[c.name] = c.config.num_replicas ?? 0;
      }
    }
  }
  return { streams, consumers };
}

async function until(pred, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(100);
  }
}

async function connect(user, edge) {
  const socket = io(edge.url, clientOptions({ token: user.token }, { transport: "websocket" }));
  sockets.add(socket);
  const received = [];
  socket.on("message:received", (m) => received.push(m));
  await withTimeout(new Promise((resolve, reject) => (socket.once("connect", resolve), socket.once("connect_error", reject))), 5000, `${user.username} connecting`);
  return { user, socket, received };
}

/**
 * message:send until an ok ack, resent with the same clientMessageId after an
 * error (the edge answers `unavailable` at once while the stream elects a new
 * leader), bounded. The ack wait is long: an ack that came after the client
 * gave up would be one for no event it is waiting for.
 */
async function send(c, to, cmid) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const res = await c.socket.timeout(10000).emitWithAck("message:send", { recipientId: to.id, content: cmid, type: "text", clientMessageId: cmid }).catch(() => null);
    if (res?.ok) return res.message;
    assert.ok(Date.now() < deadline, `${cmid}: no ok ack (${JSON.stringify(res)})`);
    await delay(200);
  }
}

describe("messages on a 3-node NATS cluster", () => {
  test("CHAT_STREAM_REPLICAS: the streams and consumers made with 1 are updated to 3", { timeout: 60000 }, async () => {
    const one = await jetstreamLayout();
    assert.equal(one.streams.CHAT_CMD?.replicas, 1, JSON.stringify(one));
    assert.equal(one.streams.CHAT_EVENTS?.nodes, 1, JSON.stringify(one));
    await messaging.stop();
    messaging = await startMessaging({ nats: { url: cluster.urlFrom(2) }, pg, name: "messaging-r3", env: { CHAT_STREAM_REPLICAS: "3" } });
    const three = await until(async () => {
      const l = await jetstreamLayout();
      return l.streams.CHAT_CMD?.nodes === 3 && l.streams.CHAT_EVENTS?.nodes === 3 ? l : null;
    }, 20000, "both streams on 3 nodes");
    assert.equal(three.streams.CHAT_CMD.replicas, 3);
    assert.equal(three.streams.CHAT_EVENTS.replicas, 3);
    const names = Object.keys(three.consumers);
    assert.ok(names.length > 0 && names.every((n) => three.consumers[n] === 3), `consumers: ${JSON.stringify(three.consumers)}`);
  });

  test("the node of one edge killed with SIGKILL: its sockets stay, messages are stored once and delivered; the node comes back", { timeout: 60000 }, async () => {
    const env = { CHAT_STREAM_REPLICAS: "3" };
    await messaging.stop();
    await cluster.destroy();
    cluster = await startNatsCluster({ nodes: 3, name: "chat-e2e-r3" });
    messaging = await startMessaging({ nats: { url: cluster.urlFrom(2) }, pg, name: "messaging-r3-new", env });
    [edge1, edge2] = await Promise.all([
      startEdge({ nats: { url: cluster.urlFrom(0) }, name: "cluster-edge-1", env }),
      startEdge({ nats: { url: cluster.urlFrom(1) }, name: "cluster-edge-2", env }),
    ]);
    const a = await connect(makeUser("ada"), edge1);
    const b = await connect(makeUser("bo"), edge2);
    const tag = `cl-${Date.now()}`;
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await send(a, b.user, `${tag}-${i}`));
    await cluster.nodes[0].kill("SIGKILL"); // edge 1's node
    const t0 = Date.now();
    for (let i = 5; i < 15; i++) sent.push(await send(a, b.user, `${tag}-${i}`));
    console.log(`# node killed: 10 messages acked ${Date.now() - t0} ms after (a new stream leader is elected meanwhile)`);
    await until(() => new Set(b.received.map((m) => m.clientMessageId)).size === 15, 10000, "bo receiving all 15");
    assert.equal(a.socket.connected && b.socket.connected, true, "both sockets kept");
    const rows = pg.psql(`SELECT count(*), count(DISTINCT client_message_id) FROM messages WHERE client_message_id LIKE '${tag}-%'`);
    assert.deepEqual(rows, ["15|15"], "stored once each");
    await cluster.nodes[0].restart();
    sent.push(await send(b, a.user, `${tag}-back`));
    await until(() => a.received.some((m) => m.clientMessageId === `${tag}-back`), 5000, "ada receiving the reply");
    const l = await jetstreamLayout();
    assert.equal(l.streams.CHAT_CMD?.nodes, 3, "the restarted node hosts its replica again");
  });
});

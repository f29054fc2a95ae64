// PRESENCE_SCOPE=interest (README "Presence"): a socket gets user:status only
// for its own user, the users it has a conversation with (messages either
// way: stored before it connected, or sent since) and the users it asked
// about with presence:request; its connect list holds those of them who are
// online. Broadcast (the default) is tested everywhere else.
//
// Topology: 1 nats + 1 PostgreSQL + messaging + presence + 2 edges with
// PRESENCE_SCOPE=interest.
import assert from "node:assert/strict";
import { after, before, describe } from "node:test";

import { io } from "socket.io-client";

import {
  TRANSPORTS,
  clientOptions,
  closeAll,
  shutdown,
  startEdge,
  startMessaging,
  startNats,
  startPostgres,
  startPresence,
  test,
  withTimeout,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

let nats, pg, edge1, edge2;
before(async () => {
  nats = await startNats();
  pg = await startPostgres();
  await startMessaging({ nats, pg });
  await startPresence({ nats, pg });
  const env = { PRESENCE_SCOPE: "interest" };
  [edge1, edge2] = await Promise.all([startEdge({ nats, name: "int-1", env }), startEdge({ nats, name: "int-2", env })]);
});
after(async () => {
  for (const s of sockets) s.close();
  closeAll();
  await shutdown();
});

const sockets = new Set();

/** A client recording user:status, its first presence:update and message:received; connected and listed. */
async function client(user, edge, transport) {
  const socket = io(edge.url, clientOptions({ token: user.token }, { transport }));
  sockets.add(socket);
  const c = { user, socket, statuses: [], list: null, received: [] };
  socket.on("user:status", (s) => c.statuses.push(s));
  socket.on("message:received", (m) => c.received.push(m));
  const listed = new Promise((resolve) => socket.once("presence:update", (l) => resolve((c.list = l))));
  await withTimeout(new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  }), 5000, `${user.username} connecting`);
  await withTimeout(listed, 5000, `${user.username}'s presence:update`);
  return c;
}

/** Resolves once pred() holds, checked now and at each event c records (bounded). */
function until(c, pred, what, ms = 5000) {
  if (pred()) return Promise.resolve();
  return withTimeout(new Promise((resolve) => {
    const check = () => {
      if (!pred()) return;
      c.socket.off("user:status", check).off("message:received", check);
      resolve();
    };
    // Registered after the recording listeners: the event is recorded when this runs.
    c.socket.on("user:status", check).on("message:received", check);
  }), ms, `timed out: ${what}`);
}

/** Waits until c has a user:status of who with status (bounded). */
function statusOf(c, who, status, ms = 5000) {
  return until(c, () => c.statuses.some((s) => s.userId === who.id && s.status === status),
    `${c.user.username} getting user:status ${status} of ${who.username}`, ms);
}

async function setStatus(c, status) {
  const r = await c.socket.timeout(5000).emitWithAck("presence:update", { status });
  assert.equal(r.ok, true, JSON.stringify(r));
}

async function send(c, to) {
  const r = await c.socket.timeout(5000).emitWithAck("message:send", { recipientId: to.id, content: "hi", type: "text" });
  assert.equal(r.ok, true, JSON.stringify(r));
}

for (const transport of TRANSPORTS) {
  describe(`transport: ${transport}`, () => {
    test("the connect list and user:status: own user, conversations, asked about; nobody else", async () => {
      const ada = makeUser("ada"), bo = makeUser("bo"), cy = makeUser("cy"), dee = makeUser("dee");
      // bo and ada have a conversation; cy and dee are strangers to ada.
      const bo1 = await client(bo, edge2, "websocket");
      const cy1 = await client(cy, edge2, "websocket");
      const dee1 = await client(dee, edge1, "websocket");
      const ada0 = await client(ada, edge1, "websocket");
      await send(ada0, bo);
      ada0.socket.close();
      // A new socket of ada: the list knows bo (a conversation) and ada herself.
      const ada1 = await client(ada, edge1, transport);
      const listed = (ada1.list ?? []).map((u) => u.userId).sort();
      assert.deepEqual(listed, [ada.id, bo.id].sort(), `ada's connect list: ${JSON.stringify(ada1.list)}`);
      // bo's change reaches ada; cy's does not (a marker from bo after it proves it).
      await setStatus(cy1, "away");
      await setStatus(bo1, "away");
      await statusOf(ada1, bo, "away");
      assert.ok(!ada1.statuses.some((s) => s.userId === cy.id), "nothing of cy, a stranger");
      // Asked about with presence:request: followed from then on.
      const r = await ada1.socket.timeout(5000).emitWithAck("presence:request", [cy.id]);
      assert.equal(r.ok, true);
      await setStatus(cy1, "online");
      await statusOf(ada1, cy, "online");
      // A conversation started now (dee writes to ada): dee followed from then on.
      await setStatus(dee1, "away");
      await send(dee1, ada);
      await until(ada1, () => ada1.received.length > 0, "ada receiving dee's message");
      await setStatus(dee1, "online");
      await statusOf(ada1, dee, "online");
      assert.ok(!ada1.statuses.some((s) => s.userId === dee.id && s.status === "away"), "dee's away came before the conversation");
      // The strangers saw nothing of ada's other sockets? cy never asked about ada: nothing of her.
      assert.ok(!cy1.statuses.some((s) => s.userId === ada.id), "cy got nothing of ada");
      for (const c of [bo1, cy1, dee1, ada1]) c.socket.close();
    });
  });
}

describe("a storm in interest mode", () => {
  test("200 users, each with 4 contacts: every socket's list is its online contacts, and it hears only of them", { timeout: 60000 }, async () => {
    const N = 200;
    const users = Array.from({ length: N }, (_, i) => makeUser(`u${i}`));
    const contacts = (i) => [1, 2].flatMap((d) => [(i + d) % N, (i - d + N) % N]);
    // The conversations: each user writes to the next two (i -> i+1, i+2).
    const seeded = await Promise.all(users.map((u) => client(u, edge1, "websocket")));
    for (let i = 0; i < N; i++)
      for (const d of [1, 2]) {
        const r = await seeded[i].socket.timeout(5000).emitWithAck("message:send", { recipientId: users[(i + d) % N].id, content: "seed", type: "text" });
        assert.equal(r.ok, true, JSON.stringify(r));
      }
    // Everyone offline again, seen by a probe that asked about them all (the
    // tests' presence has no grace period).
    const probe = await client(makeUser("probe"), edge2, "websocket");
    const r = await probe.socket.timeout(5000).emitWithAck("presence:request", users.map((u) => u.id));
    assert.equal(r.ok, true, JSON.stringify(r));
    for (const c of seeded) c.socket.close();
    const offline = () => users.every((u) => probe.statuses.some((s) => s.userId === u.id && s.status === "offline"));
    await until(probe, offline, "the seeding users all going offline", 10000);
    probe.socket.close();
    // The storm: everyone at once, on both edges.
    const socks = await Promise.all(users.map((u, i) => client(u, i % 2 ? edge2 : edge1, "websocket")));
    // Every socket ends up knowing exactly its contacts (and itself) online: its list, then the statuses.
    for (let i = 0; i < N; i++) {
      const want = new Set([users[i].id, ...contacts(i).map((k) => users[k].id)]);
      const known = new Set((socks[i].list ?? []).map((u) => u.userId));
      const knowsAll = () => {
        for (const s of socks[i].statuses) if (s.status !== "offline") known.add(s.userId);
        return [...want].every((id) => known.has(id));
      };
      await until(socks[i], knowsAll, `u${i} knowing its contacts online`, 10000);
      const strangers = [...known].filter((id) => !want.has(id));
      assert.deepEqual(strangers, [], `u${i} heard of users it has no conversation with`);
    }
    for (const c of socks) c.socket.close();
  });
});

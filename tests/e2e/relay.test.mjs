// Ephemeral relays (typing, ghost typing, audio), acks, input validation and
// multi-tab / multi-edge fan-out, in chat mode with two edges on one nats-server,
// once per client transport (TRANSPORTS). With the default transports every
// client makes an ack round trip over long-polling before its upgrade, and
// the last describe relays over polling, across and after the upgrade.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, after, beforeEach, afterEach, describe } from "node:test";
import {
  test, startNats, startEdge, connectClient, shutdown, withTimeout, TRANSPORTS, transportOf, openSioSession, httpRequest,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

let nats;
let edge1;
let edge2;

before(async () => {
  nats = await startNats();
  edge1 = await startEdge({ nats, name: "relay-edge-1" });
  edge2 = await startEdge({ nats, name: "relay-edge-2" });
});

after(() => shutdown());

/**
 * Connects user on edge over transport. With "default", the client is on
 * long-polling until connected, and proves that path before the upgrade lets
 * go (holdUpgrade: it stays on polling): selfRelay, for a user with no other
 * socket, relays a typing:stop to itself (up in a POST, back in a GET);
 * otherwise an ack round trip, which no other tab sees.
 */
function connectAs(user, edge, transport, { holdUpgrade = false, selfRelay = false } = {}) {
  return connectClient(edge.url, user.token, {
    transport,
    holdUpgrade,
    beforeUpgrade: async ({ socket, rec }) => {
      if (selfRelay) {
        socket.emit("typing:stop", { recipientId: user.id });
        await expectEvent(rec, "typing:stop", { userId: user.id }, "a relay to oneself over polling, before the upgrade");
      } else {
        const res = await socket.timeout(3000).emitWithAck("typing:stop", { recipientId: randomUUID() });
        assert.deepEqual(res, { ok: true }, "an ack over polling, before the upgrade");
      }
    },
  });
}

async function expectEvent(rec, event, payload, what = event) {
  const got = await rec.next(3000, what);
  assert.equal(got.event, event, `expected ${event}, got ${got.event} ${JSON.stringify(got.args)}`);
  if (payload !== undefined) assert.deepEqual(got.args, [payload]);
  return got;
}

/** Marker: `from` sends typing:stop to `to`; it must be the next event `to` receives. */
async function expectNothingBefore(markerFrom, to, what = "nothing before the marker") {
  markerFrom.socket.emit("typing:stop", { recipientId: to.user.id });
  for (const r of Array.isArray(to.rec) ? to.rec : [to.rec]) {
    await expectEvent(r, "typing:stop", { userId: markerFrom.user.id }, what);
  }
}

for (const transport of TRANSPORTS) describe(`transport: ${transport}`, () => {
  /** Connects a fresh user on an edge (relay to itself over polling first, by default); returns {user, socket, rec}. */
  const newUser = async (name, edge = edge1) => {
    const user = makeUser(name);
    return { user, ...(await connectAs(user, edge, transport, { selfRelay: true })) };
  };
  const tab = async (user, edge) => ({ user, ...(await connectAs(user, edge, transport)) });

  describe("relays between two users on one edge", () => {
    // Fresh users for every test, so that a failure leaves nothing behind for the next one.
    let a;
    let b;
    beforeEach(async () => {
      a = await newUser("alice");
      b = await newUser("bob");
    });
    afterEach(() => {
      a?.socket.close();
      b?.socket.close();
    });

    test("typing:start → {userId, username} from the token, not the payload; sender gets nothing", async () => {
      a.socket.emit("typing:start", { recipientId: b.user.id, userId: randomUUID(), username: "mallory" });
      await expectEvent(b.rec, "typing:start", { userId: a.user.id, username: "alice" });
      await expectNothingBefore(b, a, "the marker (sender must not get its own typing:start)");
      await expectNothingBefore(a, b, "the marker (recipient gets typing:start exactly once)");
    });

    test("typing:stop → {userId}", async () => {
      a.socket.emit("typing:stop", { recipientId: b.user.id });
      await expectEvent(b.rec, "typing:stop", { userId: a.user.id });
    });

    for (const ev of ["audio:recording:start", "audio:recording:stop"]) {
      test(`${ev} → {userId}`, async () => {
        a.socket.emit(ev, { recipientId: b.user.id });
        await expectEvent(b.rec, ev, { userId: a.user.id });
      });
    }

    const texts = [
      ["plain text", "hello wor"],
      ["unicode, quotes, backslashes, newlines", 'héllo "wörld" \\ 😀\n\t漢字 \u2028'],
      ["empty string", ""],
      ["exactly 2000 ASCII bytes", "x".repeat(2000)],
      ["1000 two-byte characters (2000 bytes)", "é".repeat(1000)],
    ];
    for (const [name, text] of texts) {
      test(`ghost:typing → {userId, text}: ${name}`, async () => {
        a.socket.emit("ghost:typing", { recipientId: b.user.id, text });
        await expectEvent(b.rec, "ghost:typing", { userId: a.user.id, text });
      });
    }

    for (const isPlaying of [true, false]) {
      test(`audio:listening (isPlaying ${isPlaying}) → the message sender gets {userId, messageId, isPlaying}`, async () => {
        const messageId = randomUUID();
        b.socket.emit("audio:listening", { messageId, senderId: a.user.id, isPlaying });
        await expectEvent(a.rec, "audio:listening", { userId: b.user.id, messageId, isPlaying });
        await expectNothingBefore(a, b, "the marker (listener must not get its own audio:listening)");
      });
    }

    test("a user who is their own recipient gets the relay", async () => {
      a.socket.emit("ghost:typing", { recipientId: a.user.id, text: "note to self" });
      await expectEvent(a.rec, "ghost:typing", { userId: a.user.id, text: "note to self" });
    });

    test("extra arguments after the payload are ignored", async () => {
      a.socket.emit("typing:start", { recipientId: b.user.id }, "extra", 42, { x: 1 });
      await expectEvent(b.rec, "typing:start", { userId: a.user.id, username: "alice" });
    });

    test("a relay to a user with no socket anywhere is fine", async () => {
      const res = await a.socket.timeout(2000).emitWithAck("typing:start", { recipientId: randomUUID() });
      assert.deepEqual(res, { ok: true });
    });

    const acked = [
      ["typing:start", () => ({ recipientId: b.user.id }), () => ({ userId: a.user.id, username: "alice" })],
      ["typing:stop", () => ({ recipientId: b.user.id }), () => ({ userId: a.user.id })],
      ["audio:recording:start", () => ({ recipientId: b.user.id }), () => ({ userId: a.user.id })],
      ["audio:recording:stop", () => ({ recipientId: b.user.id }), () => ({ userId: a.user.id })],
      ["ghost:typing", () => ({ recipientId: b.user.id, text: "hi" }), () => ({ userId: a.user.id, text: "hi" })],
    ];
    for (const [ev, payload, expected] of acked) {
      test(`${ev} with an ack → {ok:true} and the relay`, async () => {
        const res = await a.socket.timeout(2000).emitWithAck(ev, payload());
        assert.deepEqual(res, { ok: true });
        await expectEvent(b.rec, ev, expected());
      });
    }

    test("audio:listening with an ack (callback flavour) → {ok:true}", async () => {
      const messageId = randomUUID();
      const args = await withTimeout(
        new Promise((resolve) => b.socket.emit("audio:listening", { messageId, senderId: a.user.id, isPlaying: true }, (...r) => resolve(r))),
        3000,
        "the ack",
      );
      assert.deepEqual(args, [{ ok: true }]);
      await expectEvent(a.rec, "audio:listening", { userId: b.user.id, messageId, isPlaying: true });
    });

    test("an ack with extra arguments → {ok:true}", async () => {
      const res = await a.socket.timeout(2000).emitWithAck("typing:stop", { recipientId: b.user.id }, "extra");
      assert.deepEqual(res, { ok: true });
      await expectEvent(b.rec, "typing:stop", { userId: a.user.id });
    });
  });

  describe("bad input", () => {
    let a;
    let bystander;
    before(async () => {
      bystander = await newUser("carol");
    });
    beforeEach(async () => {
      a = await newUser("alice");
    });
    afterEach(() => a?.socket.close());

    const uuid = () => randomUUID();
    // [name, event, args (function → array of emit args), expected code]
    const cases = [
      ["typing:start without payload", "typing:start", () => [], "bad_request"],
      ["typing:start payload a string", "typing:start", () => ["x"], "bad_request"],
      ["typing:start payload a number", "typing:start", () => [5], "bad_request"],
      ["typing:start payload null", "typing:start", () => [null], "bad_request"],
      ["typing:start payload an array", "typing:start", () => [[uuid()]], "bad_request"],
      ["typing:start empty object", "typing:start", () => [{}], "bad_request"],
      ["typing:start recipientId a number", "typing:start", () => [{ recipientId: 123 }], "bad_request"],
      ["typing:start recipientId not a uuid", "typing:start", () => [{ recipientId: "not-a-uuid" }], "bad_request"],
      ["typing:start recipientId uuid with junk", "typing:start", () => [{ recipientId: uuid() + "0" }], "bad_request"],
      ["typing:stop recipientId null", "typing:stop", () => [{ recipientId: null }], "bad_request"],
      ["audio:recording:start no recipientId", "audio:recording:start", () => [{}], "bad_request"],
      ["audio:recording:stop bad recipientId", "audio:recording:stop", () => [{ recipientId: "x" }], "bad_request"],
      ["ghost:typing without text", "ghost:typing", () => [{ recipientId: uuid() }], "bad_request"],
      ["ghost:typing text a number", "ghost:typing", () => [{ recipientId: uuid(), text: 5 }], "bad_request"],
      ["ghost:typing text null", "ghost:typing", () => [{ recipientId: uuid(), text: null }], "bad_request"],
      ["ghost:typing bad recipientId", "ghost:typing", () => [{ recipientId: "bob", text: "hi" }], "bad_request"],
      ["ghost:typing 2001 bytes", "ghost:typing", () => [{ recipientId: uuid(), text: "x".repeat(2001) }], "too_large"],
      ["ghost:typing 1001 two-byte chars (2002 bytes)", "ghost:typing", () => [{ recipientId: uuid(), text: "é".repeat(1001) }], "too_large"],
      ["audio:listening empty object", "audio:listening", () => [{}], "bad_request"],
      ["audio:listening no isPlaying", "audio:listening", () => [{ messageId: uuid(), senderId: uuid() }], "bad_request"],
      ["audio:listening isPlaying a string", "audio:listening", () => [{ messageId: uuid(), senderId: uuid(), isPlaying: "yes" }], "bad_request"],
      ["audio:listening messageId not a uuid", "audio:listening", () => [{ messageId: "m1", senderId: uuid(), isPlaying: true }], "bad_request"],
      ["audio:listening senderId a number", "audio:listening", () => [{ messageId: uuid(), senderId: 5, isPlaying: true }], "bad_request"],
      ["unknown event", "foo:bar", () => [{ recipientId: uuid() }], "unknown_event"],
      ["unknown event without args", "nothing-here", () => [], "unknown_event"],
    ];

    /** The connection still works: a relay to oneself must be the next event. */
    async function selfMarker() {
      a.socket.emit("typing:stop", { recipientId: a.user.id });
      await expectEvent(a.rec, "typing:stop", { userId: a.user.id }, "the self-relay marker");
    }

    for (const [name, ev, args, code] of cases) {
      test(`no ack: ${name} → chat:error ${code}, connection keeps working`, async () => {
        a.socket.emit(ev, ...args());
        const got = await a.rec.next(3000, "chat:error");
        assert.equal(got.event, "chat:error", `got ${got.event} ${JSON.stringify(got.args)}`);
        const [err] = got.args;
        assert.equal(err.event, ev);
        assert.equal(err.code, code);
        assert.equal(typeof err.message, "string");
        assert.ok(err.message.length > 0);
        await selfMarker();
      });
    }

    for (const [name, ev, args, code] of cases) {
      test(`with ack: ${name} → {ok:false, error:{code:${code}}} and no chat:error`, async () => {
        const res = await a.socket.timeout(2000).emitWithAck(ev, ...args());
        assert.equal(res.ok, false, JSON.stringify(res));
        assert.equal(res.error.code, code);
        assert.equal(typeof res.error.message, "string");
        assert.ok(res.error.message.length > 0);
        await selfMarker();
      });
    }

    test("other users saw nothing of all that", async () => {
      assert.equal(a.socket.connected, true);
      await expectNothingBefore(a, bystander, "the marker (bystander must see nothing)");
    });

    test("an event served by a service that is not running answers an error code, connection stays up", async () => {
      a.socket.emit("presence:request", [randomUUID()]);
      const got = await a.rec.next(8000, "chat:error for presence:request");
      assert.equal(got.event, "chat:error", `got ${got.event} ${JSON.stringify(got.args)}`);
      assert.equal(got.args[0].event, "presence:request");
      assert.equal(typeof got.args[0].code, "string");
      assert.ok(got.args[0].code.length > 0);
      await selfMarker();
    });
  });

  describe("multi-tab and multi-edge fan-out", () => {
    test("two tabs on edge 1 and one on edge 2 each get every relay exactly once; a third user nothing", async () => {
      const a = await newUser("alice", edge1);
      const bob = makeUser("bob");
      const b1 = await tab(bob, edge1);
      const b2 = await tab(bob, edge1);
      const b3 = await tab(bob, edge2);
      const c = await newUser("carol", edge2);
      const bRecs = [b1.rec, b2.rec, b3.rec];

      a.socket.emit("typing:start", { recipientId: bob.id });
      for (const r of bRecs) await expectEvent(r, "typing:start", { userId: a.user.id, username: "alice" });
      a.socket.emit("ghost:typing", { recipientId: bob.id, text: "fan" });
      for (const r of bRecs) await expectEvent(r, "ghost:typing", { userId: a.user.id, text: "fan" });
      // Exactly once: the marker comes next on every tab.
      await expectNothingBefore(a, { user: bob, rec: bRecs }, "the marker on every tab of bob");
      await expectNothingBefore(a, c, "the marker (carol must get nothing)");
      await expectNothingBefore(b1, a, "the marker (alice must get nothing)");
    });

    test("a sender on edge 2 reaches a recipient on edge 1, all of the sender's tabs stay quiet", async () => {
      const alice = makeUser("alice");
      const a1 = await tab(alice, edge2);
      const a2 = await tab(alice, edge1);
      const b = await newUser("bob", edge1);
      const res = await a1.socket.timeout(2000).emitWithAck("audio:recording:start", { recipientId: b.user.id });
      assert.deepEqual(res, { ok: true });
      await expectEvent(b.rec, "audio:recording:start", { userId: alice.id });
      await expectNothingBefore(b, { user: alice, rec: [a1.rec, a2.rec] }, "the marker on alice's tabs");
    });

    test("closing tabs: the remaining tabs keep receiving, and a reconnected tab receives again", async () => {
      const a = await newUser("alice", edge1);
      const bob = makeUser("bob");
      const b1 = await tab(bob, edge1);
      const b2 = await tab(bob, edge1);
      const b3 = await tab(bob, edge2);

      b1.socket.close();
      a.socket.emit("typing:start", { recipientId: bob.id });
      await expectEvent(b2.rec, "typing:start", { userId: a.user.id, username: "alice" }, "typing:start on tab 2 after tab 1 closed");
      await expectEvent(b3.rec, "typing:start", { userId: a.user.id, username: "alice" });

      b2.socket.close(); // bob now has no socket on edge 1
      a.socket.emit("typing:stop", { recipientId: bob.id });
      await expectEvent(b3.rec, "typing:stop", { userId: a.user.id }, "typing:stop on edge 2 after edge 1's tabs closed");

      const b4 = await tab(bob, edge1); // edge 1 must subscribe again
      a.socket.emit("ghost:typing", { recipientId: bob.id, text: "back" });
      await expectEvent(b4.rec, "ghost:typing", { userId: a.user.id, text: "back" }, "ghost:typing on a reconnected tab");
      await expectEvent(b3.rec, "ghost:typing", { userId: a.user.id, text: "back" });
      await expectNothingBefore(a, { user: bob, rec: [b3.rec, b4.rec] }, "the marker (no duplicates after resubscribing)");
    });
  });
});

describe("default transports: relays over polling, then over the upgraded WebSocket", () => {
  const on = (...cs) => cs.map((c) => transportOf(c.socket));

  test("both users on polling, then one upgraded, then both: relays and acks both ways at every step", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = { user: alice, ...(await connectAs(alice, edge1, "default", { holdUpgrade: true })) };
    const b = { user: bob, ...(await connectAs(bob, edge1, "default", { holdUpgrade: true })) };

    assert.deepEqual(on(a, b), ["polling", "polling"]);
    assert.deepEqual(await a.socket.timeout(3000).emitWithAck("typing:start", { recipientId: bob.id }), { ok: true });
    await expectEvent(b.rec, "typing:start", { userId: alice.id, username: "alice" }, "typing:start, polling → polling");
    b.socket.emit("ghost:typing", { recipientId: alice.id, text: "über polling" });
    await expectEvent(a.rec, "ghost:typing", { userId: bob.id, text: "über polling" }, "ghost:typing, polling → polling");

    await a.upgrade();
    assert.deepEqual(on(a, b), ["websocket", "polling"]);
    a.socket.emit("audio:recording:start", { recipientId: bob.id });
    await expectEvent(b.rec, "audio:recording:start", { userId: alice.id }, "WebSocket → polling");
    const messageId = randomUUID();
    b.socket.emit("audio:listening", { messageId, senderId: alice.id, isPlaying: true });
    await expectEvent(a.rec, "audio:listening", { userId: bob.id, messageId, isPlaying: true }, "polling → WebSocket");

    await b.upgrade();
    assert.deepEqual(on(a, b), ["websocket", "websocket"]);
    assert.deepEqual(await b.socket.timeout(3000).emitWithAck("typing:stop", { recipientId: alice.id }), { ok: true });
    await expectEvent(a.rec, "typing:stop", { userId: bob.id }, "WebSocket → WebSocket");
    await expectNothingBefore(a, b, "the marker (nothing duplicated by the upgrades)");
    await expectNothingBefore(b, a, "the marker (nothing duplicated by the upgrades)");
  });

  test("fan-out to tabs on polling, upgraded and WebSocket-only, on both edges: once each, before and after the upgrades", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = { user: alice, ...(await connectAs(alice, edge2, "default")) };
    const held1 = await connectAs(bob, edge1, "default", { holdUpgrade: true });
    const held2 = await connectAs(bob, edge2, "default", { holdUpgrade: true });
    const upgraded = await connectAs(bob, edge1, "default");
    const wsOnly = await connectAs(bob, edge2, "websocket");
    const tabs = [held1, held2, upgraded, wsOnly];
    assert.deepEqual(on(...tabs), ["polling", "polling", "websocket", "websocket"]);

    a.socket.emit("ghost:typing", { recipientId: bob.id, text: "one" });
    for (const t of tabs) await expectEvent(t.rec, "ghost:typing", { userId: alice.id, text: "one" }, "ghost:typing on every tab");
    await held1.upgrade();
    await held2.upgrade();
    assert.deepEqual(on(...tabs), ["websocket", "websocket", "websocket", "websocket"]);
    a.socket.emit("ghost:typing", { recipientId: bob.id, text: "two" });
    for (const t of tabs) await expectEvent(t.rec, "ghost:typing", { userId: alice.id, text: "two" }, "ghost:typing after the upgrades");
    await expectNothingBefore(a, { user: bob, rec: tabs.map((t) => t.rec) }, "the marker on every tab");
  });
});

describe("a recipient that stops reading", () => {
  test("ghost:typing still queued for it is replaced by the sender's newest; other events keep their place; the socket survives what would overflow its queue", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const { socket } = await connectClient(edge1.url, alice.token);
    const { client } = await openSioSession(edge1, { token: bob.token });
    client.ws._socket.pause(); // bob reads nothing from now on: the kernel buffers fill, then the edge's queue
    // 10,000 × ~1.9 KB = 19 MB: far past the kernel's buffers and the edge's 4 MiB queue per session,
    // which would cut bob off as a slow reader if every ghost:typing were kept.
    const N = 10000;
    const pad = "x".repeat(1900);
    for (let i = 0; i < N; i++) socket.emit("ghost:typing", { recipientId: bob.id, text: `${i} ${pad}` });
    socket.emit("typing:stop", { recipientId: bob.id });
    const res = await socket.timeout(20000).emitWithAck("ghost:typing", { recipientId: bob.id, text: "last" });
    assert.deepEqual(res, { ok: true }); // the edge has handled every event before this one
    client.ws._socket.resume();

    const ghosts = [];
    let stopAt = -1;
    for (;;) {
      const text = await client.nextText(10000, "bob's events after resuming");
      if (text === "2") { client.send("3"); continue; } // a ping while we were not reading
      if (!text.startsWith("42")) continue;
      const [event, payload] = JSON.parse(text.slice(2));
      if (event === "typing:stop") { assert.equal(payload.userId, alice.id); stopAt = ghosts.length; continue; }
      if (event !== "ghost:typing") continue; // presence events
      assert.equal(payload.userId, alice.id);
      if (payload.text === "last") break;
      ghosts.push(Number(payload.text.split(" ")[0]));
    }
    assert.equal(client.closeInfo, null, "bob's socket is still open");
    assert.ok(ghosts.length < N, `some ghost:typing were replaced (${ghosts.length} of ${N} arrived)`);
    for (let i = 1; i < ghosts.length; i++) assert.ok(ghosts[i] > ghosts[i - 1], `in order: ${ghosts[i - 1]} then ${ghosts[i]}`);
    assert.equal(ghosts.at(-1), N - 1, "the newest text before typing:stop arrived");
    assert.equal(stopAt, ghosts.length, "typing:stop came after every ghost:typing sent before it, and before the last");
    const metrics = await httpRequest(`${edge1.url}/metrics`);
    const m = /^chat_edge_frames_coalesced_total (\d+)/m.exec(metrics.text);
    assert.ok(m && Number(m[1]) > 0, "chat_edge_frames_coalesced_total counts the replaced frames");
    socket.close();
    client.close();
  });
});

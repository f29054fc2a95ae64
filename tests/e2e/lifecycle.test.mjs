// Process lifecycle and resilience: SIGTERM shutdown, NATS outage and
// recovery, bounded per-connection output queue. Each test has its own edge.
// The chat tests run once per client transport (TRANSPORTS); with the default
// transports alice has upgraded to WebSocket and bob stays on long-polling
// (his upgrade is held). The last describe covers raw long-polling sessions.
import assert from "node:assert/strict";
import { after, describe } from "node:test";
import {
  test,
  startNats,
  startEdge,
  connectClient,
  openSioSession,
  openPolling,
  rawHttp,
  shutdown,
  assertCleanExit,
  withTimeout,
  delay,
  transportOf,
  TRANSPORTS,
} from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

after(() => shutdown());

async function natsAndEdge(name, env = {}) {
  const nats = await startNats();
  const edge = await startEdge({ nats, name, env });
  return { nats, edge };
}

function nextDisconnect(socket, ms, what) {
  return withTimeout(new Promise((resolve) => socket.once("disconnect", resolve)), ms, what);
}

for (const transport of TRANSPORTS) describe(`transport: ${transport}`, () => {
  /** alice: upgraded (default) or WebSocket; bob: held on long-polling (default) or WebSocket. */
  const alice = (edge, user = makeUser("alice")) => connectClient(edge.url, user.token, { transport });
  const bob = (edge, user = makeUser("bob")) => connectClient(edge.url, user.token, { transport, holdUpgrade: true });
  const expected = transport === "websocket" ? ["websocket", "websocket"] : ["websocket", "polling"];

  describe("shutdown", () => {
    test("SIGTERM: clients see a disconnect and the process exits 0 within 5 s", async () => {
      const { edge } = await natsAndEdge("lifecycle-term");
      const a = await alice(edge);
      const b = await bob(edge);
      assert.deepEqual([transportOf(a.socket), transportOf(b.socket)], expected);
      const t0 = Date.now();
      const gone = [nextDisconnect(a.socket, 5000, "alice's disconnect"), nextDisconnect(b.socket, 5000, "bob's disconnect")];
      const exit = withTimeout(edge.child.exitPromise, 5000, "the edge to exit after SIGTERM");
      edge.child.proc.kill("SIGTERM");
      await Promise.all(gone);
      const { code, signal } = await exit;
      assert.equal(signal, null, `killed by ${signal}`);
      assert.equal(code, 0);
      assert.ok(Date.now() - t0 < 5000);
      assertCleanExit(edge.child);
    });
  });

  describe("NATS outage", () => {
    test("sockets survive a NATS restart and relays work again afterwards", async () => {
      const { nats, edge } = await natsAndEdge("lifecycle-nats");
      const a = await alice(edge);
      const bobUser = makeUser("bob");
      const b = await bob(edge, bobUser);
      assert.deepEqual([transportOf(a.socket), transportOf(b.socket)], expected);

      a.socket.emit("typing:stop", { recipientId: bobUser.id });
      assert.equal((await b.rec.next(3000, "relay before the outage")).event, "typing:stop");

      await nats.stop("SIGKILL");
      // The outage window; the sockets must not notice. An emit with an ack proves
      // the socket is served during the outage (any answer, ok or error).
      await delay(1000);
      const during = await a.socket.timeout(3000).emitWithAck("typing:start", { recipientId: bobUser.id });
      assert.equal(typeof during.ok, "boolean", `ack during the outage: ${JSON.stringify(during)}`);
      assert.deepEqual(a.disconnects, []);
      assert.deepEqual(b.disconnects, []);

      await startNats({ port: nats.port, dir: nats.dir });

      // Retry until the edge has reconnected to NATS and the relay arrives (bounded ~10 s).
      const deadline = Date.now() + 10000;
      let arrived = false;
      while (!arrived && Date.now() < deadline) {
        a.socket.emit("ghost:typing", { recipientId: bobUser.id, text: "after" });
        try {
          for (;;) {
            const ev = await b.rec.next(500, "relay after the restart");
            if (ev.event === "ghost:typing" && ev.args[0].text === "after") {
              arrived = true;
              break;
            }
          }
        } catch {
          // nothing within 500 ms: try again
        }
      }
      assert.ok(arrived, "no relay within 10 s after nats-server came back");
      assert.deepEqual(a.disconnects, []);
      assert.deepEqual(b.disconnects, []);
      assert.equal(a.socket.connected && b.socket.connected, true);
      assert.deepEqual([transportOf(a.socket), transportOf(b.socket)], expected);
    });
  });

  describe("bounded output queue", () => {
    test("a recipient that stops reading is disconnected; the sender keeps working", async () => {
      const { edge } = await natsAndEdge("lifecycle-queue", {
        EDGE_MAX_QUEUE_BYTES: "65536",
        // Long heartbeat so that only the queue bound can close the stalled reader.
        EDGE_PING_INTERVAL_MS: "60000",
        EDGE_PING_TIMEOUT_MS: "60000",
      });
      const bobUser = makeUser("bob");
      const { client: bob } = await openSioSession(edge, { token: bobUser.token });
      const alice = await connectClient(edge.url, makeUser("alice").token, { transport });

      // Bob's edge-to-client path works before the stall.
      alice.socket.emit("typing:stop", { recipientId: bobUser.id });
      assert.match(await bob.nextText(3000, "relay before the stall"), /^42\["typing:stop"/);

      bob.ws._socket.pause();
      // ghost:typing alternating with typing:stop: a queued ghost:typing is
      // replaced only by one right behind it, so every one of these stays queued.
      const text = "g".repeat(1900);
      const total = 20000;
      const batch = 250;
      let sent = 0;
      for (; sent < total; sent += batch) {
        const acks = [];
        for (let i = 0; i < batch; i++) {
          const [event, payload] = i % 2 ? ["typing:stop", { recipientId: bobUser.id }] : ["ghost:typing", { recipientId: bobUser.id, text }];
          acks.push(alice.socket.timeout(10000).emitWithAck(event, payload));
        }
        const res = await Promise.all(acks);
        assert.ok(res.every((r) => r.ok === true), `a flood ack was not ok: ${JSON.stringify(res.find((r) => r.ok !== true))}`);
      }
      assert.equal(alice.socket.connected, true);

      bob.ws._socket.resume();
      await bob.waitClosed(15000, "the edge to close the stalled reader");
      const received = bob.frames.filter((f) => f.text?.startsWith('42["ghost:typing"')).length;
      assert.ok(received < total / 2, `bob received all ${received} ghost:typing: nothing was bounded`);

      const res = await alice.socket.timeout(2000).emitWithAck("typing:start", { recipientId: bobUser.id });
      assert.deepEqual(res, { ok: true });
      assert.deepEqual(alice.disconnects, []);
    });
  });
});

describe("long-polling sessions", () => {
  /** A raw Socket.IO session over long-polling, connected as user. */
  async function pollingUser(edge, user) {
    const { client } = await openPolling(edge);
    await client.send(`40${JSON.stringify({ token: user.token })}`);
    assert.match(await client.nextText(3000, "the CONNECT reply"), /^40\{"sid":/);
    return client;
  }

  test("SIGTERM: a held GET is answered '1'; exit 0 within 5 s", async () => {
    const { edge } = await natsAndEdge("lifecycle-term-polling");
    const held = await pollingUser(edge, makeUser("held"));
    const get = await rawHttp(edge);
    get.request({ path: `/socket.io/?EIO=4&transport=polling&sid=${held.sid}` });
    await delay(150); // the edge gives no signal that it holds the GET
    const t0 = Date.now();
    const exit = withTimeout(edge.child.exitPromise, 5000, "the edge to exit after SIGTERM");
    edge.child.proc.kill("SIGTERM");
    const res = await get.response(5000, "the answer to the held GET at shutdown");
    assert.equal(res.status, 200);
    assert.equal(res.body.split("\x1e").at(-1), "1", `held GET got ${JSON.stringify(res.body)}`);
    const { code, signal } = await exit;
    assert.equal(signal, null, `killed by ${signal}`);
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 < 5000);
    assertCleanExit(edge.child);
  });

  test("SIGTERM with a polling session that holds no GET (its client is between polls): exit 0 within 5 s", async () => {
    // Conformance mode: no NATS. Every request on its own connection with
    // Connection: close, all closed before the SIGTERM: no client activity
    // during the shutdown.
    const edge = await startEdge({ name: "lifecycle-term-idle", env: { EDGE_MODE: "conformance" } });
    const request = async (opts, what) => {
      const h = await rawHttp(edge);
      h.request({ ...opts, headers: { Connection: "close", ...opts.headers } });
      const res = await h.response(3000, what);
      await h.waitClosed(3000, `the edge to close the connection after ${what}`);
      return res;
    };
    const hs = await request({ path: "/socket.io/?EIO=4&transport=polling" }, "the handshake");
    const p = `/socket.io/?EIO=4&transport=polling&sid=${JSON.parse(hs.body.slice(1)).sid}`;
    const post = await request({ method: "POST", path: p, headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: "40" }, "the CONNECT");
    assert.equal(post.body, "ok");
    assert.match((await request({ path: p }, "the CONNECT reply")).body, /^40\{"sid":/);

    const t0 = Date.now();
    edge.child.proc.kill("SIGTERM");
    const { code, signal } = await withTimeout(edge.child.exitPromise, 10000, "the edge to exit after SIGTERM");
    const elapsed = Date.now() - t0;
    assert.equal(signal, null, `killed by ${signal}`);
    assert.equal(code, 0);
    assertCleanExit(edge.child);
    assert.ok(elapsed < 5000, `the edge took ${elapsed} ms to exit after SIGTERM`);
  });

  test("bounded output queue: a polling reader that stops polling is cut off; the sender keeps working", async () => {
    const { edge } = await natsAndEdge("lifecycle-queue-polling", {
      EDGE_MAX_QUEUE_BYTES: "65536",
      EDGE_PING_INTERVAL_MS: "60000",
      EDGE_PING_TIMEOUT_MS: "60000",
    });
    const bobUser = makeUser("bob");
    const bob = await pollingUser(edge, bobUser);
    const alice = await connectClient(edge.url, makeUser("alice").token);

    alice.socket.emit("typing:stop", { recipientId: bobUser.id });
    assert.match(await bob.nextText(3000, "relay before the stall"), /^42\["typing:stop"/);

    // Bob polls no more: 50 ghost:typing × ~1.9 kB (each behind a typing:stop, so
    // none replaces another) is 1.5 times the queue bound.
    const text = "g".repeat(1900);
    const acks = [];
    for (let i = 0; i < 100; i++) {
      const [event, payload] = i % 2 ? ["typing:stop", { recipientId: bobUser.id }] : ["ghost:typing", { recipientId: bobUser.id, text }];
      acks.push(alice.socket.timeout(5000).emitWithAck(event, payload));
    }
    const res = await Promise.all(acks);
    assert.ok(res.every((r) => r.ok === true), `a flood ack was not ok: ${JSON.stringify(res.find((r) => r.ok !== true))}`);

    const r = await bob.get({ what: "bob's GET after the flood" });
    assert.equal(r.status, 400, `bob's session survived the flood: ${r.status} ${r.text.slice(0, 100)}`);
    assert.equal(JSON.parse(r.text).code, 1);
    assert.deepEqual(await alice.socket.timeout(2000).emitWithAck("typing:start", { recipientId: bobUser.id }), { ok: true });
    assert.deepEqual(alice.disconnects, []);
  });
});

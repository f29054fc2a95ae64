// Process lifecycle and resilience: SIGTERM shutdown, NATS outage and
// recovery, bounded per-connection output queue. Each test has its own edge.
import assert from "node:assert/strict";
import { after, describe } from "node:test";
import { test, startNats, startEdge, connectClient, openSioSession, closeAll, withTimeout, delay } from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const cleanups = [];
after(async () => {
  closeAll();
  for (const f of cleanups.reverse()) await f();
});

async function natsAndEdge(name, env = {}) {
  const nats = await startNats();
  cleanups.push(() => nats.destroy());
  const edge = await startEdge({ nats, name, env });
  cleanups.push(() => edge.stop());
  return { nats, edge };
}

function nextDisconnect(socket, ms, what) {
  return withTimeout(new Promise((resolve) => socket.once("disconnect", resolve)), ms, what);
}

describe("shutdown", () => {
  test("SIGTERM: clients see a disconnect and the process exits 0 within 5 s", async () => {
    const { edge } = await natsAndEdge("lifecycle-term");
    const a = await connectClient(edge.url, makeUser("alice").token);
    const b = await connectClient(edge.url, makeUser("bob").token);
    const t0 = Date.now();
    const gone = [nextDisconnect(a.socket, 5000, "alice's disconnect"), nextDisconnect(b.socket, 5000, "bob's disconnect")];
    const exit = withTimeout(edge.child.exitPromise, 5000, "the edge to exit after SIGTERM");
    edge.child.proc.kill("SIGTERM");
    await Promise.all(gone);
    const { code, signal } = await exit;
    assert.equal(signal, null, `killed by ${signal}`);
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 < 5000);
  });
});

describe("NATS outage", () => {
  test("sockets survive a NATS restart and relays work again afterwards", async () => {
    const { nats, edge } = await natsAndEdge("lifecycle-nats");
    const alice = await connectClient(edge.url, makeUser("alice").token);
    const bobUser = makeUser("bob");
    const bob = await connectClient(edge.url, bobUser.token);

    alice.socket.emit("typing:stop", { recipientId: bobUser.id });
    assert.equal((await bob.rec.next(3000, "relay before the outage")).event, "typing:stop");

    await nats.stop("SIGKILL");
    // The outage window; the sockets must not notice. An emit with an ack proves
    // the socket is served during the outage (any answer, ok or error).
    await delay(1000);
    const during = await alice.socket.timeout(3000).emitWithAck("typing:start", { recipientId: bobUser.id });
    assert.equal(typeof during.ok, "boolean", `ack during the outage: ${JSON.stringify(during)}`);
    assert.deepEqual(alice.disconnects, []);
    assert.deepEqual(bob.disconnects, []);

    const restarted = await startNats({ port: nats.port, dir: nats.dir });
    cleanups.push(() => restarted.destroy());

    // Retry until the edge has reconnected to NATS and the relay arrives (bounded ~10 s).
    const deadline = Date.now() + 10000;
    let arrived = false;
    while (!arrived && Date.now() < deadline) {
      alice.socket.emit("ghost:typing", { recipientId: bobUser.id, text: "after" });
      try {
        for (;;) {
          const ev = await bob.rec.next(500, "relay after the restart");
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
    assert.deepEqual(alice.disconnects, []);
    assert.deepEqual(bob.disconnects, []);
    assert.equal(alice.socket.connected && bob.socket.connected, true);
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
    const alice = await connectClient(edge.url, makeUser("alice").token);

    // Bob's edge-to-client path works before the stall.
    alice.socket.emit("typing:stop", { recipientId: bobUser.id });
    assert.match(await bob.nextText(3000, "relay before the stall"), /^42\["typing:stop"/);

    bob.ws._socket.pause();
    const text = "g".repeat(1900);
    const total = 20000;
    const batch = 250;
    let sent = 0;
    for (; sent < total; sent += batch) {
      const acks = [];
      for (let i = 0; i < batch; i++) {
        acks.push(alice.socket.timeout(10000).emitWithAck("ghost:typing", { recipientId: bobUser.id, text }));
      }
      const res = await Promise.all(acks);
      assert.ok(res.every((r) => r.ok === true), `a flood ack was not ok: ${JSON.stringify(res.find((r) => r.ok !== true))}`);
    }
    assert.equal(alice.socket.connected, true);

    bob.ws._socket.resume();
    await bob.waitClosed(15000, "the edge to close the stalled reader");
    const received = bob.frames.filter((f) => f.text?.startsWith('42["ghost:typing"')).length;
    assert.ok(received < total, `bob received all ${received} events: nothing was bounded`);

    const res = await alice.socket.timeout(2000).emitWithAck("typing:start", { recipientId: bobUser.id });
    assert.deepEqual(res, { ok: true });
    assert.deepEqual(alice.disconnects, []);
  });
});

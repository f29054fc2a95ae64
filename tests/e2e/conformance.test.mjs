// Conformance mode (EDGE_MODE=conformance): the server handlers that the
// official Engine.IO v4 / Socket.IO v5 suites expect, checked over WebSocket
// with a raw client (behaviours of those suites, written independently), plus a
// real socket.io-client round trip. No NATS.
import assert from "node:assert/strict";
import { before, after, describe } from "node:test";
import { io } from "socket.io-client";
import { test, startEdge, openRaw, openSession, closeAll, withTimeout, clientOptions } from "./harness.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const CONNECT_TIMEOUT = 1000;

let edge;

before(async () => {
  edge = await startEdge({
    name: "conformance",
    env: {
      EDGE_MODE: "conformance",
      EDGE_PING_INTERVAL_MS: String(PING_INTERVAL),
      EDGE_PING_TIMEOUT_MS: String(PING_TIMEOUT),
      EDGE_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT),
    },
  });
});

after(async () => {
  closeAll();
  await edge?.stop();
});

const EIO = { path: "/engine.io/" };
const SIO = { path: "/socket.io/" };

/** Opens /socket.io/, sends CONNECT (payload text appended to "40"), returns client and reply. */
async function sioConnect(connectFrame = "40") {
  const { client, open } = await openSession(edge, SIO);
  client.send(connectFrame);
  const reply = await client.nextText(3000, "the CONNECT reply");
  return { client, open, reply };
}

/** Connected to "/" with the auth event consumed. */
async function sioReady() {
  const { client, reply } = await sioConnect("40");
  assert.match(reply, /^40\{/);
  assert.equal(await client.nextText(3000, "the auth event"), '42["auth",{}]');
  return client;
}

describe("Engine.IO (/engine.io/)", () => {
  test("handshake: open packet with exactly the five keys and the configured values", async () => {
    const { client, open } = await openSession(edge, EIO);
    assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.equal(typeof open.sid, "string");
    assert.deepEqual(open.upgrades, []);
    assert.equal(open.pingInterval, PING_INTERVAL);
    assert.equal(open.pingTimeout, PING_TIMEOUT);
    assert.equal(open.maxPayload, 1000000);
    client.close();
  });

  test("invalid EIO version → no session", async () => {
    const client = await openRaw(edge, { ...EIO, query: "EIO=3&transport=websocket" });
    const r = await withTimeout(client.opened, 3000, "the upgrade answer");
    if (r.ok) {
      await client.waitClosed(3000);
      assert.ok(!client.frames.some((f) => f.text?.startsWith("0")));
    }
  });

  test("invalid transport → no session", async () => {
    const client = await openRaw(edge, { ...EIO, query: "EIO=4&transport=abc" });
    const r = await withTimeout(client.opened, 3000, "the upgrade answer");
    if (r.ok) {
      await client.waitClosed(3000);
      assert.ok(!client.frames.some((f) => f.text?.startsWith("0")));
    }
  });

  test("text messages are echoed as text", async () => {
    const { client } = await openSession(edge, EIO);
    for (const m of ["4hello", "4", "4€ and 😀", '4{"a":[1,2]}']) {
      client.send(m);
      assert.equal(await client.nextText(2000, `echo of ${m}`), m);
    }
    client.close();
  });

  test("binary messages are echoed as binary", async () => {
    const { client } = await openSession(edge, EIO);
    const data = Buffer.from([1, 2, 3, 4, 0, 255]);
    client.send(data);
    assert.deepEqual(await client.nextBinary(2000, "the binary echo"), data);
    const big = Buffer.alloc(100000, 0xab);
    client.send(big);
    assert.deepEqual(await client.nextBinary(2000, "the 100 kB binary echo"), big);
    client.close();
  });

  test("heartbeat: ping after pingInterval, session kept while pongs come, closed without one", async () => {
    const { client } = await openSession(edge, EIO);
    for (let i = 0; i < 2; i++) {
      assert.equal(await client.nextText(PING_INTERVAL * 5, `ping #${i + 1}`), "2");
      client.send("3");
    }
    assert.equal(await client.nextText(PING_INTERVAL * 5, "ping #3"), "2");
    await client.waitClosed(PING_TIMEOUT * 10, "close after a missed pong");
  });

  test("'1' closes the session", async () => {
    const { client } = await openSession(edge, EIO);
    client.send("1");
    await client.waitClosed(2000);
  });

  test("'abc' closes the session", async () => {
    const { client } = await openSession(edge, EIO);
    client.send("abc");
    await client.waitClosed(2000);
  });
});

describe("Socket.IO (/socket.io/)", () => {
  test("CONNECT to / → 40{sid} (only sid, ≠ Engine.IO sid), then 42[\"auth\",{}]", async () => {
    const { client, open, reply } = await sioConnect("40");
    assert.match(reply, /^40\{/);
    const body = JSON.parse(reply.slice(2));
    assert.deepEqual(Object.keys(body), ["sid"]);
    assert.notEqual(body.sid, open.sid);
    assert.equal(await client.nextText(2000, "the auth event"), '42["auth",{}]');
    client.close();
  });

  test("the auth event carries the CONNECT payload", async () => {
    const { client, reply } = await sioConnect('40{"token":"123","n":[1,{"x":true}]}');
    assert.match(reply, /^40\{"sid":/);
    assert.deepEqual(JSON.parse((await client.nextText(2000, "the auth event")).slice(2)), ["auth", { token: "123", n: [1, { x: true }] }]);
    client.close();
  });

  test("CONNECT to /custom (with and without the trailing comma)", async () => {
    for (const frame of ["40/custom,", "40/custom", '40/custom,{"token":"abc"}']) {
      const { client, open, reply } = await sioConnect(frame);
      assert.match(reply, /^40\/custom,\{/, `reply to ${frame}`);
      const body = JSON.parse(reply.slice("40/custom,".length));
      assert.deepEqual(Object.keys(body), ["sid"]);
      assert.notEqual(body.sid, open.sid);
      const expected = frame.endsWith("}") ? '42/custom,["auth",{"token":"abc"}]' : '42/custom,["auth",{}]';
      assert.equal(await client.nextText(2000, "the auth event on /custom"), expected);
      client.close();
    }
  });

  test("/ and /custom on one Engine.IO session", async () => {
    const client = await sioReady();
    client.send("40/custom,");
    assert.match(await client.nextText(2000), /^40\/custom,\{"sid":/);
    assert.equal(await client.nextText(2000), '42/custom,["auth",{}]');
    client.send('42["message",1]');
    assert.equal(await client.nextText(2000), '42["message-back",1]');
    client.close();
  });

  test("unknown namespace → 44/<nsp>,{message:'Invalid namespace'}, session stays open", async () => {
    const { client, reply } = await sioConnect("40/random");
    assert.equal(reply, '44/random,{"message":"Invalid namespace"}');
    client.send("40/random,");
    assert.equal(await client.nextText(2000), '44/random,{"message":"Invalid namespace"}');
    client.send("40");
    assert.match(await client.nextText(2000, "CONNECT reply after a refused namespace"), /^40\{"sid":/);
    client.close();
  });

  test("no CONNECT within the connect timeout closes the session", async () => {
    const { client } = await openSession(edge, SIO);
    client.ws.on("message", (d, bin) => !bin && d.toString() === "2" && client.ws.send("3"));
    const t0 = Date.now();
    await client.waitClosed(CONNECT_TIMEOUT * 4);
    assert.ok(Date.now() - t0 >= CONNECT_TIMEOUT * 0.8, `closed after ${Date.now() - t0} ms`);
  });

  test("'41' disconnects the namespace but keeps the session: next frame is a ping", async () => {
    const client = await sioReady();
    client.send("41");
    assert.equal(await client.nextText(PING_INTERVAL * 5, "the ping after 41"), "2");
    client.close();
  });

  test("'41/custom' leaves /custom; the next frame is a ping", async () => {
    const { client } = await sioConnect("40/custom,");
    assert.equal(await client.nextText(2000), '42/custom,["auth",{}]');
    client.send("41/custom");
    assert.equal(await client.nextText(PING_INTERVAL * 5, "the ping after 41/custom"), "2");
    client.close();
  });

  test("message → message-back with the same arguments", async () => {
    const client = await sioReady();
    client.send('42["message",1,"2",{"3":[true]}]');
    assert.equal(await client.nextText(2000), '42["message-back",1,"2",{"3":[true]}]');
    client.send('42["message"]');
    assert.equal(await client.nextText(2000), '42["message-back"]');
    client.close();
  });

  test("message-with-ack → ack with the same arguments", async () => {
    const client = await sioReady();
    client.send('42456["message-with-ack",1,"2",{"3":[false]}]');
    assert.equal(await client.nextText(2000), '43456[1,"2",{"3":[false]}]');
    client.send('420["message-with-ack"]');
    assert.equal(await client.nextText(2000), "430[]");
    client.close();
  });

  test("binary message → 452-[\"message-back\",...] + the two binary frames", async () => {
    const client = await sioReady();
    client.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    client.send(Buffer.from([1, 2, 3]));
    client.send(Buffer.from([4, 5, 6]));
    assert.equal(
      await client.nextText(2000, "the binary event header"),
      '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    );
    assert.deepEqual(await client.nextBinary(2000), Buffer.from([1, 2, 3]));
    assert.deepEqual(await client.nextBinary(2000), Buffer.from([4, 5, 6]));
    client.close();
  });

  test("binary message-with-ack → 462-789[...] + the two binary frames", async () => {
    const client = await sioReady();
    client.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    client.send(Buffer.from([1, 2, 3]));
    client.send(Buffer.from([4, 5, 6]));
    assert.equal(await client.nextText(2000, "the binary ack header"), '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual(await client.nextBinary(2000), Buffer.from([1, 2, 3]));
    assert.deepEqual(await client.nextBinary(2000), Buffer.from([4, 5, 6]));
    client.close();
  });

  for (const [name, frame] of [
    ["unknown packet type '4abc'", "4abc"],
    ["EVENT with an object '42{}'", "42{}"],
    ["junk ack id '42abc[\"message\"]'", '42abc["message"]'],
    ["'abc'", "abc"],
  ]) {
    test(`malformed ${name} closes the connection`, async () => {
      const client = await sioReady();
      client.send(frame);
      await client.waitClosed(2000);
    });
  }

  test("'4abc' as the first packet (invalid handshake) closes the connection", async () => {
    const { client } = await openSession(edge, SIO);
    client.send("4abc");
    await client.waitClosed(2000);
  });

  test("an EVENT before CONNECT closes the connection", async () => {
    const { client } = await openSession(edge, SIO);
    client.send('42["message"]');
    await client.waitClosed(2000);
  });

  test("a binary frame with no binary packet pending closes the connection", async () => {
    const client = await sioReady();
    client.send(Buffer.from([1, 2, 3]));
    await client.waitClosed(2000);
  });
});

describe("socket.io-client against conformance mode", () => {
  function connect(auth) {
    const socket = io(edge.url, clientOptions(auth));
    const authEvent = new Promise((resolve) => socket.once("auth", resolve));
    const connected = withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      5000,
      "socket.io connect",
    );
    return { socket, authEvent, connected };
  }

  test("connects, gets the auth event, emitWithAck round-trips a Buffer", async () => {
    const { socket, authEvent, connected } = connect({ token: "abc" });
    try {
      await connected;
      assert.deepEqual(await withTimeout(authEvent, 2000, "the auth event"), { token: "abc" });
      const buf = Buffer.from([0, 1, 2, 250, 251, 255]);
      const res = await socket.timeout(2000).emitWithAck("message-with-ack", buf);
      assert.ok(Buffer.isBuffer(res), `ack is ${typeof res}`);
      assert.deepEqual(res, buf);
    } finally {
      socket.close();
    }
  });

  test("mixed JSON and binary arguments: ack and message-back", async () => {
    const { socket, connected } = connect(undefined);
    try {
      await connected;
      const args = [1, "two", { three: Buffer.from([3]), list: [Buffer.from("four")] }, null];
      const acked = await withTimeout(
        new Promise((resolve, reject) =>
          socket.timeout(2000).emit("message-with-ack", ...args, (err, ...res) => (err ? reject(err) : resolve(res))),
        ),
        3000,
        "the ack",
      );
      assert.deepEqual(acked, args);
      const back = new Promise((resolve) => socket.once("message-back", (...a) => resolve(a)));
      socket.emit("message", ...args);
      assert.deepEqual(await withTimeout(back, 2000, "message-back"), args);
    } finally {
      socket.close();
    }
  });
});

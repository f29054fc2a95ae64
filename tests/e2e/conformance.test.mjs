// Conformance mode (EDGE_MODE=conformance): the server handlers that the
// official Engine.IO v4 / Socket.IO v5 suites expect, checked with raw clients
// over WebSocket and over HTTP long-polling, including heartbeat and close
// over polling and the upgrade to WebSocket (behaviours of those suites,
// written independently), plus real socket.io-client round trips over each
// client transport. No NATS.
import assert from "node:assert/strict";
import { before, after, describe } from "node:test";
import { io } from "socket.io-client";
import {
  test,
  startEdge,
  openRaw,
  openSession,
  openPolling,
  httpRequest,
  rawHttp,
  shutdown,
  withTimeout,
  delay,
  clientOptions,
  UpgradeGate,
  transportOf,
  TRANSPORTS,
} from "./harness.mjs";

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

after(() => shutdown());

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

/** GETs (answering pings) until one is refused; returns it. The session must end within ms. */
async function pollUntilRefused(client, ms, what) {
  const deadline = Date.now() + ms;
  const seen = [];
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`the session did not end within ${ms} ms (${what}); got ${JSON.stringify(seen)}`);
    const r = await client.get({ ms: left, what });
    if (r.status !== 200) return { res: r, seen };
    seen.push(r.text);
    if (r.text.split("\x1e").includes("2")) await client.post("3");
  }
}

/** The JSON 400 of a refused polling request. */
function assertRefused(res, code) {
  assert.equal(res.status, 400, `status (body ${JSON.stringify(res.text)})`);
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = JSON.parse(res.text);
  assert.equal(body.code, code, res.text);
  assert.equal(typeof body.message, "string");
}

/** A probe WebSocket for a polling session, answered 3probe. */
async function probe(client) {
  const ws = await openRaw(edge, { path: client.path, query: `EIO=4&transport=websocket&sid=${client.sid}` });
  const r = await withTimeout(ws.opened, 3000, "the probe WebSocket");
  assert.ok(r.ok, JSON.stringify(r));
  ws.send("2probe");
  assert.equal(await ws.nextText(3000, "3probe"), "3probe");
  return ws;
}

/** Next frame on a WebSocket that is not a ping (pings are answered). */
async function nextNonPing(ws, ms, what) {
  for (;;) {
    const t = await ws.nextText(ms, what);
    if (t !== "2") return t;
    ws.send("3");
  }
}

describe("Engine.IO over HTTP long-polling (/engine.io/)", () => {
  test("handshake: 200 text/plain; charset=UTF-8, open packet with upgrades [websocket] and the configured values", async () => {
    const { open, res } = await openPolling(edge, EIO);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=UTF-8");
    assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.deepEqual(open.upgrades, ["websocket"]);
    assert.equal(open.pingInterval, PING_INTERVAL);
    assert.equal(open.pingTimeout, PING_TIMEOUT);
    assert.equal(open.maxPayload, 1000000);
  });

  test("bad handshakes: EIO, transport, method → 400 with the matching code", async () => {
    const base = `${edge.url}/engine.io/`;
    assertRefused(await httpRequest(`${base}?transport=polling`), 5);
    assertRefused(await httpRequest(`${base}?EIO=abc&transport=polling`), 5);
    assertRefused(await httpRequest(`${base}?EIO=4`), 0);
    assertRefused(await httpRequest(`${base}?EIO=4&transport=abc`), 0);
    assertRefused(await httpRequest(`${base}?EIO=4&transport=polling`, { method: "POST", body: "4x" }), 2);
    assertRefused(await httpRequest(`${base}?EIO=4&transport=polling`, { method: "PUT", body: "4x" }), 2);
    assertRefused(await httpRequest(`${base}?EIO=4&transport=polling&sid=nope`), 1);
  });

  test("a text message is echoed in a GET", async () => {
    const { client } = await openPolling(edge, EIO);
    const post = await client.post("4Hello world!");
    assert.equal(post.status, 200);
    assert.equal(post.text, "ok");
    assert.equal(await client.nextText(2000, "the echo"), "4Hello world!");
  });

  test("a binary message (b + base64) is echoed as binary", async () => {
    const { client } = await openPolling(edge, EIO);
    await client.send("bAQIDBA==");
    assert.deepEqual(await client.next(2000, "the binary echo"), Buffer.from([1, 2, 3, 4]));
  });

  test("several packets in one POST are echoed in order", async () => {
    const { client } = await openPolling(edge, EIO);
    await client.send(["4Hello", "4€uro", Buffer.from([250, 251]), "4world"]);
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await client.next(2000, `echo #${i + 1}`));
    assert.deepEqual(got, ["4Hello", "4€uro", Buffer.from([250, 251]), "4world"]);
  });

  test("heartbeat: a ping in a GET every pingInterval, the pong in a POST, the session lives on", async () => {
    const { client } = await openPolling(edge, EIO);
    for (let i = 0; i < 3; i++) {
      assert.equal(await client.nextText(PING_INTERVAL * 5, `ping #${i + 1}`, { pong: false }), "2");
      await client.send("3");
    }
    await client.send("4alive");
    assert.equal(await client.nextText(PING_INTERVAL * 5, "the echo after three pongs"), "4alive");
  });

  test("heartbeat: no pong within pingTimeout closes the session", async () => {
    const { client } = await openPolling(edge, EIO);
    assert.equal(await client.nextText(PING_INTERVAL * 5, "the ping", { pong: false }), "2");
    await delay(PING_TIMEOUT * 2); // the deadline passes without a pong
    assertRefused(await client.get({ ms: PING_INTERVAL * 5 }), 1);
  });

  test("close: POST '1' ends the session", async () => {
    const { client } = await openPolling(edge, EIO);
    await client.send("1");
    assertRefused(await client.get(), 1);
  });

  test("close: a cancelled (aborted) GET ends the session", async () => {
    const { client } = await openPolling(edge, EIO);
    const held = await rawHttp(edge);
    held.request({ path: `/engine.io/?EIO=4&transport=polling&sid=${client.sid}` });
    await delay(100); // no signal that the edge holds it; well under pingInterval
    held.abort();
    await held.closed;
    // The POST does not compete with a GET: "ok" while the session lives. The
    // session must end on the abort itself, sooner than a ping (then lost in
    // the dead connection) could end it by a missed pong.
    const deadline = Date.now() + PING_INTERVAL;
    let r;
    do r = await client.post("4x");
    while (r.status === 200 && Date.now() < deadline);
    assertRefused(r, 1);
  });

  test("upgrade: probe, a GET while upgrading gets '6', '5', then echo and heartbeat over the WebSocket", async () => {
    const { client } = await openPolling(edge, EIO);
    const ws = await probe(client);
    // A ping may have been queued for polling before the probe: it is not
    // flushed while upgrading, so the GET gets the noop.
    const r = await client.get({ what: "a GET while upgrading" });
    assert.equal(r.status, 200);
    assert.equal(r.text, "6");
    ws.send("5");
    ws.send("4over ws");
    assert.equal(await nextNonPing(ws, 2000, "the echo over the WebSocket"), "4over ws");
    ws.send(Buffer.from([7, 7]));
    let f = await ws.next(2000, "the binary echo");
    while (f.text === "2") {
      ws.send("3");
      f = await ws.next(2000, "the binary echo");
    }
    assert.deepEqual(f.binary, Buffer.from([7, 7]));
    // The heartbeat moved to the WebSocket: pings come there, and pongs keep it alive.
    for (let i = 0; i < 2; i++) {
      assert.equal(await ws.nextText(PING_INTERVAL * 5, `ping #${i + 1} over the WebSocket`), "2");
      ws.send("3");
    }
    assert.equal(ws.closeInfo, null);
    ws.close();
  });

  test("after the upgrade, HTTP requests with the sid are refused (400 code 3)", async () => {
    const { client } = await openPolling(edge, EIO);
    const ws = await probe(client);
    ws.send("5");
    ws.send("4switched");
    assert.equal(await nextNonPing(ws, 2000, "the echo after the switch"), "4switched");
    assertRefused(await client.get(), 3);
    assertRefused(await client.post("4x"), 3);
    ws.close();
  });

  test("after the upgrade, another WebSocket with the same sid is closed", async () => {
    const { client } = await openPolling(edge, EIO);
    const ws = await probe(client);
    ws.send("5");
    ws.send("4switched");
    assert.equal(await nextNonPing(ws, 2000, "the echo after the switch"), "4switched");
    const other = await openRaw(edge, { path: "/engine.io/", query: `EIO=4&transport=websocket&sid=${client.sid}` });
    await other.waitClosed(3000, "the edge to close the second WebSocket");
    assert.deepEqual(other.frames, []);
    ws.send("4still mine");
    assert.equal(await nextNonPing(ws, 2000, "the echo on the upgraded WebSocket"), "4still mine");
    ws.close();
  });
});

describe("Socket.IO over HTTP long-polling (/socket.io/)", () => {
  /** A polling session on /socket.io/ with CONNECT sent; returns client and the CONNECT reply. */
  async function pollConnect(frame = "40") {
    const { client, open } = await openPolling(edge, SIO);
    await client.send(frame);
    return { client, open, reply: await client.nextText(2000, "the CONNECT reply") };
  }

  async function pollReady() {
    const { client, reply } = await pollConnect("40");
    assert.match(reply, /^40\{"sid":/);
    assert.equal(await client.nextText(2000, "the auth event"), '42["auth",{}]');
    return client;
  }

  test("CONNECT in a POST → 40{sid} (≠ the Engine.IO sid), then the auth event, in GETs", async () => {
    const { client, open, reply } = await pollConnect('40{"token":"abc"}');
    assert.match(reply, /^40\{/);
    const body = JSON.parse(reply.slice(2));
    assert.deepEqual(Object.keys(body), ["sid"]);
    assert.notEqual(body.sid, open.sid);
    assert.equal(await client.nextText(2000, "the auth event"), '42["auth",{"token":"abc"}]');
  });

  test("CONNECT to /custom; an unknown namespace → 44, the session stays", async () => {
    const { client, reply } = await pollConnect("40/random,");
    assert.equal(reply, '44/random,{"message":"Invalid namespace"}');
    await client.send("40/custom,");
    assert.match(await client.nextText(2000, "the /custom CONNECT reply"), /^40\/custom,\{"sid":/);
    assert.equal(await client.nextText(2000, "the auth event on /custom"), '42/custom,["auth",{}]');
  });

  test("message → message-back, message-with-ack → ack", async () => {
    const client = await pollReady();
    await client.send('42["message",1,"2",{"3":[true]}]');
    assert.equal(await client.nextText(2000, "message-back"), '42["message-back",1,"2",{"3":[true]}]');
    await client.send('4212["message-with-ack","x"]');
    assert.equal(await client.nextText(2000, "the ack"), '4312["x"]');
  });

  test("binary event: the header and its attachments (b + base64) both ways", async () => {
    const client = await pollReady();
    await client.send(['452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', Buffer.from([1, 2, 3]), Buffer.from([4, 5, 6])]);
    assert.equal(
      await client.nextText(2000, "the binary event header"),
      '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    );
    assert.deepEqual(await client.next(2000, "attachment 0"), Buffer.from([1, 2, 3]));
    assert.deepEqual(await client.next(2000, "attachment 1"), Buffer.from([4, 5, 6]));
  });

  test("a malformed Socket.IO packet closes the session: '1' comes in a GET, then 400", async () => {
    const client = await pollReady();
    await client.send("42{}");
    const { res, seen } = await pollUntilRefused(client, 3000, "the close after a malformed packet");
    assert.ok(seen.some((t) => t.split("\x1e").at(-1) === "1"), `no close packet before the 400: ${JSON.stringify(seen)}`);
    assertRefused(res, 1);
  });

  test("no CONNECT within the connect timeout: '1' in a GET, then the session is gone", async () => {
    const { client } = await openPolling(edge, SIO);
    const t0 = Date.now();
    const { res, seen } = await pollUntilRefused(client, CONNECT_TIMEOUT * 4, "the close after the connect timeout");
    assert.ok(Date.now() - t0 >= CONNECT_TIMEOUT * 0.8, `closed after ${Date.now() - t0} ms`);
    assert.ok(seen.some((t) => t.split("\x1e").at(-1) === "1"), `no close packet: ${JSON.stringify(seen)}`);
    assertRefused(res, 1);
  });

  test("CONNECT over polling, then the upgrade: the namespace and its events carry on over the WebSocket", async () => {
    const client = await pollReady();
    const ws = await probe(client);
    await client.send('42["message","queued during the upgrade"]');
    ws.send("5");
    assert.equal(await nextNonPing(ws, 2000, "the event queued during the upgrade"), '42["message-back","queued during the upgrade"]');
    ws.send('427["message-with-ack",1]');
    assert.equal(await nextNonPing(ws, 2000, "the ack over the WebSocket"), "437[1]");
    ws.close();
  });
});

for (const transport of TRANSPORTS) {
  describe(`socket.io-client against conformance mode (transport: ${transport})`, () => {
    /**
     * Connects; with the default transports the upgrade is held until connect
     * and one ack round trip over polling have happened, then awaited.
     */
    function connect(auth) {
      const gate = transport === "default" ? new UpgradeGate() : undefined;
      const socket = io(edge.url, clientOptions(auth, { transport, gate }));
      const authEvent = new Promise((resolve) => socket.once("auth", resolve));
      const upgraded = gate && new Promise((resolve) => socket.io.engine.once("upgrade", resolve));
      const connected = withTimeout(
        new Promise((resolve, reject) => {
          socket.once("connect", resolve);
          socket.once("connect_error", reject);
        }),
        5000,
        "socket.io connect",
      ).then(async () => {
        if (!gate) return;
        assert.equal(transportOf(socket), "polling");
        const res = await socket.timeout(2000).emitWithAck("message-with-ack", "over polling", Buffer.from([1]));
        assert.deepEqual(res, "over polling");
        gate.release();
        await withTimeout(upgraded, 5000, "the upgrade");
        assert.equal(transportOf(socket), "websocket");
      });
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
}

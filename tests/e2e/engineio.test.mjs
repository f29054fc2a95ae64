// Engine.IO v4 / Socket.IO v5 framing of the chat-mode edge, with a raw
// WebSocket client against /socket.io/?EIO=4&transport=websocket.
import assert from "node:assert/strict";
import { before, after, describe } from "node:test";
import { test, startNats, startEdge, openRaw, openSession, openSioSession, shutdown, withTimeout } from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const CONNECT_TIMEOUT = 1000;
const MAX_PAYLOAD = 10000;

let nats;
let tuned; // short timers, small maxPayload
let defaults; // no overrides

before(async () => {
  nats = await startNats();
  tuned = await startEdge({
    nats,
    name: "eio-tuned",
    env: {
      EDGE_PING_INTERVAL_MS: String(PING_INTERVAL),
      EDGE_PING_TIMEOUT_MS: String(PING_TIMEOUT),
      EDGE_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT),
      EDGE_MAX_PAYLOAD: String(MAX_PAYLOAD),
    },
  });
  defaults = await startEdge({ nats, name: "eio-defaults" });
});

after(() => shutdown());

const auth = () => ({ token: makeUser("raw").token });

/** Answers pings with pongs in the background, so long tests are not cut by the heartbeat. */
function keepAlive(client) {
  const ws = client.ws;
  ws.on("message", (data, isBinary) => {
    if (!isBinary && data.toString() === "2") ws.send("3");
  });
}

describe("handshake", () => {
  test("open packet has exactly sid, upgrades [], pingInterval, pingTimeout, maxPayload (defaults)", async () => {
    const { client, open } = await openSession(defaults);
    assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.equal(typeof open.sid, "string");
    assert.ok(open.sid.length > 0);
    assert.deepEqual(open.upgrades, []);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
    client.close();
  });

  test("open packet follows EDGE_PING_INTERVAL_MS / EDGE_PING_TIMEOUT_MS / EDGE_MAX_PAYLOAD", async () => {
    const { client, open } = await openSession(tuned);
    assert.equal(open.pingInterval, PING_INTERVAL);
    assert.equal(open.pingTimeout, PING_TIMEOUT);
    assert.equal(open.maxPayload, MAX_PAYLOAD);
    client.close();
  });

  test("every session gets its own sid", async () => {
    const s1 = await openSession(defaults);
    const s2 = await openSession(defaults);
    assert.notEqual(s1.open.sid, s2.open.sid);
    s1.client.close();
    s2.client.close();
  });

  const badQueries = [
    ["EIO=3", "EIO=3&transport=websocket"],
    ["EIO missing", "transport=websocket"],
    ["EIO=abc", "EIO=abc&transport=websocket"],
    ["transport unknown", "EIO=4&transport=carrier-pigeon"],
    ["transport missing", "EIO=4"],
    ["transport=polling on a WebSocket", "EIO=4&transport=polling"],
    ["unknown sid", "EIO=4&transport=websocket&sid=doesnotexist"],
  ];
  for (const [name, query] of badQueries) {
    test(`invalid query (${name}) closes without a session`, async () => {
      const client = await openRaw(defaults, { query });
      const r = await withTimeout(client.opened, 3000, "the upgrade answer");
      if (r.ok) {
        // Accepted then closed is fine, as long as no open packet was sent.
        await client.waitClosed(3000);
        assert.ok(!client.frames.some((f) => f.text?.startsWith("0")), `got an open packet: ${JSON.stringify(client.frames)}`);
      } else {
        assert.ok(r.status === undefined || (r.status >= 400 && r.status < 500), `status ${r.status}`);
      }
    });
  }
});

describe("heartbeat", () => {
  test("server pings every pingInterval and keeps the session while pongs come back", async () => {
    const { client } = await openSioSession(tuned, auth());
    const t0 = Date.now();
    for (let i = 0; i < 3; i++) {
      assert.equal(await client.nextText(PING_INTERVAL * 5, `ping #${i + 1}`), "2");
      client.send("3");
    }
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= PING_INTERVAL * 2, `3 pings came after only ${elapsed} ms`);
    assert.equal(client.closeInfo, null);
    client.close();
  });

  test("server keeps pinging a busy connection", async () => {
    const u = makeUser("busy");
    const { client } = await openSioSession(tuned, { token: u.token });
    keepAlive(client);
    const until = Date.now() + PING_INTERVAL * 4;
    let sent = 0;
    while (Date.now() < until) {
      client.send(`42["typing:stop",{"recipientId":"${u.id}"}]`);
      sent++;
      await client.nextText(2000, "the self-relay"); // the relay back (or a ping)
    }
    const pings = client.frames.filter((f) => f.text === "2").length;
    assert.ok(pings >= 2, `only ${pings} pings during ${PING_INTERVAL * 4} ms of traffic (${sent} events)`);
    assert.equal(client.closeInfo, null);
    client.close();
  });

  test("no pong within pingTimeout closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    assert.equal(await client.nextText(PING_INTERVAL * 5, "a ping"), "2");
    const t0 = Date.now();
    await client.waitClosed(PING_TIMEOUT * 10, "close after a missed pong");
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= PING_TIMEOUT / 2, `closed ${elapsed} ms after the ping, before pingTimeout`);
  });
});

describe("WebSocket framing", () => {
  test("a text message sent in three fragments is reassembled", async () => {
    const u = makeUser("frag");
    const { client } = await openSioSession(defaults, { token: u.token });
    const msg = `4217["typing:stop",{"recipientId":"${u.id}"}]`;
    client.ws.send(msg.slice(0, 3), { fin: false });
    client.ws.send(msg.slice(3, 20), { fin: false });
    client.ws.send(msg.slice(20), { fin: true });
    const frames = [await client.nextText(3000), await client.nextText(3000)].sort();
    assert.deepEqual(frames, ['42["typing:stop",{"userId":"' + u.id + '"}]', '4317[{"ok":true}]']);
    client.close();
  });

  test("fragments adding up to more than maxPayload close the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    keepAlive(client);
    const part = "x".repeat(4000);
    client.ws.send('42["typing:stop","' + part, { fin: false });
    client.ws.send(part, { fin: false });
    client.ws.send(part + '"]', { fin: true });
    await client.waitClosed(3000);
  });

  test("a WebSocket control ping is answered with a pong", async () => {
    const { client } = await openSioSession(defaults, auth());
    const pong = new Promise((resolve) => client.ws.once("pong", resolve));
    client.ws.ping(Buffer.from("hi"));
    assert.equal((await withTimeout(pong, 3000, "the WebSocket pong")).toString(), "hi");
    client.close();
  });
});

describe("closing on bad Engine.IO input", () => {
  test("a close packet '1' closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    client.send("1");
    await client.waitClosed(2000);
  });

  test("'abc' (not an Engine.IO packet) closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    client.send("abc");
    await client.waitClosed(2000);
  });

  test("an empty text message closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    client.send("");
    await client.waitClosed(2000);
  });

  test("a message of exactly maxPayload bytes is accepted", async () => {
    const { client } = await openSioSession(tuned, auth());
    keepAlive(client);
    const head = '42["not-an-event","';
    const tail = '"]';
    const msg = head + "x".repeat(MAX_PAYLOAD - head.length - tail.length) + tail;
    assert.equal(Buffer.byteLength(msg), MAX_PAYLOAD);
    client.send(msg);
    let f;
    do f = await client.nextText(3000, "chat:error for the unknown event");
    while (f === "2");
    const p = JSON.parse(f.slice(2));
    assert.equal(p[0], "chat:error");
    assert.equal(p[1].code, "unknown_event");
    client.close();
  });

  test("a message over maxPayload closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    keepAlive(client);
    client.send('42["typing:stop","' + "x".repeat(MAX_PAYLOAD) + '"]');
    await client.waitClosed(3000);
  });

  test("a binary message over maxPayload closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    keepAlive(client);
    client.send(Buffer.alloc(MAX_PAYLOAD + 1, 7));
    await client.waitClosed(3000);
  });

  test("a session without CONNECT is closed after the connect timeout", async () => {
    const { client } = await openSession(tuned);
    keepAlive(client);
    const t0 = Date.now();
    await client.waitClosed(CONNECT_TIMEOUT * 4, "close for a missing CONNECT");
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= CONNECT_TIMEOUT * 0.8, `closed after ${elapsed} ms, before the connect timeout`);
  });
});

describe("Socket.IO namespace handling", () => {
  test("CONNECT reply is 40{sid, pid}: the socket id (not the Engine.IO sid) and the recovery id, nothing else", async () => {
    const { client, open } = await openSession(defaults);
    client.send(`40${JSON.stringify(auth())}`);
    const reply = await client.nextText(3000, "the CONNECT reply");
    assert.match(reply, /^40\{/);
    const body = JSON.parse(reply.slice(2));
    assert.deepEqual(Object.keys(body), ["sid", "pid"]);
    assert.match(body.pid, /^[A-Za-z0-9_-]{103}$/);
    assert.equal(typeof body.sid, "string");
    assert.ok(body.sid.length > 0);
    assert.notEqual(body.sid, open.sid);
    client.close();
  });

  test("unknown namespace → 44/nope,{message:'Invalid namespace'}, connection stays usable", async () => {
    const { client } = await openSession(defaults);
    client.send("40/nope,");
    assert.equal(await client.nextText(3000, "CONNECT_ERROR"), '44/nope,{"message":"Invalid namespace"}');
    client.send("40/other");
    assert.equal(await client.nextText(3000, "CONNECT_ERROR"), '44/other,{"message":"Invalid namespace"}');
    client.send(`40${JSON.stringify(auth())}`);
    assert.match(await client.nextText(3000, "the CONNECT reply"), /^40\{"sid":/);
    client.close();
  });

  test("'41' leaves the namespace but keeps the session: the next frame is a ping", async () => {
    const { client } = await openSioSession(tuned, auth());
    client.send("41");
    assert.equal(await client.nextText(PING_INTERVAL * 5, "the ping after 41"), "2");
    client.send("3");
    client.close();
  });

  test("after '41' the namespace can be joined again on the same session, with a new sid", async () => {
    const { client, sid } = await openSioSession(defaults, auth());
    client.send("41");
    client.send(`40${JSON.stringify(auth())}`);
    const reply = await client.nextText(3000, "the second CONNECT reply");
    assert.match(reply, /^40\{"sid":/);
    assert.notEqual(JSON.parse(reply.slice(2)).sid, sid);
    client.close();
  });

  test("an EVENT before CONNECT closes the connection", async () => {
    const { client } = await openSession(tuned);
    client.send('42["typing:start",{}]');
    await client.waitClosed(2000);
  });

  test("an EVENT on a namespace that was refused closes the connection", async () => {
    const { client } = await openSession(tuned);
    client.send("40/nope,");
    assert.equal(await client.nextText(3000), '44/nope,{"message":"Invalid namespace"}');
    client.send('42/nope,["typing:start",{}]');
    await client.waitClosed(2000);
  });

  test("a second CONNECT to the same namespace closes the connection", async () => {
    const { client } = await openSioSession(tuned, auth());
    client.send(`40${JSON.stringify(auth())}`);
    await client.waitClosed(2000);
  });

  for (const [name, frame] of [
    ["unknown Socket.IO type '4abc'", "4abc"],
    ["EVENT with an object payload '42{}'", "42{}"],
    ["EVENT with junk for the ack id", '42abc["typing:start"]'],
    ["EVENT with a reserved name", '42["disconnect"]'],
    ["EVENT with bad JSON", '42["typing:start",'],
    ["a client-sent CONNECT_ERROR", '44{"message":"x"}'],
  ]) {
    test(`malformed after CONNECT: ${name} closes the connection`, async () => {
      const { client } = await openSioSession(tuned, auth());
      client.send(frame);
      await client.waitClosed(2000);
    });
  }

  test("a JSON event with an ack id gets the ack on the same id", async () => {
    const { client } = await openSioSession(defaults, auth());
    client.send('4217["typing:stop",{"recipientId":"6f1c2a52-3b7e-4c1e-9a55-0c2f7d7e9b11"}]');
    assert.equal(await client.nextText(3000, "the ack"), '4317[{"ok":true}]');
    client.close();
  });
});

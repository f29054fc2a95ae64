// HTTP long-polling and the upgrade to WebSocket (docs/protocol.md §2.6–2.7),
// on the same port and path as the WebSocket: handshake, held GETs, POSTs,
// errors, heartbeat, concurrency and aborts, Connection: close, the upgrade
// (probe, noop, flush, afterwards), CORS, and chat traffic across an upgrade.
// Raw clients: fetch for plain requests, RawHttp where a request must be held,
// aborted, cut in the middle or read byte for byte, ws for WebSockets.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, after, describe } from "node:test";
import {
  test,
  startNats,
  startEdge,
  shutdown,
  openPolling,
  httpRequest,
  rawHttp,
  openRaw,
  connectClient,
  transportOf,
  withTimeout,
  delay,
} from "./harness.mjs";
import { makeUser, mintToken, nowSec } from "./tokens.mjs";

const SLOW_PING_INTERVAL = 8000; // longer than libwebsockets' default 5 s request timeout
const SLOW_PING_TIMEOUT = 5000;
const FAST_PING_INTERVAL = 300;
const FAST_PING_TIMEOUT = 200;
const MAX_PAYLOAD = 10000;
const CORS_LIST = ["https://app.example", "http://localhost:8080"];
// The server gives no signal that it has taken in a GET and is holding it; a
// test that needs it held (to overlap or abort it) leaves it this long first.
const HOLD_WINDOW = 150;
const EIO = { path: "/engine.io/" };

let nats;
let longHold; // a GET held across libwebsockets' 5 s timeout, started in before()
let chat; // chat mode, EDGE_CORS_ORIGINS empty
let eio; // conformance, slow heartbeat, small maxPayload, CORS list
let fast; // conformance, fast heartbeat, CORS "*"

before(async () => {
  nats = await startNats();
  [chat, eio, fast] = await Promise.all([
    startEdge({ nats, name: "poll-chat" }),
    startEdge({
      name: "poll-eio",
      env: {
        EDGE_MODE: "conformance",
        EDGE_PING_INTERVAL_MS: String(SLOW_PING_INTERVAL),
        EDGE_PING_TIMEOUT_MS: String(SLOW_PING_TIMEOUT),
        EDGE_MAX_PAYLOAD: String(MAX_PAYLOAD),
        EDGE_CORS_ORIGINS: ` ${CORS_LIST[0]} ,${CORS_LIST[1]}`,
      },
    }),
    startEdge({
      name: "poll-fast",
      env: {
        EDGE_MODE: "conformance",
        EDGE_PING_INTERVAL_MS: String(FAST_PING_INTERVAL),
        EDGE_PING_TIMEOUT_MS: String(FAST_PING_TIMEOUT),
        EDGE_CORS_ORIGINS: "*",
      },
    }),
  ]);
  // The held GET takes SLOW_PING_INTERVAL to be answered: it runs while the
  // other tests do, and the last test checks it.
  longHold = (async () => {
    const { client } = await openPolling(eio, EIO);
    const t0 = Date.now();
    const res = await client.get({ ms: SLOW_PING_INTERVAL + 5000, what: "the GET held across the 5 s timeout" });
    return { client, res, elapsed: Date.now() - t0 };
  })();
  longHold.catch(() => {});
});

after(() => shutdown());

/** The JSON error body of a refused polling request. */
function assertError(res, status, code, message) {
  assert.equal(res.status, status, `status (body ${JSON.stringify(res.text)})`);
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = JSON.parse(res.text);
  assert.deepEqual(Object.keys(body), ["code", "message"]);
  if (code !== undefined) assert.equal(body.code, code);
  if (message !== undefined) assert.equal(body.message, message);
  assert.equal(typeof body.message, "string");
  return body;
}

/** The session is gone: a GET with its sid is refused with 400 code 1. */
async function assertSessionGone(client, what = "a GET on a closed session") {
  assertError(await client.get({ what }), 400, 1, "Session ID unknown");
}

/**
 * Closes (POST "1") the session a raw handshake opened, if it did: an edge
 * waits for idle polling sessions when it stops.
 */
async function closeOpened(edge, url, body) {
  if (!body.startsWith("0{")) return;
  const { sid } = JSON.parse(body.slice(1).split("\x1e")[0]);
  const base = url.startsWith("http") ? url : `${edge.url}${url}`;
  await httpRequest(`${base}&sid=${sid}`, { method: "POST", body: "1" });
}

/** A GET on a raw connection (so that it can be held, overlapped or aborted). */
async function rawGet(edge, client, headers = {}) {
  const h = await rawHttp(edge);
  h.request({ path: `${client.path}?EIO=4&transport=polling&sid=${client.sid}`, headers });
  return h;
}

/** Opens a probe WebSocket for a polling session; resolves once it is open. */
async function openProbe(edge, client) {
  const ws = await openRaw(edge, { path: client.path, query: `EIO=4&transport=websocket&sid=${client.sid}` });
  const r = await withTimeout(ws.opened, 3000, "the probe WebSocket to open");
  assert.ok(r.ok, `probe refused: ${JSON.stringify(r)}`);
  return ws;
}

/** Probe → 3probe (must be the first frame on it: no open packet on a probe). */
async function probe(edge, client) {
  const ws = await openProbe(edge, client);
  ws.send("2probe");
  assert.equal(await ws.nextText(3000, "3probe"), "3probe");
  return ws;
}

/** A full upgrade of a polling session; returns the WebSocket that carries it. */
async function upgrade(edge, client) {
  const ws = await probe(edge, client);
  ws.send("5");
  return ws;
}

describe("handshake", () => {
  test("GET → 200 text/plain; charset=UTF-8, no-store, 0{sid, upgrades [websocket], defaults} (chat, /socket.io/)", async () => {
    const { open, res } = await openPolling(chat);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=UTF-8");
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.match(res.text, /^0\{/);
    assert.ok(!res.text.includes("\x1e"), `more than the open packet: ${JSON.stringify(res.text)}`);
    assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.equal(typeof open.sid, "string");
    assert.ok(open.sid.length > 0);
    assert.deepEqual(open.upgrades, ["websocket"]);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
  });

  test("the open packet follows the configuration, on /engine.io/ and /socket.io/ (conformance)", async () => {
    for (const p of ["/engine.io/", "/socket.io/"]) {
      const { open } = await openPolling(eio, { path: p });
      assert.deepEqual(open.upgrades, ["websocket"], p);
      assert.equal(open.pingInterval, SLOW_PING_INTERVAL, p);
      assert.equal(open.pingTimeout, SLOW_PING_TIMEOUT, p);
      assert.equal(open.maxPayload, MAX_PAYLOAD, p);
    }
  });

  test("every handshake opens its own session", async () => {
    const a = await openPolling(eio, EIO);
    const b = await openPolling(eio, EIO);
    assert.notEqual(a.open.sid, b.open.sid);
    await a.client.send("4to a");
    await b.client.send("4to b");
    assert.equal(await a.client.nextText(3000, "a's echo"), "4to a");
    assert.equal(await b.client.nextText(3000, "b's echo"), "4to b");
  });
});

describe("refused requests: 400 with a JSON {code, message}", () => {
  const q = "EIO=4&transport=polling";
  const cases = [
    ["unknown sid (GET)", "GET", `${q}&sid=doesnotexist`, 1, "Session ID unknown"],
    ["unknown sid (POST)", "POST", `${q}&sid=doesnotexist`, 1, "Session ID unknown"],
    ["handshake by POST", "POST", q, 2, "Bad handshake method"],
    ["handshake by PUT", "PUT", q, 2, "Bad handshake method"],
    ["EIO missing", "GET", "transport=polling", 5, "Unsupported protocol version"],
    ["EIO=3", "GET", "EIO=3&transport=polling", 5, "Unsupported protocol version"],
    ["EIO=abc", "GET", "EIO=abc&transport=polling", 5, "Unsupported protocol version"],
    ["transport missing", "GET", "EIO=4", 0, "Transport unknown"],
    ["transport unknown", "GET", "EIO=4&transport=tobi", 0, "Transport unknown"],
  ];
  for (const [name, method, query, code, message] of cases) {
    test(`${name} → 400 code ${code}`, async () => {
      for (const [edge, p] of [
        [chat, "/socket.io/"],
        [eio, "/engine.io/"],
      ]) {
        const body = method === "GET" ? undefined : "4hello";
        const res = await httpRequest(`${edge.url}${p}?${query}`, { method, body, what: `${method} ${p}?${query}` });
        assertError(res, 400, code, message);
      }
    });
  }

  test("a plain GET with transport=websocket (no upgrade headers) is refused with a 400", async () => {
    const res = await httpRequest(`${chat.url}/socket.io/?EIO=4&transport=websocket`);
    assertError(res, 400);
  });

  test("a refused request does not disturb a live session", async () => {
    const { client } = await openPolling(eio, EIO);
    assertError(await httpRequest(`${eio.url}/engine.io/?EIO=4&transport=polling&sid=${client.sid}x`), 400, 1);
    await client.send("4still here");
    assert.equal(await client.nextText(3000, "the echo"), "4still here");
  });
});

describe("GET and POST", () => {
  test("a GET with nothing queued is held, then answered as soon as a packet is queued", async () => {
    const { client } = await openPolling(eio, EIO);
    let settled = false;
    const held = client.get({ what: "the held GET" }).finally(() => (settled = true));
    await delay(HOLD_WINDOW * 2);
    assert.equal(settled, false, "the GET was answered with nothing queued");
    const post = await client.post("4hello");
    assert.equal(post.status, 200);
    assert.equal(post.text, "ok");
    assert.equal(post.headers.get("content-type"), "text/html");
    const res = await held;
    assert.equal(res.status, 200);
    assert.equal(res.text, "4hello");
    assert.equal(res.headers.get("content-type"), "text/plain; charset=UTF-8");
    assert.equal(res.headers.get("cache-control"), "no-store");
  });

  test("everything queued goes out in one GET: joined by \\x1e, binary as b<base64>", async () => {
    const { client } = await openPolling(eio, EIO);
    const body = ["4one", "bAQIDBA==", "4€ and 😀", "4", "b/wAB", '4{"a":[1,2]}'].join("\x1e");
    await client.send(body);
    const res = await client.get({ what: "the batch" });
    assert.equal(res.status, 200);
    assert.equal(res.text, body);
  });

  test("POSTs are taken in order, and so are their echoes", async () => {
    const { client } = await openPolling(eio, EIO);
    for (let i = 0; i < 20; i++) await client.send(`4m${i}`);
    const got = [];
    while (got.length < 20) got.push(await client.nextText(3000, `echo #${got.length}`));
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => `4m${i}`),
    );
  });

  test(`a POST of exactly maxPayload (${MAX_PAYLOAD}) bytes is taken`, async () => {
    const { client } = await openPolling(eio, EIO);
    const msg = "4" + "x".repeat(MAX_PAYLOAD - 1);
    await client.send(msg);
    assert.equal(await client.nextText(3000, "the echo"), msg);
  });

  test("a POST whose Content-Length is over maxPayload → 413", async () => {
    const { client } = await openPolling(eio, EIO);
    const res = await client.post("4" + "x".repeat(MAX_PAYLOAD));
    assert.equal(res.status, 413);
  });

  test("a POST announcing more than maxPayload is refused before its body is sent", async () => {
    const { client } = await openPolling(eio, EIO);
    const h = await rawHttp(eio);
    h.request({
      method: "POST",
      path: `/engine.io/?EIO=4&transport=polling&sid=${client.sid}`,
      headers: { "Content-Type": "text/plain;charset=UTF-8", "Content-Length": String(MAX_PAYLOAD + 1) },
      body: "",
    });
    const res = await h.response(3000, "the 413");
    assert.equal(res.status, 413);
  });

  test("a POST with Content-Type application/octet-stream → 400", async () => {
    const { client } = await openPolling(eio, EIO);
    const res = await client.post("4hello", { headers: { "Content-Type": "application/octet-stream" } });
    assert.equal(res.status, 400);
  });
});

describe("heartbeat over polling", () => {
  test("the ping comes in a GET, the pong goes in a POST; the session lives on", async () => {
    const { client } = await openPolling(fast, EIO);
    const t0 = Date.now();
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await client.poll(FAST_PING_INTERVAL * 5, `ping #${i + 1}`), ["2"]);
      await client.send("3");
    }
    assert.ok(Date.now() - t0 >= FAST_PING_INTERVAL * 2, `3 pings in ${Date.now() - t0} ms`);
    await client.send("4alive");
    assert.equal(await client.nextText(FAST_PING_INTERVAL * 5, "the echo"), "4alive");
  });

  test("no pong: the session is gone after pingTimeout (a held GET gets '1', the next one 400)", async () => {
    const { client } = await openPolling(fast, EIO);
    assert.deepEqual(await client.poll(FAST_PING_INTERVAL * 5, "the ping"), ["2"]);
    const t0 = Date.now();
    // Held until the pong deadline; then the close packet (or, if the GET came
    // in after the session was gone, a 400).
    const res = await client.get({ ms: FAST_PING_TIMEOUT * 10, what: "the GET after an unanswered ping" });
    if (res.status === 200) {
      assert.equal(res.text, "1");
      assert.ok(Date.now() - t0 >= FAST_PING_TIMEOUT / 2, `closed ${Date.now() - t0} ms after the ping`);
    } else {
      assertError(res, 400, 1);
    }
    await assertSessionGone(client);
  });
});

describe("one GET and one POST at a time; aborts and bad packets end the session", () => {
  test("a second concurrent GET → 400; the held one gets '1'; the session is gone", async () => {
    const { client } = await openPolling(eio, EIO);
    const first = await rawGet(eio, client);
    await delay(HOLD_WINDOW);
    const second = await client.get({ what: "the second GET" });
    assertError(second, 400);
    const held = await first.response(3000, "the answer to the held GET");
    assert.equal(held.status, 200);
    assert.equal(held.body, "1");
    await assertSessionGone(client);
  });

  test("a second concurrent POST → 400, and the session is gone", async () => {
    const { client } = await openPolling(eio, EIO);
    const first = await rawHttp(eio);
    const body = "4slow post";
    first.request({
      method: "POST",
      path: `/engine.io/?EIO=4&transport=polling&sid=${client.sid}`,
      headers: { "Content-Type": "text/plain;charset=UTF-8", "Content-Length": String(body.length) },
      body: body.slice(0, 3),
    });
    await delay(HOLD_WINDOW);
    assertError(await client.post("4second"), 400);
    await assertSessionGone(client);
    first.write(body.slice(3));
    const late = await first.response(3000, "the answer to the first POST").catch((err) => ({ status: "closed", err }));
    assert.ok(late.status === 400 || late.status === "closed", `the first POST was answered ${late.status} ${late.body}`);
  });

  test("a held GET aborted by the client ends the session", async () => {
    const { client } = await openPolling(eio, EIO);
    const held = await rawGet(eio, client);
    await delay(HOLD_WINDOW);
    held.abort();
    // A POST does not compete with the GET: it is answered "ok" as long as the
    // session lives. It must turn into a 400 once the edge has seen the abort.
    const deadline = Date.now() + 1500;
    let res;
    do res = await client.post("4anyone there?");
    while (res.status === 200 && Date.now() < deadline);
    assertError(res, 400, 1);
    await assertSessionGone(client);
  });

  test("a packet queued after a held GET was aborted is never written into the dead connection", async () => {
    const { client } = await openPolling(eio, EIO);
    const held = await rawGet(eio, client);
    await delay(HOLD_WINDOW);
    held.abort();
    await held.closed;
    const res = await client.post("4lost?");
    if (res.status === 400) return; // the session is gone: nothing to lose
    assert.equal(res.text, "ok");
    // The session lives on: then its echo must reach the next GET.
    const got = await client.get({ ms: 1500, what: "the echo of a packet POSTed after the abort (not answered: the packet went into the aborted GET)" });
    assert.equal(got.status, 200);
    assert.equal(got.text, "4lost?");
  });

  for (const [name, body, echoes] of [
    ["'abc'", "abc", []],
    ["an unknown packet type '9'", "9x", []],
    ["an open packet from the client", "0", []],
    ["a good packet then 'abc'", "4fine\x1eabc", ["4fine"]],
  ]) {
    test(`an invalid packet in a POST (${name}) → 400; the held GET is released; the session is gone`, async () => {
      const { client } = await openPolling(eio, EIO);
      const held = await rawGet(eio, client);
      await delay(HOLD_WINDOW);
      assertError(await client.post(body), 400);
      // The held GET gets the close packet, or the echoes of the packets
      // before the bad one (then the session is gone all the same).
      const res = await held.response(3000, "the answer to the held GET");
      assert.equal(res.status, 200);
      const got = res.body.split("\x1e");
      const closed = got.at(-1) === "1";
      const before = closed ? got.slice(0, -1) : got;
      assert.deepEqual(before, echoes.slice(0, before.length), `held GET got ${JSON.stringify(res.body)}`);
      assert.ok(closed || before.length > 0, `held GET got ${JSON.stringify(res.body)}`);
      await assertSessionGone(client);
    });
  }

  test("POST '1' → ok; the held GET gets '6'; later GET and POST → 400", async () => {
    const { client } = await openPolling(eio, EIO);
    const held = await rawGet(eio, client);
    await delay(HOLD_WINDOW);
    const res = await client.post("1");
    assert.equal(res.status, 200);
    assert.equal(res.text, "ok");
    const answer = await held.response(3000, "the answer to the held GET");
    assert.equal(answer.status, 200);
    assert.equal(answer.body, "6");
    await assertSessionGone(client);
    assertError(await client.post("4late"), 400, 1);
  });

  test("POST '1' with no GET held: the next GET → 400", async () => {
    const { client } = await openPolling(eio, EIO);
    await client.send("1");
    await assertSessionGone(client);
  });
});

describe("connections", () => {
  const handshakePath = "/engine.io/?EIO=4&transport=polling";

  test("Connection: close → 'connection: close' back, and the edge closes the connection", async () => {
    for (const [name, p] of [
      ["handshake", handshakePath],
      ["error", "/engine.io/?EIO=4&transport=polling&sid=nope"],
    ]) {
      const h = await rawHttp(eio);
      h.request({ path: p, headers: { Connection: "close" } });
      const res = await h.response(3000, `the ${name} response`);
      await closeOpened(eio, p, res.body);
      assert.equal(res.headers.connection, "close", `${name}: ${res.rawHead}`);
      await h.waitClosed(3000, `the edge to close the connection after the ${name}`);
    }
  });

  test("Connection: close on a POST and on a held GET", async () => {
    const { client } = await openPolling(eio, EIO);
    const get = await rawGet(eio, client, { Connection: "close" });
    await delay(HOLD_WINDOW);
    const post = await rawHttp(eio);
    post.request({
      method: "POST",
      path: `/engine.io/?EIO=4&transport=polling&sid=${client.sid}`,
      headers: { Connection: "close", "Content-Type": "text/plain;charset=UTF-8" },
      body: "4x",
    });
    const ok = await post.response(3000, "the POST answer");
    assert.equal(ok.status, 200);
    assert.equal(ok.body, "ok");
    assert.equal(ok.headers.connection, "close");
    await post.waitClosed();
    const got = await get.response(3000, "the GET answer");
    assert.equal(got.body, "4x");
    assert.equal(got.headers.connection, "close");
    await get.waitClosed();
  });

  test("keep-alive: one connection carries the handshake, POSTs and GETs in turn", async () => {
    const h = await rawHttp(eio);
    h.request({ path: handshakePath });
    const hs = await h.response(3000, "the handshake");
    assert.equal(hs.status, 200);
    assert.notEqual(hs.headers.connection, "close");
    const sid = JSON.parse(hs.body.slice(1)).sid;
    const p = `/engine.io/?EIO=4&transport=polling&sid=${sid}`;
    for (let i = 0; i < 3; i++) {
      h.request({ method: "POST", path: p, headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: `4#${i}` });
      const ok = await h.response(3000, `POST #${i}`);
      assert.equal(ok.body, "ok");
      h.request({ path: p });
      const got = await h.response(3000, `GET #${i}`);
      assert.equal(got.body, `4#${i}`);
    }
    h.request({ method: "POST", path: p, headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: "1" });
    assert.equal((await h.response(3000, "the closing POST")).body, "ok");
  });
});

describe("upgrade to WebSocket", () => {
  test("the probe WebSocket gets no open packet: 2probe → 3probe first", async () => {
    const { client } = await openPolling(eio, EIO);
    const ws = await probe(eio, client);
    ws.close();
  });

  test("a GET held when the probe is answered gets '6'; a GET arriving while upgrading gets '6' at once", async () => {
    const { client } = await openPolling(eio, EIO);
    const held = client.get({ what: "the GET held over the probe" });
    await delay(HOLD_WINDOW);
    const ws = await probe(eio, client);
    const r1 = await held;
    assert.equal(r1.status, 200);
    assert.equal(r1.text, "6");
    const r2 = await client.get({ ms: 2000, what: "a GET while upgrading" });
    assert.equal(r2.status, 200);
    assert.equal(r2.text, "6");
    ws.close();
  });

  test("'5' switches: what was queued during the upgrade is flushed on the WebSocket, in order", async () => {
    const { client } = await openPolling(eio, EIO);
    const ws = await probe(eio, client);
    await client.send(["4one", "4two", Buffer.from([1, 2, 3]), "4three"]);
    ws.send("5");
    assert.equal(await ws.nextText(3000, "4one"), "4one");
    assert.equal(await ws.nextText(3000, "4two"), "4two");
    assert.deepEqual(await ws.nextBinary(3000, "the binary"), Buffer.from([1, 2, 3]));
    assert.equal(await ws.nextText(3000, "4three"), "4three");
    ws.send("4over ws");
    assert.equal(await ws.nextText(3000, "the echo over the WebSocket"), "4over ws");
    ws.send(Buffer.from([9, 8]));
    assert.deepEqual(await ws.nextBinary(3000, "the binary echo"), Buffer.from([9, 8]));
    ws.close();
  });

  test("after the upgrade: GET and POST with the sid → 400 code 3; a second WebSocket is accepted, then closed", async () => {
    const { client } = await openPolling(eio, EIO);
    const ws = await upgrade(eio, client);
    ws.send("4marker");
    assert.equal(await ws.nextText(3000, "the echo after the switch"), "4marker");
    assertError(await client.get(), 400, 3, "Bad request");
    assertError(await client.post("4x"), 400, 3, "Bad request");
    const again = await openRaw(eio, { path: "/engine.io/", query: `EIO=4&transport=websocket&sid=${client.sid}` });
    const r = await withTimeout(again.opened, 3000, "the second WebSocket's upgrade answer");
    assert.ok(r.ok, `second WebSocket refused at the HTTP level: ${JSON.stringify(r)}`);
    await again.waitClosed(3000, "the edge to close the second WebSocket");
    assert.deepEqual(again.frames, []);
    ws.send("4still");
    assert.equal(await ws.nextText(3000, "the echo on the first WebSocket"), "4still");
    ws.close();
  });

  test("a second probe while one is in progress is closed; the first carries on", async () => {
    const { client } = await openPolling(eio, EIO);
    const first = await openProbe(eio, client);
    const second = await openRaw(eio, { path: "/engine.io/", query: `EIO=4&transport=websocket&sid=${client.sid}` });
    await second.waitClosed(3000, "the edge to close the second probe");
    assert.deepEqual(second.frames, []);
    first.send("2probe");
    assert.equal(await first.nextText(3000, "3probe"), "3probe");
    first.send("5");
    first.send("4ok");
    assert.equal(await first.nextText(3000, "the echo"), "4ok");
    first.close();
  });

  /** Sends "4back" over polling and reads it back: GETs get "6" while the edge still sees a probe. */
  async function stillPolling(client, text) {
    await client.send(text);
    const deadline = Date.now() + 3000;
    let got;
    do got = await client.nextText(3000, `the echo of ${text} over polling`);
    while (got === "6" && Date.now() < deadline);
    assert.equal(got, text);
  }

  for (const [name, steps] of [
    ["a message before 2probe", ["4hello"]],
    ["a message instead of 5", ["2probe", "4hello"]],
    ["5 before 2probe", ["5"]],
    ["a second 2probe", ["2probe", "2probe"]],
    ["a pong instead of 5", ["2probe", "3"]],
    ["a binary message instead of 5", ["2probe", Buffer.from([5])]],
  ]) {
    test(`a probe that sends ${name} is closed; the session continues on polling and can upgrade later`, async () => {
      const { client } = await openPolling(eio, EIO);
      const ws = await openProbe(eio, client);
      let probed = false;
      for (const m of steps) {
        ws.send(m);
        if (m === "2probe" && !probed) {
          probed = true;
          assert.equal(await ws.nextText(3000, "3probe"), "3probe");
        }
      }
      await ws.waitClosed(3000, "the edge to close the probe");
      assert.equal(ws.frames.length, probed ? 1 : 0, `frames on the probe: ${JSON.stringify(ws.frames)}`);
      await stillPolling(client, "4still polling");
      const ws2 = await upgrade(eio, client);
      ws2.send("4upgraded");
      assert.equal(await ws2.nextText(3000, "the echo after a later upgrade"), "4upgraded");
      ws2.close();
    });
  }

  test("a probe closed by the client before '5' leaves the session on polling", async () => {
    const { client } = await openPolling(eio, EIO);
    const ws = await probe(eio, client);
    ws.ws.close();
    await ws.waitClosed();
    await stillPolling(client, "4after the probe");
  });

  test("packets queued while a probe fails are delivered over polling, in order", async () => {
    const { client } = await openPolling(eio, EIO);
    const ws = await probe(eio, client);
    await client.send(["4a", "4b", "4c"]);
    ws.send("4not an upgrade");
    await ws.waitClosed(3000, "the edge to close the probe");
    const got = [];
    const deadline = Date.now() + 3000;
    while (got.length < 3 && Date.now() < deadline) {
      const p = await client.nextText(3000, "the queued echoes");
      if (p !== "6") got.push(p);
    }
    assert.deepEqual(got, ["4a", "4b", "4c"]);
  });
});

describe("CORS (polling only)", () => {
  /** A handshake (or preflight) with these headers; a session it opens is closed again. */
  const hs = async (edge, headers, method = "GET") => {
    const url = `${edge.url}${edge === chat ? "/socket.io/" : "/engine.io/"}?EIO=4&transport=polling`;
    const res = await httpRequest(url, { method, headers });
    await closeOpened(edge, url, res.text);
    return res;
  };

  function assertCors(res, origin) {
    assert.equal(res.headers.get("access-control-allow-origin"), origin);
    assert.equal(res.headers.get("access-control-allow-credentials"), "true");
    assert.equal(res.headers.get("vary"), "Origin");
  }

  function assertNoCors(res) {
    for (const [k, v] of res.headers) assert.ok(!k.startsWith("access-control-"), `unexpected ${k}: ${v}`);
  }

  test("EDGE_CORS_ORIGINS empty: no CORS headers at all, even for an Origin", async () => {
    assertNoCors(await hs(chat, { Origin: "https://app.example" }));
    const pre = await hs(chat, { Origin: "https://app.example", "Access-Control-Request-Method": "POST" }, "OPTIONS");
    assertNoCors(pre);
  });

  test("'*': any origin is echoed with credentials, on the handshake, POST, GET and errors", async () => {
    const origin = "https://whatever.example:1234";
    const { client, res } = await openPolling(fast, { ...EIO, headers: { Origin: origin } });
    assertCors(res, origin);
    const post = await client.post("4x", { headers: { Origin: origin } });
    assert.equal(post.text, "ok");
    assertCors(post, origin);
    const get = await client.get({ headers: { Origin: origin } });
    assert.equal(get.status, 200);
    assertCors(get, origin);
    const err = await httpRequest(`${fast.url}/engine.io/?EIO=4&transport=polling&sid=nope`, { headers: { Origin: origin } });
    assert.equal(err.status, 400);
    assertCors(err, origin);
  });

  test("'*': no Origin, no CORS headers", async () => {
    assertNoCors(await hs(fast, {}));
  });

  test("preflight: OPTIONS → 204 with the Allow-* headers and max-age", async () => {
    for (const [edge, origin] of [
      [fast, "https://any.example"],
      [eio, CORS_LIST[0]],
      [eio, CORS_LIST[1]],
    ]) {
      const res = await hs(edge, { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" }, "OPTIONS");
      assert.equal(res.status, 204);
      assertCors(res, origin);
      assert.equal(res.headers.get("access-control-allow-methods"), "GET, POST, OPTIONS");
      assert.equal(res.headers.get("access-control-allow-headers"), "content-type");
      assert.equal(res.headers.get("access-control-max-age"), "86400");
      assert.equal(res.text, "");
    }
  });

  test("a list: each listed origin is echoed (spaces around list entries ignored)", async () => {
    for (const origin of CORS_LIST) assertCors(await hs(eio, { Origin: origin }), origin);
  });

  for (const origin of [
    "https://evil.example",
    "https://app.example.evil",
    "https://app.exampl",
    "http://app.example",
    "https://app.example:443",
    "HTTPS://APP.EXAMPLE",
    "http://localhost:808",
    "http://localhost:80800",
    "null",
    "*",
  ]) {
    test(`a list: ${JSON.stringify(origin)} is not allowed (no access-control-allow-origin, also not on a preflight)`, async () => {
      const res = await hs(eio, { Origin: origin });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("access-control-allow-origin"), null);
      const pre = await hs(eio, { Origin: origin, "Access-Control-Request-Method": "POST" }, "OPTIONS");
      assert.equal(pre.headers.get("access-control-allow-origin"), null);
    });
  }

  test("WebSocket upgrades are checked against EDGE_CORS_ORIGINS: a listed Origin opens (no CORS headers on the 101), another is refused", async () => {
    const ok = await openRaw(eio, { path: "/engine.io/", headers: { Origin: CORS_LIST[0] } });
    const r = await withTimeout(ok.opened, 3000, "the WebSocket upgrade");
    assert.ok(r.ok, JSON.stringify(r));
    for (const k of Object.keys(ok.upgradeHeaders)) assert.ok(!k.startsWith("access-control-"), `unexpected ${k} on the 101`);
    assert.match(await ok.nextText(3000, "the open packet"), /^0\{/);
    ok.close();
    const evil = await openRaw(eio, { path: "/engine.io/", headers: { Origin: "https://evil.example" } });
    const refused = await withTimeout(evil.opened, 3000, "the refused upgrade");
    assert.equal(refused.ok, false, JSON.stringify(refused));
  });
});

describe("chat mode over polling", () => {
  const HS = "/socket.io/";

  test("raw: CONNECT with a JWT in a POST → 40{sid} in a GET; a bad token → 44 unauthorized", async () => {
    const u = makeUser("poller");
    const { client } = await openPolling(chat, { path: HS });
    await client.send(`40${JSON.stringify({ token: u.token })}`);
    const reply = await client.nextText(3000, "the CONNECT reply");
    assert.match(reply, /^40\{"sid":"/);
    await client.send(`42["typing:stop",{"recipientId":"${u.id}"}]`);
    assert.equal(await client.nextText(3000, "the self-relay"), `42["typing:stop",{"userId":"${u.id}"}]`);

    const bad = (await openPolling(chat, { path: HS })).client;
    await bad.send(`40${JSON.stringify({ token: mintToken({ sub: randomUUID(), username: "x", exp: nowSec() + 60 }, { secret: "wrong" }) })}`);
    assert.equal(await bad.nextText(3000, "the CONNECT_ERROR"), '44{"message":"unauthorized"}');
  });

  test("socket.io-client on polling only: connect, relay both ways, acks", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = await connectClient(chat.url, alice.token, { transport: "polling" });
    const b = await connectClient(chat.url, bob.token, { transport: "polling" });
    assert.equal(transportOf(a.socket), "polling");
    assert.deepEqual(await a.socket.timeout(3000).emitWithAck("typing:start", { recipientId: bob.id }), { ok: true });
    const got = await b.rec.next(3000, "typing:start over polling");
    assert.deepEqual([got.event, ...got.args], ["typing:start", { userId: alice.id, username: "alice" }]);
    b.socket.emit("ghost:typing", { recipientId: alice.id, text: "back" });
    const back = await a.rec.next(3000, "ghost:typing over polling");
    assert.deepEqual([back.event, ...back.args], ["ghost:typing", { userId: bob.id, text: "back" }]);
    a.socket.close();
    b.socket.close();
  });

  // audio:listening, not ghost:typing: a ghost:typing still queued is replaced
  // by the sender's next one (latest text wins), which an upgrade may provoke.
  test("200 audio:listening from a WebSocket user reach a user who upgrades in the middle: all, in order, once", async () => {
    const alice = makeUser("alice");
    const bob = makeUser("bob");
    const a = await connectClient(chat.url, alice.token, { transport: "websocket" });
    const b = await connectClient(chat.url, bob.token, { transport: "default", holdUpgrade: true });
    const over = []; // the transport each ghost:typing came over, in arrival order
    b.socket.on("audio:listening", () => over.push(transportOf(b.socket)));
    const mid = (i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`; // the order, in a message id
    let isUpgraded = false;
    b.upgraded.then(() => (isUpgraded = true));

    const TOTAL = 200;
    let next = 0; // the next text bob must receive
    const send = async (from, to) => {
      const acks = [];
      for (let i = from; i < to; i++) {
        acks.push(a.socket.timeout(5000).emitWithAck("audio:listening", { messageId: mid(i), senderId: bob.id, isPlaying: true }));
      }
      for (const r of await Promise.all(acks)) assert.deepEqual(r, { ok: true });
    };
    const receiveUpTo = async (n) => {
      for (; next < n; next++) {
        const ev = await b.rec.next(5000, `audio:listening #${next}`);
        assert.deepEqual([ev.event, ...ev.args], ["audio:listening", { userId: alice.id, messageId: mid(next), isPlaying: true }], `event #${next}`);
      }
    };

    await send(0, 50);
    await receiveUpTo(50); // over polling: the upgrade is held
    // Let the upgrade go while the rest streams in, 10 at a time; the last 20
    // are sent after the switch at the latest.
    const upgrading = b.upgrade();
    upgrading.catch(() => {});
    for (let sent = 50; sent < TOTAL; sent += 10) {
      if (sent === TOTAL - 20 && !isUpgraded) await upgrading;
      await send(sent, sent + 10);
    }
    await upgrading;
    await receiveUpTo(TOTAL);

    const count = (t) => over.filter((x) => x === t).length;
    assert.ok(count("polling") >= 50, `${count("polling")} arrived over polling`);
    assert.ok(count("websocket") >= 20, `${count("websocket")} arrived over the WebSocket`);
    // Exactly once: a marker is the next event after the 200.
    a.socket.emit("typing:stop", { recipientId: bob.id });
    const marker = await b.rec.next(3000, "the marker after the 200");
    assert.deepEqual([marker.event, ...marker.args], ["typing:stop", { userId: alice.id }]);
    a.socket.close();
    b.socket.close();
  });
});

describe("a GET held longer than libwebsockets' 5 s timeout", () => {
  test(`is answered "2" after pingInterval (${SLOW_PING_INTERVAL} ms), not closed at 5 s; the session lives on`, async () => {
    const { client, res, elapsed } = await longHold;
    assert.equal(res.status, 200);
    assert.equal(res.text, "2");
    assert.ok(elapsed >= SLOW_PING_INTERVAL - 500, `answered after ${elapsed} ms, before the ping was due`);
    await client.send("3");
    await client.send("4alive");
    assert.equal(await client.nextText(3000, "the echo after the pong"), "4alive");
  });
});

// The example app of docs/socketio-library.md (examples/echo, built as
// build/bin/sio-echo): a Socket.IO server on the protocol layers alone, driven
// by the real socket.io-client over each client transport configuration.
import { before, after, describe } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { io } from "socket.io-client";
import { test, startBinary, freePort, shutdown, withTimeout, clientOptions, transportOf, BIN_DIR, TRANSPORTS } from "./harness.mjs";

const sockets = new Set();

/** Connects and resolves with {socket, welcome} once "welcome" came. */
async function connect(url, transport) {
  const socket = io(url, { ...clientOptions({}, { transport }), forceNew: true });
  sockets.add(socket);
  const welcome = await withTimeout(new Promise((resolve) => socket.once("welcome", resolve)), 5000, "welcome");
  return { socket, welcome };
}

describe("the example echo server (the protocol layers as a library)", () => {
  let echo;
  let url;
  before(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    echo = await startBinary({ name: "sio-echo", bin: path.join(BIN_DIR, "sio-echo"), env: { ECHO_PORT: String(port) } });
  });
  after(async () => {
    for (const s of sockets) s.close();
    await shutdown();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: welcome {id} on connect, echo by event and by ack`, async () => {
      const { socket, welcome } = await connect(url, transport);
      assert.deepEqual(welcome, { id: socket.id });
      if (transport === "websocket") assert.equal(transportOf(socket), "websocket"); // the default ones may have upgraded by now
      const back = new Promise((resolve) => socket.once("echo", (...args) => resolve(args)));
      socket.emit("echo", "hello", { n: 1 }, [2, 3]);
      assert.deepEqual(await withTimeout(back, 3000, "the echo"), ["hello", { n: 1 }, [2, 3]]);
      assert.deepEqual(await socket.timeout(3000).emitWithAck("echo", "acked", 42), "acked");
      socket.close();
    });
  }

  test("shout reaches every connected socket, over both transports, and a closed one no more", async () => {
    const a = await connect(url, "websocket");
    const b = await connect(url, "default");
    const c = await connect(url, "websocket");
    c.socket.close();
    const got = (s) => withTimeout(new Promise((resolve) => s.once("shout", resolve)), 3000, "the shout");
    const both = Promise.all([got(a.socket), got(b.socket)]);
    a.socket.emit("shout", "to all");
    assert.deepEqual(await both, ["to all", "to all"]);
    a.socket.close();
    b.socket.close();
  });

  test("it stops cleanly on SIGTERM", async () => {
    await echo.stop();
  });
});

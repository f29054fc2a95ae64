// CONNECT authentication: HS256 JWT in auth.token (chat mode), once per
// client transport (TRANSPORTS): WebSocket only, and the client's defaults,
// where the CONNECT and its answer travel over long-polling (the upgrade is
// held until the socket is connected, then completed before the test goes on).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, after, describe } from "node:test";
import { test, startNats, startEdge, connectClient, expectRefused, openSession, openPolling, shutdown, TRANSPORTS, transportOf } from "./harness.mjs";
import { mintToken, makeUser, nowSec, b64url } from "./tokens.mjs";

let nats;
let edge;

before(async () => {
  nats = await startNats();
  edge = await startEdge({ nats, name: "auth-edge" });
});

after(() => shutdown());

const claims = (over = {}) => ({ sub: randomUUID(), username: "alice", exp: nowSec() + 3600, ...over });
const without = (obj, key) => {
  const o = { ...obj };
  delete o[key];
  return o;
};

for (const transport of TRANSPORTS) describe(`transport: ${transport}`, () => {
  /** Connects over this transport; "default" proves a request/answer over polling before the upgrade. */
  const connect = (token) =>
    connectClient(edge.url, token, {
      transport,
      beforeUpgrade: async ({ socket }) => {
        const res = await socket.timeout(3000).emitWithAck("typing:stop", { recipientId: randomUUID() });
        assert.deepEqual(res, { ok: true }, "an ack over polling, before the upgrade");
      },
    });
  const refused = (auth) => expectRefused(edge.url, auth, { transport });

  describe("accepted tokens", () => {
    test("a valid HS256 token connects and gets a socket id", async () => {
      const u = makeUser("alice");
      const { socket } = await connect(u.token);
      assert.equal(socket.connected, true);
      assert.equal(transportOf(socket), "websocket", "after connect (and, by default, the upgrade)");
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0);
      socket.close();
    });

    test("a token with a past nbf and extra claims connects", async () => {
      const token = mintToken(claims({ nbf: nowSec() - 60, iat: nowSec() - 60, iss: "e2e", role: "x" }));
      const { socket } = await connect(token);
      assert.equal(socket.connected, true);
      socket.close();
    });

    test("userId is accepted instead of sub, and is the user id for relays", async () => {
      const id = randomUUID();
      const token = mintToken({ userId: id, username: "bob", exp: nowSec() + 3600 });
      const b = await connect(token);
      const a = await connect(makeUser("alice").token);
      a.socket.emit("typing:stop", { recipientId: id });
      const got = await b.rec.next(3000, "typing:stop for the userId-claim user");
      assert.equal(got.event, "typing:stop");
      a.socket.close();
      b.socket.close();
    });

    test("two sockets of the same user may connect", async () => {
      const u = makeUser("alice");
      const s1 = await connect(u.token);
      const s2 = await connect(u.token);
      assert.notEqual(s1.socket.id, s2.socket.id);
      s1.socket.close();
      s2.socket.close();
    });
  });

  describe("refused connections: connect_error 'unauthorized' and no event", () => {
    const secret = "e2e-test-secret-0123456789abcdef";
    const good = () => mintToken(claims());
    const cases = [
      ["no auth at all", () => undefined],
      ["auth without token", () => ({})],
      ["token is a number", () => ({ token: 12345 })],
      ["token is an object", () => ({ token: { sub: randomUUID() } })],
      ["token is an empty string", () => ({ token: "" })],
      ["garbage token", () => ({ token: "not-a-jwt" })],
      ["three garbage segments", () => ({ token: "abc.def.ghi" })],
      ["wrong secret", () => ({ token: mintToken(claims(), { secret: "some-other-secret" }) })],
      [
        "tampered payload (signature of another payload)",
        () => {
          const [h, , s] = good().split(".");
          return { token: `${h}.${b64url(claims({ username: "mallory" }))}.${s}` };
        },
      ],
      [
        "signature stripped",
        () => {
          const [h, p] = good().split(".");
          return { token: `${h}.${p}.` };
        },
      ],
      ["expired", () => ({ token: mintToken(claims({ exp: nowSec() - 3600 })) })],
      ["nbf in the future", () => ({ token: mintToken(claims({ nbf: nowSec() + 3600 })) })],
      ["no exp", () => ({ token: mintToken(without(claims(), "exp")) })],
      ["exp is a string", () => ({ token: mintToken(claims({ exp: String(nowSec() + 3600) })) })],
      ["alg none", () => ({ token: mintToken(claims(), { alg: "none", header: { alg: "none" } }) })],
      [
        "alg none header with an HS256 signature",
        () => ({ token: mintToken(claims(), { alg: "HS256", header: { alg: "none", typ: "JWT" } }) }),
      ],
      ["HS384 with the same secret", () => ({ token: mintToken(claims(), { alg: "HS384", secret }) })],
      ["HS512 with the same secret", () => ({ token: mintToken(claims(), { alg: "HS512", secret }) })],
      ["sub not a uuid", () => ({ token: mintToken(claims({ sub: "alice" })) })],
      ["sub a number", () => ({ token: mintToken(claims({ sub: 12345 })) })],
      ["no sub and no userId", () => ({ token: mintToken(without(claims(), "sub")) })],
      ["missing username", () => ({ token: mintToken(without(claims(), "username")) })],
    ];

    for (const [name, auth] of cases) {
      test(name, async () => {
        const { err, socket, seen, transport: over } = await refused(auth());
        assert.equal(over, transport === "websocket" ? "websocket" : "polling", "the transport the refusal came over");
        assert.equal(err.message, "unauthorized");
        assert.equal(socket.id, undefined);
        assert.deepEqual(seen, []);
        assert.equal(socket.receiveBuffer.length, 0, "events were sent before/with the refusal");
      });
    }

    test("raw: the refusal is exactly 44{message:'unauthorized'} and nothing follows it", async () => {
      // WebSocket: one frame per packet. Default transports: the same over raw long-polling.
      const raw =
        transport === "websocket"
          ? (await openSession(edge)).client
          : (await openPolling(edge)).client;
      raw.send(`40${JSON.stringify({ token: mintToken(claims(), { secret: "wrong" }) })}`);
      const reply = await raw.nextText(3000, "CONNECT_ERROR");
      assert.match(reply, /^44\{/);
      const body = JSON.parse(reply.slice(2));
      assert.equal(body.message, "unauthorized");
      // Marker: an unknown namespace gets its own CONNECT_ERROR; it must be the very next packet.
      await raw.send("40/nope,");
      const marker = await raw.nextText(3000, "the marker CONNECT_ERROR");
      assert.equal(marker, '44/nope,{"message":"Invalid namespace"}');
      raw.close?.();
    });

    test("a refused client does not disturb a connected one", async () => {
      const alice = await connect(makeUser("alice").token);
      const bob = makeUser("bob");
      const b = await connect(bob.token);
      await refused({ token: "garbage" });
      alice.socket.emit("typing:stop", { recipientId: bob.id });
      assert.equal((await b.rec.next(3000)).event, "typing:stop");
      alice.socket.close();
      b.socket.close();
    });
  });
});

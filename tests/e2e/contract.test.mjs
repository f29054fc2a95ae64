// The machine-checked contract (docs/schema/chat.schema.json): the schema
// refuses what the original clients could not read (a null lastSeen or
// username, a field too many), the TypeScript declarations and the README
// name the same events, and the validation hooks of contract.mjs run on real
// packets from a real stack (a check that never runs would pass everything).
import { before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test, startNats, startPostgres, startPresence, startEdge, connectClient, shutdown, TRANSPORTS } from "./harness.mjs";
import { check, checked, takeViolations, SERVER_EVENTS, ACKED_EVENTS } from "./contract.mjs";
import { makeUser, mintToken } from "./tokens.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

const uid = "0190a0b0-0000-7000-8000-00000000a11c";
const goodInfo = { userId: uid, username: "alice", status: "online", lastSeen: "2026-12-07T20:11:24.123Z" };
const goodMessage = {
  id: "0190a0b0-0000-7000-8000-000000000001",
  senderId: uid,
  recipientId: "0190a0b0-0000-7000-8000-000000000b0b",
  content: "hi",
  type: "text",
  createdAt: "2026-12-07T20:11:24.123Z",
  readAt: null,
};

describe("the schema", () => {
  test("accepts the documented shapes", () => {
    assert.deepEqual(check("event:user:status", [goodInfo]), []);
    assert.deepEqual(check("event:presence:update", [[goodInfo, { ...goodInfo, status: "away" }]]), []);
    assert.deepEqual(check("event:presence:response", [[]]), []);
    assert.deepEqual(check("event:message:received", [goodMessage]), []);
    assert.deepEqual(check("event:message:received", [goodMessage, "18446744073709551615"]), []);
    assert.deepEqual(check("event:message:read", [{ messageId: uid, readAt: "2026-12-07T20:11:25.000Z" }, "7"]), []);
    assert.deepEqual(check("connect", { sid: "x", pid: "A".repeat(103) }), []);
    assert.deepEqual(check("event:message:sent", [{ ...goodMessage, clientMessageId: "c-1", readAt: "2026-12-07T20:11:25.000Z" }]), []);
    assert.deepEqual(check("ack:message:send", [{ ok: true, message: goodMessage }]), []);
    assert.deepEqual(check("ack:message:send", [{ ok: false, error: { code: "rate_limited", message: "slow down" } }]), []);
    assert.deepEqual(check("ack:message:send", [{ ok: false, error: { code: "rate_limited", message: "quota", retryAfterMs: 2500 } }]), []);
    assert.deepEqual(check("event:chat:error", [{ event: "message:send", code: "rate_limited", message: "quota", retryAfterMs: 1 }]), []);
    assert.deepEqual(check("ack:presence:request", [{ ok: true, users: [goodInfo] }]), []);
    assert.deepEqual(check("ack:typing:start", [{ ok: true }]), []);
    assert.deepEqual(check("connect_error", { message: "unauthorized" }), []);
  });

  test("refuses a null lastSeen or username, a missing field, a field too many, a bad time, a bad code", () => {
    for (const [def, bad] of [
      ["event:user:status", [{ ...goodInfo, lastSeen: null }]],
      ["event:user:status", [{ ...goodInfo, username: null }]],
      ["event:presence:update", [[{ ...goodInfo, lastSeen: null }]]],
      ["event:presence:response", [[{ userId: uid, username: null, status: "offline", lastSeen: null }]]],
      ["event:user:status", [{ ...goodInfo, extra: 1 }]],
      ["event:user:status", [{ userId: uid, username: "a", status: "online" }]],
      ["event:user:status", [{ ...goodInfo, lastSeen: "2026-12-07T20:11:24Z" }]],
      ["event:user:status", [{ ...goodInfo, status: "busy" }]],
      ["event:user:status", [goodInfo, "one argument too many"]],
      ["event:message:received", [{ ...goodMessage, createdAt: null }]],
      ["event:message:received", [{ ...goodMessage, type: "video" }]],
      ["event:message:received", [goodMessage, 7]],
      ["event:message:received", [goodMessage, "07"]],
      ["event:message:received", [goodMessage, "1", "2"]],
      ["event:typing:stop", [{ userId: uid }, "1"]],
      ["connect", { sid: "x", pid: "short" }],
      ["event:chat:error", [{ event: "x", code: "oops", message: "m" }]],
      ["event:chat:error", [{ event: "x", code: "rate_limited", message: "m", retryAfterMs: "5" }]],
      ["event:chat:error", [{ event: "x", code: "rate_limited", message: "m", retryAfterMs: 0 }]],
      ["ack:message:send", [{ ok: false, error: { code: "rate_limited", message: "m", retryAfterMs: 1.5 } }]],
      ["ack:message:send", [{ ok: false, error: { code: "rate_limited", message: "m", retryAfter: 5 } }]],
      ["ack:message:send", [{ ok: true }]],
      ["ack:message:history", [{ ok: true, messages: [{ ...goodMessage, readAt: undefined }] }]],
      ["ack:unknown", [{ ok: true }]],
    ]) {
      assert.notDeepEqual(check(def, JSON.parse(JSON.stringify(bad))), [], `${def} must refuse ${JSON.stringify(bad)}`);
    }
  });

  test("chat.d.ts declares exactly the schema's server events and acked client events", () => {
    const dts = readFileSync(path.join(root, "clients/typescript/chat.d.ts"), "utf8");
    const keys = (iface) => {
      const body = dts.slice(dts.indexOf(`export interface ${iface} {`));
      return [...body.slice(0, body.indexOf("\n}")).matchAll(/^ {2}"([^"]+)":/gm)].map((m) => m[1]).sort();
    };
    assert.deepEqual(keys("ServerToClientEvents"), [...SERVER_EVENTS].sort());
    assert.deepEqual(keys("ClientToServerEvents"), [...ACKED_EVENTS].sort());
  });

  test("the README's event table names every server event of the schema", () => {
    const readme = readFileSync(path.join(root, "README.md"), "utf8");
    for (const e of SERVER_EVENTS) assert.ok(readme.includes(`\`${e}`), `README: no \`${e}\``);
  });
});

describe("the hooks run on real packets", () => {
  let nats, pg, edge;
  before(async () => {
    nats = await startNats();
    pg = await startPostgres();
    await startPresence({ nats, pg });
    edge = await startEdge({ nats });
  });
  after(shutdown);

  for (const transport of TRANSPORTS) {
    test(`${transport}: CONNECT, presence:update, user:status, acks and chat:error are checked`, async () => {
      takeViolations();
      const before = checked.count;
      const a = makeUser("ada");
      const b = makeUser("bo");
      const ca = await connectClient(edge.url, a.token, { transport });
      const cb = await connectClient(edge.url, b.token, { transport });
      const res = await cb.socket.timeout(3000).emitWithAck("presence:request", [a.id, b.id]);
      assert.equal(res.ok, true);
      assert.equal(res.users.length, 2, "both were seen");
      const refused = await ca.socket.timeout(3000).emitWithAck("no:such:event", {});
      assert.deepEqual(refused.ok, false);
      ca.socket.emit("typing:start", { recipientId: "not a uuid" }); // chat:error
      assert.equal((await ca.rec.next(3000, "chat:error")).event, "chat:error");
      // CONNECT x2, presence:update x2, user:status of bo, 2 acks, chat:error
      assert.ok(checked.count - before >= 7, `only ${checked.count - before} payloads were checked`);
      assert.deepEqual(takeViolations(), []);
    });
  }

  test("a refused CONNECT's payload is checked too", async () => {
    const before = checked.count;
    await assert.rejects(connectClient(edge.url, mintToken({ sub: "nope" }), { ms: 3000 }), /unauthorized/);
    assert.ok(checked.count > before);
  });
});

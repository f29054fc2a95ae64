// LOG_FORMAT=json: every line each service writes, on stdout or stderr, is one
// JSON object with time, level, service and msg, from the configuration dump
// at start to the last line at a clean stop, PostgreSQL's notices included
// (a log shipper reads line by line and drops what is not JSON).
import { after, describe } from "node:test";
import assert from "node:assert/strict";
import { connectClient, shutdown, startEdge, startMessaging, startNats, startPostgres, startPresence, test } from "./harness.mjs";
import { makeUser } from "./tokens.mjs";

const JSON_ENV = { LOG_FORMAT: "json", LOG_LEVEL: "debug" };

/** Every line of child's output parsed; throws naming the first line that is not a log object. */
function jsonLines(child) {
  const lines = child.output.split("\n").filter((l) => l !== "");
  assert.ok(lines.length > 0, `${child.name} wrote nothing`);
  return lines.map((line) => {
    let o;
    try {
      o = JSON.parse(line);
    } catch {
      assert.fail(`${child.name}: not JSON: ${line}`);
    }
    assert.deepEqual(Object.keys(o), ["time", "level", "service", "msg"], `${child.name}: ${line}`);
    assert.match(o.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, line);
    assert.ok(["debug", "info", "warn", "error"].includes(o.level), line);
    return o;
  });
}

describe("LOG_FORMAT=json", () => {
  after(() => shutdown());

  test("every line of every service is one JSON object, libpq notices included", { timeout: 60000 }, async () => {
    const nats = await startNats();
    const pg = await startPostgres();
    // The second start of messaging meets its schema in place: the
    // migrations' CREATE TABLE IF NOT EXISTS makes the server send a NOTICE.
    const first = await startMessaging({ nats, pg, env: JSON_ENV });
    await first.stop();
    const messaging = await startMessaging({ nats, pg, env: JSON_ENV });
    const presence = await startPresence({ nats, pg, env: JSON_ENV });
    const edge = await startEdge({ nats, env: JSON_ENV });
    const u = makeUser("logs");
    const { socket } = await connectClient(edge.url, u.token);
    socket.close();
    for (const svc of [edge, presence, messaging]) await svc.stop();

    const notice = /^postgres notice: relation "schema_migrations" already exists, skipping$/;
    for (const [svc, service] of [[first, "messaging"], [messaging, "messaging"], [presence, "presence"], [edge, "edge"]]) {
      const logs = jsonLines(svc.child);
      assert.ok(logs.every((o) => o.service === service), `${svc.child.name}: service is not ${service}`);
    }
    for (const svc of [messaging, presence]) {
      assert.ok(jsonLines(svc.child).some((o) => notice.test(o.msg)), `${svc.child.name}: no postgres notice logged`);
    }
  });
});

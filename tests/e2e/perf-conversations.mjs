// conversation:list at 1,000,000 stored messages (`make perf-conversations`; not part of `make test`).
// A throwaway PostgreSQL, nats-server, chat-messaging, chat-presence (its users table) and one
// edge; 10,000 users in `users`; 1,000,000 messages inserted straight into `messages` in chunks
// (the trigger keeps `conversations`, as for every insert): a heavy user with 2,000 conversations
// and 100,000 messages, the 900,000 others spread so that a typical user has about 40
// conversations and 180 messages; one message in seven unread. Then, through the real stack
// (socket.io-client → edge → NATS → messaging → PostgreSQL and back), the first page (20) of the
// heavy user and of a typical one, a deep page of the heavy one, and conversation:read of a
// conversation with 50 unread; PostgreSQL's own time for the first pages (EXPLAIN ANALYZE); the
// migration's backfill of the conversations of 1,000,000 messages; and the trigger's cost on
// batches of 20 inserted messages. Prints one `figure:` line per measure.
import { execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { startEdge, startMessaging, startNats, startPostgres, startPresence, shutdown, clientOptions } from "./harness.mjs";
import { mintToken } from "./tokens.mjs";

const USERS = 10000;
const TOTAL = Number(process.env.PERF_MESSAGES || 1000000);
const HEAVY_PARTNERS = 2000;
const HEAVY_MESSAGES = 100000;
const CHUNK = 100000;
const RUNS = 30;

const uid = (i) => `md5('user-' || ${i})::uuid`; // in SQL
const uidOf = (pg, i) => pg.psql(`SELECT ${uid(i)}`)[0];
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const fmt = (x) => `${x.toFixed(1)} ms`;

function figure(name, value) {
  console.log(`figure: ${name}: ${value}`);
}

async function connect(url, id, name) {
  const socket = io(url, { ...clientOptions({ token: mintToken({ sub: id, username: name, exp: Math.floor(Date.now() / 1000) + 3600 }) }) });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  return socket;
}

async function timeList(socket, query, runs = RUNS) {
  const times = [];
  let last;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    last = await socket.timeout(10000).emitWithAck("conversation:list", query);
    times.push(ms(t0));
    if (!last.ok) throw new Error(`conversation:list: ${JSON.stringify(last)}`);
  }
  return { first: times[0], median: pct(times, 50), p95: pct(times, 95), page: last };
}

function explainMs(pg, user) {
  const plan = pg.psql(
    `EXPLAIN (ANALYZE, FORMAT TEXT) SELECT c.with_user_id, coalesce(u.username, ''), (SELECT count(*) FROM messages n WHERE n.recipient_id = ${user} AND n.sender_id = c.with_user_id AND n.read_at IS NULL), m.* FROM conversations c JOIN messages m ON m.id = c.last_id LEFT JOIN users u ON u.id = c.with_user_id WHERE c.user_id = ${user} ORDER BY c.last_at DESC, c.with_user_id DESC LIMIT 21`,
  );
  const line = plan.find((l) => l.startsWith("Execution Time"));
  return Number(line.match(/([\d.]+) ms/)[1]);
}

const nats = await startNats();
const pg = await startPostgres();
try {
  await startPresence({ nats, pg });
  await startMessaging({ nats, pg });
  const edge = await startEdge({ nats });

  let t0 = process.hrtime.bigint();
  pg.psql(`INSERT INTO users (id, username, status, online, last_seen) SELECT ${uid("i")}, 'user' || i, 'offline', false, now() FROM generate_series(0, ${USERS - 1}) i ON CONFLICT DO NOTHING`);
  // The heavy user (0): HEAVY_MESSAGES messages, both directions, with users 1..HEAVY_PARTNERS.
  const spread = `now() - interval '90 days' + n * (interval '90 days' / ${TOTAL})`;
  const insert = (from, to, sender, recipient) =>
    pg.psql(
      `INSERT INTO messages (id, sender_id, recipient_id, type, content, created_at, read_at) SELECT gen_random_uuid(), ${sender}, ${recipient}, 'text', 'message number ' || n || ' of the benchmark, about as long as a chat line', ${spread}, CASE WHEN n % 7 = 0 THEN NULL ELSE ${spread} + interval '1 minute' END FROM generate_series(${from}, ${to}) n`,
    );
  const heavyPartner = `1 + (n % ${HEAVY_PARTNERS})`;
  for (let a = 0; a < HEAVY_MESSAGES; a += CHUNK) {
    const b = Math.min(HEAVY_MESSAGES, a + CHUNK) - 1;
    const out = `(n / ${HEAVY_PARTNERS}) % 2 = 0`; // each conversation both ways
    insert(a, b, `CASE WHEN ${out} THEN ${uid(0)} ELSE ${uid(heavyPartner)} END`, `CASE WHEN ${out} THEN ${uid(heavyPartner)} ELSE ${uid(0)} END`);
  }
  // Everyone else (1..USERS-1): sender n mod 9,999, its partner one of 20 at a stride of 37.
  const others = USERS - 1;
  const s = `1 + (n % ${others})`;
  const r = `1 + ((n % ${others}) + 1 + ((n / ${others}) % 20) * 37) % ${others}`;
  for (let a = HEAVY_MESSAGES; a < TOTAL; a += CHUNK) insert(a, Math.min(TOTAL, a + CHUNK) - 1, uid(s), uid(r));
  const seedMs = ms(t0);
  pg.psql("VACUUM ANALYZE messages");
  pg.psql("VACUUM ANALYZE conversations");
  pg.psql("ANALYZE users");
  const [messages, conversations] = pg.psql("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM conversations)")[0].split("|");
  figure("seeded", `${messages} messages, ${conversations} conversation rows (two per pair), ${USERS} users, in ${(seedMs / 1000).toFixed(1)} s with the trigger`);

  // A typical user: the median number of conversations.
  const typicalIndex = 5000;
  const heavyId = uidOf(pg, 0);
  const typicalId = uidOf(pg, typicalIndex);
  const count = (id) => pg.psql(`SELECT count(*), (SELECT count(*) FROM messages WHERE sender_id = '${id}' OR recipient_id = '${id}') FROM conversations WHERE user_id = '${id}'`)[0].split("|");
  const [hc, hm] = count(heavyId);
  const [tc, tm] = count(typicalId);
  figure("heavy user", `${hc} conversations, ${hm} messages`);
  figure("typical user", `${tc} conversations, ${tm} messages`);

  const heavy = await connect(edge.url, heavyId, "user0");
  const typical = await connect(edge.url, typicalId, `user${typicalIndex}`);
  const h = await timeList(heavy, { limit: 20 });
  const t = await timeList(typical, { limit: 20 });
  figure("first page (20) of the heavy user, end to end", `first ${fmt(h.first)}, median ${fmt(h.median)}, p95 ${fmt(h.p95)} (${RUNS} runs)`);
  figure("first page (20) of a typical user, end to end", `first ${fmt(t.first)}, median ${fmt(t.median)}, p95 ${fmt(t.p95)} (${RUNS} runs)`);
  // The 50th page of the heavy user (conversations 981-1000), by its cursors.
  let before = null;
  for (let i = 0; i < 49; i++) before = (await heavy.timeout(10000).emitWithAck("conversation:list", { before, limit: 20 })).nextBefore;
  const deep = await timeList(heavy, { before, limit: 20 });
  figure("50th page (20) of the heavy user, end to end", `median ${fmt(deep.median)}, p95 ${fmt(deep.p95)} (${RUNS} runs)`);
  const pgTimes = (id) => Array.from({ length: 10 }, () => explainMs(pg, `'${id}'`));
  figure("PostgreSQL's execution time of a first page, heavy / typical (EXPLAIN ANALYZE, median of 10)", `${fmt(pct(pgTimes(heavyId), 50))} / ${fmt(pct(pgTimes(typicalId), 50))}`);

  // conversation:read of 500 unread messages of one of the heavy user's partners.
  const partner = uidOf(pg, 9);
  pg.psql(
    `INSERT INTO messages (id, sender_id, recipient_id, type, content, created_at) SELECT gen_random_uuid(), '${partner}', '${heavyId}', 'text', 'unread ' || g, now() + g * interval '1 millisecond' FROM generate_series(1, 500) g`,
  );
  const upTo = pg.psql(`SELECT id FROM messages WHERE sender_id = '${partner}' AND recipient_id = '${heavyId}' ORDER BY created_at DESC LIMIT 1`)[0];
  const unread = pg.psql(`SELECT count(*) FROM messages WHERE sender_id = '${partner}' AND recipient_id = '${heavyId}' AND read_at IS NULL`)[0];
  const listed = (await heavy.timeout(10000).emitWithAck("conversation:list", { limit: 1 })).conversations[0];
  figure("the heavy user's top conversation after 500 more messages", `unread ${listed.unread}, last "${listed.lastMessage.content}"`);
  t0 = process.hrtime.bigint();
  const res = await heavy.timeout(10000).emitWithAck("conversation:read", { withUserId: partner, upTo });
  if (!res.ok) throw new Error(JSON.stringify(res));
  figure(`conversation:read of ${unread} unread messages, end to end (acked once its ${unread} receipts are recorded)`, fmt(ms(t0)));

  // The migration's backfill (the same statement as messaging's schema step 3) over every message.
  t0 = process.hrtime.bigint();
  pg.psql(
    "BEGIN; DELETE FROM conversations; INSERT INTO conversations (user_id, with_user_id, last_at, last_id) SELECT DISTINCT ON (u, w) u, w, at, id FROM (SELECT sender_id AS u, recipient_id AS w, created_at AS at, id FROM messages UNION ALL SELECT recipient_id, sender_id, created_at, id FROM messages) x ORDER BY u, w, at DESC, id DESC; COMMIT;",
  );
  figure(`the migration's backfill of the conversations of ${messages} messages`, `${(ms(t0) / 1000).toFixed(1)} s`);

  // The trigger's cost: 500 batches of 20 messages (one INSERT each, as messaging's batches), with and without it.
  const dir = mkdtempSync(path.join(os.tmpdir(), "perf-conv-"));
  const batchFile = (tag) => {
    const lines = [];
    for (let b = 0; b < 500; b++)
      lines.push(`INSERT INTO messages (id, sender_id, recipient_id, type, content, created_at) SELECT gen_random_uuid(), ${uid(`1 + (${b} * 20 + g) % ${others}`)}, ${uid(`1 + (${b} * 20 + g + 37) % ${others}`)}, 'text', '${tag}', now() FROM generate_series(1, 20) g;`);
    const f = path.join(dir, `${tag}.sql`);
    writeFileSync(f, lines.join("\n"));
    return f;
  };
  const runFile = (f) => {
    const t = process.hrtime.bigint();
    execFileSync("psql", ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-f", f], { stdio: "ignore" });
    return ms(t) / 500;
  };
  const withT = [];
  const without = [];
  for (let i = 0; i < 3; i++) {
    withT.push(runFile(batchFile(`with-${i}`)));
    pg.psql("ALTER TABLE messages DISABLE TRIGGER messages_conversations");
    without.push(runFile(batchFile(`without-${i}`)));
    pg.psql("ALTER TABLE messages ENABLE TRIGGER messages_conversations");
  }
  rmSync(dir, { recursive: true, force: true });
  figure("a batch of 20 messages inserted (one statement, fsync off), with / without the trigger (median of 3 × 500)", `${pct(withT, 50).toFixed(2)} ms / ${pct(without, 50).toFixed(2)} ms`);
  heavy.close();
  typical.close();
} finally {
  await shutdown();
}

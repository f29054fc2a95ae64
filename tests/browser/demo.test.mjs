// The demo page (web/) in a real browser against the real stack: nats-server, a throwaway
// PostgreSQL, chat-messaging, chat-presence and two chat-edges that serve web/ and the dev login.
// Debian's chromium, driven by playwright-core (never a downloaded browser), holds three tabs:
// alice (desktop, edge 1), bob (a 390 px wide phone, edge 1) and carol (desktop, edge 2). They sign
// in, find each other, chat, and see the conversation list with last messages and unread counts,
// day separators, ticks, typing, the ghost text, a voice note and listening, away and online;
// edge 1 is restarted in the middle: its two pages show the banner and recover by themselves, with
// what carol sent meanwhile and what alice sent while disconnected; then history after a reload,
// older pages on demand, and bob's tab closed (offline, last seen).
// Every wait is bounded. Screenshots of the pages are saved on every run in build/screenshots/
// (`make screenshots` copies them into docs/img/ for the README); on a failure every page is saved
// in build/browser-artifacts/ and the processes' logs are printed.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort, shutdown, startEdge, startMessaging, startNats, startPostgres, startPresence, test } from "../e2e/harness.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ARTIFACTS = path.join(repo, "build", "browser-artifacts");
const SCREENSHOTS = path.join(repo, "build", "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--lang=en-GB", "--font-render-hinting=none",
];
const EMOJI_FONT = "Noto Color Emoji"; // fonts-noto-color-emoji (scripts/deps.sh browser)
const WAIT = 10000; // the bound of every wait and action
const HISTORY_PAGE = 8; // the page's ?history=N: small, so that "load older" is needed
const DESKTOP = { width: 1100, height: 760 };
const PHONE = { width: 390, height: 844 };
const SECRET = "dev-browser-test-secret-0123456789"; // the edge refuses the dev login without "dev-"

let context; // one browser, three tabs (sessionStorage is per tab: one user each)
let userDataDir;
let nats;
let pg;
let edge1;
let edge1Port;
let edge2;
const pages = {}; // alice, bob, carol
const ids = {}; // user ids by name
const pageErrors = []; // uncaught errors and console errors of every page

const edgeEnv = () => ({ JWT_SECRET: SECRET, EDGE_DEV_LOGIN: "1", EDGE_STATIC_DIR: path.join(repo, "web") });
/** Edge 1 on a fixed port and EDGE_ID, so that it can be restarted under the pages' feet. */
async function startEdge1() {
  const e = await startEdge({ nats, name: "browser-edge-1", env: { ...edgeEnv(), EDGE_PORT: String(edge1Port) } });
  e.url = `http://127.0.0.1:${edge1Port}`; // startEdge's own port was overridden
  return e;
}

before(
  async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install chromium (scripts/deps.sh browser does)`);
    const fonts = execFileSync("fc-list", [":", "family"], { encoding: "utf8" });
    if (!fonts.includes(EMOJI_FONT)) throw new Error(`no "${EMOJI_FONT}" font: apt-get install fonts-noto-color-emoji (scripts/deps.sh browser does)`);
    nats = await startNats();
    pg = await startPostgres();
    await startMessaging({ nats, pg });
    await startPresence({ nats, pg });
    edge1Port = await freePort();
    edge1 = await startEdge1();
    edge2 = await startEdge({ nats, name: "browser-edge-2", env: edgeEnv() });
    mkdirSync(SCREENSHOTS, { recursive: true });

    userDataDir = mkdtempSync(path.join(os.tmpdir(), "chat-browser-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
      viewport: DESKTOP,
      locale: "en-GB",
      timezoneId: "UTC",
    });
    context.setDefaultTimeout(WAIT);
    pages.alice = context.pages()[0] ?? (await context.newPage());
    pages.bob = await context.newPage();
    pages.carol = await context.newPage();
    await pages.bob.setViewportSize(PHONE);
    for (const [who, page] of Object.entries(pages)) {
      page.on("pageerror", (err) => pageErrors.push(`${who}: ${err.message}`));
      page.on("console", (msg) => msg.type() === "error" && !expectedConsoleError(msg.text()) && pageErrors.push(`${who} console: ${msg.text()}`));
    }
  },
  { timeout: 120000 },
);

/** While edge 1 is down its pages' reconnection attempts fail: the browser reports those, and only those. */
let edge1Down = false;
function expectedConsoleError(text) {
  return edge1Down && /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed|Failed to load resource/.test(text);
}

after(async () => {
  await context?.close().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});
after(() => shutdown());

/** A test that saves every page as a screenshot when it fails, and fails on any page error. */
function step(name, fn) {
  return test(name, { timeout: 60000 }, async () => {
    try {
      await fn();
      assert.deepEqual(pageErrors.splice(0), [], "the pages reported errors");
    } catch (err) {
      mkdirSync(ARTIFACTS, { recursive: true });
      const slug = name.replace(/[^a-z0-9]+/gi, "-").toLowerCase().slice(0, 80);
      for (const [who, page] of Object.entries(pages)) {
        if (page.isClosed()) continue;
        const file = path.join(ARTIFACTS, `${slug}-${who}.png`);
        await page.screenshot({ path: file, timeout: 5000 }).catch(() => {});
        console.error(`screenshot: ${file}`);
      }
      throw err;
    }
  });
}

/** Saves a page as build/screenshots/<name>.png (the README's pictures, by `make screenshots`). */
async function shot(page, name) {
  await page.evaluate(() => document.activeElement?.blur?.()); // no caret or focus ring in the picture
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), animations: "disabled", caret: "hide" });
}

// ---------------------------------------------------------------- page helpers

const conversation = (page, name) => page.getByTestId(`conversation-${name}`);
const online = (page, name) => page.getByTestId(`person-${name}`);
const message = (page, text) => page.getByTestId("message").filter({ hasText: text });
const visible = (locator) => locator.waitFor({ state: "visible", timeout: WAIT });
const hidden = (locator) => locator.waitFor({ state: "hidden", timeout: WAIT });
/** Waits until locator is visible and contains text. */
const hasText = (locator, text) => visible(locator.filter({ hasText: text }));
const input = (page) => page.getByLabel("Message", { exact: true });

async function signIn(page, name, edge) {
  await page.goto(`${edge.url ?? edge}/?history=${HISTORY_PAGE}`, { timeout: WAIT });
  await visible(page.getByTestId("login-form"));
  await page.getByLabel("Your name").fill(name);
  await page.getByTestId("login-button").click();
  await hasText(page.getByTestId("connection"), "connected");
  await hasText(page.getByTestId("me-name"), name);
  ids[name] = await page.evaluate(() => JSON.parse(sessionStorage.getItem("chat-demo:login")).userId);
}

async function sendText(page, text) {
  await input(page).fill(text);
  await input(page).press("Enter");
  await visible(message(page, text).locator('[data-state="sent"], [data-state="read"]'));
}

async function waitMessageCount(page, n) {
  await page.waitForFunction((count) => document.querySelectorAll('[data-testid="message"]').length === count, n, { timeout: WAIT });
}

const sql = (s) => `'${String(s).replace(/'/g, "''")}'`;

// ---------------------------------------------------------------- the story

step("the sign-in screen offers the dev login; three users sign in (bob on a 390 px phone) and see who is online", async () => {
  const { alice, bob, carol } = pages;
  await alice.goto(`${edge1.url}/?history=${HISTORY_PAGE}`, { timeout: WAIT });
  await visible(alice.getByTestId("login-form"));
  await hidden(alice.getByTestId("devlogin-off"));
  await shot(alice, "signin");
  await signIn(alice, "alice", edge1);
  // A new user: the empty states say what to do.
  await hasText(alice.getByTestId("conversations-empty"), "No conversations yet");
  await hasText(alice.getByTestId("online-empty"), "Nobody else is online");
  await hasText(alice.getByTestId("chat-empty"), "Pick a conversation");
  await signIn(bob, "bob", edge1);
  await signIn(carol, "carol", edge2);
  await visible(alice.locator('[data-testid="person-bob"][data-status="online"]'));
  await visible(alice.locator('[data-testid="person-carol"][data-status="online"]'));
  await visible(bob.locator('[data-testid="person-alice"][data-status="online"]'));
  // Default transports: long-polling first, then the WebSocket upgrade.
  await hasText(alice.getByTestId("transport"), "websocket");
  await hasText(carol.getByTestId("transport"), "websocket");
});

step("search finds people the page knows, and says what it searches when nobody matches", async () => {
  const { alice } = pages;
  await alice.getByTestId("search").fill("car");
  await visible(alice.getByTestId("result-carol"));
  await alice.getByTestId("search").fill("zed");
  await hasText(alice.getByTestId("search-empty"), "Nobody called “zed”");
  await alice.getByTestId("search").fill("");
  await hidden(alice.getByTestId("search-empty"));
});

step("older messages (two days ago, yesterday) are in history; a conversation opened from the online list shows them under day separators", async () => {
  const { alice } = pages;
  // Stored as if sent on earlier days (the trigger keeps the conversation list).
  const day = (n, hh, mm) => `date_trunc('day', now()) - interval '${n} days' + interval '${hh} hours ${mm} minutes'`;
  const rows = [
    [ids.bob, ids.alice, "Are we still on for the climbing gym on Friday? 🧗", day(2, 18, 5)],
    [ids.alice, ids.bob, "Yes! 7 pm", day(2, 18, 9)],
    [ids.bob, ids.alice, "Great, I'll bring the ropes", day(1, 9, 30)],
  ];
  pg.psql(
    `INSERT INTO messages (id, sender_id, recipient_id, type, content, created_at, read_at) VALUES ${rows
      .map(([s, r, c, at]) => `(gen_random_uuid(), ${sql(s)}, ${sql(r)}, 'text', ${sql(c)}, ${at}, ${at} + interval '1 minute')`)
      .join(", ")}`,
  );
  await online(alice, "bob").getByRole("button").click();
  await hasText(alice.getByTestId("chat-title"), "bob");
  await waitMessageCount(alice, 3);
  const separators = await alice.getByTestId("day-separator").allTextContents();
  assert.equal(separators.length, 2, `day separators: ${separators}`);
  assert.equal(separators[1], "Yesterday");
  assert.match(separators[0], /^[A-Z][a-z]+day \d+ [A-Z][a-z]+$/, "two days ago: its weekday and date");
});

step("alice writes bob: bob's list shows the conversation with an unread badge and the preview; carol writes alice twice: alice sees a badge of 2", async () => {
  const { alice, bob, carol } = pages;
  await sendText(alice, "Hi Bob 👋 see you at the gym tonight?");
  const bobsRow = conversation(bob, "alice");
  await visible(bob.locator('[data-testid="conversation-alice"][data-unread="1"]'));
  await hasText(bobsRow.getByTestId("unread-badge"), "1");
  await hasText(bobsRow.getByTestId("preview"), "Hi Bob 👋");

  await online(carol, "alice").getByRole("button").click();
  await hasText(carol.getByTestId("thread-empty"), "No messages yet");
  await sendText(carol, "Lunch at 12? 🍜");
  await sendText(carol, "I can book the Thai place 🌶️ on the corner, they have that green curry you liked last time");
  const carolsRow = conversation(alice, "carol");
  await hasText(carolsRow.getByTestId("unread-badge"), "2");
  await hasText(carolsRow.getByTestId("preview"), "I can book the Thai place");
  // The list is newest first: carol, then bob.
  const order = await alice.getByTestId("conversations").locator("li").evaluateAll((lis) => lis.map((li) => li.dataset.testid));
  assert.deepEqual(order, ["conversation-carol", "conversation-bob"]);
  // alice's message is sent, not read yet
  await visible(message(alice, "Hi Bob").locator('[data-state="sent"]'));
});

step("bob opens the conversation on his phone: the list gives way to it, alice's message turns read (✓✓); bob types (alice sees it and his ghost text) and replies", async () => {
  const { alice, bob } = pages;
  await shot(bob, "phone-list");
  await conversation(bob, "alice").getByRole("button").click();
  await visible(bob.getByTestId("back-button"));
  await hidden(bob.getByTestId("conversations"));
  await visible(message(alice, "Hi Bob").locator('[data-state="read"]'));
  await hidden(conversation(bob, "alice").getByTestId("unread-badge"));
  await input(bob).pressSequentially("Sure, 7 pm ", { delay: 20 });
  await hasText(alice.getByTestId("typing-indicator"), "bob is typing");
  await hasText(alice.getByTestId("ghost-text"), "Sure, 7 pm");
  await input(bob).pressSequentially("😄");
  await input(bob).press("Enter");
  await visible(message(alice, "Sure, 7 pm 😄").and(alice.locator('[data-direction="in"]')));
  await hidden(alice.getByTestId("ghost-text"));
  await visible(message(bob, "Sure, 7 pm 😄").locator('[data-state="read"]'));
  // Bubbles are as wide as their text: a short one is much narrower than the thread.
  const short = await message(bob, "Yes! 7 pm").locator(".bubble").boundingBox();
  const thread = await bob.locator("#thread").boundingBox();
  assert.ok(short.width < thread.width / 2, `a short bubble is ${short.width} px of a ${thread.width} px thread`);
  assert.ok(thread.width <= PHONE.width, "nothing wider than the phone");
  const overflow = await bob.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.equal(overflow, 0, "no horizontal scrolling at 390 px");
  await shot(bob, "phone-conversation");
});

step("alice opens carol's conversation: the badge goes, carol's messages turn read; alice plays bob's voice note, bob sees her listening", async () => {
  const { alice, bob, carol } = pages;
  await conversation(alice, "carol").getByRole("button").click();
  await hidden(conversation(alice, "carol").getByTestId("unread-badge"));
  await visible(message(carol, "Lunch at 12").locator('[data-state="read"]'));
  await visible(message(carol, "I can book the Thai place").locator('[data-state="read"]'));
  await sendText(alice, "Yes please! 😋");
  // a voice note from bob (simulated): recording…, then the note; alice plays it
  await conversation(alice, "bob").getByRole("button").click();
  const record = bob.getByTestId("record-button");
  await record.click();
  assert.equal(await record.getAttribute("aria-pressed"), "true");
  await hasText(alice.getByTestId("recording-indicator"), "bob is recording");
  await record.click(); // stop: the voice note is sent
  await hidden(alice.getByTestId("recording-indicator"));
  const note = alice.locator('[data-testid="message"][data-type="audio"]');
  await visible(note);
  await note.getByTestId("play-button").click();
  await hasText(bob.locator('[data-testid="message"][data-type="audio"]').getByTestId("listening"), "alice is listening");
  await shot(alice, "desktop-conversation");
});

step("bob goes away and comes back: alice sees his status", async () => {
  const { alice, bob } = pages;
  await bob.getByTestId("status-select").selectOption("away");
  await hasText(alice.getByTestId("chat-status"), "away");
  await visible(alice.locator('[data-testid="conversation-bob"] .dot.away'));
  await bob.getByTestId("status-select").selectOption("online");
  await hasText(alice.getByTestId("chat-status"), "online");
});

step("edge 1 restarts: alice's and bob's pages show the banner and come back by themselves, with nothing lost", async () => {
  const { alice, bob, carol } = pages;
  await conversation(alice, "carol").getByRole("button").click();
  edge1Down = true;
  await edge1.stop();
  for (const page of [alice, bob]) {
    await hasText(page.getByTestId("banner"), "reconnecting");
    await hasText(page.getByTestId("connection"), "reconnecting");
  }
  // Meanwhile: carol (edge 2) writes both; alice writes carol while disconnected (buffered by the client).
  await conversation(carol, "alice").getByRole("button").click();
  await sendText(carol, "Table booked for 12:15 ✅");
  await input(alice).fill("Perfect, see you there");
  await input(alice).press("Enter");
  await visible(message(alice, "Perfect, see you there").locator('[data-state="sending"]'));
  await shot(alice, "desktop-reconnecting");
  edge1 = await startEdge1();
  for (const page of [alice, bob]) {
    await hasText(page.getByTestId("connection"), "connected");
    await hasText(page.getByTestId("banner"), "Back online — nothing was missed");
  }
  edge1Down = false;
  // What carol sent meanwhile arrived (recovered), and what alice sent went out once.
  await visible(message(alice, "Table booked for 12:15 ✅"));
  await visible(message(carol, "Perfect, see you there").and(carol.locator('[data-direction="in"]')));
  await visible(message(alice, "Perfect, see you there").locator('[data-state="read"]'));
  assert.equal(await message(carol, "Perfect, see you there").count(), 1, "stored and delivered once");
  await hidden(alice.getByTestId("banner"));
});

step("after a reload alice finds her conversations and bob's history oldest first, and older pages on demand", async () => {
  const { alice } = pages;
  await alice.reload({ timeout: WAIT }); // the tab keeps its user (sessionStorage)
  await hasText(alice.getByTestId("connection"), "connected");
  const order = await alice.getByTestId("conversations").locator("li").evaluateAll((lis) => lis.map((li) => li.dataset.testid));
  assert.deepEqual(order, ["conversation-carol", "conversation-bob"]);
  await conversation(alice, "bob").getByRole("button").click();
  // 3 older + alice's hello + bob's reply + the voice note = 6: one page of 8
  await waitMessageCount(alice, 6);
  await hidden(alice.getByTestId("load-older"));
  await conversation(alice, "carol").getByRole("button").click();
  // carol: lunch, thai, yes please, table booked, perfect = 5
  await waitMessageCount(alice, 5);
  const texts = (await alice.getByTestId("message-content").allTextContents()).map((t) => t.trim());
  assert.deepEqual(texts.map((t) => t.slice(0, 12)), ["Lunch at 12?", "I can book t", "Yes please! ", "Table booked", "Perfect, see"]);
  for (let i = 0; i < 4; i++) await sendText(alice, `extra ${i + 1}`);
  await alice.reload({ timeout: WAIT });
  await hasText(alice.getByTestId("connection"), "connected");
  await conversation(alice, "carol").getByRole("button").click();
  await waitMessageCount(alice, HISTORY_PAGE);
  await alice.getByTestId("load-older").click();
  await waitMessageCount(alice, 9);
  await hidden(alice.getByTestId("load-older"));
  // the read receipts survive the reload (readAt from history)
  await visible(message(alice, "Yes please!").locator('[data-state="read"]'));
});

step("bob closes his tab: alice sees him offline with a last-seen time", async () => {
  const { alice, bob } = pages;
  await conversation(alice, "bob").getByRole("button").click();
  await bob.close();
  await visible(alice.locator('[data-testid="conversation-bob"] .dot.offline'));
  await hasText(alice.getByTestId("chat-status"), "last seen");
});

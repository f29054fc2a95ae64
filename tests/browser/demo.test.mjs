// The demo page (web/) in a real browser against the real stack: nats-server,
// a throwaway PostgreSQL, chat-messaging, chat-presence and a chat-edge that
// serves web/ and POST /dev/login. Debian's chromium, driven by playwright-core
// (never a downloaded browser), holds two tabs: alice and bob. They log in,
// chat both ways, and see typing, the ghost text, read receipts, the recording
// indicator, listening, away and offline, and history after a reload.
// Every wait is bounded; on a failure both pages are saved as screenshots in
// build/browser-artifacts/ and the processes' logs are printed.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { shutdown, startEdge, startMessaging, startNats, startPostgres, startPresence, test } from "../e2e/harness.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ARTIFACTS = path.join(repo, "build", "browser-artifacts");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const WAIT = 10000; // the bound of every wait and action
const HISTORY_PAGE = 5; // the page's ?history=N: small, so that "load older" is needed

let context; // one browser, two tabs
let userDataDir;
let edgeUrl;
const pages = {}; // alice, bob
const pageErrors = []; // uncaught errors and console errors of either page

before(
  async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install chromium (scripts/deps.sh does)`);
    const nats = await startNats();
    const pg = await startPostgres();
    await startMessaging({ nats, pg });
    await startPresence({ nats, pg });
    const edge = await startEdge({
      nats,
      env: {
        JWT_SECRET: "dev-browser-test-secret-0123456789", // the edge refuses dev login without "dev-"
        EDGE_DEV_LOGIN: "1",
        EDGE_STATIC_DIR: path.join(repo, "web"),
      },
    });
    edgeUrl = `${edge.url}/?history=${HISTORY_PAGE}`;

    userDataDir = mkdtempSync(path.join(os.tmpdir(), "chat-browser-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
      viewport: { width: 1100, height: 800 },
    });
    context.setDefaultTimeout(WAIT);
    pages.alice = context.pages()[0] ?? (await context.newPage());
    pages.bob = await context.newPage();
    for (const [who, page] of Object.entries(pages)) {
      page.on("pageerror", (err) => pageErrors.push(`${who}: ${err.message}`));
      page.on("console", (msg) => msg.type() === "error" && pageErrors.push(`${who} console: ${msg.text()}`));
    }
  },
  { timeout: 120000 },
);

after(async () => {
  await context?.close().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});
after(() => shutdown());

/** A test that saves both pages as screenshots when it fails, and fails on any page error. */
function step(name, fn) {
  return test(name, { timeout: 60000 }, async () => {
    try {
      await fn();
      assert.deepEqual(pageErrors.splice(0), [], "the pages reported errors");
    } catch (err) {
      mkdirSync(ARTIFACTS, { recursive: true });
      const slug = name.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
      for (const [who, page] of Object.entries(pages)) {
        if (page.isClosed()) continue;
        const file = path.join(ARTIFACTS, `${slug}-${who}.png`);
        await page.screenshot({ path: file, fullPage: true, timeout: 5000 }).catch(() => {});
        console.error(`screenshot: ${file}`);
      }
      throw err;
    }
  });
}

// ---------------------------------------------------------------- page helpers

const person = (page, name) => page.getByTestId(`person-${name}`);
const message = (page, text) => page.getByTestId("message").filter({ hasText: text });
const visible = (locator) => locator.waitFor({ state: "visible", timeout: WAIT });
const hidden = (locator) => locator.waitFor({ state: "hidden", timeout: WAIT });
/** Waits until locator is visible and contains text. */
const hasText = (locator, text) => visible(locator.filter({ hasText: text }));

async function login(page, name) {
  await page.goto(edgeUrl, { timeout: WAIT });
  await page.getByLabel("Your name").fill(name);
  await page.getByTestId("login-button").click();
  await hasText(page.getByTestId("connection"), "connected");
  await hasText(page.getByTestId("me-name"), name);
}

async function waitMessageCount(page, n) {
  await page.waitForFunction((count) => document.querySelectorAll('[data-testid="message"]').length === count, n, {
    timeout: WAIT,
  });
}

// ---------------------------------------------------------------- the story

step("alice and bob log in in two tabs and see each other online", async () => {
  const { alice, bob } = pages;
  await login(alice, "alice");
  await login(bob, "bob");
  await visible(alice.locator('[data-testid="person-bob"][data-status="online"]'));
  await visible(bob.locator('[data-testid="person-alice"][data-status="online"]'));
  // Default transports: long-polling first, then the WebSocket upgrade.
  await hasText(alice.getByTestId("transport"), "websocket");
  await hasText(bob.getByTestId("transport"), "websocket");
});

step("bob sees alice typing and her ghost text; the message arrives and gets read", async () => {
  const { alice, bob } = pages;
  await person(alice, "bob").getByRole("button").click();
  await hasText(alice.getByTestId("chat-title"), "bob");
  // bob opens the conversation by name (known to him from the online list)
  await bob.getByLabel("Chat with (user name)").fill("alice");
  await bob.getByTestId("open-button").click();
  await hasText(bob.getByTestId("chat-title"), "alice");

  await alice.getByLabel("Message", { exact: true }).pressSequentially("hello bo", { delay: 20 });
  await hasText(bob.getByTestId("typing-indicator"), "alice is typing");
  await hasText(bob.getByTestId("ghost-text"), "hello bo");

  await alice.getByLabel("Message", { exact: true }).pressSequentially("b");
  await alice.getByLabel("Message", { exact: true }).press("Enter");
  await visible(message(alice, "hello bob"));
  await visible(message(bob, "hello bob").and(bob.locator('[data-direction="in"]')));
  await hidden(bob.getByTestId("ghost-text"));
  await hidden(bob.getByTestId("typing-indicator"));
  // bob's tab shows the message: message:read, then the tick on alice's side
  await visible(message(alice, "hello bob").locator('[data-state="read"]'));
});

step("bob replies; alice sees it live and bob's message gets read", async () => {
  const { alice, bob } = pages;
  await bob.getByLabel("Message", { exact: true }).fill("hi alice");
  await bob.getByTestId("send-button").click();
  await visible(message(alice, "hi alice").and(alice.locator('[data-direction="in"]')));
  await visible(message(bob, "hi alice").locator('[data-state="read"]'));
  assert.equal(await alice.getByTestId("message").count(), 2);
});

step("alice records a voice note: bob sees recording…, gets it, plays it; alice sees him listening", async () => {
  const { alice, bob } = pages;
  const record = alice.getByTestId("record-button");
  await record.click();
  assert.equal(await record.getAttribute("aria-pressed"), "true");
  await hasText(bob.getByTestId("recording-indicator"), "alice is recording");
  await record.click(); // stop: the voice note is sent
  await hidden(bob.getByTestId("recording-indicator"));
  const note = bob.locator('[data-testid="message"][data-type="audio"]');
  await visible(note);
  await note.getByTestId("play-button").click();
  await hasText(alice.locator('[data-testid="message"][data-type="audio"]').getByTestId("listening"), "bob is listening");
});

step("bob goes away and comes back: alice sees his status", async () => {
  const { alice, bob } = pages;
  await bob.getByLabel("Status", { exact: true }).selectOption("away");
  await visible(alice.locator('[data-testid="person-bob"][data-status="away"]'));
  await hasText(alice.getByTestId("chat-status"), "away");
  await bob.getByLabel("Status", { exact: true }).selectOption("online");
  await visible(alice.locator('[data-testid="person-bob"][data-status="online"]'));
  await hasText(alice.getByTestId("chat-status"), "online");
});

step("after a reload alice finds the history oldest first, and older pages on demand", async () => {
  const { alice } = pages;
  for (const text of ["one", "two", "three", "four"]) {
    await alice.getByLabel("Message", { exact: true }).fill(text);
    await alice.getByLabel("Message", { exact: true }).press("Enter");
    await visible(message(alice, text).locator('[data-state="sent"], [data-state="read"]'));
  }
  await alice.reload({ timeout: WAIT }); // the tab keeps its user (sessionStorage)
  await hasText(alice.getByTestId("connection"), "connected");
  await person(alice, "bob").getByRole("button").click();
  await waitMessageCount(alice, HISTORY_PAGE);
  await alice.getByTestId("load-older").click();
  await waitMessageCount(alice, 7);
  const texts = (await alice.getByTestId("message-content").allTextContents()).map((t) => t.trim());
  assert.match(texts[2], /Voice note/);
  assert.deepEqual(texts.toSpliced(2, 1), ["hello bob", "hi alice", "one", "two", "three", "four"]);
  await hidden(alice.getByTestId("load-older"));
  // the read receipt survives the reload (readAt from history)
  await visible(message(alice, "hello bob").locator('[data-state="read"]'));
});

step("bob closes his tab: alice sees him offline with a last-seen time", async () => {
  const { alice, bob } = pages;
  await bob.close();
  await visible(alice.locator('[data-testid="person-bob"][data-status="offline"]'));
  await hasText(alice.getByTestId("chat-status"), "last seen");
});

/* The demo page. Dev login (POST /dev/login) or a pasted token, then one
 * socket.io-client connection with its default transports (long-polling, then
 * the WebSocket upgrade) and a small handler for each event of the README's
 * table. Plain browser JavaScript, no build step, no framework: `io` is the
 * global of the stock socket.io-client bundle. Everything shown comes from the
 * server; text is always inserted as text, never as HTML. */
"use strict";

const params = new URLSearchParams(location.search);
const HISTORY_PAGE = Math.min(100, Math.max(1, Number(params.get("history")) || 30)); // ?history=N for demos
const ACK_TIMEOUT_MS = 10000; // an unacknowledged send is shown as failed (and can be retried)
const TYPING_IDLE_MS = 1500; // typing:stop after this long without a key
const GHOST_THROTTLE_MS = 150; // at most one ghost:typing per this period (the last text always goes)
const GHOST_MAX_CHARS = 500; // code points: stays under the edge's 2000-byte ghost limit
const SIGNAL_EXPIRE_MS = 8000; // a typing/recording indicator whose stop was lost goes away
const FAKE_PLAY_MS = 4000; // the fake audio player "plays" this long

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// ---------------------------------------------------------------- state

const state = {
  me: null, // {token, userId, username}
  socket: null,
  myStatus: "online",
  people: new Map(), // userId -> {userId, username, status, lastSeen}
  convs: new Map(), // contact userId -> conversation (below)
  byId: new Map(), // message id -> message, across conversations
  unread: new Map(), // contact userId -> count
  signals: new Map(), // contact userId -> {typing, recording, ghost, timers}
  contactId: null, // the open conversation
};

/** A conversation: its messages (ordered when rendered) and the history cursor. */
function conv(contactId) {
  let c = state.convs.get(contactId);
  if (!c) {
    c = { messages: [], byClientId: new Map(), oldestId: null, hasMore: false, loading: false };
    state.convs.set(contactId, c);
  }
  return c;
}

const contactOf = (m) => (m.senderId === state.me.userId ? m.recipientId : m.senderId);
const nameOf = (userId) => state.people.get(userId)?.username ?? userId.slice(0, 8);

// ---------------------------------------------------------------- small helpers

function randomId() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const b = crypto.getRandomValues(new Uint8Array(16));
  return "c-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function timeOf(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
}

function lastSeenText(p) {
  if (p.status === "online") return "online";
  const status = p.status === "away" ? "away" : "offline";
  if (!p.lastSeen) return p.status === "away" ? "away" : "offline, never seen";
  return `${status} · last seen ${new Date(p.lastSeen).toLocaleString([], { dateStyle: "short", timeStyle: "short" })}`;
}

let noticeTimer = null;
function notice(text, { sticky = false } = {}) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
  clearTimeout(noticeTimer);
  if (text && !sticky) noticeTimer = setTimeout(() => (n.hidden = true), 6000);
}

/** Signals are best-effort: dropped while disconnected rather than queued (volatile). */
function signal(event, payload) {
  if (state.socket?.connected) state.socket.volatile.emit(event, payload);
}

/** The contacts this user has talked to, kept per user in localStorage for presence:request. */
const contactsKey = () => `chat-demo:contacts:${state.me.userId}`;
function knownContacts() {
  try {
    return JSON.parse(localStorage.getItem(contactsKey())) ?? [];
  } catch {
    return [];
  }
}
function rememberContact(userId) {
  const ids = [userId, ...knownContacts().filter((id) => id !== userId)].slice(0, 100);
  localStorage.setItem(contactsKey(), JSON.stringify(ids));
}

// ---------------------------------------------------------------- login

async function devLogin(username) {
  const res = await fetch("/dev/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username }),
  });
  if (res.status === 404) throw new Error("dev login is off on this server (EDGE_DEV_LOGIN=1 with a dev- JWT secret turns it on)");
  if (!res.ok) throw new Error((await res.json().catch(() => null))?.error ?? `login failed (HTTP ${res.status})`);
  return res.json();
}

function start(me) {
  if (typeof io !== "function") {
    return notice("The socket.io-client bundle did not load: run `npm ci` in web/ (scripts/deps.sh does it).", { sticky: true });
  }
  state.me = me;
  sessionStorage.setItem("chat-demo:login", JSON.stringify(me)); // per tab: two tabs, two users
  $("login-form").hidden = true;
  $("me").hidden = false;
  $("app").hidden = false;
  $("me-name").textContent = me.username;
  connect();
}

function logout(message = "") {
  state.socket?.disconnect();
  sessionStorage.removeItem("chat-demo:login");
  if (message) sessionStorage.setItem("chat-demo:notice", message);
  location.reload();
}

// ---------------------------------------------------------------- connection

function connect() {
  const socket = io({ auth: { token: state.me.token } }); // same origin, default transports
  state.socket = socket;

  socket.on("connect", () => {
    setConnection("connected");
    const transport = () => ($("transport").textContent = socket.io.engine.transport.name);
    transport();
    socket.io.engine.on("upgrade", transport);
    const contacts = knownContacts();
    if (contacts.length) socket.emit("presence:request", contacts, (res) => res?.ok && res.users.forEach(upsertPerson));
    if (state.contactId) loadHistory(state.contactId, { newest: true }); // catch up after a reconnect
  });
  socket.on("disconnect", () => setConnection("disconnected"));
  socket.on("connect_error", (err) => {
    if (err.message === "unauthorized") return logout("Your token was refused (expired or signed with another secret): log in again.");
    setConnection("connecting…");
  });

  socket.on("presence:update", (list) => list.forEach(upsertPerson));
  socket.on("presence:response", (list) => list.forEach(upsertPerson));
  socket.on("user:status", upsertPerson);

  socket.on("message:received", (m) => addMessage(m));
  socket.on("message:sent", (m) => addMessage(m)); // from this tab or another tab of mine
  socket.on("message:read", ({ messageId, readAt }) => {
    const m = state.byId.get(messageId);
    if (m) {
      m.readAt = readAt;
      renderMessage(m);
    }
  });

  socket.on("typing:start", ({ userId, username }) => {
    if (username && !state.people.has(userId)) upsertPerson({ userId, username, status: "online", lastSeen: null });
    setSignal(userId, "typing", true);
  });
  socket.on("typing:stop", ({ userId }) => setSignal(userId, "typing", false));
  socket.on("ghost:typing", ({ userId, text }) => setSignal(userId, "ghost", text));
  socket.on("audio:recording:start", ({ userId }) => setSignal(userId, "recording", true));
  socket.on("audio:recording:stop", ({ userId }) => setSignal(userId, "recording", false));
  socket.on("audio:listening", ({ userId, messageId, isPlaying }) => {
    const m = state.byId.get(messageId);
    if (m) {
      m.listening = isPlaying ? userId : null;
      renderMessage(m);
    }
  });

  socket.on("chat:error", ({ event, code, message }) => notice(`${event}: ${code} (${message})`));
}

function setConnection(text) {
  const c = $("connection");
  c.textContent = text;
  c.classList.toggle("connected", text === "connected");
  updateComposer();
}

/** The composer works while connected with a conversation open. */
function updateComposer() {
  const off = !state.socket?.connected || !state.contactId;
  for (const id of ["message-input", "send-button", "record-button"]) $(id).disabled = off;
}

// ---------------------------------------------------------------- people

function upsertPerson(p) {
  if (!p?.userId || !p.username) return; // username null: an unknown user
  if (p.userId === state.me.userId) {
    state.myStatus = p.status;
    $("status-select").value = p.status;
    return;
  }
  state.people.set(p.userId, { ...state.people.get(p.userId), ...p });
  renderPeople();
  if (p.userId === state.contactId) renderChatHead();
}

const STATUS_ORDER = { online: 0, away: 1, offline: 2 };

function renderPeople() {
  const people = [...state.people.values()].sort(
    (a, b) => (STATUS_ORDER[a.status] ?? 3) - (STATUS_ORDER[b.status] ?? 3) || a.username.localeCompare(b.username),
  );
  $("people").replaceChildren(
    ...people.map((p) => {
      const unread = state.unread.get(p.userId) ?? 0;
      const button = el(
        "button",
        { type: "button", className: "person", onclick: () => openContact(p.userId) },
        el("span", { className: `dot ${p.status}`, ariaHidden: "true" }),
        el("span", { className: "name" }, p.username),
        unread ? el("span", { className: "unread", title: `${unread} unread` }, String(unread)) : "",
        el("span", { className: "last-seen" }, lastSeenText(p)),
      );
      button.dataset.testid = "person-button";
      if (p.userId === state.contactId) button.setAttribute("aria-current", "true");
      const li = el("li", {}, button);
      Object.assign(li.dataset, { testid: `person-${p.username}`, userId: p.userId, status: p.status });
      return li;
    }),
  );
  $("people-empty").hidden = people.length > 0;
}

// ---------------------------------------------------------------- conversations

function openContact(userId) {
  if (state.contactId === userId) return;
  leaveContact();
  state.contactId = userId;
  state.unread.delete(userId);
  rememberContact(userId);
  renderPeople();
  renderChatHead();
  renderMessages();
  renderSignals();
  updateComposer();
  state.socket.emit("presence:request", [userId]);
  if (!conv(userId).oldestId) loadHistory(userId, { newest: true });
  $("message-input").focus();
}

/** Before switching away: the contact must not keep seeing us type or record. */
function leaveContact() {
  if (!state.contactId) return;
  stopTyping();
  if (recording) toggleRecording({ send: false });
  if ($("message-input").value) sendGhost(state.contactId, "", { now: true });
  $("message-input").value = "";
}

function renderChatHead() {
  const p = state.people.get(state.contactId);
  $("chat-title").textContent = p ? p.username : "Pick someone to chat with";
  $("chat-status").textContent = p ? lastSeenText(p) : "";
  $("chat-status").dataset.status = p?.status ?? "";
}

/**
 * message:history with an ack: newest first from the server, shown oldest
 * first. newest: the latest page (first open, or a catch-up after a
 * reconnect); otherwise the page before the oldest message we have.
 */
function loadHistory(contactId, { newest = false } = {}) {
  const c = conv(contactId);
  if (c.loading) return;
  c.loading = true;
  const query = { withUserId: contactId, limit: HISTORY_PAGE };
  if (!newest) query.before = c.oldestId;
  state.socket.timeout(ACK_TIMEOUT_MS).emit("message:history", query, (err, res) => {
    c.loading = false;
    if (err || !res?.ok) return notice(`history: ${err ? "no answer" : res?.error?.message ?? "refused"}`);
    const page = res.messages;
    if (!newest || !c.oldestId) {
      if (page.length) c.oldestId = page[page.length - 1].id;
      c.hasMore = page.length === HISTORY_PAGE;
    }
    for (const m of page) addMessage(m, { fromHistory: true });
    if (contactId === state.contactId) $("load-older").hidden = !c.hasMore;
  });
}

const asked = new Set(); // unknown senders whose name was requested

/** Adds or updates a server message (history, ack, message:sent, message:received); drops duplicates. */
function addMessage(m, { fromHistory = false } = {}) {
  const contactId = contactOf(m);
  const c = conv(contactId);
  const mine = m.senderId === state.me.userId;
  let msg = state.byId.get(m.id) ?? (mine && m.clientMessageId ? c.byClientId.get(m.clientMessageId) : undefined);
  const isNew = !msg;
  if (isNew) {
    msg = {};
    c.messages.push(msg);
  }
  Object.assign(msg, m, { failed: false });
  state.byId.set(msg.id, msg);
  if (mine && msg.clientMessageId) c.byClientId.set(msg.clientMessageId, msg);
  if (!state.people.has(contactId) && !asked.has(contactId)) {
    asked.add(contactId);
    state.socket.emit("presence:request", [contactId]); // learn the name: presence:response
  }
  if (isNew && !mine && !fromHistory) {
    rememberContact(contactId);
    setSignal(contactId, "ghost", ""); // the text became a message
    setSignal(contactId, "typing", false);
    if (contactId !== state.contactId) {
      state.unread.set(contactId, (state.unread.get(contactId) ?? 0) + 1);
      renderPeople();
    }
  }
  if (contactId === state.contactId) renderMessage(msg);
}

function sortKey(m) {
  return m.createdAt ?? "9999"; // pending messages last
}

function renderMessages() {
  readObserver.disconnect();
  const list = $("messages");
  list.replaceChildren();
  if (!state.contactId) return;
  const c = conv(state.contactId);
  for (const m of [...c.messages].sort((a, b) => sortKey(a).localeCompare(sortKey(b)))) {
    m.el = null;
    renderMessage(m);
  }
  $("load-older").hidden = !c.hasMore;
  list.scrollTop = list.scrollHeight;
}

/** Creates or updates the element of one message of the open conversation, in createdAt order. */
function renderMessage(m) {
  if (contactOf(m) !== state.contactId) return;
  const list = $("messages");
  const mine = m.senderId === state.me.userId;
  const li = m.el ?? el("li", { className: `message ${mine ? "out" : "in"}` });
  li.dataset.testid = "message";
  li.dataset.direction = mine ? "out" : "in";
  li.dataset.type = m.type;
  if (m.id) li.dataset.id = m.id;
  if (m.clientMessageId) li.dataset.clientMessageId = m.clientMessageId;

  const content = el("div", { className: "content" });
  if (m.type === "audio" && !mine) content.append(playButton(m));
  content.append(el("span", {}, m.content));
  content.dataset.testid = "message-content";
  const meta = el("div", { className: "meta" }, el("time", { dateTime: m.createdAt ?? "" }, timeOf(m.createdAt)));
  if (mine) {
    const s = m.failed ? "failed" : !m.id ? "sending" : m.readAt ? "read" : "sent";
    const label = { failed: "failed", sending: "sending…", sent: "✓ sent", read: "✓✓ read" }[s];
    const st = el("span", { className: `state ${s}`, title: m.readAt ? `read ${timeOf(m.readAt)}` : "" }, label);
    st.dataset.testid = "message-state";
    st.dataset.state = s;
    meta.append(st);
    if (m.failed) meta.append(el("button", { type: "button", className: "link", onclick: () => send(m) }, "retry"));
    if (m.listening) {
      const l = el("span", { className: "listening" }, `🔊 ${nameOf(m.listening)} is listening`);
      l.dataset.testid = "listening";
      meta.append(l);
    }
  }
  li.replaceChildren(content, meta);

  if (!m.el) {
    m.el = li;
    const key = sortKey(m);
    const next = [...list.children].find((x) => (x.dataset.sort ?? "") > key);
    li.dataset.sort = key;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.insertBefore(li, next ?? null);
    if (!next && (atBottom || mine)) list.scrollTop = list.scrollHeight;
  } else if (li.dataset.sort !== sortKey(m)) {
    li.dataset.sort = sortKey(m); // a pending message got its createdAt; it stays where it is
  }
  if (!mine && !m.readAt && !m.readSent) readObserver.observe(li);
}

// ---------------------------------------------------------------- read receipts

/** message:read once a received message is on screen in a visible tab. */
const onScreen = new Set(); // elements of unread received messages currently in view
const readObserver = new IntersectionObserver(
  (entries) => {
    for (const e of entries) e.isIntersecting ? onScreen.add(e.target) : onScreen.delete(e.target);
    flushReads();
  },
  { root: $("messages"), threshold: 0.5 },
);
document.addEventListener("visibilitychange", flushReads);

function flushReads() {
  if (document.visibilityState !== "visible" || !state.socket?.connected) return;
  for (const li of onScreen) {
    const m = state.byId.get(li.dataset.id);
    onScreen.delete(li);
    readObserver.unobserve(li);
    if (!m || m.readAt || m.readSent) continue;
    m.readSent = true;
    state.socket.emit("message:read", { messageId: m.id, senderId: m.senderId });
  }
}

// ---------------------------------------------------------------- sending

/** message:send with an ack and a clientMessageId: a retry can never store it twice. */
function send(msg) {
  msg.failed = false;
  renderMessage(msg);
  const { recipientId, content, type, clientMessageId } = msg;
  state.socket.timeout(ACK_TIMEOUT_MS).emit("message:send", { recipientId, content, type, clientMessageId }, (err, res) => {
    if (!err && res?.ok) return addMessage(res.message);
    msg.failed = true;
    renderMessage(msg);
    notice(`message not sent: ${err ? "no answer from the server" : res?.error?.message ?? "refused"}`);
  });
}

function sendNew(content, type = "text") {
  const contactId = state.contactId;
  const c = conv(contactId);
  const msg = { senderId: state.me.userId, recipientId: contactId, content, type, clientMessageId: randomId(), createdAt: null, readAt: null };
  c.messages.push(msg);
  c.byClientId.set(msg.clientMessageId, msg);
  rememberContact(contactId);
  send(msg);
}

// ---------------------------------------------------------------- typing and ghost text

let typingTo = null;
let typingTimer = null;

function onInput() {
  const to = state.contactId;
  if (!to) return;
  if (typingTo !== to) {
    stopTyping();
    typingTo = to;
    signal("typing:start", { recipientId: to });
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  sendGhost(to, $("message-input").value);
}

function stopTyping() {
  clearTimeout(typingTimer);
  if (typingTo) signal("typing:stop", { recipientId: typingTo });
  typingTo = null;
}

const ghost = { last: 0, timer: null, next: null };

/** Throttled ghost:typing (leading and trailing): the contact always ends with our latest text. */
function sendGhost(to, text, { now = false } = {}) {
  ghost.next = { recipientId: to, text: Array.from(text).slice(-GHOST_MAX_CHARS).join("") };
  const wait = GHOST_THROTTLE_MS - (Date.now() - ghost.last);
  if (now || wait <= 0) flushGhost();
  else ghost.timer ??= setTimeout(flushGhost, wait);
}

function flushGhost() {
  clearTimeout(ghost.timer);
  ghost.timer = null;
  if (!ghost.next) return;
  signal("ghost:typing", ghost.next);
  ghost.next = null;
  ghost.last = Date.now();
}

/** What a contact is doing right now: typing, recording, ghost text (expire if the stop is lost). */
function setSignal(userId, kind, value) {
  const s = state.signals.get(userId) ?? { typing: false, recording: false, ghost: "", timers: {} };
  state.signals.set(userId, s);
  s[kind] = value;
  clearTimeout(s.timers[kind]);
  if (value && kind !== "ghost") s.timers[kind] = setTimeout(() => setSignal(userId, kind, false), SIGNAL_EXPIRE_MS);
  if (userId === state.contactId) renderSignals();
}

function renderSignals() {
  const s = state.signals.get(state.contactId) ?? {};
  const name = state.contactId ? nameOf(state.contactId) : "";
  const show = (id, on, text) => {
    $(id).hidden = !on;
    $(id).textContent = on ? text : "";
  };
  show("typing-indicator", s.typing, `${name} is typing…`);
  show("recording-indicator", s.recording, `${name} is recording…`);
  show("ghost-text", !!s.ghost, s.ghost);
}

// ---------------------------------------------------------------- audio (simulated)

let recording = null; // {to, started}

/** The record button: audio:recording:start/stop; stopping sends a (fake) voice note. */
function toggleRecording({ send = true } = {}) {
  const b = $("record-button");
  if (!recording) {
    recording = { to: state.contactId, started: Date.now() };
    signal("audio:recording:start", { recipientId: recording.to });
  } else {
    signal("audio:recording:stop", { recipientId: recording.to });
    const seconds = Math.max(1, Math.round((Date.now() - recording.started) / 1000));
    if (send && recording.to === state.contactId) sendNew(`🎤 Voice note (${seconds} s)`, "audio");
    recording = null;
  }
  b.setAttribute("aria-pressed", String(!!recording));
  b.textContent = recording ? "■ Stop and send" : "🎤 Record";
}

/** A fake player for received voice notes: tells the sender we listen (audio:listening). */
function playButton(m) {
  const b = el("button", { type: "button", className: "play" }, m.playing ? "■ Stop" : "▶ Play");
  b.dataset.testid = "play-button";
  b.setAttribute("aria-label", m.playing ? "Stop the voice note" : "Play the voice note");
  b.onclick = () => setPlaying(m, !m.playing);
  return b;
}

function setPlaying(m, playing) {
  if (m.playing === playing) return;
  m.playing = playing;
  clearTimeout(m.playTimer);
  if (playing) m.playTimer = setTimeout(() => setPlaying(m, false), FAKE_PLAY_MS);
  signal("audio:listening", { messageId: m.id, senderId: m.senderId, isPlaying: playing });
  renderMessage(m);
}

// ---------------------------------------------------------------- wiring

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = $("login-button");
  button.disabled = true;
  try {
    start(await devLogin($("username").value.trim()));
    notice("");
  } catch (err) {
    notice(err.message, { sticky: true });
  } finally {
    button.disabled = false;
  }
});

$("logout-button").addEventListener("click", () => logout());

$("status-select").addEventListener("change", (e) => {
  state.socket.emit("presence:update", { status: e.target.value });
});

$("open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("contact-name").value.trim();
  const match = [...state.people.values()].filter((p) => p.username === name || p.username.toLowerCase() === name.toLowerCase());
  const p = match.find((x) => x.username === name) ?? match[0];
  if (!p) return notice(`Nobody called "${name}" is online or was seen in this session.`);
  $("contact-name").value = "";
  openContact(p.userId);
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || !state.contactId) return;
  input.value = "";
  stopTyping();
  sendGhost(state.contactId, "", { now: true }); // the ghost text became a message
  sendNew(text);
});

$("message-input").addEventListener("input", onInput);
$("message-input").addEventListener("blur", stopTyping);
$("record-button").addEventListener("click", () => toggleRecording());
$("load-older").addEventListener("click", () => loadHistory(state.contactId));

// A reload keeps this tab's user (sessionStorage is per tab).
const saved = sessionStorage.getItem("chat-demo:login");
const pendingNotice = sessionStorage.getItem("chat-demo:notice");
sessionStorage.removeItem("chat-demo:notice");
if (pendingNotice) notice(pendingNotice, { sticky: true });
if (saved) start(JSON.parse(saved));
else $("username").focus();

/* The demo page as a small product. Sign in with the dev login (POST /dev/login, when the server
 * offers it) or a pasted token; then one socket.io-client connection with its default transports
 * (long-polling, then the WebSocket upgrade) and a handler for each event of the README's table.
 * Left: a search box, the conversations (conversation:list: latest first, last message, unread
 * count) and who is online; right: the open conversation (message:history, day separators, ticks:
 * ✓ sent = the ack, ✓✓ read = message:read), typing, ghost text, recording, listening. Reading a
 * conversation is one conversation:read. A banner says when the connection is lost; socket.io-client
 * reconnects by itself and the session recovers what was missed (socket.recovered), or the page
 * reloads the list and the open conversation when it could not. Plain browser JavaScript, no build
 * step: `io` is the global of the stock bundle. Text from the server is inserted as text, never HTML. */
"use strict";

const params = new URLSearchParams(location.search);
const HISTORY_PAGE = Math.min(100, Math.max(1, Number(params.get("history")) || 30)); // ?history=N for demos
const CONV_PAGE = 30; // conversation:list page
const ACK_TIMEOUT_MS = 10000; // an unacknowledged send is shown as failed (and can be retried)
const TYPING_IDLE_MS = 1500; // typing:stop after this long without a key
const GHOST_THROTTLE_MS = 150; // at most one ghost:typing per this period (the last text always goes)
const GHOST_MAX_CHARS = 500; // code points: stays under the edge's 2000-byte ghost limit
const SIGNAL_EXPIRE_MS = 8000; // a typing/recording indicator whose stop was lost goes away
const FAKE_PLAY_MS = 4000; // the fake audio player "plays" this long
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
};
const testid = (node, id) => ((node.dataset.testid = id), node);

// ---------------------------------------------------------------- state

const state = {
  me: null, // {token, userId, username}
  socket: null,
  people: new Map(), // userId -> {userId, username, status, lastSeen}
  convs: new Map(), // other user's id -> conversation (below)
  byId: new Map(), // message id -> message, across conversations
  signals: new Map(), // other user's id -> {typing, recording, ghost, timers}
  contactId: null, // the open conversation
  listCursor: null, // conversation:list's nextBefore: older conversations to fetch
  everConnected: false,
};

/** A conversation: its messages, the history cursor, the list's fields. */
function conv(contactId) {
  let c = state.convs.get(contactId);
  if (!c) {
    c = { id: contactId, messages: [], byClientId: new Map(), oldestId: null, hasMore: false, loading: false,
      historyLoaded: false, last: null, unread: 0, listed: false };
    state.convs.set(contactId, c);
  }
  return c;
}

const contactOf = (m) => (m.senderId === state.me.userId ? m.recipientId : m.senderId);
const nameOf = (userId) => state.people.get(userId)?.username || (userId === state.me?.userId ? state.me.username : userId.slice(0, 8));

// ---------------------------------------------------------------- small helpers

function randomId() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const b = crypto.getRandomValues(new Uint8Array(16));
  return "c-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const dayKey = (iso) => {
  const d = new Date(iso);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
};
const timeOf = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "");

function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(iso) === dayKey(today.toISOString())) return "Today";
  if (dayKey(iso) === dayKey(yesterday.toISOString())) return "Yesterday";
  const sameYear = d.getFullYear() === today.getFullYear();
  return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", ...(sameYear ? {} : { year: "numeric" }) });
}

/** The list's time: today hh:mm, this week the weekday, else the date. */
function whenOf(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const age = Date.now() - d.getTime();
  if (dayKey(iso) === dayKey(new Date().toISOString())) return timeOf(iso);
  if (age < 6 * 86400000) return d.toLocaleDateString([], { weekday: "short" });
  return d.toLocaleDateString([], { day: "numeric", month: "short" });
}

function lastSeenText(p) {
  if (!p) return "";
  if (p.status === "online") return "online";
  if (!p.lastSeen) return p.status === "away" ? "away" : "offline";
  const when = new Date(p.lastSeen).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  return `${p.status === "away" ? "away" : "offline"} · last seen ${when}`;
}

function hue(userId) {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function avatar(userId, name, { status, small = false } = {}) {
  const a = el("span", { className: `avatar${small ? " small" : ""}`, ariaHidden: "true" }, (Array.from(name || "?")[0] ?? "?").toUpperCase());
  a.style.setProperty("--hue", String(hue(userId)));
  if (status) a.append(el("span", { className: `dot ${status}` }));
  return a;
}

let noticeTimer = null;
function notice(text, { sticky = false } = {}) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
  clearTimeout(noticeTimer);
  if (text && !sticky) noticeTimer = setTimeout(() => (n.hidden = true), 6000);
}

let bannerTimer = null;
/** The connection banner: kind "down" stays until replaced, "ok" goes away by itself. */
function banner(text, kind = "down") {
  const b = $("banner");
  clearTimeout(bannerTimer);
  b.textContent = text;
  b.hidden = !text;
  b.className = `banner ${kind}`;
  b.dataset.kind = text ? kind : "";
  if (text && kind === "ok") bannerTimer = setTimeout(() => ((b.hidden = true), (b.dataset.kind = "")), 3000);
}

/** Signals are best-effort: dropped while disconnected rather than queued (volatile). */
function signal(event, payload) {
  if (state.socket?.connected) state.socket.volatile.emit(event, payload);
}

// ---------------------------------------------------------------- sign-in

async function devLogin(username) {
  const res = await fetch("/dev/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username }),
  });
  if (res.status === 404) throw new Error("This server has no dev login: sign in with a token.");
  if (!res.ok) throw new Error((await res.json().catch(() => null))?.error ?? `sign-in failed (HTTP ${res.status})`);
  return res.json();
}

/** Whether the server offers the dev login: GET /dev/login answers {devLogin: true} when it does, 404 when not. */
async function devLoginOffered() {
  try {
    const res = await fetch("/dev/login", { cache: "no-store" });
    return res.ok && (await res.json()).devLogin === true;
  } catch {
    return false;
  }
}

/** The user a token names (its claims, unverified: the server verifies it). */
function fromToken(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("That is not a JWT (three parts separated by dots).");
  let claims;
  try {
    claims = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=")));
  } catch {
    throw new Error("The token's claims could not be read.");
  }
  const userId = claims.sub ?? claims.userId;
  if (typeof userId !== "string" || !UUID.test(userId)) throw new Error("The token has no user id (sub).");
  return { token, userId: userId.toLowerCase(), username: typeof claims.username === "string" ? claims.username : "" };
}

function signinError(text) {
  $("signin-notice").textContent = text;
  $("signin-notice").hidden = !text;
}

async function showSignin(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  signinError(message);
  const offered = await devLoginOffered();
  $("login-form").hidden = !offered;
  $("devlogin-off").hidden = offered;
  $("token-box").open = !offered;
  (offered ? $("username") : $("token-input")).focus();
}

function start(me) {
  if (typeof io !== "function") {
    return signinError("The socket.io-client bundle did not load: run `npm ci` in web/ (scripts/deps.sh does it).");
  }
  state.me = me;
  sessionStorage.setItem("chat-demo:login", JSON.stringify(me)); // per tab: two tabs, two users
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = me.username || me.userId.slice(0, 8);
  $("me-avatar").replaceWith(Object.assign(avatar(me.userId, me.username, { small: true }), { id: "me-avatar" }));
  render();
  connect();
}

function logout(message = "") {
  state.socket?.disconnect();
  sessionStorage.removeItem("chat-demo:login");
  if (message) sessionStorage.setItem("chat-demo:notice", message);
  location.reload();
}

// ---------------------------------------------------------------- connection

function setConnection(text, cls = "") {
  $("connection").textContent = text;
  $("connection").className = `connection ${cls}`;
  $("app").classList.toggle("down", cls === "down"); // who is online is not known meanwhile: greyed
}

function connect() {
  // Same origin, default transports; reconnection is on by default (1 s, then up to 3 s apart).
  const socket = io({ auth: { token: state.me.token }, reconnectionDelayMax: 3000 });
  state.socket = socket;

  socket.on("connect", () => {
    attempt = 0;
    setConnection("connected", "connected");
    const transport = () => ($("transport").textContent = socket.io.engine.transport.name);
    transport();
    socket.io.engine.on("upgrade", transport);
    if (!state.everConnected) {
      state.everConnected = true;
      loadConversations({ first: true });
    } else if (socket.recovered) {
      // Every message, sent event and receipt missed meanwhile came first, once (connection state recovery).
      banner("Back online — nothing was missed.", "ok");
    } else {
      banner("Back online.", "ok");
      loadConversations({ first: true }); // a new session: what changed meanwhile is in the list and history
      if (state.contactId) loadHistory(state.contactId, { newest: true });
    }
    askPresence();
    markRead();
  });
  socket.on("disconnect", (reason) => {
    if (reason === "io client disconnect") return; // signing out
    setConnection("reconnecting…", "down");
    attempt = 0;
    banner(lost());
    if (reason === "io server disconnect") socket.connect(); // the server ended the session (token expiry): try again
  });
  let attempt = 0;
  const lost = () => (navigator.onLine ? "Connection lost — reconnecting" : "You are offline — reconnecting when the network is back") + (attempt > 1 ? ` (attempt ${attempt})…` : "…");
  socket.io.on("reconnect_attempt", (n) => {
    attempt = n;
    banner(lost());
  });
  socket.on("connect_error", (err) => {
    if (err.message === "unauthorized") return logout("The server refused your token (expired, or signed with another secret): sign in again.");
    setConnection("reconnecting…", "down");
    banner(state.everConnected ? lost() : "Cannot reach the server — retrying…");
  });

  socket.on("presence:update", (list) => list.forEach(upsertPerson));
  socket.on("presence:response", (list) => list.forEach(upsertPerson));
  socket.on("user:status", upsertPerson);

  socket.on("message:received", (m) => addMessage(m, { live: true }));
  socket.on("message:sent", (m) => addMessage(m, { live: true })); // from this tab or another tab of mine
  socket.on("message:read", ({ messageId, readAt }) => {
    const m = state.byId.get(messageId);
    if (!m) return;
    m.readAt = readAt;
    renderMessage(m);
    const c = state.convs.get(contactOf(m));
    if (c?.last?.id === messageId) (c.last.readAt = readAt), renderConversations();
  });

  socket.on("typing:start", ({ userId }) => setSignal(userId, "typing", true));
  socket.on("typing:stop", ({ userId }) => setSignal(userId, "typing", false));
  socket.on("ghost:typing", ({ userId, text }) => setSignal(userId, "ghost", text));
  socket.on("audio:recording:start", ({ userId }) => setSignal(userId, "recording", true));
  socket.on("audio:recording:stop", ({ userId }) => setSignal(userId, "recording", false));
  socket.on("audio:listening", ({ userId, messageId, isPlaying }) => {
    const m = state.byId.get(messageId);
    if (!m) return;
    m.listening = isPlaying ? userId : null;
    renderMessage(m);
  });
  socket.on("chat:error", (e) => notice(`${e.event}: ${e.message}`));
}

window.addEventListener("offline", () => state.socket && banner("You are offline — reconnecting when the network is back…"));
window.addEventListener("online", () => state.socket && !state.socket.connected && banner("Connection lost — reconnecting…"));

/** The names and statuses of everyone in the list (the online list has only who is online). */
function askPresence() {
  const ids = [...state.convs.keys()].filter((id) => id !== state.me.userId).slice(0, 500);
  if (ids.length && state.socket?.connected) state.socket.emit("presence:request", ids);
}

// ---------------------------------------------------------------- people and search

function upsertPerson(p) {
  const known = state.people.get(p.userId);
  state.people.set(p.userId, { ...known, ...p });
  render();
}

function searchTerm() {
  return $("search").value.trim();
}

/** Everyone the page knows, but me: the online list, presence answers, conversations. */
function knownPeople() {
  const ids = new Set([...state.people.keys(), ...state.convs.keys()]);
  ids.delete(state.me.userId);
  return [...ids].map((id) => ({ userId: id, username: nameOf(id), status: state.people.get(id)?.status ?? "offline" }));
}

let lookedUp = null; // the pasted id asked of presence
function runSearch() {
  const term = searchTerm();
  const results = $("search-results");
  const empty = $("search-empty");
  if (!term) {
    results.hidden = empty.hidden = true;
    return render();
  }
  if (UUID.test(term) && lookedUp !== term.toLowerCase() && state.socket?.connected) {
    lookedUp = term.toLowerCase();
    state.socket.timeout(5000).emit("presence:request", [lookedUp], (err, res) => {
      if (!err && res?.ok && res.users.length === 0 && searchTerm().toLowerCase() === lookedUp) {
        empty.textContent = "No user with that id has ever connected.";
        empty.hidden = false;
      }
    });
  }
  const t = term.toLowerCase();
  const found = knownPeople()
    .filter((p) => p.username.toLowerCase().includes(t) || p.userId === t)
    .sort((a, b) => a.username.localeCompare(b.username));
  results.replaceChildren(...found.map((p) => personRow(p, "result")));
  results.hidden = found.length === 0;
  empty.hidden = found.length > 0;
  if (!found.length) empty.textContent = `Nobody called “${term}” among the people this page knows (online now and your conversations). Paste a user id to look someone up.`;
}

function personRow(p, kind) {
  const person = state.people.get(p.userId) ?? p;
  const button = el(
    "button",
    { type: "button", className: "row", onclick: () => openContact(p.userId) },
    avatar(p.userId, person.username || p.username, { status: person.status }),
    el("span", { className: "body" }, el("span", { className: "line" }, el("span", { className: "name" }, person.username || p.username)),
      el("span", { className: "line" }, el("span", { className: "preview" }, lastSeenText(person)))),
  );
  const li = el("li", {}, button);
  Object.assign(li.dataset, { testid: kind === "result" ? `result-${person.username}` : `person-${person.username}`, userId: p.userId, status: person.status ?? "offline" });
  return li;
}

// ---------------------------------------------------------------- conversation list

/** conversation:list: the first page (again after a new session), or the next one. */
function loadConversations({ first = false } = {}) {
  if (!state.socket?.connected) return;
  const query = { limit: CONV_PAGE };
  if (!first && state.listCursor) query.before = state.listCursor;
  state.socket.timeout(ACK_TIMEOUT_MS).emit("conversation:list", query, (err, res) => {
    if (err || !res?.ok) return notice(`conversations: ${err ? "no answer" : res?.error?.message ?? "refused"}`);
    for (const item of res.conversations) {
      const c = conv(item.withUserId);
      c.listed = true;
      c.unread = item.unread;
      if (item.username && !state.people.get(item.withUserId)?.username)
        state.people.set(item.withUserId, { userId: item.withUserId, username: item.username, status: "offline", lastSeen: "", ...state.people.get(item.withUserId) });
      touch(c, item.lastMessage);
    }
    if (first || state.listCursor) state.listCursor = res.nextBefore;
    state.listLoaded = true;
    askPresence();
    render();
    if (state.contactId) markRead();
  });
}

/** A conversation's last message, when m is later than the one it has. */
function touch(c, m) {
  if (!m.createdAt) return;
  if (!c.last || m.createdAt > c.last.createdAt || (m.createdAt === c.last.createdAt && m.id >= c.last.id)) c.last = { ...m };
}

function previewOf(m) {
  const mine = m.senderId === state.me.userId;
  const text = m.type === "audio" ? "🎤 Voice note" : m.type === "image" ? "🖼 Image" : m.content.replace(/\s+/g, " ");
  return `${mine ? "You: " : ""}${text}`;
}

function renderConversations() {
  const list = [...state.convs.values()].filter((c) => c.last).sort((a, b) => (a.last.createdAt < b.last.createdAt ? 1 : a.last.createdAt > b.last.createdAt ? -1 : 0));
  $("conversations").replaceChildren(
    ...list.map((c) => {
      const p = state.people.get(c.id);
      const name = nameOf(c.id);
      const mine = c.last.senderId === state.me.userId;
      const tick = mine ? el("span", { className: `state ${c.last.readAt ? "read" : "sent"}` }, c.last.readAt ? "✓✓ " : "✓ ") : null;
      const button = el(
        "button",
        { type: "button", className: `row${c.unread ? " has-unread" : ""}`, onclick: () => openContact(c.id) },
        avatar(c.id, name, { status: p?.status ?? "offline" }),
        el("span", { className: "body" },
          el("span", { className: "line" }, el("span", { className: "name" }, name), el("time", { className: "when", dateTime: c.last.createdAt }, whenOf(c.last.createdAt))),
          el("span", { className: "line" }, tick, testid(el("span", { className: "preview" }, previewOf(c.last)), "preview"),
            c.unread ? testid(el("span", { className: "badge", title: `${c.unread} unread` }, c.unread > 99 ? "99+" : String(c.unread)), "unread-badge") : null)),
      );
      if (c.id === state.contactId) button.setAttribute("aria-current", "true");
      const li = el("li", {}, button);
      Object.assign(li.dataset, { testid: `conversation-${name}`, userId: c.id, unread: String(c.unread) });
      return li;
    }),
  );
  $("conversations-empty").hidden = list.length > 0 || !state.listLoaded;
  $("more-conversations").hidden = !state.listCursor;
}

const STATUS_ORDER = { online: 0, away: 1, offline: 2 };

function renderOnline() {
  const term = searchTerm().toLowerCase();
  const people = [...state.people.values()]
    .filter((p) => p.userId !== state.me.userId && (p.status === "online" || p.status === "away"))
    .filter((p) => !term || p.username.toLowerCase().includes(term))
    .sort((a, b) => (STATUS_ORDER[a.status] ?? 3) - (STATUS_ORDER[b.status] ?? 3) || a.username.localeCompare(b.username));
  $("online").replaceChildren(...people.map((p) => personRow(p, "online")));
  $("online-empty").hidden = people.length > 0 || !!term;
}

function render() {
  renderConversations();
  renderOnline();
  if (state.contactId) renderChatHead();
  if (searchTerm()) runSearchResultsOnly();
}

/** The search results again (names may have arrived), without asking the server. */
function runSearchResultsOnly() {
  const t = searchTerm().toLowerCase();
  const found = knownPeople().filter((p) => p.username.toLowerCase().includes(t) || p.userId === t).sort((a, b) => a.username.localeCompare(b.username));
  $("search-results").replaceChildren(...found.map((p) => personRow(p, "result")));
  $("search-results").hidden = found.length === 0;
  if (found.length) $("search-empty").hidden = true;
}

// ---------------------------------------------------------------- the open conversation

function openContact(userId) {
  if (state.contactId !== userId) {
    leaveContact();
    state.contactId = userId;
    $("messages").replaceChildren();
    renderMessages();
    renderSignals();
    if (!conv(userId).historyLoaded) loadHistory(userId, { newest: true });
    if (!state.people.has(userId)) state.socket?.emit("presence:request", [userId]);
  }
  $("layout").dataset.view = "chat";
  $("chat-empty").hidden = true;
  $("thread").hidden = false;
  $("composer").hidden = false;
  renderChatHead();
  renderConversations();
  markRead();
  if (matchMedia("(min-width: 40.01rem)").matches) $("message-input").focus();
}

function closeContact() {
  $("layout").dataset.view = "list";
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
  const id = state.contactId;
  const p = state.people.get(id);
  const name = nameOf(id);
  $("chat-title").textContent = id === state.me.userId ? `${name} (you)` : name;
  $("chat-status").textContent = id === state.me.userId ? "notes to yourself" : lastSeenText(p ?? { status: "offline" });
  $("chat-status").dataset.status = p?.status ?? "";
  const a = avatar(id, name, { status: p?.status ?? "offline" });
  a.id = "chat-avatar";
  $("chat-avatar").replaceWith(a);
}

/**
 * message:history with an ack: newest first from the server, shown oldest first. newest: the
 * latest page (first open, or a catch-up after a new session); otherwise the page before the
 * oldest message we have.
 */
function loadHistory(contactId, { newest = false } = {}) {
  const c = conv(contactId);
  if (c.loading || !state.socket?.connected) return;
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
    c.historyLoaded = true;
    const keep = !newest ? $("thread").scrollHeight - $("thread").scrollTop : null;
    for (const m of page) addMessage(m, { fromHistory: true });
    renderConversations();
    if (contactId === state.contactId) {
      renderMessages();
      if (keep !== null) $("thread").scrollTop = $("thread").scrollHeight - keep; // stay where the reader was
      markRead();
    }
  });
}

/** Adds or updates a server message (history, ack, message:sent, message:received); drops duplicates. */
function addMessage(m, { fromHistory = false, live = false } = {}) {
  const contactId = contactOf(m);
  const c = conv(contactId);
  const mine = m.senderId === state.me.userId;
  let msg = state.byId.get(m.id) ?? (mine && m.clientMessageId ? c.byClientId.get(m.clientMessageId) : undefined);
  const isNew = !msg;
  if (isNew) {
    msg = {};
    c.messages.push(msg);
  }
  const readAt = msg.readAt ?? null;
  Object.assign(msg, m, { failed: false });
  if (readAt && !m.readAt) msg.readAt = readAt; // a receipt that came before this copy
  state.byId.set(msg.id, msg);
  if (mine && msg.clientMessageId) c.byClientId.set(msg.clientMessageId, msg);
  touch(c, msg);
  if (isNew && live && !mine) {
    setSignal(contactId, "ghost", ""); // the text became a message
    setSignal(contactId, "typing", false);
    if (!msg.readAt) c.unread += 1;
  }
  if (!fromHistory) {
    if (contactId === state.contactId) (isNew ? insertMessage(msg) : renderMessage(msg)), markRead();
    renderConversations();
  }
}

function sortKey(m) {
  return m.createdAt ?? "9999"; // pending messages last
}

const ordered = (c) => [...c.messages].sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : sortKey(a) > sortKey(b) ? 1 : 0));

/** The whole open conversation again: day separators, then the bubbles in createdAt order. */
function renderMessages() {
  const list = $("messages");
  const id = state.contactId;
  if (!id) return;
  const c = conv(id);
  const items = [];
  let day = null;
  for (const m of ordered(c)) {
    const d = m.createdAt ? dayKey(m.createdAt) : day;
    if (d && d !== day) {
      items.push(testid(el("li", { className: "day", role: "separator" }, dayLabel(m.createdAt)), "day-separator"));
      day = d;
    }
    m.el = null;
    items.push(messageElement(m));
  }
  list.replaceChildren(...items);
  $("load-older").hidden = !c.hasMore;
  $("thread-empty").hidden = !c.historyLoaded || c.messages.length > 0;
  $("thread").scrollTop = $("thread").scrollHeight;
}

/** A new message of the open conversation: at its place, with a separator when it starts a day. */
function insertMessage(m) {
  const c = conv(state.contactId);
  const list = $("messages");
  const sorted = ordered(c);
  const i = sorted.indexOf(m);
  const prev = sorted[i - 1];
  if (i !== sorted.length - 1 || (m.createdAt && prev?.createdAt && dayKey(prev.createdAt) !== dayKey(m.createdAt)) || (!prev && m.createdAt)) {
    return renderMessages(); // not at the end, or a new day: simplest to lay it all out again
  }
  const thread = $("thread");
  const atBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 60;
  list.append(messageElement(m));
  $("thread-empty").hidden = true;
  if (atBottom || m.senderId === state.me.userId) thread.scrollTop = thread.scrollHeight;
}

function renderMessage(m) {
  const old = m.el;
  if (!old || contactOf(m) !== state.contactId) return;
  old.replaceWith(messageElement(m)); // which is m.el from now on
}

function messageElement(m) {
  const mine = m.senderId === state.me.userId;
  const content = testid(el("div", { className: "content" }), "message-content");
  if (m.type === "audio" && !mine) content.append(playButton(m));
  content.append(el("span", {}, m.content));
  const meta = el("div", { className: "meta" });
  if (m.listening && mine) meta.append(testid(el("span", { className: "listening" }, `🔊 ${nameOf(m.listening)} is listening`), "listening"));
  meta.append(el("time", { dateTime: m.createdAt ?? "" }, timeOf(m.createdAt)));
  if (mine) {
    const s = m.failed ? "failed" : !m.id ? "sending" : m.readAt ? "read" : "sent";
    const label = { failed: "not sent", sending: "🕓", sent: "✓", read: "✓✓" }[s];
    const title = { failed: "not sent", sending: "sending", sent: "sent", read: `read ${timeOf(m.readAt)}` }[s];
    const st = el("span", { className: `state ${s}`, title, ariaLabel: title }, label);
    st.dataset.testid = "message-state";
    st.dataset.state = s;
    meta.append(st);
    if (m.failed) meta.append(el("button", { type: "button", className: "link", onclick: () => send(m) }, "retry"));
  }
  const li = el("li", { className: `message ${mine ? "out" : "in"}` }, el("div", { className: "bubble" }, content, meta));
  li.dataset.testid = "message";
  li.dataset.direction = mine ? "out" : "in";
  li.dataset.type = m.type;
  if (m.id) li.dataset.id = m.id;
  m.el = li;
  return li;
}

// ---------------------------------------------------------------- reading

/**
 * The open conversation read, when this tab shows it: one conversation:read up to the newest
 * message received (the sender gets one message:read per message).
 */
function markRead() {
  const id = state.contactId;
  if (!id || document.visibilityState !== "visible" || !state.socket?.connected) return;
  if (matchMedia("(max-width: 40rem)").matches && $("layout").dataset.view !== "chat") return;
  const c = conv(id);
  const unread = c.messages.filter((m) => m.senderId === id && m.recipientId === state.me.userId && m.id && !m.readAt && !m.readSent);
  if (!unread.length && !c.unread) return;
  const upTo = c.last?.id ?? ordered(c).filter((m) => m.id).pop()?.id; // the newest message known
  c.unread = 0;
  renderConversations();
  if (!upTo) return;
  for (const m of unread) m.readSent = true;
  state.socket.timeout(ACK_TIMEOUT_MS).emit("conversation:read", { withUserId: id, upTo }, (err, res) => {
    if (err || !res?.ok) for (const m of unread) m.readSent = false; // tried again on the next look
  });
}
document.addEventListener("visibilitychange", markRead);

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
  insertMessage(msg);
  send(msg);
}

// ---------------------------------------------------------------- typing and ghost text

let typingTo = null;
let typingTimer = null;

function onInput() {
  const to = state.contactId;
  if (!to || to === state.me.userId) return;
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
  show("recording-indicator", s.recording, `${name} is recording a voice note…`);
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
  b.textContent = recording ? "■" : "🎤";
  b.title = recording ? "Stop and send the voice note" : "Record a voice note (simulated)";
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
    signinError("");
    start(await devLogin($("username").value.trim()));
  } catch (err) {
    signinError(err.message);
  } finally {
    button.disabled = false;
  }
});

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  try {
    signinError("");
    start(fromToken($("token-input").value.trim()));
  } catch (err) {
    signinError(err.message);
  }
});

$("logout-button").addEventListener("click", () => logout());
$("status-select").addEventListener("change", (e) => state.socket.emit("presence:update", { status: e.target.value }));
$("search").addEventListener("input", runSearch);
$("back-button").addEventListener("click", closeContact);
$("more-conversations").addEventListener("click", () => loadConversations());

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
if (saved) start(JSON.parse(saved));
else showSignin(pendingNotice ?? "");

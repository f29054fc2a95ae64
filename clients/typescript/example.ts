// A small front end written against chat.d.ts, type-checked by `make test`
// (tsc, strict). The @ts-expect-error lines are mistakes the declarations
// must catch: tsc fails if any of them compiles.
import { io, type Socket } from "socket.io-client";
import type { ClientToServerEvents, Conversation, Message, PresenceInfo, ServerToClientEvents } from "./chat";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io("http://127.0.0.1:3000", {
  auth: { token: "<an HS256 JWT>" },
});

const people = new Map<string, PresenceInfo>();
const lastSeenLabel = (p: PresenceInfo): string => `${p.username}, last seen ${new Date(p.lastSeen).toLocaleString()}`;

socket.on("presence:update", (online) => online.forEach((p) => people.set(p.userId, p)));
socket.on("user:status", (p) => {
  people.set(p.userId, p);
  console.log(lastSeenLabel(p));
});
socket.on("message:received", (m: Message) => {
  socket.emit("message:read", { messageId: m.id, senderId: m.senderId });
});
socket.on("message:read", ({ messageId, readAt }) => console.log(messageId, new Date(readAt)));
socket.on("ghost:typing", ({ userId, text }) => console.log(userId, text));
socket.on("chat:error", ({ event, code, message }) => console.warn(event, code, message));
socket.on("connect_error", (err) => console.warn(err.message));

export async function send(recipientId: string, content: string): Promise<Message | null> {
  const res = await socket.timeout(5000).emitWithAck("message:send", {
    recipientId,
    content,
    type: "text",
    clientMessageId: crypto.randomUUID(),
  });
  if (!res.ok) {
    // A send quota's rate_limited says when the next send may go.
    if (res.error.code === "rate_limited" && res.error.retryAfterMs !== undefined)
      console.warn(`try again in ${Math.ceil(res.error.retryAfterMs / 1000)} s`);
    else console.warn(res.error.code, res.error.message);
    return null;
  }
  return res.message;
}

export async function history(withUserId: string, before?: string): Promise<Message[]> {
  const res = await socket.emitWithAck("message:history", before ? { withUserId, before, limit: 50 } : { withUserId });
  return res.ok ? res.messages : [];
}

/** Every conversation, page after page (nextBefore is the cursor), each with its unread count. */
export async function allConversations(): Promise<Conversation[]> {
  const all: Conversation[] = [];
  let before: string | null = null;
  for (;;) {
    const query: { before: string | null; limit: number } = { before, limit: 50 };
    const res = await socket.emitWithAck("conversation:list", query);
    if (!res.ok) return all;
    all.push(...res.conversations);
    if (res.nextBefore === null) return all;
    before = res.nextBefore;
  }
}

/** Everything withUserId sent up to the latest message shown: read, one receipt each for the sender. */
export function readUpTo(withUserId: string, last: Message): void {
  socket.emit("conversation:read", { withUserId, upTo: last.id });
}

export async function whoIs(ids: string[]): Promise<PresenceInfo[]> {
  const res = await socket.emitWithAck("presence:request", ids);
  return res.ok ? res.users : [];
}

// ---- mistakes the declarations must refuse ----

socket.on("chat:error", (e) => {
  // @ts-expect-error retryAfterMs is there only with some rate_limited errors
  const wait: number = e.retryAfterMs;
  return wait;
});

socket.on("user:status", (p) => {
  // @ts-expect-error lastSeen is a string, never null
  const never: null = p.lastSeen;
  // @ts-expect-error username is a string
  const n: number = p.username;
  return [never, n];
});
// @ts-expect-error the content is required
socket.emit("message:send", { recipientId: "x", type: "text" });
// @ts-expect-error no such message type
socket.emit("message:send", { recipientId: "x", content: "hi", type: "video" });
// @ts-expect-error no such status
socket.emit("presence:update", { status: "busy" });
// @ts-expect-error no such server event
socket.on("message:deleted", () => {});
export async function wrong(): Promise<void> {
  const res = await socket.emitWithAck("message:history", { withUserId: "x" });
  // @ts-expect-error messages exist only when ok is true
  console.log(res.messages);
  const page = await socket.emitWithAck("conversation:list", {});
  // @ts-expect-error conversations exist only when ok is true
  console.log(page.conversations);
  if (page.ok) {
    // @ts-expect-error nextBefore may be null
    const cursor: string = page.nextBefore;
    // @ts-expect-error unread is a number
    const u: string = page.conversations[0].unread;
    console.log(cursor, u);
  }
}
// @ts-expect-error conversation:read needs upTo
socket.emit("conversation:read", { withUserId: "x" });

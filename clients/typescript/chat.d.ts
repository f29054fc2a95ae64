// Typed events of the chat backend for socket.io-client v4 front ends:
//
//   import { io, type Socket } from "socket.io-client";
//   import type { ServerToClientEvents, ClientToServerEvents } from "./chat";
//   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, { auth: { token } });
//
// The same contract as docs/schema/chat.schema.json (which the end-to-end
// tests check every payload against) and the README's event table.

/** A uuid, lowercase. */
export type Uuid = string;
/** ISO 8601 UTC with milliseconds, e.g. "2026-12-07T20:11:24.123Z". */
export type IsoTime = string;

export type MessageType = "text" | "audio" | "image";
export type Status = "online" | "away" | "offline";

export interface Message {
  id: Uuid;
  senderId: Uuid;
  recipientId: Uuid;
  content: string;
  type: MessageType;
  createdAt: IsoTime;
  /** null until the recipient reads it */
  readAt: IsoTime | null;
  /** only when the sender gave one (at most 64 bytes, unique per sender) */
  clientMessageId?: string;
}

export interface PresenceInfo {
  userId: Uuid;
  username: string;
  status: Status;
  /** online/away: when that change happened; offline: when the user was last connected. Never null. */
  lastSeen: IsoTime;
}

/** conversation:list's keyset: pass a page's nextBefore back as before. Opaque. */
export type Cursor = string;

/** One conversation of conversation:list. */
export interface Conversation {
  withUserId: Uuid;
  /** the other user's name as presence knows it; "" when that user never connected */
  username: string;
  /** the latest message between the two, either direction */
  lastMessage: Message;
  /** messages of withUserId to you not read yet */
  unread: number;
}

export type ErrorCode =
  | "bad_request"
  | "too_large"
  | "forbidden"
  | "not_found"
  | "unknown_event"
  | "unavailable"
  | "rate_limited";

export interface ChatError {
  code: ErrorCode;
  message: string;
  /** rate_limited from the message service (a send quota, a history limit): ms after which to try again */
  retryAfterMs?: number;
}

/** What every ack receives when the server refuses the event. */
export interface Refused {
  ok: false;
  error: ChatError;
}
export type Ack<T extends object = {}> = ({ ok: true } & T) | Refused;

/** What the server emits; a refusal of an event emitted without an ack arrives as chat:error. */
/**
 * The recoverable events (message:received, message:sent, message:read) carry
 * a last argument, their recovery offset, when the server has connection state
 * recovery on: socket.io-client keeps it and, after a drop, gets every one it
 * missed (socket.recovered === true). Handlers may ignore it.
 */
export type Offset = string;

export interface ServerToClientEvents {
  "message:received": (message: Message, offset?: Offset) => void;
  "message:sent": (message: Message, offset?: Offset) => void;
  "message:read": (receipt: { messageId: Uuid; readAt: IsoTime }, offset?: Offset) => void;
  "typing:start": (who: { userId: Uuid; username: string }) => void;
  "typing:stop": (who: { userId: Uuid }) => void;
  "ghost:typing": (draft: { userId: Uuid; text: string }) => void;
  "audio:recording:start": (who: { userId: Uuid }) => void;
  "audio:recording:stop": (who: { userId: Uuid }) => void;
  "audio:listening": (what: { userId: Uuid; messageId: Uuid; isPlaying: boolean }) => void;
  "user:status": (info: PresenceInfo) => void;
  /** on connect: everyone online (the socket's own user included) */
  "presence:update": (online: PresenceInfo[]) => void;
  /** the answer to presence:request: the users asked about that were ever seen, in request order */
  "presence:response": (users: PresenceInfo[]) => void;
  "chat:error": (error: { event: string } & ChatError) => void;
}

/** What a client emits; the ack (optional except for message:history and conversation:list) says how it went. */
export interface ClientToServerEvents {
  "message:send": (
    message: { recipientId: Uuid; content: string; type: MessageType; clientMessageId?: string },
    ack?: (res: Ack<{ message: Message }>) => void,
  ) => void;
  "message:read": (read: { messageId: Uuid; senderId: Uuid }, ack?: (res: Ack) => void) => void;
  "message:history": (
    query: { withUserId: Uuid; before?: Uuid; limit?: number },
    ack: (res: Ack<{ messages: Message[] }>) => void,
  ) => void;
  "typing:start": (to: { recipientId: Uuid }, ack?: (res: Ack) => void) => void;
  "typing:stop": (to: { recipientId: Uuid }, ack?: (res: Ack) => void) => void;
  "ghost:typing": (draft: { recipientId: Uuid; text: string }, ack?: (res: Ack) => void) => void;
  "audio:recording:start": (to: { recipientId: Uuid }, ack?: (res: Ack) => void) => void;
  "audio:recording:stop": (to: { recipientId: Uuid }, ack?: (res: Ack) => void) => void;
  "audio:listening": (
    what: { messageId: Uuid; senderId: Uuid; isPlaying: boolean },
    ack?: (res: Ack) => void,
  ) => void;
  "presence:update": (status: { status: Status }, ack?: (res: Ack) => void) => void;
  "presence:request": (userIds: Uuid[], ack?: (res: Ack<{ users: PresenceInfo[] }>) => void) => void;
  /** your conversations, the latest activity first; limit 1–50, default 20 */
  "conversation:list": (
    query: { before?: Cursor | null; limit?: number | null },
    ack: (res: Ack<{ conversations: Conversation[]; nextBefore: Cursor | null }>) => void,
  ) => void;
  /** marks read every message of withUserId to you up to and including upTo (a message of that conversation) */
  "conversation:read": (read: { withUserId: Uuid; upTo: Uuid }, ack?: (res: Ack) => void) => void;
}

/** The auth option of io(): an HS256 JWT (see the README). */
export interface ChatAuth {
  token: string;
}

/** connect_error's err.message: "unauthorized" or "too many connections". */
export type ConnectErrorMessage = "unauthorized" | "too many connections";

// The seed backend's socket handlers (shared/docs/seed-socket-handlers.md),
// written the way a typical team writes them: one process, socket.io rooms,
// in-memory presence maps (one socket per user), a pg pool and one INSERT per
// message. It is the baseline that bench/chatload measures next to the C
// services; it is deliberately not tuned (no batching, no acks, no cluster).
//   PORT, JWT_SECRET, DATABASE_URL (libpq-style URI)
import http from "node:http";
import jwt from "jsonwebtoken";
import pg from "pg";
import { Server } from "socket.io";

const PORT = Number(process.env.PORT || 3001);
const JWT_SECRET = process.env.JWT_SECRET;
if (!JWT_SECRET) {
  console.error("JWT_SECRET is required");
  process.exit(1);
}

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });

await pool.query(`
  CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY,
    username text NOT NULL,
    last_seen timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
  )`);
await pool.query(`
  CREATE TABLE IF NOT EXISTS messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sender_id uuid NOT NULL,
    recipient_id uuid NOT NULL,
    content text NOT NULL,
    type text NOT NULL DEFAULT 'text',
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at timestamptz
  )`);
await pool.query(
  "CREATE INDEX IF NOT EXISTS messages_conversation ON messages (sender_id, recipient_id, created_at)",
);

// In-memory presence store (per process only, as in the seed).
const userPresence = new Map(); // userId -> { userId, username, socketId, status, lastSeen }
const userSockets = new Map(); // userId -> socketId

function presenceInfo(p) {
  return { userId: p.userId, username: p.username, status: p.status, lastSeen: p.lastSeen };
}

function toMessage(row) {
  return {
    id: row.id,
    senderId: row.sender_id,
    recipientId: row.recipient_id,
    content: row.content,
    type: row.type,
    createdAt: row.created_at,
    readAt: row.read_at,
  };
}

const httpServer = http.createServer();
const io = new Server(httpServer, { cors: { origin: "*" } });

io.on("connection", (socket) => {
  let user;
  try {
    user = jwt.verify(socket.handshake.auth?.token, JWT_SECRET, { algorithms: ["HS256"] });
  } catch {
    socket.disconnect();
    return;
  }
  const userId = user.sub || user.userId;
  const username = user.username;

  socket.join(userId);
  userSockets.set(userId, socket.id);
  userPresence.set(userId, { userId, username, socketId: socket.id, status: "online", lastSeen: null });
  socket.broadcast.emit("user:status", { userId, username, status: "online", lastSeen: null });
  socket.emit(
    "presence:update",
    [...userPresence.values()].filter((p) => p.status !== "offline").map(presenceInfo),
  );

  socket.on("message:send", async ({ recipientId, content, type } = {}) => {
    try {
      const { rows } = await pool.query(
        "INSERT INTO messages (sender_id, recipient_id, content, type) VALUES ($1, $2, $3, $4) RETURNING *",
        [userId, recipientId, content, type || "text"],
      );
      const message = toMessage(rows[0]);
      io.to(recipientId).emit("message:received", message);
      socket.emit("message:sent", message);
    } catch (err) {
      console.error("message:send failed", err.message);
    }
  });

  socket.on("message:read", async ({ messageId, senderId } = {}) => {
    try {
      const { rows } = await pool.query(
        "UPDATE messages SET read_at = now() WHERE id = $1 AND recipient_id = $2 RETURNING read_at",
        [messageId, userId],
      );
      if (rows.length) io.to(senderId).emit("message:read", { messageId, readAt: rows[0].read_at });
    } catch (err) {
      console.error("message:read failed", err.message);
    }
  });

  socket.on("typing:start", ({ recipientId } = {}) => {
    socket.to(recipientId).emit("typing:start", { userId, username });
  });
  socket.on("typing:stop", ({ recipientId } = {}) => {
    socket.to(recipientId).emit("typing:stop", { userId });
  });
  socket.on("ghost:typing", ({ recipientId, text } = {}) => {
    socket.to(recipientId).emit("ghost:typing", { userId, text });
  });
  socket.on("audio:recording:start", ({ recipientId } = {}) => {
    socket.to(recipientId).emit("audio:recording:start", { userId });
  });
  socket.on("audio:recording:stop", ({ recipientId } = {}) => {
    socket.to(recipientId).emit("audio:recording:stop", { userId });
  });
  socket.on("audio:listening", ({ messageId, senderId, isPlaying } = {}) => {
    io.to(senderId).emit("audio:listening", { userId, messageId, isPlaying });
  });

  socket.on("presence:update", ({ status } = {}) => {
    const p = userPresence.get(userId);
    if (!p) return;
    p.status = status;
    io.emit("user:status", presenceInfo(p));
  });

  socket.on("presence:request", (userIds) => {
    const list = (Array.isArray(userIds) ? userIds : []).map(
      (id) => presenceInfo(userPresence.get(id) || { userId: id, username: null, status: "offline", lastSeen: null }),
    );
    socket.emit("presence:response", list);
  });

  socket.on("disconnect", async () => {
    const lastSeen = new Date().toISOString();
    userSockets.delete(userId);
    const p = userPresence.get(userId);
    if (p) {
      p.status = "offline";
      p.lastSeen = lastSeen;
    }
    socket.broadcast.emit("user:status", { userId, username, status: "offline", lastSeen });
    try {
      await pool.query("UPDATE users SET last_seen = $2 WHERE id = $1", [userId, lastSeen]);
    } catch (err) {
      console.error("lastSeen update failed", err.message);
    }
  });
});

httpServer.listen(PORT, "127.0.0.1", () => {
  console.log(`node-reference listening port=${PORT} pid=${process.pid}`);
});

function stop() {
  io.close();
  pool.end().finally(() => process.exit(0));
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

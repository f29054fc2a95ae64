/* subjects: every NATS subject of the product, with its payload (proto/chat.proto,
 * package chat.v1), who publishes and who subscribes. Keep this file and the
 * table in docs/architecture.md and README.md in step. */
#ifndef SUBJECTS_H
#define SUBJECTS_H

/* Delivery of an ephemeral signal (typing, ghost text, recording,
 * listening). Pub: edges. Sub: each edge, while it holds a socket of that user
 * (one subscription per user per edge). Format with the user id. */
#define SUBJ_USER_FMT "chat.user.%s"
/* CommandResult. Pub: messaging. Sub: that edge (which also answers a
 * command JetStream refused itself, through its relay, not this subject). */
#define SUBJ_EDGE_FMT "chat.edge.%s"
/* SendMessage. Pub: edge (JetStream CHAT_CMD), to the sender's partition
 * (ids_partition of the sender id over CHAT_PARTITIONS). Sub: messaging, one
 * durable pull consumer per partition, served by the replica that holds the
 * partition's lock: one sender's messages are stored and delivered in order. */
#define SUBJ_CMD_SEND_FMT "chat.cmd.message.send.%u"
/* MarkRead (message:read and conversation:read). Pub: edge (JetStream
 * CHAT_CMD). Sub: messaging. */
#define SUBJ_CMD_READ "chat.cmd.message.read"
/* All commands, for the CHAT_CMD stream. */
#define SUBJ_CMD_ALL "chat.cmd.>"
/* HistoryQuery -> MessageList. Req: edge. Reply: messaging (queue group). */
#define SUBJ_QUERY_MESSAGES "chat.query.messages"
/* ConversationQuery -> ConversationList. Req: edge. Reply: messaging (queue
 * group; the same fair queue and pool as history). */
#define SUBJ_QUERY_CONVERSATIONS "chat.query.conversations"
/* SessionEvent -> PresenceList. Req: edge (an open), pub (closes and re-announced opens). Sub: every
 * presence replica; only the active one replies, after publishing the changes
 * the event caused. */
#define SUBJ_PRESENCE_SESSION "chat.presence.session"
/* SetStatus. Pub: edge. Sub: every presence replica. */
#define SUBJ_PRESENCE_SET "chat.presence.set"
/* PresenceQuery -> PresenceList. Req: edge. Reply: one presence replica (queue
 * group QUEUE_PRESENCE). */
#define SUBJ_PRESENCE_QUERY "chat.presence.query"
/* PresenceChange (epoch, seq). Pub: the active presence replica. Sub: every
 * edge, taps, the standby replicas. */
#define SUBJ_PRESENCE_STATUS "chat.presence.status"
/* any payload -> PresenceSnapshot chunks. Req: an edge that keeps a copy of the
 * online list. Reply: the active presence replica (only it subscribes). */
#define SUBJ_PRESENCE_SNAPSHOT "chat.presence.snapshot"
/* PresenceStateRequest -> PresenceState chunks. Req: a presence replica that
 * starts or reconnects. Reply: the active one (only it subscribes). The
 * replicas' lease is the JetStream KV bucket CHAT_PRESENCE_LEASE
 * ($KV.CHAT_PRESENCE_LEASE.>). */
#define SUBJ_PRESENCE_TRANSFER "chat.presence.transfer"
/* EdgeHeartbeat. Pub: each edge every few seconds. Sub: every presence replica. */
#define SUBJ_EDGE_HEARTBEAT "chat.edge.heartbeat"
/* ResyncRequest. Pub: the active presence replica after a start with no
 * state to take over, or after a NATS reconnection (every edge); a new active
 * whose roster disagrees with an edge's heartbeat (edge_id: that edge). Sub:
 * every edge, the standby replicas. */
#define SUBJ_PRESENCE_RESYNC "chat.presence.resync"
/* The records of stored events (JetStream CHAT_EVENTS), in the order they
 * happened: a Message stored, chat.event.message.created.<sender>.<recipient>
 * (message:received for the recipient's sockets, message:sent for the
 * sender's); a ReadReceipt, chat.event.message.read.<sender>.<reader>
 * (message:read for the sender's sockets). Pub: messaging, once PostgreSQL
 * has stored the event. Sub: every edge, one ordered
 * consumer of SUBJ_EVENT_MESSAGES (deliveries, and the stream sequence as the
 * clients' recovery offset); taps of other teams. */
#define SUBJ_EVENT_CREATED_FMT "chat.event.message.created.%s.%s"
#define SUBJ_EVENT_READ_FMT "chat.event.message.read.%s.%s"
#define SUBJ_EVENT_MESSAGES "chat.event.message.>"
#define SUBJ_EVENT_ALL "chat.event.>"

/* Connection state recovery: "<user id> <socket id>" -> "ok <ms>" (the edge
 * process closed that socket at Unix time ms) or "gone". Req: the edge a
 * client recovers on. Reply: the edge process with that boot id. */
#define SUBJ_RECOVERY_RELEASE_FMT "chat.recovery.release.%s"
/* The JetStream key-value bucket of recovery (KV: s.<socket id> -> "<ms>"
 * when it closed or "live <boot id>" when a recovered socket lives on;
 * e.<boot id> -> "<ms>", that edge process's last heartbeat). Pub: edges. */
#define KV_RECOVERY "CHAT_RECOVERY"

/* Queue group of the messaging replicas on SUBJ_QUERY_MESSAGES and
 * SUBJ_QUERY_CONVERSATIONS. */
#define QUEUE_MESSAGING "messaging"
/* Queue group of the presence replicas on SUBJ_PRESENCE_QUERY. */
#define QUEUE_PRESENCE "presence"

#endif

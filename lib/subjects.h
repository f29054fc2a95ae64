/* subjects: every NATS subject of the product, with its payload (proto/chat.proto,
 * package chat.v1), who publishes and who subscribes. Keep this file and the
 * table in ../shared/docs/architecture.md and README.md in step. */
#ifndef SUBJECTS_H
#define SUBJECTS_H

/* Delivery. Pub: messaging, edges. Sub: each edge, while it holds a socket of
 * that user (one subscription per user per edge). Format with the user id. */
#define SUBJ_USER_FMT "chat.user.%s"
/* CommandResult. Pub: messaging, presence. Sub: that edge. */
#define SUBJ_EDGE_FMT "chat.edge.%s"
/* SendMessage. Pub: edge (JetStream CHAT_CMD), to the sender's partition
 * (ids_partition of the sender id over CHAT_PARTITIONS). Sub: messaging, one
 * durable pull consumer per partition, served by the replica that holds the
 * partition's lock: one sender's messages are stored and delivered in order. */
#define SUBJ_CMD_SEND_FMT "chat.cmd.message.send.%u"
/* MarkRead. Pub: edge (JetStream CHAT_CMD). Sub: messaging. */
#define SUBJ_CMD_READ "chat.cmd.message.read"
/* All commands, for the CHAT_CMD stream. */
#define SUBJ_CMD_ALL "chat.cmd.>"
/* HistoryQuery -> MessageList. Req: edge. Reply: messaging (queue group). */
#define SUBJ_QUERY_MESSAGES "chat.query.messages"
/* SessionEvent -> PresenceList. Req: edge (open), pub (close). Sub: every
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
/* Message / ReadReceipt. Pub: messaging (JetStream CHAT_EVENTS). Sub: taps. */
#define SUBJ_EVENT_CREATED "chat.event.message.created"
#define SUBJ_EVENT_READ "chat.event.message.read"
#define SUBJ_EVENT_ALL "chat.event.>"

/* Queue group of the messaging replicas on SUBJ_QUERY_MESSAGES. */
#define QUEUE_MESSAGING "messaging"
/* Queue group of the presence replicas on SUBJ_PRESENCE_QUERY. */
#define QUEUE_PRESENCE "presence"

#endif

/* subjects: every NATS subject of the product, with its payload (proto/chat.proto,
 * package chat.v1), who publishes and who subscribes. Keep this file and the
 * table in docs/architecture.md and README.md in step. */
#ifndef SUBJECTS_H
#define SUBJECTS_H

/* Delivery. Pub: messaging, edges. Sub: each edge, while it holds a socket of
 * that user (one subscription per user per edge). Format with the user id. */
#define SUBJ_USER_FMT "chat.user.%s"
/* CommandResult. Pub: messaging (and the edge itself, for a command JetStream
 * refused). Sub: that edge. */
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
/* SessionEvent. An open is a request (reply: PresenceList, from presence);
 * closes and re-announced opens are plain publications. Pub: edge. Sub:
 * presence. */
#define SUBJ_PRESENCE_SESSION "chat.presence.session"
/* SetStatus. Pub: edge. Sub: presence. */
#define SUBJ_PRESENCE_SET "chat.presence.set"
/* PresenceQuery -> PresenceList. Req: edge. Reply: presence. */
#define SUBJ_PRESENCE_QUERY "chat.presence.query"
/* PresenceChange. Pub: presence. Sub: every edge, taps. */
#define SUBJ_PRESENCE_STATUS "chat.presence.status"
/* EdgeHeartbeat. Pub: each edge every few seconds. Sub: presence. */
#define SUBJ_EDGE_HEARTBEAT "chat.edge.heartbeat"
/* ResyncRequest. Pub: presence after a restart. Sub: every edge. */
#define SUBJ_PRESENCE_RESYNC "chat.presence.resync"
/* Message / ReadReceipt. Pub: messaging (JetStream CHAT_EVENTS). Sub: taps. */
#define SUBJ_EVENT_CREATED "chat.event.message.created"
#define SUBJ_EVENT_READ "chat.event.message.read"
#define SUBJ_EVENT_ALL "chat.event.>"

/* Queue group of the messaging replicas on SUBJ_QUERY_MESSAGES. */
#define QUEUE_MESSAGING "messaging"

#endif

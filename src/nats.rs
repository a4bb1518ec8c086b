//! The NATS JetStream backend (`nats-server` started with JetStream: `nats-server -js`), feature `nats`.
//!
//! # Connecting
//!
//! [`NatsClient::connect`] makes one attempt per server (5 s each) and fails at once with a
//! [`ShoveError::Connection`](crate::ShoveError::Connection) that says what to change;
//! [`NatsClient::connect_with_retry`] retries with backoff. [`NatsConfig`] maps onto the server's
//! authentication methods (user name and password, token, NKey seed, `.creds` file: one at a time) and
//! onto TLS (CA certificate, client certificate and key); TLS paths require a `tls://` URL, so a
//! certificate is never ignored in favour of a plaintext connection. After a connection loss the client
//! reconnects by itself.
//!
//! # Mapping
//!
//! | shove concept | NATS JetStream |
//! |---|---|
//! | topic queue | one stream per queue, `SHOVE_<queue>` (characters other than letters, digits, `-` and `_` become `_`), with work-queue retention, file storage and a 120 s duplicate window; subjects `<queue>`, `<queue>.hold` and `<queue>.shard.*`. A first publish carries one header, `Nats-Msg-Id`, which is both the message id and the server's deduplication id; copies (retries, defers, dead letters) carry `Shove-Message-Id`, `Shove-Retry-Count`, the sequence key and the user headers. A publish returns once the server has stored the message |
//! | consumers | one durable pull consumer per stream and role, created once per client: `<queue>-consumer` (every shove consumer of the topic pulls from it, so the server shares the messages among them), `<queue>-shards` for sequenced topics, `<queue>-hold` for held retries; `<dlq>-consumer` reads the DLQ |
//! | prefetch | a consumer holds at most `prefetch` messages not yet settled (requested, delivered or being handled), so that in a group an idle consumer gets the next message; while its handlers settle messages within about a millisecond it may hold twice as many, so the server always has a pull request to fill (a message waiting behind such handlers waits microseconds). A sequenced topic's consumer never holds more than `prefetch`. The JetStream consumer's aggregate `max_ack_pending` (default 100 000) is the hard bound for the group and can be set with [`ConsumerOptions::with_max_ack_pending`](crate::ConsumerOptions) |
//! | ack | `+ACK`; with work-queue retention an acknowledged message leaves the stream |
//! | hold queue (retry / defer delay) | the updated copy is published to `<queue>.hold` with its due time and a deduplication id made from the original's stream sequence, and once the server has stored it the original is acknowledged (a consumer that dies in between leaves the original to be redelivered, and its second copy is dropped as a duplicate within the window); consumers move due copies back to their subject, and nak a copy not yet due with the time it has left, so the delay is held **by the server** and survives any consumer |
//! | DLQ | a stream of its own (`SHOVE_<dlq>`, subject `<dlq>`); dead letters carry `Shove-Death-Reason`, `Shove-Death-Count`, `Shove-Original-Queue` and every user header |
//! | sequenced topic | `routing_shards` subjects `<queue>.shard.<n>` in the topic's stream, read in stream order by the `<queue>-shards` consumer; one shove consumer at a time reads a topic, holding a lock (the last message of subject `shove-locks.<queue>` in stream `SHOVE_LOCKS`, written conditionally, expiring 10 s after its last renewal), while the others stand by and take over when it stops or dies; per-key order and retries that block only their own key come from the engine's sequencer |
//! | hand back (drain, key buffer full) | `-NAK`, with a delay where one is asked for: the message keeps its retry count |
//! | queue depth (autoscaling) | the consumer's `num_pending` (not yet delivered) and `num_ack_pending` (delivered, not yet acknowledged) |
//! | crash recovery | a message not acknowledged within the ack wait (30 s) is delivered again; while a handler runs, its message's ack wait is extended every 10 s, so a slow handler is not mistaken for a dead consumer |
//!
//! Tested against nats-server 2.9.10 and 2.15.1; nothing here needs a feature newer than 2.9.
//!
//! [`NatsClient::jetstream`] exposes the connection's JetStream context for anything shove does not wrap.

pub use crate::backends::nats::{
    JetStreamStatsProvider, NatsAutoscalerBackend, NatsClient, NatsConfig, NatsConsumer, NatsConsumerGroup,
    NatsConsumerGroupConfig, NatsConsumerGroupRegistry, NatsPublisher, NatsQueueStats, NatsQueueStatsProvider,
    NatsTopologyDeclarer,
};
pub use crate::markers::Nats;

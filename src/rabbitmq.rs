//! The RabbitMQ backend (AMQP 0-9-1 through `lapin`), feature `rabbitmq`.
//!
//! # Mapping
//!
//! | shove concept | RabbitMQ |
//! |---|---|
//! | topic queue | a durable queue named as the topology's queue; messages are persistent (delivery mode 2) and every publish waits for the broker's confirm |
//! | hold queue (retry / defer delay) | a durable **quorum** queue `"{queue}-hold-{delay}"` with `x-message-ttl` = the delay that dead-letters back to the queue through the default exchange **at least once** (`x-dead-letter-strategy: at-least-once`, `x-overflow: reject-publish`; RabbitMQ 3.10+): the delay is held **by the broker**, survives a consumer crash and a broker restart (no plugin needed). A hold queue that already exists as a classic queue (declared by shove 0.11) is kept, with a warning: its returns are at most once; delete it when empty to upgrade it |
//! | retry / defer | the updated copy is published to the hold queue and confirmed, then the original is acknowledged; a crash in between yields at most a duplicate (same message id), never a loss. With [`ConsumerOptions::with_exactly_once`](crate::ConsumerOptions) (feature `rabbitmq-transactional`) the publish and the acknowledgement are one AMQP transaction (neither or both when the consumer process dies; a broker crash during a commit may leave a duplicate) |
//! | DLQ | a durable queue; dead letters are published there with `x-death-reason`, `x-death-count`, `x-original-queue` and every user header, then the original is acknowledged |
//! | sequenced topic | a durable `x-consistent-hash` exchange `"{queue}-seq-hash"` (plugin `rabbitmq_consistent_hash_exchange`) over `routing_shards` queues `"{queue}-seq-{i}"` declared with `x-single-active-consumer`; per-key order within a shard comes from the engine's sequencer |
//! | hand back (drain, key buffer full) | on a topic's main queue a fresh copy at the queue's tail (confirmed, then the original is acked), so that a redelivery means a lost attempt; on sequenced shards `basic.nack` with requeue, which keeps the place; with a delay, a per-queue delay queue `"{queue}-delay-{ms}ms"`, declared like a hold queue |
//! | crash recovery | unacknowledged deliveries come back with `redelivered` set; on a main queue that counts one lost attempt, which the engine writes into the message (a requeued copy with the raised retry count) before handling it, so a message that kills its consumers ends in the DLQ |
//! | prefetch | `basic.qos` per consumer |
//! | queue depth (autoscaling) | ready messages from a passive declare; ready and unacknowledged counts from the management API when [`ManagementConfig`] is set |
//! | connection loss | the client redials on the next operation; a consumer reopens its channel and resumes; unacknowledged deliveries are redelivered by the broker |
//!
//! Headers on the wire: `x-message-id` (also the AMQP `message_id` property), `x-retry-count`,
//! `x-sequence-key`, the death headers above, and the user's headers as strings. RabbitMQ's own
//! `x-death`/`x-first-death-*`/`x-last-death-*` headers, added when a hold queue expires a message, are not
//! reported as user headers.
//!
//! # Broker settings for hold queues
//!
//! Each hold queue returns due copies through one dead-letter worker on the broker, configured in the
//! `rabbit` application (`advanced.config`):
//! - `dead_letter_worker_consumer_prefetch` (default 32) bounds the copies a worker has in flight, and so
//!   how fast a busy hold queue empties (docs/PERFORMANCE.md measures 512);
//! - `dead_letter_worker_publisher_confirm_timeout` (default 180 s) is how long a worker waits before it
//!   sends a copy again. After a broker restart, copies that fell due while the node was starting wait
//!   this long: nothing is lost, but those retries come late.

pub use crate::backends::rabbitmq::{
    ConsumerGroupRegistry, MESSAGE_ID_KEY, ManagementConfig, QueueStats, QueueStatsProvider, RabbitMqAutoscalerBackend,
    RabbitMqClient, RabbitMqConfig, RabbitMqConsumer, RabbitMqConsumerGroup, RabbitMqConsumerGroupConfig,
    RabbitMqPublisher, RabbitMqTopologyDeclarer,
};
pub use crate::markers::RabbitMq;

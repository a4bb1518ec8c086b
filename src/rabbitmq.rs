//! The RabbitMQ backend (AMQP 0-9-1 through `lapin`), feature `rabbitmq`.
//!
//! # Mapping
//!
//! | shove concept | RabbitMQ |
//! |---|---|
//! | topic queue | a durable queue named as the topology's queue; messages are persistent (delivery mode 2) and every publish waits for the broker's confirm |
//! | hold queue (retry / defer delay) | a durable queue `"{queue}-hold-{delay}"` with `x-message-ttl` = the delay that dead-letters back to the queue through the default exchange: the delay is held **by the broker** and survives a consumer crash (no plugin needed) |
//! | retry / defer | the updated copy is published to the hold queue and confirmed, then the original is acknowledged; a crash in between yields at most a duplicate (same message id), never a loss. With [`ConsumerOptions::with_exactly_once`](crate::ConsumerOptions) (feature `rabbitmq-transactional`) the publish and the acknowledgement are one AMQP transaction |
//! | DLQ | a durable queue; dead letters are published there with `x-death-reason`, `x-death-count`, `x-original-queue` and every user header, then the original is acknowledged |
//! | sequenced topic | a durable `x-consistent-hash` exchange `"{queue}-seq-hash"` (plugin `rabbitmq_consistent_hash_exchange`) over `routing_shards` queues `"{queue}-seq-{i}"` declared with `x-single-active-consumer`; per-key order within a shard comes from the engine's sequencer |
//! | hand back (drain, key buffer full) | `basic.nack` with requeue; with a delay, a per-queue delay queue `"{queue}-delay-{ms}ms"` |
//! | prefetch | `basic.qos` per consumer |
//! | queue depth (autoscaling) | ready messages from a passive declare; ready and unacknowledged counts from the management API when [`ManagementConfig`] is set |
//! | connection loss | the client redials on the next operation; a consumer reopens its channel and resumes; unacknowledged deliveries are redelivered by the broker |
//!
//! Headers on the wire: `x-message-id` (also the AMQP `message_id` property), `x-retry-count`,
//! `x-sequence-key`, the death headers above, and the user's headers as strings. RabbitMQ's own
//! `x-death`/`x-first-death-*`/`x-last-death-*` headers, added when a hold queue expires a message, are not
//! reported as user headers.

pub use crate::backends::rabbitmq::{
    ConsumerGroupRegistry, MESSAGE_ID_KEY, ManagementConfig, QueueStats, QueueStatsProvider, RabbitMqAutoscalerBackend,
    RabbitMqClient, RabbitMqConfig, RabbitMqConsumer, RabbitMqConsumerGroup, RabbitMqConsumerGroupConfig,
    RabbitMqPublisher, RabbitMqTopologyDeclarer,
};
pub use crate::markers::RabbitMq;

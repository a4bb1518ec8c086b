//! The in-process backend: every queue lives in this process's memory. No broker to run, nothing kept
//! across restarts; ideal for tests, examples and single-process services.
//!
//! # Mapping
//!
//! | shove concept | in-process |
//! |---|---|
//! | topic queue | a FIFO with a capacity ([`InMemoryConfig::default_capacity`]); publishers wait for room |
//! | hold queue (retry / defer delay) | one broker-wide timer heap and one task; the message returns to the tail of its queue when due |
//! | DLQ | a FIFO named as the topology's DLQ |
//! | sequenced topic | `routing_shards` FIFOs `"{queue}-seq-{i}"`; a key always hashes to the same shard; each shard is owned by one subscription at a time (others stand by and take over when it stops) |
//! | settle | in-process and atomic: ack, requeue, dead-letter and release cannot be torn |
//! | abandoned delivery (aborted drain) | back to the front of its queue, marked redelivered |
//!
//! Queues are created on first use (publish, subscribe or declare), so declaring first is optional here.
//! Delivery semantics (retries, DLQ, ordering, timeouts, drain) are those of every backend; see the crate
//! docs.

pub use crate::backends::inmemory::{
    BrokerStatsProvider, DEFAULT_QUEUE_CAPACITY, InMemoryAutoscalerBackend, InMemoryBroker, InMemoryConfig,
    InMemoryConsumer, InMemoryConsumerGroup, InMemoryConsumerGroupConfig, InMemoryConsumerGroupRegistry,
    InMemoryPublisher, InMemoryQueueStats, InMemoryQueueStatsProvider, InMemoryTopologyDeclarer,
};
pub use crate::markers::InMemory;

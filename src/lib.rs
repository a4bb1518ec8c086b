//! # shove
//!
//! Type-safe async pub/sub and background tasks. Define a topic once as a Rust type; shove derives the
//! queues, retries with escalating backoff, dead-letter queues, strict per-key ordering, autoscaling consumer
//! groups, audit logs and metrics from it, and runs the same handlers unchanged on every transport.
//!
//! The public API is source-compatible with shove 0.11.3. Delivery behaviour follows the delivery contract
//! (`docs/CONTRACT.md`), implemented once in the engine and shared by every backend.
#![doc = include_str!("../docs/CONTRACT.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod audit;
pub mod autoscale_metrics;
pub mod autoscaler;
pub mod backend;
pub mod broker;
pub mod codec;
pub mod codecs;
pub mod consumer;
pub mod consumer_group;
pub mod consumer_supervisor;
mod defaults;
pub mod error;
#[cfg(any_backend)]
pub mod facade;
pub mod handler;
#[doc(hidden)]
pub mod macros;
pub mod markers;
pub mod metadata;
pub mod metrics;
pub mod outcome;
pub mod publisher;
pub mod topic;
pub mod topology;
pub mod topology_declarer;

mod backends;
mod engine;
mod transport;

#[cfg(feature = "inmemory")]
pub mod inmemory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis-streams")]
pub mod redis;

pub use audit::{AuditHandler, AuditRecord, Audited};
#[cfg(feature = "audit")]
pub use audit::{AuditLog, ShoveAuditHandler};
pub use autoscale_metrics::AutoscaleMetrics;
pub use autoscaler::{
    Autoscaler, AutoscalerBackend, AutoscalerConfig, ScalingDecision, ScalingMetrics, ScalingStrategy, Stabilized,
    ThresholdStrategy,
};
pub use backend::Backend;
pub use backend::capability::HasCoordinatedGroups;
pub use broker::Broker;
pub use codec::{Codec, JsonCodec, RawBytesCodec};
#[cfg(feature = "protobuf")]
pub use codecs::protobuf::ProtobufCodec;
pub use consumer::{ConsumerOptions, DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING_PER_KEY};
pub use consumer_group::{ConsumerGroup, ConsumerGroupConfig};
pub use consumer_supervisor::{ConsumerSupervisor, SupervisorOutcome};
pub use error::ShoveError;
pub use handler::{MessageHandler, MessageHandlerExt};
#[cfg(feature = "inmemory")]
pub use markers::InMemory;
#[cfg(feature = "nats")]
pub use markers::Nats;
#[cfg(feature = "rabbitmq")]
pub use markers::RabbitMq;
#[cfg(feature = "redis-streams")]
pub use markers::Redis;
pub use metadata::{DeadMessageMetadata, MessageMetadata};
pub use outcome::Outcome;
pub use publisher::Publisher;
pub use topic::{SequencedTopic, Topic};
pub use topology::{HoldQueue, QueueTopology, SequenceConfig, SequenceFailure, TopologyBuilder};
pub use topology_declarer::{Topics, TopologyDeclarer};

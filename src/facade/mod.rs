//! The generic types behind every backend's named consumer, group, registry and autoscaler types.
//!
//! shove 0.11 names each backend's types (`NatsConsumer`, `RedisConsumerGroupConfig`,
//! `ConsumerGroupRegistry` for RabbitMQ, …). Here each such name is an alias of one generic type written
//! once, as sqlx's `PgPool` is `Pool<Postgres>`:
//!
//! | generic type | in-process | RabbitMQ | Redis | NATS |
//! |---|---|---|---|---|
//! | [`BackendPublisher<B>`] | `InMemoryPublisher` | `RabbitMqPublisher` | `RedisPublisher` | `NatsPublisher` |
//! | [`BackendConsumer<B>`] | `InMemoryConsumer` | `RabbitMqConsumer` | `RedisConsumer` | `NatsConsumer` |
//! | [`BackendGroupConfig<B>`] | `InMemoryConsumerGroupConfig` | `RabbitMqConsumerGroupConfig` | `RedisConsumerGroupConfig` | `NatsConsumerGroupConfig` |
//! | [`BackendGroup<B>`] | `InMemoryConsumerGroup` | `RabbitMqConsumerGroup` | `RedisConsumerGroup` | `NatsConsumerGroup` |
//! | [`BackendGroupRegistry<B>`] | `InMemoryConsumerGroupRegistry` | `ConsumerGroupRegistry` | `RedisConsumerGroupRegistry` | `NatsConsumerGroupRegistry` |
//! | [`BackendAutoscaler<B, S>`] | `InMemoryAutoscalerBackend<S>` | `RabbitMqAutoscalerBackend<S>` | `RedisAutoscalerBackend<S>` | `NatsAutoscalerBackend<S>` |
//!
//! The few methods one backend adds (its group constructors, an autoscaler constructor that picks its
//! statistics provider) are inherent methods of the specialisation, in that backend's module.

mod autoscaler;
mod consumer;
mod group;
mod publisher;
mod registry;

pub use autoscaler::{BackendAutoscaler, QueueDepthProvider};
pub use consumer::BackendConsumer;
pub use group::{BackendGroup, BackendGroupConfig};
pub use publisher::BackendPublisher;
pub use registry::BackendGroupRegistry;

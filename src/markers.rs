//! Backend marker types: pick one as the `B` in [`Broker<B>`](crate::Broker).

/// The in-process backend: queues in this process's memory, no broker needed.
#[cfg(feature = "inmemory")]
pub struct InMemory;

/// The NATS JetStream backend (`nats-server` with JetStream enabled, through `async-nats`).
#[cfg(feature = "nats")]
pub struct Nats;

/// The RabbitMQ backend (AMQP 0-9-1 through `lapin`).
#[cfg(feature = "rabbitmq")]
pub struct RabbitMq;

/// The Redis Streams backend (Redis 7 or Valkey).
#[cfg(feature = "redis-streams")]
pub struct Redis;

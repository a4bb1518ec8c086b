//! Broker mappings: each backend implements the transport and names its facade types.

#[cfg(feature = "inmemory")]
pub(crate) mod inmemory;

#[cfg(feature = "nats")]
pub(crate) mod nats;

#[cfg(feature = "rabbitmq")]
pub(crate) mod rabbitmq;

#[cfg(feature = "redis-streams")]
pub(crate) mod redis;

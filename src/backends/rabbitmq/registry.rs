//! RabbitMQ consumer groups: thin names over the engine's groups. The only RabbitMQ-specific step is
//! declaring the topic's exchanges and queues before a group is built, so a broker-side problem (a queue
//! declared elsewhere with other arguments, a missing plugin) surfaces at registration, not in a consumer.

use tokio_util::sync::CancellationToken;

use super::client::RabbitMqClient;
use crate::backend::internal::RegistryImpl;
use crate::error::Result;
use crate::facade::{BackendGroup, BackendGroupConfig, BackendGroupRegistry};
use crate::handler::MessageHandler;
use crate::markers::RabbitMq;
use crate::topic::{SequencedTopic, Topic};

/// Settings of a RabbitMQ consumer group. `Default` is `new(1..=4)`.
pub type RabbitMqConsumerGroupConfig = BackendGroupConfig<RabbitMq>;

/// A group of RabbitMQ consumers of one queue (or of the shard queues of a sequenced topic).
pub type RabbitMqConsumerGroup = BackendGroup<RabbitMq>;

/// Named RabbitMQ consumer groups on one client.
pub type ConsumerGroupRegistry = BackendGroupRegistry<RabbitMq>;

impl BackendGroup<RabbitMq> {
    /// Declares topic `T`'s exchanges and queues, then builds a stopped group of `T` named `queue`; call
    /// [`RabbitMqConsumerGroup::start`]. `name` labels the group in logs.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T` is sequenced or the broker refuses
    /// the topology; [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be
    /// reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: declaring is idempotent, so a cancelled call can simply be repeated.
    pub async fn new<T, H>(
        name: impl Into<String>,
        queue: impl Into<String>,
        config: RabbitMqConsumerGroupConfig,
        client: RabbitMqClient,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<Self>
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        let name = name.into();
        let queue = queue.into();
        let topology = T::topology();
        topology.check_sequencing(false)?;
        client.declare(topology).await?;
        tracing::debug!(group = %name, queue = %queue, "rabbitmq consumer group created");
        Ok(Self::build::<T, H>(
            queue,
            &client,
            false,
            config,
            group_token,
            handler_factory,
            ctx,
        ))
    }

    /// Declares the sequenced topic `T`'s exchanges and shard queues, then builds a stopped per-key
    /// ordered group named `queue`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when the broker refuses the topology;
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: declaring is idempotent, so a cancelled call can simply be repeated.
    pub async fn new_fifo<T, H>(
        queue: impl Into<String>,
        client: RabbitMqClient,
        config: RabbitMqConsumerGroupConfig,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<Self>
    where
        T: SequencedTopic + 'static,
        H: MessageHandler<T> + 'static,
    {
        let topology = T::topology();
        topology.check_sequencing(true)?;
        client.declare(topology).await?;
        Ok(Self::build::<T, H>(
            queue.into(),
            &client,
            true,
            config,
            group_token,
            handler_factory,
            ctx,
        ))
    }
}

impl BackendGroupRegistry<RabbitMq> {
    /// The client's shutdown token: cancelled when the connection is shut down, which stops every group.
    pub fn client_shutdown_token(&self) -> CancellationToken {
        RegistryImpl::broker_token(self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::internal::RegistryImpl;

    #[test]
    fn config_defaults_and_setters() {
        let d = RabbitMqConsumerGroupConfig::default();
        assert_eq!((d.min_consumers(), d.max_consumers()), (1, 4));
        assert_eq!(d.prefetch_count(), 10);
        assert_eq!(d.max_retries(), 10);
        assert_eq!(d.handler_timeout(), None);
        assert!(d.concurrent_processing());

        let c = RabbitMqConsumerGroupConfig::new(2..=3)
            .with_prefetch_count(5)
            .with_max_retries(1)
            .with_handler_timeout(Duration::from_secs(2))
            .with_concurrent_processing(false);
        assert_eq!((c.min_consumers(), c.max_consumers()), (2, 3));
        assert_eq!(c.prefetch_count(), 5);
        assert_eq!(c.max_retries(), 1);
        assert_eq!(c.handler_timeout(), Some(Duration::from_secs(2)));
        assert!(!c.concurrent_processing());
        // What the engine sees.
        let settings = <ConsumerGroupRegistry as RegistryImpl>::group_settings(&c);
        assert!(!settings.concurrent_processing);
        assert_eq!((settings.min, settings.max, settings.prefetch), (2, 3, 5));
    }

    #[test]
    #[should_panic(expected = "handler_timeout must be positive")]
    fn zero_handler_timeout_panics() {
        let _ = RabbitMqConsumerGroupConfig::default().with_handler_timeout(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "min_consumers must not exceed max_consumers")]
    fn empty_range_panics() {
        #[allow(clippy::reversed_empty_ranges)]
        let _ = RabbitMqConsumerGroupConfig::new(3..=2);
    }
}

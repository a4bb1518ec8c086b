//! RabbitMQ consumer groups: thin names over the engine's groups. The only RabbitMQ-specific step is
//! declaring the topic's exchanges and queues before a group is built, so a broker-side problem (a queue
//! declared elsewhere with other arguments, a missing plugin) surfaces at registration, not in a consumer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::RabbitMqClient;
use super::transport::RabbitTransport;
use crate::backend::internal::RegistryImpl;
use crate::engine::registry::{self, Group, GroupDirectory, GroupSet, GroupSettings};
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};

group_config!(
    /// Settings of a RabbitMQ consumer group. `Default` is `new(1..=4)`.
    RabbitMqConsumerGroupConfig,
    default = 1..=4,
    [with_prefetch_count, with_max_retries, with_handler_timeout, prefetch_count, min_consumers, max_consumers, max_retries, handler_timeout, with_concurrent_processing, concurrent_processing]
);

group_facade!(
    /// A group of RabbitMQ consumers of one queue (or of the shard queues of a sequenced topic).
    RabbitMqConsumerGroup,
    RabbitMqConsumerGroupConfig
);

impl RabbitMqConsumerGroup {
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
        registry::check_sequencing(false, topology)?;
        client.declare(topology).await?;
        tracing::debug!(group = %name, queue = %queue, "rabbitmq consumer group created");
        let group = Group::new::<T, H, _>(
            queue,
            client.transport(),
            false,
            config.settings.clone(),
            None,
            group_token,
            handler_factory,
            ctx,
        );
        Ok(Self { group, config })
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
        registry::check_sequencing(true, topology)?;
        client.declare(topology).await?;
        let group = Group::new::<T, H, _>(
            queue.into(),
            client.transport(),
            true,
            config.settings.clone(),
            None,
            group_token,
            handler_factory,
            ctx,
        );
        Ok(Self { group, config })
    }
}

/// Named RabbitMQ consumer groups on one client.
pub struct ConsumerGroupRegistry {
    client: RabbitMqClient,
    default_handler_timeout: Option<Duration>,
    groups: HashMap<String, RabbitMqConsumerGroup>,
}

impl ConsumerGroupRegistry {
    /// An empty registry on `client`.
    pub fn new(client: RabbitMqClient) -> Self {
        Self {
            client,
            default_handler_timeout: None,
            groups: HashMap::new(),
        }
    }

    /// The handler timeout for groups whose config sets none.
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"default_handler_timeout must be positive"`.
    pub fn with_default_handler_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "default_handler_timeout must be positive");
        self.default_handler_timeout = Some(timeout);
        self
    }

    /// Declares topic `T`'s topology and registers a group for it (not started; see
    /// [`ConsumerGroupRegistry::start_all`]).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T`'s queue already has a group, `T` is
    /// sequenced, or the broker refuses the topology;
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: nothing is registered until the declaration has completed.
    pub async fn register<T, H>(
        &mut self,
        config: RabbitMqConsumerGroupConfig,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        self.add::<T, H>(false, config, handler_factory, ctx).await
    }

    /// Declares the sequenced topic `T`'s topology and registers a per-key ordered group for it.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T`'s queue already has a group, `T` is
    /// not sequenced, or the broker refuses the topology;
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: nothing is registered until the declaration has completed.
    pub async fn register_fifo<T, H>(
        &mut self,
        config: RabbitMqConsumerGroupConfig,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: SequencedTopic + 'static,
        H: MessageHandler<T> + 'static,
    {
        self.add::<T, H>(true, config, handler_factory, ctx).await
    }

    async fn add<T, H>(
        &mut self,
        fifo: bool,
        config: RabbitMqConsumerGroupConfig,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        let token = self.client.shutdown_token().child_token();
        registry::add_group::<_, T, H>(self, fifo, config.settings, token, handler_factory, ctx).await
    }

    /// Starts every group at its minimum size.
    pub fn start_all(&mut self) {
        registry::start_all(&mut self.groups);
    }

    /// The groups, by queue name.
    pub fn groups(&self) -> &HashMap<String, RabbitMqConsumerGroup> {
        &self.groups
    }

    /// The groups, by queue name, for scaling by hand.
    pub fn groups_mut(&mut self) -> &mut HashMap<String, RabbitMqConsumerGroup> {
        &mut self.groups
    }

    /// The client's shutdown token: cancelled when the connection is shut down, which stops every group.
    pub fn client_shutdown_token(&self) -> CancellationToken {
        self.client.shutdown_token()
    }

    /// Stops every group after in-flight handlers finish.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: consumers already told to stop keep draining.
    pub async fn shutdown_all(&mut self) {
        registry::shutdown_all(&mut self.groups).await;
    }
}

#[allow(private_interfaces)]
impl RegistryImpl for ConsumerGroupRegistry {
    type GroupConfig = RabbitMqConsumerGroupConfig;
    type Transport = RabbitTransport;

    fn transport(&self) -> RabbitTransport {
        self.client.transport()
    }

    fn group_settings(config: &RabbitMqConsumerGroupConfig) -> GroupSettings {
        config.settings.clone()
    }

    fn default_handler_timeout(&self) -> Option<Duration> {
        self.default_handler_timeout
    }

    fn set_default_handler_timeout(&mut self, timeout: Duration) {
        self.default_handler_timeout = Some(timeout);
    }

    fn broker_token(&self) -> CancellationToken {
        self.client.shutdown_token()
    }

    fn engine(&mut self) -> &mut dyn GroupSet {
        &mut self.groups
    }

    fn directory(&self) -> Arc<GroupDirectory<Self>> {
        self.client.directory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! In-process consumer groups: thin names over the engine's groups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::broker::InMemoryBroker;
use crate::backend::internal::RegistryImpl;
use crate::engine::registry::{self, Group, GroupDirectory, GroupSet, GroupSettings};
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};

group_config!(
    /// Settings of an in-process consumer group. `Default` is `new(1..=1)`.
    InMemoryConsumerGroupConfig,
    default = 1..=1,
    [with_prefetch_count, with_max_retries, with_handler_timeout, with_max_message_size, without_message_size_limit, with_max_pending_per_key, without_max_pending_per_key, prefetch_count, min_consumers, max_consumers, max_retries, handler_timeout, max_pending_per_key, max_message_size]
);

group_facade!(
    /// A group of in-process consumers of one queue.
    InMemoryConsumerGroup,
    InMemoryConsumerGroupConfig
);

impl InMemoryConsumerGroup {
    /// A stopped group of topic `T` named `queue`; call [`InMemoryConsumerGroup::start`].
    pub fn new<T, H>(
        queue: impl Into<String>,
        config: InMemoryConsumerGroupConfig,
        broker: InMemoryBroker,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Self
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        let group = Group::new::<T, H, _>(
            queue.into(),
            broker,
            false,
            config.settings.clone(),
            None,
            group_token,
            handler_factory,
            ctx,
        );
        Self { group, config }
    }

    /// A stopped per-key ordered group of the sequenced topic `T`.
    pub fn new_fifo<T, H>(
        queue: impl Into<String>,
        broker: InMemoryBroker,
        config: InMemoryConsumerGroupConfig,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Self
    where
        T: SequencedTopic + 'static,
        H: MessageHandler<T> + 'static,
    {
        let group = Group::new::<T, H, _>(
            queue.into(),
            broker,
            true,
            config.settings.clone(),
            None,
            group_token,
            handler_factory,
            ctx,
        );
        Self { group, config }
    }
}

/// Named in-process consumer groups.
pub struct InMemoryConsumerGroupRegistry {
    broker: InMemoryBroker,
    default_handler_timeout: Option<Duration>,
    groups: HashMap<String, InMemoryConsumerGroup>,
}

impl InMemoryConsumerGroupRegistry {
    /// An empty registry on `broker`.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self {
            broker,
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

    /// Registers a group of topic `T` (not started; see [`InMemoryConsumerGroupRegistry::start_all`]).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T`'s queue already has a group, or `T`
    /// is sequenced.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn register<T, H>(
        &mut self,
        config: InMemoryConsumerGroupConfig,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        self.add::<T, H>(false, config, handler_factory, ctx).await
    }

    /// Registers a per-key ordered group of the sequenced topic `T`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T`'s queue already has a group.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn register_fifo<T, H>(
        &mut self,
        config: InMemoryConsumerGroupConfig,
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
        config: InMemoryConsumerGroupConfig,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        let token = self.broker.shutdown_token().child_token();
        registry::add_group::<_, T, H>(self, fifo, config.settings, token, handler_factory, ctx).await
    }

    /// Starts every group at its minimum size.
    pub fn start_all(&mut self) {
        registry::start_all(&mut self.groups);
    }

    /// The groups, by queue name.
    pub fn groups(&self) -> &HashMap<String, InMemoryConsumerGroup> {
        &self.groups
    }

    /// The groups, by queue name, for scaling by hand.
    pub fn groups_mut(&mut self) -> &mut HashMap<String, InMemoryConsumerGroup> {
        &mut self.groups
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
impl RegistryImpl for InMemoryConsumerGroupRegistry {
    type GroupConfig = InMemoryConsumerGroupConfig;
    type Transport = InMemoryBroker;

    fn transport(&self) -> InMemoryBroker {
        self.broker.clone()
    }

    fn group_settings(config: &InMemoryConsumerGroupConfig) -> GroupSettings {
        config.settings.clone()
    }

    fn default_handler_timeout(&self) -> Option<Duration> {
        self.default_handler_timeout
    }

    fn set_default_handler_timeout(&mut self, timeout: Duration) {
        self.default_handler_timeout = Some(timeout);
    }

    fn broker_token(&self) -> CancellationToken {
        self.broker.shutdown_token().clone()
    }

    fn engine(&mut self) -> &mut dyn GroupSet {
        &mut self.groups
    }

    fn directory(&self) -> Arc<GroupDirectory<Self>> {
        self.broker.directory()
    }
}

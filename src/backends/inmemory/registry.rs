//! In-process consumer groups: thin names over the engine's groups.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::broker::InMemoryBroker;
use crate::backend::internal::RegistryImpl;
use crate::engine::registry::{self, Group, GroupDirectory, GroupSet, GroupSettings};
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};

/// Settings of an in-process consumer group. `Default` is `new(1..=1)`.
#[derive(Clone, Debug)]
pub struct InMemoryConsumerGroupConfig {
    settings: GroupSettings,
}

impl Default for InMemoryConsumerGroupConfig {
    fn default() -> Self {
        Self::new(1..=1)
    }
}

impl InMemoryConsumerGroupConfig {
    /// A group of `range` consumers (min..=max).
    ///
    /// # Panics
    ///
    /// When min > max or max is 0.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            settings: GroupSettings::new(range),
        }
    }

    /// Messages each consumer handles concurrently (default 10).
    pub fn with_prefetch_count(mut self, prefetch_count: u16) -> Self {
        self.settings.prefetch = prefetch_count;
        self
    }

    /// Retries after the first attempt (default 10).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.settings.max_retries = max_retries;
        self
    }

    /// Per-call handler timeout (default: the registry's, 30 s unless changed).
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"handler_timeout must be positive"`.
    pub fn with_handler_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "handler_timeout must be positive");
        self.settings.handler_timeout = Some(timeout);
        self
    }

    /// Largest payload accepted (default 10 MiB).
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.settings.max_message_size = Some(max);
        self
    }

    /// Accepts payloads of any size.
    pub fn without_message_size_limit(mut self) -> Self {
        self.settings.max_message_size = None;
        self
    }

    /// Messages buffered per key by a sequenced group (default 1000).
    pub fn with_max_pending_per_key(mut self, limit: usize) -> Self {
        self.settings.max_pending_per_key = Some(limit);
        self
    }

    /// Removes the per-key buffer bound.
    pub fn without_max_pending_per_key(mut self) -> Self {
        self.settings.max_pending_per_key = None;
        self
    }

    /// See [`InMemoryConsumerGroupConfig::with_prefetch_count`].
    pub fn prefetch_count(&self) -> u16 {
        self.settings.prefetch
    }

    /// The smallest group size.
    pub fn min_consumers(&self) -> u16 {
        self.settings.min
    }

    /// The largest group size.
    pub fn max_consumers(&self) -> u16 {
        self.settings.max
    }

    /// See [`InMemoryConsumerGroupConfig::with_max_retries`].
    pub fn max_retries(&self) -> u32 {
        self.settings.max_retries
    }

    /// The timeout set on this config, if any.
    pub fn handler_timeout(&self) -> Option<Duration> {
        self.settings.handler_timeout
    }

    /// See [`InMemoryConsumerGroupConfig::with_max_pending_per_key`].
    pub fn max_pending_per_key(&self) -> Option<usize> {
        self.settings.max_pending_per_key
    }

    /// See [`InMemoryConsumerGroupConfig::with_max_message_size`].
    pub fn max_message_size(&self) -> Option<usize> {
        self.settings.max_message_size
    }
}

/// A group of in-process consumers of one queue.
pub struct InMemoryConsumerGroup {
    group: Group,
    config: InMemoryConsumerGroupConfig,
}

impl AsRef<Group> for InMemoryConsumerGroup {
    fn as_ref(&self) -> &Group {
        &self.group
    }
}

impl AsMut<Group> for InMemoryConsumerGroup {
    fn as_mut(&mut self) -> &mut Group {
        &mut self.group
    }
}

impl From<Group> for InMemoryConsumerGroup {
    fn from(group: Group) -> Self {
        let config = InMemoryConsumerGroupConfig {
            settings: group.settings().clone(),
        };
        Self { group, config }
    }
}

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

    /// Starts `min_consumers` consumers (at least one).
    pub fn start(&mut self) {
        self.group.start();
    }

    /// Adds a consumer; false at `max_consumers`.
    pub fn scale_up(&mut self) -> bool {
        self.group.scale_up()
    }

    /// Stops one idle consumer; false at `min_consumers` or when every consumer is busy.
    pub fn scale_down(&mut self) -> bool {
        self.group.scale_down()
    }

    /// Consumers running.
    pub fn active_consumers(&self) -> usize {
        self.group.active_consumers()
    }

    /// The group's queue.
    pub fn queue(&self) -> &str {
        self.group.queue()
    }

    /// The group's settings.
    pub fn config(&self) -> &InMemoryConsumerGroupConfig {
        &self.config
    }

    /// Stops every consumer after its in-flight handlers finish.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: consumers already told to stop keep draining.
    pub async fn shutdown(&mut self) {
        self.group.shutdown().await;
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

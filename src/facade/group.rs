//! A backend's consumer-group settings and one group of consumers, written once for every backend.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backend::internal::ClientImpl;
use crate::engine::registry::{Group, GroupSettings};
use crate::handler::MessageHandler;
use crate::topic::Topic;

/// Settings of one backend's consumer group: `NatsConsumerGroupConfig` is `BackendGroupConfig<Nats>`,
/// and so on (see [the module](crate::facade)). `Default` is the backend's shove 0.11 default size
/// (`1..=1` in-process, `1..=4` on the brokers) with every other setting at the crate default.
pub struct BackendGroupConfig<B> {
    pub(crate) settings: GroupSettings,
    backend: PhantomData<fn() -> B>,
}

impl<B> Clone for BackendGroupConfig<B> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            backend: PhantomData,
        }
    }
}

impl<B> fmt::Debug for BackendGroupConfig<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendGroupConfig")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<B: Backend> Default for BackendGroupConfig<B> {
    fn default() -> Self {
        let (min, max) = <B::Client as ClientImpl>::DEFAULT_GROUP_SIZE;
        Self::new(min..=max)
    }
}

impl<B> BackendGroupConfig<B> {
    /// A group of `range` consumers (min..=max).
    ///
    /// # Panics
    ///
    /// When min > max or max is 0, with a message naming the fix.
    pub fn new(range: std::ops::RangeInclusive<u16>) -> Self {
        Self {
            settings: GroupSettings::new(range),
            backend: PhantomData,
        }
    }

    /// Messages each consumer handles concurrently (default 10; 0 is treated as 1).
    pub fn with_prefetch_count(mut self, prefetch_count: u16) -> Self {
        self.settings.prefetch = prefetch_count;
        self
    }

    /// Retries after the first attempt (default 10).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.settings.max_retries = max_retries;
        self
    }

    /// When false, each consumer runs one handler at a time whatever the prefetch (default true).
    pub fn with_concurrent_processing(mut self, concurrent: bool) -> Self {
        self.settings.concurrent_processing = concurrent;
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

    /// Messages buffered per key by a sequenced group (default 1000).
    ///
    /// # Panics
    ///
    /// When `limit` is 0, with a message naming the fix.
    pub fn with_max_pending_per_key(mut self, limit: usize) -> Self {
        self.settings.max_pending_per_key = Some(crate::defaults::checked_max_pending_per_key(limit));
        self
    }

    /// Removes the per-key buffer bound.
    pub fn without_max_pending_per_key(mut self) -> Self {
        self.settings.max_pending_per_key = None;
        self
    }

    /// Largest payload accepted, in bytes (default 10 MiB); a larger one is dead-lettered.
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.settings.max_message_size = Some(max);
        self
    }

    /// Accepts payloads of any size.
    pub fn without_message_size_limit(mut self) -> Self {
        self.settings.max_message_size = None;
        self
    }

    /// See [`BackendGroupConfig::with_prefetch_count`].
    pub fn prefetch_count(&self) -> u16 {
        self.settings.prefetch
    }

    /// See [`BackendGroupConfig::with_max_retries`].
    pub fn max_retries(&self) -> u32 {
        self.settings.max_retries
    }

    /// The smallest group size.
    pub fn min_consumers(&self) -> u16 {
        self.settings.min
    }

    /// The largest group size.
    pub fn max_consumers(&self) -> u16 {
        self.settings.max
    }

    /// See [`BackendGroupConfig::with_concurrent_processing`].
    pub fn concurrent_processing(&self) -> bool {
        self.settings.concurrent_processing
    }

    /// The timeout set on this config, if any.
    pub fn handler_timeout(&self) -> Option<Duration> {
        self.settings.handler_timeout
    }

    /// The per-key buffer bound of a sequenced group, if any.
    pub fn max_pending_per_key(&self) -> Option<usize> {
        self.settings.max_pending_per_key
    }

    /// The largest payload accepted, if bounded.
    pub fn max_message_size(&self) -> Option<usize> {
        self.settings.max_message_size
    }
}

/// A group of consumers of one topic's queue (or of the shards of a sequenced topic), on one backend:
/// `NatsConsumerGroup` is `BackendGroup<Nats>`, and so on (see [the module](crate::facade)). Each
/// backend adds its shove 0.11 constructors (`new`, `new_fifo`) as inherent methods.
pub struct BackendGroup<B> {
    group: Group,
    config: BackendGroupConfig<B>,
}

impl<B> AsRef<Group> for BackendGroup<B> {
    fn as_ref(&self) -> &Group {
        &self.group
    }
}

impl<B> AsMut<Group> for BackendGroup<B> {
    fn as_mut(&mut self) -> &mut Group {
        &mut self.group
    }
}

impl<B> From<Group> for BackendGroup<B> {
    fn from(group: Group) -> Self {
        let config = BackendGroupConfig {
            settings: group.settings().clone(),
            backend: PhantomData,
        };
        Self { group, config }
    }
}

impl<B: Backend> BackendGroup<B> {
    /// A stopped group of topic `T` named `queue` on `client`; `fifo` reads the shards of a sequenced
    /// topic. The topic is declared when the first consumer subscribes.
    pub(crate) fn build<T, H>(
        queue: String,
        client: &B::Client,
        fifo: bool,
        config: BackendGroupConfig<B>,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Self
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        let group = Group::new::<T, H, _>(
            queue,
            client.transport(),
            fifo,
            config.settings.clone(),
            None,
            group_token,
            handler_factory,
            ctx,
        );
        Self { group, config }
    }
}

impl<B> BackendGroup<B> {
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
    pub fn config(&self) -> &BackendGroupConfig<B> {
        &self.config
    }

    /// Stops every consumer after its in-flight handlers finish; deliveries not started go back to the
    /// broker.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: consumers already told to stop keep draining.
    pub async fn shutdown(&mut self) {
        self.group.shutdown().await;
    }
}

//! Redis consumer groups: thin names over the engine's groups. Every consumer of a group is a consumer of
//! the client's stream consumer group, so the streams share the group's entries among them. A registry
//! declares a topic's streams and consumer groups when a group is registered, so a server-side problem
//! surfaces at registration; a group built on its own declares lazily, when its consumers subscribe.

use tokio_util::sync::CancellationToken;

use super::client::RedisClient;
use crate::backend::internal::RegistryImpl;
use crate::facade::{BackendGroup, BackendGroupConfig, BackendGroupRegistry};
use crate::handler::MessageHandler;
use crate::markers::Redis;
use crate::topic::{SequencedTopic, Topic};

/// Settings of a Redis consumer group. `Default` is `new(1..=4)`.
pub type RedisConsumerGroupConfig = BackendGroupConfig<Redis>;

/// A group of Redis consumers of one topic's stream (or of the shard streams of a sequenced topic).
pub type RedisConsumerGroup = BackendGroup<Redis>;

/// Named Redis consumer groups on one client.
pub type RedisConsumerGroupRegistry = BackendGroupRegistry<Redis>;

impl BackendGroup<Redis> {
    /// A stopped group of topic `T` named `queue`; call [`RedisConsumerGroup::start`]. The topic's
    /// stream and consumer group are created when the first consumer subscribes.
    pub fn new<T, H>(
        queue: impl Into<String>,
        client: RedisClient,
        config: RedisConsumerGroupConfig,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Self
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        Self::build::<T, H>(queue.into(), &client, false, config, group_token, handler_factory, ctx)
    }

    /// A stopped per-key ordered group of the sequenced topic `T`, consuming its shard streams.
    pub fn new_fifo<T, H>(
        queue: impl Into<String>,
        client: RedisClient,
        config: RedisConsumerGroupConfig,
        group_token: CancellationToken,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Self
    where
        T: SequencedTopic + 'static,
        H: MessageHandler<T> + 'static,
    {
        Self::build::<T, H>(queue.into(), &client, true, config, group_token, handler_factory, ctx)
    }
}

impl BackendGroupRegistry<Redis> {
    /// The client's shutdown token: cancelled when the client is closed, which stops every group.
    pub fn broker_shutdown_token(&self) -> CancellationToken {
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
        let d = RedisConsumerGroupConfig::default();
        assert_eq!((d.min_consumers(), d.max_consumers()), (1, 4));
        assert_eq!(d.prefetch_count(), 10);
        assert_eq!(d.max_retries(), 10);
        assert_eq!(d.handler_timeout(), None);
        assert!(d.concurrent_processing());
        assert_eq!(d.max_pending_per_key(), Some(1000));
        assert_eq!(d.max_message_size(), Some(10 * 1024 * 1024));

        let c = RedisConsumerGroupConfig::new(2..=3)
            .with_prefetch_count(5)
            .with_max_retries(1)
            .with_handler_timeout(Duration::from_secs(2))
            .with_concurrent_processing(false)
            .with_max_pending_per_key(7)
            .with_max_message_size(512);
        assert_eq!((c.min_consumers(), c.max_consumers()), (2, 3));
        assert_eq!(c.prefetch_count(), 5);
        assert_eq!(c.max_retries(), 1);
        assert_eq!(c.handler_timeout(), Some(Duration::from_secs(2)));
        assert!(!c.concurrent_processing());
        assert_eq!(c.max_pending_per_key(), Some(7));
        assert_eq!(c.max_message_size(), Some(512));
        // What the engine sees.
        let settings = <RedisConsumerGroupRegistry as RegistryImpl>::group_settings(&c);
        assert!(!settings.concurrent_processing);
        assert_eq!((settings.min, settings.max, settings.prefetch), (2, 3, 5));
        assert_eq!(
            (settings.max_pending_per_key, settings.max_message_size),
            (Some(7), Some(512))
        );
        // A clone is independent and prints.
        assert!(format!("{:?}", c.clone()).contains("prefetch: 5"));
    }

    #[test]
    #[should_panic(expected = "handler_timeout must be positive")]
    fn zero_handler_timeout_panics() {
        let _ = RedisConsumerGroupConfig::default().with_handler_timeout(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "min_consumers must not exceed max_consumers")]
    fn empty_range_panics() {
        #[allow(clippy::reversed_empty_ranges)]
        let _ = RedisConsumerGroupConfig::new(3..=2);
    }
}

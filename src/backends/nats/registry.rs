//! NATS consumer groups: thin names over the engine's groups. Every consumer of a group is a client of the
//! topic's one durable pull consumer, so the server shares the stream's messages among them. A registry
//! declares a topic's streams and consumers when a group is registered, so a server-side problem surfaces
//! at registration; a group built on its own declares lazily, when its consumers subscribe.

use tokio_util::sync::CancellationToken;

use super::client::NatsClient;
use crate::facade::{BackendGroup, BackendGroupConfig, BackendGroupRegistry};
use crate::handler::MessageHandler;
use crate::markers::Nats;
use crate::topic::{SequencedTopic, Topic};

/// Settings of a NATS consumer group. `Default` is `new(1..=4)`.
pub type NatsConsumerGroupConfig = BackendGroupConfig<Nats>;

/// A group of NATS consumers of one topic's stream (or of the shards of a sequenced topic).
pub type NatsConsumerGroup = BackendGroup<Nats>;

/// Named NATS consumer groups on one client.
pub type NatsConsumerGroupRegistry = BackendGroupRegistry<Nats>;

impl BackendGroup<Nats> {
    /// A stopped group of topic `T` named `queue`; call [`NatsConsumerGroup::start`]. The topic's stream
    /// and consumer are created when the first consumer subscribes.
    pub fn new<T, H>(
        queue: impl Into<String>,
        config: NatsConsumerGroupConfig,
        client: NatsClient,
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

    /// A stopped per-key ordered group of the sequenced topic `T`, consuming its shards. One consumer at a
    /// time reads the shards; the others stand by and take over when it stops.
    pub fn new_fifo<T, H>(
        queue: impl Into<String>,
        client: NatsClient,
        config: NatsConsumerGroupConfig,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::internal::RegistryImpl;

    #[test]
    fn config_defaults_and_setters() {
        let d = NatsConsumerGroupConfig::default();
        assert_eq!((d.min_consumers(), d.max_consumers()), (1, 4));
        assert_eq!(d.prefetch_count(), 10);
        assert_eq!(d.max_retries(), 10);
        assert_eq!(d.handler_timeout(), None);
        assert!(d.concurrent_processing());
        assert_eq!(d.max_pending_per_key(), Some(1000));

        let c = NatsConsumerGroupConfig::new(2..=3)
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
        let settings = <NatsConsumerGroupRegistry as RegistryImpl>::group_settings(&c.clone());
        assert!(!settings.concurrent_processing);
        assert_eq!((settings.min, settings.max, settings.prefetch), (2, 3, 5));
        assert_eq!(settings.handler_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    #[should_panic(expected = "handler_timeout must be positive")]
    fn zero_handler_timeout_panics() {
        let _ = NatsConsumerGroupConfig::default().with_handler_timeout(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "min_consumers must not exceed max_consumers")]
    fn empty_range_panics() {
        #[allow(clippy::reversed_empty_ranges)]
        let _ = NatsConsumerGroupConfig::new(3..=2);
    }
}

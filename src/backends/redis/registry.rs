//! Redis consumer groups: thin names over the engine's groups. Every consumer of a group is a consumer of
//! the client's stream consumer group, so the streams share the group's entries among them. A registry
//! declares a topic's streams and consumer groups when a group is registered, so a server-side problem
//! surfaces at registration; a group built on its own declares lazily, when its consumers subscribe.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::RedisClient;
use super::transport::RedisTransport;
use crate::consumer_supervisor::SupervisorOutcome;
use crate::engine::registry::Group;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};

group_config!(
    /// Settings of a Redis consumer group. `Default` is `new(1..=4)`.
    RedisConsumerGroupConfig,
    default = 1..=4,
    [with_prefetch_count, with_max_retries, with_concurrent_processing, with_handler_timeout, with_max_pending_per_key, with_max_message_size, prefetch_count, max_retries, min_consumers, max_consumers, concurrent_processing, handler_timeout, max_pending_per_key, max_message_size]
);

group_facade!(
    /// A group of Redis consumers of one topic's stream (or of the shard streams of a sequenced topic).
    RedisConsumerGroup,
    RedisConsumerGroupConfig
);

impl RedisConsumerGroup {
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
        let group = Group::new::<T, H, _>(
            queue.into(),
            client.transport(),
            false,
            config.settings.clone(),
            None,
            group_token,
            handler_factory,
            ctx,
        );
        Self { group, config }
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
        Self { group, config }
    }
}

group_registry! {
    /// Named Redis consumer groups on one client.
    RedisConsumerGroupRegistry {
        connection: RedisClient,
        group: RedisConsumerGroup,
        config: RedisConsumerGroupConfig,
        transport: RedisTransport = |c| c.transport(),
        token: |c| c.shutdown_token(),
        directory: |c| c.directory(),
    }
}

impl RedisConsumerGroupRegistry {
    /// The client's shutdown token: cancelled when the client is closed, which stops every group.
    pub fn broker_shutdown_token(&self) -> CancellationToken {
        self.conn.shutdown_token()
    }
    /// Starts every group at its minimum size, waits for `signal` (or for the client to be closed), then
    /// stops every group and lets in-flight handlers finish within `drain_timeout` in all. Handlers still
    /// running at the deadline are abandoned; their entries stay pending and are delivered again.
    ///
    /// The outcome counts consumers that ended with an error and handler calls that panicked, and says
    /// whether the deadline was hit (see [`SupervisorOutcome::exit_code`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves consumers running until the runtime stops.
    pub async fn run_until_timeout<S>(mut self, signal: S, drain_timeout: Duration) -> SupervisorOutcome
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let stats: Vec<_> = self
            .groups
            .values_mut()
            .map(|g| {
                g.start();
                g.group.stats()
            })
            .collect();
        let broker = self.conn.shutdown_token();
        tokio::select! {
            _ = signal => {}
            _ = broker.cancelled() => {}
        }

        // Every consumer stops taking messages first; then each group gets what is left of the deadline.
        for g in self.groups.values() {
            g.group.stop();
        }
        let deadline = Instant::now() + drain_timeout;
        let mut timed_out = false;
        for g in self.groups.values_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            timed_out |= g.group.drain(Some(left)).await;
        }
        let (errors, panics) = stats.iter().fold((0, 0), |(e, p), s| {
            (
                e + s.errors.load(Ordering::Relaxed),
                p + s.panics.load(Ordering::Relaxed),
            )
        });
        SupervisorOutcome {
            errors,
            panics,
            timed_out,
        }
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

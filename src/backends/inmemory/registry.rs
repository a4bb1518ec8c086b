//! In-process consumer groups: thin names over the engine's groups.

use tokio_util::sync::CancellationToken;

use super::broker::InMemoryBroker;
use crate::engine::registry::Group;
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

group_registry! {
    /// Named in-process consumer groups.
    InMemoryConsumerGroupRegistry {
        connection: InMemoryBroker,
        group: InMemoryConsumerGroup,
        config: InMemoryConsumerGroupConfig,
        transport: InMemoryBroker = |b| b.clone(),
        token: |b| b.shutdown_token().clone(),
        directory: |b| b.directory(),
    }
}

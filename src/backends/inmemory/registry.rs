//! In-process consumer groups: thin names over the engine's groups.

use tokio_util::sync::CancellationToken;

use super::broker::InMemoryBroker;
use crate::facade::{BackendGroup, BackendGroupConfig, BackendGroupRegistry};
use crate::handler::MessageHandler;
use crate::markers::InMemory;
use crate::topic::{SequencedTopic, Topic};

/// Settings of an in-process consumer group. `Default` is `new(1..=1)`.
pub type InMemoryConsumerGroupConfig = BackendGroupConfig<InMemory>;

/// A group of in-process consumers of one queue (or of the shards of a sequenced topic).
pub type InMemoryConsumerGroup = BackendGroup<InMemory>;

/// Named in-process consumer groups on one broker.
pub type InMemoryConsumerGroupRegistry = BackendGroupRegistry<InMemory>;

impl BackendGroup<InMemory> {
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
        Self::build::<T, H>(queue.into(), &broker, false, config, group_token, handler_factory, ctx)
    }

    /// A stopped per-key ordered group of the sequenced topic `T`, consuming its shards.
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
        Self::build::<T, H>(queue.into(), &broker, true, config, group_token, handler_factory, ctx)
    }
}

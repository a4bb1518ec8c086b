//! The user's code: what to do with a message.

use std::future::Future;
use std::sync::Arc;

use crate::metadata::{DeadMessageMetadata, MessageMetadata};
use crate::outcome::Outcome;
use crate::topic::Topic;

/// Handles the messages of topic `T`.
///
/// The engine wraps every call with the delivery rules: a handler timeout or a panic counts as
/// [`Outcome::Retry`]; the outcome is routed by the retry budget and the topic's hold queues.
pub trait MessageHandler<T: Topic>: Send + Sync + 'static {
    /// Shared state passed to every call (a DB pool, a client, …); `()` when there is none.
    type Context: Clone + Send + Sync + 'static;

    /// Handles one delivery and says what to do with it.
    fn handle(
        &self,
        message: T::Message,
        metadata: MessageMetadata,
        ctx: &Self::Context,
    ) -> impl Future<Output = Outcome> + Send;

    /// Handles one dead-lettered message (from a DLQ consumer). The default logs a warning.
    fn handle_dead(
        &self,
        _message: T::Message,
        metadata: DeadMessageMetadata,
        _ctx: &Self::Context,
    ) -> impl Future<Output = ()> + Send {
        async move {
            tracing::warn!(
                delivery_id = %metadata.message.delivery_id,
                reason = ?metadata.reason,
                original_queue = ?metadata.original_queue,
                death_count = metadata.death_count,
                "dead-lettered message received; implement handle_dead to process it"
            );
        }
    }
}

impl<T: Topic, H: MessageHandler<T>> MessageHandler<T> for Arc<H> {
    type Context = H::Context;

    fn handle(
        &self,
        message: T::Message,
        metadata: MessageMetadata,
        ctx: &Self::Context,
    ) -> impl Future<Output = Outcome> + Send {
        (**self).handle(message, metadata, ctx)
    }

    fn handle_dead(
        &self,
        message: T::Message,
        metadata: DeadMessageMetadata,
        ctx: &Self::Context,
    ) -> impl Future<Output = ()> + Send {
        (**self).handle_dead(message, metadata, ctx)
    }
}

pub use crate::audit::MessageHandlerExt;

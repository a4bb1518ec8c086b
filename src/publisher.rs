//! Publishing typed messages.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::Backend;
use crate::backend::internal::PublisherImpl;
use crate::codec::Codec;
use crate::engine::envelope;
use crate::error::Result;
use crate::topic::Topic;
use crate::transport::Envelope;

/// Publishes messages of any topic on backend `B`. Cheap to clone; clones share the connection.
pub struct Publisher<B: Backend> {
    inner: B::PublisherImpl,
}

impl<B: Backend> Clone for Publisher<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> Publisher<B> {
    pub(crate) fn new(inner: B::PublisherImpl) -> Self {
        Self { inner }
    }

    /// Publishes one message. It gets a fresh `x-message-id`; on a sequenced topic its key is stamped as
    /// `x-sequence-key`. Returns once the broker has stored it.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Serialization`](crate::ShoveError::Serialization) or `Codec` when the message cannot
    /// be encoded; `Connection` when the broker is unreachable (nothing was stored).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: if the future is dropped the message may or may not have been stored.
    pub async fn publish<T: Topic>(&self, msg: &T::Message) -> Result<()> {
        publish_one::<T, _>(&self.inner, msg, None).await
    }

    /// Publishes one message with user headers. They travel with the message through every retry and
    /// into the DLQ.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Validation`](crate::ShoveError::Validation) when a key starts with a reserved prefix
    /// (`x-retry-count`, `x-message-id`, `x-death`, `x-sequence-key`, `x-original-queue`, case-insensitive); otherwise as
    /// [`Publisher::publish`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, as [`Publisher::publish`].
    pub async fn publish_with_headers<T: Topic>(
        &self,
        msg: &T::Message,
        headers: HashMap<String, String>,
    ) -> Result<()> {
        publish_one::<T, _>(&self.inner, msg, Some(headers)).await
    }

    /// Publishes several messages, each with its own id, in order.
    ///
    /// # Errors
    ///
    /// The first encoding error (nothing is published then), or the broker's first error; messages
    /// before the failing one may have been stored.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, as [`Publisher::publish`].
    pub async fn publish_batch<T: Topic>(&self, msgs: &[T::Message]) -> Result<()> {
        publish_many::<T, _>(&self.inner, msgs).await.1
    }
}

/// Encodes, validates and stamps one message, then hands it to the backend. Shared by the generic
/// publisher and the backend facades so every publish path follows contract rules 1–2.
pub(crate) async fn publish_one<T: Topic, P: PublisherImpl>(
    publisher: &P,
    msg: &T::Message,
    headers: Option<HashMap<String, String>>,
) -> Result<()> {
    let headers = match headers {
        Some(h) => {
            envelope::validate_user_headers(&h)?;
            Arc::new(h)
        }
        None => crate::transport::no_headers(),
    };
    let env = envelope::outbound::<T>(T::Codec::encode(msg)?, msg, headers)?;
    send::<T, P>(publisher, vec![env]).await.1
}

/// Encodes every message first (nothing is sent if one fails), then publishes them in order.
pub(crate) async fn publish_many<T: Topic, P: PublisherImpl>(publisher: &P, msgs: &[T::Message]) -> (u64, Result<()>) {
    let mut envs = Vec::with_capacity(msgs.len());
    let headers = crate::transport::no_headers();
    for m in msgs {
        let encoded = T::Codec::encode(m).and_then(|bytes| envelope::outbound::<T>(bytes, m, headers.clone()));
        match encoded {
            Ok(env) => envs.push(env),
            Err(e) => return (0, Err(e)),
        }
    }
    send::<T, P>(publisher, envs).await
}

async fn send<T: Topic, P: PublisherImpl>(publisher: &P, envs: Vec<Envelope>) -> (u64, Result<()>) {
    let started = crate::metrics::ENABLED.then(std::time::Instant::now);
    let (count, result) = publisher.publish_envelopes(T::topology(), envs).await;
    if let Some(t) = started {
        let queue = T::topology().queue();
        crate::metrics::published(queue, count);
        crate::metrics::publish_duration(queue, t.elapsed().as_secs_f64());
    }
    (count, result)
}

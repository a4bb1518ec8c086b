//! A backend's publisher: the shove 0.11 publishing methods, written once; every publish goes through
//! the backend's [`Transport::publish`](crate::transport::Transport).

use std::collections::HashMap;

use crate::backend::Backend;
use crate::backend::internal::{ClientImpl, PublisherImpl};
use crate::error::Result;
use crate::publisher;
use crate::topic::Topic;
use crate::topology::QueueTopology;
use crate::transport::{Envelope, Transport};

/// Publishes typed messages on one client: `NatsPublisher` is `BackendPublisher<Nats>`, and so on (see
/// [the module](crate::facade)). Each backend adds its shove 0.11 constructor (`new`, which is `async`
/// where shove's was) as an inherent method. Cheap to clone; clones share the connection.
pub struct BackendPublisher<B: Backend> {
    transport: <B::Client as ClientImpl>::Transport,
}

impl<B: Backend> Clone for BackendPublisher<B> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
        }
    }
}

impl<B: Backend> BackendPublisher<B> {
    /// A publisher on `transport`.
    pub(crate) fn on(transport: <B::Client as ClientImpl>::Transport) -> Self {
        Self { transport }
    }

    /// Publishes one message of topic `T` with a new message id; returns once the broker stored it.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Serialization`](crate::ShoveError::Serialization) when the message cannot be
    /// encoded; the broker's error otherwise ([`ShoveError::Connection`](crate::ShoveError::Connection)
    /// when it cannot be reached, which a retry may cure).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a publish dropped half-way may or may not have been stored.
    pub async fn publish<T: Topic>(&self, message: &T::Message) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, None).await
    }

    /// Publishes one message with user headers, which travel with it through every hop.
    ///
    /// # Errors
    ///
    /// As [`BackendPublisher::publish`], and [`ShoveError::Validation`](crate::ShoveError::Validation)
    /// for a header name shove or a broker writes itself (nothing is stored then).
    ///
    /// # Cancel safety
    ///
    /// As [`BackendPublisher::publish`].
    pub async fn publish_with_headers<T: Topic>(
        &self,
        message: &T::Message,
        headers: HashMap<String, String>,
    ) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, Some(headers)).await
    }

    /// Publishes several messages, each with its own id, in order; returns how many the broker stored,
    /// and the first error.
    ///
    /// # Cancel safety
    ///
    /// As [`BackendPublisher::publish`].
    pub async fn publish_batch<T: Topic>(&self, messages: &[T::Message]) -> (u64, Result<()>) {
        publisher::publish_many::<T, _>(self, messages).await
    }
}

impl<B: Backend> PublisherImpl for BackendPublisher<B> {
    fn publish_envelopes(
        &self,
        topology: &'static QueueTopology,
        messages: Vec<Envelope>,
    ) -> impl std::future::Future<Output = (u64, Result<()>)> + Send {
        self.transport.publish(topology, messages)
    }
}

//! Publishing to JetStream: the engine builds the envelopes (ids, headers, payload) exactly as for every
//! backend; the transport publishes them to the topic's stream and waits for the server's
//! acknowledgements.

use std::collections::HashMap;

use super::client::NatsClient;
use super::transport;
use crate::error::Result;
use crate::publisher;
use crate::topic::Topic;
use crate::topology::QueueTopology;
use crate::transport::Envelope;

/// Publishes to NATS JetStream. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct NatsPublisher {
    client: NatsClient,
}

impl NatsPublisher {
    /// A publisher on `client`'s connection.
    ///
    /// # Errors
    ///
    /// None in practice: the connection already exists (the signature is shove 0.11's).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn new(client: NatsClient) -> Result<Self> {
        Ok(Self { client })
    }

    /// Publishes one message; returns once the stream stored it.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`](crate::Publisher::publish).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: the message may or may not have been stored.
    pub async fn publish<T: Topic>(&self, message: &T::Message) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, None).await
    }

    /// Publishes one message with user headers.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish_with_headers`](crate::Publisher::publish_with_headers).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe.
    pub async fn publish_with_headers<T: Topic>(
        &self,
        message: &T::Message,
        extra_headers: HashMap<String, String>,
    ) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, Some(extra_headers)).await
    }

    /// Publishes several messages, each with its own id, in order; returns how many the stream stored and
    /// the first error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe.
    pub async fn publish_batch<T: Topic>(&self, messages: &[T::Message]) -> (u64, Result<()>) {
        publisher::publish_many::<T, _>(self, messages).await
    }

    pub(crate) async fn send(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        if let Err(e) = self.client.check_open() {
            return (0, Err(e));
        }
        transport::publish_envelopes(&self.client, topology, messages).await
    }
}

//! Publishing to JetStream: the engine builds the envelopes (ids, headers, payload) exactly as for every
//! backend; the transport publishes them to the topic's stream and waits for the server's
//! acknowledgements.

use super::client::NatsClient;
use crate::backend::internal::ClientImpl;
use crate::error::Result;
use crate::facade::BackendPublisher;
use crate::markers::Nats;

/// Publishes to JetStream; a publish returns once the server stored the message. The first publish of a
/// message carries its id as `Nats-Msg-Id`, the server's deduplication id.
pub type NatsPublisher = BackendPublisher<Nats>;

impl BackendPublisher<Nats> {
    /// A publisher on `client`.
    ///
    /// # Errors
    ///
    /// None today; `async` and fallible as in shove 0.11.
    pub async fn new(client: NatsClient) -> Result<Self> {
        Ok(Self::on(client.transport()))
    }
}

//! The RabbitMQ publisher: the generic publisher on a transport with a pool of confirm channels.

use std::sync::Arc;

use super::client::RabbitMqClient;
use super::publish::{DEFAULT_CHANNELS, PublishPool};
use super::transport::RabbitTransport;
use crate::error::Result;
use crate::facade::BackendPublisher;
use crate::markers::RabbitMq;

/// Publishes to RabbitMQ: persistent messages on a small pool of confirm channels (4 by default), each
/// publish confirmed by the broker; the first publish of a topic declares it.
pub type RabbitMqPublisher = BackendPublisher<RabbitMq>;

impl BackendPublisher<RabbitMq> {
    /// A publisher on `client` with 4 confirm channels.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when a channel cannot be opened.
    pub async fn new(client: RabbitMqClient) -> Result<Self> {
        Self::with_channel_count(client, DEFAULT_CHANNELS).await
    }

    /// A publisher on `client` with `count` confirm channels (at least one), used in turn.
    ///
    /// # Errors
    ///
    /// As [`RabbitMqPublisher::new`].
    pub async fn with_channel_count(client: RabbitMqClient, count: usize) -> Result<Self> {
        let pool = PublishPool::open(&client, count).await?;
        Ok(Self::on(RabbitTransport::with_pool(client, Arc::new(pool))))
    }
}

//! Publishing to Redis: `XADD` on the shared multiplexed connection (never a connection per publish);
//! batches go in one pipeline (see the transport's `publish`).

use super::client::RedisClient;
use crate::backend::internal::ClientImpl;
use crate::facade::BackendPublisher;
use crate::markers::Redis;

/// Publishes to Redis Streams: `XADD` to the topic's stream (a sequenced topic's shard stream); a batch is
/// one pipeline. A pipeline is not a transaction: a failed batch reports none stored, so a retry may
/// duplicate entries but never loses one.
pub type RedisPublisher = BackendPublisher<Redis>;

impl BackendPublisher<Redis> {
    /// A publisher on `client`.
    pub fn new(client: RedisClient) -> Self {
        Self::on(client.transport())
    }
}

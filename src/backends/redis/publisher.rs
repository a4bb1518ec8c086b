//! Publishing to Redis: `XADD` on the shared multiplexed connection (never a connection per publish);
//! batches go in one pipeline.

use std::collections::HashMap;

use redis::Value;

use super::client::{RedisClient, redis_error};
use super::transport::{stream_for, xadd};
use crate::error::Result;
use crate::publisher;
use crate::topic::Topic;
use crate::topology::QueueTopology;
use crate::transport::Envelope;

/// Publishes to Redis Streams. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisPublisher {
    client: RedisClient,
}

impl RedisPublisher {
    /// A publisher on `client`'s shared connection.
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }

    /// Publishes one message; returns once the server stored it.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`](crate::Publisher::publish).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: the message may or may not have been stored.
    pub async fn publish<T: Topic>(&self, msg: &T::Message) -> Result<()> {
        publisher::publish_one::<T, _>(self, msg, None).await
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
        msg: &T::Message,
        headers: HashMap<String, String>,
    ) -> Result<()> {
        publisher::publish_one::<T, _>(self, msg, Some(headers)).await
    }

    /// Publishes several messages in one pipeline; returns how many were stored and the first error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe.
    pub async fn publish_batch<T: Topic>(&self, msgs: &[T::Message]) -> (u64, Result<()>) {
        publisher::publish_many::<T, _>(self, msgs).await
    }

    pub(crate) async fn send(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        if let Err(e) = self.client.check_open() {
            return (0, Err(e));
        }
        let mut pipe = redis::pipe();
        for env in &messages {
            xadd(&mut pipe, &stream_for(topology, env), env);
        }
        let mut con = self.client.commands();
        match pipe.query_async::<Vec<Value>>(&mut con).await {
            Ok(_) => (messages.len() as u64, Ok(())),
            // A pipeline is not a transaction: some entries may be stored; report none as accepted so the
            // caller retries the batch (duplicates are possible, losses are not).
            Err(e) => (0, Err(redis_error("publishing to Redis failed", e))),
        }
    }
}

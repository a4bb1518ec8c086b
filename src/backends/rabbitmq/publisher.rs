//! Publishing to RabbitMQ: a small pool of confirm channels, persistent messages, every publish confirmed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicPublishOptions;

use super::client::{RabbitMqClient, amqp_error};
use super::headers;
use super::transport::route;
use crate::error::{Result, ShoveError};
use crate::publisher;
use crate::topic::Topic;
use crate::topology::QueueTopology;
use crate::transport::Envelope;

/// How long a publish waits for the broker's confirms.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes to RabbitMQ with publisher confirms on every path. Cheap to clone; clones share the channels.
///
/// A message counts as published once the broker confirmed it: it is then on disk (persistent delivery
/// mode, durable queue) or replicated. A topic's queues are declared on its first publish.
#[derive(Clone)]
pub struct RabbitMqPublisher {
    client: RabbitMqClient,
    channels: Arc<Vec<tokio::sync::Mutex<Option<Channel>>>>,
    next: Arc<AtomicUsize>,
    declared: Arc<std::sync::Mutex<HashSet<usize>>>,
}

impl RabbitMqPublisher {
    /// A publisher with 4 confirm channels.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`] when the channels cannot be opened.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn new(client: RabbitMqClient) -> Result<Self> {
        Self::with_channel_count(client, 4).await
    }

    /// A publisher with `count` confirm channels (at least 1); concurrent publishes spread over them.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`] when the channels cannot be opened.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn with_channel_count(client: RabbitMqClient, count: usize) -> Result<Self> {
        let mut channels = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            channels.push(tokio::sync::Mutex::new(Some(client.create_confirm_channel().await?)));
        }
        Ok(Self {
            client,
            channels: Arc::new(channels),
            next: Arc::default(),
            declared: Arc::default(),
        })
    }

    /// Publishes one message and waits for the broker's confirm.
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
        headers: HashMap<String, String>,
    ) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, Some(headers)).await
    }

    /// Publishes several messages (pipelined on one channel) and waits for every confirm. Returns how
    /// many the broker confirmed, and the first error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe.
    pub async fn publish_batch<T: Topic>(&self, messages: &[T::Message]) -> (u64, Result<()>) {
        publisher::publish_many::<T, _>(self, messages).await
    }

    /// Publishes already-encoded messages of `topology`; returns how many were confirmed.
    pub(crate) async fn send(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        let key = std::ptr::from_ref(topology) as usize;
        let known = self.declared.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
        if !known {
            if let Err(e) = self.client.declare(topology).await {
                return (0, Err(e));
            }
            self.declared.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        }
        let slot = &self.channels[self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()];
        // Publish under the slot's lock (one pipeline per channel), wait for confirms outside it.
        let confirms = {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_none_or(|c| !c.status().connected()) {
                match self.client.create_confirm_channel().await {
                    Ok(c) => *guard = Some(c),
                    Err(e) => return (0, Err(e)),
                }
            }
            let Some(channel) = guard.as_ref() else {
                return (0, Err(ShoveError::Connection("no RabbitMQ channel".into())));
            };
            let mut confirms = Vec::with_capacity(messages.len());
            for env in &messages {
                let (exchange, routing_key) = route(topology, env);
                let sent = channel
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &env.payload,
                        headers::properties(env),
                    )
                    .await;
                match sent {
                    Ok(c) => confirms.push(c),
                    Err(e) => {
                        *guard = None;
                        confirms.clear();
                        return (0, Err(amqp_error("publishing to RabbitMQ failed", e)));
                    }
                }
            }
            confirms
        };
        let mut accepted = 0u64;
        for confirm in confirms {
            let outcome = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Err(_) => Err(ShoveError::Connection(format!(
                    "RabbitMQ did not confirm a publish to '{}' within {CONFIRM_TIMEOUT:?}",
                    topology.queue()
                ))),
                Ok(Err(e)) => Err(amqp_error("publishing to RabbitMQ failed", e)),
                Ok(Ok(c)) if !c.is_ack() => Err(ShoveError::Connection(format!(
                    "RabbitMQ refused a publish to '{}' (nack)",
                    topology.queue()
                ))),
                Ok(Ok(c)) => match c.take_message() {
                    Some(_) => Err(ShoveError::Topology(format!(
                        "RabbitMQ could not route a message of '{}': its queues do not exist; declare the topic",
                        topology.queue()
                    ))),
                    None => Ok(()),
                },
            };
            // Confirms arrive in order: the first failure ends the count.
            if let Err(e) = outcome {
                return (accepted, Err(e));
            }
            accepted += 1;
        }
        (accepted, Ok(()))
    }
}

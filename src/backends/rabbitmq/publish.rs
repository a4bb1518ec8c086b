//! Publishing to RabbitMQ: a small pool of confirm channels, persistent messages, every publish confirmed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::Channel;

use super::client::RabbitMqClient;
use super::transport::{await_confirm, route, send_persistent};
use crate::error::{Result, ShoveError};
use crate::topology::QueueTopology;
use crate::transport::Envelope;

/// How long a publish waits for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Confirm channels a publisher uses unless it asks for another count.
pub(crate) const DEFAULT_CHANNELS: usize = 4;

/// A publisher's confirm channels, used in turn (one pipeline per channel), each reopened when it closed;
/// and the topics it has declared, so that the first publish of each declares it once.
pub(crate) struct PublishPool {
    channels: Vec<tokio::sync::Mutex<Option<Channel>>>,
    next: AtomicUsize,
    declared: std::sync::Mutex<HashSet<usize>>,
}

impl PublishPool {
    /// `count` confirm channels (at least one), opened now so that a refusal shows at once.
    pub(crate) async fn open(client: &RabbitMqClient, count: usize) -> Result<Self> {
        let mut channels = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            channels.push(tokio::sync::Mutex::new(Some(client.create_confirm_channel().await?)));
        }
        Ok(Self {
            channels,
            next: AtomicUsize::new(0),
            declared: std::sync::Mutex::default(),
        })
    }

    /// Publishes `messages` in order on the next channel and waits for their confirms; returns how many
    /// the broker confirmed before the first failure, and that failure.
    pub(crate) async fn publish(
        &self,
        client: &RabbitMqClient,
        topology: &'static QueueTopology,
        messages: Vec<Envelope>,
    ) -> (u64, Result<()>) {
        let key = std::ptr::from_ref(topology) as usize;
        let known = self.declared.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
        if !known {
            if let Err(e) = client.declare(topology).await {
                return (0, Err(e));
            }
            self.declared.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        }
        let slot = &self.channels[self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()];
        // Publish under the slot's lock (one pipeline per channel), wait for confirms outside it.
        let confirms = {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_none_or(|c| !c.status().connected()) {
                match client.create_confirm_channel().await {
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
                match send_persistent(channel, exchange, routing_key, env).await {
                    Ok(c) => confirms.push(c),
                    Err(e) => {
                        *guard = None;
                        return (0, Err(e));
                    }
                }
            }
            confirms
        };
        let mut accepted = 0u64;
        for confirm in confirms {
            let outcome = await_confirm(confirm, CONFIRM_TIMEOUT, &format!("'{}'", topology.queue())).await;
            // Confirms arrive in order: the first failure ends the count.
            if let Err(e) = outcome {
                return (accepted, Err(e));
            }
            accepted += 1;
        }
        (accepted, Ok(()))
    }
}

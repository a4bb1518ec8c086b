//! The connection to RabbitMQ: one AMQP connection per client, redialled when it dies.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::config::{ManagementConfig, RabbitMqConfig};
use super::topology;
use super::transport::{RabbitOptions, RabbitTransport};
use crate::backend::Backend;
use crate::backend::internal::ClientImpl;
use crate::consumer::ConsumerOptions;
use crate::error::{Result, ShoveError};
use crate::topology::QueueTopology;
use crate::transport::Attachments;
use crate::transport::Depth;
use crate::transport::redact::{redact_url, without_secrets};

/// How long one dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to RabbitMQ shared by publishers, consumers and declarers. Cheap to clone.
///
/// When the connection dies (broker restart, network), the next operation that needs it dials again;
/// consumers and publishers built on the client resume on the new connection.
#[derive(Clone)]
pub struct RabbitMqClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: RabbitMqConfig,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    shutdown: CancellationToken,
    /// What the layers above keep per client (the consumer groups `Broker::autoscaler` sees).
    attachments: Attachments,
    /// Shard counts of the sequenced topics declared through this client, by main queue name, so depth
    /// queries on a main queue can sum its shards.
    shards: std::sync::Mutex<std::collections::HashMap<String, u16>>,
}

/// Maps a lapin error: broker refusals (AMQP soft errors such as a missing queue) are topology errors,
/// everything else (I/O, closed connection or channel) is a retryable connection error.
pub(crate) fn amqp_error(context: &str, e: lapin::Error) -> ShoveError {
    if e.is_amqp_soft_error() {
        ShoveError::Topology(format!("{context}: {e}"))
    } else {
        ShoveError::Connection(format!("{context}: {e}"))
    }
}

async fn dial(config: &RabbitMqConfig) -> Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name(format!("shove-rs-{}", std::process::id()).into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&config.uri, properties)).await {
        Ok(Ok(c)) => Ok(c),
        // lapin quotes the URI in some errors: its password goes too.
        Ok(Err(e)) => Err(ShoveError::Connection(without_secrets(
            &format!(
                "cannot connect to RabbitMQ at {}: {e}; check that the broker runs and the URI is right",
                redact_url(&config.uri)
            ),
            &config.uri,
        ))),
        Err(_) => Err(ShoveError::Connection(format!(
            "connecting to RabbitMQ at {} timed out after {CONNECT_TIMEOUT:?}",
            redact_url(&config.uri)
        ))),
    }
}

impl RabbitMqClient {
    /// Connects (5 s timeout).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`] when the broker cannot be reached or refuses the credentials.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn connect(config: &RabbitMqConfig) -> Result<Self> {
        let connection = dial(config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                connection: tokio::sync::Mutex::new(Some(Arc::new(connection))),
                shutdown: CancellationToken::new(),
                attachments: Attachments::default(),
                shards: std::sync::Mutex::default(),
            }),
        })
    }

    /// Connects, trying up to `max_attempts` times with a doubling backoff (100 ms up to 5 s).
    ///
    /// # Errors
    ///
    /// The last attempt's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn connect_with_retry(config: &RabbitMqConfig, max_attempts: u32) -> Result<Self> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match Self::connect(config).await {
                Ok(c) => return Ok(c),
                Err(e) if attempt >= max_attempts.max(1) => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "connecting to RabbitMQ failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    /// A new, independent connection with the same settings.
    ///
    /// # Errors
    ///
    /// As [`RabbitMqClient::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn dial_sibling(&self) -> Result<Self> {
        Self::connect(&self.inner.config).await
    }

    /// The live connection, dialling a new one if the current one died.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ShoveError::Connection(
                "the RabbitMQ client has been shut down; create a new client".into(),
            ));
        }
        let mut current = self.inner.connection.lock().await;
        if let Some(c) = current.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        tracing::info!(uri = %redact_url(&self.inner.config.uri), "dialling RabbitMQ");
        let fresh = Arc::new(dial(&self.inner.config).await?);
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// Opens a channel.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`] when no connection can be had.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn create_channel(&self) -> Result<Channel> {
        let connection = self.connection().await?;
        connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("cannot open a RabbitMQ channel", e))
    }

    /// Opens a channel in publisher-confirm mode.
    ///
    /// # Errors
    ///
    /// As [`RabbitMqClient::create_channel`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn create_confirm_channel(&self) -> Result<Channel> {
        let channel = self.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error("cannot enable publisher confirms", e))?;
        Ok(channel)
    }

    /// Opens a channel in transaction mode.
    ///
    /// # Errors
    ///
    /// As [`RabbitMqClient::create_channel`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    #[cfg(feature = "rabbitmq-transactional")]
    pub async fn create_tx_channel(&self) -> Result<Channel> {
        let channel = self.create_channel().await?;
        channel
            .tx_select()
            .await
            .map_err(|e| amqp_error("cannot enable AMQP transactions", e))?;
        Ok(channel)
    }

    /// Cancelled when the client shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// The management API settings, if configured.
    pub fn management_config(&self) -> Option<ManagementConfig> {
        self.inner.config.management.clone()
    }

    /// Whether the current connection is open.
    pub fn is_connected(&self) -> bool {
        match self.inner.connection.try_lock() {
            Ok(c) => c.as_ref().is_some_and(|c| c.status().connected()),
            // Someone is dialling or checking right now: not known to be connected.
            Err(_) => false,
        }
    }

    /// Checks the broker answers within `timeout` by opening and closing a channel.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`] when it does not.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        let check = async {
            let channel = self.create_channel().await?;
            channel
                .close(200, "ping".into())
                .await
                .map_err(|e| amqp_error("RabbitMQ ping failed", e))
        };
        tokio::time::timeout(timeout, check)
            .await
            .map_err(|_| ShoveError::Connection(format!("RabbitMQ did not answer within {timeout:?}")))?
    }

    /// Stops every consumer of this client and closes the connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the client is marked shut down first.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        if let Some(c) = self.inner.connection.lock().await.take()
            && let Err(e) = c.close(200, "shove client shut down".into()).await
        {
            tracing::debug!(error = %e, "closing the RabbitMQ connection");
        }
    }

    /// Declares `topology` on short-lived channels, opening another when RabbitMQ refuses a hold queue as
    /// a quorum queue (the refusal closes the channel), so that the hold queue can be kept as the classic
    /// queue it is.
    pub(crate) async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        let channel = self.create_channel().await?;
        let mut result = topology::declare_all_but_holds(&channel, topology).await;
        let mut channel = Some(channel);
        for hold in topology::holds_of(topology) {
            if result.is_err() {
                break;
            }
            result = topology::declare_hold(self, &mut channel, &hold).await;
        }
        if let Some(channel) = channel {
            let _ = channel.close(200, "declared".into()).await;
        }
        if let Some(seq) = topology.sequencing() {
            self.inner
                .shards
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(topology.queue().to_string(), seq.routing_shards());
        }
        result
    }

    /// Ready messages of `queue` (a sequenced topic's main queue name covers its shards), from passive
    /// declares. RabbitMQ does not report unacknowledged counts this way: `in_flight` is 0 (use the
    /// management API for it).
    pub(crate) async fn queue_depth(&self, queue: &str) -> Result<Depth> {
        let (ready, _) = self.passive(queue).await?;
        Ok(Depth { ready, in_flight: 0 })
    }

    /// Consumers of `queue` (summed over shards for a sequenced topic).
    pub(crate) async fn consumer_count(&self, queue: &str) -> Result<u64> {
        Ok(self.passive(queue).await?.1)
    }

    async fn passive(&self, queue: &str) -> Result<(u64, u64)> {
        let shards = self
            .inner
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .copied();
        let names: Vec<String> = match shards {
            Some(n) => (0..n).map(|i| crate::topology::shard_queue_name(queue, i)).collect(),
            None => vec![queue.to_string()],
        };
        let channel = self.create_channel().await?;
        let mut total = (0, 0);
        for name in &names {
            match topology::passive_counts(&channel, name).await {
                Ok((ready, consumers)) => total = (total.0 + ready, total.1 + consumers),
                Err(e) => return Err(e),
            }
        }
        let _ = channel.close(200, "counted".into()).await;
        Ok(total)
    }
}

impl ClientImpl for RabbitMqClient {
    type Transport = RabbitTransport;
    const DEFAULT_GROUP_SIZE: (u16, u16) = (1, 4);

    fn transport(&self) -> RabbitTransport {
        RabbitTransport::new(self.clone())
    }

    fn connection_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn attachments(&self) -> &Attachments {
        &self.inner.attachments
    }

    fn transport_options<B: Backend>(options: &ConsumerOptions<B>) -> RabbitOptions {
        RabbitOptions {
            hold_queue_timeout: options.hold_queue_timeout,
            #[cfg(feature = "rabbitmq-transactional")]
            exactly_once: options.exactly_once,
        }
    }
}

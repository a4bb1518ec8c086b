//! The connection to Redis: a shared, self-reconnecting multiplexed connection for commands, plus one
//! connection per consumer for its blocking reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::config::{RedisConfig, RedisMode};
use super::transport::{RedisTransport, group_stats, shard_stream_name};
use crate::backend::internal::ClientImpl;
use crate::error::{Result, ShoveError};
use crate::topology::QueueTopology;
use crate::transport::Attachments;
use crate::transport::Depth;
use crate::transport::redact::{redact_url, without_secrets};

/// A connection to Redis (or Valkey) shared by publishers, consumers and declarers. Cheap to clone.
/// Obtain one with `<Redis as Backend>::connect(config)` or through `Broker<Redis>`.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    commands: ConnectionManager,
    group: String,
    shutdown: CancellationToken,
    /// What the layers above keep per client (the consumer groups `Broker::autoscaler` sees).
    attachments: Attachments,
    /// Shard counts of the sequenced topics declared through this client, by main queue name.
    shards: Mutex<HashMap<String, u16>>,
}

/// Maps a Redis error: I/O and connection trouble is retryable, anything else is not.
pub(crate) fn redis_error(context: &str, e: redis::RedisError) -> ShoveError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        ShoveError::Connection(format!("{context}: {e}"))
    } else {
        ShoveError::Topology(format!("{context}: {e}"))
    }
}

/// Warns when the server keeps no append-only file: what it acknowledged since its last snapshot
/// (messages, retries waiting out their delay, acknowledgements) is then lost if it restarts. Says
/// nothing when the server refuses `CONFIG GET`, as managed services often do.
async fn warn_if_not_durable(con: &mut ConnectionManager, shown: &str) {
    let reply = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async::<Value>(con)
        .await;
    match reply {
        Ok(reply) => {
            if let Some(warning) = persistence_warning(&reply) {
                tracing::warn!(server = %shown, "{warning}");
            }
        }
        Err(e) => tracing::debug!(server = %shown, error = %e, "cannot read the Redis persistence settings"),
    }
}

/// The warning for a `CONFIG GET appendonly` reply (`[name, value]`, or a map on RESP3), if any.
fn persistence_warning(reply: &Value) -> Option<&'static str> {
    let value = match reply {
        Value::Array(pair) => pair.get(1),
        Value::Map(pairs) => pairs.first().map(|(_, v)| v),
        _ => None,
    };
    let off = match value {
        Some(Value::BulkString(v)) => v.as_slice() == b"no",
        Some(Value::SimpleString(v)) => v == "no",
        _ => false,
    };
    off.then_some(
        "Redis keeps no append-only file (appendonly no): messages, delayed retries and acknowledgements \
         since its last snapshot are lost if it restarts; set appendonly yes (appendfsync everysec, or \
         always for no loss at all) where messages must survive a restart",
    )
}

impl RedisClient {
    pub(crate) async fn connect(config: RedisConfig) -> Result<Self> {
        let url = match &config.mode {
            RedisMode::Standalone { url } => url.clone(),
            RedisMode::Cluster { .. } => {
                return Err(ShoveError::Connection(
                    "Redis Cluster is not supported by this build; connect to a standalone server \
                     (RedisMode::Standalone)"
                        .into(),
                ));
            }
        };
        // Errors show the URL without its password, also where the client library quotes it.
        let shown = redact_url(&url);
        let client = redis::Client::open(url.as_str())
            .map_err(|e| ShoveError::Connection(without_secrets(&format!("invalid Redis URL '{shown}': {e}"), &url)))?;
        // One quick retry per failed command: beyond that the engine's reconnect policy paces the
        // attempts and counts them against `max_reconnect_attempts`, as on every backend. (The manager's
        // default of six retries with growing delays spends about 13 s inside one failed read.)
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout()))
            .set_connection_timeout(Some(config.connection_timeout()))
            .set_number_of_retries(1);
        // The first connection is tried once (bounded by the connection timeout) so a wrong URL fails fast;
        // afterwards the manager reconnects by itself with backoff.
        let first = ConnectionManager::new_with_config(client.clone(), manager_config.clone().set_number_of_retries(0));
        let commands = match tokio::time::timeout(config.connection_timeout() + Duration::from_secs(1), first).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(ShoveError::Connection(without_secrets(
                    &format!(
                        "cannot connect to Redis at {shown}: {e}; check that the server runs and the URL is right"
                    ),
                    &url,
                )));
            }
            Err(_) => {
                return Err(ShoveError::Connection(format!(
                    "connecting to Redis at {shown} timed out after {:?}",
                    config.connection_timeout()
                )));
            }
        };
        warn_if_not_durable(&mut commands.clone(), &shown).await;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager_config,
                commands,
                group: config.resolved_group().to_string(),
                shutdown: CancellationToken::new(),
                attachments: Attachments::default(),
                shards: Mutex::default(),
            }),
        })
    }

    /// The shared command connection (reconnects by itself).
    pub(crate) fn commands(&self) -> ConnectionManager {
        self.inner.commands.clone()
    }

    /// A connection of its own, for blocking reads that must not hold up other commands.
    pub(crate) async fn dedicated(&self) -> Result<ConnectionManager> {
        ConnectionManager::new_with_config(self.inner.client.clone(), self.inner.manager_config.clone())
            .await
            .map_err(|e| redis_error("cannot open a Redis connection", e))
    }

    /// Fails once the client has been shut down.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ShoveError::Connection(
                "the Redis client has been shut down; connect a new one".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn group(&self) -> &str {
        &self.inner.group
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    pub(crate) fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// The streams holding `queue`'s messages: its shard streams for a sequenced topic declared through
    /// this client, the stream of that name otherwise.
    pub(crate) fn streams_of(&self, queue: &str) -> Vec<String> {
        match self.inner.shards.lock().unwrap_or_else(|p| p.into_inner()).get(queue) {
            Some(n) => (0..*n).map(|i| shard_stream_name(queue, i)).collect(),
            None => vec![queue.to_string()],
        }
    }

    /// Creates the streams and consumer groups of `topology` (idempotent).
    pub(crate) async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.check_open()?;
        let mut streams = match topology.sequencing() {
            Some(seq) => {
                self.inner
                    .shards
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(topology.queue().to_string(), seq.routing_shards());
                (0..seq.routing_shards())
                    .map(|i| shard_stream_name(topology.queue(), i))
                    .collect()
            }
            None => vec![topology.queue().to_string()],
        };
        streams.extend(topology.dlq().map(str::to_string));
        let mut con = self.commands();
        for stream in streams {
            // From the first entry: messages published before the group existed are delivered too.
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(self.group())
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(redis_error(&format!("cannot create consumer group on '{stream}'"), e)),
            }
        }
        Ok(())
    }

    /// Entries not yet delivered to the group (`ready`) and delivered but unacknowledged (`in_flight`).
    pub(crate) async fn queue_depth(&self, queue: &str) -> Result<Depth> {
        let mut con = self.commands();
        let mut depth = Depth::default();
        for stream in self.streams_of(queue) {
            let (ready, pending) = group_stats(&mut con, &stream, self.group()).await?;
            depth.ready += ready;
            depth.in_flight += pending;
        }
        Ok(depth)
    }

    /// Checks the server answers within `timeout`.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<()> {
        self.check_open()?;
        let mut con = self.commands();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut con);
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(redis_error("Redis ping failed", e)),
            Err(_) => Err(ShoveError::Connection(format!(
                "Redis did not answer within {timeout:?}"
            ))),
        }
    }
}

impl ClientImpl for RedisClient {
    type Transport = RedisTransport;
    const DEFAULT_GROUP_SIZE: (u16, u16) = (1, 4);

    fn transport(&self) -> RedisTransport {
        RedisTransport::new(self.clone())
    }

    fn connection_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn attachments(&self) -> &Attachments {
        &self.inner.attachments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_off_is_warned_about() {
        let pair = |v: &str| {
            Value::Array(vec![
                Value::BulkString(b"appendonly".to_vec()),
                Value::BulkString(v.as_bytes().to_vec()),
            ])
        };
        assert!(persistence_warning(&pair("no")).is_some());
        assert!(persistence_warning(&pair("yes")).is_none());
        let map = Value::Map(vec![(
            Value::BulkString(b"appendonly".to_vec()),
            Value::SimpleString("no".into()),
        )]);
        assert!(persistence_warning(&map).is_some());
        assert!(
            persistence_warning(&Value::Nil).is_none(),
            "a refused CONFIG GET says nothing"
        );
    }
}

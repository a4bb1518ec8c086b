//! The hand-back ledger: how many times shove handed each stream message back to the server.
//!
//! JetStream counts every delivery of a message, and a `-NAK` (a hand-back: a drain's unstarted
//! messages, a full key buffer, a release with a delay) raises that count just as an attempt lost with
//! its consumer does. The engine must count the lost attempts against the retry budget (contract rule
//! 9) and the hand-backs not, so every hand-back is written here, on the server, before its `-NAK`: a
//! delivery's lost attempts are then its delivery count, less one, less its hand-backs. Only
//! redeliveries (a delivery count above one) read the ledger, so the common path costs nothing.
//!
//! The ledger is a stream of its own, `SHOVE_HANDBACKS`, keeping the last record per subject
//! `shove-handbacks.<stream>.<sequence>` (the way the sequenced-topic locks are kept: plain stream
//! operations that every server since 2.9 has).

use std::time::Duration;

use async_nats::jetstream::stream::{self, StorageType};
use bytes::Bytes;

use super::client::NatsClient;
use crate::error::{Result, ShoveError};

/// The ledger's stream, named so it cannot be a user's queue stream.
const STREAM: &str = "SHOVE_HANDBACKS";
/// Its subjects' prefix.
const SUBJECT_PREFIX: &str = "shove-handbacks";
/// How long a record is kept after its last hand-back: far longer than any message waits in a stream
/// between a hand-back and its redelivery.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The ledger of one client.
#[derive(Clone)]
pub(crate) struct Ledger {
    js: async_nats::jetstream::Context,
    stream: stream::Stream,
}

/// The subject of stream message `sequence` of `stream`.
pub(super) fn key(stream: &str, sequence: u64) -> String {
    format!("{SUBJECT_PREFIX}.{stream}.{sequence}")
}

impl Ledger {
    /// Opens the ledger's stream, creating it on first use.
    pub(super) async fn open(client: &NatsClient) -> Result<Self> {
        let config = stream::Config {
            name: STREAM.to_string(),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            max_messages_per_subject: 1,
            max_age: MAX_AGE,
            storage: StorageType::File,
            ..Default::default()
        };
        let stream = client.jetstream().get_or_create_stream(config).await.map_err(|e| {
            ShoveError::Connection(format!(
                "cannot create or open the JetStream stream {STREAM} of hand-backs (is JetStream enabled?): {e}"
            ))
        })?;
        Ok(Self {
            js: client.jetstream().clone(),
            stream,
        })
    }

    /// The hand-backs recorded under `key` (0 when none).
    pub(super) async fn handbacks(&self, key: &str) -> Result<u64> {
        match self.stream.get_last_raw_message_by_subject(key).await {
            Ok(m) => Ok(std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)),
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => Ok(0),
            Err(e) => Err(ShoveError::Connection(format!(
                "reading the hand-back ledger failed: {e}"
            ))),
        }
    }

    /// Records one more hand-back under `key`. Only the subscription holding the message writes its key,
    /// so the read and the write do not race.
    pub(super) async fn record(&self, key: &str) -> Result<()> {
        let n = self.handbacks(key).await? + 1;
        let ack = self
            .js
            .publish(key.to_string(), Bytes::from(n.to_string()))
            .await
            .map_err(|e| ShoveError::Connection(format!("writing the hand-back ledger failed: {e}")))?;
        ack.await
            .map(|_| ())
            .map_err(|e| ShoveError::Connection(format!("the server did not confirm a hand-back record: {e}")))
    }
}

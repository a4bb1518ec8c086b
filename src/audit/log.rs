//! shove's own audit store: `ShoveAuditHandler` publishes every record to the `AuditLog` topic.

use std::future::Future;

use serde::Serialize;

use super::{AuditHandler, AuditRecord};
use crate::backend::Backend;
use crate::error::Result;
use crate::publisher::Publisher;
use crate::topic::Topic;

/// The main queue of the [`AuditLog`] topic. Handlers of that queue are never audited.
pub(super) const AUDIT_QUEUE: &str = "shove-audit-log";

/// shove's built-in audit topic: records published by [`ShoveAuditHandler`].
///
/// Queue `"shove-audit-log"` with dead-letter queue `"shove-audit-log-dlq"`, JSON-encoded, payloads as
/// [`serde_json::Value`]. Handlers of this topic wrapped in [`Audited`](super::Audited) are not audited.
#[cfg_attr(docsrs, doc(cfg(feature = "audit")))]
pub struct AuditLog;

impl Topic for AuditLog {
    type Message = AuditRecord<serde_json::Value>;
    type Codec = crate::codec::JsonCodec;

    fn topology() -> &'static crate::topology::QueueTopology {
        static TOPOLOGY: std::sync::OnceLock<crate::topology::QueueTopology> = std::sync::OnceLock::new();
        TOPOLOGY.get_or_init(|| crate::topology::TopologyBuilder::new(AUDIT_QUEUE).dlq().build())
    }
}

/// An [`AuditHandler`] that publishes every record to the [`AuditLog`] topic.
///
/// The payload is converted to [`serde_json::Value`], so one audit topic carries records of every topic.
/// Declare [`AuditLog`] before use like any other topic.
#[cfg_attr(docsrs, doc(cfg(feature = "audit")))]
pub struct ShoveAuditHandler<B: Backend> {
    publisher: Publisher<B>,
}

impl<B: Backend> Clone for ShoveAuditHandler<B> {
    fn clone(&self) -> Self {
        Self {
            publisher: self.publisher.clone(),
        }
    }
}

impl<B: Backend> ShoveAuditHandler<B> {
    /// Publishes audit records with `publisher`.
    pub fn new(publisher: Publisher<B>) -> Self {
        Self { publisher }
    }

    /// Publishes audit records with a clone of `publisher` (clones share the connection).
    pub fn for_publisher(publisher: &Publisher<B>) -> Self {
        Self::new(publisher.clone())
    }
}

impl<T, B> AuditHandler<T> for ShoveAuditHandler<B>
where
    T: Topic,
    T::Message: Serialize,
    B: Backend,
{
    /// Converts the payload to JSON and publishes the record to [`AuditLog`].
    ///
    /// # Errors
    ///
    /// [`ShoveError::Serialization`](crate::ShoveError::Serialization) when the payload cannot be
    /// represented as JSON; otherwise whatever [`Publisher::publish`] returns.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, as [`Publisher::publish`]: if dropped, the record may or may not have been
    /// published.
    fn audit(&self, record: &AuditRecord<T::Message>) -> impl Future<Output = Result<()>> + Send {
        let converted = serde_json::to_value(&record.payload).map(|payload| AuditRecord {
            trace_id: record.trace_id.clone(),
            topic: record.topic.clone(),
            payload,
            metadata: record.metadata.clone(),
            outcome: record.outcome.clone(),
            duration_ms: record.duration_ms,
            timestamp: record.timestamp,
        });
        let publisher = &self.publisher;
        async move {
            let record = converted?;
            publisher.publish::<AuditLog>(&record).await
        }
    }
}

//! Audit trails: one [`AuditRecord`] per delivery attempt.
//!
//! Wrap any [`MessageHandler`] in [`Audited`] (or call
//! [`MessageHandlerExt::audited`]) and give it an [`AuditHandler`] that
//! stores the records somewhere. Every attempt — first delivery, retry, redelivery after a crash — goes
//! through the wrapper, so every attempt produces a record, on every backend.
//!
//! With the `audit` feature, `ShoveAuditHandler` publishes the records to shove's own
//! `AuditLog` topic (`"shove-audit-log"`, with a DLQ), where any consumer can pick them up.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ShoveError};
use crate::handler::MessageHandler;
use crate::metadata::{DeadMessageMetadata, MessageMetadata};
use crate::outcome::Outcome;
use crate::topic::Topic;

#[cfg(feature = "audit")]
mod log;
#[cfg(feature = "audit")]
pub use log::{AuditLog, ShoveAuditHandler};

/// The header whose value becomes [`AuditRecord::trace_id`] when present.
const TRACE_ID_HEADER: &str = "x-trace-id";

/// The default bound on one [`AuditHandler::audit`] call made by [`Audited`].
const DEFAULT_AUDIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to one delivery attempt of a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord<M> {
    /// The `x-trace-id` header of the message when it has one, otherwise its
    /// [`delivery_id`](MessageMetadata::delivery_id).
    pub trace_id: String,
    /// The topic's main queue name.
    pub topic: String,
    /// The message as it was handed to the handler.
    pub payload: M,
    /// The delivery metadata of this attempt.
    pub metadata: MessageMetadata,
    /// What the wrapped handler decided.
    pub outcome: Outcome,
    /// How long the wrapped handler took, in whole milliseconds.
    pub duration_ms: u64,
    /// When handling of this attempt started.
    pub timestamp: DateTime<Utc>,
}

/// Stores [`AuditRecord`]s produced by [`Audited`].
///
/// Implement it with `async fn audit(&self, record: &AuditRecord<T::Message>) -> Result<()>`; the
/// returned future must be `Send`.
pub trait AuditHandler<T: Topic>: Send + Sync + 'static {
    /// Stores one record. Returning an error makes the audited delivery attempt count as
    /// [`Outcome::Retry`], so the attempt is redelivered and audited again.
    ///
    /// # Cancel safety
    ///
    /// [`Audited`] drops this future when the audit timeout expires; implementations should tolerate
    /// that (the record may or may not have been stored, and it is produced again on redelivery).
    fn audit(&self, record: &AuditRecord<T::Message>) -> impl Future<Output = Result<()>> + Send;
}

/// A [`MessageHandler`] wrapper that records every delivery attempt through an [`AuditHandler`].
///
/// For each attempt it clones the message, runs the wrapped handler, measures how long it took and hands
/// an [`AuditRecord`] to the audit handler before returning the wrapped handler's outcome.
///
/// **An audit failure turns the outcome into [`Outcome::Retry`]**: when the audit handler returns an
/// error or does not finish within the audit timeout (5 seconds by default, see
/// [`Audited::with_audit_timeout`]), the failure is logged and the attempt is redelivered — and audited
/// again — later. Audit records are never silently lost; the price is that the wrapped handler may see
/// the same message again (as it may after any retry).
///
/// Dead-lettered messages ([`MessageHandler::handle_dead`]) are passed to the wrapped handler without
/// an audit record.
///
/// With the `audit` feature, a handler of the `AuditLog` topic (queue `"shove-audit-log"`) itself is never audited, so auditing
/// the audit consumer cannot recurse.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
///
/// use serde::{Deserialize, Serialize};
/// use shove::{
///     define_topic, AuditHandler, AuditRecord, Audited, MessageHandler, MessageMetadata, Outcome,
///     TopologyBuilder,
/// };
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct OrderPaid {
///     id: u64,
/// }
///
/// define_topic!(Orders, OrderPaid, TopologyBuilder::new("orders").dlq().build());
///
/// struct Billing;
///
/// impl MessageHandler<Orders> for Billing {
///     type Context = ();
///     async fn handle(&self, _msg: OrderPaid, _meta: MessageMetadata, _ctx: &()) -> Outcome {
///         Outcome::Ack
///     }
/// }
///
/// #[derive(Clone, Default)]
/// struct Collect(Arc<Mutex<Vec<AuditRecord<OrderPaid>>>>);
///
/// impl AuditHandler<Orders> for Collect {
///     async fn audit(&self, record: &AuditRecord<OrderPaid>) -> shove::error::Result<()> {
///         self.0.lock().unwrap().push(record.clone());
///         Ok(())
///     }
/// }
///
/// let records = Collect::default();
/// let handler = Audited::new(Billing, records.clone());
///
/// let metadata = MessageMetadata {
///     retry_count: 0,
///     delivery_id: "msg-1".into(),
///     redelivered: false,
///     headers: Arc::new(HashMap::new()),
/// };
/// let outcome = futures::executor::block_on(MessageHandler::<Orders>::handle(
///     &handler,
///     OrderPaid { id: 7 },
///     metadata,
///     &(),
/// ));
///
/// assert!(matches!(outcome, Outcome::Ack));
/// let records = records.0.lock().unwrap();
/// assert_eq!(records.len(), 1);
/// assert_eq!(records[0].trace_id, "msg-1");
/// assert_eq!(records[0].topic, "orders");
/// assert_eq!(records[0].payload.id, 7);
/// ```
#[derive(Debug, Clone)]
pub struct Audited<H, A> {
    handler: H,
    // Shared so that an attempt the engine abandons can still be audited from a task of its own.
    audit_handler: Arc<A>,
    audit_timeout: Option<Duration>,
}

impl<H, A> Audited<H, A> {
    /// Wraps `handler` so that every delivery attempt is recorded through `audit_handler`.
    ///
    /// Each [`AuditHandler::audit`] call is bounded by a 5-second timeout; change it with
    /// [`Audited::with_audit_timeout`].
    pub fn new(handler: H, audit_handler: A) -> Self {
        Self {
            handler,
            audit_handler: Arc::new(audit_handler),
            audit_timeout: Some(DEFAULT_AUDIT_TIMEOUT),
        }
    }

    /// Sets how long one [`AuditHandler::audit`] call may take (default 5 seconds). When it takes longer,
    /// the call is abandoned, the failure is logged and the attempt counts as [`Outcome::Retry`].
    ///
    /// The bound is enforced when the handler runs inside a Tokio runtime with timers enabled, as shove's
    /// consumers always do; when driven outside any Tokio runtime the audit call is awaited unbounded.
    pub fn with_audit_timeout(mut self, timeout: Duration) -> Self {
        self.audit_timeout = Some(timeout);
        self
    }

    /// Runs the audit handler on `record`, bounded by the audit timeout when one is set and a Tokio
    /// runtime is available. Returns a description of the failure, if any.
    async fn store<T>(&self, record: &AuditRecord<T::Message>) -> std::result::Result<(), String>
    where
        T: Topic,
        A: AuditHandler<T>,
    {
        let audit = self.audit_handler.audit(record);
        let result = match self.audit_timeout {
            Some(limit) if tokio::runtime::Handle::try_current().is_ok() => {
                match tokio::time::timeout(limit, audit).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(format!("audit handler timed out after {} ms", limit.as_millis()));
                    }
                }
            }
            _ => audit.await,
        };
        result.map_err(|e| e.to_string())
    }
}

impl<T, H, A> MessageHandler<T> for Audited<H, A>
where
    T: Topic,
    T::Message: Clone,
    H: MessageHandler<T>,
    A: AuditHandler<T>,
{
    type Context = H::Context;

    /// Runs the wrapped handler and records the attempt; see [`Audited`] for how audit failures are
    /// turned into [`Outcome::Retry`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the wrapped handler. If the handler had not returned yet, the
    /// attempt is still audited (outcome `Retry`, what the engine makes of a timeout) from a task spawned
    /// on the current Tokio runtime; if the audit call itself was under way, that record may be missing.
    async fn handle(&self, message: T::Message, metadata: MessageMetadata, ctx: &Self::Context) -> Outcome {
        // Recursion guard: the audit consumer's own deliveries are never audited.
        #[cfg(feature = "audit")]
        if T::topology().queue() == log::AUDIT_QUEUE {
            return self.handler.handle(message, metadata, ctx).await;
        }

        let trace_id = metadata
            .headers
            .get(TRACE_ID_HEADER)
            .cloned()
            .unwrap_or_else(|| metadata.delivery_id.clone());
        let started = Instant::now();
        // Until the call returns, the record says what the attempt amounts to if the engine abandons it
        // (handler timeout, aborted drain): a retry. The guard stores it then.
        let mut guard = Abandoned::<T, A> {
            armed: Some(Pending {
                audit: self.audit_handler.clone(),
                record: AuditRecord {
                    trace_id,
                    topic: T::topology().queue().to_owned(),
                    payload: message.clone(),
                    metadata: metadata.clone(),
                    outcome: Outcome::Retry,
                    duration_ms: 0,
                    timestamp: Utc::now(),
                },
                started,
                limit: self.audit_timeout,
            }),
        };

        let call = AssertUnwindSafe(self.handler.handle(message, metadata, ctx)).catch_unwind();
        let (outcome, panic) = match call.await {
            Ok(outcome) => (outcome, None),
            // A panicking attempt is audited as the retry it amounts to, then the panic goes on to the
            // engine, which counts it.
            Err(panic) => (Outcome::Retry, Some(panic)),
        };
        let Some(Pending { mut record, .. }) = guard.armed.take() else {
            unreachable!("the guard is disarmed only here");
        };
        record.outcome = outcome;
        record.duration_ms = millis(started.elapsed());

        let stored = self.store::<T>(&record).await;
        if let Some(panic) = panic {
            if let Err(error) = &stored {
                tracing::error!(delivery_id = %record.metadata.delivery_id, topic = %record.topic, error = %error,
                    "audit record of a panicking attempt could not be stored");
            }
            std::panic::resume_unwind(panic);
        }
        match stored {
            Ok(()) => record.outcome,
            Err(error) => {
                tracing::error!(
                    delivery_id = %record.metadata.delivery_id,
                    topic = %record.topic,
                    error = %error,
                    handler_outcome = ?record.outcome,
                    "audit record could not be stored; retrying the delivery"
                );
                Outcome::Retry
            }
        }
    }

    /// Passes the dead-lettered message to the wrapped handler; no audit record is produced.
    ///
    /// # Cancel safety
    ///
    /// As cancel-safe as the wrapped handler's `handle_dead`.
    fn handle_dead(
        &self,
        message: T::Message,
        metadata: DeadMessageMetadata,
        ctx: &Self::Context,
    ) -> impl Future<Output = ()> + Send {
        self.handler.handle_dead(message, metadata, ctx)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The record of an attempt in progress, with what is needed to store it from a task of its own.
struct Pending<T: Topic, A> {
    audit: Arc<A>,
    record: AuditRecord<T::Message>,
    started: Instant,
    limit: Option<Duration>,
}

/// Audits an attempt that is dropped before its handler returns: the engine drops the handler call at its
/// timeout and when a drain runs out of time, and the attempt must still be audited (contract rule 20).
struct Abandoned<T: Topic, A: AuditHandler<T>> {
    armed: Option<Pending<T, A>>,
}

impl<T: Topic, A: AuditHandler<T>> Drop for Abandoned<T, A> {
    fn drop(&mut self) {
        let Some(Pending {
            audit,
            mut record,
            started,
            limit,
        }) = self.armed.take()
        else {
            return;
        };
        record.duration_ms = millis(started.elapsed());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(delivery_id = %record.metadata.delivery_id, topic = %record.topic,
                "an abandoned attempt could not be audited: no Tokio runtime to store its record");
            return;
        };
        runtime.spawn(async move {
            let stored = match limit {
                Some(limit) => tokio::time::timeout(limit, audit.audit(&record))
                    .await
                    .unwrap_or_else(|_| Err(ShoveError::Unknown(format!("audit handler timed out after {limit:?}")))),
                None => audit.audit(&record).await,
            };
            if let Err(error) = stored {
                tracing::error!(delivery_id = %record.metadata.delivery_id, topic = %record.topic, error = %error,
                    "audit record of an abandoned attempt could not be stored");
            }
        });
    }
}

/// Combinators on handlers.
pub trait MessageHandlerExt<T: Topic>: MessageHandler<T> + Sized {
    /// Wraps the handler so that every delivery attempt produces an [`AuditRecord`].
    fn audited<A>(self, audit: A) -> Audited<Self, A>
    where
        A: AuditHandler<T>;
}

impl<T: Topic, H: MessageHandler<T>> MessageHandlerExt<T> for H {
    fn audited<A>(self, audit: A) -> Audited<Self, A>
    where
        A: AuditHandler<T>,
    {
        Audited::new(self, audit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::error::ShoveError;
    use crate::topology::TopologyBuilder;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
    }

    crate::define_topic!(Orders, Order, TopologyBuilder::new("audit-test-orders").dlq().build());

    /// Returns a fixed outcome and counts calls.
    struct Fixed {
        outcome: Outcome,
        handled: Arc<AtomicUsize>,
        dead: Arc<AtomicUsize>,
    }

    impl Fixed {
        fn new(outcome: Outcome) -> Self {
            Self {
                outcome,
                handled: Arc::default(),
                dead: Arc::default(),
            }
        }
    }

    impl<T: Topic> MessageHandler<T> for Fixed {
        type Context = ();

        async fn handle(&self, _message: T::Message, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
            self.handled.fetch_add(1, Ordering::SeqCst);
            self.outcome.clone()
        }

        async fn handle_dead(&self, _message: T::Message, _metadata: DeadMessageMetadata, _ctx: &()) {
            self.dead.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Collects every record it is given.
    struct Collect<M>(Arc<Mutex<Vec<AuditRecord<M>>>>);

    impl<M> Clone for Collect<M> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<M> Collect<M> {
        fn new() -> Self {
            Self(Arc::default())
        }

        fn records(&self) -> Vec<AuditRecord<M>>
        where
            M: Clone,
        {
            self.0.lock().unwrap().clone()
        }
    }

    impl<T: Topic> AuditHandler<T> for Collect<T::Message>
    where
        T::Message: Clone,
    {
        async fn audit(&self, record: &AuditRecord<T::Message>) -> Result<()> {
            self.0.lock().unwrap().push(record.clone());
            Ok(())
        }
    }

    /// Always fails.
    struct Failing;

    impl<T: Topic> AuditHandler<T> for Failing {
        async fn audit(&self, _record: &AuditRecord<T::Message>) -> Result<()> {
            Err(ShoveError::Connection("audit store down".into()))
        }
    }

    /// Takes longer than any reasonable audit timeout.
    struct Slow(Duration);

    impl<T: Topic> AuditHandler<T> for Slow {
        async fn audit(&self, _record: &AuditRecord<T::Message>) -> Result<()> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    fn metadata(delivery_id: &str, headers: &[(&str, &str)]) -> MessageMetadata {
        MessageMetadata {
            retry_count: 2,
            delivery_id: delivery_id.to_owned(),
            redelivered: true,
            headers: Arc::new(
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<HashMap<_, _>>(),
            ),
        }
    }

    #[tokio::test]
    async fn record_uses_delivery_id_without_trace_header() {
        let audit = Collect::<Order>::new();
        let handler = Audited::new(Fixed::new(Outcome::Ack), audit.clone());
        let before = Utc::now();

        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 42 }, metadata("d-1", &[]), &()).await;

        assert!(matches!(outcome, Outcome::Ack));
        let records = audit.records();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.trace_id, "d-1");
        assert_eq!(r.topic, "audit-test-orders");
        assert_eq!(r.payload, Order { id: 42 });
        assert!(matches!(r.outcome, Outcome::Ack));
        assert_eq!(r.metadata.delivery_id, "d-1");
        assert_eq!(r.metadata.retry_count, 2);
        assert!(r.metadata.redelivered);
        assert!(r.timestamp >= before && r.timestamp <= Utc::now());
    }

    #[tokio::test]
    async fn record_uses_trace_header_when_present() {
        let audit = Collect::<Order>::new();
        let handler = Audited::new(Fixed::new(Outcome::Reject), audit.clone());

        let outcome = MessageHandler::<Orders>::handle(
            &handler,
            Order { id: 1 },
            metadata("d-2", &[("x-trace-id", "trace-abc"), ("tenant", "t1")]),
            &(),
        )
        .await;

        assert!(matches!(outcome, Outcome::Reject));
        let records = audit.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].trace_id, "trace-abc");
        assert_eq!(records[0].metadata.delivery_id, "d-2");
        assert_eq!(
            records[0].metadata.headers.get("tenant").map(String::as_str),
            Some("t1")
        );
        assert!(matches!(records[0].outcome, Outcome::Reject));
    }

    #[tokio::test]
    async fn every_outcome_is_recorded_and_returned() {
        let audit = Collect::<Order>::new();
        for (i, expected) in [Outcome::Ack, Outcome::Retry, Outcome::Reject, Outcome::Defer]
            .into_iter()
            .enumerate()
        {
            let handler = Audited::new(Fixed::new(expected.clone()), audit.clone());
            let outcome = MessageHandler::<Orders>::handle(
                &handler,
                Order { id: i as u64 },
                metadata(&format!("d-{i}"), &[]),
                &(),
            )
            .await;
            assert_eq!(format!("{outcome:?}"), format!("{expected:?}"));
        }
        let records = audit.records();
        assert_eq!(records.len(), 4);
        let outcomes: Vec<_> = records.iter().map(|r| format!("{:?}", r.outcome)).collect();
        assert_eq!(outcomes, ["Ack", "Retry", "Reject", "Defer"]);
        let ids: Vec<_> = records.iter().map(|r| r.payload.id).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn duration_measures_the_wrapped_handler() {
        struct Sleepy;
        impl MessageHandler<Orders> for Sleepy {
            type Context = ();
            async fn handle(&self, _m: Order, _md: MessageMetadata, _ctx: &()) -> Outcome {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Outcome::Ack
            }
        }

        let audit = Collect::<Order>::new();
        let handler = Audited::new(Sleepy, audit.clone());
        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 3 }, metadata("d", &[]), &()).await;
        assert!(matches!(outcome, Outcome::Ack));
        let records = audit.records();
        assert_eq!(records.len(), 1);
        let ms = records[0].duration_ms;
        assert!((250..=260).contains(&ms), "duration_ms = {ms}");
    }

    #[tokio::test]
    async fn audit_failure_turns_outcome_into_retry() {
        let inner = Fixed::new(Outcome::Ack);
        let handled = inner.handled.clone();
        let handler = Audited::new(inner, Failing);

        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 5 }, metadata("d-5", &[]), &()).await;

        assert!(matches!(outcome, Outcome::Retry));
        assert_eq!(handled.load(Ordering::SeqCst), 1);
    }

    struct Panics;

    impl<T: Topic> MessageHandler<T> for Panics {
        type Context = ();

        async fn handle(&self, _: T::Message, _: MessageMetadata, _: &()) -> Outcome {
            panic!("handler bug")
        }
    }

    #[tokio::test]
    async fn a_panicking_attempt_is_audited_as_retry_and_the_panic_goes_on() {
        let records = Collect::<Order>::new();
        let handler = Audited::new(Panics, records.clone());
        let call = MessageHandler::<Orders>::handle(&handler, Order { id: 9 }, metadata("d-9", &[]), &());
        let result = AssertUnwindSafe(call).catch_unwind().await;
        assert!(result.is_err(), "the panic must reach the engine, which counts it");
        let stored = records.records();
        assert_eq!(stored.len(), 1);
        assert!(matches!(stored[0].outcome, Outcome::Retry));
        assert_eq!(stored[0].trace_id, "d-9");
    }

    #[tokio::test]
    async fn audit_failure_overrides_reject_too() {
        let handler = Audited::new(Fixed::new(Outcome::Reject), Failing);
        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 6 }, metadata("d-6", &[]), &()).await;
        assert!(matches!(outcome, Outcome::Retry));
    }

    #[tokio::test(start_paused = true)]
    async fn audit_timeout_turns_outcome_into_retry() {
        let handler = Audited::new(Fixed::new(Outcome::Ack), Slow(Duration::from_secs(60)))
            .with_audit_timeout(Duration::from_millis(100));

        let started = tokio::time::Instant::now();
        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 7 }, metadata("d-7", &[]), &()).await;

        assert!(matches!(outcome, Outcome::Retry));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
        assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn default_audit_timeout_is_five_seconds() {
        let handler = Audited::new(Fixed::new(Outcome::Ack), Slow(Duration::from_secs(3600)));
        assert_eq!(handler.audit_timeout, Some(Duration::from_secs(5)));

        let started = tokio::time::Instant::now();
        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 8 }, metadata("d-8", &[]), &()).await;

        assert!(matches!(outcome, Outcome::Retry));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(3600),
            "waited {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_audit_within_timeout_keeps_outcome() {
        let handler = Audited::new(Fixed::new(Outcome::Defer), Slow(Duration::from_millis(50)))
            .with_audit_timeout(Duration::from_secs(1));
        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 9 }, metadata("d-9", &[]), &()).await;
        assert!(matches!(outcome, Outcome::Defer));
    }

    #[test]
    fn works_outside_a_tokio_runtime() {
        let audit = Collect::<Order>::new();
        let handler = Audited::new(Fixed::new(Outcome::Ack), audit.clone());
        let outcome = futures::executor::block_on(MessageHandler::<Orders>::handle(
            &handler,
            Order { id: 10 },
            metadata("d-10", &[]),
            &(),
        ));
        assert!(matches!(outcome, Outcome::Ack));
        assert_eq!(audit.records().len(), 1);
    }

    #[tokio::test]
    async fn handle_dead_delegates_without_audit() {
        let inner = Fixed::new(Outcome::Ack);
        let dead = inner.dead.clone();
        let handled = inner.handled.clone();
        let audit = Collect::<Order>::new();
        let handler = Audited::new(inner, audit.clone());

        let dead_meta = DeadMessageMetadata {
            message: metadata("d-11", &[]),
            reason: Some("rejected".into()),
            original_queue: Some("audit-test-orders".into()),
            death_count: 1,
        };
        MessageHandler::<Orders>::handle_dead(&handler, Order { id: 11 }, dead_meta, &()).await;

        assert_eq!(dead.load(Ordering::SeqCst), 1);
        assert_eq!(handled.load(Ordering::SeqCst), 0);
        assert!(audit.records().is_empty());
    }

    #[tokio::test]
    async fn works_through_arc_and_extension() {
        use crate::handler::MessageHandlerExt;

        let audit = Collect::<Order>::new();
        let handler: Audited<Arc<Fixed>, _> =
            MessageHandlerExt::<Orders>::audited(Arc::new(Fixed::new(Outcome::Ack)), audit.clone());
        let outcome = MessageHandler::<Orders>::handle(&handler, Order { id: 12 }, metadata("d-12", &[]), &()).await;
        assert!(matches!(outcome, Outcome::Ack));
        assert_eq!(audit.records().len(), 1);
    }

    #[test]
    fn record_round_trips_through_json() {
        let record = AuditRecord {
            trace_id: "t".to_owned(),
            topic: "q".to_owned(),
            payload: Order { id: 13 },
            metadata: metadata("d-13", &[("k", "v")]),
            outcome: Outcome::Defer,
            duration_ms: 12,
            timestamp: Utc::now(),
        };
        let json = serde_json::to_string(&record).unwrap();
        let back: AuditRecord<Order> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.trace_id, "t");
        assert_eq!(back.topic, "q");
        assert_eq!(back.payload, Order { id: 13 });
        assert_eq!(back.metadata.delivery_id, "d-13");
        assert!(matches!(back.outcome, Outcome::Defer));
        assert_eq!(back.duration_ms, 12);
        assert_eq!(back.timestamp, record.timestamp);
    }

    #[cfg(feature = "audit")]
    #[test]
    fn audit_log_topology() {
        let topology = AuditLog::topology();
        assert_eq!(topology.queue(), "shove-audit-log");
        assert_eq!(topology.dlq(), Some("shove-audit-log-dlq"));
        assert!(std::ptr::eq(topology, AuditLog::topology()));
    }

    #[cfg(feature = "audit")]
    #[tokio::test]
    async fn audit_topic_is_not_audited() {
        let audit = Collect::<AuditRecord<serde_json::Value>>::new();
        let inner = Fixed::new(Outcome::Ack);
        let handled = inner.handled.clone();
        let handler = Audited::new(inner, audit.clone());
        let message = AuditRecord {
            trace_id: "t".to_owned(),
            topic: "orders".to_owned(),
            payload: serde_json::json!({"id": 1}),
            metadata: metadata("d-14", &[]),
            outcome: Outcome::Ack,
            duration_ms: 1,
            timestamp: Utc::now(),
        };

        let outcome = MessageHandler::<AuditLog>::handle(&handler, message, metadata("d-15", &[]), &()).await;

        assert!(matches!(outcome, Outcome::Ack));
        assert_eq!(handled.load(Ordering::SeqCst), 1);
        assert!(audit.records().is_empty());
    }

    #[cfg(feature = "audit")]
    #[tokio::test]
    async fn audit_topic_is_not_audited_even_when_audit_fails() {
        let handler = Audited::new(Fixed::new(Outcome::Ack), Failing);
        let message = AuditRecord {
            trace_id: "t".to_owned(),
            topic: "orders".to_owned(),
            payload: serde_json::Value::Null,
            metadata: metadata("d-16", &[]),
            outcome: Outcome::Ack,
            duration_ms: 1,
            timestamp: Utc::now(),
        };
        let outcome = MessageHandler::<AuditLog>::handle(&handler, message, metadata("d-17", &[]), &()).await;
        assert!(matches!(outcome, Outcome::Ack));
    }
}

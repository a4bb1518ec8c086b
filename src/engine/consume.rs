//! The consume loop: one per consumer, generic over the transport. Every delivery rule a user can observe
//! is applied here or in [`super::router`] / [`super::sequencer`], never in a backend.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};

use super::router::{self, Decision, OutcomeKind, Verdict, reasons};
use super::sequencer::{Admit, HeadResult, Sequencer};
use super::settings::{ConsumerSettings, RunControl, RunStats};
use crate::codec::Codec;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::metadata::{DeadMessageMetadata, MessageMetadata};
use crate::topic::Topic;
use crate::transport::{Death, Delivery, Envelope, Settlement, Source, Subscription, Transport};

/// How long a message handed back by a sequenced consumer (key buffer full) waits before redelivery.
const OVERFLOW_RELEASE_DELAY: Duration = Duration::from_millis(100);
/// How long a dead-lettered message whose `handle_dead` failed waits before it is offered again.
const DEAD_HANDLER_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Backoff between reconnect attempts: doubles from the first value up to the second.
const RECONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Which handler method a consumer drives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `handle` on the main queue (or the shards of a sequenced topic).
    Live,
    /// `handle_dead` on the DLQ.
    DeadLetters,
}

/// Everything a job needs, borrowed for the life of the loop.
struct Shared<'a, T: Topic, H: MessageHandler<T>, S: Subscription> {
    handler: &'a H,
    ctx: &'a H::Context,
    sub: &'a S,
    settings: &'a ConsumerSettings,
    stats: &'a RunStats,
    queue: Arc<str>,
    _topic: std::marker::PhantomData<fn() -> T>,
}

enum Job<Tok> {
    /// Run the handler.
    Handle(Delivery<Tok>),
    /// Dead-letter without running the handler (poisoned key).
    Kill(Delivery<Tok>, &'static str),
    /// Hand back unprocessed.
    Release(Delivery<Tok>, Option<Duration>),
}

/// The result of one job, fed back to the sequencer.
struct Done {
    key: Option<Arc<str>>,
    head: Option<HeadResult>,
}

/// Owns a delivery until it is settled; if dropped unsettled (aborted drain), the transport is told so
/// that the message is redelivered rather than lost.
struct InFlight<'a, S: Subscription> {
    sub: &'a S,
    token: Option<S::Token>,
    envelope: Envelope,
}

impl<'a, S: Subscription> InFlight<'a, S> {
    fn new(sub: &'a S, d: Delivery<S::Token>) -> (Self, bool) {
        (
            Self {
                sub,
                token: Some(d.token),
                envelope: d.envelope,
            },
            d.redelivered,
        )
    }

    async fn settle(mut self, how: Settlement) -> Result<()> {
        match self.token.take() {
            Some(token) => self.sub.settle(token, &self.envelope, how).await,
            None => Ok(()),
        }
    }
}

impl<S: Subscription> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.sub.abandon(token, self.envelope.clone());
        }
    }
}

/// Runs a consumer on `source` until `ctl` stops it or the broker closes.
///
/// On `ctl.stop`: no new messages are taken, buffered (unstarted) ones are handed back at once, in-flight
/// handlers finish and are settled. On `ctl.abort`: in-flight handlers are dropped and their messages
/// handed back to the broker.
///
/// # Errors
///
/// When subscribing fails, or receiving keeps failing beyond `max_reconnect_attempts`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<T, H, Tr>(
    transport: &Tr,
    source: Source,
    mode: Mode,
    handler: &H,
    ctx: &H::Context,
    settings: &ConsumerSettings,
    ctl: &RunControl,
    stats: &RunStats,
) -> Result<()>
where
    T: Topic,
    H: MessageHandler<T>,
    Tr: Transport,
{
    let sub = tokio::select! {
        biased;
        _ = ctl.stop.cancelled() => return Ok(()),
        s = subscribe_with_retry(transport, source, settings, ctl) => s?,
    };
    let queue: Arc<str> = Arc::from(match source {
        Source::DeadLetters(t) => t.dlq().unwrap_or(t.queue()),
        other => other.topology().queue(),
    });
    let shared = Shared::<T, H, _> {
        handler,
        ctx,
        sub: &sub,
        settings,
        stats,
        queue,
        _topic: std::marker::PhantomData,
    };
    let mut sequencer = match (mode, T::topology().sequencing()) {
        (Mode::Live, Some(cfg)) => Some(Sequencer::new(cfg.on_failure(), settings.max_pending_per_key)),
        _ => None,
    };
    let start = |j: Job<<Tr::Subscription as Subscription>::Token>| job(j, &shared, mode);
    let mut inflight = futures_for(&start);
    let mut failures = 0u32;
    let mut outcome = Ok(());

    loop {
        let room = settings.capacity.saturating_sub(inflight.len());
        tokio::select! {
            biased;
            _ = ctl.abort.cancelled() => break,
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                if let (Some(seq), Some(key), Some(head)) = (sequencer.as_mut(), done.key, done.head) {
                    for next in seq.complete(&key, head) {
                        if let Some(j) = job_for(next) {
                            inflight.push(start(j));
                        }
                    }
                }
            }
            _ = ctl.stop.cancelled() => break,
            received = sub.receive(room), if room > 0 => match received {
                Ok(Some(batch)) => {
                    failures = 0;
                    for d in batch {
                        let next = match sequencer.as_mut() {
                            Some(seq) => seq.admit(d),
                            None => Admit::Run(d),
                        };
                        if let Some(j) = job_for(next) {
                            inflight.push(start(j));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failures += 1;
                    crate::metrics::backend_error(Tr::NAME, "receive");
                    if !e.is_retryable() || settings.max_reconnect_attempts.is_some_and(|m| failures > m) {
                        tracing::error!(queue = %shared.queue, error = %e, attempts = failures, "consumer giving up");
                        outcome = Err(e);
                        break;
                    }
                    tracing::warn!(queue = %shared.queue, error = %e, attempt = failures, "receive failed; retrying");
                    let wait = backoff(failures);
                    tokio::select! {
                        _ = ctl.stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        settings.processing.store(!inflight.is_empty(), Ordering::Relaxed);
    }

    // Drain: buffered messages never started, so they go back at once; in-flight ones finish unless aborted.
    if let Some(seq) = sequencer.as_mut() {
        for d in seq.take_buffered() {
            inflight.push(start(Job::Release(d, None)));
        }
    }
    while !inflight.is_empty() && !ctl.abort.is_cancelled() {
        tokio::select! {
            biased;
            _ = ctl.abort.cancelled() => break,
            Some(done) = inflight.next() => {
                // Stopping: whatever the sequencer would start next goes back to the broker instead.
                if let (Some(seq), Some(key), Some(head)) = (sequencer.as_mut(), done.key, done.head) {
                    for next in seq.complete(&key, head) {
                        let d = match next {
                            Admit::Run(d) | Admit::Release(d) | Admit::Poisoned(d) => d,
                            Admit::Buffered => continue,
                        };
                        inflight.push(start(Job::Release(d, None)));
                    }
                }
            }
        }
    }
    drop(inflight);
    settings.processing.store(false, Ordering::Relaxed);
    sub.close().await;
    outcome
}

/// An empty set typed by the job starter, so the loop can use it before the first push.
fn futures_for<A, F: Future>(_: &impl Fn(A) -> F) -> FuturesUnordered<F> {
    FuturesUnordered::new()
}

fn backoff(attempt: u32) -> Duration {
    let (first, cap) = RECONNECT_BACKOFF;
    first.saturating_mul(1 << attempt.min(16)).min(cap)
}

async fn subscribe_with_retry<Tr: Transport>(
    transport: &Tr,
    source: Source,
    settings: &ConsumerSettings,
    ctl: &RunControl,
) -> Result<Tr::Subscription> {
    let mut attempt = 0u32;
    loop {
        match transport.subscribe(source).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() && settings.max_reconnect_attempts.is_none_or(|m| attempt < m) => {
                attempt += 1;
                tracing::warn!(queue = source.topology().queue(), error = %e, attempt, "subscribe failed; retrying");
                tokio::select! {
                    _ = ctl.stop.cancelled() => return Err(e),
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Turns a sequencer verdict into a job (buffered deliveries have none yet).
fn job_for<Tok>(a: Admit<Tok>) -> Option<Job<Tok>> {
    match a {
        Admit::Run(d) => Some(Job::Handle(d)),
        Admit::Buffered => None,
        Admit::Release(d) => Some(Job::Release(d, Some(OVERFLOW_RELEASE_DELAY))),
        Admit::Poisoned(d) => Some(Job::Kill(d, reasons::SEQUENCE_POISONED)),
    }
}

async fn job<T, H, S>(j: Job<S::Token>, shared: &Shared<'_, T, H, S>, mode: Mode) -> Done
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    match j {
        Job::Release(d, delay) => {
            let (held, _) = InFlight::new(shared.sub, d);
            if let Err(e) = held.settle(Settlement::Release { delay }).await {
                tracing::warn!(queue = %shared.queue, error = %e, "could not hand a message back; the broker will redeliver it");
            }
            Done { key: None, head: None }
        }
        Job::Kill(d, reason) => {
            let key = Sequencer::key_of(&d);
            let (held, _) = InFlight::new(shared.sub, d);
            // A poisoned message is never the key's head: nothing to report to the sequencer.
            apply(held, router::dead(reason, T::topology()), shared).await;
            Done { key: Some(key), head: None }
        }
        Job::Handle(d) => match mode {
            Mode::Live => handle_live(d, shared).await,
            Mode::DeadLetters => {
                handle_dead_letter(d, shared).await;
                Done { key: None, head: None }
            }
        },
    }
}

async fn handle_live<T, H, S>(d: Delivery<S::Token>, shared: &Shared<'_, T, H, S>) -> Done
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    let topology = T::topology();
    let key = topology.sequencing().map(|_| Sequencer::key_of(&d));
    let (held, redelivered) = InFlight::new(shared.sub, d);
    let env = &held.envelope;

    let decision = if shared.settings.max_message_size.is_some_and(|max| env.payload.len() > max) {
        tracing::warn!(queue = %shared.queue, message_id = %env.message_id, size = env.payload.len(), "payload over max_message_size");
        router::dead(reasons::OVERSIZE, topology)
    } else {
        match T::Codec::decode(&env.payload) {
            Err(e) => {
                tracing::warn!(queue = %shared.queue, message_id = %env.message_id, error = %e, "payload cannot be decoded");
                router::dead(reasons::DESERIALIZE, topology)
            }
            Ok(message) => {
                let metadata = MessageMetadata {
                    retry_count: env.retry_count,
                    delivery_id: String::from(&*env.message_id),
                    redelivered,
                    headers: env.headers.clone(),
                };
                crate::metrics::message_size(&shared.queue, env.payload.len());
                crate::metrics::inflight_add(&shared.queue, 1.0);
                let verdict = invoke(shared, shared.handler.handle(message, metadata, shared.ctx)).await;
                crate::metrics::inflight_add(&shared.queue, -1.0);
                let verdict = match verdict {
                    Some(Ok(outcome)) => Verdict::Returned(OutcomeKind::from(&outcome)),
                    Some(Err(())) => {
                        shared.stats.panic();
                        tracing::error!(queue = %shared.queue, message_id = %env.message_id, "handler panicked; counted as a retry");
                        crate::metrics::failed(&shared.queue, "panic");
                        Verdict::Panicked
                    }
                    None => {
                        tracing::warn!(queue = %shared.queue, message_id = %env.message_id, "handler timed out; counted as a retry");
                        crate::metrics::failed(&shared.queue, "timeout");
                        Verdict::TimedOut
                    }
                };
                record_outcome(&shared.queue, verdict);
                router::decide(verdict, env.retry_count, shared.settings.max_retries, topology)
            }
        }
    };
    let id = env.message_id.clone();
    let head = apply(held, decision, shared).await;
    Done {
        key,
        head: Some(match head {
            Applied::Acked => HeadResult::Done,
            Applied::Requeued => HeadResult::Retrying(id),
            Applied::Dead => HeadResult::Dead,
            Applied::Failed => HeadResult::Unsettled(id),
        }),
    }
}

fn record_outcome(queue: &str, verdict: Verdict) {
    let label = match verdict {
        Verdict::Returned(OutcomeKind::Ack) => "ack",
        Verdict::Returned(OutcomeKind::Retry) | Verdict::TimedOut | Verdict::Panicked => "retry",
        Verdict::Returned(OutcomeKind::Reject) => "reject",
        Verdict::Returned(OutcomeKind::Defer) => "defer",
    };
    crate::metrics::consumed(queue, label);
}

/// Runs a handler future with the timeout, catching panics. `None` = timed out, `Some(Err)` = panicked.
async fn invoke<T, H, S, F, O>(shared: &Shared<'_, T, H, S>, call: F) -> Option<std::result::Result<O, ()>>
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
    F: Future<Output = O>,
{
    let started = crate::metrics::ENABLED.then(std::time::Instant::now);
    let guarded = AssertUnwindSafe(call).catch_unwind();
    let result = match shared.settings.handler_timeout {
        Some(limit) => tokio::time::timeout(limit, guarded).await.ok(),
        None => Some(guarded.await),
    };
    if let Some(t) = started {
        crate::metrics::processing_duration(&shared.queue, t.elapsed().as_secs_f64());
    }
    result.map(|r| r.map_err(|_| ()))
}

enum Applied {
    Acked,
    Requeued,
    Dead,
    Failed,
}

/// Executes a routing decision through the transport.
async fn apply<T, H, S>(held: InFlight<'_, S>, decision: Decision, shared: &Shared<'_, T, H, S>) -> Applied
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    let (settlement, applied) = match decision {
        Decision::Ack => (Settlement::Ack, Applied::Acked),
        Decision::Discard { reason } => {
            tracing::warn!(queue = %shared.queue, message_id = %held.envelope.message_id, reason, "topic has no DLQ; message discarded");
            crate::metrics::failed(&shared.queue, reason);
            (Settlement::Ack, Applied::Dead)
        }
        Decision::Requeue { retry_count, hold } => {
            let mut envelope = held.envelope.clone();
            envelope.retry_count = retry_count;
            (Settlement::Requeue { envelope, hold }, Applied::Requeued)
        }
        Decision::DeadLetter { reason } => {
            let mut envelope = held.envelope.clone();
            let count = envelope.death.as_ref().map_or(0, |d| d.count) + 1;
            envelope.death = Some(Death {
                reason,
                original_queue: shared.queue.clone(),
                count,
            });
            crate::metrics::failed(&shared.queue, reason);
            crate::metrics::consumed(&shared.queue, "dead_letter");
            (Settlement::DeadLetter { envelope }, Applied::Dead)
        }
    };
    match held.settle(settlement).await {
        Ok(()) => applied,
        Err(e) => {
            tracing::error!(queue = %shared.queue, error = %e, "settling a delivery failed; the broker will redeliver it");
            Applied::Failed
        }
    }
}

/// Hands a dead-lettered message to `handle_dead`, then acknowledges it. A `handle_dead` that panics or
/// times out leaves the message in the DLQ for another try.
async fn handle_dead_letter<T, H, S>(d: Delivery<S::Token>, shared: &Shared<'_, T, H, S>)
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    let (held, redelivered) = InFlight::new(shared.sub, d);
    let env = &held.envelope;
    let message = match T::Codec::decode(&env.payload) {
        Ok(m) => m,
        Err(e) => {
            // Nothing can ever handle it, and redelivering would loop: say so loudly and drop it.
            tracing::error!(queue = %shared.queue, message_id = %env.message_id, error = %e,
                "dead-lettered payload cannot be decoded; dropping it from the DLQ");
            settle_logged(held, Settlement::Ack, shared).await;
            return;
        }
    };
    let death = env.death.as_ref();
    let metadata = DeadMessageMetadata {
        message: MessageMetadata {
            retry_count: env.retry_count,
            delivery_id: String::from(&*env.message_id),
            redelivered,
            headers: env.headers.clone(),
        },
        reason: death.map(|d| d.reason.to_string()),
        original_queue: death.map(|d| d.original_queue.to_string()),
        death_count: death.map_or(1, |d| d.count),
    };
    let how = match invoke(shared, shared.handler.handle_dead(message, metadata, shared.ctx)).await {
        Some(Ok(())) => Settlement::Ack,
        Some(Err(())) => {
            shared.stats.panic();
            tracing::error!(queue = %shared.queue, message_id = %env.message_id, "handle_dead panicked; message stays in the DLQ");
            Settlement::Release { delay: Some(DEAD_HANDLER_RETRY_DELAY) }
        }
        None => {
            tracing::warn!(queue = %shared.queue, message_id = %env.message_id, "handle_dead timed out; message stays in the DLQ");
            Settlement::Release { delay: Some(DEAD_HANDLER_RETRY_DELAY) }
        }
    };
    settle_logged(held, how, shared).await;
}

async fn settle_logged<T, H, S>(held: InFlight<'_, S>, how: Settlement, shared: &Shared<'_, T, H, S>)
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    if let Err(e) = held.settle(how).await {
        tracing::error!(queue = %shared.queue, error = %e, "settling a delivery failed; the broker will redeliver it");
    }
}

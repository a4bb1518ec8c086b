//! The consume loop: one per consumer, generic over the transport. Every delivery rule a user can observe
//! is applied here or in [`super::router`] / [`super::sequencer`], never in a backend.
//!
//! # The fast path
//!
//! Most handler calls and most settlements finish the first time they are polled. The loop therefore
//! polls each handler future (and then its settle future) once, in place, in a reusable pinned slot; only
//! a call that has to wait is moved, slot and all, into the set of in-flight jobs and a fresh slot is made.
//! A delivery whose handler and settle complete at once costs no allocation and no task of its own. The
//! rules applied are the same on both paths: [`outcome_of`] and [`decision_for`] are shared.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::CatchUnwind;
use futures::stream::{FuturesUnordered, StreamExt};

use super::router::{self, Decision, OutcomeKind, Verdict, reasons};
use super::sequencer::{Admit, HeadResult, Sequencer};
use super::settings::{ConsumerSettings, EngineSettings, RunControl, RunStats};
use crate::codec::Codec;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::metadata::{DeadMessageMetadata, MessageMetadata};
use crate::outcome::Outcome;
use crate::topic::Topic;
use crate::transport::{Death, Delivery, Envelope, MessageId, Settlement, Source, Subscription, Transport};

/// How long a message handed back by a sequenced consumer (key buffer full) waits before redelivery.
const OVERFLOW_RELEASE_DELAY: Duration = Duration::from_millis(100);
/// How long a dead-lettered message whose `handle_dead` failed waits before it is offered again.
const DEAD_HANDLER_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Deliveries a consumer handles before it yields to the runtime.
const YIELD_EVERY: usize = 256;
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
    settings: &'a EngineSettings,
    stats: &'a RunStats,
    queue: Arc<str>,
    metrics: crate::metrics::TopicMetrics,
    /// Handlers of this consumer running now; the consumer is busy (not to be scaled away) while non-zero.
    /// A consumer that is only settling its last message is idle: stopping it lets the settle finish.
    handlers: AtomicUsize,
    /// Signalled when a handler that had to wait finishes: the loop may take the next message while that
    /// message's settlement is still on its way.
    handler_done: tokio::sync::Notify,
    _topic: std::marker::PhantomData<fn() -> T>,
}

enum Job<Tok> {
    /// Run the handler.
    Handle(Delivery<Tok>),
    /// Dead-letter without running the handler (poisoned key).
    Kill(Delivery<Tok>, &'static str),
    /// Hand back unprocessed, to come again after the delay (a key over `max_pending_per_key`).
    Release(Delivery<Tok>, Duration),
}

/// The result of one job, fed back to the sequencer.
struct Done {
    key: Option<Arc<str>>,
    head: Option<HeadResult>,
}

impl Done {
    const NOTHING: Done = Done { key: None, head: None };
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

    /// Hands the token over for settling; from here on the settle call is responsible for it.
    fn take_token(&mut self) -> Option<S::Token> {
        self.token.take()
    }

    async fn settle(mut self, how: impl FnOnce(Envelope) -> Settlement) -> Result<()> {
        match self.token.take() {
            Some(token) => self.sub.settle(token, how(self.envelope.clone())).await,
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

/// A handler call in progress: the user's future, with panics caught.
type Call<F> = CatchUnwind<AssertUnwindSafe<F>>;
/// What a handler call ended with: its outcome, or the panic.
type CallResult = std::result::Result<Outcome, Box<dyn Any + Send>>;
/// A reusable, pinned home for a future, so it can be polled in place and moved only if it must wait.
type Slot<F> = Pin<Box<Option<F>>>;

fn empty_slot<A, B, F>(_: &impl Fn(A, B) -> F) -> Slot<F> {
    Box::pin(None)
}

/// Polls the future in `slot` once with the current task's context; `None` while it is pending.
async fn poll_slot<F: Future>(slot: &mut Slot<F>) -> Option<F::Output> {
    let out = std::future::poll_fn(|cx| {
        Poll::Ready(match slot.as_mut().as_pin_mut() {
            Some(f) => match f.poll(cx) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            },
            None => None,
        })
    })
    .await;
    if out.is_some() {
        slot.set(None);
    }
    out
}

/// Awaits the future in `slot` to completion.
async fn finish_slot<F: Future>(mut slot: Slot<F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match slot.as_mut().as_pin_mut() {
        Some(f) => f.poll(cx).map(Some),
        None => Poll::Ready(None),
    })
    .await
}

/// An empty set typed by the job starter, so the loop can use it before the first push.
fn futures_for<A, F: Future>(_: &impl Fn(A) -> F) -> FuturesUnordered<F> {
    FuturesUnordered::new()
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
    settings: &ConsumerSettings<Tr::Options>,
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
        settings: &settings.engine,
        stats,
        metrics: crate::metrics::TopicMetrics::new(&queue),
        queue,
        handlers: AtomicUsize::new(0),
        handler_done: tokio::sync::Notify::new(),
        _topic: std::marker::PhantomData,
    };
    let mut sequencer = match (mode, T::topology().sequencing()) {
        (Mode::Live, Some(cfg)) => Some(Sequencer::new(cfg.on_failure(), settings.engine.max_pending_per_key)),
        _ => None,
    };

    // The fast-path slots and the in-flight set (see the module docs).
    let call = |m: T::Message, meta: MessageMetadata| AssertUnwindSafe(handler.handle(m, meta, ctx)).catch_unwind();
    let settle = |token, how: Settlement| sub.settle(token, how);
    let mut call_slot = empty_slot(&call);
    let mut settle_slot = empty_slot(&settle);
    type Tok<Tr> = <<Tr as Transport>::Subscription as Subscription>::Token;
    let waiting = |w| Waiting::finish(w, &shared);
    let mut inflight = futures_for(&waiting);

    let mut batch = Vec::with_capacity(settings.engine.capacity);
    let mut work: VecDeque<Job<Tok<Tr>>> = VecDeque::new();
    let mut failures = 0u32;
    let mut outcome = Ok(());
    let mut stopping = false;
    let mut handed_back = false;
    let mut aborted = false;
    // A sequenced source's messages that go back unhandled when the consumer stops, in delivery order
    // per key: handed back one by one once nothing is running and reads have ended (see below).
    let mut hand_backs: Vec<Delivery<Tok<Tr>>> = Vec::new();
    let mut since_yield = 0usize;

    // Starts a job: finishes it in place when nothing waits, else adds it to the in-flight set.
    macro_rules! start {
        ($job:expr) => {{
            let step = match ($job, mode) {
                (Job::Handle(d), Mode::Live) => {
                    fast_path(d, &shared, &call, &mut call_slot, &settle, &mut settle_slot).await
                }
                (other, _) => Step::Wait(Waiting::Job(other)),
            };
            match step {
                Step::Done(done) => complete(done, sequencer.as_mut(), &mut work),
                Step::Wait(w) => inflight.push(waiting(w)),
            }
        }};
    }

    loop {
        // Prefetch bounds the handlers running at once. A live consumer whose handler is done does not wait
        // for its settlement's round trip before taking the next message: up to `capacity` settlements may
        // be on their way besides the handlers (the brokers are asked for twice the prefetch for this).
        let room = match mode {
            Mode::Live => settings
                .engine
                .capacity
                .saturating_sub(shared.handlers.load(Ordering::Relaxed))
                .min((2 * settings.engine.capacity).saturating_sub(inflight.len())),
            Mode::DeadLetters => settings.engine.capacity.saturating_sub(inflight.len()),
        };
        tokio::select! {
            biased;
            _ = ctl.abort.cancelled() => {
                // Buffered deliveries never reached a job: give them back like the in-flight ones.
                if let Some(seq) = sequencer.as_mut() {
                    for d in hand_backs.drain(..).chain(seq.take_buffered()) {
                        sub.abandon(d.token, d.envelope);
                    }
                }
                aborted = true;
                break;
            }
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                complete(done, sequencer.as_mut(), &mut work);
            }
            // A handler finished while its settlement is still on its way: there is room again.
            _ = shared.handler_done.notified(), if room == 0 && !stopping && matches!(mode, Mode::Live) => {}
            _ = ctl.stop.cancelled(), if !stopping => stopping = true,
            received = sub.receive(room, &mut batch), if room > 0 && !stopping => match received {
                Ok(true) => {
                    failures = 0;
                    since_yield += batch.len();
                    for d in batch.drain(..) {
                        match sequencer.as_mut() {
                            Some(seq) => work.extend(job_for(seq.admit(d))),
                            None => start!(Job::Handle(d)),
                        }
                    }
                }
                Ok(false) => stopping = true,
                Err(e) => {
                    failures += 1;
                    crate::metrics::backend_error(Tr::NAME, "receive");
                    if !e.is_retryable() || settings.engine.max_reconnect_attempts.is_some_and(|m| failures > m) {
                        tracing::error!(queue = %shared.queue, error = %e, attempts = failures, "consumer giving up");
                        outcome = Err(e);
                        stopping = true;
                    } else {
                        tracing::warn!(queue = %shared.queue, error = %e, attempt = failures, "receive failed; retrying");
                        tokio::select! {
                            _ = ctl.stop.cancelled() => {}
                            _ = tokio::time::sleep(backoff(failures)) => {}
                        }
                    }
                }
            },
        }
        if stopping && !handed_back {
            handed_back = true;
            if let Some(seq) = sequencer.as_mut() {
                // Never started, they go back: first those the sequencer already let through (each the
                // next of its key), then those it still buffers behind them.
                let mut rest = VecDeque::with_capacity(work.len());
                for job in work.drain(..) {
                    match job {
                        Job::Handle(d) => hand_backs.push(d),
                        other => rest.push_back(other),
                    }
                }
                work = rest;
                hand_backs.extend(seq.take_buffered());
            }
        }

        // Start what became runnable; finish on the fast path whatever does not have to wait.
        while let Some(job) = work.pop_front() {
            match job {
                // While stopping, whatever the sequencer would start next goes back to the broker.
                Job::Handle(d) if stopping => hand_backs.push(d),
                other => start!(other),
            }
        }
        settings
            .engine
            .processing
            .store(shared.handlers.load(Ordering::Relaxed) > 0, Ordering::Relaxed);
        if stopping && inflight.is_empty() {
            break;
        }
        if since_yield >= YIELD_EVERY {
            // A queue that never runs dry (or a handler that keeps asking for immediate redelivery) would
            // otherwise keep this task busy forever: let the runtime's other tasks run.
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }

    drop(inflight);
    if sequencer.is_some() && !aborted {
        // Rule 14 across a hand-over: with reads ended, nothing handed back can reach this subscription
        // again, and the broker puts each key's messages back in delivery order for the next reader.
        sub.stop_receiving(&mut hand_backs).await;
        sub.hand_back_in_order(hand_backs).await;
    }
    settings.engine.processing.store(false, Ordering::Relaxed);
    sub.close().await;
    outcome
}

/// Feeds a finished job back to the sequencer, queueing what its key may run next.
fn complete<Tok>(done: Done, sequencer: Option<&mut Sequencer<Tok>>, work: &mut VecDeque<Job<Tok>>) {
    if let (Some(seq), Some(key), Some(head)) = (sequencer, done.key, done.head) {
        for next in seq.complete(&key, head) {
            work.extend(job_for(next));
        }
    }
}

/// Turns a sequencer verdict into a job (buffered deliveries have none yet).
fn job_for<Tok>(a: Admit<Tok>) -> Option<Job<Tok>> {
    match a {
        Admit::Run(d) => Some(Job::Handle(d)),
        Admit::Buffered => None,
        Admit::Release(d) => Some(Job::Release(d, OVERFLOW_RELEASE_DELAY)),
        Admit::Poisoned(d) => Some(Job::Kill(d, reasons::SEQUENCE_POISONED)),
    }
}

/// The wait before reconnect attempt `attempt` (1-based): doubling from the first delay up to the cap,
/// then spread by ±25 % so that the consumers of a fleet that lost the broker together do not come back
/// in step (contract rule 22). The one reconnect policy of every backend: transports report each failed
/// attempt as an error, and the engine counts them against `max_reconnect_attempts`.
fn backoff(attempt: u32) -> Duration {
    let (first, cap) = RECONNECT_BACKOFF;
    let base = first.saturating_mul(1 << attempt.min(16)).min(cap);
    // A factor in [0.75, 1.25).
    let spread = 0.75 + (crate::transport::random_u64() % 1000) as f64 / 2000.0;
    base.mul_f64(spread)
}

async fn subscribe_with_retry<Tr: Transport>(
    transport: &Tr,
    source: Source,
    settings: &ConsumerSettings<Tr::Options>,
    ctl: &RunControl,
) -> Result<Tr::Subscription> {
    let mut attempt = 0u32;
    loop {
        match transport.subscribe(source, &settings.subscribe).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() && settings.engine.max_reconnect_attempts.is_none_or(|m| attempt < m) => {
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

/// What starting a job led to.
enum Step<'a, Tok, S: Subscription, HF, SF> {
    /// Finished without waiting.
    Done(Done),
    /// Has to wait: continues in the in-flight set.
    Wait(Waiting<'a, Tok, S, HF, SF>),
}

/// A job that has to wait, with what it needs to finish.
enum Waiting<'a, Tok, S: Subscription, HF, SF> {
    /// The handler did not finish when first polled.
    Handler {
        call: Slot<HF>,
        held: InFlight<'a, S>,
        key: Option<Arc<str>>,
        started: Option<std::time::Instant>,
    },
    /// The settle call did not finish when first polled.
    Settle {
        settle: Slot<SF>,
        done: Done,
        id: MessageId,
    },
    /// Anything off the fast path: hand-backs, poisoned keys, dead letters.
    Job(Job<Tok>),
}

impl<'a, S, HF, SF> Waiting<'a, S::Token, S, HF, SF>
where
    S: Subscription,
    HF: Future<Output = CallResult>,
    SF: Future<Output = Result<()>>,
{
    async fn finish<T, H>(self, shared: &'a Shared<'a, T, H, S>) -> Done
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        match self {
            Waiting::Handler {
                mut call,
                held,
                key,
                started,
            } => {
                let result = with_timeout(&mut call, shared.settings.handler_timeout).await;
                shared.metrics.inflight_add(-1.0);
                shared.handlers.fetch_sub(1, Ordering::Relaxed);
                shared.handler_done.notify_one();
                record_duration(shared, started);
                let verdict = outcome_of(shared, &held.envelope, result);
                let decision = router::decide(
                    verdict,
                    held.envelope.retry_count,
                    shared.settings.max_retries,
                    T::topology(),
                );
                let id = held.envelope.message_id.clone();
                // Boxed, like the job below: the in-flight set allocates and copies every waiting future
                // at its full size, and most are settlements waiting for a broker round trip (Redis,
                // RabbitMQ), which need only a few bytes; inline, these rarer paths made each ~3 KB.
                let applied = Box::pin(apply(held, decision, shared)).await;
                Done {
                    key,
                    head: Some(head_result(applied, id)),
                }
            }
            Waiting::Settle { settle, done, id } => match finish_slot(settle).await {
                Some(Ok(())) | None => done,
                Some(Err(e)) => {
                    tracing::error!(queue = %shared.queue, error = %e, "settling a delivery failed; the broker will redeliver it");
                    Done {
                        key: done.key,
                        head: done.head.map(|_| HeadResult::Unsettled(id)),
                    }
                }
            },
            Waiting::Job(job) => Box::pin(slow_job(job, shared)).await,
        }
    }
}

/// Handles one live delivery, finishing it in place when neither the handler nor the settle call waits.
async fn fast_path<'a, T, H, S, CF, HF, SFn, SF>(
    mut d: Delivery<S::Token>,
    shared: &'a Shared<'a, T, H, S>,
    call: &CF,
    call_slot: &mut Slot<HF>,
    settle: &SFn,
    settle_slot: &mut Slot<SF>,
) -> Step<'a, S::Token, S, HF, SF>
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
    CF: Fn(T::Message, MessageMetadata) -> HF,
    HF: Future<Output = CallResult>,
    SFn: Fn(S::Token, Settlement) -> SF,
    SF: Future<Output = Result<()>>,
{
    let topology = T::topology();
    let key = topology.sequencing().map(|_| Sequencer::key_of(&d));
    // An attempt whose consumer died mid-way counts against the retry budget like a `Retry` would
    // (contract rule 9): a message that keeps killing its consumers ends in the DLQ instead of looping.
    let lost = d.lost_attempts;
    if lost > 0 {
        d.envelope.retry_count = d.envelope.retry_count.saturating_add(lost);
        d.redelivered = true;
    }
    let (mut held, redelivered) = InFlight::new(shared.sub, d);
    // Where the broker forgets the count (it only flags a redelivery), it is written into the message
    // first: a copy with the raised retry count is requeued, and that copy is the one handled. (A message
    // already past its budget is dead-lettered below instead.) Sequenced topics keep their order: there
    // the transport reports no lost attempts. The transport hands out no delivery of that queue until the
    // original's settlement has reached the broker (see `Subscription::KEEPS_LOST_ATTEMPTS`).
    let admitted = if !S::KEEPS_LOST_ATTEMPTS && lost > 0 && key.is_none() {
        // (Past its budget, it is dead-lettered instead.)
        admit_payload::<T, _>(&held.envelope, shared).and_then(|_| {
            Err(Decision::Requeue {
                retry_count: held.envelope.retry_count,
                hold: None,
            })
        })
    } else {
        admit_payload::<T, _>(&held.envelope, shared)
    };
    let decision = match admitted {
        Err(decision) => decision,
        Ok(message) => {
            let metadata = metadata_of(&held.envelope, redelivered);
            let started = crate::metrics::ENABLED.then(std::time::Instant::now);
            shared.metrics.inflight_add(1.0);
            // Busy from the first instruction of the handler: scaling never stops a consumer mid-call.
            shared.handlers.fetch_add(1, Ordering::Relaxed);
            shared.settings.processing.store(true, Ordering::Relaxed);
            call_slot.set(Some(call(message, metadata)));
            let Some(result) = poll_slot(call_slot).await else {
                let pending = std::mem::replace(call_slot, Box::pin(None));
                return Step::Wait(Waiting::Handler {
                    call: pending,
                    held,
                    key,
                    started,
                });
            };
            shared.metrics.inflight_add(-1.0);
            shared.handlers.fetch_sub(1, Ordering::Relaxed);
            record_duration(shared, started);
            let verdict = outcome_of(shared, &held.envelope, Some(result));
            router::decide(
                verdict,
                held.envelope.retry_count,
                shared.settings.max_retries,
                topology,
            )
        }
    };
    let id = held.envelope.message_id.clone();
    let (settlement, applied) = decision_for(decision, &held.envelope, shared);
    let Some(token) = held.take_token() else {
        return Step::Done(Done::NOTHING);
    };
    let done = Done {
        key,
        head: Some(head_result(applied, id.clone())),
    };
    settle_slot.set(Some(settle(token, settlement)));
    // Unconstrained by tokio's cooperative budget: a batch of deliveries spends the task's budget on the
    // transport's channel receives, after which every settle that would complete at once (an ack queued to
    // the connection's channel) reports `Pending` instead and takes the slow path: an allocation and a copy
    // of its future into the in-flight set per message. The loop yields by itself (`YIELD_EVERY`).
    match tokio::task::unconstrained(poll_slot(settle_slot)).await {
        None => {
            let pending = std::mem::replace(settle_slot, Box::pin(None));
            Step::Wait(Waiting::Settle {
                settle: pending,
                done,
                id,
            })
        }
        Some(Ok(())) => Step::Done(done),
        Some(Err(e)) => {
            tracing::error!(queue = %shared.queue, error = %e, "settling a delivery failed; the broker will redeliver it");
            Step::Done(Done {
                key: done.key,
                head: Some(HeadResult::Unsettled(id)),
            })
        }
    }
}

/// Checks size and decodes; a payload that cannot reach the handler gets its dead-letter decision.
fn admit_payload<T: Topic, S: Subscription>(
    env: &Envelope,
    shared: &Shared<'_, T, impl MessageHandler<T>, S>,
) -> std::result::Result<T::Message, Decision> {
    let topology = T::topology();
    if env.retry_count > shared.settings.max_retries {
        // Past its budget only through attempts whose consumer died (or a lowered max_retries): the handler
        // has had all its tries.
        tracing::warn!(queue = %shared.queue, message_id = %env.message_id, retry_count = env.retry_count,
            "retry budget already used up (by attempts whose consumer died, or max_retries was lowered); \
             dead-lettering without another try");
        return Err(router::dead(reasons::MAX_RETRIES_EXCEEDED, topology));
    }
    if shared
        .settings
        .max_message_size
        .is_some_and(|max| env.payload.len() > max)
    {
        tracing::warn!(queue = %shared.queue, message_id = %env.message_id, size = env.payload.len(), "payload over max_message_size");
        return Err(router::dead(reasons::OVERSIZE, topology));
    }
    shared.metrics.message_size(env.payload.len());
    decode::<T>(&env.payload).map_err(|e| {
        tracing::warn!(queue = %shared.queue, message_id = %env.message_id, error = %e, "payload cannot be decoded");
        router::dead(reasons::DESERIALIZE, topology)
    })
}

/// Decodes a payload with the topic's codec. A codec that panics (a user's codec meeting bytes it did not
/// expect) is a payload that cannot be decoded, not the end of the consumer task.
fn decode<T: Topic>(payload: &[u8]) -> Result<T::Message> {
    std::panic::catch_unwind(|| T::Codec::decode(payload)).unwrap_or_else(|_| {
        Err(crate::error::ShoveError::Codec {
            codec: <T::Codec as crate::codec::Codec<T::Message>>::NAME,
            source: "the codec panicked while decoding".into(),
        })
    })
}

fn metadata_of(env: &Envelope, redelivered: bool) -> MessageMetadata {
    MessageMetadata {
        retry_count: env.retry_count,
        delivery_id: env.message_id.to_text(),
        // A retry is a redelivery whether the broker kept the original or stored a new copy.
        redelivered: redelivered || env.retry_count > 0,
        headers: env.headers.clone(),
    }
}

/// Classifies a finished (or timed-out, `None`) handler call and records it.
fn outcome_of<T: Topic, S: Subscription>(
    shared: &Shared<'_, T, impl MessageHandler<T>, S>,
    env: &Envelope,
    result: Option<CallResult>,
) -> Verdict {
    let verdict = match result {
        Some(Ok(outcome)) => Verdict::Returned(OutcomeKind::from(&outcome)),
        Some(Err(_)) => {
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
    let label = match verdict {
        Verdict::Returned(OutcomeKind::Ack) => "ack",
        Verdict::Returned(OutcomeKind::Retry) | Verdict::TimedOut | Verdict::Panicked => "retry",
        Verdict::Returned(OutcomeKind::Reject) => "reject",
        Verdict::Returned(OutcomeKind::Defer) => "defer",
    };
    shared.metrics.consumed(label);
    verdict
}

fn record_duration<T: Topic, S: Subscription>(
    shared: &Shared<'_, T, impl MessageHandler<T>, S>,
    started: Option<std::time::Instant>,
) {
    if let Some(t) = started {
        shared.metrics.processing_duration(t.elapsed().as_secs_f64());
    }
}

/// Awaits a handler call that did not finish at once, bounded by the handler timeout (`None` = timed out).
async fn with_timeout<F: Future>(call: &mut Slot<F>, limit: Option<Duration>) -> Option<F::Output> {
    // The timer exists only for calls that wait; boxed so jobs stay small.
    let mut expired = limit.map(|l| Box::pin(tokio::time::sleep(l)));
    std::future::poll_fn(|cx| {
        if let Some(f) = call.as_mut().as_pin_mut()
            && let Poll::Ready(v) = f.poll(cx)
        {
            return Poll::Ready(Some(v));
        }
        match expired.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    })
    .await
}

enum Applied {
    Acked,
    Requeued,
    Dead,
}

fn head_result(applied: Applied, id: MessageId) -> HeadResult {
    match applied {
        Applied::Acked => HeadResult::Done,
        Applied::Requeued => HeadResult::Retrying(id),
        Applied::Dead => HeadResult::Dead,
    }
}

/// The settlement that carries out `decision` for the delivery of `env`.
fn decision_for<T: Topic, S: Subscription>(
    decision: Decision,
    env: &Envelope,
    shared: &Shared<'_, T, impl MessageHandler<T>, S>,
) -> (Settlement, Applied) {
    match decision {
        Decision::Ack => (Settlement::Ack, Applied::Acked),
        Decision::Discard { reason } => {
            tracing::warn!(queue = %shared.queue, message_id = %env.message_id, reason, "topic has no DLQ; message discarded");
            crate::metrics::failed(&shared.queue, reason);
            (Settlement::Ack, Applied::Dead)
        }
        Decision::Requeue { retry_count, hold } => {
            let mut envelope = env.clone();
            envelope.retry_count = retry_count;
            (Settlement::Requeue { envelope, hold }, Applied::Requeued)
        }
        Decision::DeadLetter { reason } => {
            let mut envelope = env.clone();
            let count = envelope.death.as_ref().map_or(0, |d| d.count) + 1;
            envelope.death = Some(Box::new(Death {
                reason,
                original_queue: shared.queue.clone(),
                count,
            }));
            crate::metrics::failed(&shared.queue, reason);
            shared.metrics.consumed("dead_letter");
            (Settlement::DeadLetter { envelope }, Applied::Dead)
        }
    }
}

/// Executes a routing decision through the transport (slow path).
async fn apply<T, H, S>(held: InFlight<'_, S>, decision: Decision, shared: &Shared<'_, T, H, S>) -> Applied
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    let (settlement, applied) = decision_for(decision, &held.envelope, shared);
    match held.settle(|_| settlement).await {
        Ok(()) => applied,
        Err(e) => {
            tracing::error!(queue = %shared.queue, error = %e, "settling a delivery failed; the broker will redeliver it");
            // The broker still holds the original: for the sequencer, it is as if it were retrying.
            let _ = applied;
            Applied::Requeued
        }
    }
}

/// Jobs off the fast path: hand-backs, poisoned keys, dead-letter consumption (live deliveries always
/// start on the fast path).
async fn slow_job<T, H, S>(j: Job<S::Token>, shared: &Shared<'_, T, H, S>) -> Done
where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    match j {
        Job::Release(d, delay) => {
            let (held, _) = InFlight::new(shared.sub, d);
            let delay = Some(delay);
            if let Err(e) = held.settle(|envelope| Settlement::Release { envelope, delay }).await {
                tracing::warn!(queue = %shared.queue, error = %e, "could not hand a message back; the broker will redeliver it");
            }
            Done::NOTHING
        }
        Job::Kill(d, reason) => {
            let key = Sequencer::key_of(&d);
            let (held, _) = InFlight::new(shared.sub, d);
            // A poisoned message is never the key's head: nothing to report to the sequencer.
            apply(held, router::dead(reason, T::topology()), shared).await;
            Done {
                key: Some(key),
                head: None,
            }
        }
        Job::Handle(d) => {
            handle_dead_letter(d, shared).await;
            Done::NOTHING
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
    let message = match decode::<T>(&env.payload) {
        Ok(m) => m,
        Err(e) => {
            // Nothing can ever handle it, and redelivering would loop: say so loudly and drop it.
            tracing::error!(queue = %shared.queue, message_id = %env.message_id, error = %e,
                "dead-lettered payload cannot be decoded; dropping it from the DLQ");
            settle_logged(held, |_| Settlement::Ack, shared).await;
            return;
        }
    };
    let death = env.death.as_ref();
    let metadata = DeadMessageMetadata {
        message: metadata_of(env, redelivered),
        reason: death.map(|d| d.reason.to_string()),
        original_queue: death.map(|d| d.original_queue.to_string()),
        death_count: death.map_or(1, |d| d.count),
    };
    let mut call: Slot<Call<_>> = Box::pin(Some(
        AssertUnwindSafe(shared.handler.handle_dead(message, metadata, shared.ctx)).catch_unwind(),
    ));
    let retry_later = |envelope| Settlement::Release {
        envelope,
        delay: Some(DEAD_HANDLER_RETRY_DELAY),
    };
    match with_timeout(&mut call, shared.settings.handler_timeout).await {
        Some(Ok(())) => settle_logged(held, |_| Settlement::Ack, shared).await,
        Some(Err(_)) => {
            shared.stats.panic();
            tracing::error!(queue = %shared.queue, message_id = %held.envelope.message_id, "handle_dead panicked; message stays in the DLQ");
            settle_logged(held, retry_later, shared).await;
        }
        None => {
            tracing::warn!(queue = %shared.queue, message_id = %held.envelope.message_id, "handle_dead timed out; message stays in the DLQ");
            settle_logged(held, retry_later, shared).await;
        }
    }
}

async fn settle_logged<T, H, S>(
    held: InFlight<'_, S>,
    how: impl FnOnce(Envelope) -> Settlement,
    shared: &Shared<'_, T, H, S>,
) where
    T: Topic,
    H: MessageHandler<T>,
    S: Subscription,
{
    if let Err(e) = held.settle(how).await {
        tracing::error!(queue = %shared.queue, error = %e, "settling a delivery failed; the broker will redeliver it");
    }
}

#[cfg(test)]
#[path = "consume_tests.rs"]
mod tests;

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn reconnect_waits_double_up_to_the_cap_with_a_spread() {
        let (first, cap) = RECONNECT_BACKOFF;
        for attempt in 1..=30 {
            let base = first.saturating_mul(1 << attempt.min(16)).min(cap);
            let waits: Vec<Duration> = (0..50).map(|_| backoff(attempt)).collect();
            for w in &waits {
                assert!(
                    *w >= base.mul_f64(0.75) && *w < base.mul_f64(1.25),
                    "attempt {attempt}: {w:?}"
                );
            }
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "attempt {attempt}: no spread in {waits:?}"
            );
        }
    }
}

//! Scheduling of a live consumer: prefetch bounds the handlers running, not the settlements on their way.
//!
//! With prefetch (capacity) 1, the next message's handler starts while the previous message's settlement
//! is still pending, whether the previous handler finished at once (the fast path) or had to wait (the
//! in-flight set, which wakes the loop through `handler_done`). At most `2 * capacity` deliveries are
//! unsettled at once.
//!
//! Retry budget: an attempt whose consumer died (`Delivery::lost_attempt`) counts like a `Retry`; a
//! delivery already past `max_retries` through such attempts is dead-lettered without a handler call.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Mode, run};
use crate::engine::settings::{ConsumerSettings, EngineSettings, RunControl, RunStats};
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::metadata::MessageMetadata;
use crate::outcome::Outcome;
use crate::topic::Topic;
use crate::topology::{QueueTopology, TopologyBuilder};
use crate::transport::{
    Delivery, Depth, Envelope, MessageId, Settlement, Source, SubscribeOptions, Subscription, Transport,
};

crate::define_topic!(Jobs, String, TopologyBuilder::new("consume-test-jobs").build());
crate::define_sequenced_topic!(
    Keyed,
    String,
    |_: &String| "k".to_string(),
    TopologyBuilder::new("consume-test-keyed")
        .sequenced(crate::topology::SequenceFailure::Skip)
        .hold_queue(Duration::from_millis(10))
        .dlq()
        .build()
);
crate::define_topic!(
    DlqJobs,
    String,
    TopologyBuilder::new("consume-test-dlq-jobs").dlq().build()
);

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(5);

/// What the handler and the transport saw, in order, on one channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The handler was called with this message.
    Started(&'static str),
    /// The engine asked to ack this message; the ack waits at the gate.
    Settling(&'static str),
    /// The engine asked to dead-letter this message, with the death reason stamped on the envelope; the
    /// settlement waits at the gate.
    DeadLettering(&'static str, Option<&'static str>),
    /// The engine asked to requeue or release this message (named by the variant); it waits at the gate.
    OtherSettling(&'static str, &'static str),
    /// The settlement went through.
    Settled(&'static str),
    /// The engine gave the message up unsettled.
    Abandoned(&'static str),
    /// The engine ended the subscription's reads before handing messages back.
    StoppedReceiving,
}

/// One delivery [`Gated`] hands out: the message's name (its payload and token) and what the broker says
/// about its earlier attempts.
#[derive(Debug, Clone, Copy)]
struct Msg {
    name: &'static str,
    retry_count: u32,
    lost_attempt: bool,
}

impl Msg {
    /// A first delivery.
    const fn fresh(name: &'static str) -> Self {
        Self {
            name,
            retry_count: 0,
            lost_attempt: false,
        }
    }

    /// A delivery carrying `retry_count` whose previous attempt ended with its consumer dying.
    const fn lost(name: &'static str, retry_count: u32) -> Self {
        Self {
            name,
            retry_count,
            lost_attempt: true,
        }
    }
}

/// A test-only transport: the engine's scheduling is only observable with a settlement the test can hold,
/// which no real backend offers. It hands out a fixed list of messages (named by their payload, which is
/// also the token) and holds every settlement at a gate until the test opens it.
#[derive(Clone)]
struct Gated(Arc<Inner>);

struct Inner {
    queue: Mutex<VecDeque<Msg>>,
    gate: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
}

impl Gated {
    fn new(messages: &[Msg], events: mpsc::UnboundedSender<Event>) -> Self {
        Self(Arc::new(Inner {
            queue: Mutex::new(messages.iter().copied().collect()),
            gate: CancellationToken::new(),
            events,
        }))
    }

    fn record(&self, event: Event) {
        // The test may have stopped listening; nothing to do then.
        let _ = self.0.events.send(event);
    }
}

impl Transport for Gated {
    const NAME: &'static str = "gated-test";
    type Subscription = Gated;
    type Options = ();

    async fn declare(&self, _topology: &QueueTopology) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, _topology: &'static QueueTopology, _messages: Vec<Envelope>) -> (u64, Result<()>) {
        (0, Ok(()))
    }

    async fn subscribe(&self, _source: Source, _options: &SubscribeOptions<()>) -> Result<Gated> {
        Ok(self.clone())
    }

    async fn depth(&self, _queue: &str) -> Result<Depth> {
        Ok(Depth::default())
    }
}

impl Subscription for Gated {
    type Token = &'static str;

    async fn receive(&self, max: usize, out: &mut Vec<Delivery<&'static str>>) -> Result<bool> {
        let taken: Vec<_> = {
            let mut queue = self.0.queue.lock().expect("queue lock");
            let n = max.min(queue.len());
            queue.drain(..n).collect()
        };
        if taken.is_empty() {
            // Nothing more will arrive; the loop stops through `RunControl::stop`.
            std::future::pending::<()>().await;
        }
        out.extend(taken.into_iter().map(|msg| Delivery {
            envelope: Envelope {
                payload: serde_json::to_vec(msg.name).expect("encode"),
                message_id: MessageId::Text(Arc::from(msg.name)),
                retry_count: msg.retry_count,
                // Every message has the one key (ignored on topics that are not sequenced).
                sequence_key: Some(Arc::from("k")),
                headers: Arc::new(HashMap::new()),
                death: None,
            },
            // Left to the engine: a lost attempt alone must make the delivery count as redelivered.
            redelivered: false,
            lost_attempts: u32::from(msg.lost_attempt),
            token: msg.name,
        }));
        Ok(true)
    }

    async fn settle(&self, token: &'static str, how: Settlement) -> Result<()> {
        self.record(match how {
            Settlement::Ack => Event::Settling(token),
            Settlement::DeadLetter { envelope } => Event::DeadLettering(token, envelope.death.map(|d| d.reason)),
            Settlement::Requeue { .. } => Event::OtherSettling(token, "requeue"),
            Settlement::Release { .. } => Event::OtherSettling(token, "release"),
        });
        self.0.gate.cancelled().await;
        self.record(Event::Settled(token));
        Ok(())
    }

    fn abandon(&self, token: &'static str, _envelope: Envelope) {
        self.record(Event::Abandoned(token));
    }

    async fn stop_receiving(&self, _out: &mut Vec<Delivery<&'static str>>) {
        self.record(Event::StoppedReceiving);
    }

    async fn close(&self) {}
}

/// What a handler call was told about its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: &'static str,
    retry_count: u32,
    redelivered: bool,
}

/// Records each call, then acks: at once, or after yielding once (so the call has to wait and finishes
/// in the loop's in-flight set).
struct Recorder {
    events: mpsc::UnboundedSender<Event>,
    /// Each call's metadata, recorded before its `Started` event is sent.
    seen: Arc<Mutex<Vec<Seen>>>,
    waits: bool,
    /// When set, the call for `A` waits for it.
    hold_a: Option<CancellationToken>,
}

impl<T: Topic<Message = String>> MessageHandler<T> for Recorder {
    type Context = ();

    async fn handle(&self, message: String, metadata: MessageMetadata, _ctx: &()) -> Outcome {
        let name = ["A", "B", "C"]
            .into_iter()
            .find(|n| *n == message)
            .expect("one of the test's messages");
        self.seen.lock().expect("seen lock").push(Seen {
            name,
            retry_count: metadata.retry_count,
            redelivered: metadata.redelivered,
        });
        let _ = self.events.send(Event::Started(name));
        if self.waits {
            tokio::task::yield_now().await;
        }
        if let (Some(hold), "A") = (&self.hold_a, name) {
            hold.cancelled().await;
        }
        Outcome::Ack
    }
}

/// A consumer running on a [`Gated`] transport with prefetch 1.
struct Harness {
    events: mpsc::UnboundedReceiver<Event>,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: CancellationToken,
    ctl: RunControl,
    consumer: JoinHandle<Result<()>>,
}

impl Harness {
    /// First deliveries of `messages` on [`Jobs`], with no retries.
    fn start(messages: &[&'static str], handler_waits: bool) -> Self {
        let messages: Vec<_> = messages.iter().copied().map(Msg::fresh).collect();
        Self::start_on::<Jobs>(&messages, handler_waits, 0)
    }

    /// `messages` on topic `T` with a retry budget of `max_retries`.
    fn start_on<T: Topic<Message = String>>(messages: &[Msg], handler_waits: bool, max_retries: u32) -> Self {
        Self::start_with::<T>(messages, handler_waits, max_retries, 1, None)
    }

    /// `messages` on topic `T` with a retry budget of `max_retries`, prefetch `capacity`, and the call for
    /// `A` held until `hold_a` (when given) is cancelled.
    fn start_with<T: Topic<Message = String>>(
        messages: &[Msg],
        handler_waits: bool,
        max_retries: u32,
        capacity: u16,
        hold_a: Option<CancellationToken>,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let transport = Gated::new(messages, tx.clone());
        let gate = transport.0.gate.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler_seen = seen.clone();
        let ctl = RunControl::default();
        let run_ctl = ctl.clone();
        let consumer = tokio::spawn(async move {
            let handler = Recorder {
                events: tx,
                seen: handler_seen,
                waits: handler_waits,
                hold_a,
            };
            let settings = ConsumerSettings {
                engine: EngineSettings {
                    max_retries,
                    capacity: usize::from(capacity),
                    handler_timeout: None,
                    max_pending_per_key: None,
                    max_message_size: None,
                    max_reconnect_attempts: None,
                    processing: Arc::default(),
                },
                subscribe: SubscribeOptions {
                    prefetch: capacity,
                    ..SubscribeOptions::default()
                },
            };
            let stats = RunStats::default();
            let source = Source::Main(T::topology());
            run::<T, _, _>(
                &transport,
                source,
                Mode::Live,
                &handler,
                &(),
                &settings,
                &run_ctl,
                &stats,
            )
            .await
        });
        Self {
            events,
            seen,
            gate,
            ctl,
            consumer,
        }
    }

    /// The next event, or `None` if none comes within [`WAIT`] (so a stall fails at the assertion that
    /// names the event it waited for).
    async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.events.recv()).await.ok().flatten()
    }

    /// Opens the gate, collects events until `last` arrives (failing if it does not within [`WAIT`]),
    /// then stops the consumer. Returns every event, `last` included, and every handler call's metadata.
    async fn run_until(mut self, last: Event) -> (Vec<Event>, Vec<Seen>) {
        self.gate.cancel();
        let mut events = Vec::new();
        while events.last() != Some(&last) {
            let event = self.next().await;
            events.push(event.unwrap_or_else(|| panic!("waited for {last:?}; saw only {events:?}")));
        }
        let calls = self.seen.clone();
        events.extend(self.stop().await);
        let calls = calls.lock().expect("seen lock").clone();
        (events, calls)
    }

    /// Asserts that nothing happens while the runtime gets every chance to run the consumer.
    async fn assert_quiet(&mut self, why: &str) {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(50), self.events.recv()).await {
            panic!("{why}, yet saw {event:?}");
        }
    }

    /// Stops the consumer, checks it ended cleanly, and returns the events it left.
    async fn stop(mut self) -> Vec<Event> {
        self.ctl.stop.cancel();
        tokio::time::timeout(WAIT, self.consumer)
            .await
            .expect("the consumer stops within the wait")
            .expect("the consumer did not panic")
            .expect("the consumer ended without an error");
        // The consumer task owned every sender: the channel is now closed.
        let mut rest = Vec::new();
        while let Some(event) = self.events.recv().await {
            rest.push(event);
        }
        rest
    }
}

/// With prefetch 1, B's handler starts while A's ack is still held; once the gate opens, both are
/// settled and the consumer stops cleanly.
async fn next_starts_while_last_ack_is_held(handler_waits: bool) {
    let mut h = Harness::start(&["A", "B"], handler_waits);
    assert_eq!(h.next().await, Some(Event::Started("A")));
    assert_eq!(h.next().await, Some(Event::Settling("A")));
    // A's ack is at the gate (no `Settled("A")` before this): B must not wait for it.
    assert_eq!(h.next().await, Some(Event::Started("B")));
    assert_eq!(h.next().await, Some(Event::Settling("B")));
    assert!(!h.gate.is_cancelled());

    h.gate.cancel();
    let mut settled = vec![h.next().await.expect("an ack"), h.next().await.expect("an ack")];
    settled.sort();
    assert_eq!(settled, [Event::Settled("A"), Event::Settled("B")]);
    assert_eq!(h.stop().await, []);
}

#[tokio::test]
async fn waiting_handler_next_message_starts_while_last_ack_is_held() {
    next_starts_while_last_ack_is_held(true).await;
}

#[tokio::test]
async fn instant_handler_next_message_starts_while_last_ack_is_held() {
    next_starts_while_last_ack_is_held(false).await;
}

/// With prefetch 1, at most two deliveries are unsettled: C waits while A's and B's acks are held, and
/// starts once the gate opens.
async fn at_most_twice_prefetch_unsettled(handler_waits: bool) {
    let mut h = Harness::start(&["A", "B", "C"], handler_waits);
    assert_eq!(h.next().await, Some(Event::Started("A")));
    assert_eq!(h.next().await, Some(Event::Settling("A")));
    assert_eq!(h.next().await, Some(Event::Started("B")));
    assert_eq!(h.next().await, Some(Event::Settling("B")));
    h.assert_quiet("A's and B's acks are held (2 x prefetch unsettled): C must not start")
        .await;

    h.gate.cancel();
    let mut seen = Vec::new();
    while seen.last() != Some(&Event::Settled("C")) {
        seen.push(h.next().await.expect("C handled and settled once the gate is open"));
    }
    seen.extend(h.stop().await);
    let position = |e: Event| seen.iter().position(|s| *s == e).expect("event seen");
    assert!(position(Event::Started("C")) < position(Event::Settling("C")));
    seen.sort();
    assert_eq!(
        seen,
        [
            Event::Started("C"),
            Event::Settling("C"),
            Event::Settled("A"),
            Event::Settled("B"),
            Event::Settled("C"),
        ]
    );
}

#[tokio::test]
async fn waiting_handler_at_most_twice_prefetch_unsettled() {
    at_most_twice_prefetch_unsettled(true).await;
}

#[tokio::test]
async fn instant_handler_at_most_twice_prefetch_unsettled() {
    at_most_twice_prefetch_unsettled(false).await;
}

/// A lost attempt raises the retry count the handler sees by one, and makes the delivery a redelivery.
#[tokio::test]
async fn a_lost_attempt_counts_against_the_retry_budget() {
    let h = Harness::start_on::<Jobs>(&[Msg::lost("A", 1)], false, 3);
    let (events, calls) = h.run_until(Event::Settled("A")).await;
    assert_eq!(events, [Event::Started("A"), Event::Settling("A"), Event::Settled("A")]);
    assert_eq!(
        calls,
        [Seen {
            name: "A",
            retry_count: 2,
            redelivered: true,
        }]
    );
}

/// Even a first attempt that was lost is a redelivery with one retry used.
#[tokio::test]
async fn a_lost_first_attempt_is_a_redelivery() {
    let h = Harness::start_on::<Jobs>(&[Msg::lost("A", 0)], true, 3);
    let (events, calls) = h.run_until(Event::Settled("A")).await;
    assert_eq!(events, [Event::Started("A"), Event::Settling("A"), Event::Settled("A")]);
    assert_eq!(
        calls,
        [Seen {
            name: "A",
            retry_count: 1,
            redelivered: true,
        }]
    );
}

/// A lost attempt that takes the count past `max_retries` (2 + 1 > 2) dead-letters the message with
/// `max_retries_exceeded` without calling the handler; the next message is handled as usual.
async fn lost_attempts_past_the_budget_dead_letter(handler_waits: bool) {
    let h = Harness::start_on::<DlqJobs>(&[Msg::lost("A", 2), Msg::fresh("B")], handler_waits, 2);
    let (mut events, calls) = h.run_until(Event::Settled("B")).await;
    let position = |e: Event| events.iter().position(|s| *s == e).expect("event seen");
    assert!(position(Event::DeadLettering("A", Some("max_retries_exceeded"))) < position(Event::Settled("A")));
    assert!(position(Event::Started("B")) < position(Event::Settling("B")));
    events.sort();
    // No `Started("A")`: the handler never saw A.
    assert_eq!(
        events,
        [
            Event::Started("B"),
            Event::Settling("B"),
            Event::DeadLettering("A", Some("max_retries_exceeded")),
            Event::Settled("A"),
            Event::Settled("B"),
        ]
    );
    assert_eq!(
        calls,
        [Seen {
            name: "B",
            retry_count: 0,
            redelivered: false,
        }]
    );
}

#[tokio::test]
async fn lost_attempts_past_the_budget_dead_letter_without_a_call() {
    lost_attempts_past_the_budget_dead_letter(false).await;
}

#[tokio::test]
async fn waiting_handler_lost_attempts_past_the_budget_dead_letter_without_a_call() {
    lost_attempts_past_the_budget_dead_letter(true).await;
}

/// On a topic without a DLQ, a delivery past its budget is discarded (acked) without a handler call.
#[tokio::test]
async fn lost_attempts_past_the_budget_without_a_dlq_are_discarded_without_a_call() {
    let h = Harness::start_on::<Jobs>(&[Msg::lost("A", 2), Msg::fresh("B")], false, 2);
    let (mut events, calls) = h.run_until(Event::Settled("B")).await;
    events.sort();
    assert_eq!(
        events,
        [
            Event::Started("B"),
            Event::Settling("A"),
            Event::Settling("B"),
            Event::Settled("A"),
            Event::Settled("B"),
        ]
    );
    assert_eq!(calls.iter().map(|c| c.name).collect::<Vec<_>>(), ["B"]);
}

/// At the boundary (1 + 1 = 2, not more than `max_retries` 2) the handler still gets its last try.
#[tokio::test]
async fn a_lost_attempt_within_the_budget_is_handled() {
    let h = Harness::start_on::<DlqJobs>(&[Msg::lost("A", 1)], false, 2);
    let (events, calls) = h.run_until(Event::Settled("A")).await;
    assert_eq!(events, [Event::Started("A"), Event::Settling("A"), Event::Settled("A")]);
    assert_eq!(
        calls,
        [Seen {
            name: "A",
            retry_count: 2,
            redelivered: true,
        }]
    );
}

/// Rule 14 across a hand-over: a sequenced consumer stopped while a key's head is in its handler hands the
/// messages buffered behind it back only once the handler is done and the reads have ended, one after
/// another, in delivery order.
#[tokio::test]
async fn a_stopping_sequenced_consumer_hands_back_in_delivery_order_after_its_reads_end() {
    let hold = CancellationToken::new();
    let messages = [Msg::fresh("A"), Msg::fresh("B"), Msg::fresh("C")];
    let mut h = Harness::start_with::<Keyed>(&messages, false, 0, 3, Some(hold.clone()));
    // One read takes all three; B and C wait behind A, their key's head.
    assert_eq!(h.next().await, Some(Event::Started("A")));
    h.ctl.stop.cancel();
    h.assert_quiet("nothing goes back while the key's head is in its handler")
        .await;
    hold.cancel();
    h.gate.cancel();
    let events = h.stop().await;
    assert_eq!(
        events,
        vec![
            Event::Settling("A"),
            Event::Settled("A"),
            Event::StoppedReceiving,
            Event::OtherSettling("B", "release"),
            Event::Settled("B"),
            Event::OtherSettling("C", "release"),
            Event::Settled("C"),
        ]
    );
}

//! Scheduling of a live consumer: prefetch bounds the handlers running, not the settlements on their way.
//!
//! With prefetch (capacity) 1, the next message's handler starts while the previous message's settlement
//! is still pending, whether the previous handler finished at once (the fast path) or had to wait (the
//! in-flight set, which wakes the loop through `handler_done`). At most `2 * capacity` deliveries are
//! unsettled at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Mode, run};
use crate::engine::settings::{ConsumerSettings, RunControl, RunStats};
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

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(5);

/// What the handler and the transport saw, in order, on one channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The handler was called with this message.
    Started(&'static str),
    /// The engine asked to ack this message; the ack waits at the gate.
    Settling(&'static str),
    /// The ack went through.
    Settled(&'static str),
    /// The engine gave the message up unsettled.
    Abandoned(&'static str),
}

/// A test-only transport: the engine's scheduling is only observable with a settlement the test can hold,
/// which no real backend offers. It hands out a fixed list of messages (named by their payload, which is
/// also the token) and holds every ack at a gate until the test opens it.
#[derive(Clone)]
struct Gated(Arc<Inner>);

struct Inner {
    queue: Mutex<VecDeque<&'static str>>,
    gate: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
}

impl Gated {
    fn new(messages: &[&'static str], events: mpsc::UnboundedSender<Event>) -> Self {
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

    async fn declare(&self, _topology: &QueueTopology) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, _topology: &'static QueueTopology, _messages: Vec<Envelope>) -> (u64, Result<()>) {
        (0, Ok(()))
    }

    async fn subscribe(&self, _source: Source, _options: &SubscribeOptions) -> Result<Gated> {
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
        out.extend(taken.into_iter().map(|name| Delivery {
            envelope: Envelope {
                payload: serde_json::to_vec(name).expect("encode"),
                message_id: MessageId::Text(Arc::from(name)),
                retry_count: 0,
                sequence_key: None,
                headers: Arc::new(HashMap::new()),
                death: None,
            },
            redelivered: false,
            token: name,
        }));
        Ok(true)
    }

    async fn settle(&self, token: &'static str, how: Settlement) -> Result<()> {
        assert!(matches!(how, Settlement::Ack), "{token}: expected an ack, got {how:?}");
        self.record(Event::Settling(token));
        self.0.gate.cancelled().await;
        self.record(Event::Settled(token));
        Ok(())
    }

    fn abandon(&self, token: &'static str, _envelope: Envelope) {
        self.record(Event::Abandoned(token));
    }

    async fn close(&self) {}
}

/// Records each call, then acks: at once, or after yielding once (so the call has to wait and finishes
/// in the loop's in-flight set).
struct Recorder {
    events: mpsc::UnboundedSender<Event>,
    waits: bool,
}

impl MessageHandler<Jobs> for Recorder {
    type Context = ();

    async fn handle(&self, message: String, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
        let name = ["A", "B", "C"]
            .into_iter()
            .find(|n| *n == message)
            .expect("one of the test's messages");
        let _ = self.events.send(Event::Started(name));
        if self.waits {
            tokio::task::yield_now().await;
        }
        Outcome::Ack
    }
}

/// A consumer running on a [`Gated`] transport with prefetch 1.
struct Harness {
    events: mpsc::UnboundedReceiver<Event>,
    gate: CancellationToken,
    ctl: RunControl,
    consumer: JoinHandle<Result<()>>,
}

impl Harness {
    fn start(messages: &[&'static str], handler_waits: bool) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let transport = Gated::new(messages, tx.clone());
        let gate = transport.0.gate.clone();
        let ctl = RunControl::default();
        let run_ctl = ctl.clone();
        let consumer = tokio::spawn(async move {
            let handler = Recorder {
                events: tx,
                waits: handler_waits,
            };
            let settings = ConsumerSettings {
                max_retries: 0,
                capacity: 1,
                handler_timeout: None,
                max_pending_per_key: None,
                max_message_size: None,
                max_reconnect_attempts: None,
                processing: Arc::default(),
                subscribe: SubscribeOptions {
                    prefetch: 1,
                    ..SubscribeOptions::default()
                },
            };
            let stats = RunStats::default();
            let source = Source::Main(Jobs::topology());
            run::<Jobs, _, _>(
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

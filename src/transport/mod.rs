//! The narrow waist: what a backend implements so the engine can run on its broker.
//!
//! The engine decides everything a user can observe about delivery (see `docs/CONTRACT.md`); a transport
//! only stores messages, hands them out and executes the engine's [`Settlement`]s with the strongest
//! primitive its broker has. A transport never sees a user's handler, codec or message type: it moves
//! [`Envelope`]s (bytes plus the engine's headers).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::{Result, ShoveError};
use crate::topology::QueueTopology;

mod ids;
#[cfg(shard_lease)]
pub(crate) mod lease;
#[cfg(broker_backend)]
pub(crate) mod redact;
// Only the broker backends store the envelope as named fields.
#[cfg(broker_backend)]
pub(crate) mod wire;

pub(crate) use ids::{new_message_id, no_headers, random_u64};

/// Dead-letter reasons, identical on every backend.
pub(crate) mod reasons {
    /// The handler returned `Reject`.
    pub const REJECTED: &str = "rejected";
    /// The handler asked for a retry after its budget was spent.
    pub const MAX_RETRIES_EXCEEDED: &str = "max_retries_exceeded";
    /// The payload was larger than `max_message_size`.
    pub const OVERSIZE: &str = "oversize";
    /// The codec could not decode the payload.
    pub const DESERIALIZE: &str = "deserialize";
    /// A later message of a key poisoned by `SequenceFailure::FailAll`.
    pub const SEQUENCE_POISONED: &str = "sequence_poisoned";
}

/// Every header name prefix some backend writes on the wire, compared case-insensitively: a user
/// header starting with one of them is refused by `publish_with_headers` on every backend (contract
/// rule 2), so that a user value can never stand in for shove's own or the broker's.
///
/// - `x-retry-count`, `x-message-id`, `x-death`, `x-sequence-key`: shove 0.11's reserved prefixes;
/// - `x-original-queue`: written with every dead letter;
/// - `x-first-death`, `x-last-death`: written by RabbitMQ when a hold queue dead-letters a copy;
/// - `shove-`: shove's names on NATS (`Shove-Message-Id`, `Shove-Retry-Count`, …) and Kafka;
/// - `nats-`: the NATS server's own (`Nats-Msg-Id` deduplicates, `Nats-Expected-*` makes a publish fail).
pub(crate) const RESERVED_PREFIXES: [&str; 9] = [
    "x-retry-count",
    "x-message-id",
    "x-death",
    "x-sequence-key",
    "x-original-queue",
    "x-first-death",
    "x-last-death",
    "shove-",
    "nats-",
];

/// Whether `name` starts with a reserved prefix (case-insensitively).
pub(crate) fn is_reserved(name: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|p| name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// A message id (`x-message-id`). Ids shove stamps are UUIDs, kept as 16 bytes and formatted only when a
/// handler asks for them; ids from elsewhere are kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// A UUID (the usual case).
    Uuid(uuid::Uuid),
    /// Any other text.
    Text(Arc<str>),
}

impl MessageId {
    /// Reads an id from a header value: a UUID when it parses as one, text otherwise.
    #[cfg(broker_backend)]
    pub fn parse(text: &str) -> Self {
        match uuid::Uuid::try_parse(text) {
            Ok(u) => MessageId::Uuid(u),
            Err(_) => MessageId::Text(Arc::from(text)),
        }
    }

    /// The id as text, as handlers see it in `MessageMetadata::delivery_id`.
    pub fn to_text(&self) -> String {
        match self {
            MessageId::Uuid(u) => hyphenated(u.as_bytes()),
            MessageId::Text(t) => String::from(&**t),
        }
    }
}

/// Two lower-case hex digits for every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    table
};

/// A UUID's lower-case hyphenated text (`8-4-4-4-12` hex digits). Every delivery formats one for its
/// handler, so it is written a digit pair at a time into a stack buffer, which costs less than `uuid`'s
/// formatter (see docs/PERFORMANCE.md).
fn hyphenated(bytes: &[u8; 16]) -> String {
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        let [high, low] = HEX_PAIRS[usize::from(*b)];
        text[at] = high;
        text[at + 1] = low;
        at += 2;
    }
    // SAFETY: every byte of `text` is an ASCII hex digit from `HEX_PAIRS` or a `-`, so it is valid UTF-8.
    // Checking it with `str::from_utf8` would cost more per delivery than the formatting itself.
    unsafe { String::from_utf8_unchecked(text.to_vec()) }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageId::Uuid(u) => u.hyphenated().fmt(f),
            MessageId::Text(t) => f.write_str(t),
        }
    }
}

/// Why and where a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// A reason from the engine's list (`rejected`, `max_retries_exceeded`, …).
    pub reason: &'static str,
    /// The queue the message was consumed from.
    pub original_queue: Arc<str>,
    /// How many times it has died (1 the first time).
    pub count: u32,
}

/// A message as the engine and a transport exchange it: raw bytes plus the engine's envelope.
/// The payload is a plain vector: it is moved, never shared, on the common path (publish → deliver →
/// ack); only retries and hand-backs copy it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The encoded message.
    pub payload: Vec<u8>,
    /// `x-message-id`: stamped once at publish, never changed.
    pub message_id: MessageId,
    /// `x-retry-count`.
    pub retry_count: u32,
    /// `x-sequence-key`, for sequenced topics.
    pub sequence_key: Option<Arc<str>>,
    /// The user's headers (no reserved names).
    pub headers: Arc<HashMap<String, String>>,
    /// Set once the message has been dead-lettered (boxed: rare, and it keeps envelopes small).
    pub death: Option<Box<Death>>,
}

/// A message handed to the engine, with what the transport needs to settle it later.
pub struct Delivery<Token> {
    /// The message.
    pub envelope: Envelope,
    /// Whether the broker has delivered this message before.
    pub redelivered: bool,
    /// How many earlier deliveries of this stored message ended without a settlement because their
    /// consumer went away mid-way (crashed, was killed, lost its connection), as opposed to being handed
    /// back. A fact the transport reads from its broker (a delivery count less the hand-backs it
    /// recorded); the engine counts each such attempt against the retry budget (contract rule 9), so a
    /// message that kills every consumer that takes it is dead-lettered, never loops.
    pub lost_attempts: u32,
    /// The transport's handle for settling this delivery.
    pub token: Token,
}

/// Which stream of messages a subscription reads.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The main queue of an unsequenced topic (competing consumers).
    Main(&'static QueueTopology),
    /// The shards of a sequenced topic. Each shard has at most one active subscription at a time, and a
    /// shard's messages are handed out in publish order.
    Shards(&'static QueueTopology),
    /// The topic's dead-letter queue.
    DeadLetters(&'static QueueTopology),
}

impl Source {
    /// The topic this source belongs to.
    pub fn topology(&self) -> &'static QueueTopology {
        match self {
            Source::Main(t) | Source::Shards(t) | Source::DeadLetters(t) => t,
        }
    }
}

/// The error for the dead letters of a topic that has no DLQ: a consumer of its DLQ (`run_dlq`,
/// `register_dlq`), or a dead-letter settlement, which the engine never asks for on such a topic (it
/// discards the message instead, contract rule 8). One message, whichever layer finds it.
pub(crate) fn no_dlq(queue: &str) -> ShoveError {
    ShoveError::Topology(format!("topic '{queue}' has no DLQ; add .dlq() to its topology"))
}

/// Where a retried or deferred message waits before it is delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Index into [`QueueTopology::hold_queues`] (or the shard's hold queues).
    pub index: usize,
    /// The stage's delay.
    pub delay: Duration,
}

/// What the engine decided to do with a delivery; the transport executes it durably.
#[derive(Debug)]
pub enum Settlement {
    /// Done: remove the message.
    Ack,
    /// Deliver `envelope` again (its `retry_count` already updated) after `hold`, or at once when `None`.
    /// The original must be settled in the same atomic step where the broker allows it, otherwise the new
    /// copy is stored first (contract rule 13).
    Requeue {
        /// The message to deliver again.
        envelope: Envelope,
        /// The delay stage, if any.
        hold: Option<Hold>,
    },
    /// Move `envelope` (its `death` filled in) to the topic's DLQ and remove the original.
    DeadLetter {
        /// The message to dead-letter.
        envelope: Envelope,
    },
    /// Hand `envelope` back unprocessed, unchanged, after `delay` (no retry budget consumed).
    Release {
        /// The message as it was delivered.
        envelope: Envelope,
        /// How long the broker should wait before redelivering it.
        delay: Option<Duration>,
    },
}

/// How a subscription should behave, from the consumer's options. `O` is the backend's own settings
/// ([`Transport::Options`]).
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions<O> {
    /// How many deliveries the engine may hold unsettled at once (the broker-side credit, where the
    /// broker has one).
    pub prefetch: u16,
    /// The consumer's handler timeout (`None`: unbounded): a broker that reclaims deliveries left
    /// unsettled must wait longer than this before deciding a consumer went away.
    pub handler_timeout: Option<Duration>,
    /// The backend's own settings.
    pub backend: O,
}

/// Depth of a queue, for autoscaling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Messages waiting to be delivered.
    pub ready: u64,
    /// Messages delivered and not yet settled.
    pub in_flight: u64,
}

/// An open subscription. Shared by the engine's consume loop and its in-flight handlers, so every method
/// takes `&self` and is safe to call concurrently.
pub trait Subscription: Send + Sync + 'static {
    /// The per-delivery settle handle.
    type Token: Send + 'static;

    /// Whether the broker keeps counting a stored message's deliveries across crashes (a delivery
    /// counter), so [`Delivery::lost_attempts`] keeps growing while a message keeps killing its
    /// consumers. When `false` (the transport only knows "delivered before"), the engine writes a
    /// delivery's lost attempts into the message before handling it: it requeues a copy whose retry
    /// count includes them, and handles that copy, so the count survives the next crash. Such a
    /// transport must not hand out any delivery of the queue while a copy to that same queue is being
    /// settled: the copy could be handled, and its process die, before the original's settlement reached
    /// the broker, and then the original would come back and run a second time.
    const KEEPS_LOST_ATTEMPTS: bool = true;

    /// Waits until at least one message is available and appends at most `max` of them to `out`;
    /// returns `Ok(false)` when the subscription is closed for good (the broker shut down).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future before it completes loses no message (nothing is appended).
    fn receive(&self, max: usize, out: &mut Vec<Delivery<Self::Token>>) -> impl Future<Output = Result<bool>> + Send;

    /// Executes the engine's decision for one delivery. Idempotent from the engine's point of view: it
    /// is called once per delivery.
    fn settle(&self, token: Self::Token, how: Settlement) -> impl Future<Output = Result<()>> + Send;

    /// Called (synchronously, e.g. from `Drop`) for a delivery the engine gave up without settling, such
    /// as a handler aborted at the end of a drain. The message must become deliverable again, now or when
    /// the broker notices; it must never be lost.
    fn abandon(&self, token: Self::Token, envelope: Envelope);

    /// Ends this subscription's reads for good before the engine hands a sequenced source's messages
    /// back with [`Subscription::hand_back_in_order`] (contract rule 14): a read still open at the
    /// broker ends, and the messages that arrived for it are appended to `out` in the order the broker
    /// sent them, to go back after the ones the engine holds. The default is for transports whose reads
    /// leave nothing open.
    fn stop_receiving(&self, out: &mut Vec<Delivery<Self::Token>>) -> impl Future<Output = ()> + Send {
        let _ = out;
        async {}
    }

    /// Hands a stopping sequenced consumer's unhandled messages back, in delivery order per key: the
    /// broker must deliver them again in the order given, ahead of what was never delivered, so the next
    /// reader keeps each key's order (contract rule 14). Called once, after
    /// [`Subscription::stop_receiving`], when no handler runs. The default releases them one after
    /// another ([`Settlement::Release`], no delay), for brokers that redeliver hand-backs in the order
    /// they get them or in place.
    fn hand_back_in_order(&self, deliveries: Vec<Delivery<Self::Token>>) -> impl Future<Output = ()> + Send {
        async move {
            for d in deliveries {
                let how = Settlement::Release {
                    envelope: d.envelope,
                    delay: None,
                };
                if let Err(e) = self.settle(d.token, how).await {
                    tracing::warn!(error = %e, "could not hand a message back; the broker will redeliver it");
                }
            }
        }
    }

    /// Stops the subscription; deliveries not yet settled are returned to the broker.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// One broker connection as the engine sees it. Cloning shares the connection.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The backend's name in logs and the `backend` label of metrics (e.g. `"inmemory"`).
    const NAME: &'static str;
    /// The subscription type.
    type Subscription: Subscription;
    /// Settings of this backend alone that a consumer passes to [`Transport::subscribe`] (`()` when it
    /// has none). A backend's client reads them from the consumer's options.
    type Options: Clone + Default + Send + Sync + 'static;

    /// Creates the topic's queues if they do not exist. Idempotent.
    fn declare(&self, topology: &QueueTopology) -> impl Future<Output = Result<()>> + Send;

    /// Stores `messages` on the topic (the shard is chosen from `sequence_key` on sequenced topics).
    /// Returns once the broker has accepted them durably. Returns the number accepted along with the
    /// first error, if any.
    fn publish(
        &self,
        topology: &'static QueueTopology,
        messages: Vec<Envelope>,
    ) -> impl Future<Output = (u64, Result<()>)> + Send;

    /// Opens a subscription on `source`, declaring the topic first if needed.
    fn subscribe(
        &self,
        source: Source,
        options: &SubscribeOptions<Self::Options>,
    ) -> impl Future<Output = Result<Self::Subscription>> + Send;

    /// Current depth of a queue (or of all shards of a sequenced topic, by main queue name).
    fn depth(&self, queue: &str) -> impl Future<Output = Result<Depth>> + Send;
}

/// State that the layers above a transport keep per client, opaque to the backend: a client holds one
/// and hands it out, and never looks inside (today it holds the consumer-group directory that
/// `Broker::autoscaler` reads). Cloning shares the slot.
#[derive(Clone, Default)]
pub struct Attachments(Arc<OnceLock<Arc<dyn Any + Send + Sync>>>);

impl Attachments {
    /// The attached value of type `A`, created on first use.
    ///
    /// # Panics
    ///
    /// When a value of another type was attached first: a client serves one backend, so the layers
    /// above always ask for the same type.
    pub fn get_or_default<A: Any + Send + Sync + Default>(&self) -> Arc<A> {
        let any = self.0.get_or_init(|| Arc::new(A::default())).clone();
        match any.downcast::<A>() {
            Ok(a) => a,
            Err(_) => panic!(
                "a client's attachments were created as another type than {}",
                std::any::type_name::<A>()
            ),
        }
    }
}

/// The wall-clock time, in Unix milliseconds, at which a delay that starts now is over: for transports
/// that keep a delayed copy on the server with its due time and move it back once the clock reaches it.
/// Rounded up, so that with the mover comparing whole milliseconds a copy never comes back early.
#[cfg(due_time_holds)]
pub(crate) fn due_at_ms(delay: Duration) -> i64 {
    let now_us = chrono::Utc::now().timestamp_micros();
    let delay_us = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2);
    now_us.saturating_add(delay_us).saturating_add(999) / 1000
}

#[cfg(all(test, due_time_holds))]
mod due_tests {
    use super::*;

    #[test]
    fn a_due_time_is_never_before_the_delay_is_over() {
        for delay_us in [0u64, 1, 999, 1_000, 1_001, 60_000, 60_500] {
            let delay = Duration::from_micros(delay_us);
            let before_us = chrono::Utc::now().timestamp_micros();
            let due_ms = due_at_ms(delay);
            assert!(
                due_ms * 1000 >= before_us + delay_us as i64,
                "due {due_ms} ms is before now + {delay:?}"
            );
        }
    }
}

//! The engine's transport on NATS JetStream.
//!
//! - A queue (a topic's main queue, or a DLQ) is a stream `SHOVE_<queue>` with work-queue retention and
//!   file storage, and subjects `<queue>`, `<queue>.hold` and `<queue>.shard.<n>`.
//! - Each role reads the stream through one durable pull consumer, created once per client:
//!   `<queue>-consumer` (competing consumers share it), `<queue>-shards` (all shards, in stream order) and
//!   `<queue>-hold`.
//! - Prefetch: a subscription holds at most `prefetch` messages not yet settled (requested, delivered or
//!   being handled), and up to twice as many while its handlers settle messages within a millisecond
//!   (see [`super::credits`]); a sequenced topic's, never more than `prefetch`.
//! - Ack: `+ACK`. Retry / defer: the updated copy is published (confirmed, with a deduplication id made
//!   from the original's stream sequence, so a redelivered original cannot make a second copy) to the hold
//!   subject with its due time, then the original is acknowledged. Messages in the hold subject are moved
//!   back when due; one that is not due yet is nak'ed with the remaining delay, so the server holds it.
//! - Dead letter: the copy goes to the DLQ's stream, then the original is acknowledged.
//! - Hand-back: `-NAK` (with a delay when asked): the original keeps its place and its retry count.
//! - Crash recovery: a message left unacknowledged is redelivered by the server after the ack wait; while
//!   a handler runs, its message's ack wait is extended (`+WPI`) so long handlers are not redelivered.
//! - Sequenced topics: one subscription at a time reads a topic's shards, holding a lock in the
//!   stream `SHOVE_LOCKS` (renewed; it expires if its holder dies); the others stand by.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::subject::Subject;
use bytes::Bytes;
use futures::StreamExt;

use tokio_util::sync::CancellationToken;

use super::client::NatsClient;
use crate::error::{Result, ShoveError};
use crate::topology::QueueTopology;
use crate::transport::lease::{self, Lease, Ownership};
use crate::transport::no_dlq;
use crate::transport::wire::{WireNames, WireValue, percent_escape, percent_unescape};
use crate::transport::{
    Delivery, Depth, Envelope, Settlement, Source, SubscribeOptions, Subscription, Transport, due_at_ms, is_reserved,
};

/// Header names on NATS (spec: `Shove-*` for the engine's, `Nats-Msg-Id` for the server's deduplication).
mod names {
    use crate::transport::wire::{WireNames, X_NAMES};

    /// The server's deduplication id: the message id on a first publish, an attempt id on copies.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// When a held message is due (milliseconds since the epoch).
    pub const DUE: &str = "Shove-Due";
    /// The subject a held message goes back to.
    pub const TARGET: &str = "Shove-Target";

    /// A copy (a retry, a defer, a dead letter): `Nats-Msg-Id` is the copy's own deduplication id, so the
    /// message id travels in `Shove-Message-Id`. A message another client published may carry only
    /// `Nats-Msg-Id`, which is then its id.
    pub static COPY: WireNames = WireNames {
        message_id: "Shove-Message-Id",
        message_id_fallback: Some(MSG_ID),
        retry_count: "Shove-Retry-Count",
        sequence_key: X_NAMES.sequence_key,
        death_reason: "Shove-Death-Reason",
        death_count: "Shove-Death-Count",
        original_queue: "Shove-Original-Queue",
    };

    /// A first publish: its id goes in `Nats-Msg-Id` only, being also the server's deduplication id.
    pub static FIRST: WireNames = WireNames {
        message_id: MSG_ID,
        message_id_fallback: None,
        ..COPY
    };
}
use names::{DUE, MSG_ID, TARGET};

use super::credits::Credits;
use super::ledger;
use super::puller::{PULL_EXPIRES, Puller};

/// How long a closing subscription waits for its last acknowledgements to be written.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The server redelivers a message not acknowledged (or extended) within this time.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often the ack wait of messages being handled is extended.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Window in which a republished copy with the same id is dropped as a duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Unacknowledged messages one consumer (shared by every subscription of a queue) may have out.
const MAX_ACK_PENDING: i64 = 100_000;
/// Held messages wait unacknowledged (nak'ed with their delay): no practical limit.
const HOLD_MAX_ACK_PENDING: i64 = 10_000_000;
/// Held messages one mover pass handles at most.
const MOVE_BATCH: usize = 500;
/// The stream of sequenced-topic locks, and its subjects' prefix.
const LOCK_STREAM: &str = "SHOVE_LOCKS";
const LOCK_SUBJECT_PREFIX: &str = "shove-locks";
/// A lock not renewed for this long is free again.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often a lock is renewed, and a standby tries to take it.
const LOCK_RENEW: Duration = Duration::from_secs(2);

/// `queue` as a stream or consumer name: characters NATS reserves there become `_`.
fn token(queue: &str) -> String {
    queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `queue` as a subject: as is (spec: subjects `{queue}`, `{queue}.shard.{i}`), wildcards and blanks
/// replaced.
fn subject_base(queue: &str) -> String {
    queue
        .chars()
        .map(|c| {
            if c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The stream holding `queue`.
pub(crate) fn stream_name(queue: &str) -> String {
    format!("SHOVE_{}", token(queue))
}

fn main_subject(queue: &str) -> String {
    subject_base(queue)
}

fn hold_subject(queue: &str) -> String {
    format!("{}.hold", subject_base(queue))
}

fn shard_subject(queue: &str, shard: u16) -> String {
    format!("{}.shard.{shard}", subject_base(queue))
}

fn shards_filter(queue: &str) -> String {
    format!("{}.shard.*", subject_base(queue))
}

fn nats_error(what: &str, e: impl std::fmt::Display) -> ShoveError {
    ShoveError::Connection(format!("{what}: {e}"))
}

/// The subject a message of `topology` is published to (its shard on sequenced topics).
fn subject_for(topology: &QueueTopology, env: &Envelope) -> String {
    match topology.sequencing() {
        Some(seq) => shard_subject(
            topology.queue(),
            crate::topology::shard_of(env.sequence_key.as_deref().unwrap_or(""), seq.routing_shards()),
        ),
        None => main_subject(topology.queue()),
    }
}

/// The headers that carry a message's first publish (a retry count of 0 is left out: every header costs
/// the server and both clients work per message).
fn first_headers(env: &Envelope) -> HeaderMap {
    headers_with(&names::FIRST, env, true)
}

/// The headers that carry a copy of `env` (a retry, a defer, a dead letter).
fn headers_of(env: &Envelope) -> HeaderMap {
    headers_with(&names::COPY, env, false)
}

/// `env`'s bookkeeping under `names`, and its user headers, escaped where a header needs it.
fn headers_with(names: &'static WireNames, env: &Envelope, omit_zero_retry: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    names.encode(env, omit_zero_retry, |name, value| match value {
        WireValue::Text(t) if name == names.message_id => h.insert(name, t),
        WireValue::Text(t) => h.insert(name, percent_escape(t, false)),
        WireValue::Count(n) => h.insert(name, n.to_string()),
    });
    for (k, v) in env.headers.iter() {
        h.insert(percent_escape(k, true), percent_escape(v, false));
    }
    h
}

/// The stream sequence and delivery count of a JetStream delivery, read from its ack subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or on 2.10+
/// servers `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>…` (9 or more
/// tokens after the prefix). `Message::info` parses every field, the timestamp included; this reads
/// the two the consumer needs, once per message.
fn ack_info(reply: &Option<Subject>) -> Option<(u64, u64)> {
    let rest = reply.as_deref()?.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 9];
    let mut n = 0;
    for (slot, token) in tokens.iter_mut().zip(rest.split('.')) {
        *slot = token;
        n += 1;
    }
    let delivered_at = match n {
        7 => 2,
        9 => 4,
        _ => return None,
    };
    Some((
        tokens[delivered_at + 1].parse().ok()?,
        tokens[delivered_at].parse().ok()?,
    ))
}

/// Rebuilds the envelope of a delivered message.
fn envelope_of(payload: &Bytes, h: Option<&HeaderMap>) -> Envelope {
    let mut decoder = names::COPY.decoder();
    if let Some(h) = h {
        for (name, values) in h.iter() {
            let Some(value) = values.first() else { continue };
            let (name, value) = (<async_nats::HeaderName as AsRef<str>>::as_ref(name), value.as_str());
            // Ids are written as they are; every other value was escaped.
            let is_id = name == names::COPY.message_id || name == MSG_ID;
            if decoder.field(name, || {
                if is_id {
                    Cow::Borrowed(value)
                } else {
                    percent_unescape(value)
                }
            }) {
                continue;
            }
            if !is_reserved(name) {
                decoder.user(
                    percent_unescape(name).into_owned(),
                    percent_unescape(value).into_owned(),
                );
            }
        }
    }
    decoder.finish(payload.to_vec())
}

/// Creates the stream of `queue` if it does not exist.
async fn ensure_stream(client: &NatsClient, queue: &str) -> Result<stream::Stream> {
    let name = stream_name(queue);
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![main_subject(queue), hold_subject(queue), shards_filter(queue)],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    client
        .jetstream()
        .get_or_create_stream(config)
        .await
        .map_err(|e| nats_error(&format!("cannot create or open the JetStream stream {name} for '{queue}' (is the server running with JetStream enabled, -js?)"), e))
}

/// Creates the streams of a topic (and of its DLQ). Idempotent; remembered per client.
pub(crate) async fn declare(client: &NatsClient, topology: &QueueTopology) -> Result<()> {
    client.check_open()?;
    let mut queues = vec![topology.queue()];
    queues.extend(topology.dlq());
    for queue in queues {
        let key = format!("stream/{}", stream_name(queue));
        if client.cache().lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            continue;
        }
        ensure_stream(client, queue).await?;
        client.cache().lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    }
    Ok(())
}

/// Which durable consumer of a stream.
#[derive(Clone, Copy)]
enum Role {
    Main,
    Sequenced,
    Hold,
}

impl Role {
    /// The durable consumer's name (spec: `{queue}-consumer`, `{dlq}-consumer`).
    fn consumer_name(self, queue: &str) -> String {
        let suffix = match self {
            Role::Main => "consumer",
            Role::Sequenced => "shards",
            Role::Hold => "hold",
        };
        format!("{}-{suffix}", token(queue))
    }
}

/// The durable consumer of `role` on `queue`'s stream, created if missing.
async fn open_consumer(
    client: &NatsClient,
    queue: &str,
    role: Role,
    max_ack_pending: Option<i64>,
) -> Result<PullConsumer> {
    let stream = ensure_stream(client, queue).await?;
    let (filter, default_max) = match role {
        Role::Main => (main_subject(queue), MAX_ACK_PENDING),
        Role::Sequenced => (shards_filter(queue), MAX_ACK_PENDING),
        Role::Hold => (hold_subject(queue), HOLD_MAX_ACK_PENDING),
    };
    let name = role.consumer_name(queue);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: filter,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy: DeliverPolicy::All,
        max_deliver: -1,
        max_ack_pending: max_ack_pending.unwrap_or(default_max),
        ..Default::default()
    };
    let failed = |e: &dyn std::fmt::Display| {
        nats_error(
            &format!(
                "cannot create or open the JetStream consumer '{name}' of {}",
                stream_name(queue)
            ),
            e,
        )
    };
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&name, config.clone())
        .await
        .map_err(|e| failed(&e))?;
    // An explicit budget wins over the one the consumer was created with.
    if max_ack_pending.is_some_and(|m| consumer.cached_info().config.max_ack_pending != m) {
        consumer = client
            .jetstream()
            .update_consumer_on_stream(config, stream_name(queue))
            .await
            .map_err(|e| failed(&e))?;
    }
    Ok(consumer)
}

/// Publishes `messages` and waits for the server to store each. Returns how many were stored, in order,
/// along with the first error.
pub(crate) async fn publish_envelopes(
    client: &NatsClient,
    topology: &'static QueueTopology,
    messages: Vec<Envelope>,
) -> (u64, Result<()>) {
    if let Err(e) = client.check_open() {
        return (0, Err(e));
    }
    let headers: Vec<HeaderMap> = messages.iter().map(first_headers).collect();
    if let Err(e) = within_max_payload(client, topology, &messages, &headers) {
        return (0, Err(e));
    }
    let js = client.jetstream();
    let mut acks = Vec::with_capacity(messages.len());
    let main = topology.sequencing().is_none().then(|| main_subject(topology.queue()));
    for (env, headers) in messages.iter().zip(headers) {
        let subject = match &main {
            Some(main) => main.clone(),
            None => subject_for(topology, env),
        };
        let sent = js
            .publish_with_headers(subject, headers, Bytes::from(env.payload.clone()))
            .await;
        match sent {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                let stored = confirmed(acks).await;
                return (
                    stored.0,
                    Err(stored.1.err().unwrap_or_else(|| publish_error(topology, e))),
                );
            }
        }
    }
    let (n, r) = confirmed(acks).await;
    (
        n,
        r.map_err(|e| match e {
            ShoveError::Connection(m) => ShoveError::Connection(format!("publishing to '{}': {m}", topology.queue())),
            other => other,
        }),
    )
}

/// Refuses a batch holding a message larger, with its headers, than the server's `max_payload` (from its
/// INFO; 1 MiB by default): the server would close the connection every publisher and consumer of this
/// client shares, and the publish would fail late with a retryable error. Nothing of the batch is sent.
fn within_max_payload(
    client: &NatsClient,
    topology: &QueueTopology,
    messages: &[Envelope],
    headers: &[HeaderMap],
) -> Result<()> {
    let limit = client.core().server_info().max_payload;
    if limit == 0 {
        return Ok(());
    }
    for (i, (env, h)) in messages.iter().zip(headers).enumerate() {
        // `NATS/1.0\r\n`, each `name: value\r\n`, and the closing `\r\n`.
        let header_bytes: usize = 12
            + h.iter()
                .map(|(name, values)| {
                    let name = <async_nats::HeaderName as AsRef<str>>::as_ref(name).len();
                    values.iter().map(|v| name + v.as_str().len() + 4).sum::<usize>()
                })
                .sum::<usize>();
        let size = env.payload.len() + header_bytes;
        if size > limit {
            return Err(ShoveError::Validation(format!(
                "message {i} of the batch for '{}' is {size} bytes with its headers, over the NATS server's \
                 max_payload of {limit} bytes; nothing of the batch was published. Send smaller messages, or \
                 raise max_payload in the server's configuration",
                topology.queue()
            )));
        }
    }
    Ok(())
}

fn publish_error(topology: &QueueTopology, e: impl std::fmt::Display) -> ShoveError {
    nats_error(
        &format!(
            "publishing to '{}' failed (declare the topic first, and check the server is up)",
            topology.queue()
        ),
        e,
    )
}

/// Awaits publish acknowledgements in order: how many succeeded before the first failure.
async fn confirmed(acks: Vec<async_nats::jetstream::context::PublishAckFuture>) -> (u64, Result<()>) {
    let results = futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await;
    let mut n = 0;
    for r in results {
        match r {
            Ok(_) => n += 1,
            Err(e) => return (n, Err(nats_error("the server did not confirm a publish", e))),
        }
    }
    (n, Ok(()))
}

/// Pending (not yet delivered) and unacknowledged counts of the consumer reading `queue`.
pub(crate) async fn queue_stats(client: &NatsClient, queue: &str) -> Result<(u64, u64)> {
    client.check_open()?;
    let js = client.jetstream();
    let name = stream_name(queue);
    let mut stream = js.get_stream(&name).await.map_err(|e| {
        nats_error(
            &format!("cannot read the stream of '{queue}' ({name}); declare the topic first"),
            e,
        )
    })?;
    let (mut pending, mut ack_pending, mut found) = (0, 0, false);
    for role in [Role::Main, Role::Sequenced] {
        if let Ok(info) = stream.consumer_info(role.consumer_name(queue)).await {
            pending += info.num_pending;
            ack_pending += info.num_ack_pending as u64;
            found = true;
        }
    }
    if !found {
        // Nobody consumes yet: everything stored is pending (held retries excepted, they are not due).
        let info = stream
            .info()
            .await
            .map_err(|e| nats_error(&format!("cannot read the stream of '{queue}'"), e))?;
        pending = info.state.messages;
    }
    Ok((pending, ack_pending))
}

/// The transport: a NATS client.
#[derive(Clone)]
pub struct NatsTransport {
    client: NatsClient,
}

impl NatsTransport {
    pub(crate) fn new(client: NatsClient) -> Self {
        Self { client }
    }
}

/// NATS's own consumer settings, from `ConsumerOptions<Nats>`.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// The JetStream consumer's `max_ack_pending` (`None`: the server's default).
    pub max_ack_pending: Option<i64>,
}

impl Transport for NatsTransport {
    const NAME: &'static str = "nats";
    type Subscription = NatsSubscription;
    type Options = NatsOptions;

    async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        declare(&self.client, topology).await
    }

    async fn publish(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        publish_envelopes(&self.client, topology, messages).await
    }

    async fn subscribe(&self, source: Source, options: &SubscribeOptions<NatsOptions>) -> Result<NatsSubscription> {
        NatsSubscription::open(self.client.clone(), source, options).await
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        let (ready, in_flight) = queue_stats(&self.client, queue).await?;
        Ok(Depth { ready, in_flight })
    }
}

/// The settle handle of one delivery.
pub struct NatsToken {
    reply: Subject,
    subject: Subject,
    sequence: u64,
    /// When the subscription took the message: how long it was held is measured at settlement.
    received: std::time::Instant,
}

/// Messages being handled, by stream sequence: their ack wait is extended until they are settled.
type Handling = Arc<std::sync::Mutex<HashMap<u64, Subject>>>;

/// A consumer. The engine's `receive` drives the pull requests itself (no reader task between the
/// connection and the engine: one task hop less per message); a mover task brings due retries back, another
/// extends the ack wait of messages being handled, and on sequenced topics a third keeps the topic's lock.
pub struct NatsSubscription {
    client: NatsClient,
    /// The queue read (a DLQ when consuming dead letters): where copies held for later go.
    queue: String,
    dlq: Option<String>,
    credits: Credits,
    handling: Handling,
    /// The pull requests, and the messages of the last pull not yet turned into deliveries.
    puller: tokio::sync::Mutex<(Puller, Vec<async_nats::Message>)>,
    /// Whether this subscription may read (always, except a sequenced topic's standby).
    owned: Arc<Ownership>,
    stop: CancellationToken,
    /// The lock keeper of a sequenced topic, which releases the lock when it ends.
    keeper: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The stream read, naming its messages in the hand-back ledger.
    stream: String,
}

impl NatsSubscription {
    async fn open(client: NatsClient, source: Source, options: &SubscribeOptions<NatsOptions>) -> Result<Self> {
        let topology = source.topology();
        declare(&client, topology).await?;
        let (queue, role) = match source {
            Source::Main(t) => (t.queue().to_string(), Role::Main),
            Source::Shards(t) => (t.queue().to_string(), Role::Sequenced),
            Source::DeadLetters(t) => match t.dlq() {
                Some(d) => (d.to_string(), Role::Main),
                None => return Err(no_dlq(t.queue())),
            },
        };
        let consumer = open_consumer(&client, &queue, role, options.backend.max_ack_pending).await?;
        let prefetch = usize::from(options.prefetch.max(1));
        let stop = client.shutdown_token().child_token();
        let handling = Handling::default();
        let (owned, keeper) = match role {
            Role::Sequenced => {
                let lock = Lock::open(&client, &token(&queue)).await?;
                let owned = Arc::new(Ownership::default());
                let keeper = lease::keep(lock, owned.clone(), LOCK_RENEW, stop.clone());
                (owned, Some(tokio::spawn(keeper)))
            }
            _ => (Ownership::always(), None),
        };
        if !matches!(source, Source::DeadLetters(_)) {
            let hold = open_consumer(&client, &queue, Role::Hold, None).await?;
            tokio::spawn(move_due(client.clone(), hold, stop.clone()));
        }
        tokio::spawn(extend_ack_wait(client.clone(), handling.clone(), stop.clone()));
        // A sequenced topic's engine keeps the messages of a busy key outside its handlers: there the
        // prefetch bounds everything the subscription holds, fast or not.
        let read_ahead = match role {
            Role::Sequenced => 0,
            Role::Main | Role::Hold => prefetch,
        };
        let credits = Credits::new(prefetch, read_ahead);
        let info = consumer.cached_info();
        let puller = Puller::new(
            client.core().clone(),
            &info.stream_name,
            &info.name,
            prefetch,
            prefetch.div_ceil(2),
            credits.semaphore(),
        );
        let stream = stream_name(&queue);
        Ok(Self {
            client,
            queue,
            dlq: topology.dlq().map(str::to_string),
            credits,
            handling,
            puller: tokio::sync::Mutex::new((puller, Vec::with_capacity(prefetch))),
            owned,
            stop,
            keeper: tokio::sync::Mutex::new(keeper),
            stream,
        })
    }

    /// The delivery of a pulled message with `lost_attempts` (`None`: not a JetStream delivery).
    fn delivery(&self, m: async_nats::Message, lost_attempts: u32) -> Option<Delivery<NatsToken>> {
        let reply = m.reply.clone()?;
        let (sequence, delivered) = ack_info(&m.reply).unwrap_or((0, 1));
        let envelope = envelope_of(&m.payload, m.headers.as_ref());
        self.handling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sequence, reply.clone());
        Some(Delivery {
            envelope,
            redelivered: delivered > 1,
            lost_attempts,
            token: NatsToken {
                reply,
                subject: m.subject.clone(),
                sequence,
                received: std::time::Instant::now(),
            },
        })
    }

    /// For each of `messages`, its attempts lost with their consumers: its deliveries before this one,
    /// less the hand-backs the ledger recorded. A first delivery reads nothing. When the ledger cannot be
    /// read, every earlier delivery counts as lost: the side on which a message that kills its consumers
    /// still ends in the DLQ.
    /// `None` when every message is a first delivery (the common case, which allocates nothing).
    async fn lost_attempts(&self, messages: &[async_nats::Message]) -> Option<Vec<u32>> {
        let delivered = |m: &async_nats::Message| ack_info(&m.reply).unwrap_or((0, 1));
        if messages.iter().all(|m| delivered(m).1 <= 1) {
            return None;
        }
        let store = match self.client.ledger().await {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::warn!(error = %e, "the NATS hand-back ledger is unavailable; redeliveries count as lost attempts");
                None
            }
        };
        let reads = messages.iter().map(delivered).map(|(sequence, d)| async move {
            let before = u32::try_from(d.saturating_sub(1)).unwrap_or(u32::MAX);
            if before == 0 {
                return 0;
            }
            let Some(store) = store else { return before };
            match store.handbacks(&ledger::key(&self.stream, sequence)).await {
                Ok(h) => before.saturating_sub(u32::try_from(h).unwrap_or(u32::MAX)),
                Err(e) => {
                    tracing::warn!(error = %e, sequence, "reading the NATS hand-back ledger failed; counting the redelivery as lost");
                    before
                }
            }
        });
        Some(futures::future::join_all(reads).await)
    }

    /// Hands messages back (`-NAK`, after `delay` when given), recording each in the hand-back ledger
    /// first so that its redelivery is not taken for a lost attempt. A message whose record fails is
    /// handed back all the same: a miscounted attempt is better than a message held until its ack wait.
    async fn hand_back(&self, messages: Vec<(u64, Subject)>, delay: Option<Duration>) -> Result<()> {
        hand_back(&self.client, &self.stream, messages, delay).await
    }

    /// Sends an acknowledgement kind for a delivery.
    async fn reply(&self, token: &NatsToken, kind: AckKind) -> Result<()> {
        self.client
            .core()
            .publish(token.reply.clone(), Bytes::from(kind))
            .await
            .map_err(|e| nats_error("settling a message failed", e))
    }

    /// Publishes `copy` to `subject` with deduplication id `id` (and `extra` headers), waits until the
    /// server stored it, then acknowledges the original.
    async fn replace(
        &self,
        token: &NatsToken,
        subject: String,
        id: String,
        copy: &Envelope,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let mut h = headers_of(copy);
        h.insert(MSG_ID, id.as_str());
        for (k, v) in extra {
            h.insert(*k, v.as_str());
        }
        let ack = self
            .client
            .jetstream()
            .publish_with_headers(subject, h, Bytes::from(copy.payload.clone()))
            .await
            .map_err(|e| nats_error("publishing the follow-up copy of a message failed", e))?;
        ack.await
            .map_err(|e| nats_error("the server did not confirm the follow-up copy of a message", e))?;
        self.reply(token, AckKind::Ack).await
    }

    /// Holds `copy` in the hold subject until `delay` passed, then it goes back to the original subject.
    async fn hold(&self, token: &NatsToken, delay: Duration, copy: &Envelope, tag: &str) -> Result<()> {
        let due = due_at_ms(delay);
        self.replace(
            token,
            hold_subject(&self.queue),
            format!("{}:{tag}", token.sequence),
            copy,
            &[(DUE, due.to_string()), (TARGET, token.subject.to_string())],
        )
        .await
    }
}

/// Gives one credit back (and forgets the message's progress) when dropped: when a settlement completes
/// or is abandoned half-way.
struct Settled<'a> {
    credits: &'a Credits,
    handling: &'a Handling,
    sequence: u64,
}

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        self.handling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.sequence);
        self.credits.give_back(1);
    }
}

impl Subscription for NatsSubscription {
    type Token = NatsToken;

    async fn receive(&self, max: usize, out: &mut Vec<Delivery<NatsToken>>) -> Result<bool> {
        let mut guard = self.puller.lock().await;
        let (puller, pulled) = &mut *guard;
        let result = tokio::select! {
            _ = self.stop.cancelled() => Ok(()),
            r = puller.pull(max.max(1), &self.owned, pulled) => r,
        };
        // Read while the messages are still in `pulled`: a cancelled receive leaves them there.
        match self.lost_attempts(pulled).await {
            None => out.extend(pulled.drain(..).filter_map(|m| self.delivery(m, 0))),
            Some(lost) => out.extend(
                pulled
                    .drain(..)
                    .zip(lost)
                    .filter_map(|(m, lost)| self.delivery(m, lost)),
            ),
        }
        match result {
            Ok(()) => Ok(!out.is_empty()),
            // What arrived before the error is handled; the error shows on the next call if it persists.
            Err(e) if !out.is_empty() => {
                tracing::warn!(error = %e, "NATS pull failed after messages arrived");
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    async fn settle(&self, token: NatsToken, how: Settlement) -> Result<()> {
        self.credits.observe(token.received.elapsed());
        let _settled = Settled {
            credits: &self.credits,
            handling: &self.handling,
            sequence: token.sequence,
        };
        match how {
            Settlement::Ack => self.reply(&token, AckKind::Ack).await,
            Settlement::Requeue { envelope, hold } => match hold {
                Some(h) => self.hold(&token, h.delay, &envelope, "r").await,
                None => {
                    let subject = token.subject.to_string();
                    let id = format!("{}:r", token.sequence);
                    self.replace(&token, subject, id, &envelope, &[]).await
                }
            },
            Settlement::DeadLetter { envelope } => {
                let dlq = self.dlq.clone().ok_or_else(|| no_dlq(&self.queue))?;
                let id = format!("{}:{}:dead", stream_name(&self.queue), token.sequence);
                self.replace(&token, main_subject(&dlq), id, &envelope, &[]).await
            }
            // The server redelivers hand-backs in the order it gets them.
            Settlement::Release { delay, .. } => {
                self.hand_back(vec![(token.sequence, token.reply)], delay.filter(|d| !d.is_zero()))
                    .await
            }
        }
    }

    fn abandon(&self, token: NatsToken, _envelope: Envelope) {
        drop(Settled {
            credits: &self.credits,
            handling: &self.handling,
            sequence: token.sequence,
        });
        // Redeliverable at once rather than after the ack wait.
        let (client, stream) = (self.client.clone(), self.stream.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = hand_back(&client, &stream, vec![(token.sequence, token.reply)], None).await;
            });
        }
    }

    async fn stop_receiving(&self, out: &mut Vec<Delivery<NatsToken>>) {
        let mut guard = self.puller.lock().await;
        let (puller, pulled) = &mut *guard;
        let mut arrived = std::mem::take(pulled);
        arrived.extend(puller.drain().await);
        out.extend(arrived.into_iter().filter_map(|m| self.delivery(m, 0)));
    }

    async fn close(&self) {
        self.stop.cancel();
        // Messages of the requests still open go back at once: the server would otherwise wait out the
        // ack wait for messages it sent to requests nobody reads. (A sequenced topic's engine took them
        // through `stop_receiving` already.)
        let mut guard = self.puller.lock().await;
        let (puller, pulled) = &mut *guard;
        let mut arrived = std::mem::take(pulled);
        arrived.extend(puller.drain().await);
        let back = arrived
            .into_iter()
            .filter_map(|m| Some((ack_info(&m.reply).map_or(0, |(sequence, _)| sequence), m.reply?)))
            .collect();
        let _ = self.hand_back(back, None).await;
        if let Some(keeper) = self.keeper.lock().await.take() {
            let _ = keeper.await;
        }
        // Bounded: while the server is unreachable a flush would wait for the reconnect.
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, self.client.core().flush()).await;
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The lock that makes one subscription at a time the reader of a sequenced topic: the last message on
/// subject `shove-locks.<queue>` of stream `SHOVE_LOCKS` names the holder. Writes are conditional on the
/// subject's last sequence (what a key-value bucket does; async-nats 0.47's bucket API cannot read
/// nats-server 2.9's replies), and messages
/// expire after the lock's time to live, so a holder that dies frees the lock.
struct Lock {
    js: async_nats::jetstream::Context,
    stream: stream::Stream,
    subject: String,
    owner: String,
    /// Sequence of our last write, while we hold the lock.
    held: Option<u64>,
}

impl Lock {
    async fn open(client: &NatsClient, queue_token: &str) -> Result<Self> {
        let config = stream::Config {
            name: LOCK_STREAM.to_string(),
            subjects: vec![format!("{LOCK_SUBJECT_PREFIX}.>")],
            max_messages_per_subject: 1,
            max_age: LOCK_TTL,
            storage: StorageType::File,
            ..Default::default()
        };
        let stream = client
            .jetstream()
            .get_or_create_stream(config)
            .await
            .map_err(|e| nats_error("cannot create the stream of sequenced-topic locks", e))?;
        Ok(Self {
            js: client.jetstream().clone(),
            stream,
            subject: format!("{LOCK_SUBJECT_PREFIX}.{queue_token}"),
            owner: uuid::Uuid::new_v4().simple().to_string(),
            held: None,
        })
    }

    /// Writes `value` if the subject's last sequence is still `expected`: whether it was written.
    async fn write(&mut self, value: &str, expected: u64) -> Option<u64> {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(Bytes::from(value.to_string()))
            .expected_last_subject_sequence(expected);
        let ack = self.js.send_publish(self.subject.clone(), message).await.ok()?;
        ack.await.ok().map(|a| a.sequence)
    }
}

impl Lease for Lock {
    async fn claim(&mut self) -> bool {
        let owner = self.owner.clone();
        let expected = match self.held {
            Some(seq) => Some(seq),
            None => match self.stream.get_last_raw_message_by_subject(&self.subject).await {
                // Free, or released by its holder.
                Ok(m) if m.payload.is_empty() => Some(m.sequence),
                Ok(_) => None,
                Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => Some(0),
                Err(_) => None,
            },
        };
        self.held = match expected {
            Some(expected) => self.write(&owner, expected).await,
            None => None,
        };
        self.held.is_some()
    }

    async fn release(&mut self) {
        if let Some(seq) = self.held.take() {
            let _ = self.write("", seq).await;
        }
    }
}

/// Records `messages` (stream sequence, reply subject) of `stream` in the hand-back ledger, all at
/// once, then naks them in the order given. Returns the first error of a nak.
async fn hand_back(
    client: &NatsClient,
    stream: &str,
    messages: Vec<(u64, Subject)>,
    delay: Option<Duration>,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    // Without a connection neither the records nor the naks can go out (and waiting for them would hold
    // up a consumer that is giving up): the server redelivers the messages after their ack wait.
    if client.core().connection_state() != async_nats::connection::State::Connected {
        return Err(ShoveError::Connection(
            "the NATS server is unreachable; unsettled messages come back after their ack wait".into(),
        ));
    }
    match client.ledger().await {
        Ok(store) => {
            let records = messages.iter().map(|(sequence, _)| async move {
                if let Err(e) = store.record(&ledger::key(stream, *sequence)).await {
                    tracing::warn!(error = %e, sequence, "recording a NATS hand-back failed; its redelivery counts as a lost attempt");
                }
            });
            futures::future::join_all(records).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "the NATS hand-back ledger is unavailable; these hand-backs count as lost attempts")
        }
    }
    let mut first_error = Ok(());
    for (_, reply) in messages {
        let sent = client.core().publish(reply, Bytes::from(AckKind::Nak(delay))).await;
        if let (Err(e), Ok(())) = (sent, &first_error) {
            first_error = Err(nats_error("handing a message back failed", e));
        }
    }
    first_error
}

/// Moves due held messages back to their subjects until `stop`; nak's the others with their remaining
/// delay, so the server keeps them until then.
async fn move_due(client: NatsClient, hold: PullConsumer, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            b = hold.batch().max_messages(MOVE_BATCH).expires(PULL_EXPIRES).messages() => b,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "pulling held messages failed; will try again");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        // Each message is handled as it arrives (a copy not yet due goes straight back to the server with
        // its time left): collecting the request's messages first would leave them unacknowledged, and
        // late by the whole ack wait if the process died meanwhile.
        let mut batch = batch;
        let mut moving = futures::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                m = batch.next() => match m {
                    Some(Ok(m)) => {
                        let client = client.clone();
                        moving.push(async move {
                            move_one(&client, m, chrono::Utc::now().timestamp_millis()).await
                        });
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "pulling held messages failed; will try again"),
                    None => break,
                },
                Some(()) = moving.next(), if !moving.is_empty() => {}
            }
        }
        while moving.next().await.is_some() {}
    }
}

/// Moves one held message back if it is due, else hands it back to the server for the time left.
async fn move_one(client: &NatsClient, m: async_nats::jetstream::Message, now: i64) {
    let Some(h) = m.headers.as_ref() else {
        let _ = m.ack_with(AckKind::Term).await;
        return;
    };
    let due: i64 = h.get(DUE).and_then(|v| v.as_str().parse().ok()).unwrap_or(0);
    let Some(target) = h.get(TARGET).map(|v| v.as_str().to_string()) else {
        let _ = m.ack_with(AckKind::Term).await;
        return;
    };
    if due > now {
        let left = Duration::from_millis((due - now) as u64);
        let _ = m.ack_with(AckKind::Nak(Some(left))).await;
        return;
    }
    let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut copy = HeaderMap::new();
    for (name, values) in h.iter() {
        let n = <async_nats::HeaderName as AsRef<str>>::as_ref(name);
        if n == DUE || n == TARGET || n == MSG_ID {
            continue;
        }
        if let Some(v) = values.first() {
            copy.insert(n, v.as_str());
        }
    }
    copy.insert(MSG_ID, format!("{sequence}:due").as_str());
    let stored = match client
        .jetstream()
        .publish_with_headers(target, copy, m.payload.clone())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if stored {
        let _ = m.ack().await;
    } else {
        // Try again soon; the deduplication id makes a second copy harmless.
        let _ = m.ack_with(AckKind::Nak(Some(Duration::from_millis(200)))).await;
    }
}

/// Extends the ack wait of messages being handled, so a long handler is not mistaken for a dead one.
async fn extend_ack_wait(client: NatsClient, handling: Handling, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
        let replies: Vec<Subject> = handling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for reply in replies {
            let _ = client.core().publish(reply, Bytes::from(AckKind::Progress)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_of_old_and_new_servers_are_read() {
        let v1 = Some(Subject::from(
            "$JS.ACK.SHOVE_q.q-consumer.3.1042.977.1764337000000000000.12",
        ));
        assert_eq!(ack_info(&v1), Some((1042, 3)));
        let v2 = Some(Subject::from(
            "$JS.ACK._.ACCHASH.SHOVE_q.q-consumer.1.7.7.1764337000000000000.0.RANDOM",
        ));
        assert_eq!(ack_info(&v2), Some((7, 1)));
        assert_eq!(ack_info(&Some(Subject::from("_INBOX.abc"))), None);
        assert_eq!(ack_info(&Some(Subject::from("$JS.ACK.s.c.x.1.2.3.4"))), None);
        assert_eq!(ack_info(&None), None);
    }

    #[test]
    fn names_are_valid_nats_tokens() {
        assert_eq!(stream_name("orders.created v2"), "SHOVE_orders_created_v2");
        assert_eq!(main_subject("a.b"), "a.b");
        assert_eq!(main_subject("a *>"), "a___");
        assert_eq!(shard_subject("q", 3), "q.shard.3");
        assert_eq!(Role::Main.consumer_name("a.b"), "a_b-consumer");
    }
}

//! The engine's transport on Redis Streams.
//!
//! - A topic is a stream (a sequenced topic: one stream per shard) read through a consumer group.
//! - Ack: `XACK` + `XDEL` in one script, so fully settled entries do not accumulate.
//! - Retry / defer / delayed hand-back: one script acknowledges the entry and stores the updated copy in a
//!   due set (a sorted set scored by due time, one hash per attempt); consumers move due entries back to
//!   their stream with another script. Both steps are atomic: a consumer can die anywhere without loss or
//!   duplicate.
//! - Dead letter / immediate redelivery: one script acknowledges and appends the copy to the target stream.
//! - Crash recovery: entries left pending by a consumer that went away are claimed (`XAUTOCLAIM`) once idle
//!   for twice the handler timeout (60 s without one), and count as a lost attempt.
//! - A lost connection: entries a read had moved into this consumer's name when its reply was lost are
//!   taken back as soon as the connection is back (told apart by their idle time), not after that idle time.
//! - Sequenced shards: each is read by one consumer at a time, which holds a renewed lock on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::client::{RedisClient, redis_error};
use super::config::BLOCK_TIME;
use super::scripts;
use crate::error::{Result, ShoveError};
use crate::topology::QueueTopology;
use crate::transport::lease::{self, Lease, Ownership};
use crate::transport::no_dlq;
use crate::transport::wire::{WireValue, X_NAMES};
use crate::transport::{
    Delivery, Depth, Envelope, Settlement, Source, SubscribeOptions, Subscription, Transport, due_at_ms,
};

const PAYLOAD: &str = "payload";
/// User headers are stored as fields with this prefix, so they can never collide with shove's.
const USER_PREFIX: &str = "h:";

/// The idle time given to a handed-back entry: longer than any reclaim threshold (ten years).
const HANDED_BACK_IDLE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// How often a consumer moves due retries back to its streams, at most.
const MOVER_INTERVAL: Duration = Duration::from_millis(10);
/// How long a shard lock lives without renewal.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often locks are renewed and idle entries reclaimed.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// A consumer name idle this long with nothing pending belongs to a consumer that died: it is removed
/// from the group so names do not pile up.
const DEAD_CONSUMER_IDLE: Duration = Duration::from_secs(600);

/// `"{main}-seq-{shard}"`: the stream of one shard of a sequenced topic.
pub(crate) fn shard_stream_name(main: &str, shard: u16) -> String {
    crate::topology::shard_queue_name(main, shard)
}

/// The due set of a hold queue: retries waiting out that hold queue's delay.
pub(crate) fn hold_set_name(hold_queue_name: &str) -> String {
    format!("{hold_queue_name}:due")
}

/// The due set of a stream's delayed hand-backs.
fn release_set_name(stream: &str) -> String {
    format!("{stream}-delay:due")
}

/// Where the entries of a due set are kept, one hash per attempt under this prefix.
fn entry_prefix(due_set: &str) -> String {
    format!("{due_set}:e:")
}

/// The fields that carry `env` in a stream entry: the payload, the bookkeeping under the `x-*` names,
/// and each user header under [`USER_PREFIX`].
fn fields(env: &Envelope) -> Vec<(String, Vec<u8>)> {
    let mut f = Vec::with_capacity(4 + env.headers.len());
    f.push((PAYLOAD.to_string(), env.payload.clone()));
    // Absent means 0: a first attempt carries one field less, which every read of it has to parse.
    X_NAMES.encode(env, true, |name, value| {
        let value = match value {
            WireValue::Text(t) => t.as_bytes().to_vec(),
            WireValue::Count(n) => n.to_string().into_bytes(),
        };
        f.push((name.to_string(), value));
    });
    for (k, v) in env.headers.iter() {
        f.push((format!("{USER_PREFIX}{k}"), v.as_bytes().to_vec()));
    }
    f
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn utf8(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Rebuilds the envelope of a stream entry from its field/value list, taking the values over (the payload
/// is moved, not copied).
fn envelope(fields: Vec<Value>) -> Envelope {
    let mut payload = Vec::new();
    let mut decoder = X_NAMES.decoder();
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let (Some(k), Some(v)) = (into_bytes(k), into_bytes(v)) else {
            continue;
        };
        if let Some(name) = k.strip_prefix(USER_PREFIX.as_bytes()) {
            decoder.user(utf8(name.to_vec()), utf8(v));
            continue;
        }
        match std::str::from_utf8(&k).unwrap_or("") {
            PAYLOAD => payload = v,
            name => {
                decoder.field(name, || String::from_utf8_lossy(&v));
            }
        }
    }
    decoder.finish(payload)
}

/// The entries of a reply list `[[id, [field, value, …]], …]` (deleted entries, nil, are skipped).
fn entries(list: Value) -> Vec<(String, Envelope)> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else { return None };
            let mut pair = pair.into_iter();
            let id = utf8(into_bytes(pair.next()?)?);
            let Value::Array(fields) = pair.next()? else {
                return None;
            };
            Some((id, envelope(fields)))
        })
        .collect()
}

/// An `XREADGROUP` reply: `[[stream, entries], …]`, or nil when the block timed out.
fn read_reply(reply: Value) -> Vec<(String, Vec<(String, Envelope)>)> {
    let streams = match reply {
        Value::Array(s) => s,
        // RESP3 servers answer with a map.
        Value::Map(m) => m.into_iter().map(|(k, v)| Value::Array(vec![k, v])).collect(),
        _ => return Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|s| {
            let Value::Array(pair) = s else { return None };
            let mut pair = pair.into_iter();
            let name = utf8(into_bytes(pair.next()?)?);
            Some((name, entries(pair.next()?)))
        })
        .collect()
}

/// The entries of an extended `XPENDING` reply `[[id, consumer, idle ms, delivery count], …]`, as
/// (id, idle ms, delivery count).
fn pending_entries(reply: Value) -> Vec<(String, u64, u64)> {
    let int = |v: Option<Value>| match v? {
        Value::Int(n) => u64::try_from(n).ok(),
        _ => None,
    };
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let Value::Array(fields) = e else { return None };
            let mut fields = fields.into_iter();
            let id = utf8(into_bytes(fields.next()?)?);
            let idle = int(fields.nth(1))?;
            Some((id, idle, int(fields.next())?))
        })
        .collect()
}

/// The claimed entries of an `XAUTOCLAIM` reply `[next, entries, deleted]`, and whether the scan went
/// through the whole pending list (`next` is `0-0`).
fn autoclaim_reply(reply: Value) -> (bool, Vec<(String, Envelope)>) {
    match reply {
        Value::Array(parts) => {
            let mut parts = parts.into_iter();
            let done = parts
                .next()
                .and_then(into_bytes)
                .is_some_and(|next| next.as_slice() == b"0-0");
            (done, parts.next().map(entries).unwrap_or_default())
        }
        _ => (true, Vec::new()),
    }
}

/// `XADD` of `env` to `stream`, as a pipeline step.
pub(crate) fn xadd(pipe: &mut redis::Pipeline, stream: &str, env: &Envelope) {
    let cmd = pipe.cmd("XADD").arg(stream).arg("*");
    for (k, v) in fields(env) {
        cmd.arg(k).arg(v);
    }
}

/// Entries not yet delivered to `group` and entries delivered but not acknowledged, for one stream.
pub(crate) async fn group_stats(con: &mut ConnectionManager, stream: &str, group: &str) -> Result<(u64, u64)> {
    let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await
        .map_err(|e| {
            redis_error(
                &format!("cannot read the groups of stream '{stream}'; declare its topic first"),
                e,
            )
        })?;
    let Some(info) = groups
        .iter()
        .find(|g| g.get("name").and_then(bytes) == Some(group.as_bytes()))
    else {
        return Err(ShoveError::Topology(format!(
            "stream '{stream}' has no consumer group '{group}'; declare its topic first"
        )));
    };
    let int = |k: &str| match info.get(k) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    let pending = int("pending").unwrap_or(0);
    let ready = match int("lag") {
        Some(lag) => lag,
        // The server cannot tell (entries were deleted): count what is left in the stream.
        None => {
            let len: u64 = redis::cmd("XLEN")
                .arg(stream)
                .query_async(con)
                .await
                .map_err(|e| redis_error("XLEN failed", e))?;
            len.saturating_sub(pending)
        }
    };
    Ok((ready, pending))
}

/// The Redis transport.
#[derive(Clone)]
pub struct RedisTransport {
    client: RedisClient,
}

impl RedisTransport {
    pub(crate) fn new(client: RedisClient) -> Self {
        Self { client }
    }
}

/// The stream a message of `topology` goes to: the topic's stream, or its key's shard.
pub(crate) fn stream_for(topology: &QueueTopology, env: &Envelope) -> String {
    match topology.sequencing() {
        Some(seq) => shard_stream_name(
            topology.queue(),
            crate::topology::shard_of(env.sequence_key.as_deref().unwrap_or(""), seq.routing_shards()),
        ),
        None => topology.queue().to_string(),
    }
}

impl Transport for RedisTransport {
    const NAME: &'static str = "redis";
    type Subscription = RedisSubscription;
    type Options = ();

    async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.client.declare(topology).await
    }

    async fn publish(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        if let Err(e) = self.client.check_open() {
            return (0, Err(e));
        }
        let mut pipe = redis::pipe();
        for env in &messages {
            xadd(&mut pipe, &stream_for(topology, env), env);
        }
        let mut con = self.client.commands();
        match pipe.query_async::<Vec<Value>>(&mut con).await {
            Ok(_) => (messages.len() as u64, Ok(())),
            Err(e) => (0, Err(redis_error("publishing to Redis failed", e))),
        }
    }

    async fn subscribe(&self, source: Source, options: &SubscribeOptions<()>) -> Result<RedisSubscription> {
        RedisSubscription::open(self.client.clone(), source, options).await
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        self.client.queue_depth(queue).await
    }
}

/// One settlement waiting for its batch.
struct Op {
    work: Work,
    done: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
}

/// What a settlement does on the server.
enum Work {
    /// Acknowledge and delete entry `id` of `stream` (batched per stream into one XACK + one XDEL).
    Ack { stream: String, id: String },
    /// A server-side script call (every other settlement: one atomic step each).
    Script {
        script: &'static str,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    },
}

/// Sends settlements in batches: whoever finds no batch under way sends everything waiting (and keeps
/// going while more arrives); everyone else just waits for their result. The acknowledgements of one stream
/// become one XACK and one XDEL, so one round trip and two commands cover many messages.
#[derive(Default)]
struct Batcher {
    waiting: std::sync::Mutex<Vec<Op>>,
    sending: std::sync::atomic::AtomicBool,
}

impl Batcher {
    /// Queues `work` and waits for its outcome. `credit`, if any, is given back as soon as the work is
    /// queued: the entry is settled as far as the consumer is concerned, so the reader may fetch the next
    /// batch while this one's acknowledgements are on their way (the two use different connections).
    async fn run(&self, client: &RedisClient, work: Work, credit: Option<CreditBack<'_>>) -> Result<()> {
        use std::sync::atomic::Ordering;
        let (done, result) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Op { work, done });
        drop(credit);
        // Become the sender unless one is at work; a sender that stops re-checks for late arrivals, so no
        // settlement is left waiting without a sender.
        while self
            .sending
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Dropped half-way (the consumer aborted), the sender must still hand the role on.
            let _sender = SenderRole(&self.sending);
            // A consumer settles a whole read batch in one pass: let the rest of it queue up behind this
            // settlement, so it goes in the same round trip instead of alone ahead of it.
            tokio::task::yield_now().await;
            loop {
                let batch = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
                if batch.is_empty() {
                    break;
                }
                Self::send(client, batch).await;
            }
            drop(_sender);
            if self.waiting.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                break;
            }
        }
        match result.await {
            Ok(r) => r.map_err(ShoveError::Connection),
            Err(_) => Err(ShoveError::Connection(
                "a settle batch ended without this delivery".into(),
            )),
        }
    }

    async fn send(client: &RedisClient, batch: Vec<Op>) {
        let mut pipe = redis::pipe();
        let mut acks: Vec<(String, Vec<String>)> = Vec::new();
        let mut done = Vec::with_capacity(batch.len());
        for op in batch {
            match op.work {
                Work::Ack { stream, id } => match acks.iter_mut().find(|(s, _)| *s == stream) {
                    Some((_, ids)) => ids.push(id),
                    None => acks.push((stream, vec![id])),
                },
                Work::Script { script, keys, args } => {
                    let cmd = pipe.cmd("EVAL").arg(script).arg(keys.len());
                    for k in &keys {
                        cmd.arg(k);
                    }
                    for a in &args {
                        cmd.arg(a);
                    }
                }
            }
            done.push(op.done);
        }
        // Acknowledgements: plain XACK + XDEL of every id, in a transaction so that a connection lost
        // half-way leaves neither applied. (A script doing the same costs the server twice as much: one
        // call per id instead of one command per batch. An id XACK finds already settled was deleted by
        // whoever settled it, so the unconditional XDEL is harmless.)
        for (stream, ids) in acks {
            pipe.cmd("MULTI")
                .cmd("XACK")
                .arg(&stream)
                .arg(client.group())
                .arg(&ids)
                .cmd("XDEL")
                .arg(&stream)
                .arg(&ids)
                .cmd("EXEC");
        }
        let mut con = client.commands();
        let outcome = pipe
            .query_async::<Vec<Value>>(&mut con)
            .await
            .map(|_| ())
            .map_err(|e| redis_error("settling entries failed", e).to_string());
        for d in done {
            let _ = d.send(outcome.clone());
        }
    }
}

/// Holds the sender role of a [`Batcher`]; gives it up when dropped.
struct SenderRole<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for SenderRole<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The settle handle of one entry.
pub struct RedisToken {
    stream: u16,
    id: String,
    /// Attempts of this entry lost with their consumers: a hand-back in place keeps them on record (see
    /// [`Count`]).
    lost: u32,
}

/// One stream a subscription reads, with where its delayed entries wait.
struct StreamPlan {
    name: String,
    /// Due sets of its hold queues, by hold index.
    holds: Vec<String>,
    release: String,
}

/// A consumer: a reader task feeding deliveries through a channel (so `receive` is cancel-safe), a mover
/// task bringing due retries back.
///
/// Prefetch is exact: the reader holds one credit per entry it has read and not yet seen settled, and
/// there are `prefetch` credits. Bounding the channel alone is not enough: an entry the engine has taken
/// out of the channel is still pending on this consumer until it is settled.
pub struct RedisSubscription {
    client: RedisClient,
    credits: Arc<Semaphore>,
    streams: Arc<Vec<StreamPlan>>,
    dlq: Option<String>,
    sharded: bool,
    deliveries: tokio::sync::Mutex<mpsc::Receiver<Result<Delivery<RedisToken>>>>,
    stop: CancellationToken,
    reader: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The keepers of a sequenced topic's shard leases, and what ends them: after `close` has handed back
    /// what it holds, so the next reader finds it all.
    leases: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    leases_stop: CancellationToken,
    /// The server's id of the reader's connection (0 until known), to cut its blocking read short on close.
    reader_id: Arc<std::sync::atomic::AtomicI64>,
    batcher: Batcher,
}

impl RedisSubscription {
    async fn open(client: RedisClient, source: Source, options: &SubscribeOptions<()>) -> Result<Self> {
        let topology = source.topology();
        client.declare(topology).await?;
        let plan = |name: String, holds: Vec<String>| StreamPlan {
            release: release_set_name(&name),
            name,
            holds: holds.iter().map(|h| hold_set_name(h)).collect(),
        };
        let (streams, sharded): (Vec<StreamPlan>, bool) = match source {
            Source::Main(t) => (
                vec![plan(
                    t.queue().to_string(),
                    t.hold_queues().iter().map(|h| h.name().to_string()).collect(),
                )],
                false,
            ),
            Source::Shards(t) => {
                let n = t.sequencing().map_or(0, |s| s.routing_shards());
                let shards = (0..n)
                    .map(|i| {
                        plan(
                            shard_stream_name(t.queue(), i),
                            t.shard_hold_queue_names(i)
                                .iter()
                                .map(|h| h.name().to_string())
                                .collect(),
                        )
                    })
                    .collect();
                (shards, true)
            }
            Source::DeadLetters(t) => match t.dlq() {
                Some(d) => (vec![plan(d.to_string(), Vec::new())], false),
                None => return Err(no_dlq(t.queue())),
            },
        };
        let streams = Arc::new(streams);
        let stop = client.shutdown_token().child_token();
        let prefetch = usize::from(options.prefetch.max(1));
        let credits = Arc::new(Semaphore::new(prefetch));
        // Never full: at most `prefetch` deliveries exist unsettled, and one error report beyond them.
        let (tx, rx) = mpsc::channel(prefetch + 1);
        let consumer = format!(
            "{}-{}-{}",
            client.group(),
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let min_idle = options
            .handler_timeout
            .map_or(Duration::from_secs(60), |t| (t * 2).max(Duration::from_secs(2)));
        let leases_stop = client.shutdown_token().child_token();
        let mut leases = Vec::new();
        let owned = streams
            .iter()
            .map(|s| {
                if !sharded {
                    return Ownership::always();
                }
                let owned = Arc::new(Ownership::default());
                let lease = ShardLease {
                    client: client.clone(),
                    key: format!("{}:owner", s.name),
                    owner: consumer.clone(),
                };
                leases.push(tokio::spawn(lease::keep(
                    lease,
                    owned.clone(),
                    HOUSEKEEPING,
                    leases_stop.clone(),
                )));
                owned
            })
            .collect();
        let reader = Reader {
            client: client.clone(),
            con: client.dedicated().await?,
            streams: streams.clone(),
            sharded,
            owned,
            consumer,
            min_idle,
            connection_id: Arc::default(),
            credits: credits.clone(),
            prefetch,
            debt: 0,
            tx,
            stop: stop.clone(),
            unseen_since: None,
            reclaiming: vec![false; streams.len()],
        };
        let reader_id = reader.connection_id.clone();
        let reader = tokio::spawn(reader.run());
        tokio::spawn(move_due(client.clone(), streams.clone(), stop.clone()));
        Ok(Self {
            client,
            credits,
            streams,
            dlq: topology.dlq().map(str::to_string),
            sharded,
            deliveries: tokio::sync::Mutex::new(rx),
            stop,
            reader: tokio::sync::Mutex::new(Some(reader)),
            leases: tokio::sync::Mutex::new(leases),
            leases_stop,
            reader_id,
            batcher: Batcher::default(),
        })
    }

    fn stream(&self, token: &RedisToken) -> &StreamPlan {
        &self.streams[usize::from(token.stream)]
    }

    async fn run_script(&self, script: &'static str, keys: &[&str], args: Vec<Vec<u8>>) -> Result<()> {
        let keys = keys.iter().map(|k| (*k).to_string()).collect();
        self.batcher
            .run(&self.client, Work::Script { script, keys, args }, None)
            .await
    }

    /// Acknowledges the entry and appends `copy` to `stream`, atomically.
    async fn move_to(&self, token: &RedisToken, stream: &str, copy: &Envelope) -> Result<()> {
        let mut args = vec![self.client.group().as_bytes().to_vec(), token.id.as_bytes().to_vec()];
        for (k, v) in fields(copy) {
            args.push(k.into_bytes());
            args.push(v);
        }
        self.run_script(scripts::MOVE_TO_STREAM_SRC, &[&self.stream(token).name, stream], args)
            .await
    }

    /// Carries out one settlement; on failure the entry stays pending in this consumer's name.
    async fn settle_now(&self, token: &RedisToken, how: Settlement) -> Result<()> {
        // Settled (or, on failure, handed back): no longer this consumer's to count.
        let credit = CreditBack(&self.credits);
        match how {
            Settlement::Ack => {
                let work = Work::Ack {
                    stream: self.stream(token).name.clone(),
                    id: token.id.clone(),
                };
                self.batcher.run(&self.client, work, Some(credit)).await
            }
            Settlement::Requeue { envelope, hold } => match hold {
                Some(h) => {
                    let set = self
                        .stream(token)
                        .holds
                        .get(h.index)
                        .cloned()
                        .unwrap_or_else(|| self.stream(token).release.clone());
                    self.schedule(token, &set, h.delay, &envelope).await
                }
                None => {
                    let stream = self.stream(token).name.clone();
                    self.move_to(token, &stream, &envelope).await
                }
            },
            Settlement::DeadLetter { envelope } => {
                let dlq = self
                    .dlq
                    .clone()
                    .ok_or_else(|| no_dlq(self.streams.first().map_or("", |s| s.name.as_str())))?;
                self.move_to(token, &dlq, &envelope).await
            }
            Settlement::Release { envelope, delay } => match delay.filter(|d| !d.is_zero()) {
                Some(d) => {
                    let set = self.stream(token).release.clone();
                    self.schedule(token, &set, d, &envelope).await
                }
                None if self.sharded => {
                    hand_back_in_place(&self.client, &self.stream(token).name, &token.id, Count::of(token)).await
                }
                None => {
                    let stream = self.stream(token).name.clone();
                    self.move_to(token, &stream, &envelope).await
                }
            },
        }
    }

    /// Acknowledges the entry and schedules `copy` in `due_set` after `delay`, atomically.
    async fn schedule(&self, token: &RedisToken, due_set: &str, delay: Duration, copy: &Envelope) -> Result<()> {
        let due = due_at_ms(delay);
        // Unique per attempt: the same message may wait in several sets over its life.
        let attempt = format!(
            "{}:{}:{}",
            copy.message_id.to_text(),
            copy.retry_count,
            uuid::Uuid::new_v4().simple()
        );
        let mut args = vec![
            self.client.group().as_bytes().to_vec(),
            token.id.as_bytes().to_vec(),
            attempt.into_bytes(),
            due.to_string().into_bytes(),
        ];
        for (k, v) in fields(copy) {
            args.push(k.into_bytes());
            args.push(v);
        }
        let prefix = entry_prefix(due_set);
        self.run_script(
            scripts::SCHEDULE_SRC,
            &[&self.stream(token).name, due_set, &prefix],
            args,
        )
        .await
    }
}

impl Subscription for RedisSubscription {
    type Token = RedisToken;

    async fn receive(&self, max: usize, out: &mut Vec<Delivery<RedisToken>>) -> Result<bool> {
        let mut rx = self.deliveries.lock().await;
        let first = tokio::select! {
            _ = self.stop.cancelled() => return Ok(false),
            d = rx.recv() => d,
        };
        match first {
            None => Ok(false),
            Some(Err(e)) => Err(e),
            Some(Ok(d)) => {
                out.push(d);
                while out.len() < max {
                    match rx.try_recv() {
                        Ok(Ok(d)) => out.push(d),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "Redis reader reported an error after a delivery");
                            break;
                        }
                        Err(_) => break,
                    }
                }
                Ok(true)
            }
        }
    }

    async fn settle(&self, token: RedisToken, how: Settlement) -> Result<()> {
        let settled = self.settle_now(&token, how).await;
        if settled.is_err() {
            // The entry is still pending in this consumer's name (a settlement is one atomic command or
            // script: it either happened or not). Hand it back once the server answers again, so it is
            // redelivered then rather than after the reclaim idle time.
            tokio::spawn(hand_back_when_reachable(
                self.client.clone(),
                self.stream(&token).name.clone(),
                Count::of(&token),
                token.id,
                self.stop.clone(),
            ));
        }
        settled
    }

    fn abandon(&self, token: RedisToken, _envelope: Envelope) {
        self.credits.add_permits(1);
        // The entry stays pending: make it claimable at once instead of after the idle time.
        let client = self.client.clone();
        let stream = self.stream(&token).name.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = hand_back_in_place(&client, &stream, &token.id, Count::of(&token)).await;
            });
        }
    }

    async fn close(&self) {
        self.stop.cancel();
        // Deliveries read but never handed to the engine go back, including what the reader still had.
        let mut rx = self.deliveries.lock().await;
        rx.close();
        while let Some(d) = rx.recv().await {
            if let Ok(d) = d {
                let stream = self.streams[usize::from(d.token.stream)].name.clone();
                let _ = hand_back_in_place(&self.client, &stream, &d.token.id, Count::of(&d.token)).await;
            }
        }
        if let Some(mut reader) = self.reader.lock().await.take() {
            // The reader may be waiting in a blocking read: unblock it rather than wait out the block time
            // (an unblocked read returns nothing, so no entry is left pending on a consumer that is gone).
            // Again until it ends, in case the read had not started yet when it was first unblocked.
            loop {
                let id = self.reader_id.load(std::sync::atomic::Ordering::Acquire);
                if id != 0 {
                    let _ = redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query_async::<Value>(&mut self.client.commands())
                        .await;
                }
                if tokio::time::timeout(Duration::from_millis(50), &mut reader)
                    .await
                    .is_ok()
                {
                    break;
                }
            }
        }
        self.leases_stop.cancel();
        for keeper in self.leases.lock().await.drain(..) {
            let _ = keeper.await;
        }
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        self.stop.cancel();
        self.leases_stop.cancel();
    }
}

/// The lease on one shard stream: key `"{stream}:owner"` names its reader (a consumer name) and expires
/// after [`LOCK_TTL`] unless renewed.
struct ShardLease {
    client: RedisClient,
    key: String,
    owner: String,
}

impl Lease for ShardLease {
    async fn claim(&mut self) -> bool {
        scripts::CLAIM
            .key(&self.key)
            .arg(&self.owner)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async::<i64>(&mut self.client.commands())
            .await
            .is_ok_and(|got| got == 1)
    }

    async fn release(&mut self) {
        let _ = scripts::RELEASE
            .key(&self.key)
            .arg(&self.owner)
            .invoke_async::<i64>(&mut self.client.commands())
            .await;
    }
}

/// Gives one credit back when dropped: when a settlement completes or is abandoned half-way.
struct CreditBack<'a>(&'a Semaphore);

impl Drop for CreditBack<'_> {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// The delivery count a hand-back in place leaves on an entry. The reclaim that takes the entry next
/// raises it by one, and reads each delivery past the first as a lost attempt (see
/// `Reader::lost_attempts`).
#[derive(Clone, Copy)]
enum Count {
    /// The entry's lost attempts: the next reclaim sees them again and no more (a hand-back is not an
    /// attempt).
    Keep(u32),
    /// Unchanged (the reaper, which hands back what a consumer that died left: still a lost attempt).
    Kept,
}

impl Count {
    fn of(token: &RedisToken) -> Self {
        Count::Keep(token.lost)
    }
}

/// Hands an entry back in place (see [`hand_back_in_place`]) as soon as the server answers, retrying with
/// the engine's reconnect pacing until it does or the subscription stops (then the reclaim pass takes the
/// entry after its idle time).
async fn hand_back_when_reachable(
    client: RedisClient,
    stream: String,
    count: Count,
    id: String,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(200);
    while hand_back_in_place(&client, &stream, &id, count).await.is_err() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Marks a pending entry as long idle, so the next reclaim pass of any consumer of the stream takes it,
/// in stream order (a hand-back that keeps its place, for sequenced shards).
async fn hand_back_in_place(client: &RedisClient, stream: &str, id: &str, count: Count) -> Result<()> {
    let mut con = client.commands();
    let mut claim = redis::cmd("XCLAIM");
    claim
        .arg(stream)
        .arg(client.group())
        .arg(format!("{}-handback", client.group()))
        .arg(0)
        .arg(id)
        .arg("IDLE")
        .arg(HANDED_BACK_IDLE_MS);
    match count {
        Count::Keep(lost) => claim.arg("RETRYCOUNT").arg(lost),
        // JUSTID claims without raising the count.
        Count::Kept => &mut claim,
    };
    claim
        .arg("JUSTID")
        .query_async::<Value>(&mut con)
        .await
        .map(|_| ())
        .map_err(|e| redis_error("handing an entry back failed", e))
}

/// Reads entries for one subscription.
struct Reader {
    client: RedisClient,
    con: ConnectionManager,
    streams: Arc<Vec<StreamPlan>>,
    sharded: bool,
    /// Per stream: whether this consumer may read it (always, except for shards leased to another).
    owned: Vec<Arc<Ownership>>,
    consumer: String,
    min_idle: Duration,
    /// The server's id of `con`'s current connection; 0 when unknown (at start, after an error, which is
    /// when the connection manager may have reconnected).
    connection_id: Arc<std::sync::atomic::AtomicI64>,
    /// One per entry this consumer may hold unsettled; taken when read, given back when settled.
    credits: Arc<Semaphore>,
    prefetch: usize,
    /// Entries read beyond the credits taken (COUNT applies per stream), paid back from later credits.
    debt: usize,
    tx: mpsc::Sender<Result<Delivery<RedisToken>>>,
    stop: CancellationToken,
    /// When the first command that may have moved entries into this consumer's name without its reply
    /// arriving was sent (a read or reclaim cut off by a lost connection); `None` when nothing is missing.
    unseen_since: Option<tokio::time::Instant>,
    /// Per stream: a shard whose pending entries (handed back in place, or left by its previous reader)
    /// may not all be reclaimed yet. No new entry is read from it until they are, so that none overtakes
    /// them (per-key order across a hand-over).
    reclaiming: Vec<bool>,
}

impl Reader {
    /// Waits for at least one credit, then takes every credit free: the number of entries to read.
    /// Returns 0 when stopping.
    async fn take_credits(&mut self) -> usize {
        while self.debt > 0 {
            tokio::select! {
                _ = self.stop.cancelled() => return 0,
                p = self.credits.acquire() => match p {
                    Ok(p) => p.forget(),
                    Err(_) => return 0,
                },
            }
            self.debt -= 1;
        }
        let first = tokio::select! {
            _ = self.stop.cancelled() => return 0,
            p = self.credits.acquire() => match p {
                Ok(p) => p,
                Err(_) => return 0,
            },
        };
        first.forget();
        // Settlements finish in batches: let the rest of a batch hand its credits back before counting,
        // rather than read one entry per round trip.
        tokio::task::yield_now().await;
        let more = self.credits.available_permits().min(self.prefetch - 1);
        match self.credits.try_acquire_many(more as u32) {
            Ok(p) => {
                p.forget();
                1 + more
            }
            Err(_) => 1,
        }
    }

    /// Gives back the credits of entries not read after all.
    fn return_credits(&self, n: usize) {
        if n > 0 {
            self.credits.add_permits(n);
        }
    }

    async fn run(mut self) {
        let mut owned = vec![false; self.streams.len()];
        let mut last_housekeeping: Option<tokio::time::Instant> = None;
        let mut last_sweep: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            for (i, lease) in self.owned.iter().enumerate() {
                let held = lease.is_held();
                // A shard just taken over: what its previous reader handed back goes first.
                self.reclaiming[i] |= self.sharded && held && !owned[i];
                owned[i] = held;
            }
            let step: Result<()> = async {
                if let Some(since) = self.unseen_since {
                    self.recover_unseen(since).await?;
                }
                if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING) {
                    last_housekeeping = Some(tokio::time::Instant::now());
                    self.reclaim(&owned).await?;
                } else if self.reclaiming.iter().zip(&owned).any(|(r, o)| *r && *o) {
                    self.reclaim(&owned).await?;
                }
                if last_sweep.is_none_or(|t| t.elapsed() >= DEAD_CONSUMER_IDLE / 10) {
                    last_sweep = Some(tokio::time::Instant::now());
                    self.sweep_dead_consumers().await;
                }
                self.read(&owned).await
            }
            .await;
            match step {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, attempt = failures, "Redis consumer read failed; retrying");
                    // Every failure reaches the engine, which counts them against `max_reconnect_attempts`
                    // the same way on every backend.
                    if self.tx.send(Err(e)).await.is_err() {
                        break;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20)))) => {}
                    }
                }
            }
        }
        self.forget_consumer().await;
    }

    /// Claims entries left pending by consumers that went away (or handed back in place).
    async fn reclaim(&mut self, owned: &[bool]) -> Result<()> {
        let streams = self.streams.clone();
        for (i, s) in streams.iter().enumerate() {
            if !owned[i] {
                continue;
            }
            let free = self.credits.available_permits();
            let Ok(taken) = self.credits.try_acquire_many(free as u32) else {
                return Ok(());
            };
            if free == 0 {
                return Ok(());
            }
            taken.forget();
            let sent = tokio::time::Instant::now();
            let reply = redis::cmd("XAUTOCLAIM")
                .arg(&s.name)
                .arg(self.client.group())
                .arg(&self.consumer)
                .arg(self.min_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(free)
                .query_async::<Value>(&mut self.con)
                .await;
            let (done, claimed) = match reply {
                Ok(reply) => autoclaim_reply(reply),
                Err(e) => {
                    self.return_credits(free);
                    self.unseen_since.get_or_insert(sent);
                    return Err(redis_error("reclaiming idle entries failed", e));
                }
            };
            self.return_credits(free.saturating_sub(claimed.len()));
            self.reclaiming[i] = self.sharded && !done;
            let lost = self.lost_attempts(&s.name, &claimed).await;
            for ((id, envelope), lost_attempts) in claimed.into_iter().zip(lost) {
                let d = Delivery {
                    envelope,
                    redelivered: true,
                    lost_attempts,
                    token: RedisToken {
                        stream: i as u16,
                        id,
                        lost: lost_attempts,
                    },
                };
                if let Err(unsent) = self.tx.send(Ok(d)).await {
                    self.give_back(unsent.0).await;
                }
            }
        }
        Ok(())
    }

    /// Delivers the entries that a read or reclaim cut off by a lost connection moved into this consumer's
    /// name without their reply arriving, rather than leaving them pending until the reclaim idle time.
    ///
    /// They are told apart from the entries this consumer holds by their idle time: each was delivered
    /// by a command the server ran after `since`, every entry held by the engine by one whose reply had
    /// arrived before it (hand-backs go to another consumer name). A message read just before `since`
    /// may be delivered twice, never lost. Reads alone cannot lose entries this way on a healthy
    /// connection, so this runs only after a failure.
    async fn recover_unseen(&mut self, since: tokio::time::Instant) -> Result<()> {
        let streams = self.streams.clone();
        for (i, s) in streams.iter().enumerate() {
            let reply = redis::cmd("XPENDING")
                .arg(&s.name)
                .arg(self.client.group())
                .arg("-")
                .arg("+")
                .arg(self.prefetch * 2 + self.debt + 64)
                .arg(&self.consumer)
                .query_async::<Value>(&mut self.con)
                .await
                .map_err(|e| redis_error("listing the entries a lost connection left pending failed", e))?;
            // Measured after the reply, so it is at least the server's idle time of an entry delivered
            // after `since` (plus a millisecond for the server's rounding).
            let max_idle = u64::try_from(since.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let ids: Vec<String> = pending_entries(reply)
                .into_iter()
                .filter_map(|(id, idle, _)| (idle <= max_idle).then_some(id))
                .collect();
            if ids.is_empty() {
                continue;
            }
            // Claimed back with the count a first delivery leaves, so a later reclaim counts lost
            // attempts as for any entry read once.
            let mut claim = redis::cmd("XCLAIM");
            claim.arg(&s.name).arg(self.client.group()).arg(&self.consumer).arg(0);
            for id in &ids {
                claim.arg(id);
            }
            let reply = claim
                .arg("RETRYCOUNT")
                .arg(1)
                .query_async::<Value>(&mut self.con)
                .await
                .map_err(|e| redis_error("taking back the entries a lost connection left pending failed", e))?;
            let recovered = entries(reply);
            tracing::debug!(stream = %s.name, count = recovered.len(), "Redis consumer delivers entries whose read reply was lost");
            // Each needs a credit like any entry read; those the engine has none for yet are owed.
            let free = self.credits.available_permits().min(recovered.len());
            let paid = match self.credits.try_acquire_many(free as u32) {
                Ok(taken) => {
                    taken.forget();
                    free
                }
                Err(_) => 0,
            };
            self.debt += recovered.len() - paid;
            for (id, envelope) in recovered {
                let d = Delivery {
                    envelope,
                    redelivered: false,
                    lost_attempts: 0,
                    token: RedisToken {
                        stream: i as u16,
                        id,
                        lost: 0,
                    },
                };
                if let Err(unsent) = self.tx.send(Ok(d)).await {
                    self.give_back(unsent.0).await;
                }
            }
        }
        self.unseen_since = None;
        Ok(())
    }

    /// For each reclaimed entry, how many of its deliveries were lost with their consumers rather than
    /// handed back: the reclaim raised the delivery count by one, and a hand-back in place left it at the
    /// lost attempts before it, so each delivery past the first was lost. When the counts cannot be read
    /// an entry counts one lost attempt, the conservative side for the retry budget.
    async fn lost_attempts(&mut self, stream: &str, claimed: &[(String, Envelope)]) -> Vec<u32> {
        if claimed.is_empty() {
            return Vec::new();
        }
        let mut pipe = redis::pipe();
        for (id, _) in claimed {
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(self.client.group())
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let counts: Vec<Option<u64>> = match pipe.query_async::<Vec<Value>>(&mut self.con).await {
            Ok(replies) => replies
                .into_iter()
                .map(|r| pending_entries(r).first().map(|(_, _, count)| *count))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the delivery counts of reclaimed entries failed");
                Vec::new()
            }
        };
        (0..claimed.len())
            .map(|i| {
                counts
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or(1, |n| u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX))
            })
            .collect()
    }

    /// An entry read after the consumer stopped: hand it back in place for the next consumer.
    async fn give_back(&self, d: Result<Delivery<RedisToken>>) {
        if let Ok(d) = d {
            let stream = &self.streams[usize::from(d.token.stream)].name;
            let _ = hand_back_in_place(&self.client, stream, &d.token.id, Count::of(&d.token)).await;
        }
    }

    /// One blocking read of new entries, for as many as the engine can take.
    async fn read(&mut self, owned: &[bool]) -> Result<()> {
        let streams = self.streams.clone();
        let names: Vec<(usize, &str)> = streams
            .iter()
            .enumerate()
            .filter(|(i, _)| owned[*i] && !self.reclaiming[*i])
            .map(|(i, s)| (i, s.name.as_str()))
            .collect();
        if names.is_empty() && owned.iter().any(|o| *o) {
            // Every shard held still has entries to reclaim first: wait for room for them.
            tokio::select! {
                _ = self.stop.cancelled() => {}
                p = self.credits.acquire() => drop(p),
            }
            return Ok(());
        }
        if names.is_empty() {
            // A standby: wait for a shard to come free.
            let any_held = futures::future::select_all(self.owned.iter().map(|o| Box::pin(o.wait())));
            tokio::select! {
                _ = self.stop.cancelled() => {}
                _ = any_held => {}
            }
            return Ok(());
        }
        // Read only what this consumer may hold: what is read is pending on it until the engine settles it.
        let count = self.take_credits().await;
        if count > 0 && self.connection_id.load(std::sync::atomic::Ordering::Acquire) == 0 {
            match redis::cmd("CLIENT").arg("ID").query_async::<i64>(&mut self.con).await {
                Ok(id) => self.connection_id.store(id, std::sync::atomic::Ordering::Release),
                Err(e) => {
                    self.return_credits(count);
                    return Err(redis_error("asking Redis for the connection id failed", e));
                }
            }
        }
        if count == 0 {
            return Ok(());
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(self.client.group())
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(BLOCK_TIME.as_millis() as u64)
            .arg("STREAMS");
        for (_, n) in &names {
            cmd.arg(*n);
        }
        for _ in &names {
            cmd.arg(">");
        }
        let sent = tokio::time::Instant::now();
        let reply = match cmd.query_async::<Value>(&mut self.con).await {
            Ok(reply) => reply,
            Err(e) => {
                self.return_credits(count);
                self.unseen_since.get_or_insert(sent);
                self.connection_id.store(0, std::sync::atomic::Ordering::Release);
                return Err(redis_error("reading from Redis failed", e));
            }
        };
        // With several streams, COUNT applies to each.
        let mut left = count;
        for (stream, read) in read_reply(reply) {
            let Some(&(index, _)) = names.iter().find(|(_, n)| *n == stream) else {
                continue;
            };
            for (id, envelope) in read {
                let d = Delivery {
                    envelope,
                    redelivered: false,
                    lost_attempts: 0,
                    token: RedisToken {
                        stream: index as u16,
                        id,
                        lost: 0,
                    },
                };
                if left == 0 {
                    // Handing it back would let newer entries of its shard overtake it: keep it, and owe
                    // the credit.
                    self.debt += 1;
                } else {
                    left -= 1;
                }
                if let Err(unsent) = self.tx.send(Ok(d)).await {
                    self.give_back(unsent.0).await;
                }
            }
        }
        self.return_credits(left);
        Ok(())
    }

    /// Removes the names of consumers that died (idle for long, nothing pending) from the groups.
    async fn sweep_dead_consumers(&mut self) {
        for s in self.streams.iter() {
            let consumers: redis::RedisResult<Vec<HashMap<String, Value>>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&s.name)
                .arg(self.client.group())
                .query_async(&mut self.con)
                .await;
            let Ok(consumers) = consumers else { continue };
            for c in consumers {
                let int = |k: &str| match c.get(k) {
                    Some(Value::Int(n)) => Some(*n),
                    _ => None,
                };
                let name = c
                    .get("name")
                    .and_then(bytes)
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                let idle = int("idle").unwrap_or(0);
                if let Some(name) = name
                    && name != self.consumer
                    && int("pending") == Some(0)
                    && u128::try_from(idle).unwrap_or(0) >= DEAD_CONSUMER_IDLE.as_millis()
                {
                    let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(&s.name)
                        .arg(self.client.group())
                        .arg(&name)
                        .query_async(&mut self.con)
                        .await;
                }
            }
        }
    }

    /// Removes this consumer's name from the groups, unless entries are still pending on it (they would
    /// be lost from the group's bookkeeping).
    async fn forget_consumer(&mut self) {
        for s in self.streams.iter() {
            let pending: redis::RedisResult<Vec<Value>> = redis::cmd("XPENDING")
                .arg(&s.name)
                .arg(self.client.group())
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&self.consumer)
                .query_async(&mut self.con)
                .await;
            if matches!(pending, Ok(ref p) if p.is_empty()) {
                let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&s.name)
                    .arg(self.client.group())
                    .arg(&self.consumer)
                    .query_async(&mut self.con)
                    .await;
            }
        }
    }
}

/// Moves due retries and hand-backs back to their streams until `stop`.
async fn move_due(client: RedisClient, streams: Arc<Vec<StreamPlan>>, stop: CancellationToken) {
    const BATCH: usize = 500;
    let mut con = client.commands();
    loop {
        let mut busy = false;
        for s in streams.iter() {
            for set in s.holds.iter().chain(std::iter::once(&s.release)) {
                let now = chrono::Utc::now().timestamp_millis();
                let moved: redis::RedisResult<i64> = scripts::MOVE_DUE
                    .key(set)
                    .key(&s.name)
                    .key(entry_prefix(set))
                    .arg(now)
                    .arg(BATCH)
                    .invoke_async(&mut con)
                    .await;
                match moved {
                    Ok(n) => busy |= n as usize == BATCH,
                    Err(e) => tracing::debug!(error = %e, "moving due retries failed; will try again"),
                }
            }
        }
        if !busy {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(MOVER_INTERVAL) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

/// Claims idle pending entries of `streams` for `group` every `interval`, for deployments that want a
/// standalone reaper besides the consumers' own reclaim passes. Claimed entries are handed back in place
/// (made claimable by the next reader immediately).
pub fn spawn_reaper(
    client: RedisClient,
    streams: Vec<String>,
    group: String,
    interval: Duration,
    min_idle_ms: u64,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let reaper = format!("shove-reaper-{group}");
        let mut con = client.commands();
        loop {
            for stream in &streams {
                let reply: redis::RedisResult<Value> = redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(&group)
                    .arg(&reaper)
                    .arg(min_idle_ms)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(100)
                    .arg("JUSTID")
                    .query_async(&mut con)
                    .await;
                if let Ok(Value::Array(parts)) = reply {
                    let ids = match parts.into_iter().nth(1) {
                        Some(Value::Array(ids)) => ids,
                        _ => Vec::new(),
                    };
                    for id in ids.into_iter().filter_map(into_bytes).map(utf8) {
                        let _ = hand_back_in_place(&client, stream, &id, Count::Kept).await;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    })
}

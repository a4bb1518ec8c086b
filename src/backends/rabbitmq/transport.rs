//! The engine's transport on RabbitMQ.
//!
//! Settling, per decision:
//! - `Ack`: `basic.ack`.
//! - `Requeue` (retry, defer): the updated copy is published to the hold queue (or back to the source
//!   queue when there is no delay) and confirmed by the broker, then the original is acknowledged. A crash
//!   between the two leaves a duplicate, never a loss (contract rule 13). With `exactly_once`, publish and
//!   acknowledgement are one AMQP transaction instead.
//! - `DeadLetter`: the same, to the DLQ.
//! - `Release`: on a topic's main queue a fresh copy at the tail (confirmed, then the original is acked),
//!   so that `redelivered` keeps meaning "its consumer went away" (one lost attempt); on sequenced shards
//!   `basic.nack` with requeue, which keeps the message's place. With a delay, through a per-queue delay
//!   queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{SelectAll, StreamExt};
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Consumer, PublisherConfirm};

use super::client::{RabbitMqClient, amqp_error};
use super::headers;
use super::publish::PublishPool;
use super::topology;
use crate::error::{Result, ShoveError};
use crate::topology::{QueueTopology, shard_queue_name};
use crate::transport::no_dlq;
use crate::transport::{Delivery, Depth, Envelope, Settlement, Source, SubscribeOptions, Subscription, Transport};

/// Extra time a settlement may take beyond the confirm timeout before it is given up (and how long closing
/// a channel may take).
const SETTLE_MARGIN: Duration = Duration::from_secs(5);
/// How long a settle waits for the broker to confirm a copy, unless the consumer sets
/// `hold_queue_timeout`.
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The RabbitMQ transport: a client plus the engine-facing operations.
#[derive(Clone)]
pub struct RabbitTransport {
    client: RabbitMqClient,
    /// A publisher's confirm channels (`None` for a consumer's transport, which publishes on a channel of
    /// its own per call).
    pool: Option<Arc<PublishPool>>,
}

impl RabbitTransport {
    pub(crate) fn new(client: RabbitMqClient) -> Self {
        Self { client, pool: None }
    }

    /// A transport that publishes on `pool`.
    pub(crate) fn with_pool(client: RabbitMqClient, pool: Arc<PublishPool>) -> Self {
        Self {
            client,
            pool: Some(pool),
        }
    }
}

/// Where a message of `topology` is published: the consistent-hash exchange for sequenced topics (routed by
/// key), the default exchange straight to the queue otherwise.
pub(crate) fn route(topology: &QueueTopology, env: &Envelope) -> (ShortString, ShortString) {
    match topology.sequencing() {
        Some(seq) => (
            ShortString::from(seq.exchange()),
            ShortString::from(env.sequence_key.as_deref().unwrap_or("")),
        ),
        None => (ShortString::from(""), ShortString::from(topology.queue())),
    }
}

/// Publishes `env` (persistent, mandatory) to `exchange`/`routing_key` on a confirm channel; the returned
/// confirm is awaited with [`await_confirm`].
pub(crate) async fn send_persistent(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    env: &Envelope,
) -> Result<PublisherConfirm> {
    channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &env.payload,
            headers::properties(env),
        )
        .await
        .map_err(|e| amqp_error("publishing to RabbitMQ failed", e))
}

/// Waits up to `timeout` for the broker's confirm of a publish to `target`: an error unless it was
/// stored (a nack, or a message returned unroutable because its queue does not exist).
pub(crate) async fn await_confirm(confirm: PublisherConfirm, timeout: Duration, target: &str) -> Result<()> {
    let confirmation = tokio::time::timeout(timeout, confirm)
        .await
        .map_err(|_| {
            ShoveError::Connection(format!(
                "RabbitMQ did not confirm a publish to {target} within {timeout:?}"
            ))
        })?
        .map_err(|e| amqp_error("publishing to RabbitMQ failed", e))?;
    if !confirmation.is_ack() {
        return Err(ShoveError::Connection(format!(
            "RabbitMQ refused a publish to {target} (nack)"
        )));
    }
    if confirmation.take_message().is_some() {
        return Err(ShoveError::Topology(format!(
            "RabbitMQ could not route a message to {target}: the queue does not exist; declare the topic first"
        )));
    }
    Ok(())
}

/// Publishes `env` to `exchange`/`routing_key` on a confirm channel and waits for the broker's confirm.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    env: &Envelope,
    timeout: Duration,
) -> Result<()> {
    let target = format!("{}/{}", exchange.as_str(), routing_key.as_str());
    let confirm = send_persistent(channel, exchange, routing_key, env).await?;
    await_confirm(confirm, timeout, &target).await
}

/// RabbitMQ's own consumer settings, from `ConsumerOptions<RabbitMq>`.
#[derive(Debug, Clone, Default)]
pub struct RabbitOptions {
    /// How long to wait for the broker to confirm the copy that carries a retry, defer or dead-letter
    /// before giving up on it (the original is then handed back). `None`: [`DEFAULT_CONFIRM_TIMEOUT`].
    pub hold_queue_timeout: Option<Duration>,
    /// Settle through AMQP transactions: the copy and the acknowledgement of the original commit
    /// together or not at all.
    #[cfg(feature = "rabbitmq-transactional")]
    pub exactly_once: bool,
}

impl Transport for RabbitTransport {
    const NAME: &'static str = "rabbitmq";
    type Subscription = RabbitSubscription;
    type Options = RabbitOptions;

    async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.client.declare(topology).await
    }

    async fn publish(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        if let Err(e) = messages.iter().try_for_each(headers::fits_amqp) {
            return (0, Err(e));
        }
        if let Some(pool) = &self.pool {
            return pool.publish(&self.client, topology, messages).await;
        }
        let channel = match self.client.create_confirm_channel().await {
            Ok(c) => c,
            Err(e) => return (0, Err(e)),
        };
        let mut accepted = 0;
        for env in &messages {
            let (exchange, key) = route(topology, env);
            if let Err(e) = publish_confirmed(&channel, exchange, key, env, DEFAULT_CONFIRM_TIMEOUT).await {
                return (accepted, Err(e));
            }
            accepted += 1;
        }
        let _ = channel.close(200, "published".into()).await;
        (accepted, Ok(()))
    }

    async fn subscribe(&self, source: Source, options: &SubscribeOptions<RabbitOptions>) -> Result<RabbitSubscription> {
        let topology = source.topology();
        self.client.declare(topology).await?;
        let queues: Vec<String> = match source {
            Source::Main(t) => vec![t.queue().to_string()],
            Source::Shards(t) => {
                let n = t.sequencing().map_or(0, |s| s.routing_shards());
                (0..n).map(|i| shard_queue_name(t.queue(), i)).collect()
            }
            Source::DeadLetters(t) => match t.dlq() {
                Some(dlq) => vec![dlq.to_string()],
                None => return Err(no_dlq(t.queue())),
            },
        };
        let holds: Vec<Vec<String>> = match source {
            Source::Shards(t) => (0..queues.len() as u16)
                .map(|i| {
                    t.shard_hold_queue_names(i)
                        .iter()
                        .map(|h| h.name().to_string())
                        .collect()
                })
                .collect(),
            Source::Main(t) => vec![t.hold_queues().iter().map(|h| h.name().to_string()).collect()],
            Source::DeadLetters(_) => vec![Vec::new()],
        };
        let counts_lost = matches!(source, Source::Main(_));
        let sub = RabbitSubscription {
            client: self.client.clone(),
            counts_lost,
            dlq: topology.dlq().map(str::to_string),
            queues,
            holds,
            prefetch: options.prefetch.max(1),
            confirm_timeout: options.backend.hold_queue_timeout.unwrap_or(DEFAULT_CONFIRM_TIMEOUT),
            #[cfg(feature = "rabbitmq-transactional")]
            exactly_once: options.backend.exactly_once,
            own_copies: tokio::sync::RwLock::new(()),
            live: tokio::sync::Mutex::new(None),
            delay_queues: std::sync::Mutex::new(HashSet::new()),
        };
        // Open now so that a refusal (missing plugin, wrong queue arguments) surfaces at subscribe time.
        let live = sub.open().await?;
        *sub.live.lock().await = Some(live);
        Ok(sub)
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        self.client.queue_depth(queue).await
    }
}

/// One channel consuming every queue of a source.
struct Live {
    channel: Channel,
    /// The consumer tags, one per queue, to cancel before a close hands back what is buffered.
    tags: Vec<ShortString>,
    /// Deliveries taken from the stream but not yet handed to the engine (a `receive` cancelled while it
    /// waited for `own_copies`).
    stash: Vec<(u16, lapin::message::Delivery)>,
    stream: SelectAll<futures::stream::BoxStream<'static, (u16, lapin::Result<lapin::message::Delivery>)>>,
    /// Groups settlements into transactions: an AMQP transaction spans the whole channel.
    #[cfg(feature = "rabbitmq-transactional")]
    tx: Arc<TxBatcher>,
}

/// The settle handle of one delivery.
pub struct RabbitToken {
    acker: Acker,
    /// Which of the subscription's queues the delivery came from.
    queue: u16,
    /// The channel it arrived on (copies are published on the same channel, so a transaction can cover
    /// both the copy and the acknowledgement).
    channel: Channel,
    #[cfg(feature = "rabbitmq-transactional")]
    tx: Arc<TxBatcher>,
}

/// Group commit for exactly-once settling: every settlement waiting when a transaction starts joins it, so
/// one commit (one broker round trip and disk sync) covers many messages.
#[cfg(feature = "rabbitmq-transactional")]
#[derive(Default)]
struct TxBatcher {
    waiting: std::sync::Mutex<Vec<TxItem>>,
    /// Held by whoever is running a transaction.
    turn: tokio::sync::Mutex<()>,
}

#[cfg(feature = "rabbitmq-transactional")]
struct TxItem {
    /// A copy to publish first (retry, defer, dead letter, delayed hand-back), to this queue.
    publish: Option<(String, Envelope)>,
    acker: Acker,
    /// Acknowledge the original (`false`: hand it back with `basic.nack`, requeue).
    ack: bool,
    done: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
}

#[cfg(feature = "rabbitmq-transactional")]
impl TxBatcher {
    /// Publishes `publish` (if any) and settles the original in one transaction, shared with the other
    /// settlements waiting at the time. On a transactional channel every acknowledgement must go through
    /// here: one sent while a commit is in progress is a protocol error, and an acknowledgement only takes
    /// effect when committed.
    async fn settle(
        &self,
        channel: &Channel,
        publish: Option<(String, Envelope)>,
        acker: Acker,
        ack: bool,
    ) -> Result<()> {
        let (done, mut result) = tokio::sync::oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push(TxItem {
            publish,
            acker,
            ack,
            done,
        });
        let _turn = self.turn.lock().await;
        // A transaction run while we waited for our turn may have covered us.
        if let Ok(r) = result.try_recv() {
            return r.map_err(ShoveError::Connection);
        }
        let batch = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        let outcome = Self::run(channel, &batch).await;
        let shared = outcome.as_ref().map(|_| ()).map_err(ToString::to_string);
        for item in batch {
            let _ = item.done.send(shared.clone());
        }
        match result.try_recv() {
            Ok(r) => r.map_err(ShoveError::Connection),
            Err(_) => Err(ShoveError::Connection(
                "a transaction ended without settling this delivery".into(),
            )),
        }
    }

    async fn run(channel: &Channel, batch: &[TxItem]) -> Result<()> {
        let mut result = Ok(());
        for item in batch {
            let step = async {
                if let Some((queue, copy)) = &item.publish {
                    channel
                        .basic_publish(
                            ShortString::from(""),
                            ShortString::from(queue.as_str()),
                            BasicPublishOptions::default(),
                            &copy.payload,
                            headers::properties(copy),
                        )
                        .await
                        .map_err(|e| amqp_error("publishing in a transaction failed", e))?;
                }
                let settled = if item.ack {
                    item.acker.ack(BasicAckOptions::default()).await
                } else {
                    item.acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                };
                settled
                    .map(|_| ())
                    .map_err(|e| amqp_error("settling in a transaction failed", e))
            };
            if let Err(e) = step.await {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => channel
                .tx_commit()
                .await
                .map_err(|e| amqp_error("committing the transaction failed", e)),
            Err(e) => {
                // Nothing of the batch happened: the originals stay unacknowledged and are redelivered.
                let _ = channel.tx_rollback().await;
                Err(e)
            }
        }
    }
}

/// A consumer's subscription: one channel, one `basic.consume` per source queue.
pub struct RabbitSubscription {
    client: RabbitMqClient,
    dlq: Option<String>,
    queues: Vec<String>,
    /// Hold queue names per source queue, by hold index.
    holds: Vec<Vec<String>>,
    prefetch: u16,
    confirm_timeout: Duration,
    /// Whether a redelivery counts as a lost attempt: on a topic's main queue. On sequenced shards a
    /// hand-back must keep the message's place (a requeue, which sets `redelivered` too) and the DLQ
    /// has no retry budget.
    counts_lost: bool,
    #[cfg(feature = "rabbitmq-transactional")]
    exactly_once: bool,
    /// Held for writing while a copy goes back to one of this subscription's own queues, until the
    /// original's ack is processed; `receive` takes it for reading before it hands out deliveries, so the
    /// copy (which may arrive at once) is never handled before the original is settled.
    own_copies: tokio::sync::RwLock<()>,
    /// `None` after the channel failed: the next `receive` opens a new one.
    live: tokio::sync::Mutex<Option<Live>>,
    delay_queues: std::sync::Mutex<HashSet<String>>,
}

impl RabbitSubscription {
    async fn open(&self) -> Result<Live> {
        let channel = self.client.create_channel().await?;
        #[cfg(feature = "rabbitmq-transactional")]
        let transactional = self.exactly_once;
        #[cfg(not(feature = "rabbitmq-transactional"))]
        let transactional = false;
        if transactional {
            #[cfg(feature = "rabbitmq-transactional")]
            channel
                .tx_select()
                .await
                .map_err(|e| amqp_error("cannot enable AMQP transactions", e))?;
        } else {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| amqp_error("cannot enable publisher confirms", e))?;
        }
        // Twice the engine's concurrency: while a round of handlers runs, the next round is already on its
        // way, so a consumer never idles for a broker round trip between messages. Deliveries the engine
        // has not started are returned to the queue when the channel closes.
        channel
            .basic_qos(self.prefetch.saturating_mul(2), BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error("cannot set the prefetch", e))?;
        let mut stream = SelectAll::new();
        let mut tags = Vec::with_capacity(self.queues.len());
        for (i, queue) in self.queues.iter().enumerate() {
            let tag = ShortString::from(format!(
                "shove-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            tags.push(tag.clone());
            let consumer: Consumer = channel
                .basic_consume(
                    ShortString::from(queue.as_str()),
                    tag,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_error(&format!("cannot consume from '{queue}'"), e))?;
            let index = i as u16;
            stream.push(consumer.map(move |d| (index, d)).boxed());
        }
        Ok(Live {
            channel,
            tags,
            stash: Vec::new(),
            stream,
            #[cfg(feature = "rabbitmq-transactional")]
            tx: Arc::default(),
        })
    }

    fn token(&self, live: &Live, queue: u16, acker: Acker) -> RabbitToken {
        RabbitToken {
            acker,
            queue,
            channel: live.channel.clone(),
            #[cfg(feature = "rabbitmq-transactional")]
            tx: live.tx.clone(),
        }
    }

    fn delivery(&self, live: &Live, queue: u16, d: lapin::message::Delivery) -> Delivery<RabbitToken> {
        let envelope = headers::envelope(&d.properties, d.data);
        Delivery {
            envelope,
            redelivered: d.redelivered,
            // On a main queue every hand-back is a fresh copy (see `hand_back`), so `redelivered` means the
            // delivery before this one ended with its consumer: one lost attempt, which the engine writes
            // into the message before handling it (`KEEPS_LOST_ATTEMPTS` is false).
            lost_attempts: u32::from(d.redelivered && self.counts_lost),
            token: self.token(live, queue, d.acker),
        }
    }

    /// Where a copy goes after `delay` (a hold queue of the source queue, or a delay queue for delays that
    /// are not hold stages).
    async fn delay_target(&self, token: &RabbitToken, hold: Option<usize>, delay: Option<Duration>) -> Result<String> {
        let source = &self.queues[usize::from(token.queue)];
        if let Some(name) = hold.and_then(|i| self.holds[usize::from(token.queue)].get(i)) {
            return Ok(name.clone());
        }
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            return Ok(source.clone());
        };
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let name = format!("{source}-delay-{ms}ms");
        let known = self
            .delay_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&name);
        if !known {
            let hold = topology::Hold {
                name: name.clone(),
                ttl_ms: ms,
                target: source.clone(),
            };
            // On its own channel: a refusal must not close the consuming one.
            let mut channel = None;
            let declared = topology::declare_hold(&self.client, &mut channel, &hold).await;
            if let Some(channel) = channel {
                let _ = channel.close(200, "declared".into()).await;
            }
            declared?;
            self.delay_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone());
        }
        Ok(name)
    }

    /// Whether a settlement and its copy commit together in one AMQP transaction.
    fn transactional(&self) -> bool {
        #[cfg(feature = "rabbitmq-transactional")]
        return self.exactly_once;
        #[cfg(not(feature = "rabbitmq-transactional"))]
        false
    }

    /// What the engine's decision does on the broker.
    async fn plan(&self, token: &RabbitToken, how: Settlement) -> Result<Plan> {
        Ok(match how {
            Settlement::Ack => Plan::Ack,
            Settlement::Requeue { envelope, hold } => {
                let target = self
                    .delay_target(token, hold.map(|h| h.index), hold.map(|h| h.delay))
                    .await?;
                Plan::Copy(target, envelope)
            }
            Settlement::DeadLetter { envelope } => {
                let dlq = self
                    .dlq
                    .clone()
                    .ok_or_else(|| no_dlq(self.queues.first().map_or("", String::as_str)))?;
                Plan::Copy(dlq, envelope)
            }
            Settlement::Release { envelope, delay } => match delay.filter(|d| !d.is_zero()) {
                Some(_) => Plan::Copy(self.delay_target(token, None, delay).await?, envelope),
                None => self.hand_back_plan(token, envelope),
            },
        })
    }

    /// A delivery given back unsettled: on a main queue a fresh copy at the queue's tail (so that
    /// `redelivered` keeps meaning "its consumer went away"), on sequenced shards a requeue, which keeps
    /// its place.
    fn hand_back_plan(&self, token: &RabbitToken, envelope: Envelope) -> Plan {
        if self.counts_lost {
            Plan::Copy(self.queues[usize::from(token.queue)].clone(), envelope)
        } else {
            Plan::Requeue
        }
    }

    /// Carries `plan` out. A copy to one of this subscription's own queues is not handed out before the
    /// original's ack is processed (see `own_copies`).
    async fn settle_plan(&self, token: RabbitToken, plan: Plan) -> Result<()> {
        let own_queue = matches!(&plan, Plan::Copy(queue, _) if *queue == self.queues[usize::from(token.queue)]);
        let _no_deliveries = if own_queue {
            Some(self.own_copies.write().await)
        } else {
            None
        };
        let channel = token.channel.clone();
        execute(token, plan, self.transactional(), self.confirm_timeout).await?;
        if own_queue {
            // The copy is back in the queue this consumer reads, so it may be handed to us at once. An
            // ack is not confirmed, and one still unsent when the process dies is lost: the original would
            // come back too and be handled twice. A synchronous method answers only after the broker has
            // processed every earlier frame of the channel, the ack included.
            channel
                .basic_qos(self.prefetch.saturating_mul(2), BasicQosOptions::default())
                .await
                .map_err(|e| amqp_error("confirming an acknowledgement failed", e))?;
        }
        Ok(())
    }

    /// Cancels `live`'s consumers and hands back every delivery still buffered on its channel.
    async fn hand_back_buffered(&self, live: &mut Live) {
        for tag in &live.tags {
            if live
                .channel
                .basic_cancel(tag.clone(), BasicCancelOptions::default())
                .await
                .is_err()
            {
                return;
            }
        }
        // After the cancel-ok nothing more arrives: what is buffered is handed back, then the stream ends.
        for (queue, d) in std::mem::take(&mut live.stash) {
            let delivery = self.delivery(live, queue, d);
            let plan = self.hand_back_plan(&delivery.token, delivery.envelope);
            let _ = self.settle_plan(delivery.token, plan).await;
        }
        while let Some(Some((queue, Ok(d)))) = live.stream.next().now_or_never() {
            let delivery = self.delivery(live, queue, d);
            let plan = self.hand_back_plan(&delivery.token, delivery.envelope);
            let _ = self.settle_plan(delivery.token, plan).await;
        }
    }
}

/// Stores `copy` in `queue` on `channel`, then acks the original; if the copy is not confirmed, hands the
/// original back (requeue) so nothing is lost.
async fn forward(
    channel: Channel,
    acker: Acker,
    queue: String,
    copy: &Envelope,
    confirm_timeout: Duration,
) -> Result<()> {
    let published = publish_confirmed(
        &channel,
        ShortString::from(""),
        ShortString::from(queue.as_str()),
        copy,
        confirm_timeout,
    )
    .await;
    match published {
        Ok(()) => acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| amqp_error("acknowledging a delivery failed", e)),
        Err(e) => {
            // The copy is not stored: hand the original back so nothing is lost.
            let _ = acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            Err(e)
        }
    }
}

impl Subscription for RabbitSubscription {
    type Token = RabbitToken;

    /// A classic queue only flags a redelivery; the engine writes the lost attempt into the message.
    const KEEPS_LOST_ATTEMPTS: bool = false;

    async fn receive(&self, max: usize, out: &mut Vec<Delivery<RabbitToken>>) -> Result<bool> {
        let shutdown = self.client.shutdown_token();
        let mut live = self.live.lock().await;
        if live.is_none() {
            *live = Some(self.open().await?);
        }
        let Some(current) = live.as_mut() else {
            return Ok(false);
        };
        let mut failure = None;
        if current.stash.is_empty() {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                next = current.stream.next() => next,
            };
            match first {
                Some((queue, Ok(d))) => current.stash.push((queue, d)),
                Some((_, Err(e))) => failure = Some(amqp_error("the RabbitMQ consumer failed", e)),
                None => {
                    failure = Some(ShoveError::Connection(
                        "RabbitMQ cancelled the consumer (queue deleted or connection lost)".into(),
                    ))
                }
            }
            // Take whatever else is already buffered, without waiting.
            while failure.is_none() && current.stash.len() < max {
                match current.stream.next().now_or_never() {
                    Some(Some((queue, Ok(d)))) => current.stash.push((queue, d)),
                    Some(Some((_, Err(e)))) => failure = Some(amqp_error("the RabbitMQ consumer failed", e)),
                    Some(None) | None => break,
                }
            }
        }
        if current.stash.is_empty() {
            *live = None;
            return Err(failure.unwrap_or_else(|| ShoveError::Connection("the RabbitMQ consumer failed".into())));
        }
        // Not while a copy to one of our own queues is being settled (see `own_copies`). Waiting here is
        // cancel-safe: the deliveries wait in the stash for the next call.
        let _settled = self.own_copies.read().await;
        // Drained through a local so the stash keeps its allocation from one call to the next.
        let mut stash = std::mem::take(&mut current.stash);
        let n = stash.len().min(max);
        for (queue, d) in stash.drain(..n) {
            let delivery = self.delivery(current, queue, d);
            out.push(delivery);
        }
        current.stash = stash;
        if let Some(e) = failure {
            // Deliveries already taken are returned; the channel is reopened on the next call.
            tracing::warn!(error = %e, "RabbitMQ consumer channel failed; reopening");
            *live = None;
        }
        Ok(true)
    }

    async fn settle(&self, token: RabbitToken, how: Settlement) -> Result<()> {
        // A channel that died with the broker may never answer: bound the whole settlement so a consumer
        // can always stop (the broker redelivers whatever was not settled).
        let limit = self.confirm_timeout + SETTLE_MARGIN;
        tokio::time::timeout(limit, self.settle_now(token, how))
            .await
            .unwrap_or_else(|_| {
                Err(ShoveError::Connection(format!(
                    "settling a delivery did not finish within {limit:?}"
                )))
            })
    }

    fn abandon(&self, token: RabbitToken, envelope: Envelope) {
        self.abandon_now(token, envelope);
    }

    async fn close(&self) {
        if let Some(mut live) = self.live.lock().await.take() {
            if self.counts_lost {
                // Deliveries the broker already sent but the engine never took go back as fresh copies (see
                // `hand_back`): stop the consumers, then hand back what is buffered. Bounded: whatever is
                // left when time runs out is returned by the close below.
                let _ = tokio::time::timeout(SETTLE_MARGIN, self.hand_back_buffered(&mut live)).await;
            }
            // Closing the channel returns every unacknowledged delivery to its queue.
            let close = live.channel.close(200, "consumer stopped".into());
            let _ = tokio::time::timeout(SETTLE_MARGIN, close).await;
        }
    }
}

impl RabbitSubscription {
    async fn settle_now(&self, token: RabbitToken, how: Settlement) -> Result<()> {
        let plan = self.plan(&token, how).await?;
        self.settle_plan(token, plan).await
    }

    fn abandon_now(&self, token: RabbitToken, envelope: Envelope) {
        // Hand it back now if a runtime is at hand; otherwise closing the channel does it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let plan = self.hand_back_plan(&token, envelope);
        let (transactional, timeout) = (self.transactional(), self.confirm_timeout);
        runtime.spawn(async move {
            let _ = execute(token, plan, transactional, timeout).await;
        });
    }
}

/// What settling a delivery does on the broker.
enum Plan {
    /// Acknowledge the original.
    Ack,
    /// Store a copy in the queue, then acknowledge the original (in one transaction with `exactly_once`).
    Copy(String, Envelope),
    /// `basic.nack` with requeue: the original goes back and keeps its place.
    Requeue,
}

/// Carries `plan` out on the delivery's channel: in one transaction when `transactional`, else a
/// confirmed publish of the copy before the ack.
async fn execute(token: RabbitToken, plan: Plan, transactional: bool, confirm_timeout: Duration) -> Result<()> {
    #[cfg(feature = "rabbitmq-transactional")]
    if transactional {
        let (copy, ack) = match plan {
            Plan::Ack => (None, true),
            Plan::Copy(queue, envelope) => (Some((queue, envelope)), true),
            Plan::Requeue => (None, false),
        };
        return token.tx.settle(&token.channel, copy, token.acker, ack).await;
    }
    #[cfg(not(feature = "rabbitmq-transactional"))]
    let _ = transactional;
    match plan {
        Plan::Ack => token
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| amqp_error("acknowledging a delivery failed", e)),
        Plan::Copy(queue, envelope) => forward(token.channel, token.acker, queue, &envelope, confirm_timeout).await,
        Plan::Requeue => token
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| amqp_error("handing a delivery back failed", e)),
    }
}

//! The in-process broker: named queues, sequencing shards, DLQs and the delay timer, plus its
//! [`Transport`] implementation.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::queue::{Queue, Stored};
use super::timer::Timer;
use crate::backend::internal::ClientImpl;
use crate::error::{Result, ShoveError};
use crate::topology::{QueueTopology, shard_queue_name};
use crate::transport::Attachments;
use crate::transport::no_dlq;
use crate::transport::{Delivery, Depth, Envelope, Settlement, Source, SubscribeOptions, Subscription, Transport};

/// Default capacity of each in-process queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// Settings of an [`InMemoryBroker`].
#[derive(Debug, Clone)]
pub struct InMemoryConfig {
    /// Messages a queue holds before publishers wait for room (default 10 000). Retries, defers and
    /// dead-lettering never wait.
    pub default_capacity: usize,
}

impl Default for InMemoryConfig {
    fn default() -> Self {
        Self {
            default_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

impl InMemoryConfig {
    /// Sets [`InMemoryConfig::default_capacity`].
    pub fn with_default_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.default_capacity = capacity.get();
        self
    }
}

/// The queues of one topic.
pub(super) struct TopicQueues {
    /// The main queue; for a sequenced topic, messages go to `shards` instead.
    pub main: Arc<Queue>,
    pub shards: Vec<Arc<Queue>>,
    pub dlq: Option<Arc<Queue>>,
    /// Which subscription owns each shard (single active consumer per shard).
    shard_owners: Mutex<Vec<Option<u64>>>,
    /// Wakes standby subscriptions when a shard owner leaves.
    owner_left: Notify,
}

struct Inner {
    config: InMemoryConfig,
    shutdown: CancellationToken,
    timer: Arc<Timer>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    topics: RwLock<HashMap<String, Arc<TopicQueues>>>,
    next_subscription: AtomicU64,
    /// What the layers above keep per broker (the consumer groups `Broker::autoscaler` sees).
    attachments: Attachments,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops the timer task once the last handle to the broker is gone.
        self.shutdown.cancel();
    }
}

/// Why a queue capacity of 0 is refused.
pub(crate) const ZERO_CAPACITY: &str = "InMemoryConfig::default_capacity must be at least 1 (with 0 every publish would wait forever); use InMemoryConfig::with_default_capacity or the default";

/// An in-process broker. Cheap to clone; clones share the queues.
#[derive(Clone)]
pub struct InMemoryBroker {
    inner: Arc<Inner>,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBroker {
    /// A broker with [`InMemoryConfig::default`].
    pub fn new() -> Self {
        Self::with_config(InMemoryConfig::default())
    }

    /// A broker with `config`.
    ///
    /// # Panics
    ///
    /// When `config.default_capacity` is 0 (every publish would wait forever), with a message naming the
    /// fix; `Broker::<InMemory>::new` returns that as a [`ShoveError::Validation`] instead.
    pub fn with_config(config: InMemoryConfig) -> Self {
        assert!(config.default_capacity > 0, "{ZERO_CAPACITY}");
        let shutdown = CancellationToken::new();
        Self {
            inner: Arc::new(Inner {
                config,
                timer: Timer::new(shutdown.clone()),
                shutdown,
                queues: RwLock::new(HashMap::new()),
                topics: RwLock::new(HashMap::new()),
                next_subscription: AtomicU64::new(1),
                attachments: Attachments::default(),
            }),
        }
    }

    /// Cancelled when the broker shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Stops every consumer of this broker and refuses further publishes. Queued messages are dropped
    /// with the broker (it keeps nothing on disk).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Messages waiting out a retry or defer delay.
    #[cfg(test)]
    pub(super) fn delayed(&self) -> usize {
        self.inner.timer.pending()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ShoveError::Connection(
                "the in-memory broker has been shut down; create a new InMemoryBroker".into(),
            ));
        }
        Ok(())
    }

    fn queue(&self, name: &str, ready: &Arc<Notify>) -> Arc<Queue> {
        let mut queues = self.inner.queues.write().unwrap_or_else(|p| p.into_inner());
        queues
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Queue::new(
                    name.to_string(),
                    self.inner.config.default_capacity,
                    ready.clone(),
                ))
            })
            .clone()
    }

    /// The queues of `topology`, created on first use (declaring is idempotent).
    pub(super) fn topic(&self, topology: &QueueTopology) -> Arc<TopicQueues> {
        if let Some(t) = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topology.queue())
        {
            return t.clone();
        }
        let main = self.queue(topology.queue(), &Arc::new(Notify::new()));
        let shards = match topology.sequencing() {
            Some(seq) => {
                let ready = Arc::new(Notify::new());
                (0..seq.routing_shards())
                    .map(|i| self.queue(&shard_queue_name(topology.queue(), i), &ready))
                    .collect()
            }
            None => Vec::new(),
        };
        let dlq = topology.dlq().map(|name| self.queue(name, &Arc::new(Notify::new())));
        let owners = vec![None; shards.len()];
        let fresh = Arc::new(TopicQueues {
            main,
            shards,
            dlq,
            shard_owners: Mutex::new(owners),
            owner_left: Notify::new(),
        });
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.entry(topology.queue().to_string()).or_insert(fresh).clone()
    }

    /// Current depth of `queue`; for a sequenced topic's main queue, the sum over its shards.
    pub(super) fn depth_of(&self, queue: &str) -> Result<Depth> {
        let topic = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned();
        let queues: Vec<Arc<Queue>> = match topic {
            Some(t) if !t.shards.is_empty() => t.shards.clone(),
            _ => {
                let all = self.inner.queues.read().unwrap_or_else(|p| p.into_inner());
                match all.get(queue) {
                    Some(q) => vec![q.clone()],
                    None => {
                        return Err(ShoveError::Topology(format!(
                            "queue '{queue}' is not declared on this in-memory broker; declare its topic first"
                        )));
                    }
                }
            }
        };
        Ok(queues.iter().fold(Depth::default(), |d, q| Depth {
            ready: d.ready + q.ready_count(),
            in_flight: d.in_flight + q.in_flight_count(),
        }))
    }

    async fn push_all(&self, queue: &Queue, messages: Vec<Envelope>) -> (u64, Result<()>) {
        let mut pending: VecDeque<Envelope> = messages.into();
        let mut accepted = 0u64;
        loop {
            accepted += queue.push_within_capacity(&mut pending) as u64;
            if pending.is_empty() {
                return (accepted, Ok(()));
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return (accepted, self.check_open()),
                _ = queue.wait_for_room() => {}
            }
        }
    }
}

/// The shard a sequence key belongs to (the rule every backend shares).
fn shard_of(key: &str, shards: usize) -> usize {
    usize::from(crate::topology::shard_of(
        key,
        u16::try_from(shards).unwrap_or(u16::MAX),
    ))
}

impl Transport for InMemoryBroker {
    const NAME: &'static str = "inmemory";
    type Subscription = InMemorySubscription;
    type Options = ();

    async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.check_open()?;
        self.topic(topology);
        Ok(())
    }

    async fn publish(&self, topology: &'static QueueTopology, messages: Vec<Envelope>) -> (u64, Result<()>) {
        if let Err(e) = self.check_open() {
            return (0, Err(e));
        }
        let topic = self.topic(topology);
        if topic.shards.is_empty() {
            return self.push_all(&topic.main, messages).await;
        }
        // Keep each shard's messages in publish order; shards are independent.
        let mut by_shard: Vec<Vec<Envelope>> = vec![Vec::new(); topic.shards.len()];
        for m in messages {
            let shard = shard_of(m.sequence_key.as_deref().unwrap_or(""), topic.shards.len());
            by_shard[shard].push(m);
        }
        let mut accepted = 0;
        for (shard, batch) in by_shard.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let (n, r) = self.push_all(&topic.shards[shard], batch).await;
            accepted += n;
            if r.is_err() {
                return (accepted, r);
            }
        }
        (accepted, Ok(()))
    }

    async fn subscribe(&self, source: Source, _options: &SubscribeOptions<()>) -> Result<InMemorySubscription> {
        self.check_open()?;
        let topic = self.topic(source.topology());
        let (queues, sharded) = match source {
            Source::Main(_) => (vec![topic.main.clone()], false),
            Source::Shards(_) => (topic.shards.clone(), true),
            Source::DeadLetters(t) => match &topic.dlq {
                Some(q) => (vec![q.clone()], false),
                None => return Err(no_dlq(t.queue())),
            },
        };
        Ok(InMemorySubscription {
            id: self.inner.next_subscription.fetch_add(1, Ordering::Relaxed),
            broker: self.clone(),
            topic,
            queues,
            owned: Mutex::new(vec![!sharded; if sharded { 0 } else { 1 }]),
            sharded,
        })
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        self.depth_of(queue)
    }
}

fn delivery(s: Stored, token: u16) -> Delivery<u16> {
    Delivery {
        envelope: s.envelope,
        redelivered: s.redelivered,
        // In-process consumers cannot die without the broker: nothing is lost.
        lost_attempts: 0,
        token,
    }
}

/// A consumer's view of one in-process source.
pub struct InMemorySubscription {
    id: u64,
    broker: InMemoryBroker,
    topic: Arc<TopicQueues>,
    queues: Vec<Arc<Queue>>,
    /// For sharded sources, which shards this subscription owns.
    owned: Mutex<Vec<bool>>,
    sharded: bool,
}

impl InMemorySubscription {
    /// Claims every shard nobody owns. Returns the indices this subscription owns.
    fn claim_shards(&self) -> Vec<usize> {
        let mut owners = self.topic.shard_owners.lock().unwrap_or_else(|p| p.into_inner());
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if owned.len() != owners.len() {
            owned.resize(owners.len(), false);
        }
        for (i, owner) in owners.iter_mut().enumerate() {
            if owner.is_none() {
                *owner = Some(self.id);
            }
            owned[i] = *owner == Some(self.id);
        }
        owned.iter().enumerate().filter(|(_, o)| **o).map(|(i, _)| i).collect()
    }

    /// Moves up to `max` messages into `out`. Returns whether this subscription owns any queue (a
    /// standby of a sharded source owns none).
    fn try_take(&self, max: usize, out: &mut Vec<Delivery<u16>>) -> bool {
        if !self.sharded {
            self.queues[0].pop(max, |s| out.push(delivery(s, 0)));
            return true;
        }
        let owned = self.claim_shards();
        let start = out.len();
        for i in &owned {
            let taken = out.len() - start;
            if taken >= max {
                break;
            }
            self.queues[*i].pop(max - taken, |s| out.push(delivery(s, *i as u16)));
        }
        !owned.is_empty()
    }

    /// Gives up this subscription's shards so a standby can take over.
    fn release_shards(&self) {
        if !self.sharded {
            return;
        }
        let mut owners = self.topic.shard_owners.lock().unwrap_or_else(|p| p.into_inner());
        let mut left = false;
        for owner in owners.iter_mut() {
            if *owner == Some(self.id) {
                *owner = None;
                left = true;
            }
        }
        drop(owners);
        if left {
            self.topic.owner_left.notify_waiters();
        }
    }

    fn queue_of(&self, token: u16) -> &Arc<Queue> {
        &self.queues[usize::from(token)]
    }

    fn put_back(&self, token: u16, envelope: Envelope, delay: Option<Duration>, front: bool) {
        let queue = self.queue_of(token).clone();
        let stored = Stored {
            envelope,
            redelivered: true,
        };
        match delay {
            Some(d) if !d.is_zero() => self
                .broker
                .inner
                .timer
                .schedule(tokio::time::Instant::now() + d, queue, stored),
            _ => queue.requeue(stored, front),
        }
    }
}

impl Subscription for InMemorySubscription {
    type Token = u16;

    async fn receive(&self, max: usize, out: &mut Vec<Delivery<u16>>) -> Result<bool> {
        let shutdown = &self.broker.inner.shutdown;
        let ready = &self.queues.first().map(|q| q.ready.clone()).unwrap_or_default();
        loop {
            let notified = ready.notified();
            let owner_left = self.topic.owner_left.notified();
            tokio::pin!(notified, owner_left);
            notified.as_mut().enable();
            owner_left.as_mut().enable();
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            let before = out.len();
            let owns_any = self.try_take(max, out);
            if out.len() > before {
                return Ok(true);
            }
            if owns_any {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = notified => {}
                }
            } else {
                // A standby for a sharded source: wait for an owner to leave.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = owner_left => {}
                }
            }
        }
    }

    async fn settle(&self, token: u16, how: Settlement) -> Result<()> {
        let queue = self.queue_of(token);
        queue.settled();
        match how {
            Settlement::Ack => {}
            Settlement::Requeue { envelope, hold } => self.put_back(token, envelope, hold.map(|h| h.delay), false),
            Settlement::Release { envelope, delay } => self.put_back(token, envelope, delay, false),
            Settlement::DeadLetter { envelope } => match &self.topic.dlq {
                Some(dlq) => dlq.requeue(
                    Stored {
                        envelope,
                        redelivered: false,
                    },
                    false,
                ),
                None => return Err(no_dlq(&queue.name)),
            },
        }
        Ok(())
    }

    fn abandon(&self, token: u16, envelope: Envelope) {
        self.queue_of(token).settled();
        self.put_back(token, envelope, None, true);
    }

    async fn hand_back_in_order(&self, deliveries: Vec<Delivery<u16>>) {
        // Each goes to the front of its queue, so the last first: they come again in the order given.
        // Nobody else reads these queues until `close` gives them up.
        for d in deliveries.into_iter().rev() {
            self.abandon(d.token, d.envelope);
        }
    }

    async fn close(&self) {
        self.release_shards();
    }
}

impl Drop for InMemorySubscription {
    fn drop(&mut self) {
        self.release_shards();
    }
}

impl ClientImpl for InMemoryBroker {
    type Transport = InMemoryBroker;
    const DEFAULT_GROUP_SIZE: (u16, u16) = (1, 1);

    fn transport(&self) -> InMemoryBroker {
        self.clone()
    }

    fn connection_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn attachments(&self) -> &Attachments {
        &self.inner.attachments
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::topology::TopologyBuilder;
    use crate::transport::{Hold, MessageId};

    fn envelope(i: u32) -> Envelope {
        Envelope {
            payload: i.to_le_bytes().to_vec(),
            message_id: MessageId::Text(Arc::from(format!("m-{i}"))),
            retry_count: 0,
            sequence_key: None,
            headers: Arc::new(HashMap::new()),
            death: None,
        }
    }

    /// Many pending retries cost one timer entry each, not one task each, and all come back when due.
    #[tokio::test(start_paused = true)]
    async fn pending_retries_share_one_timer_task() {
        const N: u32 = 100_000;
        static TOPOLOGY: std::sync::OnceLock<QueueTopology> = std::sync::OnceLock::new();
        let topology = TOPOLOGY.get_or_init(|| {
            TopologyBuilder::new("timer-test")
                .hold_queue(Duration::from_secs(60))
                .build()
        });
        let broker = InMemoryBroker::with_config(InMemoryConfig {
            default_capacity: N as usize,
        });
        let (accepted, result) = broker.publish(topology, (0..N).map(envelope).collect()).await;
        assert_eq!((accepted, result.is_ok()), (u64::from(N), true));

        let sub = broker
            .subscribe(Source::Main(topology), &SubscribeOptions::default())
            .await
            .expect("subscribe");
        let mut got = Vec::new();
        while got.len() < N as usize {
            assert!(sub.receive(N as usize, &mut got).await.expect("receive"));
        }
        let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        for d in got.drain(..) {
            let mut envelope = d.envelope;
            envelope.retry_count = 1;
            let hold = Some(Hold {
                index: 0,
                delay: Duration::from_secs(60),
            });
            sub.settle(d.token, Settlement::Requeue { envelope, hold })
                .await
                .expect("settle");
        }
        assert_eq!(broker.delayed(), N as usize);
        let tasks_after = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        assert!(
            tasks_after <= tasks_before + 1,
            "{tasks_before} tasks before, {tasks_after} after"
        );
        assert_eq!(broker.depth_of("timer-test").expect("depth").ready, 0);

        tokio::time::advance(Duration::from_secs(61)).await;
        // Let the timer task run.
        while broker.delayed() > 0 {
            tokio::task::yield_now().await;
        }
        let depth = broker.depth_of("timer-test").expect("depth");
        assert_eq!((depth.ready, depth.in_flight), (u64::from(N), 0));
        assert!(sub.receive(1, &mut got).await.expect("receive"));
        assert!(got[0].redelivered);
        assert_eq!(got[0].envelope.retry_count, 1);
    }
}

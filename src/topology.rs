//! Where a topic's messages live: main queue, hold (delay) queues, DLQ, sequencing shards.

use std::time::Duration;

/// A delay stage for retries: a retry waits `delay` in the queue named `name` before it is redelivered.
#[derive(Debug, Clone)]
pub struct HoldQueue {
    name: String,
    delay: Duration,
}

impl HoldQueue {
    /// The hold queue's name, `"{queue}-hold-{N}s"` or `"{queue}-hold-{N}ms"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long a message waits here before it goes back to the main queue.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// What a sequenced consumer does with a key whose message ends up dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceFailure {
    /// Dead-letter the failed message and go on with the key's next message.
    Skip,
    /// Dead-letter the failed message and every later message of that key (the key stays poisoned for
    /// the life of the consumer).
    FailAll,
}

/// Per-key ordering settings of a sequenced topic.
#[derive(Debug, Clone)]
pub struct SequenceConfig {
    on_failure: SequenceFailure,
    routing_shards: u16,
    exchange: String,
}

impl SequenceConfig {
    /// What happens to a key after one of its messages is dead-lettered.
    pub fn on_failure(&self) -> SequenceFailure {
        self.on_failure
    }

    /// How many shard queues the keys are hashed over (default 8).
    pub fn routing_shards(&self) -> u16 {
        self.routing_shards
    }

    /// The routing exchange name, `"{queue}-seq-hash"` (used by the RabbitMQ mapping).
    pub fn exchange(&self) -> &str {
        &self.exchange
    }
}

/// The full set of queue names and delivery settings of one topic. Built once by [`TopologyBuilder`].
#[derive(Debug, Clone)]
pub struct QueueTopology {
    queue: String,
    dlq: Option<String>,
    hold_queues: Vec<HoldQueue>,
    sequencing: Option<SequenceConfig>,
}

impl QueueTopology {
    /// Refuses a topic registered with the wrong method: `fifo` (`register_fifo`, `new_fifo`) for a
    /// sequenced topic, the plain one otherwise.
    pub(crate) fn check_sequencing(&self, fifo: bool) -> crate::error::Result<()> {
        if fifo == self.sequencing().is_some() {
            return Ok(());
        }
        Err(crate::error::ShoveError::Topology(format!(
            "topic '{}' is {}sequenced; register it with {}",
            self.queue(),
            if fifo { "not " } else { "" },
            if fifo { "register" } else { "register_fifo" }
        )))
    }

    /// The main queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The dead-letter queue name, if the topic has one.
    pub fn dlq(&self) -> Option<&str> {
        self.dlq.as_deref()
    }

    /// The retry delay stages, in the order they were added.
    pub fn hold_queues(&self) -> &[HoldQueue] {
        &self.hold_queues
    }

    /// Per-key ordering settings, for a sequenced topic.
    pub fn sequencing(&self) -> Option<&SequenceConfig> {
        self.sequencing.as_ref()
    }

    /// The hold queues of one sequencing shard: `"{queue}-seq-{i}-hold-{suffix}"`, one per hold delay.
    pub fn shard_hold_queue_names(&self, shard_index: u16) -> Vec<HoldQueue> {
        self.hold_queues
            .iter()
            .map(|h| HoldQueue {
                name: format!(
                    "{}-hold-{}",
                    shard_queue_name(&self.queue, shard_index),
                    delay_suffix(h.delay)
                ),
                delay: h.delay,
            })
            .collect()
    }
}

/// `"{queue}-seq-{shard}"`: the shard queue/stream name every backend uses.
pub(crate) fn shard_queue_name(queue: &str, shard: u16) -> String {
    format!("{queue}-seq-{shard}")
}

/// The shard a message with sequence key `key` goes to, on every backend that chooses shards in the
/// client: FNV-1a 64 of the key's UTF-8 bytes modulo the shard count (spec §16, contract rule 14). A
/// fixed function, unlike `std`'s hasher, whose algorithm Rust may change: every build and version of a
/// fleet (shove 0.11.3 included) sends a key to the same shard, so per-key order holds across an upgrade.
#[cfg(client_sharding)]
pub(crate) fn shard_of(key: &str, shards: u16) -> u16 {
    (fnv1a_64(key.as_bytes()) % u64::from(shards.max(1))) as u16
}

/// FNV-1a, 64 bits: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`.
#[cfg(client_sharding)]
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(all(test, client_sharding))]
mod shard_tests {
    use super::*;

    #[test]
    fn the_shard_hash_is_fnv1a_64() {
        // Spec §16's values, and the reference test vector of FNV-1a 64.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_land_on_pinned_shards() {
        assert_eq!(shard_of("", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u16);
        assert_eq!(shard_of("a", 8), 4);
        assert_eq!(shard_of("foobar", 8), 0);
        assert_eq!(shard_of("a", 1), 0);
        // Zero shards is refused when a topology is built; here it cannot divide by zero.
        assert_eq!(shard_of("a", 0), 0);
    }
}

fn delay_suffix(delay: Duration) -> String {
    if delay.subsec_nanos() == 0 {
        format!("{}s", delay.as_secs())
    } else {
        format!("{}ms", delay.as_millis())
    }
}

/// Builds a [`QueueTopology`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shove::{SequenceFailure, TopologyBuilder};
///
/// let t = TopologyBuilder::new("orders")
///     .hold_queue(Duration::from_secs(5))
///     .hold_queue(Duration::from_millis(1500))
///     .dlq()
///     .build();
/// assert_eq!(t.hold_queues()[0].name(), "orders-hold-5s");
/// assert_eq!(t.hold_queues()[1].name(), "orders-hold-1500ms");
/// assert_eq!(t.dlq(), Some("orders-dlq"));
///
/// let ledger = TopologyBuilder::new("ledger")
///     .sequenced(SequenceFailure::FailAll)
///     .routing_shards(4)
///     .hold_queue(Duration::from_secs(1))
///     .dlq()
///     .build();
/// assert_eq!(ledger.sequencing().unwrap().exchange(), "ledger-seq-hash");
/// ```
pub struct TopologyBuilder {
    queue: String,
    dlq: Option<String>,
    hold_queues: Vec<HoldQueue>,
    sequencing: Option<SequenceConfig>,
    allow_message_loss: bool,
}

impl TopologyBuilder {
    /// Starts a topology whose main queue is `queue`.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            dlq: None,
            hold_queues: Vec::new(),
            sequencing: None,
            allow_message_loss: false,
        }
    }

    /// Makes the topic sequenced (per-key ordering) with 8 routing shards.
    pub fn sequenced(mut self, on_failure: SequenceFailure) -> Self {
        self.sequencing = Some(SequenceConfig {
            on_failure,
            routing_shards: 8,
            exchange: format!("{}-seq-hash", self.queue),
        });
        self
    }

    /// Sets the number of routing shards of a sequenced topic.
    ///
    /// # Panics
    ///
    /// When [`TopologyBuilder::sequenced`] was not called first.
    pub fn routing_shards(mut self, count: u16) -> Self {
        match self.sequencing.as_mut() {
            Some(s) => s.routing_shards = count,
            None => panic!("routing_shards() called before sequenced()"),
        }
        self
    }

    /// Appends a retry delay stage. Retry `k` (0-based) waits the delay of stage `min(k, stages - 1)`.
    pub fn hold_queue(mut self, delay: Duration) -> Self {
        let name = format!("{}-hold-{}", self.queue, delay_suffix(delay));
        self.hold_queues.push(HoldQueue { name, delay });
        self
    }

    /// Adds a dead-letter queue named `"{queue}-dlq"`.
    pub fn dlq(mut self) -> Self {
        self.dlq = Some(format!("{}-dlq", self.queue));
        self
    }

    /// Adds a dead-letter queue with a chosen name.
    pub fn dlq_named(mut self, name: impl Into<String>) -> Self {
        self.dlq = Some(name.into());
        self
    }

    /// Accepts that a sequenced topic without a DLQ or hold queue may drop messages.
    pub fn allow_message_loss(mut self) -> Self {
        self.allow_message_loss = true;
        self
    }

    /// Finishes the topology.
    ///
    /// # Panics
    ///
    /// For an empty queue name, a DLQ named like the queue itself (a rejected message would come
    /// straight back to its own queue, forever), a sequenced topic with zero routing shards, or a
    /// sequenced topic without a DLQ or a hold queue unless [`TopologyBuilder::allow_message_loss`] was
    /// called. The message names the fix.
    pub fn build(self) -> QueueTopology {
        if self.queue.is_empty() {
            panic!("a topic's queue name must not be empty: pass it to TopologyBuilder::new");
        }
        if self.dlq.as_deref() == Some(self.queue.as_str()) {
            panic!(
                "the DLQ of '{}' is named like the queue itself, so a rejected message would return to it forever: give .dlq_named() another name, or call .dlq()",
                self.queue
            );
        }
        if let Some(seq) = &self.sequencing {
            if seq.routing_shards == 0 {
                panic!("routing_shards must be greater than 0 when sequencing is enabled");
            }
            if !self.allow_message_loss {
                if self.dlq.is_none() {
                    panic!(
                        "sequenced topics require a DLQ — call .dlq() or .dlq_named() or .allow_message_loss() before .build()"
                    );
                }
                if self.hold_queues.is_empty() {
                    panic!(
                        "sequenced topics require at least one hold queue — call .hold_queue() or .allow_message_loss() before .build()"
                    );
                }
            }
        }
        QueueTopology {
            queue: self.queue,
            dlq: self.dlq,
            hold_queues: self.hold_queues,
            sequencing: self.sequencing,
        }
    }
}

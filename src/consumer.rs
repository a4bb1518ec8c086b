//! Per-consumer settings.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::engine::settings::{ConsumerSettings, EngineSettings};
use crate::transport::SubscribeOptions;

pub use crate::defaults::{DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING_PER_KEY};

/// Settings of one consumer (or every consumer a supervisor registers with them).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shove::{ConsumerOptions, InMemory};
///
/// let opts = ConsumerOptions::<InMemory>::preset(50)
///     .with_max_retries(3)
///     .with_handler_timeout(Duration::from_secs(5));
/// assert_eq!(opts.prefetch_count, 50);
/// assert_eq!(opts.max_retries, 3);
/// ```
pub struct ConsumerOptions<B: Backend> {
    /// Retries allowed after the first attempt (default 10): the handler runs at most `max_retries + 1` times.
    pub max_retries: u32,
    /// Messages handled concurrently by one consumer (default 10). 0 is treated as 1: a consumer that may
    /// hold no message could never take one.
    pub prefetch_count: u16,
    /// When false, one message at a time regardless of `prefetch_count` (default true).
    pub concurrent_processing: bool,
    /// Per-call handler timeout (default 30 s); exceeding it counts as a retry.
    pub handler_timeout: Option<Duration>,
    /// Messages buffered per key by a sequenced consumer (default 1000).
    pub max_pending_per_key: Option<usize>,
    /// Largest payload accepted (default 10 MiB).
    pub max_message_size: Option<usize>,
    /// Give up after this many consecutive failed reconnects (default: never).
    pub max_reconnect_attempts: Option<u32>,
    /// RabbitMQ: how long to wait for the broker to confirm a retry's copy in its hold queue (default:
    /// 30 s); if it does not confirm in time, the original is handed back and redelivered.
    #[cfg(feature = "rabbitmq")]
    pub hold_queue_timeout: Option<Duration>,
    /// RabbitMQ: settle through AMQP transactions, so the routing publish and the acknowledgement of the
    /// original commit together (default: false).
    #[cfg(feature = "rabbitmq-transactional")]
    pub exactly_once: bool,
    /// NATS: the most deliveries the consumer's JetStream consumer may have outstanding (delivered and
    /// not yet acknowledged) across all its clients (default: `None`, the server's default).
    #[cfg(feature = "nats")]
    pub max_ack_pending: Option<i64>,
    pub(crate) shutdown: Option<CancellationToken>,
    pub(crate) processing: Arc<AtomicBool>,
    pub(crate) consumer_group: Option<Arc<str>>,
    _backend: PhantomData<fn() -> B>,
}

impl<B: Backend> ConsumerOptions<B> {
    /// What the engine runs a consumer with, passing `backend` (the transport's own settings) on.
    pub(crate) fn consumer_settings<O>(&self, backend: O) -> ConsumerSettings<O> {
        ConsumerSettings {
            engine: EngineSettings {
                max_retries: self.max_retries,
                capacity: if self.concurrent_processing {
                    usize::from(self.prefetch_count.max(1))
                } else {
                    1
                },
                handler_timeout: self.handler_timeout,
                max_pending_per_key: self.max_pending_per_key,
                max_message_size: self.max_message_size,
                max_reconnect_attempts: self.max_reconnect_attempts,
                processing: self.processing.clone(),
            },
            subscribe: SubscribeOptions {
                prefetch: self.prefetch_count.max(1),
                handler_timeout: self.handler_timeout,
                backend,
            },
        }
    }
}

impl<B: Backend> ConsumerOptions<B> {
    /// The defaults listed on each field.
    pub fn new() -> Self {
        Self {
            max_retries: 10,
            prefetch_count: 10,
            concurrent_processing: true,
            handler_timeout: Some(DEFAULT_HANDLER_TIMEOUT),
            max_pending_per_key: Some(DEFAULT_MAX_PENDING_PER_KEY),
            max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            max_reconnect_attempts: None,
            #[cfg(feature = "rabbitmq")]
            hold_queue_timeout: None,
            #[cfg(feature = "rabbitmq-transactional")]
            exactly_once: false,
            #[cfg(feature = "nats")]
            max_ack_pending: None,
            shutdown: None,
            processing: Arc::new(AtomicBool::new(false)),
            consumer_group: None,
            _backend: PhantomData,
        }
    }

    /// The defaults with `prefetch_count = prefetch`.
    pub fn preset(prefetch: u16) -> Self {
        Self::new().with_prefetch_count(prefetch)
    }

    /// Sets [`ConsumerOptions::max_retries`].
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets [`ConsumerOptions::prefetch_count`].
    pub fn with_prefetch_count(mut self, prefetch_count: u16) -> Self {
        self.prefetch_count = prefetch_count;
        self
    }

    /// Sets [`ConsumerOptions::concurrent_processing`]; `false` means an effective prefetch of 1.
    pub fn with_concurrent_processing(mut self, on: bool) -> Self {
        self.concurrent_processing = on;
        self
    }

    /// Sets the handler timeout.
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"handler_timeout must be positive"`.
    pub fn with_handler_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "handler_timeout must be positive");
        self.handler_timeout = Some(timeout);
        self
    }

    /// Lets handlers run as long as they like.
    pub fn without_handler_timeout(mut self) -> Self {
        self.handler_timeout = None;
        self
    }

    /// Sets [`ConsumerOptions::max_pending_per_key`].
    ///
    /// # Panics
    ///
    /// When `limit` is 0, with a message naming the fix.
    pub fn with_max_pending_per_key(mut self, limit: usize) -> Self {
        self.max_pending_per_key = Some(crate::defaults::checked_max_pending_per_key(limit));
        self
    }

    /// Removes the per-key buffer bound.
    pub fn without_max_pending_per_key(mut self) -> Self {
        self.max_pending_per_key = None;
        self
    }

    /// Sets [`ConsumerOptions::max_message_size`].
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = Some(max);
        self
    }

    /// Accepts payloads of any size.
    pub fn without_message_size_limit(mut self) -> Self {
        self.max_message_size = None;
        self
    }

    /// Sets [`ConsumerOptions::max_reconnect_attempts`].
    pub fn with_max_reconnect_attempts(mut self, n: u32) -> Self {
        self.max_reconnect_attempts = Some(n);
        self
    }

    /// Stops the consumer (after in-flight handlers finish) when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Names the consumer group this consumer belongs to (used in logs and metrics).
    pub fn with_consumer_group(mut self, name: impl Into<Arc<str>>) -> Self {
        self.consumer_group = Some(name.into());
        self
    }

    /// A flag that is `true` while the consumer is running a handler.
    pub fn processing_handle(&self) -> Arc<AtomicBool> {
        self.processing.clone()
    }
}

impl<B: Backend> Default for ConsumerOptions<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Clone for ConsumerOptions<B> {
    fn clone(&self) -> Self {
        Self {
            max_retries: self.max_retries,
            prefetch_count: self.prefetch_count,
            concurrent_processing: self.concurrent_processing,
            handler_timeout: self.handler_timeout,
            max_pending_per_key: self.max_pending_per_key,
            max_message_size: self.max_message_size,
            max_reconnect_attempts: self.max_reconnect_attempts,
            #[cfg(feature = "rabbitmq")]
            hold_queue_timeout: self.hold_queue_timeout,
            #[cfg(feature = "rabbitmq-transactional")]
            exactly_once: self.exactly_once,
            #[cfg(feature = "nats")]
            max_ack_pending: self.max_ack_pending,
            shutdown: self.shutdown.clone(),
            processing: self.processing.clone(),
            consumer_group: self.consumer_group.clone(),
            _backend: PhantomData,
        }
    }
}

#[cfg(feature = "rabbitmq")]
impl ConsumerOptions<crate::markers::RabbitMq> {
    /// Sets [`ConsumerOptions::hold_queue_timeout`].
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"hold_queue_timeout must be positive"`.
    pub fn with_hold_queue_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "hold_queue_timeout must be positive");
        self.hold_queue_timeout = Some(timeout);
        self
    }
}

#[cfg(feature = "nats")]
impl ConsumerOptions<crate::markers::Nats> {
    /// Sets [`ConsumerOptions::max_ack_pending`]: the JetStream consumer's `max_ack_pending`, the most
    /// deliveries outstanding at once across every client of that consumer.
    pub fn with_max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = Some(n);
        self
    }
}

#[cfg(feature = "rabbitmq-transactional")]
impl ConsumerOptions<crate::markers::RabbitMq> {
    /// Settles through AMQP transactions: a retry's copy (or a dead letter) and the acknowledgement of the
    /// original commit together, so a consumer process that dies between them leaves neither a duplicate
    /// nor a loss (tested by killing consumer processes mid-stream). RabbitMQ documents that a transaction
    /// is not atomic across queues when the broker itself fails: a broker crash during a commit may still
    /// leave a duplicate (same message id), never a loss. That case is not claimed.
    pub fn with_exactly_once(mut self) -> Self {
        self.exactly_once = true;
        self
    }
}

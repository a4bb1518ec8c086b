//! The engine's copy of a consumer's settings, independent of the backend marker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::consumer::ConsumerOptions;
use crate::transport::SubscribeOptions;

/// What one consumer loop needs to know.
#[derive(Clone)]
pub(crate) struct ConsumerSettings {
    pub max_retries: u32,
    /// Handlers running at once (prefetch, or 1 without concurrent processing).
    pub capacity: usize,
    pub handler_timeout: Option<Duration>,
    pub max_pending_per_key: Option<usize>,
    pub max_message_size: Option<usize>,
    pub max_reconnect_attempts: Option<u32>,
    pub processing: Arc<AtomicBool>,
    /// What the transport needs to know when subscribing.
    pub subscribe: SubscribeOptions,
}

impl<B: Backend> From<&ConsumerOptions<B>> for ConsumerSettings {
    fn from(o: &ConsumerOptions<B>) -> Self {
        Self {
            max_retries: o.max_retries,
            capacity: if o.concurrent_processing {
                usize::from(o.prefetch_count.max(1))
            } else {
                1
            },
            handler_timeout: o.handler_timeout,
            max_pending_per_key: o.max_pending_per_key,
            max_message_size: o.max_message_size,
            max_reconnect_attempts: o.max_reconnect_attempts,
            processing: o.processing.clone(),
            subscribe: SubscribeOptions {
                prefetch: o.prefetch_count.max(1),
                handler_timeout: o.handler_timeout,
                #[cfg(feature = "rabbitmq")]
                hold_queue_timeout: o.hold_queue_timeout,
                #[cfg(feature = "rabbitmq-transactional")]
                exactly_once: o.exactly_once,
                #[cfg(feature = "nats")]
                max_ack_pending: o.max_ack_pending,
            },
        }
    }
}

/// How a running consumer is told to stop.
#[derive(Clone, Default)]
pub(crate) struct RunControl {
    /// Stop taking messages; finish in-flight handlers, hand buffered messages back.
    pub stop: CancellationToken,
    /// Give up on in-flight handlers now (the broker redelivers their messages).
    pub abort: CancellationToken,
}

/// Counters a supervisor turns into a [`SupervisorOutcome`](crate::SupervisorOutcome).
#[derive(Default)]
pub(crate) struct RunStats {
    /// Consumers that ended with an error.
    pub errors: AtomicUsize,
    /// Handler calls that panicked.
    pub panics: AtomicUsize,
}

impl RunStats {
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }
}

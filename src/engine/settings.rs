//! The engine's copy of a consumer's settings, independent of the backend marker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::transport::SubscribeOptions;

/// How the engine runs one consumer's handlers, whatever its transport.
#[derive(Clone)]
pub(crate) struct EngineSettings {
    pub max_retries: u32,
    /// Handlers running at once (prefetch, or 1 without concurrent processing).
    pub capacity: usize,
    pub handler_timeout: Option<Duration>,
    pub max_pending_per_key: Option<usize>,
    pub max_message_size: Option<usize>,
    pub max_reconnect_attempts: Option<u32>,
    pub processing: Arc<AtomicBool>,
}

/// What one consumer loop needs to know; `O` is the transport's own settings.
#[derive(Clone)]
pub(crate) struct ConsumerSettings<O> {
    pub engine: EngineSettings,
    /// What the transport needs to know when subscribing.
    pub subscribe: SubscribeOptions<O>,
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

//! What a handler decides about a message, and how a run of consumers ended.

use serde::{Deserialize, Serialize};

/// A handler's verdict on one delivery. The engine turns it into a broker action (see the crate docs'
/// delivery contract): `Ack` removes the message, `Retry` redelivers after the hold delay for this attempt
/// and consumes retry budget, `Reject` dead-letters at once, `Defer` redelivers after the first hold delay
/// without consuming budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// Processed; remove the message.
    Ack,
    /// Failed transiently; try again later (counts against `max_retries`).
    Retry,
    /// Failed permanently; dead-letter now (discard with a warning when the topic has no DLQ).
    Reject,
    /// Not ready yet; try again after the first hold delay without counting a retry.
    Defer,
}

/// How a supervisor (or group) run ended. [`SupervisorOutcome::exit_code`] turns it into a process exit code.
#[must_use]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupervisorOutcome {
    /// Consumers that stopped with an error.
    pub errors: usize,
    /// Handler calls (or consumer tasks) that panicked.
    pub panics: usize,
    /// Whether in-flight handlers were still running when the drain timeout ran out.
    pub timed_out: bool,
}

impl SupervisorOutcome {
    /// 3 for a drain timeout, else 2 for panics, else 1 for errors, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            3
        } else if self.panics > 0 {
            2
        } else if self.errors > 0 {
            1
        } else {
            0
        }
    }

    /// Whether [`SupervisorOutcome::exit_code`] is 0.
    pub fn is_clean(&self) -> bool {
        self.exit_code() == 0
    }
}

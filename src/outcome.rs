//! What a handler decides about a message.

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

//! What a handler learns about a delivery besides the message itself.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Per-delivery facts handed to [`MessageHandler::handle`](crate::MessageHandler::handle).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageMetadata {
    /// How many retries came before this delivery (0 on the first attempt; defers do not count).
    pub retry_count: u32,
    /// The message id (`x-message-id`): stamped at publish, stable across retries, defers and DLQ.
    pub delivery_id: String,
    /// Whether this message was delivered before: true for every retry (`retry_count > 0`), and for a
    /// message the broker delivers again after a consumer stopped or crashed (and, where the broker tracks
    /// it, after a defer).
    pub redelivered: bool,
    /// The headers the publisher attached (reserved `x-` headers excluded).
    pub headers: Arc<HashMap<String, String>>,
}

/// Facts handed to [`MessageHandler::handle_dead`](crate::MessageHandler::handle_dead) for a dead-lettered message.
#[derive(Debug, Clone)]
pub struct DeadMessageMetadata {
    /// The delivery metadata, with the original headers and message id.
    pub message: MessageMetadata,
    /// Why it was dead-lettered: `rejected`, `max_retries_exceeded`, `oversize`, `deserialize`,
    /// `sequence_poisoned`.
    pub reason: Option<String>,
    /// The queue it was consumed from when it died.
    pub original_queue: Option<String>,
    /// How many times it has been dead-lettered (1 the first time).
    pub death_count: u32,
}

//! The one error type every fallible shove call returns.

/// Everything that can go wrong in shove.
///
/// Variants and their `Display` strings follow shove 0.11.3 exactly, so code that matches on them or
/// asserts on their text keeps working. Messages say what went wrong and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShoveError {
    /// A payload could not be encoded or decoded as JSON.
    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The broker could not be reached or the connection broke. The only retryable kind.
    #[error("connection error: {0}")]
    Connection(String),
    /// A queue, stream or topic is missing or misconfigured, or a consumer was registered wrongly.
    #[error("topology error: {0}")]
    Topology(String),
    /// The caller passed something shove refuses (a reserved header, an oversize message, bad config).
    #[error("validation error: {0}")]
    Validation(String),
    /// A non-JSON codec failed to encode or decode.
    #[error("codec error in {codec}: {source}")]
    Codec {
        /// The codec's [`Codec::NAME`](crate::Codec::NAME).
        codec: &'static str,
        /// What the codec reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else a backend reported.
    #[error("unknown backend error: {0}")]
    Unknown(String),
}

impl ShoveError {
    /// Whether trying the same call again may succeed: true only for [`ShoveError::Connection`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, ShoveError::Connection(_))
    }
}

/// `Result` with [`ShoveError`] as the error.
pub type Result<T> = std::result::Result<T, ShoveError>;

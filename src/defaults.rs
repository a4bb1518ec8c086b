//! The crate's default consumer limits (spec §16), below the engine so that the engine and the public
//! options read the same values.

use std::time::Duration;

/// Default largest payload a consumer accepts (10 MiB); larger ones are dead-lettered as `oversize`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Default handler timeout (30 s); a handler that takes longer counts as a retry.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on messages buffered per key by a sequenced consumer (1000).
pub const DEFAULT_MAX_PENDING_PER_KEY: usize = 1_000;

/// `limit` as a per-key buffer bound.
///
/// # Panics
///
/// When `limit` is 0: a sequenced consumer could then buffer nothing behind a key's message in flight and
/// would hand every later message of a busy key back, forever (contract rule 21).
pub(crate) fn checked_max_pending_per_key(limit: usize) -> usize {
    assert!(
        limit > 0,
        "max_pending_per_key must be at least 1 (0 would hand every later message of a busy key back forever); use without_max_pending_per_key() for no bound"
    );
    limit
}

//! Building outbound envelopes: message ids, sequence keys, header validation.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Result, ShoveError};
use crate::topic::Topic;
use crate::transport::{Envelope, MessageId, headers};

/// Rejects user header keys that start with a reserved prefix (contract rule 2).
pub(crate) fn validate_user_headers(user: &HashMap<String, String>) -> Result<()> {
    for key in user.keys() {
        let lower = key.to_ascii_lowercase();
        if headers::RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return Err(ShoveError::Validation(format!("header '{key}' uses a reserved prefix")));
        }
    }
    Ok(())
}

/// A new envelope for a freshly published message of topic `T`.
pub(crate) fn outbound<T: Topic>(
    payload: Vec<u8>,
    message: &T::Message,
    user_headers: Arc<HashMap<String, String>>,
) -> Result<Envelope> {
    let sequence_key = T::SEQUENCE_KEY_FN.map(|key_of| Arc::<str>::from(key_of(message)));
    Ok(Envelope {
        payload,
        message_id: new_message_id(),
        retry_count: 0,
        sequence_key,
        headers: user_headers,
        death: None,
    })
}

thread_local! {
    // One empty header map per thread, shared by every message published without headers.
    static NO_HEADERS: Arc<HashMap<String, String>> = Arc::default();

    // xorshift128+ state, seeded once per thread from the OS RNG.
    static RNG: Cell<(u64, u64)> = Cell::new(seed());
}

/// The shared empty header map.
pub(crate) fn no_headers() -> Arc<HashMap<String, String>> {
    NO_HEADERS.with(Arc::clone)
}

fn seed() -> (u64, u64) {
    let v = uuid::Uuid::new_v4().as_u128();
    ((v >> 64) as u64 | 1, v as u64 | 1)
}

fn next_u128() -> u128 {
    RNG.with(|cell| {
        let (mut s0, mut s1) = cell.get();
        let mut out = 0u128;
        for _ in 0..2 {
            let mut x = s0;
            let y = s1;
            s0 = y;
            x ^= x << 23;
            s1 = x ^ y ^ (x >> 17) ^ (y >> 26);
            out = (out << 64) | u128::from(s1.wrapping_add(y));
        }
        cell.set((s0, s1));
        out
    })
}

/// A random (version 4) UUID as the message id. Uses a per-thread generator seeded from the OS, because
/// asking the OS for every message would cost more than the rest of the publish path.
pub(crate) fn new_message_id() -> MessageId {
    MessageId::Uuid(uuid::Builder::from_random_bytes(next_u128().to_le_bytes()).into_uuid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v4_uuids_and_distinct() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a.to_string()).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn reserved_prefixes_are_rejected_case_insensitively() {
        for key in [
            "x-retry-count",
            "X-Message-Id",
            "x-death-reason",
            "X-DEATH",
            "x-sequence-key-2",
        ] {
            let h = HashMap::from([(key.to_string(), "v".to_string())]);
            let err = validate_user_headers(&h).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("validation error: header '{key}' uses a reserved prefix")
            );
        }
        let ok = HashMap::from([("x-tenant".to_string(), "a".to_string())]);
        assert!(validate_user_headers(&ok).is_ok());
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn message_ids_read_as_uuid_text() {
        for _ in 0..100 {
            let id = new_message_id();
            let MessageId::Uuid(u) = &id else { panic!("a UUID id") };
            assert_eq!(id.to_text(), u.hyphenated().to_string());
            assert_eq!(id.to_string(), id.to_text());
        }
    }
}

//! Message ids and the empty header map: what every publish path and every transport stamps or shares.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use super::MessageId;

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

/// A random number from the per-thread generator (not for secrets): for jitter.
pub(crate) fn random_u64() -> u64 {
    next_u128() as u64
}

/// A random (version 4) UUID as the message id. Uses a per-thread generator seeded from the OS, because
/// asking the OS for every message would cost more than the rest of the publish path.
pub(crate) fn new_message_id() -> MessageId {
    MessageId::Uuid(uuid::Builder::from_random_bytes(next_u128().to_le_bytes()).into_uuid())
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

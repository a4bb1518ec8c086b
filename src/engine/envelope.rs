//! Building outbound envelopes: message ids, sequence keys, header validation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Result, ShoveError};
use crate::topic::Topic;
use crate::transport::{Envelope, is_reserved, new_message_id};

/// Rejects user header keys that start with a reserved prefix (contract rule 2).
pub(crate) fn validate_user_headers(user: &HashMap<String, String>) -> Result<()> {
    for key in user.keys() {
        if is_reserved(key) {
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

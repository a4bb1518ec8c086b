//! The envelope's bookkeeping on the wire, written once for every transport that stores it as named
//! headers or fields: each backend gives a table of its names ([`WireNames`]), and [`WireNames::encode`]
//! and [`Decoder`] do the rest, so that every backend writes and reads the same fields the same way.

use std::collections::HashMap;
use std::sync::Arc;

#[cfg(test)]
use super::is_reserved;
use super::{Death, Envelope, MessageId, new_message_id, no_headers, reasons};

/// One backend's names for the envelope's bookkeeping fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireNames {
    /// The message id.
    pub message_id: &'static str,
    /// A name the message id may also arrive under from another publisher (NATS: `Nats-Msg-Id`), read
    /// when `message_id` is absent.
    pub message_id_fallback: Option<&'static str>,
    /// Retries before this delivery.
    pub retry_count: &'static str,
    /// The ordering key of a sequenced message.
    pub sequence_key: &'static str,
    /// Why the message was dead-lettered.
    pub death_reason: &'static str,
    /// How many times it was dead-lettered.
    pub death_count: &'static str,
    /// The queue it was dead-lettered from.
    pub original_queue: &'static str,
}

/// The names handlers see in `MessageMetadata::headers`, and the ones shove 0.11 writes on RabbitMQ and
/// Redis.
pub(crate) const X_NAMES: WireNames = WireNames {
    message_id: "x-message-id",
    message_id_fallback: None,
    retry_count: "x-retry-count",
    sequence_key: "x-sequence-key",
    death_reason: "x-death-reason",
    death_count: "x-death-count",
    original_queue: "x-original-queue",
};

/// A bookkeeping value as [`WireNames::encode`] hands it to a backend, which stores it its own way (a
/// string header, an integer field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireValue<'a> {
    /// Text.
    Text(&'a str),
    /// A count.
    Count(u32),
}

impl WireNames {
    /// Calls `put` with each bookkeeping field of `env`, the message id first, then the retry count
    /// (left out when it is 0 and `omit_zero_retry` is set: a first attempt then costs one field less),
    /// the sequence key and the death record. User headers are the backend's to write: their naming
    /// differs (a prefix on Redis, escaping on NATS).
    pub fn encode(&self, env: &Envelope, omit_zero_retry: bool, mut put: impl FnMut(&'static str, WireValue<'_>)) {
        put(self.message_id, WireValue::Text(&env.message_id.to_text()));
        if env.retry_count > 0 || !omit_zero_retry {
            put(self.retry_count, WireValue::Count(env.retry_count));
        }
        if let Some(key) = &env.sequence_key {
            put(self.sequence_key, WireValue::Text(key));
        }
        if let Some(d) = &env.death {
            put(self.death_reason, WireValue::Text(d.reason));
            put(self.death_count, WireValue::Count(d.count));
            put(self.original_queue, WireValue::Text(&d.original_queue));
        }
    }

    /// A decoder for deliveries that carry these names.
    pub fn decoder(&'static self) -> Decoder {
        Decoder {
            names: self,
            id: None,
            fallback_id: None,
            retry_count: 0,
            sequence_key: None,
            death_reason: None,
            death_count: None,
            original_queue: None,
            user: HashMap::new(),
        }
    }
}

/// The reason named `text`, as read back from a broker (`"unknown"` for one shove never writes).
fn reason_named(text: &str) -> &'static str {
    [
        reasons::REJECTED,
        reasons::MAX_RETRIES_EXCEEDED,
        reasons::OVERSIZE,
        reasons::DESERIALIZE,
        reasons::SEQUENCE_POISONED,
    ]
    .into_iter()
    .find(|r| *r == text)
    .unwrap_or("unknown")
}

/// Rebuilds an envelope from a delivery's fields, in whatever order they come.
pub(crate) struct Decoder {
    names: &'static WireNames,
    id: Option<MessageId>,
    fallback_id: Option<MessageId>,
    retry_count: u32,
    sequence_key: Option<Arc<str>>,
    death_reason: Option<&'static str>,
    death_count: Option<u32>,
    original_queue: Option<String>,
    user: HashMap<String, String>,
}

impl Decoder {
    /// Takes a field if it is one of the table's; returns false otherwise (a user header, or the
    /// broker's own, for the backend to sort). `value` is called only for a field it takes.
    pub fn field<'v>(&mut self, name: &str, value: impl FnOnce() -> std::borrow::Cow<'v, str>) -> bool {
        let n = self.names;
        if name == n.message_id {
            self.id = Some(MessageId::parse(&value()));
        } else if name == n.retry_count {
            // An unreadable count reads as 0: the message is handled rather than lost.
            self.retry_count = value().trim().parse().unwrap_or(0);
        } else if name == n.sequence_key {
            self.sequence_key = Some(Arc::from(value()));
        } else if name == n.death_reason {
            self.death_reason = Some(reason_named(&value()));
        } else if name == n.death_count {
            self.death_count = value().trim().parse().ok();
        } else if name == n.original_queue {
            self.original_queue = Some(value().into_owned());
        } else if Some(name) == n.message_id_fallback {
            self.fallback_id = Some(MessageId::parse(&value()));
        } else {
            return false;
        }
        true
    }

    /// Adds a user header.
    pub fn user(&mut self, name: String, value: String) {
        self.user.insert(name, value);
    }

    /// The envelope of `payload`. A message from another publisher that carries no id gets a new one
    /// now, which its retries keep.
    pub fn finish(self, payload: Vec<u8>) -> Envelope {
        Envelope {
            payload,
            message_id: self.id.or(self.fallback_id).unwrap_or_else(new_message_id),
            retry_count: self.retry_count,
            sequence_key: self.sequence_key,
            headers: if self.user.is_empty() {
                no_headers()
            } else {
                Arc::new(self.user)
            },
            death: self.death_reason.map(|reason| {
                Box::new(Death {
                    reason,
                    original_queue: Arc::from(self.original_queue.unwrap_or_default()),
                    count: self.death_count.unwrap_or(1),
                })
            }),
        }
    }
}

/// Escapes what a header name or value may not contain on brokers whose headers are restricted text
/// (NATS; SQS attribute names next): `%`, control characters, and in names `:`, spaces and non-ASCII, as
/// `%XX` per UTF-8 byte. [`percent_unescape`] reverses it.
#[cfg(header_escaping)]
pub(crate) fn percent_escape(s: &str, name: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || (name && (c == ':' || c == ' ')) || c.is_control() || (name && !c.is_ascii()) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`percent_escape`]; text without `%` is borrowed as it is.
#[cfg(header_escaping)]
pub(crate) fn percent_unescape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    static NATS_LIKE: WireNames = WireNames {
        message_id: "Shove-Message-Id",
        message_id_fallback: Some("Nats-Msg-Id"),
        ..X_NAMES
    };

    fn sample() -> Envelope {
        Envelope {
            payload: vec![1, 2, 3],
            message_id: new_message_id(),
            retry_count: 2,
            sequence_key: Some(Arc::from("acct-1")),
            headers: Arc::new(HashMap::from([("tenant".to_string(), "acme".to_string())])),
            death: Some(Box::new(Death {
                reason: reasons::REJECTED,
                original_queue: Arc::from("orders"),
                count: 3,
            })),
        }
    }

    fn round_trip(names: &'static WireNames, env: &Envelope, omit_zero_retry: bool) -> Envelope {
        let mut fields: Vec<(&'static str, String)> = Vec::new();
        names.encode(env, omit_zero_retry, |k, v| {
            fields.push((
                k,
                match v {
                    WireValue::Text(t) => t.to_string(),
                    WireValue::Count(n) => n.to_string(),
                },
            ))
        });
        let mut d = names.decoder();
        // Order does not matter.
        for (k, v) in fields.iter().rev() {
            assert!(d.field(k, || Cow::Borrowed(v.as_str())), "{k} is a table name");
        }
        for (k, v) in env.headers.iter() {
            assert!(!d.field(k, || Cow::Borrowed(v.as_str())));
            d.user(k.clone(), v.clone());
        }
        d.finish(env.payload.clone())
    }

    #[test]
    fn envelopes_round_trip_through_every_table() {
        for names in [&X_NAMES, &NATS_LIKE] {
            let env = sample();
            let back = round_trip(names, &env, true);
            assert_eq!(back.message_id, env.message_id);
            assert_eq!(back.retry_count, 2);
            assert_eq!(back.sequence_key, env.sequence_key);
            assert_eq!(back.death, env.death);
            assert_eq!(*back.headers, *env.headers);
            assert_eq!(back.payload, env.payload);
        }
    }

    #[test]
    fn a_zero_retry_count_is_left_out_only_when_asked() {
        let mut env = sample();
        env.retry_count = 0;
        let mut names = Vec::new();
        X_NAMES.encode(&env, true, |k, _| names.push(k));
        assert!(!names.contains(&"x-retry-count"));
        names.clear();
        X_NAMES.encode(&env, false, |k, _| names.push(k));
        assert!(names.contains(&"x-retry-count"));
    }

    #[test]
    fn the_fallback_id_is_read_when_the_id_is_missing() {
        let id = new_message_id();
        let mut d = NATS_LIKE.decoder();
        assert!(d.field("Nats-Msg-Id", || Cow::Owned(id.to_text())));
        assert_eq!(d.finish(Vec::new()).message_id, id);
        // Present, the id wins over the fallback.
        let mut d = NATS_LIKE.decoder();
        assert!(d.field("Nats-Msg-Id", || Cow::Borrowed("other")));
        assert!(d.field("Shove-Message-Id", || Cow::Owned(id.to_text())));
        assert_eq!(d.finish(Vec::new()).message_id, id);
    }

    #[test]
    fn unreadable_counts_and_unknown_reasons_do_not_lose_the_message() {
        let mut d = X_NAMES.decoder();
        assert!(d.field("x-retry-count", || Cow::Borrowed("lots")));
        assert!(d.field("x-death-reason", || Cow::Borrowed("from-elsewhere")));
        let env = d.finish(vec![9]);
        assert_eq!(env.retry_count, 0);
        let death = env.death.expect("a death record");
        assert_eq!((death.reason, death.count), ("unknown", 1));
    }

    #[test]
    fn every_written_name_is_reserved_case_insensitively() {
        for names in [&X_NAMES, &NATS_LIKE] {
            let mut written = Vec::new();
            names.encode(&sample(), false, |k, _| written.push(k));
            written.extend(names.message_id_fallback);
            for name in written {
                assert!(is_reserved(name), "{name}");
                assert!(is_reserved(&name.to_ascii_uppercase()), "{name}");
            }
        }
        for user in ["tenant", "x-tenant", "shove", "nats", "x-deat"] {
            assert!(!is_reserved(user), "{user}");
        }
    }

    #[test]
    #[cfg(header_escaping)]
    fn header_escaping_round_trips() {
        for s in ["plain", "with space", "a:b", "100%", "line\nbreak", "ünï"] {
            assert_eq!(percent_unescape(&percent_escape(s, true)), s);
            assert_eq!(percent_unescape(&percent_escape(s, false)), s);
        }
        assert!(!percent_escape("a:b c", true).contains([':', ' ']));
    }
}

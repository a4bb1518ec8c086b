//! The topic-definition macros.

/// Defines a unit struct implementing [`Topic`](crate::Topic).
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use shove::{define_topic, Topic, TopologyBuilder};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct OrderPaid { id: u64 }
///
/// define_topic!(pub Orders, OrderPaid, TopologyBuilder::new("orders").dlq().build());
/// define_topic!(Raw, Vec<u8>, TopologyBuilder::new("raw").build(), codec = shove::RawBytesCodec);
/// assert_eq!(Orders::topology().queue(), "orders");
/// ```
#[macro_export]
macro_rules! define_topic {
    ($vis:vis $name:ident, $message:ty, $topology:expr) => {
        $crate::define_topic!($vis $name, $message, $topology, codec = $crate::JsonCodec);
    };
    ($vis:vis $name:ident, $message:ty, $topology:expr, codec = $codec:ty) => {
        $vis struct $name;
        impl $crate::Topic for $name {
            type Message = $message;
            type Codec = $codec;
            fn topology() -> &'static $crate::QueueTopology {
                static TOPOLOGY: ::std::sync::OnceLock<$crate::QueueTopology> = ::std::sync::OnceLock::new();
                TOPOLOGY.get_or_init(|| $topology)
            }
        }
    };
}

/// Defines a unit struct implementing [`Topic`](crate::Topic) and [`SequencedTopic`](crate::SequencedTopic).
///
/// The key function must not capture variables (it becomes a `fn` pointer).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use shove::{define_sequenced_topic, SequenceFailure, SequencedTopic, TopologyBuilder};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct LedgerEntry { account_id: String }
///
/// define_sequenced_topic!(pub Ledger, LedgerEntry, |msg| msg.account_id.clone(),
///     TopologyBuilder::new("ledger").sequenced(SequenceFailure::FailAll)
///         .hold_queue(Duration::from_secs(5)).dlq().build());
/// let e = LedgerEntry { account_id: "acc-1".into() };
/// assert_eq!(Ledger::sequence_key(&e), "acc-1");
/// ```
#[macro_export]
macro_rules! define_sequenced_topic {
    ($vis:vis $name:ident, $message:ty, $key_fn:expr, $topology:expr) => {
        $crate::define_sequenced_topic!($vis $name, $message, $key_fn, $topology, codec = $crate::JsonCodec);
    };
    ($vis:vis $name:ident, $message:ty, $key_fn:expr, $topology:expr, codec = $codec:ty) => {
        $vis struct $name;
        impl $crate::Topic for $name {
            type Message = $message;
            type Codec = $codec;
            fn topology() -> &'static $crate::QueueTopology {
                static TOPOLOGY: ::std::sync::OnceLock<$crate::QueueTopology> = ::std::sync::OnceLock::new();
                TOPOLOGY.get_or_init(|| $topology)
            }
            const SEQUENCE_KEY_FN: ::std::option::Option<fn(&$message) -> ::std::string::String> =
                ::std::option::Option::Some(<Self as $crate::SequencedTopic>::sequence_key);
        }
        impl $crate::SequencedTopic for $name {
            fn sequence_key(message: &$message) -> ::std::string::String {
                const SEQUENCE_KEY_FN_MUST_NOT_CAPTURE_VARIABLES: fn(&$message) -> ::std::string::String = $key_fn;
                SEQUENCE_KEY_FN_MUST_NOT_CAPTURE_VARIABLES(message)
            }
        }
    };
}

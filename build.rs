//! Names the backend feature sets once, as cfg aliases, so that core files never list backend features:
//!
//! - `any_backend`: some backend is compiled in (a broker's, or the in-process one);
//! - `broker_backend`: some backend that talks to a broker over the network is compiled in;
//! - one alias per piece of the transport toolkit that only some backends use (`client_sharding`:
//!   the client picks a sequenced message's shard; `due_time_holds`: delayed copies carry their due
//!   time and a mover brings them back; `shard_lease`: one subscription at a time reads a shard, under a
//!   lease kept on the broker; `header_escaping`: header names and values are restricted text, so
//!   what they may not contain is percent-escaped).
//!
//! A new backend adds one row to [`BACKENDS`], and nothing in the core.

/// Each backend: its Cargo feature (as `CARGO_FEATURE_*` spells it), whether it talks to a broker, and
/// the toolkit pieces it uses.
const BACKENDS: &[(&str, bool, &[&str])] = &[
    ("INMEMORY", false, &["client_sharding"]),
    ("RABBITMQ", true, &[]),
    (
        "REDIS_STREAMS",
        true,
        &["client_sharding", "due_time_holds", "shard_lease"],
    ),
    (
        "NATS",
        true,
        &["client_sharding", "due_time_holds", "shard_lease", "header_escaping"],
    ),
];

/// Every alias this script may set.
const ALIASES: [&str; 6] = [
    "any_backend",
    "broker_backend",
    "client_sharding",
    "due_time_holds",
    "shard_lease",
    "header_escaping",
];

fn main() {
    for alias in ALIASES {
        println!("cargo::rustc-check-cfg=cfg({alias})");
    }
    let mut set: Vec<&str> = Vec::new();
    for (feature, broker, pieces) in BACKENDS {
        if std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_none() {
            continue;
        }
        set.push("any_backend");
        if *broker {
            set.push("broker_backend");
        }
        set.extend(pieces.iter().copied());
    }
    set.sort_unstable();
    set.dedup();
    for alias in set {
        println!("cargo::rustc-cfg={alias}");
    }
}

// The one workload every stress run and bench uses, so their figures compare: the same message, built the
// same way, everywhere. Included as a module with `#[path]` by `examples/{rabbitmq,redis,nats}_stress.rs` and
// `benches/{inmemory,brokers}.rs`, and with `include!` by `examples/inmemory_stress.rs` (which keeps `Event`
// in that crate's root module: as a submodule it cost about 170 more instructions per message under
// callgrind). `benches/reference/` builds `examples/inmemory_stress.rs` against the published shove, and
// `include!` resolves relative to that file, so this file must depend on nothing but serde; hence no
// `run_id()` here (uuid). Plain `//` comments, since `include!` does not take inner doc comments.

use serde::{Deserialize, Serialize};

/// About 110 bytes of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub user: String,
    pub kind: String,
    pub amount_cents: u64,
    pub currency: String,
    pub ts: i64,
}

/// The i-th message: 1,000 distinct users, a fixed kind, amount and currency, and a timestamp that grows by
/// one per message.
pub fn event(i: u64) -> Event {
    Event {
        id: i,
        user: format!("user-{:06}", i % 1000),
        kind: "order.paid".into(),
        amount_cents: 129_900,
        currency: "EUR".into(),
        ts: 1_764_337_000_000 + i as i64,
    }
}

//! Names the backend feature sets once, as cfg aliases, so that core files never list backend features:
//!
//! - `broker_backend`: some backend that talks to a broker over the network is compiled in;
//! - `any_backend`: some backend is compiled in (a broker's, or the in-process one).
//!
//! A new backend adds its feature to the list below, and nowhere else in the core.

/// Features of the backends that talk to a broker (Cargo's `CARGO_FEATURE_*` spelling).
const BROKER_BACKENDS: [&str; 3] = ["RABBITMQ", "REDIS_STREAMS", "NATS"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(broker_backend)");
    println!("cargo::rustc-check-cfg=cfg(any_backend)");
    let enabled = |feature: &str| std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some();
    let broker = BROKER_BACKENDS.iter().any(|f| enabled(f));
    if broker {
        println!("cargo::rustc-cfg=broker_backend");
    }
    if broker || enabled("INMEMORY") {
        println!("cargo::rustc-cfg=any_backend");
    }
}

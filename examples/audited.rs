//! Audit trails: every delivery attempt of an audited handler becomes an `AuditRecord` on the `AuditLog`
//! topic, where an ordinary consumer reads it.
//!
//! Three payments are published. The first succeeds, the second (published with an `x-trace-id` header)
//! fails once and succeeds on retry, the third is rejected. That makes four attempts, so four audit
//! records; the audit consumer prints each one's trace id, outcome and duration.
//!
//! Needs the `audit` feature: `cargo run --example audited --features audit`. Exits 0 when the four
//! expected records arrive, 1 otherwise, and 2 (after printing a hint) when built without the feature.

#[cfg(feature = "audit")]
#[tokio::main]
async fn main() -> shove::error::Result<()> {
    demo::run().await
}

#[cfg(not(feature = "audit"))]
fn main() {
    eprintln!("this example needs the `audit` feature; run it with:\n    cargo run --example audited --features audit");
    std::process::exit(2);
}

#[cfg(feature = "audit")]
mod demo {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use shove::inmemory::InMemoryConfig;
    use shove::{
        AuditLog, AuditRecord, Broker, ConsumerOptions, InMemory, MessageHandler, MessageHandlerExt, MessageMetadata,
        Outcome, ShoveAuditHandler, TopologyBuilder, define_topic,
    };
    use tokio::sync::Notify;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Payment {
        id: u32,
        amount_cents: u64,
    }

    define_topic!(
        Payments,
        Payment,
        TopologyBuilder::new("payments")
            .hold_queue(Duration::from_millis(100))
            .dlq()
            .build()
    );

    /// The trace id given to payment #2 by its publisher.
    const TRACE_ID: &str = "checkout-42";
    /// Attempts the three payments make: #1 once, #2 twice, #3 once.
    const EXPECTED_RECORDS: usize = 4;

    /// The business handler. It knows nothing about auditing.
    struct Charge;

    impl MessageHandler<Payments> for Charge {
        type Context = ();

        async fn handle(&self, payment: Payment, meta: MessageMetadata, _: &()) -> Outcome {
            // Pretend to call a payment provider.
            tokio::time::sleep(Duration::from_millis(15)).await;
            let outcome = match payment.id {
                2 if meta.retry_count == 0 => Outcome::Retry,
                3 => Outcome::Reject,
                _ => Outcome::Ack,
            };
            println!(
                "handle  payment #{} attempt {} -> {outcome:?}",
                payment.id,
                meta.retry_count + 1
            );
            outcome
        }
    }

    /// Reads the audit log. A plain handler of the `AuditLog` topic; it is never audited itself.
    struct AuditPrinter {
        seen: Arc<Mutex<Vec<AuditRecord<serde_json::Value>>>>,
        enough: Arc<Notify>,
    }

    impl MessageHandler<AuditLog> for AuditPrinter {
        type Context = ();

        async fn handle(&self, record: AuditRecord<serde_json::Value>, _: MessageMetadata, _: &()) -> Outcome {
            println!(
                "audit   trace_id={} topic={} outcome={:?} duration={} ms attempt={} payload={}",
                record.trace_id,
                record.topic,
                record.outcome,
                record.duration_ms,
                record.metadata.retry_count + 1,
                record.payload
            );
            let mut seen = self.seen.lock().expect("records lock");
            seen.push(record);
            if seen.len() == EXPECTED_RECORDS {
                self.enough.notify_one();
            }
            Outcome::Ack
        }
    }

    pub async fn run() -> shove::error::Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare::<Payments>().await?;
        broker.topology().declare::<AuditLog>().await?;
        let publisher = broker.publisher().await?;

        publisher
            .publish::<Payments>(&Payment {
                id: 1,
                amount_cents: 1_999,
            })
            .await?;
        publisher
            .publish_with_headers::<Payments>(
                &Payment {
                    id: 2,
                    amount_cents: 4_500,
                },
                HashMap::from([("x-trace-id".to_string(), TRACE_ID.to_string())]),
            )
            .await?;
        publisher
            .publish::<Payments>(&Payment { id: 3, amount_cents: 0 })
            .await?;
        println!("publish payments #1, #2 (x-trace-id {TRACE_ID}), #3");

        let seen = Arc::new(Mutex::new(Vec::new()));
        let enough = Arc::new(Notify::new());
        let mut consumers = broker.consumer_supervisor();
        // The audited handler publishes one record per attempt to AuditLog through the same publisher.
        consumers.register::<Payments, _>(
            Charge.audited(ShoveAuditHandler::for_publisher(&publisher)),
            ConsumerOptions::new().with_max_retries(2),
        )?;
        consumers.register::<AuditLog, _>(
            AuditPrinter {
                seen: seen.clone(),
                enough: enough.clone(),
            },
            ConsumerOptions::new(),
        )?;

        // Stop once the expected records arrived, or after 10 s if something went wrong.
        let finished = async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), enough.notified()).await;
        };
        let outcome = consumers.run_until_timeout(finished, Duration::from_secs(5)).await;
        broker.close().await;

        let failures = check(&seen.lock().expect("records lock"), outcome.exit_code());
        if failures.is_empty() {
            println!("done: {EXPECTED_RECORDS} audit records, one per attempt; exit code 0");
            Ok(())
        } else {
            for f in &failures {
                eprintln!("FAILED: {f}");
            }
            std::process::exit(1);
        }
    }

    /// Checks the records; returns what went wrong.
    fn check(records: &[AuditRecord<serde_json::Value>], exit_code: i32) -> Vec<String> {
        let mut failures = Vec::new();
        if records.len() != EXPECTED_RECORDS {
            failures.push(format!("{} audit records, expected {EXPECTED_RECORDS}", records.len()));
        }
        let outcomes_of = |id: u64| -> Vec<String> {
            records
                .iter()
                .filter(|r| r.payload["id"] == id)
                .map(|r| format!("{:?}", r.outcome))
                .collect()
        };
        for (id, expected) in [(1, vec!["Ack"]), (2, vec!["Retry", "Ack"]), (3, vec!["Reject"])] {
            let got = outcomes_of(id);
            if got != expected {
                failures.push(format!(
                    "payment #{id}: audited outcomes {got:?}, expected {expected:?}"
                ));
            }
        }
        // Payment #2 carries the publisher's trace id on both attempts; the others use their message id.
        for r in records {
            let id = &r.payload["id"];
            let expected = if *id == 2 {
                TRACE_ID
            } else {
                r.metadata.delivery_id.as_str()
            };
            if r.trace_id != expected {
                failures.push(format!("payment #{id}: trace_id {}, expected {expected}", r.trace_id));
            }
        }
        if exit_code != 0 {
            failures.push(format!("supervisor exit code {exit_code}"));
        }
        failures
    }
}

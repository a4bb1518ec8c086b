//! Per-key ordering: a ledger whose entries must be applied in order per account.
//!
//! Three accounts get four entries each. Entry #2 of account `acc-B` fails on its first attempt and waits
//! out a 300 ms retry delay. While it waits, `acc-B`'s later entries wait behind it, and the other two
//! accounts carry on. At the end the example checks that every account saw its entries in publish order
//! and that the other accounts made progress while `acc-B` was blocked.
//!
//! Run with `cargo run --example sequenced`. Exits 0 when every check passes, 1 otherwise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shove::inmemory::InMemoryConfig;
use shove::{
    Broker, ConsumerOptions, InMemory, MessageHandler, MessageMetadata, Outcome, SequenceFailure, TopologyBuilder,
    define_sequenced_topic,
};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LedgerEntry {
    account: String,
    /// Position of the entry within its account (1, 2, 3, ...).
    seq: u32,
    amount: i64,
}

// One key per account: entries of the same account are handled one at a time, in publish order.
define_sequenced_topic!(
    Ledger,
    LedgerEntry,
    |entry| entry.account.clone(),
    TopologyBuilder::new("ledger")
        .sequenced(SequenceFailure::Skip)
        .hold_queue(Duration::from_millis(300))
        .dlq()
        .build()
);

const ACCOUNTS: [&str; 3] = ["acc-A", "acc-B", "acc-C"];
const ENTRIES_PER_ACCOUNT: u32 = 4;
/// The entry that fails once: (account, seq).
const FLAKY: (&str, u32) = ("acc-B", 2);

/// One handler call, as the example saw it.
#[derive(Debug, Clone)]
struct Event {
    account: String,
    seq: u32,
    attempt: u32,
    acked: bool,
}

#[derive(Default)]
struct Journal {
    events: Vec<Event>,
    balances: BTreeMap<String, i64>,
    applied: usize,
}

struct LedgerHandler {
    journal: Arc<Mutex<Journal>>,
    started: Instant,
    all_applied: Arc<Notify>,
}

impl MessageHandler<Ledger> for LedgerHandler {
    type Context = ();

    async fn handle(&self, entry: LedgerEntry, meta: MessageMetadata, _: &()) -> Outcome {
        // A little simulated work, so that several accounts are visibly in progress at once.
        tokio::time::sleep(Duration::from_millis(10)).await;

        let attempt = meta.retry_count + 1;
        let fails = (entry.account.as_str(), entry.seq) == FLAKY && meta.retry_count == 0;
        let ms = self.started.elapsed().as_millis();
        let mut journal = self.journal.lock().expect("journal lock");
        journal.events.push(Event {
            account: entry.account.clone(),
            seq: entry.seq,
            attempt,
            acked: !fails,
        });
        if fails {
            println!(
                "{ms:>5} ms  {} #{} attempt {attempt}: failed -> Retry (waits 300 ms; {}'s later entries wait too)",
                entry.account, entry.seq, entry.account
            );
            return Outcome::Retry;
        }
        let balance = journal.balances.entry(entry.account.clone()).or_default();
        *balance += entry.amount;
        println!(
            "{ms:>5} ms  {} #{} attempt {attempt}: applied {:+} -> balance {}",
            entry.account, entry.seq, entry.amount, balance
        );
        journal.applied += 1;
        if journal.applied == ACCOUNTS.len() * ENTRIES_PER_ACCOUNT as usize {
            self.all_applied.notify_one();
        }
        Outcome::Ack
    }
}

#[tokio::main]
async fn main() -> shove::error::Result<()> {
    let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
    broker.topology().declare::<Ledger>().await?;

    // Publish the entries interleaved across accounts: A1 B1 C1 A2 B2 C2 ...
    let publisher = broker.publisher().await?;
    for seq in 1..=ENTRIES_PER_ACCOUNT {
        for account in ACCOUNTS {
            let amount = i64::from(seq) * 10;
            publisher
                .publish::<Ledger>(&LedgerEntry {
                    account: account.to_string(),
                    seq,
                    amount,
                })
                .await?;
        }
    }
    println!(
        "published {} entries for {} accounts",
        ACCOUNTS.len() as u32 * ENTRIES_PER_ACCOUNT,
        ACCOUNTS.len()
    );

    let journal = Arc::new(Mutex::new(Journal::default()));
    let all_applied = Arc::new(Notify::new());
    let mut consumers = broker.consumer_supervisor();
    consumers
        .register_fifo::<Ledger, _>(
            LedgerHandler {
                journal: journal.clone(),
                started: Instant::now(),
                all_applied: all_applied.clone(),
            },
            ConsumerOptions::new().with_max_retries(3),
        )
        .await?;

    // Stop once every entry is applied, or after 10 s if something went wrong.
    let finished = async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), all_applied.notified()).await;
    };
    let outcome = consumers.run_until_timeout(finished, Duration::from_secs(5)).await;
    broker.close().await;

    let journal = journal.lock().expect("journal lock");
    let mut failures = check(&journal.events);
    if outcome.exit_code() != 0 {
        failures.push(format!("supervisor exit code {}", outcome.exit_code()));
    }
    if failures.is_empty() {
        println!("done: every account applied its entries in order; exit code 0");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// Checks the journal; returns what went wrong.
fn check(events: &[Event]) -> Vec<String> {
    let mut failures = Vec::new();

    // 1. Per account, the applied entries are exactly 1, 2, ..., N in that order.
    for account in ACCOUNTS {
        let applied: Vec<u32> = events
            .iter()
            .filter(|e| e.account == account && e.acked)
            .map(|e| e.seq)
            .collect();
        let expected: Vec<u32> = (1..=ENTRIES_PER_ACCOUNT).collect();
        if applied == expected {
            println!("check: {account} applied {applied:?} (publish order)");
        } else {
            failures.push(format!("{account} applied {applied:?}, expected {expected:?}"));
        }
    }

    // 2. The flaky entry ran twice; between its two attempts, its account was blocked while the other
    //    accounts made progress.
    let is_flaky = |e: &Event| (e.account.as_str(), e.seq) == FLAKY;
    let attempts: Vec<usize> = (0..events.len()).filter(|&i| is_flaky(&events[i])).collect();
    let [first, second] = attempts[..] else {
        failures.push(format!(
            "{} #{} ran {} times, expected 2",
            FLAKY.0,
            FLAKY.1,
            attempts.len()
        ));
        return failures;
    };
    if events[first].attempt != 1 || events[second].attempt != 2 || !events[second].acked {
        failures.push(format!(
            "{} #{}: unexpected attempts {:?}",
            FLAKY.0,
            FLAKY.1,
            [&events[first], &events[second]]
        ));
    }
    let meanwhile = &events[first + 1..second];
    let same_account = meanwhile.iter().filter(|e| e.account == FLAKY.0).count();
    let others = meanwhile.len() - same_account;
    if same_account > 0 {
        failures.push(format!(
            "{} had {same_account} entries handled while #{} waited for its retry",
            FLAKY.0, FLAKY.1
        ));
    }
    if others == 0 {
        failures.push(format!(
            "no other account made progress while {} #{} waited",
            FLAKY.0, FLAKY.1
        ));
    } else {
        println!(
            "check: while {} #{} waited for its retry, {others} entries of other accounts were applied and none of {}",
            FLAKY.0, FLAKY.1, FLAKY.0
        );
    }
    failures
}

//! Delayed redelivery for the whole broker: one task and one heap, not one sleeping task per message,
//! so a million pending retries cost memory, not a million tasks.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Queue, Stored};

struct Entry {
    due: Instant,
    seq: u64,
    queue: Arc<Queue>,
    stored: Stored,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest (then the first scheduled) on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.due.cmp(&self.due).then_with(|| other.seq.cmp(&self.seq))
    }
}

pub(super) struct Timer {
    heap: Mutex<BinaryHeap<Entry>>,
    changed: Notify,
    seq: AtomicU64,
    started: AtomicBool,
    shutdown: CancellationToken,
}

impl Timer {
    pub fn new(shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Notify::new(),
            seq: AtomicU64::new(0),
            started: AtomicBool::new(false),
            shutdown,
        })
    }

    fn heap(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Entry>> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers `stored` to `queue` at `due`, in scheduling order among equal deadlines.
    pub fn schedule(self: &Arc<Self>, due: Instant, queue: Arc<Queue>, stored: Stored) {
        if !self.started.swap(true, AtomicOrdering::AcqRel) {
            // Started on first use, from inside the runtime that settles the message.
            tokio::spawn(self.clone().run());
        }
        let seq = self.seq.fetch_add(1, AtomicOrdering::Relaxed);
        let mut heap = self.heap();
        let earliest = heap.peek().is_none_or(|top| due < top.due);
        heap.push(Entry {
            due,
            seq,
            queue,
            stored,
        });
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Messages waiting for their delay.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.heap().len()
    }

    async fn run(self: Arc<Self>) {
        loop {
            let next = {
                let mut heap = self.heap();
                let now = Instant::now();
                while heap.peek().is_some_and(|e| e.due <= now) {
                    if let Some(e) = heap.pop() {
                        e.queue.requeue(e.stored, false);
                    }
                }
                heap.peek().map(|e| e.due)
            };
            let changed = self.changed.notified();
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = changed => {}
                _ = sleep_until(next) => {}
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

//! One in-process queue: a FIFO of envelopes with a capacity for publishers and an in-flight count.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::transport::Envelope;

/// A stored message and whether it was delivered before.
pub(super) struct Stored {
    pub envelope: Envelope,
    pub redelivered: bool,
}

pub(super) struct Queue {
    pub name: String,
    items: Mutex<VecDeque<Stored>>,
    /// Wakes receivers (shared by the shards of a sequenced topic).
    pub ready: Arc<Notify>,
    /// Wakes publishers waiting for room.
    room: Notify,
    capacity: usize,
    in_flight: AtomicU64,
}

impl Queue {
    pub fn new(name: String, capacity: usize, ready: Arc<Notify>) -> Self {
        Self {
            name,
            items: Mutex::new(VecDeque::new()),
            ready,
            room: Notify::new(),
            capacity,
            in_flight: AtomicU64::new(0),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Stored>> {
        // A panic while holding this lock cannot leave the deque half-modified, so poisoning is ignored.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends as many of `batch` as fit under the capacity; returns how many were taken.
    pub fn push_within_capacity(&self, batch: &mut VecDeque<Envelope>) -> usize {
        let mut items = self.items();
        let mut taken = 0;
        while items.len() < self.capacity {
            let Some(envelope) = batch.pop_front() else { break };
            items.push_back(Stored {
                envelope,
                redelivered: false,
            });
            taken += 1;
        }
        drop(items);
        if taken > 0 {
            self.ready.notify_one();
        }
        taken
    }

    /// Waits until the queue may have room.
    pub async fn wait_for_room(&self) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.items().len() < self.capacity {
            return;
        }
        notified.await;
    }

    /// Puts a message back, ignoring the capacity: settling must never wait for publishers.
    pub fn requeue(&self, stored: Stored, front: bool) {
        let mut items = self.items();
        if front {
            items.push_front(stored);
        } else {
            items.push_back(stored);
        }
        drop(items);
        self.ready.notify_one();
    }

    /// Takes up to `max` messages (handing each to `take`) and counts them in flight.
    pub fn pop(&self, max: usize, mut take: impl FnMut(Stored)) {
        let mut items = self.items();
        let was_full = items.len() >= self.capacity;
        let n = max.min(items.len());
        for s in items.drain(..n) {
            take(s);
        }
        drop(items);
        if n > 0 {
            self.in_flight.fetch_add(n as u64, Ordering::Relaxed);
            if was_full {
                self.room.notify_waiters();
            }
        }
    }

    /// One delivery of this queue is settled.
    pub fn settled(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn ready_count(&self) -> u64 {
        self.items().len() as u64
    }

    pub fn in_flight_count(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

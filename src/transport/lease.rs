//! The shard lease: one subscription at a time reads a sequenced topic's shard (contract rule 14), on
//! brokers whose consumers cannot be made exclusive by the broker itself (NATS, Redis). A backend writes
//! only the broker's conditional write ([`Lease`]); taking, renewing, publishing the state to the reader
//! and giving the lease up are here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One shard's lease on a broker: a record naming its holder, written only on a condition the broker
/// checks, and expiring when not renewed (so a holder that dies frees it).
pub(crate) trait Lease: Send + 'static {
    /// Takes the lease if it is free, or renews it if this holder has it: whether it is held now. A
    /// failure to reach the broker counts as not held.
    fn claim(&mut self) -> impl Future<Output = bool> + Send;

    /// Gives the lease up, so another subscription can take it at once instead of after its expiry.
    fn release(&mut self) -> impl Future<Output = ()> + Send;
}

/// Whether a subscription holds its lease, and a wake-up for when that changes: shared by the keeper
/// ([`keep`]) and the subscription's reads.
#[derive(Default)]
pub(crate) struct Ownership {
    held: AtomicBool,
    changed: Notify,
}

impl Ownership {
    /// Held from the start: a source that needs no lease.
    pub(crate) fn always() -> Arc<Self> {
        let owned = Self::default();
        owned.held.store(true, Ordering::Release);
        Arc::new(owned)
    }

    /// Whether the lease is held now.
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Waits while the lease is not held (a standby).
    pub(crate) async fn wait(&self) {
        loop {
            // Registered for the wake-up before looking, so a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_held() {
                return;
            }
            changed.await;
        }
    }

    fn set(&self, held: bool) {
        if self.held.swap(held, Ordering::AcqRel) != held {
            self.changed.notify_waiters();
        }
    }
}

/// Keeps `lease` until `stop`: claims it every `renew` (well within its expiry), publishes the result in
/// `owned`, and releases it at the end. Spawn it next to the subscription; wait for it at close, so the
/// lease is given up only after the subscription's hand-backs.
pub(crate) async fn keep(mut lease: impl Lease, owned: Arc<Ownership>, renew: Duration, stop: CancellationToken) {
    loop {
        owned.set(lease.claim().await);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(renew) => {}
        }
    }
    owned.set(false);
    lease.release().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A lease in memory: held when `free` says so; records releases.
    struct Fake {
        free: Arc<Mutex<bool>>,
        released: Arc<AtomicBool>,
    }

    impl Lease for Fake {
        async fn claim(&mut self) -> bool {
            *self.free.lock().expect("free")
        }

        async fn release(&mut self) {
            self.released.store(true, Ordering::Release);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keeper_publishes_changes_and_releases_at_stop() {
        let free = Arc::new(Mutex::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let owned = Arc::new(Ownership::default());
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(keep(
            Fake {
                free: free.clone(),
                released: released.clone(),
            },
            owned.clone(),
            Duration::from_secs(1),
            stop.clone(),
        ));
        tokio::task::yield_now().await;
        assert!(!owned.is_held(), "taken by another holder");
        *free.lock().expect("free") = true;
        // The standby wakes up at the next renewal that finds the lease free.
        owned.wait().await;
        assert!(owned.is_held());
        stop.cancel();
        keeper.await.expect("the keeper ends");
        assert!(!owned.is_held(), "given up at stop");
        assert!(released.load(Ordering::Acquire), "released at stop");
    }

    #[test]
    fn always_is_held() {
        assert!(Ownership::always().is_held());
    }
}

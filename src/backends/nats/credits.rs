//! How many messages a NATS subscription may hold unsettled, and when it may read further ahead.
//!
//! A credit stands for a message the subscription asked the server for and has not settled yet: on the
//! wire, waiting in its inbox or being handled. `prefetch` credits are always there, so a consumer whose
//! handlers are slow holds at most `prefetch` messages and an idle consumer of the same group gets the
//! next one. Read-ahead credits are added while the subscription's messages are settled within
//! [`FAST`] of arriving: the server then always has a request to fill while the engine works, which a
//! window of exactly `prefetch` cannot keep up with (a pull request's round trip is about as long as the
//! engine needs for 100 messages). A message waiting behind such handlers waits microseconds, so reading
//! ahead costs the group nothing; once handlers take longer than [`SLOW`], the read-ahead credits are
//! taken back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

/// Average hold (arrival to settlement) under which read-ahead credits are granted.
pub(super) const FAST: Duration = Duration::from_millis(1);
/// Average hold over which they are taken back (above `FAST`, so the grant does not flap).
pub(super) const SLOW: Duration = Duration::from_millis(4);
/// The average a subscription starts with: slow, so a new consumer reads no further than its prefetch
/// until its first messages showed how fast its handlers are.
const START: Duration = Duration::from_millis(10);

/// The credits of one subscription.
pub(super) struct Credits {
    semaphore: Arc<Semaphore>,
    read_ahead: usize,
    state: Mutex<State>,
}

struct State {
    /// Exponentially weighted average of the hold times, in µs (weight 1/8 per message).
    average_us: u64,
    granted: bool,
    /// Read-ahead credits taken back while in use: the next ones given back are kept.
    owed: usize,
}

impl Credits {
    /// `prefetch` credits, and `read_ahead` more while handlers are fast (0: never).
    pub(super) fn new(prefetch: usize, read_ahead: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(prefetch)),
            read_ahead,
            state: Mutex::new(State {
                average_us: START.as_micros() as u64,
                granted: false,
                owed: 0,
            }),
        }
    }

    /// The semaphore the puller takes credits from.
    pub(super) fn semaphore(&self) -> Arc<Semaphore> {
        self.semaphore.clone()
    }

    /// Gives back the credits of `n` settled (or abandoned) messages.
    pub(super) fn give_back(&self, n: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let kept = state.owed.min(n);
        state.owed -= kept;
        self.semaphore.add_permits(n - kept);
    }

    /// Records how long a message was held before it was settled, granting or taking back the read-ahead.
    pub(super) fn observe(&self, held: Duration) {
        if self.read_ahead == 0 {
            return;
        }
        let held_us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.average_us = state.average_us - state.average_us / 8 + held_us / 8;
        let average = Duration::from_micros(state.average_us);
        if !state.granted && average < FAST {
            state.granted = true;
            self.semaphore.add_permits(self.read_ahead);
        } else if state.granted && average > SLOW {
            state.granted = false;
            let forgotten = self.semaphore.forget_permits(self.read_ahead);
            state.owed += self.read_ahead - forgotten;
        }
    }

    /// Whether the read-ahead credits are granted now.
    #[cfg(test)]
    fn reading_ahead(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe_n(credits: &Credits, n: usize, held: Duration) {
        for _ in 0..n {
            credits.observe(held);
        }
    }

    #[test]
    fn starts_at_the_prefetch_and_reads_ahead_once_handlers_are_fast() {
        let credits = Credits::new(4, 4);
        assert_eq!(credits.semaphore().available_permits(), 4);
        assert!(!credits.reading_ahead());
        observe_n(&credits, 40, Duration::from_micros(50));
        assert!(credits.reading_ahead());
        assert_eq!(credits.semaphore().available_permits(), 8);
    }

    #[test]
    fn slow_handlers_never_read_ahead() {
        let credits = Credits::new(4, 4);
        observe_n(&credits, 100, Duration::from_millis(20));
        assert!(!credits.reading_ahead());
        assert_eq!(credits.semaphore().available_permits(), 4);
    }

    #[test]
    fn no_read_ahead_is_granted_when_there_is_none() {
        let credits = Credits::new(4, 0);
        observe_n(&credits, 100, Duration::ZERO);
        assert!(!credits.reading_ahead());
        assert_eq!(credits.semaphore().available_permits(), 4);
    }

    #[test]
    fn credits_taken_back_while_in_use_are_kept_as_they_come_back() {
        let credits = Credits::new(2, 2);
        observe_n(&credits, 40, Duration::ZERO);
        assert_eq!(credits.semaphore().available_permits(), 4);
        // Three messages are out; then handlers turn slow and the read-ahead is taken back.
        credits.semaphore().try_acquire_many(3).expect("4 free").forget();
        observe_n(&credits, 40, Duration::from_millis(50));
        assert!(!credits.reading_ahead());
        // One free credit was forgotten at once; one more is owed by the messages still out.
        assert_eq!(credits.semaphore().available_permits(), 0);
        credits.give_back(3);
        assert_eq!(
            credits.semaphore().available_permits(),
            2,
            "back to exactly the prefetch"
        );
    }
}

//! The outcome router: a pure function from (outcome, attempt, topology) to a decision.
//!
//! Every backend executes these decisions; none makes its own (contract rules 5–9, 15).

use crate::outcome::Outcome;
use crate::topology::QueueTopology;
use crate::transport::Hold;

pub(crate) use crate::transport::reasons;

/// What the handler's call amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The handler returned an outcome.
    Returned(OutcomeKind),
    /// The handler exceeded its timeout (counts as `Retry`).
    TimedOut,
    /// The handler panicked (counts as `Retry`).
    Panicked,
}

/// `Outcome` without the serde baggage, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeKind {
    Ack,
    Retry,
    Reject,
    Defer,
}

impl From<&Outcome> for OutcomeKind {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Ack => OutcomeKind::Ack,
            Outcome::Retry => OutcomeKind::Retry,
            Outcome::Reject => OutcomeKind::Reject,
            Outcome::Defer => OutcomeKind::Defer,
        }
    }
}

/// What to do with the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Remove it.
    Ack,
    /// Deliver again with `retry_count`, after `hold` (or at once).
    Requeue { retry_count: u32, hold: Option<Hold> },
    /// Move it to the DLQ with `reason`.
    DeadLetter { reason: &'static str },
    /// The topic has no DLQ: drop it with a warning, giving `reason`.
    Discard { reason: &'static str },
}

/// Routes one handler verdict.
///
/// * `Ack` → remove.
/// * `Retry` (also a timeout or a panic): with `retry_count < max_retries`, requeue with `retry_count + 1`
///   after `hold_queues[min(retry_count, len - 1)]` (at once with no hold queues); otherwise dead-letter
///   with `max_retries_exceeded`. So the handler runs at most `max_retries + 1` times.
/// * `Defer`: requeue after `hold_queues[0]` with the same `retry_count`; on a sequenced topic it acts as
///   `Retry`.
/// * `Reject` → dead-letter with `rejected`.
///
/// Dead-lettering becomes `Discard` when the topic has no DLQ.
pub(crate) fn decide(verdict: Verdict, retry_count: u32, max_retries: u32, topology: &QueueTopology) -> Decision {
    let kind = match verdict {
        Verdict::Returned(k) => k,
        Verdict::TimedOut | Verdict::Panicked => OutcomeKind::Retry,
    };
    let kind = if kind == OutcomeKind::Defer && topology.sequencing().is_some() {
        OutcomeKind::Retry
    } else {
        kind
    };
    match kind {
        OutcomeKind::Ack => Decision::Ack,
        OutcomeKind::Reject => dead(reasons::REJECTED, topology),
        OutcomeKind::Defer => Decision::Requeue {
            retry_count,
            hold: hold_for(0, topology),
        },
        OutcomeKind::Retry if retry_count >= max_retries => dead(reasons::MAX_RETRIES_EXCEEDED, topology),
        OutcomeKind::Retry => Decision::Requeue {
            retry_count: retry_count + 1,
            hold: hold_for(retry_count as usize, topology),
        },
    }
}

/// The decision for a delivery that never reached the handler (oversize, undecodable, poisoned key).
pub(crate) fn dead(reason: &'static str, topology: &QueueTopology) -> Decision {
    if topology.dlq().is_some() {
        Decision::DeadLetter { reason }
    } else {
        Decision::Discard { reason }
    }
}

fn hold_for(attempt: usize, topology: &QueueTopology) -> Option<Hold> {
    let holds = topology.hold_queues();
    let index = attempt.min(holds.len().checked_sub(1)?);
    Some(Hold {
        index,
        delay: holds[index].delay(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::topology::{SequenceFailure, TopologyBuilder};

    fn two_holds() -> QueueTopology {
        TopologyBuilder::new("q")
            .hold_queue(Duration::from_secs(1))
            .hold_queue(Duration::from_secs(5))
            .dlq()
            .build()
    }

    fn ret(k: OutcomeKind) -> Verdict {
        Verdict::Returned(k)
    }

    #[test]
    fn retry_escalates_through_hold_queues_then_stays_on_the_last() {
        let t = two_holds();
        let delays: Vec<_> = (0..4)
            .map(|k| match decide(ret(OutcomeKind::Retry), k, 10, &t) {
                Decision::Requeue { retry_count, hold } => {
                    assert_eq!(retry_count, k + 1);
                    hold.expect("hold").delay.as_secs()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![1, 5, 5, 5]);
    }

    #[test]
    fn budget_allows_exactly_max_retries_plus_one_attempts() {
        let t = two_holds();
        // attempts 1..=3 with max_retries 2: retry counts 0,1 requeue; 2 dead-letters.
        assert!(matches!(
            decide(ret(OutcomeKind::Retry), 0, 2, &t),
            Decision::Requeue { .. }
        ));
        assert!(matches!(
            decide(ret(OutcomeKind::Retry), 1, 2, &t),
            Decision::Requeue { .. }
        ));
        assert_eq!(
            decide(ret(OutcomeKind::Retry), 2, 2, &t),
            Decision::DeadLetter {
                reason: reasons::MAX_RETRIES_EXCEEDED
            }
        );
        assert_eq!(
            decide(ret(OutcomeKind::Retry), 0, 0, &t),
            Decision::DeadLetter {
                reason: reasons::MAX_RETRIES_EXCEEDED
            }
        );
    }

    #[test]
    fn timeout_and_panic_count_as_retry() {
        let t = two_holds();
        for v in [Verdict::TimedOut, Verdict::Panicked] {
            assert_eq!(decide(v, 0, 3, &t), decide(ret(OutcomeKind::Retry), 0, 3, &t));
            assert_eq!(decide(v, 3, 3, &t), decide(ret(OutcomeKind::Retry), 3, 3, &t));
        }
    }

    #[test]
    fn defer_uses_first_hold_and_keeps_count() {
        let t = two_holds();
        assert_eq!(
            decide(ret(OutcomeKind::Defer), 7, 3, &t),
            Decision::Requeue {
                retry_count: 7,
                hold: Some(Hold {
                    index: 0,
                    delay: Duration::from_secs(1)
                })
            }
        );
    }

    #[test]
    fn defer_on_sequenced_topic_is_retry() {
        let t = TopologyBuilder::new("s")
            .sequenced(SequenceFailure::Skip)
            .hold_queue(Duration::from_secs(2))
            .dlq()
            .build();
        assert_eq!(
            decide(ret(OutcomeKind::Defer), 0, 3, &t),
            Decision::Requeue {
                retry_count: 1,
                hold: Some(Hold {
                    index: 0,
                    delay: Duration::from_secs(2)
                })
            }
        );
        assert_eq!(
            decide(ret(OutcomeKind::Defer), 3, 3, &t),
            Decision::DeadLetter {
                reason: reasons::MAX_RETRIES_EXCEEDED
            }
        );
    }

    #[test]
    fn no_hold_queues_means_immediate_redelivery() {
        let t = TopologyBuilder::new("q").dlq().build();
        assert_eq!(
            decide(ret(OutcomeKind::Retry), 0, 3, &t),
            Decision::Requeue {
                retry_count: 1,
                hold: None
            }
        );
    }

    #[test]
    fn reject_dead_letters_or_discards_without_dlq() {
        assert_eq!(
            decide(ret(OutcomeKind::Reject), 0, 3, &two_holds()),
            Decision::DeadLetter {
                reason: reasons::REJECTED
            }
        );
        let no_dlq = TopologyBuilder::new("q").build();
        assert_eq!(
            decide(ret(OutcomeKind::Reject), 0, 3, &no_dlq),
            Decision::Discard {
                reason: reasons::REJECTED
            }
        );
        assert_eq!(decide(ret(OutcomeKind::Ack), 0, 3, &no_dlq), Decision::Ack);
    }
}

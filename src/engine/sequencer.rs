//! Per-key ordering for sequenced topics (contract rules 14–15), independent of any broker.
//!
//! A consumer hands every delivery of a sequenced topic to [`Sequencer::admit`]. A key runs one message at
//! a time: while its head is in the handler, or waiting in the broker for a retry, later messages of that key
//! wait here (up to `max_pending_per_key`; beyond that they are handed back to the broker with a short delay,
//! and admitted again strictly in key order whatever order the broker returns them in, see [`Admit::Release`]). Different keys never wait for each other.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::topology::SequenceFailure;
use crate::transport::{Delivery, MessageId};

/// What became of a key's head message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadResult {
    /// Acknowledged (or discarded): the key moves on.
    Done,
    /// Stored in the broker for a retry: the key waits for this message id to come back.
    Retrying(MessageId),
    /// Dead-lettered: the key moves on (`Skip`) or is poisoned (`FailAll`).
    Dead,
    /// Settlement failed or was abandoned: the broker will redeliver it; wait for it like a retry.
    Unsettled(MessageId),
}

/// What the consumer should do with an admitted delivery.
pub(crate) enum Admit<Tok> {
    /// Run the handler on it now.
    Run(Delivery<Tok>),
    /// Kept until the key is free.
    Buffered,
    /// The key's buffer is full: hand it back to the broker to be delivered again later.
    Release(Delivery<Tok>),
    /// The key is poisoned (`FailAll`): dead-letter it without running the handler.
    Poisoned(Delivery<Tok>),
}

#[derive(Default)]
struct KeyState<Tok> {
    /// A message of this key is in the handler.
    running: bool,
    /// The key waits for this message to come back from the broker.
    awaiting: Option<MessageId>,
    /// Later messages, in arrival order.
    pending: VecDeque<Delivery<Tok>>,
    /// Messages of this key handed back to the broker, in key order. Only the first of them may be
    /// admitted; any other message of the key that arrives meanwhile is handed back too (and queued here if
    /// new), so the broker may return them in any order without breaking the key's order.
    released: VecDeque<MessageId>,
    poisoned: bool,
}

impl<Tok> KeyState<Tok> {
    fn idle(&self) -> bool {
        !self.running
            && self.awaiting.is_none()
            && self.pending.is_empty()
            && self.released.is_empty()
            && !self.poisoned
    }
}

/// Per-key state of one consumer.
pub(crate) struct Sequencer<Tok> {
    on_failure: SequenceFailure,
    max_pending: Option<usize>,
    keys: HashMap<Arc<str>, KeyState<Tok>>,
    buffered: usize,
}

/// The key used for messages that arrive without `x-sequence-key` (published by something other than
/// shove): they are ordered among themselves.
const MISSING_KEY: &str = "";

impl<Tok> Sequencer<Tok> {
    pub fn new(on_failure: SequenceFailure, max_pending: Option<usize>) -> Self {
        Self {
            on_failure,
            max_pending,
            keys: HashMap::new(),
            buffered: 0,
        }
    }

    pub fn key_of(d: &Delivery<Tok>) -> Arc<str> {
        d.envelope
            .sequence_key
            .clone()
            .unwrap_or_else(|| Arc::from(MISSING_KEY))
    }

    /// Messages held in per-key buffers.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Takes a delivery in.
    pub fn admit(&mut self, d: Delivery<Tok>) -> Admit<Tok> {
        let key = Self::key_of(&d);
        let id = d.envelope.message_id.clone();
        let state = self.keys.entry(key).or_insert_with(|| KeyState {
            running: false,
            awaiting: None,
            pending: VecDeque::new(),
            released: VecDeque::new(),
            poisoned: false,
        });
        if state.poisoned {
            return Admit::Poisoned(d);
        }
        if state.awaiting.as_ref() == Some(&id) {
            // The head came back from the broker: it runs before anything buffered behind it.
            state.awaiting = None;
            state.running = true;
            return Admit::Run(d);
        }
        // The earliest handed-back message re-enters ahead of the ones handed back after it.
        let mut returning = false;
        if let Some(first) = state.released.front() {
            let room = self.max_pending.is_none_or(|m| state.pending.len() < m);
            if *first != id || !room {
                if !state.released.contains(&id) {
                    state.released.push_back(id);
                }
                return Admit::Release(d);
            }
            state.released.pop_front();
            returning = true;
        }
        if !state.running
            && state.awaiting.is_none()
            && state.pending.is_empty()
            && (returning || state.released.is_empty())
        {
            state.running = true;
            return Admit::Run(d);
        }
        if self.max_pending.is_some_and(|m| state.pending.len() >= m) || (!returning && !state.released.is_empty()) {
            state.released.push_back(id);
            return Admit::Release(d);
        }
        state.pending.push_back(d);
        self.buffered += 1;
        Admit::Buffered
    }

    /// Records what happened to `key`'s running message; returns what to do next for that key.
    pub fn complete(&mut self, key: &Arc<str>, result: HeadResult) -> Vec<Admit<Tok>> {
        let Some(state) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        state.running = false;
        let mut next = Vec::new();
        match result {
            HeadResult::Retrying(id) | HeadResult::Unsettled(id) => state.awaiting = Some(id),
            HeadResult::Dead if self.on_failure == SequenceFailure::FailAll => {
                state.poisoned = true;
                self.buffered -= state.pending.len();
                next.extend(state.pending.drain(..).map(Admit::Poisoned));
            }
            HeadResult::Done | HeadResult::Dead => {
                if let Some(d) = state.pending.pop_front() {
                    self.buffered -= 1;
                    state.running = true;
                    next.push(Admit::Run(d));
                }
            }
        }
        if state.idle() {
            self.keys.remove(key);
        }
        next
    }

    /// Empties every buffer (on shutdown, to hand the messages back to the broker).
    pub fn take_buffered(&mut self) -> Vec<Delivery<Tok>> {
        self.buffered = 0;
        let mut out = Vec::new();
        for state in self.keys.values_mut() {
            out.extend(state.pending.drain(..));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::transport::Envelope;

    fn d(key: &str, id: &str) -> Delivery<()> {
        Delivery {
            envelope: Envelope {
                payload: Vec::new(),
                message_id: MessageId::Text(Arc::from(id)),
                retry_count: 0,
                sequence_key: Some(Arc::from(key)),
                headers: Arc::new(HashMap::new()),
                death: None,
            },
            redelivered: false,
            lost_attempts: 0,
            token: (),
        }
    }

    fn id(a: &Admit<()>) -> String {
        match a {
            Admit::Run(d) => format!("run {}", d.envelope.message_id),
            Admit::Release(d) => format!("release {}", d.envelope.message_id),
            Admit::Poisoned(d) => format!("poison {}", d.envelope.message_id),
            Admit::Buffered => "buffered".into(),
        }
    }

    #[test]
    fn one_message_per_key_at_a_time_and_keys_independent() {
        let mut s = Sequencer::new(SequenceFailure::Skip, None);
        assert_eq!(id(&s.admit(d("a", "a1"))), "run a1");
        assert_eq!(id(&s.admit(d("a", "a2"))), "buffered");
        assert_eq!(id(&s.admit(d("b", "b1"))), "run b1");
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Done).iter().map(id).collect();
        assert_eq!(next, vec!["run a2"]);
        assert!(s.complete(&Arc::from("a"), HeadResult::Done).is_empty());
        assert!(!s.keys.contains_key("a"), "idle keys are forgotten");
    }

    #[test]
    fn retry_blocks_only_its_key_until_the_same_message_returns() {
        let mut s = Sequencer::new(SequenceFailure::Skip, None);
        s.admit(d("a", "a1"));
        assert!(
            s.complete(&Arc::from("a"), HeadResult::Retrying(MessageId::Text(Arc::from("a1"))))
                .is_empty()
        );
        assert_eq!(id(&s.admit(d("a", "a2"))), "buffered");
        assert_eq!(id(&s.admit(d("b", "b1"))), "run b1");
        assert_eq!(id(&s.admit(d("a", "a1"))), "run a1");
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Done).iter().map(id).collect();
        assert_eq!(next, vec!["run a2"]);
    }

    #[test]
    fn skip_moves_on_after_dead_letter() {
        let mut s = Sequencer::new(SequenceFailure::Skip, None);
        s.admit(d("a", "a1"));
        s.admit(d("a", "a2"));
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Dead).iter().map(id).collect();
        assert_eq!(next, vec!["run a2"]);
    }

    #[test]
    fn fail_all_poisons_buffered_and_later_messages() {
        let mut s = Sequencer::new(SequenceFailure::FailAll, None);
        s.admit(d("a", "a1"));
        s.admit(d("a", "a2"));
        s.admit(d("a", "a3"));
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Dead).iter().map(id).collect();
        assert_eq!(next, vec!["poison a2", "poison a3"]);
        assert_eq!(id(&s.admit(d("a", "a4"))), "poison a4");
        assert_eq!(id(&s.admit(d("b", "b1"))), "run b1");
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn overflow_is_handed_back_and_cannot_be_overtaken() {
        let mut s = Sequencer::new(SequenceFailure::Skip, Some(1));
        s.admit(d("a", "a1"));
        assert_eq!(id(&s.admit(d("a", "a2"))), "buffered");
        assert_eq!(id(&s.admit(d("a", "a3"))), "release a3");
        // a4 arrives before a3 comes back: it must be handed back too.
        assert_eq!(id(&s.admit(d("a", "a4"))), "release a4");
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Done).iter().map(id).collect();
        assert_eq!(next, vec!["run a2"]);
        // a4 again before a3: still handed back.
        assert_eq!(id(&s.admit(d("a", "a4"))), "release a4");
        assert_eq!(id(&s.admit(d("a", "a3"))), "buffered");
        assert_eq!(id(&s.admit(d("a", "a4"))), "release a4");
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Done).iter().map(id).collect();
        assert_eq!(next, vec!["run a3"]);
    }

    #[test]
    fn handed_back_messages_keep_key_order_whatever_order_they_return_in() {
        let mut s = Sequencer::new(SequenceFailure::Skip, Some(1));
        s.admit(d("a", "a1"));
        assert_eq!(id(&s.admit(d("a", "a2"))), "buffered");
        assert_eq!(id(&s.admit(d("a", "a3"))), "release a3");
        assert_eq!(id(&s.admit(d("a", "a4"))), "release a4");
        assert_eq!(id(&s.admit(d("a", "a5"))), "release a5");
        s.complete(&Arc::from("a"), HeadResult::Done); // a2 runs
        // The broker returns them out of order: only a3 may enter, then a4, then a5.
        assert_eq!(id(&s.admit(d("a", "a5"))), "release a5");
        assert_eq!(id(&s.admit(d("a", "a4"))), "release a4");
        assert_eq!(id(&s.admit(d("a", "a3"))), "buffered");
        assert_eq!(id(&s.admit(d("a", "a5"))), "release a5");
        assert_eq!(id(&s.admit(d("a", "a4"))), "release a4"); // no room yet
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Done).iter().map(id).collect();
        assert_eq!(next, vec!["run a3"]);
        assert_eq!(id(&s.admit(d("a", "a4"))), "buffered");
        assert_eq!(id(&s.admit(d("a", "a5"))), "release a5");
        s.complete(&Arc::from("a"), HeadResult::Done); // a4 runs
        assert_eq!(id(&s.admit(d("a", "a5"))), "buffered");
        let next: Vec<_> = s.complete(&Arc::from("a"), HeadResult::Done).iter().map(id).collect();
        assert_eq!(next, vec!["run a5"]);
    }

    #[test]
    fn take_buffered_empties_everything() {
        let mut s = Sequencer::new(SequenceFailure::Skip, None);
        s.admit(d("a", "a1"));
        s.admit(d("a", "a2"));
        s.admit(d("b", "b1"));
        s.admit(d("b", "b2"));
        assert_eq!(s.buffered(), 2);
        assert_eq!(s.take_buffered().len(), 2);
        assert_eq!(s.buffered(), 0);
    }
}

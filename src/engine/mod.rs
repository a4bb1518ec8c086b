//! The semantic core: every delivery rule, written once and generic over a
//! [`Transport`](crate::transport::Transport).

pub(crate) mod autoscale;
pub(crate) mod consume;
// Only the backend facades run consumers directly.
#[cfg(any_backend)]
pub(crate) mod direct;
pub(crate) mod envelope;
pub(crate) mod registry;
pub(crate) mod router;
pub(crate) mod sequencer;
pub(crate) mod settings;
pub(crate) mod tasks;

//! Declaring a topic's queues ahead of use.

use std::future::Future;

use crate::backend::Backend;
use crate::backend::internal::TopologyImpl;
use crate::error::Result;
use crate::topic::Topic;

/// Creates topics' queues on the broker. Declaring is idempotent.
pub struct TopologyDeclarer<B: Backend> {
    inner: B::TopologyImpl,
}

impl<B: Backend> TopologyDeclarer<B> {
    pub(crate) fn new(inner: B::TopologyImpl) -> Self {
        Self { inner }
    }

    /// Declares topic `T`'s queues (main, hold, DLQ, shards).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when the broker refuses; `Connection` when
    /// it cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: declaring again completes the job.
    pub async fn declare<T: Topic>(&self) -> Result<()> {
        self.inner.declare_topology(T::topology()).await
    }

    /// Declares every topic of the tuple `Ts`, in order, stopping at the first error.
    ///
    /// # Errors
    ///
    /// As [`TopologyDeclarer::declare`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn declare_all<Ts: Topics>(&self) -> Result<()> {
        Ts::declare_all(self).await
    }
}

/// A tuple of topics `(T1, …, T16)` declared together by [`TopologyDeclarer::declare_all`].
pub trait Topics: Sized {
    /// Declares each topic in order, stopping at the first error.
    fn declare_all<B: Backend>(declarer: &TopologyDeclarer<B>) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! impl_topics {
    ($($t:ident),+) => {
        impl<$($t: Topic),+> Topics for ($($t,)+) {
            async fn declare_all<B: Backend>(declarer: &TopologyDeclarer<B>) -> Result<()> {
                $( declarer.declare::<$t>().await?; )+
                Ok(())
            }
        }
    };
}

impl_topics!(T1);
impl_topics!(T1, T2);
impl_topics!(T1, T2, T3);
impl_topics!(T1, T2, T3, T4);
impl_topics!(T1, T2, T3, T4, T5);
impl_topics!(T1, T2, T3, T4, T5, T6);
impl_topics!(T1, T2, T3, T4, T5, T6, T7);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15);
impl_topics!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15, T16);

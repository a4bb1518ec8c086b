//! A backend's autoscaler backend: scales the groups of one registry, or of every group made through
//! `Broker::consumer_group` on a client, by the depth a statistics provider reports.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::registry::BackendGroupRegistry;
use crate::autoscaler::{AutoscalerBackend, ScalingDecision, ScalingMetrics};
use crate::backend::Backend;
use crate::backend::internal::{AutoscalerBackendImpl, ClientImpl};
use crate::engine::autoscale::{DepthSource, GroupsAutoscaler};
use crate::engine::registry::{GroupDirectory, Registries};
use crate::error::Result;
use crate::transport::Depth;

/// A queue statistics provider as the autoscaler of backend `B` reads it. Each backend implements it for
/// every type that implements its own statistics trait (`NatsQueueStatsProvider`,
/// `RedisQueueStatsProvider`, …), saying which two counts are the backlog and the messages in flight;
/// implement that backend trait, not this one.
pub trait QueueDepthProvider<B>: Send + Sync {
    /// `(ready, in_flight)` of `queue`: messages waiting to be delivered, and messages delivered and not
    /// yet settled.
    fn queue_depth(&self, queue: &str) -> impl Future<Output = Result<(u64, u64)>> + Send;
}

/// Reads depth through a provider.
struct ProviderDepth<B, S> {
    stats: S,
    backend: PhantomData<fn() -> B>,
}

impl<B, S: QueueDepthProvider<B>> DepthSource for ProviderDepth<B, S> {
    async fn depth(&self, queue: &str) -> Result<Depth> {
        let (ready, in_flight) = self.stats.queue_depth(queue).await?;
        Ok(Depth { ready, in_flight })
    }
}

/// Scales one backend's consumer groups by their queue depth, read from `S`: `NatsAutoscalerBackend<S>`
/// is `BackendAutoscaler<Nats, S>`, and so on (see [the module](crate::facade)). Drive it with an
/// [`Autoscaler`](crate::Autoscaler).
pub struct BackendAutoscaler<B: Backend, S> {
    inner: GroupsAutoscaler<BackendGroupRegistry<B>, ProviderDepth<B, S>>,
}

impl<B: Backend, S: QueueDepthProvider<B>> BackendAutoscaler<B, S> {
    /// Scales the groups of `registry`, reading depth from `stats_provider`.
    pub fn with_stats_provider(stats_provider: S, registry: Arc<Mutex<BackendGroupRegistry<B>>>) -> Self {
        Self::over(stats_provider, Registries::One(registry))
    }

    /// Scales every group created through `Broker::consumer_group` on `client`, reading depth from
    /// `stats`.
    pub(crate) fn over_client(stats: S, client: &B::Client) -> Self {
        let directory = client
            .attachments()
            .get_or_default::<GroupDirectory<BackendGroupRegistry<B>>>();
        Self::over(stats, Registries::Directory(directory))
    }

    fn over(stats: S, registries: Registries<BackendGroupRegistry<B>>) -> Self {
        Self {
            inner: GroupsAutoscaler::new(
                registries,
                ProviderDepth {
                    stats,
                    backend: PhantomData,
                },
            ),
        }
    }
}

impl<B: Backend, S: QueueDepthProvider<B>> AutoscalerBackend for BackendAutoscaler<B, S> {
    type GroupId = String;

    fn list_groups(&self) -> impl Future<Output = Result<Vec<String>>> + Send {
        self.inner.list_groups()
    }

    fn fetch_metrics(&self, group: &String) -> impl Future<Output = Result<ScalingMetrics>> + Send {
        self.inner.fetch_metrics(group)
    }

    fn scale(&self, group: &String, decision: ScalingDecision) -> impl Future<Output = Result<()>> + Send {
        self.inner.scale(group, decision)
    }
}

impl<B: Backend, S: QueueDepthProvider<B>> AutoscalerBackendImpl for BackendAutoscaler<B, S> {}

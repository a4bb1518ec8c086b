//! An [`AutoscalerBackend`] over consumer groups, written once: it finds groups through their
//! registries and reads queue depth from a [`DepthSource`] (the transport, or a user's statistics
//! provider behind a backend's `*AutoscalerBackend<S>`).

use std::future::Future;

use crate::autoscaler::{AutoscalerBackend, ScalingDecision, ScalingMetrics};
use crate::engine::registry::{Registries, RegistryImpl};
use crate::error::Result;
use crate::transport::{Depth, Transport};

/// Where the autoscaler reads a queue's depth.
pub(crate) trait DepthSource: Send + Sync {
    /// Ready and in-flight counts of `queue` (for a sequenced topic, its main queue name covers all
    /// shards).
    fn depth(&self, queue: &str) -> impl Future<Output = Result<Depth>> + Send;
}

/// Depth as the transport reports it.
pub(crate) struct TransportDepth<T>(pub T);

impl<T: Transport> DepthSource for TransportDepth<T> {
    fn depth(&self, queue: &str) -> impl Future<Output = Result<Depth>> + Send {
        self.0.depth(queue)
    }
}

/// Scales the groups of one registry (or of every registry of a client) by their queue depth.
pub(crate) struct GroupsAutoscaler<R, D> {
    registries: Registries<R>,
    depth: D,
}

impl<R, D> GroupsAutoscaler<R, D> {
    pub fn new(registries: Registries<R>, depth: D) -> Self {
        Self { registries, depth }
    }
}

impl<R: RegistryImpl, D: DepthSource> AutoscalerBackend for GroupsAutoscaler<R, D> {
    type GroupId = String;

    async fn list_groups(&self) -> Result<Vec<String>> {
        Ok(self.registries.names().await)
    }

    async fn fetch_metrics(&self, group: &String) -> Result<ScalingMetrics> {
        let view = self.registries.view(group).await?;
        let depth = self.depth.depth(&view.queue).await?;
        Ok(ScalingMetrics::new(
            depth.ready,
            depth.in_flight,
            view.active,
            view.prefetch,
        ))
    }

    async fn scale(&self, group: &String, decision: ScalingDecision) -> Result<()> {
        self.registries.scale(group, decision).await
    }
}

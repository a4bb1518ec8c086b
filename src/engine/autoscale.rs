//! An [`AutoscalerBackend`] over consumer groups, reading queue depth from the transport.

use crate::autoscaler::{AutoscalerBackend, ScalingDecision, ScalingMetrics};
use crate::backend::internal::RegistryImpl;
use crate::engine::registry::Registries;
use crate::error::Result;
use crate::transport::Transport;

/// Scales the groups of one registry (or of every registry of a client) by their queue depth.
pub(crate) struct GroupsAutoscaler<R: RegistryImpl> {
    registries: Registries<R>,
    transport: R::Transport,
}

impl<R: RegistryImpl> GroupsAutoscaler<R> {
    pub fn new(registries: Registries<R>, transport: R::Transport) -> Self {
        Self { registries, transport }
    }
}

impl<R: RegistryImpl> AutoscalerBackend for GroupsAutoscaler<R> {
    type GroupId = String;

    async fn list_groups(&self) -> Result<Vec<String>> {
        Ok(self.registries.names().await)
    }

    async fn fetch_metrics(&self, group: &String) -> Result<ScalingMetrics> {
        let view = self.registries.view(group).await?;
        let depth = self.transport.depth(&view.queue).await?;
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

//! Running a set of consumers and stopping them with the drain rules (contract rules 17–18).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::settings::{RunControl, RunStats};
use crate::error::Result;
use crate::outcome::SupervisorOutcome;

/// How long aborted consumers get to hand their messages back before their tasks are cancelled outright.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Consumer tasks that stop together.
pub(crate) struct TaskSet {
    stop: CancellationToken,
    abort: CancellationToken,
    stats: Arc<RunStats>,
    handles: Vec<JoinHandle<()>>,
}

impl TaskSet {
    /// A set whose consumers also stop (draining) when `parent` is cancelled.
    pub fn new(parent: &CancellationToken) -> Self {
        Self {
            stop: parent.child_token(),
            abort: CancellationToken::new(),
            stats: Arc::new(RunStats::default()),
            handles: Vec::new(),
        }
    }

    /// The token that stops every consumer of the set (cancelling it starts a drain).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn stats(&self) -> Arc<RunStats> {
        self.stats.clone()
    }

    /// A control for one more consumer of the set.
    pub fn control(&self) -> RunControl {
        RunControl {
            stop: self.stop.child_token(),
            abort: self.abort.clone(),
        }
    }

    /// Spawns a consumer; an `Err` it returns is counted as an error of the set.
    pub fn spawn(&mut self, consumer: impl Future<Output = Result<()>> + Send + 'static) {
        let stats = self.stats.clone();
        self.handles.push(tokio::spawn(async move {
            if let Err(e) = consumer.await {
                tracing::error!(error = %e, "consumer stopped with an error");
                stats.error();
            }
        }));
    }

    /// Waits for `signal` (or for every consumer to end on its own), then drains: see
    /// [`drain`](Self::drain).
    pub async fn run_until(
        mut self,
        signal: impl Future<Output = ()> + Send,
        drain_timeout: Duration,
    ) -> SupervisorOutcome {
        let ended_alone = {
            let all_done = futures::future::join_all(self.handles.iter_mut());
            tokio::pin!(signal);
            tokio::select! {
                _ = &mut signal => None,
                results = all_done => {
                    Some(results.iter().filter(|r| r.as_ref().is_err_and(|e| e.is_panic())).count())
                }
            }
        };
        if let Some(panicked) = ended_alone {
            self.handles.clear();
            self.stats.panics.fetch_add(panicked, Ordering::Relaxed);
        }
        self.drain(drain_timeout).await
    }

    /// Stops every consumer, lets in-flight handlers finish within `drain_timeout`, then aborts the rest
    /// (their messages go back to the broker).
    pub async fn drain(self, drain_timeout: Duration) -> SupervisorOutcome {
        self.stop.cancel();
        let mut handles = self.handles;
        let mut timed_out = false;
        let mut task_panics = 0usize;
        let finished = tokio::time::timeout(drain_timeout, join_counting(&mut handles, &mut task_panics)).await;
        if finished.is_err() {
            timed_out = true;
            self.abort.cancel();
            if tokio::time::timeout(ABORT_GRACE, join_counting(&mut handles, &mut task_panics))
                .await
                .is_err()
            {
                for h in &handles {
                    h.abort();
                }
            }
        }
        SupervisorOutcome {
            errors: self.stats.errors.load(Ordering::Relaxed),
            panics: self.stats.panics.load(Ordering::Relaxed) + task_panics,
            timed_out,
        }
    }
}

/// Joins handles one by one (removing each finished one), counting tasks that panicked.
async fn join_counting(handles: &mut Vec<JoinHandle<()>>, panics: &mut usize) {
    while let Some(h) = handles.last_mut() {
        if let Err(e) = h.await
            && e.is_panic()
        {
            *panics += 1;
        }
        handles.pop();
    }
}

//! Consumers a backend facade runs directly (`XConsumer::run`, `run_fifo`, `run_dlq`,
//! `run_fifo_until_timeout`), without a supervisor or group: written once for every backend.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::consume::{self, Mode};
use super::settings::{ConsumerSettings, RunControl, RunStats};
use super::tasks::TaskSet;
use crate::backend::Backend;
use crate::consumer::ConsumerOptions;
use crate::consumer_supervisor::SupervisorOutcome;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::Topic;
use crate::transport::{Source, Transport};

/// Runs one consumer of `source` until the options' shutdown token is cancelled (or, without one, until
/// `connection` is), letting in-flight handlers finish.
pub(crate) fn run<B, T, H, Tr>(
    transport: Tr,
    connection: &CancellationToken,
    source: Source,
    mode: Mode,
    handler: H,
    ctx: H::Context,
    options: &ConsumerOptions<B>,
) -> impl Future<Output = Result<()>> + Send + use<B, T, H, Tr>
where
    B: Backend,
    T: Topic,
    H: MessageHandler<T>,
    Tr: Transport,
{
    let ctl = RunControl {
        stop: options.shutdown.clone().unwrap_or_else(|| connection.child_token()),
        abort: CancellationToken::new(),
    };
    let settings = ConsumerSettings::from(options);
    async move {
        let stats = RunStats::default();
        consume::run::<T, H, Tr>(&transport, source, mode, &handler, &ctx, &settings, &ctl, &stats).await
    }
}

/// Runs one consumer of `source` until `signal` (or until `connection` is cancelled), then drains within
/// `drain_timeout`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_until_timeout<B, T, H, Tr, S>(
    transport: Tr,
    connection: &CancellationToken,
    source: Source,
    handler: H,
    ctx: H::Context,
    options: &ConsumerOptions<B>,
    signal: S,
    drain_timeout: Duration,
) -> SupervisorOutcome
where
    B: Backend,
    T: Topic,
    H: MessageHandler<T>,
    Tr: Transport,
    S: Future<Output = ()> + Send + 'static,
{
    let mut tasks = TaskSet::new(connection);
    let ctl = tasks.control();
    let stats = tasks.stats();
    let settings = ConsumerSettings::from(options);
    tasks.spawn(async move {
        consume::run::<T, H, Tr>(&transport, source, Mode::Live, &handler, &ctx, &settings, &ctl, &stats).await
    });
    tasks.run_until(signal, drain_timeout).await
}

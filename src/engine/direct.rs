//! Consumers a backend facade runs directly (`XConsumer::run`, `run_fifo`, `run_dlq`,
//! `run_fifo_until_timeout`), without a supervisor or group: written once for every backend.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::consume::{self, Mode};
use super::settings::{ConsumerSettings, RunControl, RunStats};
use super::tasks::TaskSet;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::outcome::SupervisorOutcome;
use crate::topic::Topic;
use crate::transport::{Source, Transport};

/// Runs one consumer of `source` until `stop` is cancelled, letting in-flight handlers finish.
pub(crate) fn run<T, H, Tr>(
    transport: Tr,
    stop: CancellationToken,
    source: Source,
    mode: Mode,
    handler: H,
    ctx: H::Context,
    settings: ConsumerSettings<Tr::Options>,
) -> impl Future<Output = Result<()>> + Send + use<T, H, Tr>
where
    T: Topic,
    H: MessageHandler<T>,
    Tr: Transport,
{
    let ctl = RunControl {
        stop,
        abort: CancellationToken::new(),
    };
    async move {
        let stats = RunStats::default();
        consume::run::<T, H, Tr>(&transport, source, mode, &handler, &ctx, &settings, &ctl, &stats).await
    }
}

/// Runs one consumer of the sequenced topic `T`'s shards until `signal` (or until `connection` is
/// cancelled), then drains within `drain_timeout`.
pub(crate) async fn run_fifo_until_timeout<T, H, Tr, S>(
    transport: Tr,
    connection: &CancellationToken,
    handler: H,
    ctx: H::Context,
    settings: ConsumerSettings<Tr::Options>,
    signal: S,
    drain_timeout: Duration,
) -> SupervisorOutcome
where
    T: Topic,
    H: MessageHandler<T>,
    Tr: Transport,
    S: Future<Output = ()> + Send + 'static,
{
    let mut tasks = TaskSet::new(connection);
    let ctl = tasks.control();
    let stats = tasks.stats();
    let source = Source::Shards(T::topology());
    tasks.spawn(async move {
        consume::run::<T, H, Tr>(&transport, source, Mode::Live, &handler, &ctx, &settings, &ctl, &stats).await
    });
    tasks.run_until(signal, drain_timeout).await
}

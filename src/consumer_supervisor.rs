//! Independent consumers that share one shutdown and report one outcome.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backend::internal::ClientImpl;
use crate::consumer::ConsumerOptions;
use crate::engine::consume::{self, Mode};
use crate::engine::tasks::TaskSet;
use crate::error::{Result, ShoveError};
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};
use crate::transport::Source;
use crate::transport::no_dlq;

pub use crate::outcome::SupervisorOutcome;

type TransportOf<B> = <<B as Backend>::Client as ClientImpl>::Transport;

/// Runs consumers of several topics until a shutdown signal, then drains them.
///
/// Registration spawns the consumer at once on the current tokio runtime.
pub struct ConsumerSupervisor<B: Backend, Ctx: Clone + Send + Sync + 'static = ()> {
    transport: TransportOf<B>,
    ctx: Ctx,
    tasks: TaskSet,
    queues: HashSet<String>,
}

impl<B: Backend> ConsumerSupervisor<B, ()> {
    pub(crate) fn new(client: &B::Client) -> Self {
        Self {
            transport: client.transport(),
            ctx: (),
            tasks: TaskSet::new(&CancellationToken::new()),
            queues: HashSet::new(),
        }
    }

    /// Sets the context passed to every handler registered afterwards.
    pub fn with_context<Ctx: Clone + Send + Sync + 'static>(self, ctx: Ctx) -> ConsumerSupervisor<B, Ctx> {
        ConsumerSupervisor {
            transport: self.transport,
            ctx,
            tasks: self.tasks,
            queues: self.queues,
        }
    }
}

impl<B: Backend, Ctx: Clone + Send + Sync + 'static> ConsumerSupervisor<B, Ctx> {
    /// Cancelling this token starts the same drain as the signal of
    /// [`ConsumerSupervisor::run_until_timeout`].
    pub fn cancellation_token(&self) -> CancellationToken {
        self.tasks.stop_token()
    }

    /// Starts a consumer of the unsequenced topic `T`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`] when `T` is sequenced (use [`ConsumerSupervisor::register_fifo`]) or its
    /// queue is already registered on this supervisor.
    pub fn register<T, H>(&mut self, handler: H, options: ConsumerOptions<B>) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T, Context = Ctx>,
    {
        let topology = T::topology();
        if topology.sequencing().is_some() {
            return Err(ShoveError::Topology(format!(
                "topic '{}' is sequenced; register it with register_fifo",
                topology.queue()
            )));
        }
        self.claim(topology.queue())?;
        self.spawn::<T, H>(Source::Main(topology), Mode::Live, handler, options);
        Ok(())
    }

    /// Starts a per-key ordered consumer of the sequenced topic `T`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`] when `T` is not sequenced or its queue is already registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the consumer is spawned only when the future completes.
    pub async fn register_fifo<T, H>(&mut self, handler: H, options: ConsumerOptions<B>) -> Result<()>
    where
        T: SequencedTopic,
        H: MessageHandler<T, Context = Ctx>,
    {
        let topology = T::topology();
        if topology.sequencing().is_none() {
            return Err(ShoveError::Topology(format!(
                "topic '{}' is not sequenced; register it with register",
                topology.queue()
            )));
        }
        self.claim(topology.queue())?;
        self.spawn::<T, H>(Source::Shards(topology), Mode::Live, handler, options);
        Ok(())
    }

    /// Starts a consumer of `T`'s dead-letter queue that calls [`MessageHandler::handle_dead`] for each
    /// message (an addition over shove 0.11, where DLQ consumption was backend-specific).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`] when `T` has no DLQ or its DLQ is already registered.
    pub fn register_dlq<T, H>(&mut self, handler: H, options: ConsumerOptions<B>) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T, Context = Ctx>,
    {
        let topology = T::topology();
        let Some(dlq) = topology.dlq() else {
            return Err(no_dlq(topology.queue()));
        };
        self.claim(dlq)?;
        self.spawn::<T, H>(Source::DeadLetters(topology), Mode::DeadLetters, handler, options);
        Ok(())
    }

    /// Waits for `signal`, then stops taking messages, lets in-flight handlers finish within
    /// `drain_timeout`, hands unstarted messages back and aborts the rest. Also returns when every
    /// consumer has ended on its own.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves consumers running until the runtime stops.
    pub async fn run_until_timeout<S>(self, signal: S, drain_timeout: Duration) -> SupervisorOutcome
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let stop = self.tasks.stop_token();
        let signal = async move {
            tokio::select! {
                _ = signal => {}
                _ = stop.cancelled() => {}
            }
        };
        self.tasks.run_until(signal, drain_timeout).await
    }

    fn claim(&mut self, queue: &str) -> Result<()> {
        if !self.queues.insert(queue.to_string()) {
            return Err(ShoveError::Topology(format!(
                "queue '{queue}' is already registered on this supervisor"
            )));
        }
        Ok(())
    }

    fn spawn<T, H>(&mut self, source: Source, mode: Mode, handler: H, options: ConsumerOptions<B>)
    where
        T: Topic,
        H: MessageHandler<T, Context = Ctx>,
    {
        let transport = self.transport.clone();
        let ctx = self.ctx.clone();
        let settings = options.consumer_settings(<B::Client as ClientImpl>::transport_options(&options));
        let ctl = self.tasks.control();
        let extra_stop = options.shutdown.clone();
        let stats = self.tasks.stats();
        if let Some(user) = extra_stop {
            // The options' own shutdown token also stops this consumer.
            let stop = ctl.stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = user.cancelled() => stop.cancel(),
                    _ = stop.cancelled() => {}
                }
            });
        }
        self.tasks.spawn(async move {
            consume::run::<T, H, _>(&transport, source, mode, &handler, &ctx, &settings, &ctl, &stats).await
        });
    }
}

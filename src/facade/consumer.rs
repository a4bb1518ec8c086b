//! A consumer run directly, without a supervisor or group: `XConsumer::run`, `run_fifo`,
//! `run_fifo_until_timeout` and `run_dlq`, the same on every backend.

use std::future::Future;
use std::time::Duration;

use crate::backend::Backend;
use crate::backend::internal::ClientImpl;
use crate::consumer::ConsumerOptions;
use crate::consumer_supervisor::SupervisorOutcome;
use crate::engine::consume::Mode;
use crate::engine::direct;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};
use crate::transport::Source;

/// Consumes one topic on one client, without a supervisor. Each backend names it: `NatsConsumer` is
/// `BackendConsumer<Nats>`, and so on (see [the module](crate::facade)).
///
/// Dropping a `run` future abandons the messages its handlers were working on; the broker delivers them
/// again (in-process: at once; RabbitMQ: when the channel closes; Redis: when another consumer claims
/// them; NATS: when their ack wait runs out). Stop through the options' shutdown token to drain instead.
pub struct BackendConsumer<B: Backend> {
    client: B::Client,
}

impl<B: Backend> Clone for BackendConsumer<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
        }
    }
}

impl<B: Backend> BackendConsumer<B> {
    /// A consumer on `client`.
    pub fn new(client: B::Client) -> Self {
        Self { client }
    }

    fn run_source<T, H>(
        &self,
        source: Source,
        mode: Mode,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<B>,
    ) -> impl Future<Output = Result<()>> + Send + use<B, T, H>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        // Without a shutdown token of its own, the consumer stops with the client.
        let stop = options
            .shutdown
            .clone()
            .unwrap_or_else(|| self.client.connection_token().child_token());
        let settings = options.consumer_settings(<B::Client as ClientImpl>::transport_options(&options));
        direct::run::<T, H, _>(self.client.transport(), stop, source, mode, handler, ctx, settings)
    }

    /// Consumes topic `T` until the client is closed or the options' shutdown token is cancelled
    /// (in-flight handlers finish first; messages received but not started go back to the broker).
    /// Creates the topic's queues if they do not exist.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached (after
    /// `max_reconnect_attempts`, when set); [`ShoveError::Topology`](crate::ShoveError::Topology) when the
    /// broker refuses the topic's declarations.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe for handlers: dropping the future abandons in-flight messages, which the broker
    /// delivers again. Stop through the shutdown token to drain instead.
    pub fn run<T, H>(
        &self,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<B>,
    ) -> impl Future<Output = Result<()>> + Send + use<B, T, H>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        self.run_source::<T, H>(Source::Main(T::topology()), Mode::Live, handler, ctx, options)
    }

    /// Consumes the sequenced topic `T`'s shards in per-key order.
    ///
    /// # Errors
    ///
    /// As [`BackendConsumer::run`].
    ///
    /// # Cancel safety
    ///
    /// As [`BackendConsumer::run`].
    pub fn run_fifo<T, H>(
        &self,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<B>,
    ) -> impl Future<Output = Result<()>> + Send + use<B, T, H>
    where
        T: SequencedTopic,
        H: MessageHandler<T>,
    {
        self.run_source::<T, H>(Source::Shards(T::topology()), Mode::Live, handler, ctx, options)
    }

    /// Runs [`BackendConsumer::run_fifo`] until `signal`, the options' shutdown token (already cancelled:
    /// at once) or the client's close, then drains within `drain_timeout`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves the consumer running until the runtime stops.
    pub async fn run_fifo_until_timeout<T, H, S>(
        &self,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<B>,
        signal: S,
        drain_timeout: Duration,
    ) -> SupervisorOutcome
    where
        T: SequencedTopic,
        H: MessageHandler<T>,
        S: Future<Output = ()> + Send + 'static,
    {
        let settings = options.consumer_settings(<B::Client as ClientImpl>::transport_options(&options));
        let shutdown = options.shutdown.clone();
        let signal = async move {
            match shutdown {
                Some(token) => {
                    tokio::select! {
                        () = signal => {}
                        () = token.cancelled_owned() => {}
                    }
                }
                None => signal.await,
            }
        };
        direct::run_fifo_until_timeout::<T, H, _, _>(
            self.client.transport(),
            &self.client.connection_token(),
            handler,
            ctx,
            settings,
            signal,
            drain_timeout,
        )
        .await
    }

    /// Consumes `T`'s DLQ, calling [`MessageHandler::handle_dead`] for each message, until the client is
    /// closed.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T` has no DLQ;
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// As [`BackendConsumer::run`].
    pub fn run_dlq<T, H>(&self, handler: H, ctx: H::Context) -> impl Future<Output = Result<()>> + Send + use<B, T, H>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        self.run_source::<T, H>(
            Source::DeadLetters(T::topology()),
            Mode::DeadLetters,
            handler,
            ctx,
            ConsumerOptions::<B>::new(),
        )
    }
}

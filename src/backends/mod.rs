//! Broker mappings: each backend implements the transport and names its facade types.

/// Defines a backend's `*ConsumerGroupConfig`: a named wrapper over the engine's group settings with the
/// builder methods and getters that backend's shove 0.11 API lists (they differ a little per backend), so
/// every backend's config behaves identically without a copy of each method.
#[cfg(any(
    feature = "inmemory",
    feature = "rabbitmq",
    feature = "redis-streams",
    feature = "nats"
))]
macro_rules! group_config {
    ($(#[$doc:meta])* $name:ident, default = $default:expr, [$($method:ident),* $(,)?]) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            settings: $crate::engine::registry::GroupSettings,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new($default)
            }
        }

        impl $name {
            /// A group of `range` consumers (min..=max).
            ///
            /// # Panics
            ///
            /// When min > max or max is 0, with a message naming the fix.
            pub fn new(range: std::ops::RangeInclusive<u16>) -> Self {
                Self { settings: $crate::engine::registry::GroupSettings::new(range) }
            }

            $( group_config!(@method $name $method); )*
        }
    };
    (@method $name:ident with_prefetch_count) => {
        /// Messages each consumer handles concurrently (default 10).
        pub fn with_prefetch_count(mut self, prefetch_count: u16) -> Self {
            self.settings.prefetch = prefetch_count;
            self
        }
    };
    (@method $name:ident with_max_retries) => {
        /// Retries after the first attempt (default 10).
        pub fn with_max_retries(mut self, max_retries: u32) -> Self {
            self.settings.max_retries = max_retries;
            self
        }
    };
    (@method $name:ident with_concurrent_processing) => {
        /// When false, each consumer runs one handler at a time whatever the prefetch (default true).
        pub fn with_concurrent_processing(mut self, concurrent: bool) -> Self {
            self.settings.concurrent_processing = concurrent;
            self
        }
    };
    (@method $name:ident with_handler_timeout) => {
        /// Per-call handler timeout (default: the registry's, 30 s unless changed).
        ///
        /// # Panics
        ///
        /// When `timeout` is zero: `"handler_timeout must be positive"`.
        pub fn with_handler_timeout(mut self, timeout: std::time::Duration) -> Self {
            assert!(!timeout.is_zero(), "handler_timeout must be positive");
            self.settings.handler_timeout = Some(timeout);
            self
        }
    };
    (@method $name:ident with_max_pending_per_key) => {
        /// Messages buffered per key by a sequenced group (default 1000).
        pub fn with_max_pending_per_key(mut self, limit: usize) -> Self {
            self.settings.max_pending_per_key = Some(limit);
            self
        }
    };
    (@method $name:ident without_max_pending_per_key) => {
        /// Removes the per-key buffer bound.
        pub fn without_max_pending_per_key(mut self) -> Self {
            self.settings.max_pending_per_key = None;
            self
        }
    };
    (@method $name:ident with_max_message_size) => {
        /// Largest payload accepted, in bytes (default 10 MiB); a larger one is dead-lettered.
        pub fn with_max_message_size(mut self, max: usize) -> Self {
            self.settings.max_message_size = Some(max);
            self
        }
    };
    (@method $name:ident without_message_size_limit) => {
        /// Accepts payloads of any size.
        pub fn without_message_size_limit(mut self) -> Self {
            self.settings.max_message_size = None;
            self
        }
    };
    (@method $name:ident prefetch_count) => {
        #[doc = concat!("See [`", stringify!($name), "::with_prefetch_count`].")]
        pub fn prefetch_count(&self) -> u16 {
            self.settings.prefetch
        }
    };
    (@method $name:ident max_retries) => {
        #[doc = concat!("See [`", stringify!($name), "::with_max_retries`].")]
        pub fn max_retries(&self) -> u32 {
            self.settings.max_retries
        }
    };
    (@method $name:ident min_consumers) => {
        /// The smallest group size.
        pub fn min_consumers(&self) -> u16 {
            self.settings.min
        }
    };
    (@method $name:ident max_consumers) => {
        /// The largest group size.
        pub fn max_consumers(&self) -> u16 {
            self.settings.max
        }
    };
    (@method $name:ident concurrent_processing) => {
        #[doc = concat!("See [`", stringify!($name), "::with_concurrent_processing`].")]
        pub fn concurrent_processing(&self) -> bool {
            self.settings.concurrent_processing
        }
    };
    (@method $name:ident handler_timeout) => {
        /// The timeout set on this config, if any.
        pub fn handler_timeout(&self) -> Option<std::time::Duration> {
            self.settings.handler_timeout
        }
    };
    (@method $name:ident max_pending_per_key) => {
        /// The per-key buffer bound of a sequenced group, if any.
        pub fn max_pending_per_key(&self) -> Option<usize> {
            self.settings.max_pending_per_key
        }
    };
    (@method $name:ident max_message_size) => {
        /// The largest payload accepted, if bounded.
        pub fn max_message_size(&self) -> Option<usize> {
            self.settings.max_message_size
        }
    };
}

/// Defines a broker backend's direct consumer (`RabbitMqConsumer`, `RedisConsumer`, `NatsConsumer`): the
/// shove 0.11 methods `run`, `run_fifo`, `run_fifo_until_timeout` and `run_dlq`, each a name over the
/// engine's direct consumers. `what` names what the backend reads (e.g. "queue"), `dropped` says what
/// happens to in-flight messages when a `run` future is dropped.
#[cfg(any(feature = "rabbitmq", feature = "redis-streams", feature = "nats"))]
macro_rules! consumer_facade {
    ($(#[$doc:meta])* $name:ident, $client:ty, $marker:ty, what = $what:literal, dropped = $dropped:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            client: $client,
        }

        impl $name {
            /// A consumer on `client`.
            pub fn new(client: $client) -> Self {
                Self { client }
            }

            pub(crate) fn client(&self) -> &$client {
                &self.client
            }

            async fn run_source<T, H>(
                &self,
                source: $crate::transport::Source,
                mode: $crate::engine::consume::Mode,
                handler: H,
                ctx: H::Context,
                options: $crate::consumer::ConsumerOptions<$marker>,
            ) -> $crate::error::Result<()>
            where
                T: $crate::topic::Topic,
                H: $crate::handler::MessageHandler<T>,
            {
                let connection = self.client.shutdown_token();
                $crate::engine::direct::run::<$marker, T, H, _>(
                    self.client.transport(),
                    &connection,
                    source,
                    mode,
                    handler,
                    ctx,
                    &options,
                )
                .await
            }

            #[doc = concat!("Consumes topic `T` until the client shuts down or the options' shutdown token is \
                cancelled (in-flight handlers finish first; messages received but not started go back to \
                the broker). Creates the topic's ", $what, " if they do not exist.")]
            ///
            /// # Errors
            ///
            /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached (after
            /// `max_reconnect_attempts`, when set); [`ShoveError::Topology`](crate::ShoveError::Topology) when the
            /// broker refuses the topic's declarations.
            ///
            /// # Cancel safety
            ///
            #[doc = concat!(
                "Not cancel-safe for handlers: dropping the future abandons in-flight messages, ",
                $dropped,
                ". Stop through the shutdown token to drain instead."
            )]
            pub async fn run<T, H>(
                &self,
                handler: H,
                ctx: H::Context,
                options: $crate::consumer::ConsumerOptions<$marker>,
            ) -> $crate::error::Result<()>
            where
                T: $crate::topic::Topic,
                H: $crate::handler::MessageHandler<T>,
            {
                self.run_source::<T, H>(
                    $crate::transport::Source::Main(T::topology()),
                    $crate::engine::consume::Mode::Live,
                    handler,
                    ctx,
                    options,
                )
                .await
            }

            /// Consumes the sequenced topic `T`'s shards in per-key order.
            ///
            /// # Errors
            ///
            #[doc = concat!("As [`", stringify!($name), "::run`].")]
            ///
            /// # Cancel safety
            ///
            #[doc = concat!("As [`", stringify!($name), "::run`].")]
            pub async fn run_fifo<T, H>(
                &self,
                handler: H,
                ctx: H::Context,
                options: $crate::consumer::ConsumerOptions<$marker>,
            ) -> $crate::error::Result<()>
            where
                T: $crate::topic::SequencedTopic,
                H: $crate::handler::MessageHandler<T>,
            {
                self.run_source::<T, H>(
                    $crate::transport::Source::Shards(T::topology()),
                    $crate::engine::consume::Mode::Live,
                    handler,
                    ctx,
                    options,
                )
                .await
            }

            #[doc = concat!("Runs [`", stringify!($name), "::run_fifo`] until `signal` (or until the client \
                shuts down), then drains within `drain_timeout`.")]
            ///
            /// # Cancel safety
            ///
            /// Not cancel-safe: dropping the future leaves the consumer running until the runtime stops.
            pub async fn run_fifo_until_timeout<T, H, S>(
                &self,
                handler: H,
                ctx: H::Context,
                options: $crate::consumer::ConsumerOptions<$marker>,
                signal: S,
                drain_timeout: std::time::Duration,
            ) -> $crate::consumer_supervisor::SupervisorOutcome
            where
                T: $crate::topic::SequencedTopic,
                H: $crate::handler::MessageHandler<T>,
                S: std::future::Future<Output = ()> + Send + 'static,
            {
                let connection = self.client.shutdown_token();
                $crate::engine::direct::run_until_timeout::<$marker, T, H, _, S>(
                    self.client.transport(),
                    &connection,
                    $crate::transport::Source::Shards(T::topology()),
                    handler,
                    ctx,
                    &options,
                    signal,
                    drain_timeout,
                )
                .await
            }

            /// Consumes `T`'s DLQ, calling [`MessageHandler::handle_dead`](crate::MessageHandler::handle_dead)
            /// for each message, until the client shuts down.
            ///
            /// # Errors
            ///
            /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T` has no DLQ;
            /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
            ///
            /// # Cancel safety
            ///
            #[doc = concat!("As [`", stringify!($name), "::run`].")]
            pub async fn run_dlq<T, H>(&self, handler: H, ctx: H::Context) -> $crate::error::Result<()>
            where
                T: $crate::topic::Topic,
                H: $crate::handler::MessageHandler<T>,
            {
                self.run_source::<T, H>(
                    $crate::transport::Source::DeadLetters(T::topology()),
                    $crate::engine::consume::Mode::DeadLetters,
                    handler,
                    ctx,
                    $crate::consumer::ConsumerOptions::<$marker>::new(),
                )
                .await
            }
        }
    };
}

/// Defines a backend's `*ConsumerGroup`: a named wrapper over one engine group with the operations every
/// backend's shove 0.11 API shares (its constructors stay with the backend, as they differ).
#[cfg(any(
    feature = "inmemory",
    feature = "rabbitmq",
    feature = "redis-streams",
    feature = "nats"
))]
macro_rules! group_facade {
    ($(#[$doc:meta])* $name:ident, $config:ident) => {
        $(#[$doc])*
        pub struct $name {
            group: $crate::engine::registry::Group,
            config: $config,
        }

        impl AsRef<$crate::engine::registry::Group> for $name {
            fn as_ref(&self) -> &$crate::engine::registry::Group {
                &self.group
            }
        }

        impl AsMut<$crate::engine::registry::Group> for $name {
            fn as_mut(&mut self) -> &mut $crate::engine::registry::Group {
                &mut self.group
            }
        }

        impl From<$crate::engine::registry::Group> for $name {
            fn from(group: $crate::engine::registry::Group) -> Self {
                let config = $config {
                    settings: group.settings().clone(),
                };
                Self { group, config }
            }
        }

        impl $name {
            /// Starts `min_consumers` consumers (at least one).
            pub fn start(&mut self) {
                self.group.start();
            }

            /// Adds a consumer; false at `max_consumers`.
            pub fn scale_up(&mut self) -> bool {
                self.group.scale_up()
            }

            /// Stops one idle consumer; false at `min_consumers` or when every consumer is busy.
            pub fn scale_down(&mut self) -> bool {
                self.group.scale_down()
            }

            /// Consumers running.
            pub fn active_consumers(&self) -> usize {
                self.group.active_consumers()
            }

            /// The group's queue.
            pub fn queue(&self) -> &str {
                self.group.queue()
            }

            /// The group's settings.
            pub fn config(&self) -> &$config {
                &self.config
            }

            /// Stops every consumer after its in-flight handlers finish; deliveries not started go back
            /// to the broker.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: consumers already told to stop keep draining.
            pub async fn shutdown(&mut self) {
                self.group.shutdown().await;
            }
        }
    };
}

/// Defines a backend's consumer-group registry: named groups on one connection, registered, started and
/// stopped through the engine, and visible to `Broker::autoscaler` through the connection's directory.
/// The connection field is `conn`; the backend says how to get its transport, shutdown token and directory.
#[cfg(any(
    feature = "inmemory",
    feature = "rabbitmq",
    feature = "redis-streams",
    feature = "nats"
))]
macro_rules! group_registry {
    (
        $(#[$doc:meta])* $name:ident {
            connection: $conn:ty,
            group: $group:ident,
            config: $config:ident,
            transport: $transport:ty = |$t:ident| $transport_of:expr,
            token: |$k:ident| $token_of:expr,
            directory: |$d:ident| $directory_of:expr $(,)?
        }
    ) => {
        $(#[$doc])*
        pub struct $name {
            conn: $conn,
            default_handler_timeout: Option<std::time::Duration>,
            groups: std::collections::HashMap<String, $group>,
        }

        impl $name {
            #[doc = concat!("An empty registry on `", stringify!($conn), "`.")]
            pub fn new(conn: $conn) -> Self {
                Self {
                    conn,
                    default_handler_timeout: None,
                    groups: std::collections::HashMap::new(),
                }
            }

            /// The handler timeout for groups whose config sets none.
            ///
            /// # Panics
            ///
            /// When `timeout` is zero: `"default_handler_timeout must be positive"`.
            pub fn with_default_handler_timeout(mut self, timeout: std::time::Duration) -> Self {
                assert!(!timeout.is_zero(), "default_handler_timeout must be positive");
                self.default_handler_timeout = Some(timeout);
                self
            }

            #[doc = concat!("Declares topic `T`'s queues on the broker (idempotent) and registers a group for \
                it, not started: see [`", stringify!($name), "::start_all`].")]
            ///
            /// # Errors
            ///
            /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T`'s queue already has a group, `T`
            /// is sequenced, or the broker refuses the declaration;
            /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: nothing is registered until the declaration has completed.
            pub async fn register<T, H>(
                &mut self,
                config: $config,
                handler_factory: impl Fn() -> H + Send + Sync + 'static,
                ctx: H::Context,
            ) -> $crate::error::Result<()>
            where
                T: $crate::topic::Topic + 'static,
                H: $crate::handler::MessageHandler<T> + 'static,
            {
                self.add::<T, H>(false, config, handler_factory, ctx).await
            }

            /// Declares the sequenced topic `T`'s queues and registers a per-key ordered group for it.
            ///
            /// # Errors
            ///
            #[doc = concat!("As [`", stringify!($name), "::register`], and when `T` is not sequenced.")]
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: nothing is registered until the declaration has completed.
            pub async fn register_fifo<T, H>(
                &mut self,
                config: $config,
                handler_factory: impl Fn() -> H + Send + Sync + 'static,
                ctx: H::Context,
            ) -> $crate::error::Result<()>
            where
                T: $crate::topic::SequencedTopic + 'static,
                H: $crate::handler::MessageHandler<T> + 'static,
            {
                self.add::<T, H>(true, config, handler_factory, ctx).await
            }

            async fn add<T, H>(
                &mut self,
                fifo: bool,
                config: $config,
                handler_factory: impl Fn() -> H + Send + Sync + 'static,
                ctx: H::Context,
            ) -> $crate::error::Result<()>
            where
                T: $crate::topic::Topic,
                H: $crate::handler::MessageHandler<T>,
            {
                let token = $crate::backend::internal::RegistryImpl::broker_token(self).child_token();
                $crate::engine::registry::add_group::<_, T, H>(self, fifo, config.settings, token, handler_factory, ctx)
                    .await
            }

            /// Starts every group at its minimum size.
            pub fn start_all(&mut self) {
                $crate::engine::registry::start_all(&mut self.groups);
            }

            /// The groups, by queue name.
            pub fn groups(&self) -> &std::collections::HashMap<String, $group> {
                &self.groups
            }

            /// The groups, by queue name, for scaling by hand.
            pub fn groups_mut(&mut self) -> &mut std::collections::HashMap<String, $group> {
                &mut self.groups
            }

            /// Stops every group after in-flight handlers finish.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: consumers already told to stop keep draining.
            pub async fn shutdown_all(&mut self) {
                $crate::engine::registry::shutdown_all(&mut self.groups).await;
            }
        }

        #[allow(private_interfaces)]
        impl $crate::backend::internal::RegistryImpl for $name {
            type GroupConfig = $config;
            type Transport = $transport;

            fn transport(&self) -> $transport {
                let $t = &self.conn;
                $transport_of
            }

            fn group_settings(config: &$config) -> $crate::engine::registry::GroupSettings {
                config.settings.clone()
            }

            fn default_handler_timeout(&self) -> Option<std::time::Duration> {
                self.default_handler_timeout
            }

            fn set_default_handler_timeout(&mut self, timeout: std::time::Duration) {
                self.default_handler_timeout = Some(timeout);
            }

            fn broker_token(&self) -> tokio_util::sync::CancellationToken {
                let $k = &self.conn;
                $token_of
            }

            fn engine(&mut self) -> &mut dyn $crate::engine::registry::GroupSet {
                &mut self.groups
            }

            fn directory(&self) -> std::sync::Arc<$crate::engine::registry::GroupDirectory<Self>> {
                let $d = &self.conn;
                $directory_of
            }
        }
    };
}

/// Defines a backend's autoscaler backend: scales the groups of one registry (or of every group made
/// through `Broker::consumer_group` on a connection) by the depth a stats provider reports. The backend
/// says which two of its statistics are the ready and in-flight counts; its constructors that pick a
/// default provider stay with the backend.
#[cfg(any(
    feature = "inmemory",
    feature = "rabbitmq",
    feature = "redis-streams",
    feature = "nats"
))]
macro_rules! autoscaler_facade {
    (
        $(#[$doc:meta])*
        $name:ident<S: $provider:ident = $default:ty> {
            registry: $registry:ty,
            with_stats_provider: $with_doc:literal,
            depth: |$s:ident| ($ready:expr, $in_flight:expr) $(,)?
        }
    ) => {
        $(#[$doc])*
        pub struct $name<S: $provider = $default> {
            stats: S,
            registries: $crate::engine::registry::Registries<$registry>,
        }

        impl<S: $provider> $name<S> {
            #[doc = $with_doc]
            pub fn with_stats_provider(
                stats_provider: S,
                registry: std::sync::Arc<tokio::sync::Mutex<$registry>>,
            ) -> Self {
                Self {
                    stats: stats_provider,
                    registries: $crate::engine::registry::Registries::One(registry),
                }
            }

            /// Every group of a connection's directory, read through `stats`.
            pub(crate) fn over_directory(
                stats: S,
                directory: std::sync::Arc<$crate::engine::registry::GroupDirectory<$registry>>,
            ) -> Self {
                Self {
                    stats,
                    registries: $crate::engine::registry::Registries::Directory(directory),
                }
            }
        }

        impl<S: $provider> $crate::autoscaler::AutoscalerBackend for $name<S> {
            type GroupId = String;

            async fn list_groups(&self) -> $crate::error::Result<Vec<String>> {
                Ok(self.registries.names().await)
            }

            async fn fetch_metrics(&self, group: &String) -> $crate::error::Result<$crate::autoscaler::ScalingMetrics> {
                let view = self.registries.view(group).await?;
                let $s = self.stats.get_queue_stats(&view.queue).await?;
                Ok($crate::autoscaler::ScalingMetrics::new(
                    $ready,
                    $in_flight,
                    view.active,
                    view.prefetch,
                ))
            }

            async fn scale(&self, group: &String, decision: $crate::autoscaler::ScalingDecision) -> $crate::error::Result<()> {
                self.registries.scale(group, decision).await
            }
        }
    };
}

#[cfg(feature = "inmemory")]
pub(crate) mod inmemory;

#[cfg(feature = "nats")]
pub(crate) mod nats;

#[cfg(feature = "rabbitmq")]
pub(crate) mod rabbitmq;

#[cfg(feature = "redis-streams")]
pub(crate) mod redis;

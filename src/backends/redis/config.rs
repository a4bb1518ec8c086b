//! Connection settings for Redis / Valkey.

use std::time::Duration;

/// Which deployment to connect to.
pub enum RedisMode {
    /// One server (or a primary behind a proxy), e.g. `redis://127.0.0.1:6379/`.
    Standalone {
        /// The server URL.
        url: String,
    },
    /// A Redis Cluster (not supported by this build: connecting fails with a message saying so).
    Cluster {
        /// Seed node URLs.
        urls: Vec<String>,
    },
}

/// Where and how to connect to Redis. `Default` is standalone `redis://127.0.0.1:6379/`, consumer group
/// `shove`, response timeout 30 s, connection timeout 10 s.
pub struct RedisConfig {
    /// The deployment.
    pub mode: RedisMode,
    /// The stream consumer group (`None`: `"shove"`).
    pub group: Option<String>,
    response_timeout: Duration,
    connection_timeout: Duration,
}

/// Blocking reads wait up to this long; the response timeout must leave room for them.
pub(crate) const BLOCK_TIME: Duration = Duration::from_secs(1);

impl Default for RedisConfig {
    fn default() -> Self {
        Self::new(RedisMode::Standalone {
            url: "redis://127.0.0.1:6379/".into(),
        })
    }
}

impl RedisConfig {
    /// Settings for `mode` with the defaults above.
    pub fn new(mode: RedisMode) -> Self {
        Self {
            mode,
            group: None,
            response_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the consumer group name.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How long one command may take.
    ///
    /// # Panics
    ///
    /// When `timeout` is 2 s or less: blocking stream reads wait up to 1 s and need the margin.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            timeout > Duration::from_secs(2),
            "response_timeout must exceed 2s (blocking stream reads wait up to {BLOCK_TIME:?})"
        );
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take.
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"connection_timeout must be positive"`.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "connection_timeout must be positive");
        self.connection_timeout = timeout;
        self
    }

    /// The consumer group name: the configured one, or `"shove"`.
    pub fn resolved_group(&self) -> &str {
        self.group.as_deref().unwrap_or("shove")
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    pub(crate) fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }
}

//! The connection to NATS: one `async-nats` client (which reconnects by itself) and its JetStream context,
//! shared by publishers, consumers and declarers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::{ConnectErrorKind, ConnectOptions, RequestErrorKind, ServerAddr};
use tokio_util::sync::CancellationToken;

use super::config::NatsConfig;
use super::ledger::Ledger;
use super::transport::{NatsOptions, NatsTransport};
use crate::backend::Backend;
use crate::backend::internal::ClientImpl;
use crate::consumer::ConsumerOptions;
use crate::error::{Result, ShoveError};
use crate::transport::Attachments;
use crate::transport::redact::{redact_url, without_secrets};

/// How long one attempt to reach a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `connect` waits for the JetStream account check.
const JETSTREAM_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for buffered messages to be written.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a NATS server with JetStream, shared by publishers, consumers and declarers. Cheap to
/// clone; clones share the connection.
///
/// The connection reconnects by itself after a network failure or a server restart; operations fail
/// with [`ShoveError::Connection`] meanwhile, and consumers resume once it is back.
#[derive(Clone)]
pub struct NatsClient {
    inner: Arc<Inner>,
}

struct Inner {
    core: async_nats::Client,
    jetstream: jetstream::Context,
    shutdown: CancellationToken,
    /// Names of the streams and consumers this client has already created or checked.
    cache: Mutex<HashSet<String>>,
    /// What the layers above keep per client (the consumer groups `Broker::autoscaler` sees).
    attachments: Attachments,
    /// The hand-back ledger, opened on first use (see `super::ledger`).
    ledger: tokio::sync::OnceCell<Ledger>,
    /// The configured URL with credentials hidden, for messages.
    url: String,
}

/// The servers of `config`, checked: each URL parses, and TLS paths come with TLS URLs only.
fn server_addrs(config: &NatsConfig) -> Result<Vec<ServerAddr>> {
    let urls: Vec<&str> = config.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        return Err(ShoveError::Connection(
            "NatsConfig::url is empty; set it to the server URL, e.g. nats://localhost:4222".into(),
        ));
    }
    let mut servers = Vec::with_capacity(urls.len());
    for url in urls {
        let addr: ServerAddr = url.parse().map_err(|e| {
            ShoveError::Connection(without_secrets(
                &format!(
                    "invalid NATS URL '{}': {e}; expected e.g. nats://localhost:4222 or tls://host:4222",
                    redact_url(url)
                ),
                url,
            ))
        })?;
        if config.has_tls_options() && !matches!(addr.scheme(), "tls" | "wss") {
            return Err(ShoveError::Connection(format!(
                "NatsConfig sets TLS certificates but the URL '{}' is not a TLS URL; use tls://{}:{} \
                 (or remove the tls_* settings to connect without TLS)",
                redact_url(url),
                addr.host(),
                addr.port()
            )));
        }
        servers.push(addr);
    }
    Ok(servers)
}

/// The `async-nats` options for `config`: name, timeout, authentication and TLS.
async fn connect_options(config: &NatsConfig) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .name(format!("shove-rs-{}", std::process::id()))
        .connection_timeout(CONNECT_TIMEOUT);

    let methods = [
        config.username.is_some() || config.password.is_some(),
        config.token.is_some(),
        config.nkey_seed.is_some(),
        config.creds_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(ShoveError::Connection(
            "NatsConfig sets more than one authentication method; set only one of username/password, \
             token, nkey_seed or creds_file"
                .into(),
        ));
    }
    match (&config.username, &config.password) {
        (Some(user), Some(password)) => options = options.user_and_password(user.clone(), password.clone()),
        (Some(_), None) => {
            return Err(ShoveError::Connection(
                "NatsConfig::username is set without a password; set NatsConfig::password too".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ShoveError::Connection(
                "NatsConfig::password is set without a user name; set NatsConfig::username too".into(),
            ));
        }
        (None, None) => {}
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(seed) = &config.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(path) = &config.creds_file {
        options = options.credentials_file(path).await.map_err(|e| {
            ShoveError::Connection(format!(
                "cannot read the NATS credentials file {}: {e}; check NatsConfig::creds_file",
                path.display()
            ))
        })?;
    }

    if let Some(ca) = &config.tls_ca_cert {
        options = options.add_root_certificates(ca.clone());
    }
    match (&config.tls_client_cert, &config.tls_client_key) {
        (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
        (Some(_), None) => {
            return Err(ShoveError::Connection(
                "NatsConfig::tls_client_cert is set without tls_client_key; set both for mutual TLS".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ShoveError::Connection(
                "NatsConfig::tls_client_key is set without tls_client_cert; set both for mutual TLS".into(),
            ));
        }
        (None, None) => {}
    }
    if config.has_tls_options() {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// What to do about a failed connection attempt, by its kind.
fn connect_hint(kind: ConnectErrorKind) -> &'static str {
    match kind {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            "check the credentials (username/password, token, nkey_seed or creds_file)"
        }
        ConnectErrorKind::Tls => {
            "check the TLS settings: the server must have TLS enabled and its certificate must be trusted \
             (NatsConfig::tls_ca_cert)"
        }
        ConnectErrorKind::ServerParse | ConnectErrorKind::Dns => "check the host name in NatsConfig::url",
        _ => "is nats-server running with JetStream (-js), and is the URL right?",
    }
}

/// The JetStream errors that mean JetStream is off for the server or the account.
const JETSTREAM_NOT_ENABLED: [u64; 2] = [10076, 10039];

/// Fails when the server says JetStream is not available to this account (nobody answers the JetStream
/// API, or it answers "not enabled"). Other trouble (a timeout, an account that may not read its info) is
/// left for the first JetStream operation to report. A raw `$JS.API.INFO` request is used so the check
/// does not depend on the server version's response format.
async fn check_jetstream(core: &async_nats::Client, url: &str) -> Result<()> {
    let unavailable = |detail: &str| {
        ShoveError::Connection(format!(
            "NATS at {url} has no JetStream ({detail}); start nats-server with JetStream enabled \
             (nats-server -js) and make sure the account may use it"
        ))
    };
    let request = core.request("$JS.API.INFO", Default::default());
    match tokio::time::timeout(JETSTREAM_CHECK_TIMEOUT, request).await {
        Ok(Ok(reply)) => {
            let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
            let error = &answer["error"];
            match error["err_code"].as_u64() {
                Some(code) if JETSTREAM_NOT_ENABLED.contains(&code) => {
                    Err(unavailable(error["description"].as_str().unwrap_or("not enabled")))
                }
                Some(_) => {
                    tracing::debug!(url, error = %error, "the JetStream account check was refused; continuing");
                    Ok(())
                }
                None => Ok(()),
            }
        }
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Err(unavailable("no JetStream API responds")),
        Ok(Err(e)) => {
            tracing::debug!(url, error = %e, "could not check JetStream on the NATS server; continuing");
            Ok(())
        }
        Err(_) => {
            tracing::debug!(url, "the JetStream account check timed out; continuing");
            Ok(())
        }
    }
}

impl NatsClient {
    /// Connects (one attempt per server, 5 s each) and checks that the server offers JetStream.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`] when the settings are inconsistent (a TLS path with a non-TLS URL, a
    /// user name without password, a client certificate without key, several authentication methods, an
    /// unreadable credentials file), when no server can be reached or the credentials are refused, or
    /// when the server has no JetStream for the account. The message says what to change.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: nothing is kept from an abandoned attempt.
    pub async fn connect(config: &NatsConfig) -> Result<Self> {
        let servers = server_addrs(config)?;
        let options = connect_options(config).await?;
        Self::dial(servers, options, redact_url(&config.url)).await
    }

    /// Connects, trying up to `max_attempts` times (at least once) with a doubling backoff (100 ms up to
    /// 5 s). Inconsistent settings fail at once, without retrying.
    ///
    /// # Errors
    ///
    /// As [`NatsClient::connect`]; after the last attempt, that attempt's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn connect_with_retry(config: &NatsConfig, max_attempts: u32) -> Result<Self> {
        let servers = server_addrs(config)?;
        let options = connect_options(config).await?;
        let url = redact_url(&config.url);
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match Self::dial(servers.clone(), options.clone(), url.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if attempt >= max_attempts.max(1) => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, max_attempts, error = %e, "connecting to NATS failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    async fn dial(servers: Vec<ServerAddr>, options: ConnectOptions, url: String) -> Result<Self> {
        // One attempt per server, each bounded by the connection timeout; the outer bound also covers
        // name resolution.
        let bound = CONNECT_TIMEOUT * u32::try_from(servers.len()).unwrap_or(u32::MAX).max(1) + Duration::from_secs(1);
        let core = match tokio::time::timeout(bound, options.connect(servers)).await {
            Ok(Ok(core)) => core,
            Ok(Err(e)) => {
                return Err(ShoveError::Connection(format!(
                    "cannot connect to NATS at {url}: {e}; {}",
                    connect_hint(e.kind())
                )));
            }
            Err(_) => {
                return Err(ShoveError::Connection(format!(
                    "connecting to NATS at {url} timed out after {bound:?}; is nats-server running with \
                     JetStream (-js), and is the URL right?"
                )));
            }
        };
        check_jetstream(&core, &url).await?;
        let jetstream = jetstream::new(core.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                core,
                jetstream,
                shutdown: CancellationToken::new(),
                cache: Mutex::default(),
                attachments: Attachments::default(),
                ledger: tokio::sync::OnceCell::new(),
                url,
            }),
        })
    }

    /// The JetStream context of the connection, for operations shove does not wrap.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// Cancelled when the client shuts down: every consumer on the client then stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Whether the connection is up right now (it is re-established by itself after a failure).
    pub fn is_connected(&self) -> bool {
        self.inner.core.connection_state() == State::Connected
    }

    /// Stops every consumer of this client (in-flight handlers finish) and writes out buffered messages.
    /// Later operations on the client (or any clone) fail with [`ShoveError::Connection`]; the connection
    /// itself closes when the last clone is dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the client is marked shut down first.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, self.inner.core.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "flushing the NATS connection at shutdown"),
            Err(_) => tracing::debug!("flushing the NATS connection at shutdown timed out"),
        }
    }

    /// The core NATS client.
    pub(crate) fn core(&self) -> &async_nats::Client {
        &self.inner.core
    }

    /// The configured URL with credentials hidden, for messages.
    #[allow(dead_code)]
    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// Fails once the client has been shut down.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ShoveError::Connection(
                "the NATS client has been shut down; connect a new one".into(),
            ));
        }
        Ok(())
    }

    /// Checks the server answers (a flush round trip) within `timeout`.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<()> {
        self.check_open()?;
        if !self.is_connected() {
            return Err(ShoveError::Connection(format!(
                "the connection to NATS at {} is down (reconnecting); check that nats-server is running",
                self.inner.url
            )));
        }
        match tokio::time::timeout(timeout, self.inner.core.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ShoveError::Connection(format!(
                "NATS ping to {} failed: {e}",
                self.inner.url
            ))),
            Err(_) => Err(ShoveError::Connection(format!(
                "NATS at {} did not answer within {timeout:?}",
                self.inner.url
            ))),
        }
    }

    /// The hand-back ledger's bucket, opened (and created if needed) on first use.
    pub(crate) async fn ledger(&self) -> Result<&Ledger> {
        self.inner.ledger.get_or_try_init(|| Ledger::open(self)).await
    }

    /// Names of the streams and consumers already created or checked through this client.
    pub(crate) fn cache(&self) -> &Mutex<HashSet<String>> {
        &self.inner.cache
    }
}

impl ClientImpl for NatsClient {
    type Transport = NatsTransport;
    const DEFAULT_GROUP_SIZE: (u16, u16) = (1, 4);

    fn transport(&self) -> NatsTransport {
        NatsTransport::new(self.clone())
    }

    fn connection_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn attachments(&self) -> &Attachments {
        &self.inner.attachments
    }

    fn transport_options<B: Backend>(options: &ConsumerOptions<B>) -> NatsOptions {
        NatsOptions {
            max_ack_pending: options.max_ack_pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(result: Result<impl Sized>) -> String {
        match result {
            Err(ShoveError::Connection(m)) => m,
            Err(other) => panic!("expected a connection error, got {other:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn tls_paths_need_a_tls_url() {
        let mut c = NatsConfig::new("nats://user:pw@broker:4222");
        c.tls_ca_cert = Some("/ca.pem".into());
        let m = err(server_addrs(&c));
        assert!(m.contains("tls://broker:4222") && !m.contains("pw"), "{m}");
        c.url = "tls://broker:4222".into();
        assert_eq!(server_addrs(&c).map(|s| s.len()).ok(), Some(1));
        c.url = "tls://a:4222, tls://b:4222".into();
        assert_eq!(server_addrs(&c).map(|s| s.len()).ok(), Some(2));
        c.url = "tls://a:4222,nats://b:4222".into();
        assert!(err(server_addrs(&c)).contains("'nats://b:4222'"));
        c.tls_ca_cert = None;
        c.url = "nats://a:4222,nats://b:4222".into();
        assert!(server_addrs(&c).is_ok());
        c.url = " ".into();
        assert!(err(server_addrs(&c)).contains("empty"));
        c.url = "http://a:4222".into();
        assert!(err(server_addrs(&c)).contains("invalid NATS URL"));
    }

    #[tokio::test]
    async fn inconsistent_settings_fail_before_dialling() {
        let mut c = NatsConfig {
            username: Some("u".into()),
            ..NatsConfig::default()
        };
        assert!(err(connect_options(&c).await).contains("without a password"));
        c.password = Some("p".into());
        assert!(connect_options(&c).await.is_ok());
        c.token = Some("t".into());
        assert!(err(connect_options(&c).await).contains("more than one authentication method"));

        let mut c = NatsConfig::new("tls://h:4222");
        c.tls_client_cert = Some("/c.pem".into());
        assert!(err(connect_options(&c).await).contains("without tls_client_key"));
        c.tls_client_key = Some("/k.pem".into());
        assert!(connect_options(&c).await.is_ok());

        let c = NatsConfig {
            creds_file: Some("/nonexistent/shove-test.creds".into()),
            ..NatsConfig::default()
        };
        assert!(err(connect_options(&c).await).contains("credentials file"));
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast_with_a_hint() {
        // Port 1 on localhost: refused at once.
        let started = std::time::Instant::now();
        let m = err(NatsClient::connect(&NatsConfig::new("nats://127.0.0.1:1")).await);
        assert!(m.contains("cannot connect to NATS at nats://127.0.0.1:1"), "{m}");
        assert!(m.contains("-js"), "{m}");
        let m = err(NatsClient::connect_with_retry(&NatsConfig::new("nats://127.0.0.1:1"), 2).await);
        assert!(m.contains("cannot connect"), "{m}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

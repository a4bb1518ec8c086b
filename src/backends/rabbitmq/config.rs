//! Connection settings for RabbitMQ.

use std::fmt;
use std::path::PathBuf;

use crate::transport::redact::redact_url;

/// Where and how to connect to RabbitMQ. `Default` is `amqp://guest:guest@localhost:5672`.
#[derive(Clone)]
pub struct RabbitMqConfig {
    /// The AMQP URI, e.g. `amqp://user:pass@host:5672/%2f`.
    pub uri: String,
    /// The management HTTP API, for queue statistics (ready and unacknowledged counts).
    pub management: Option<ManagementConfig>,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        Self::new("amqp://guest:guest@localhost:5672")
    }
}

impl RabbitMqConfig {
    /// Settings for `uri`, without the management API.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            management: None,
        }
    }

    /// The AMQP URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Adds the management API.
    pub fn with_management(mut self, management: ManagementConfig) -> Self {
        self.management = Some(management);
        self
    }

    /// The management API settings, if any.
    pub fn management(&self) -> Option<&ManagementConfig> {
        self.management.as_ref()
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("uri", &redact_url(&self.uri))
            .field("management", &self.management)
            .finish()
    }
}

/// The RabbitMQ management HTTP API (plugin `rabbitmq_management`), over `http://` or `https://`.
///
/// An `https://` URL (default port 443) verifies the server's certificate against the platform's trust
/// store unless [`tls_ca_cert`](Self::tls_ca_cert) or [`tls_skip_verify`](Self::tls_skip_verify) says
/// otherwise; the certificate must name the URL's host (a DNS name or an IP address). A `tls_*` setting
/// with an `http://` URL is refused, so a configured certificate never silently falls back to plaintext.
///
/// ```
/// use shove::rabbitmq::ManagementConfig;
///
/// let mgmt = ManagementConfig::new("https://rabbit.internal:15671", "monitor", "secret")
///     .with_tls_ca_cert("/etc/rabbitmq/ca.pem");
/// assert!(!mgmt.tls_skip_verify);
/// ```
#[derive(Clone)]
pub struct ManagementConfig {
    /// Base URL, e.g. `http://127.0.0.1:15672` or `https://rabbit.internal:15671` (a path prefix such as
    /// `/rabbitmq` is kept).
    pub base_url: String,
    /// User name.
    pub username: String,
    /// Password (redacted in `Debug`).
    pub password: String,
    /// The virtual host whose queues are read (default `/`).
    pub vhost: String,
    /// Accept any server certificate, whoever signed it and whatever name it carries (`https://` URLs
    /// only; the traffic is still encrypted). For tests and throwaway setups; takes precedence over
    /// `tls_ca_cert`.
    pub tls_skip_verify: bool,
    /// A PEM file of CA certificates to trust instead of the platform's roots (`https://` URLs only).
    /// Read when the management client is built (e.g. by `RabbitMqAutoscalerBackend::new`).
    pub tls_ca_cert: Option<PathBuf>,
}

impl ManagementConfig {
    /// Settings for `base_url` with basic-auth credentials, vhost `/`; an `https://` URL trusts the
    /// platform's roots.
    pub fn new(base_url: impl Into<String>, username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            username: username.into(),
            password: password.into(),
            vhost: "/".into(),
            tls_skip_verify: false,
            tls_ca_cert: None,
        }
    }

    /// Sets the virtual host.
    pub fn with_vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// Accepts any server certificate (`https://` URLs only); see
    /// [`tls_skip_verify`](Self::tls_skip_verify).
    pub fn with_tls_skip_verify(mut self) -> Self {
        self.tls_skip_verify = true;
        self
    }

    /// Trusts the PEM CA certificate(s) at `path` instead of the platform's roots (`https://` URLs only);
    /// see [`tls_ca_cert`](Self::tls_ca_cert).
    pub fn with_tls_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_cert = Some(path.into());
        self
    }
}

impl fmt::Debug for ManagementConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("vhost", &self.vhost)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_passwords() {
        let cfg = RabbitMqConfig::new("amqp://app:s3cret@127.0.0.1:5672/%2f").with_management(ManagementConfig::new(
            "http://127.0.0.1:15672",
            "admin",
            "hunter2",
        ));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("amqp://app:<redacted>@127.0.0.1:5672/%2f"), "{shown}");
        assert_eq!(RabbitMqConfig::default().uri(), "amqp://guest:guest@localhost:5672");
        assert_eq!(redact_url("amqp://localhost"), "amqp://localhost");
    }
}

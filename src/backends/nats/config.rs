//! Connection settings for NATS.

use std::fmt;
use std::path::PathBuf;

use crate::transport::redact::redact_url;

/// Where and how to connect to a NATS server (with JetStream enabled). `Default` is
/// `nats://localhost:4222` without authentication or TLS.
///
/// Every field is public, so the struct can be built literally; at most one authentication method
/// (user name and password, token, NKey seed or credentials file) may be set. Any TLS path requires a
/// `tls://` (or `wss://`) URL, so a configured certificate can never silently fall back to plaintext.
/// `Debug` redacts the password, token, NKey seed and any password embedded in the URL.
///
/// # Examples
///
/// ```
/// use shove::nats::NatsConfig;
///
/// let mut config = NatsConfig::new("tls://nats.internal:4222");
/// config.tls_ca_cert = Some("/etc/nats/ca.pem".into());
/// config.token = Some("s3cret".into());
/// assert_eq!(config.url(), "tls://nats.internal:4222");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
pub struct NatsConfig {
    /// The server URL, e.g. `nats://localhost:4222` or `tls://nats.example.com:4222`; several servers of
    /// one cluster may be given separated by commas.
    pub url: String,
    /// A PEM CA certificate to trust when verifying the server (requires a `tls://` URL).
    pub tls_ca_cert: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS (requires `tls_client_key` and a `tls://` URL).
    pub tls_client_cert: Option<PathBuf>,
    /// The PEM private key of `tls_client_cert`.
    pub tls_client_key: Option<PathBuf>,
    /// User name for user/password authentication (requires `password`).
    pub username: Option<String>,
    /// Password for user/password authentication (redacted in `Debug`).
    pub password: Option<String>,
    /// Token for token authentication (redacted in `Debug`).
    pub token: Option<String>,
    /// NKey seed (`SU…`) for NKey authentication (redacted in `Debug`).
    pub nkey_seed: Option<String>,
    /// A `.creds` file (user JWT and NKey seed) for decentralized JWT authentication.
    pub creds_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self::new("nats://localhost:4222")
    }
}

impl NatsConfig {
    /// Settings for `url`, without authentication or TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls_ca_cert: None,
            tls_client_cert: None,
            tls_client_key: None,
            username: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
        }
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether any TLS path is set.
    pub(crate) fn has_tls_options(&self) -> bool {
        self.tls_ca_cert.is_some() || self.tls_client_cert.is_some() || self.tls_client_key.is_some()
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("nkey_seed", &redacted(&self.nkey_seed))
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_new() {
        let d = NatsConfig::default();
        assert_eq!(d.url(), "nats://localhost:4222");
        assert!(!d.has_tls_options());
        assert!(d.username.is_none() && d.password.is_none() && d.token.is_none());
        assert!(d.nkey_seed.is_none() && d.creds_file.is_none());
        let c = NatsConfig::new(String::from("tls://h:4222"));
        assert_eq!(c.url, "tls://h:4222");
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = NatsConfig::new("nats://app:hunter2@h:4222,nats://tok3n@g:4222/x@y");
        c.username = Some("app".into());
        c.password = Some("pa55".into());
        c.token = Some("t0ken".into());
        c.nkey_seed = Some("SUAseed".into());
        c.tls_ca_cert = Some("/ca.pem".into());
        let shown = format!("{c:?}");
        for secret in ["hunter2", "pa55", "t0ken", "SUAseed", "tok3n"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("nats://app:<redacted>@h:4222"), "{shown}");
        assert!(shown.contains("nats://<redacted>@g:4222/x@y"), "{shown}");
        assert!(shown.contains("\"app\"") && shown.contains("/ca.pem"), "{shown}");
        assert!(c.has_tls_options());
    }
}

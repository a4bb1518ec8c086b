//! TLS for the management API client (`https://` base URLs): the rustls client configuration built from
//! [`ManagementConfig`]'s `tls_*` settings, and the handshake over an open TCP connection.
//!
//! Trust comes from exactly one place: any certificate (`tls_skip_verify`), else the PEM CA file
//! (`tls_ca_cert`), else the platform's roots. The platform's roots are read with `rustls-native-certs`
//! rather than compiled in with `webpki-roots`: a management API is usually reached through an internal
//! ingress whose CA an operator installs in the host's trust store (or names with `SSL_CERT_FILE`),
//! which a built-in Mozilla list would not know; it is also the store async-nats (the NATS backend) uses.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::ManagementConfig;
use crate::error::{Result, ShoveError};

/// What to do about a certificate the client does not trust.
const TRUST_HINT: &str = "trust the CA that signed the management API's certificate with \
                          ManagementConfig::with_tls_ca_cert(path to its PEM file), or accept any certificate \
                          with ManagementConfig::with_tls_skip_verify() (tests only)";

/// The TLS side of an `https://` management endpoint: a connector and the name the certificate must carry.
pub(super) struct ManagementTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// Where trust comes from, for `Debug`.
    trust: String,
}

impl fmt::Debug for ManagementTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementTls")
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ManagementTls {
    /// TLS for `host` (a DNS name or an IP address, the SNI and the name checked in the certificate).
    /// Reads the CA file or the platform's roots now, so a bad setting fails at construction.
    pub(super) fn new(config: &ManagementConfig, host: &str) -> Result<Self> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
            ShoveError::Validation(format!(
                "management base_url host '{host}' is neither a DNS name nor an IP address ({e})"
            ))
        })?;
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ShoveError::Unknown(format!("rustls refuses its ring provider: {e}")))?;
        let (mut client_config, trust) = match &config.tls_ca_cert {
            _ if config.tls_skip_verify => {
                let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
                let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier));
                (
                    builder.with_no_client_auth(),
                    "any certificate (tls_skip_verify)".to_string(),
                )
            }
            Some(path) => (
                builder
                    .with_root_certificates(ca_file_roots(path)?)
                    .with_no_client_auth(),
                format!("CA file {}", path.display()),
            ),
            None => (
                builder.with_root_certificates(platform_roots()?).with_no_client_auth(),
                "platform roots".to_string(),
            ),
        };
        client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client_config)),
            server_name,
            trust,
        })
    }

    /// The TLS handshake over `tcp`; `url` names the endpoint in errors.
    pub(super) async fn handshake(&self, tcp: TcpStream, url: &str) -> Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| handshake_error(url, &e))
    }
}

/// A failed handshake, with what to do: trust the CA, or check that the port speaks TLS at all.
fn handshake_error(url: &str, e: &io::Error) -> ShoveError {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let hint = match rustls_error {
        Some(rustls::Error::InvalidCertificate(_)) => "the server's certificate is not trusted; ",
        _ => "check that the URL's port is a TLS listener (use http:// for a plain one); if it is, ",
    };
    ShoveError::Connection(format!(
        "TLS handshake with the RabbitMQ management API at {url} failed: {e}; {hint}{TRUST_HINT}"
    ))
}

/// The certificates of the PEM file at `path` (other PEM sections, such as keys, are skipped).
fn ca_file_roots(path: &Path) -> Result<RootCertStore> {
    let bad_file = |e: pem::Error| {
        let detail = match e {
            pem::Error::Io(e) => e.to_string(),
            other => format!("not valid PEM: {other}"),
        };
        ShoveError::Connection(format!(
            "cannot read the management API's CA certificate file {}: {detail}; check ManagementConfig::tls_ca_cert",
            path.display()
        ))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(bad_file)? {
        roots.add(cert.map_err(bad_file)?).map_err(|e| {
            ShoveError::Connection(format!(
                "the management API's CA certificate file {} holds a certificate that cannot be a trust anchor: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(ShoveError::Connection(format!(
            "the management API's CA certificate file {} contains no PEM certificate (-----BEGIN CERTIFICATE-----); \
             point ManagementConfig::tls_ca_cert at the CA's certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// The platform's trust store (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
fn platform_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "could not load some platform root certificates");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(ShoveError::Connection(format!(
            "no root certificate found in the platform's trust store ({}), so no https certificate can be \
             verified; {TRUST_HINT}",
            if errors.is_empty() {
                "it is empty".to_string()
            } else {
                errors.join("; ")
            }
        )));
    }
    Ok(roots)
}

/// `tls_skip_verify`: any certificate chain and name is accepted. Handshake signatures are still checked,
/// so the peer must hold the key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn https(ca: Option<PathBuf>) -> ManagementConfig {
        let mut config = ManagementConfig::new("https://127.0.0.1:15671", "guest", "guest");
        config.tls_ca_cert = ca;
        config
    }

    fn connection_error(result: Result<ManagementTls>) -> String {
        match result {
            Err(ShoveError::Connection(msg)) => msg,
            other => panic!("expected a connection error, got {other:?}"),
        }
    }

    /// A file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!("shove-mgmt-tls-{}.pem", uuid::Uuid::new_v4().simple()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_missing_ca_file_is_named_with_the_io_error() {
        let path = std::env::temp_dir().join("shove-no-such-dir/ca.pem");
        let msg = connection_error(ManagementTls::new(&https(Some(path.clone())), "127.0.0.1"));
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("No such file") && msg.contains("tls_ca_cert"), "{msg}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let file = TempFile::new("not a certificate\n");
        let msg = connection_error(ManagementTls::new(&https(Some(file.0.clone())), "127.0.0.1"));
        assert!(msg.contains("contains no PEM certificate"), "{msg}");
        assert!(msg.contains(&file.0.display().to_string()), "{msg}");

        let file = TempFile::new("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n");
        let msg = connection_error(ManagementTls::new(&https(Some(file.0.clone())), "127.0.0.1"));
        assert!(msg.contains("not valid PEM"), "{msg}");
    }

    #[test]
    fn server_names_may_be_dns_names_or_ip_addresses() {
        let skip = https(None).with_tls_skip_verify();
        for host in ["127.0.0.1", "::1", "rabbit.internal", "localhost"] {
            let tls = ManagementTls::new(&skip, host).unwrap();
            assert!(format!("{tls:?}").contains("tls_skip_verify"), "{tls:?}");
        }
        let err = ManagementTls::new(&skip, "bad host!").unwrap_err();
        assert!(
            matches!(&err, ShoveError::Validation(m) if m.contains("'bad host!'")),
            "{err:?}"
        );
    }

    #[test]
    fn handshake_errors_say_what_to_do() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let ShoveError::Connection(msg) =
            handshake_error("https://h:1", &io::Error::new(io::ErrorKind::InvalidData, cert))
        else {
            panic!("expected a connection error");
        };
        assert!(msg.contains("https://h:1") && msg.contains("UnknownIssuer"), "{msg}");
        assert!(
            msg.contains("with_tls_ca_cert") && msg.contains("with_tls_skip_verify"),
            "{msg}"
        );
        let ShoveError::Connection(msg) = handshake_error("https://h:1", &io::ErrorKind::ConnectionReset.into()) else {
            panic!("expected a connection error");
        };
        assert!(
            msg.contains("TLS listener") && msg.contains("with_tls_ca_cert"),
            "{msg}"
        );
    }
}

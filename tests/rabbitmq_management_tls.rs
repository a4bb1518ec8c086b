//! The management API client over https, against the real RabbitMQ management API behind a
//! TLS-terminating proxy (as a TLS ingress would front it in production). The RabbitMQ node itself is not
//! reconfigured.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) with the management plugin on 127.0.0.1:15672, and
//! the `openssl` CLI, which makes a throwaway CA and a server certificate for `127.0.0.1` / `localhost`.
//! The proxy is a tokio-rustls server on a loopback port that forwards bytes to 127.0.0.1:15672.
#![cfg(feature = "rabbitmq")]

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use shove::rabbitmq::{
    ConsumerGroupRegistry, ManagementConfig, RabbitMqAutoscalerBackend, RabbitMqClient, RabbitMqConfig,
    RabbitMqConsumerGroupConfig,
};
use shove::{
    AutoscalerBackend, Broker, MessageHandler, MessageMetadata, Outcome, RabbitMq, ShoveError, Topic, TopologyBuilder,
    define_topic,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

const AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MANAGEMENT_ADDR: &str = "127.0.0.1:15672";
const START_HINT: &str = "RabbitMQ must listen on 127.0.0.1:5672 (guest/guest) with the management plugin on \
                          127.0.0.1:15672; run scripts/test.sh, which installs, starts and configures it";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    n: u32,
}

define_topic!(
    Counted,
    Msg,
    TopologyBuilder::new(format!("conf-mgmt-tls-{}", uuid::Uuid::new_v4().simple())).build()
);

/// Registered so the autoscaler backend knows the queue; never started.
struct Ack;

impl MessageHandler<Counted> for Ack {
    type Context = ();

    async fn handle(&self, _: Msg, _: MessageMetadata, _: &()) -> Outcome {
        Outcome::Ack
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl args…` in `dir`; fails (never skips) when the CLI is missing or refuses.
fn openssl(dir: &Path, args: &[&str]) {
    let output = match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("this test needs the `openssl` CLI on PATH to make its throwaway CA; install openssl")
        }
        Err(e) => panic!("cannot run openssl {args:?}: {e}"),
    };
    assert!(
        output.status.success(),
        "openssl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A throwaway CA (`ca.pem`) and a server certificate it signed for `127.0.0.1` and `localhost`
/// (`server.pem`, key `server.key`).
fn make_certificates() -> TempDir {
    let dir = TempDir(std::env::temp_dir().join(format!("shove-mgmt-tls-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).expect("create the temp dir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &dir.0,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=shove throwaway test CA",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.0.join("server.ext"),
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .expect("write server.ext");
    openssl(
        &dir.0,
        &[
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    openssl(
        &dir.0,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    dir
}

/// A TLS server on a loopback port forwarding every connection to the management API. Returns its port.
async fn start_tls_proxy(certs: &Path) -> (u16, JoinHandle<()>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.join("server.pem"))
        .expect("open server.pem")
        .collect::<Result<_, _>>()
        .expect("parse server.pem");
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).expect("parse server.key");
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate and key");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let proxy = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake: nothing to forward.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(MANAGEMENT_ADDR).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (port, proxy)
}

/// Fails (never skips) when the management plugin does not listen.
async fn require_management() {
    let reachable = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(MANAGEMENT_ADDR))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reachable,
        "nothing listens on {MANAGEMENT_ADDR} (RabbitMQ management plugin). {START_HINT}"
    );
}

/// Polls the ready count of `queue` through `scaler` until it is `want`, for at most 30 s (the
/// management plugin refreshes queue statistics every ~5 s). Only "not found yet" is retried.
async fn wait_for_ready(scaler: &RabbitMqAutoscalerBackend, queue: &String, want: u64, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match scaler.fetch_metrics(queue).await {
            Ok(m) if m.messages_ready == want => return,
            Ok(m) => format!("{m:?}"),
            Err(ShoveError::Connection(msg)) if msg.contains("HTTP 404") => msg,
            Err(e) => panic!("reading the stats of {queue} {how} failed: {e}"),
        };
        assert!(
            Instant::now() < deadline,
            "the management API did not report {want} ready messages in {queue} {how} within 30 s; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_over_https_through_a_tls_proxy() {
    require_management().await;
    let certs = make_certificates();
    let ca = certs.0.join("ca.pem");
    let (port, proxy) = start_tls_proxy(&certs.0).await;

    let client = match RabbitMqClient::connect(&RabbitMqConfig::new(AMQP_URI)).await {
        Ok(client) => client,
        Err(e) => panic!("cannot connect to RabbitMQ: {e}. {START_HINT}"),
    };
    let queue = Counted::topology().queue().to_string();
    let registry = Arc::new(Mutex::new(ConsumerGroupRegistry::new(client.clone())));

    let checks = async {
        registry
            .lock()
            .await
            .register::<Counted, _>(RabbitMqConsumerGroupConfig::new(1..=1), || Ack, ())
            .await
            .expect("register declares the durable queue");
        let publisher = Broker::<RabbitMq>::from_client(client.clone())
            .publisher()
            .await
            .expect("publisher");
        for n in 0..3 {
            publisher.publish::<Counted>(&Msg { n }).await.expect("publish");
        }

        // 1. Trusting our CA: the real queue's count, through TLS, by IP address and by DNS name.
        let url = format!("https://127.0.0.1:{port}");
        let mgmt = ManagementConfig::new(&url, "guest", "guest").with_tls_ca_cert(&ca);
        let scaler = RabbitMqAutoscalerBackend::new(&mgmt, registry.clone()).expect("https with a CA file");
        wait_for_ready(&scaler, &queue, 3, "over https with tls_ca_cert").await;
        let by_name =
            ManagementConfig::new(format!("https://localhost:{port}/"), "guest", "guest").with_tls_ca_cert(&ca);
        let scaler = RabbitMqAutoscalerBackend::new(&by_name, registry.clone()).expect("https with a CA file");
        wait_for_ready(&scaler, &queue, 3, "over https://localhost with tls_ca_cert").await;

        // 2. Accepting any certificate, without a CA file.
        let skip = ManagementConfig::new(&url, "guest", "guest").with_tls_skip_verify();
        let scaler = RabbitMqAutoscalerBackend::new(&skip, registry.clone()).expect("https with tls_skip_verify");
        wait_for_ready(&scaler, &queue, 3, "over https with tls_skip_verify").await;

        // 3. Neither: the platform's roots do not know our CA; the error says why and what to do.
        let plain = ManagementConfig::new(&url, "guest", "guest");
        let scaler = RabbitMqAutoscalerBackend::new(&plain, registry.clone()).expect("https with platform roots");
        match scaler.fetch_metrics(&queue).await {
            Err(ShoveError::Connection(msg)) => {
                assert!(msg.contains(&url), "{msg}");
                assert!(msg.contains("certificate") && msg.contains("UnknownIssuer"), "{msg}");
                assert!(
                    msg.contains("with_tls_ca_cert") && msg.contains("with_tls_skip_verify"),
                    "{msg}"
                );
            }
            other => panic!("an untrusted certificate must fail with a connection error, got {other:?}"),
        }

        // 4. An https URL on the plain http listener: the handshake fails with the hint to check the port.
        let wrong_port =
            ManagementConfig::new(format!("https://{MANAGEMENT_ADDR}"), "guest", "guest").with_tls_skip_verify();
        let scaler = RabbitMqAutoscalerBackend::new(&wrong_port, registry.clone()).expect("https with tls_skip_verify");
        match scaler.fetch_metrics(&queue).await {
            Err(ShoveError::Connection(msg)) => {
                assert!(msg.contains("TLS handshake") && msg.contains("TLS listener"), "{msg}")
            }
            other => panic!("https to a plain http listener must fail with a connection error, got {other:?}"),
        }
    };
    let outcome = AssertUnwindSafe(checks).catch_unwind().await;

    registry.lock().await.shutdown_all().await;
    match client.create_channel().await {
        Ok(channel) => {
            if let Err(e) = channel.queue_delete(queue.as_str().into(), Default::default()).await {
                eprintln!("could not delete {queue}: {e}");
            }
        }
        Err(e) => eprintln!("could not delete {queue}: {e}"),
    }
    client.shutdown().await;
    proxy.abort();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn a_missing_ca_file_is_named() {
    let missing = std::env::temp_dir().join(format!("shove-no-such-{}/ca.pem", uuid::Uuid::new_v4().simple()));
    let client = match RabbitMqClient::connect(&RabbitMqConfig::new(AMQP_URI)).await {
        Ok(client) => client,
        Err(e) => panic!("cannot connect to RabbitMQ: {e}. {START_HINT}"),
    };
    let registry = Arc::new(Mutex::new(ConsumerGroupRegistry::new(client.clone())));
    let mgmt = ManagementConfig::new("https://127.0.0.1:15671", "guest", "guest").with_tls_ca_cert(&missing);
    match RabbitMqAutoscalerBackend::new(&mgmt, registry) {
        Err(ShoveError::Connection(msg)) => {
            assert!(msg.contains(&missing.display().to_string()), "{msg}");
            assert!(msg.contains("tls_ca_cert"), "{msg}");
        }
        Err(other) => panic!("expected a connection error naming the file, got {other:?}"),
        Ok(_) => panic!("a missing CA file must be refused"),
    }
    client.shutdown().await;
}

//! A loopback TCP proxy that a scenario owns, put between a client and its broker to break the
//! connection on purpose: cut every connection, refuse new ones (a live outage), or stall the bytes for
//! a while. It listens on 127.0.0.1 only and forwards only to the broker's loopback address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lock;

/// The proxy: a listener on a port of its own, forwarding each connection to `upstream`.
pub struct Proxy {
    port: u16,
    upstream: SocketAddr,
    /// The forwarding tasks of live connections (aborting one closes both of its sockets).
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The accept loop, while the proxy accepts.
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// True while bytes are held.
    stalled: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy to `upstream` (a loopback address), accepting at once.
    pub async fn start(upstream: SocketAddr) -> Self {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy forwards to loopback only, not {upstream}"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy on 127.0.0.1");
        let port = listener.local_addr().expect("the proxy's address").port();
        let proxy = Self {
            port,
            upstream,
            connections: Arc::default(),
            acceptor: Mutex::new(None),
            stalled: watch::channel(false).0,
        };
        proxy.accept_on(listener);
        proxy
    }

    /// The proxy's address, to connect a client to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Closes every connection; new ones are still accepted (a network blip).
    pub fn cut(&self) {
        for task in lock(&self.connections).drain(..) {
            task.abort();
        }
    }

    /// Closes every connection and refuses new ones (a live outage).
    pub fn refuse(&self) {
        if let Some(acceptor) = lock(&self.acceptor).take() {
            acceptor.abort();
        }
        self.cut();
    }

    /// Holds every byte in both directions while `on` (connections stay open), and forwards them again
    /// when it is turned off.
    pub fn stall(&self, on: bool) {
        self.stalled.send_replace(on);
    }

    fn accept_on(&self, listener: TcpListener) {
        let (upstream, connections, stalled) = (self.upstream, self.connections.clone(), self.stalled.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let (up, down) = (stalled.subscribe(), stalled.subscribe());
                let task = tokio::spawn(async move {
                    // Either direction ending ends the connection.
                    tokio::select! {
                        _ = pump(client_read, server_write, up) => {}
                        _ = pump(server_read, client_write, down) => {}
                    }
                });
                let mut live = lock(&connections);
                live.retain(|t| !t.is_finished());
                live.push(task);
            }
        });
        *lock(&self.acceptor) = Some(acceptor);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.refuse();
    }
}

/// Copies bytes from `from` to `to`, holding them while `stalled` is true.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A chunk read as the stall begins is held too.
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

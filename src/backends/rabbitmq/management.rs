//! Queue statistics from the RabbitMQ management HTTP API (plugin `rabbitmq_management`).
//!
//! The crate has no HTTP client dependency, and one GET of a small JSON document does not justify one:
//! this is a minimal HTTP/1.1 client over a TCP connection (`Connection: close`, body read to the end,
//! plain or chunked). `http://` URLs talk over plain TCP; `https://` URLs (default port 443) over rustls,
//! set up in `management_tls` from the config's `tls_skip_verify` / `tls_ca_cert` (else the platform's
//! roots). The HTTP exchange is written once, over any byte stream. Without a management URL, queue
//! depth comes from passive declares.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::ManagementConfig;
use super::facade::{QueueStats, QueueStatsProvider};
use super::management_tls::ManagementTls;
use crate::error::{Result, ShoveError};

/// Every call to the management API is bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A queue's JSON document is a few KiB; a larger answer is not one we asked for.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Reads queue statistics over the RabbitMQ management HTTP API. The default stats source of
/// `RabbitMqAutoscalerBackend`; built from a [`ManagementConfig`].
pub struct ManagementClient {
    endpoint: Endpoint,
    /// Set for an `https://` URL.
    tls: Option<ManagementTls>,
    vhost: String,
    /// `Basic <base64(user:password)>`.
    authorization: String,
}

impl fmt::Debug for ManagementClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementClient")
            .field("base_url", &self.endpoint.display_base())
            .field("vhost", &self.vhost)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ManagementClient {
    /// A client for `config`'s management API. For an `https://` URL this reads the CA file (or the
    /// platform's roots) now.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Validation`] for a URL that is not `http(s)://host[:port][/path]`;
    /// [`ShoveError::Connection`] for a `tls_*` setting with an `http://` URL, or a CA file that cannot
    /// be read or holds no certificate.
    pub(crate) fn new(config: &ManagementConfig) -> Result<Self> {
        let endpoint = Endpoint::parse(&config.base_url)?;
        let tls = if endpoint.tls {
            Some(ManagementTls::new(config, &endpoint.host)?)
        } else if config.tls_skip_verify || config.tls_ca_cert.is_some() {
            // As NatsConfig: a TLS setting never silently falls back to plaintext.
            return Err(ShoveError::Connection(format!(
                "ManagementConfig sets TLS options (tls_skip_verify / tls_ca_cert) but the base_url '{}' is \
                 not an https URL; use https://{}{} (or remove the tls_* settings to use plain http)",
                endpoint.display_base(),
                endpoint.authority,
                endpoint.base_path
            )));
        } else {
            None
        };
        let credentials = format!("{}:{}", config.username, config.password);
        Ok(Self {
            endpoint,
            tls,
            vhost: config.vhost.clone(),
            authorization: format!("Basic {}", base64(credentials.as_bytes())),
        })
    }

    /// `GET {base}/api/queues/{vhost}/{queue}`.
    fn queue_path(&self, queue: &str) -> String {
        format!(
            "{}/api/queues/{}/{}",
            self.endpoint.base_path,
            percent_encode(&self.vhost),
            percent_encode(queue)
        )
    }

    /// GETs `path` and returns the body of a 200 answer.
    async fn get(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{}", self.endpoint.display_base(), path);
        let call = async {
            let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| {
                    ShoveError::Connection(format!("cannot reach the RabbitMQ management API at {url}: {e}"))
                })?;
            let mut stream: Box<dyn Stream> = match &self.tls {
                Some(tls) => Box::new(tls.handshake(tcp, &url).await?),
                None => Box::new(tcp),
            };
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: application/json\r\n\
                 User-Agent: shove\r\nConnection: close\r\n\r\n",
                self.endpoint.authority, self.authorization
            );
            send(&mut stream, request.as_bytes())
                .await
                .map_err(|e| ShoveError::Connection(format!("sending GET {url} to the management API failed: {e}")))?;
            let raw = read_to_end(&mut stream, MAX_RESPONSE)
                .await
                .map_err(|e| ShoveError::Connection(format!("reading the answer to GET {url} failed: {e}")))?;
            parse_response(&raw).map_err(|e| {
                ShoveError::Connection(format!("the management API sent a malformed answer to GET {url}: {e}"))
            })
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
            ShoveError::Connection(format!(
                "the RabbitMQ management API did not answer GET {url} within {CALL_TIMEOUT:?}"
            ))
        })??;
        if response.status != 200 {
            return Err(ShoveError::Connection(format!(
                "the RabbitMQ management API answered GET {url} with HTTP {} {}",
                response.status, response.reason
            )));
        }
        Ok(response.body)
    }
}

impl QueueStatsProvider for ManagementClient {
    async fn get_queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let path = self.queue_path(queue);
        let body = self.get(&path).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ShoveError::Unknown(format!(
                "the management API's answer for queue '{queue}' is not a queue document: {e}"
            ))
        })
    }
}

/// A connection to the management API: plain TCP or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// Where the management API listens, from `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `https://`.
    tls: bool,
    /// Host to connect to (an IPv6 address without brackets).
    host: String,
    port: u16,
    /// `host[:port]` as written in the URL (without user info), for the `Host` header.
    authority: String,
    /// Path prefix without a trailing `/` (usually empty).
    base_path: String,
}

impl Endpoint {
    fn parse(base_url: &str) -> Result<Self> {
        let url = base_url.trim();
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &url["https://".len()..])
        } else if lower.starts_with("http://") {
            (false, &url["http://".len()..])
        } else {
            return Err(ShoveError::Validation(format!(
                "management base_url {url} must start with http:// or https:// (e.g. http://127.0.0.1:15672)"
            )));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        // User info in the URL is dropped: credentials come from the config's username and password.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let invalid = || ShoveError::Validation(format!("management base_url {url} has no valid host[:port]"));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(invalid)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(invalid)?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None | Some("") if tls => 443,
            None | Some("") => 80,
            Some(p) => p.parse::<u16>().map_err(|_| invalid())?,
        };
        if host.is_empty() {
            return Err(invalid());
        }
        let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `http[s]://authority` (never any credentials), for messages.
    fn display_base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `/` becomes `%2F`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4), for the basic-auth header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes all of `buf` and flushes it (TLS buffers records).
async fn send(stream: &mut (impl AsyncWrite + Unpin + ?Sized), buf: &[u8]) -> io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

/// Reads until the peer closes, at most `limit` bytes.
async fn read_to_end(stream: &mut (impl AsyncRead + Unpin + ?Sized), limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > limit {
                    return Err(io::Error::other(format!("the answer is larger than {limit} bytes")));
                }
            }
            // A TLS peer that closes TCP without close_notify (common behind proxies). A truncated answer
            // is still caught: parse_response checks Content-Length and the chunked terminator, and the
            // JSON parse rejects a cut document.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// An HTTP answer.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

/// Parses a complete HTTP/1.x answer (the connection was read to its end).
fn parse_response(raw: &[u8]) -> std::result::Result<Response, String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("no end of the header section")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "the header section is not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let mut chunked = false;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked");
        } else if name.trim().eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = content_length {
        rest.get(..n)
            .ok_or_else(|| format!("the body is {} bytes, Content-Length says {n}", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, reason, body })
}

/// Decodes a `Transfer-Encoding: chunked` body (chunk extensions and trailers are ignored).
fn dechunk(mut data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("a chunk size line is not terminated")?;
        let line = std::str::from_utf8(&data[..line_end]).map_err(|_| "a chunk size line is not UTF-8")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data.get(..size).ok_or("the body ends inside a chunk")?;
        body.extend_from_slice(chunk);
        data = data[size..]
            .strip_prefix(b"\r\n")
            .ok_or("a chunk is not followed by CRLF")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ManagementConfig {
        ManagementConfig::new(url, "guest", "hunter2")
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("guest:guest", "Z3Vlc3Q6Z3Vlc3Q="),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("orders-v1.main_q~"), "orders-v1.main_q~");
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn parses_http_base_urls() {
        let e = Endpoint::parse("http://127.0.0.1:15672").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str(), e.base_path.as_str()),
            ("127.0.0.1", 15672, "127.0.0.1:15672", "")
        );
        let e = Endpoint::parse("HTTP://user:pw@rabbit.local/mgmt/?x=1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str(), e.base_path.as_str()),
            ("rabbit.local", 80, "rabbit.local", "/mgmt")
        );
        let e = Endpoint::parse("http://[::1]:15672/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("::1", 15672, "[::1]:15672")
        );
        let e = Endpoint::parse("HTTPS://rabbit.example/mgmt").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.display_base().as_str()),
            (true, "rabbit.example", 443, "https://rabbit.example")
        );
        let e = Endpoint::parse("https://[::1]:15671").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "::1", 15671));
        assert!(!Endpoint::parse("http://h").unwrap().tls);
        assert!(matches!(
            Endpoint::parse("127.0.0.1:15672"),
            Err(ShoveError::Validation(_))
        ));
        assert!(matches!(
            Endpoint::parse("ftp://127.0.0.1:15672"),
            Err(ShoveError::Validation(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://:15672"),
            Err(ShoveError::Validation(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://host:notaport"),
            Err(ShoveError::Validation(_))
        ));
    }

    #[test]
    fn https_urls_get_tls_and_tls_options_need_an_https_url() {
        let client = ManagementClient::new(&config("https://10.0.0.7:15671/m").with_tls_skip_verify()).unwrap();
        assert!(client.tls.is_some());
        assert!(format!("{client:?}").contains("https://10.0.0.7:15671"), "{client:?}");
        // Without options, an https URL trusts the platform's roots.
        assert!(
            ManagementClient::new(&config("https://rabbit.example"))
                .unwrap()
                .tls
                .is_some()
        );
        assert!(
            ManagementClient::new(&config("http://rabbit.example"))
                .unwrap()
                .tls
                .is_none()
        );

        for cfg in [
            config("http://user:pw@rabbit.example:15672/m/").with_tls_skip_verify(),
            config("http://user:pw@rabbit.example:15672/m/").with_tls_ca_cert("/etc/ca.pem"),
        ] {
            let err = ManagementClient::new(&cfg).unwrap_err();
            let ShoveError::Connection(msg) = err else {
                panic!("expected a connection error, got {err:?}");
            };
            assert!(msg.contains("not an https URL"), "{msg}");
            assert!(msg.contains("use https://rabbit.example:15672/m"), "{msg}");
            assert!(msg.contains("remove the tls_* settings"), "{msg}");
            assert!(!msg.contains("pw"), "{msg}");
        }
    }

    #[test]
    fn queue_path_encodes_vhost_and_queue() {
        let client = ManagementClient::new(&config("http://127.0.0.1:15672/prefix/")).unwrap();
        assert_eq!(client.queue_path("orders/eu"), "/prefix/api/queues/%2F/orders%2Feu");
        let client = ManagementClient::new(&config("http://127.0.0.1:15672").with_vhost("prod")).unwrap();
        assert_eq!(client.queue_path("q"), "/api/queues/prod/q");
        assert_eq!(client.authorization, "Basic Z3Vlc3Q6aHVudGVyMg==");
        assert!(!format!("{client:?}").contains("hunter2"));
        assert!(!format!("{client:?}").contains("Z3Vlc3Q6aHVudGVyMg"));
    }

    #[test]
    fn parses_a_plain_response() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"consumers\":2}";
        // Content-Length is shorter than what follows: only the declared body is kept.
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.body, b"{\"consumers\":");
        let raw = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n{\"error\":\"Object Not Found\"}";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        assert_eq!(r.body, b"{\"error\":\"Object Not Found\"}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n\
                    7\r\n{\"messa\r\n\
                    1A;ext=1\r\nges_ready\":5,\"consumers\":1\r\n\
                    1\r\n}\r\n\
                    0\r\nx-trailer: y\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            "{\"messages_ready\":5,\"consumers\":1}"
        );
        let stats: QueueStats = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (stats.messages_ready, stats.messages_unacknowledged, stats.consumers),
            (5, 0, 1)
        );
        assert!(dechunk(b"5\r\nab").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"2\r\nabX").is_err());
    }

    /// Serves one canned answer on a loopback port and returns what the client sent.
    async fn serve_once(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&request, b"\r\n\r\n").is_none() {
                stream.readable().await.unwrap();
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let mut stream = stream;
            stream.write_all(answer).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, server)
    }

    #[tokio::test]
    async fn get_queue_stats_over_loopback() {
        let (url, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              53\r\n{\"name\":\"q/1\",\"messages_ready\":7,\"messages_unacknowledged\":3,\"consumers\":2,\"x\":[1]}\r\n0\r\n\r\n",
        )
        .await;
        let client = ManagementClient::new(&config(&url)).unwrap();
        let stats = client.get_queue_stats("q/1").await.unwrap();
        assert_eq!(
            (stats.messages_ready, stats.messages_unacknowledged, stats.consumers),
            (7, 3, 2)
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /api/queues/%2F/q%2F1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nAuthorization: Basic Z3Vlc3Q6aHVudGVyMg==\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_non_200_answer_is_a_connection_error_without_the_password() {
        let (url, server) = serve_once(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}").await;
        let err = ManagementClient::new(&config(&url))
            .unwrap()
            .get_queue_stats("q")
            .await
            .unwrap_err();
        server.await.unwrap();
        let ShoveError::Connection(msg) = err else {
            panic!("expected a connection error, got {err:?}");
        };
        assert!(
            msg.contains("401 Unauthorized") && msg.contains(&format!("{url}/api/queues/%2F/q")),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[tokio::test]
    async fn a_missing_stats_field_reads_as_zero() {
        // A queue created a moment ago has no message statistics yet.
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\n{\"name\":\"q\",\"consumers\":0}").await;
        let stats = ManagementClient::new(&config(&url))
            .unwrap()
            .get_queue_stats("q")
            .await
            .unwrap();
        server.await.unwrap();
        assert_eq!((stats.messages_ready, stats.messages_unacknowledged), (0, 0));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_after_5s() {
        tokio::time::pause();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = ManagementClient::new(&config(&url)).unwrap();
        let err = client.get_queue_stats("q").await.unwrap_err();
        assert!(
            matches!(&err, ShoveError::Connection(m) if m.contains("did not answer")),
            "{err:?}"
        );
        drop(listener);
    }
}

//! The protocol-rich test origin: hyper HTTP/1.1 + HTTP/2 (h2c or ALPN over TLS), optional client
//! certificates and PROXY header; paths choose behaviour (status, delay, hang, echo, trailers, ws).
//!
//! Paths: `/status/N`, `/delay/MS`, `/hang` (never answers; bounded by the origin's lifetime),
//! `/echo` (body back), `/trailers` (body `ok` + `grpc-status: 0` trailers), `/ws` (101 then echo),
//! `/close` (answer, then close), `/big/N` (N bytes, chunked), `/first-chunk` (answers with the
//! size of the request body's first frame without reading the rest), `/gated` (sends `part1\n`,
//! then `part2\n` only after a request to `/release`); anything else: `200 NAME\n`.
//! Every response carries `x-backend: NAME` and `x-protocol: HTTP/1.1|HTTP/2.0`.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Upper bound on how long any origin lives (and so on every hang).
const LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct OriginOptions {
    pub name: String,
    /// Serve TLS with this certificate and key (ALPN h2 and http/1.1).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require client certificates signed by this CA (needs `tls`).
    pub client_ca: Option<PathBuf>,
    /// Expect a PROXY protocol header first on every connection.
    pub proxy_protocol: bool,
}

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: HeaderMap,
    pub body_len: usize,
    /// Source address from the PROXY header, when one was expected.
    pub proxy_source: Option<SocketAddr>,
    /// Destination address from the PROXY header, when one was expected.
    pub proxy_destination: Option<SocketAddr>,
    pub client_cert: bool,
}

#[derive(Default)]
struct Shared {
    release: tokio::sync::Notify,
    requests: AtomicU64,
    connections: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    /// Starts on 127.0.0.1 (port chosen by the kernel).
    pub fn start(opts: OriginOptions) -> Result<Origin> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let tls = match &opts.tls {
            Some((cert, key)) => {
                let loaded = lb_user::tls::load_cert(&lb_user::tls::CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })?;
                let mut cfg =
                    (*lb_user::tls::server_config(vec![loaded], Some(0), &[b"h2", b"http/1.1"])?)
                        .clone();
                if let Some(ca) = &opts.client_ca {
                    let mut roots = rustls::RootCertStore::empty();
                    let pem = std::fs::read(ca)?;
                    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                        let c: rustls_pki_types::CertificateDer = c?;
                        roots.add(c)?;
                    }
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        Arc::new(rustls::crypto::ring::default_provider()),
                    )
                    .build()?;
                    let resolver = cfg.cert_resolver.clone();
                    let mut with_auth = rustls::ServerConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()?
                    .with_client_cert_verifier(verifier)
                    .with_cert_resolver(resolver);
                    with_auth.alpn_protocols = cfg.alpn_protocols.clone();
                    cfg = with_auth;
                }
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
            }
            None => None,
        };
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("origin-{}", opts.name))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let serve = accept_loop(listener, opts, tls, sh);
                    tokio::select! {
                        _ = serve => {}
                        _ = rx => {}
                        _ = tokio::time::sleep(LIFETIME) => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .context("spawning origin thread")?;
        Ok(Origin {
            addr,
            shared,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// A plain HTTP origin named `name`.
    pub fn plain(name: &str) -> Result<Origin> {
        Origin::start(OriginOptions {
            name: name.into(),
            ..Default::default()
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every request seen so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen().pop()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    opts: OriginOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let opts = Arc::new(opts);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let (opts, tls, shared) = (opts.clone(), tls.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (source, stream) = if opts.proxy_protocol {
                match lb_user::proxy_protocol::accept(stream, Duration::from_secs(5)).await {
                    Ok((addrs, s)) => (addrs.map(|a| (a.source, a.destination)), s),
                    Err(_) => return,
                }
            } else {
                (
                    None,
                    lb_user::proxy_protocol::Prefixed::new(Bytes::new(), stream),
                )
            };
            match tls {
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let cert = tls.get_ref().1.peer_certificates().is_some();
                    serve(tls, opts, shared, source, cert).await;
                }
                None => serve(stream, opts, shared, source, false).await,
            }
        });
    }
}

async fn serve<I>(
    io: I,
    opts: Arc<OriginOptions>,
    shared: Arc<Shared>,
    source: Option<(SocketAddr, SocketAddr)>,
    cert: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| respond(req, opts.clone(), shared.clone(), source, cert));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn respond(
    mut req: Request<Incoming>,
    opts: Arc<OriginOptions>,
    shared: Arc<Shared>,
    source: Option<(SocketAddr, SocketAddr)>,
    cert: bool,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let version = format!("{:?}", req.version());
    let upgrade = (path == "/ws").then(|| hyper::upgrade::on(&mut req));
    let (parts, mut body) = req.into_parts();
    let bytes = if path == "/first-chunk" {
        // Only the first data frame: proves the proxy streams request bodies.
        let mut first = Bytes::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                first = d;
                break;
            }
        }
        first
    } else {
        body.collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut seen) = shared.seen.lock() {
        seen.push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            version: version.clone(),
            headers: parts.headers.clone(),
            body_len: bytes.len(),
            proxy_source: source.map(|a| a.0),
            proxy_destination: source.map(|a| a.1),
            client_cert: cert,
        });
    }
    let mut status = StatusCode::OK;
    let mut close = false;
    let body = match path.split('/').collect::<Vec<_>>()[..] {
        ["", "status", n] => {
            status = n
                .parse()
                .ok()
                .and_then(|n| StatusCode::from_u16(n).ok())
                .unwrap_or(StatusCode::OK);
            full(format!("{}\n", opts.name))
        }
        ["", "delay", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            full(format!("{}\n", opts.name))
        }
        ["", "hang"] => {
            tokio::time::sleep(LIFETIME).await;
            full("")
        }
        ["", "echo"] => full(bytes),
        ["", "first-chunk"] => full(format!("{}\n", bytes.len())),
        ["", "release"] => {
            shared.release.notify_waiters();
            full("released\n")
        }
        ["", "gated"] => {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let sh = shared.clone();
            tokio::spawn(async move {
                let gate = sh.release.notified();
                tokio::pin!(gate);
                gate.as_mut().enable();
                let _ = tx.send(Frame::data(Bytes::from_static(b"part1\n"))).await;
                let _ = tokio::time::timeout(LIFETIME, gate).await;
                let _ = tx.send(Frame::data(Bytes::from_static(b"part2\n"))).await;
            });
            Chan(rx).boxed()
        }
        ["", "close"] => {
            close = true;
            full(format!("{}\n", opts.name))
        }
        ["", "big", n] => {
            let n: usize = n.parse().unwrap_or(0);
            let chunks = (0..n.div_ceil(16384))
                .map(|i| Frame::data(Bytes::from(vec![b'x'; (n - i * 16384).min(16384)])))
                .collect();
            Frames(chunks).boxed()
        }
        ["", "trailers"] => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("fine"));
            let frames = [
                Frame::data(Bytes::from_static(b"ok")),
                Frame::trailers(trailers),
            ];
            Frames(frames.into_iter().collect()).boxed()
        }
        ["", "ws"] => {
            if let Some(on) = upgrade {
                tokio::spawn(async move {
                    if let Ok(up) = on.await {
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 4096];
                        loop {
                            match io.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                });
                let mut resp = Response::new(full(""));
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                resp.headers_mut()
                    .insert("connection", http::HeaderValue::from_static("upgrade"));
                resp.headers_mut()
                    .insert("upgrade", http::HeaderValue::from_static("websocket"));
                resp.headers_mut().insert(
                    "x-backend",
                    http::HeaderValue::from_str(&opts.name)
                        .unwrap_or(http::HeaderValue::from_static("?")),
                );
                return Ok(resp);
            }
            status = StatusCode::BAD_REQUEST;
            full("not an upgrade\n")
        }
        _ => full(format!("{}\n", opts.name)),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&opts.name) {
        h.insert("x-backend", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&version) {
        h.insert("x-protocol", v);
    }
    if close {
        h.insert("connection", http::HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// A body fed by a task (frames arrive when the task sends them).
struct Chan(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for Chan {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// A body that yields prepared frames one by one (data chunks, then maybe trailers).
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

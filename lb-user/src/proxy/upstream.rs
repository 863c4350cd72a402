//! Upstream connections of one endpoint: a lock-free queue of idle HTTP/1.1 connections or one
//! shared HTTP/2 connection; new ones connect with a timeout, then PROXY header, then TLS.
//! Plain-TCP HTTP/1.1 uses our own client (h1client.rs); TLS, HTTP/2 and upgrades use hyper's.

use super::body::{RespBody, UpBody};
use super::h1client::{H1Conn, SendError};
use crate::config::{Protocol, ProxyVersion};
use crate::proxy_protocol;
use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::SegQueue;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Idle HTTP/1.1 connections kept per endpoint.
const IDLE_PER_ENDPOINT: usize = 1024;

/// How new connections to an endpoint are made; replaced on every table build.
#[derive(Clone)]
pub struct ConnSettings {
    pub protocol: Protocol,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    pub send_proxy: Option<ProxyVersion>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

pub enum Conn {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
    /// Ours; taken by `send` (the response body owns it and returns it to `home`).
    Own(Option<H1Conn>, Option<Arc<Pool>>),
}

impl Conn {
    /// Sends `req` and reads the response head within `timeout`.
    pub async fn send(
        &mut self,
        req: Request<UpBody>,
        timeout: Duration,
    ) -> Result<Response<RespBody>, SendError> {
        if let Conn::Own(conn, home) = self {
            if !matches!(req.body(), UpBody::Stream { .. }) {
                if let Some(c) = conn.take() {
                    let resp = c.send(req, home.take(), timeout).await?;
                    return Ok(resp.map(RespBody::Own));
                }
            }
        }
        // Boxed: hyper's futures are large and only TLS, HTTP/2 and streamed bodies take this
        // path; inline they would be copied with every request's future.
        match tokio::time::timeout(timeout, Box::pin(self.send_hyper(req))).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::timed_out()),
        }
    }

    async fn send_hyper(&mut self, req: Request<UpBody>) -> Result<Response<RespBody>, SendError> {
        let hyper = |r: Result<Response<Incoming>, TrySendError<Request<UpBody>>>| match r {
            Ok(resp) => Ok(resp.map(RespBody::Hyper)),
            Err(mut e) => {
                let back = e.take_message().map(Box::new);
                let err = e.into_error();
                Err(SendError {
                    back,
                    parse: err.is_parse(),
                    timed_out: false,
                    message: err.to_string(),
                })
            }
        };
        match self {
            Conn::H1(s) => hyper(s.try_send_request(req).await),
            Conn::H2(s) => hyper(s.try_send_request(req).await),
            Conn::Own(conn, home) => match conn.take() {
                // Only a streamed body comes here (`send` takes the rest to our client): the
                // endpoint may answer before it ends (an early 413, a streaming echo), so the
                // request must be written while the response is read. hyper's client does both
                // at once; the connection becomes one of its own (pooled by `checkin` afterwards).
                Some(c) => {
                    let private = home.take().is_none();
                    let mut sender = match http1_handshake(TokioIo::new(c.into_io())).await {
                        Ok(sender) => sender,
                        Err(e) => return Err(SendError::unsent(req, e.to_string())),
                    };
                    let sent = hyper(sender.try_send_request(req).await);
                    if !private {
                        *self = Conn::H1(sender);
                    }
                    sent
                }
                None => Err(SendError::unsent(req, "connection already used")),
            },
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Conn::H2(_))
    }
}

/// A checked-out connection: `reused` tells a stale keep-alive race from a real failure.
pub struct Checkout {
    pub conn: Conn,
    pub reused: bool,
    /// Time spent connecting (None when reused).
    pub connect_time: Option<Duration>,
    /// Returned to the pool after the response (false for private or upgraded connections).
    pub poolable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
}

enum IdleConn {
    Hyper(http1::SendRequest<UpBody>),
    Own(H1Conn),
}

struct Idle {
    conn: IdleConn,
    since: Instant,
}

/// Idle connections, at most [`IDLE_PER_ENDPOINT`]: memory grows with what is idle (in blocks
/// of 31), so 30k endpoints without traffic cost nothing (a preallocated ring of 1024 slots
/// each cost 64 KiB per endpoint, 1.6 GiB at 10k Services).
#[derive(Default)]
struct IdleQueue {
    queue: SegQueue<Idle>,
    len: AtomicUsize,
}

impl IdleQueue {
    fn pop(&self) -> Option<Idle> {
        let idle = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(idle)
    }

    /// Keeps `idle` unless the queue is full (then it is dropped: the connection closes).
    fn push(&self, idle: Idle) {
        if self.len.fetch_add(1, Ordering::Relaxed) < IDLE_PER_ENDPOINT {
            self.queue.push(idle);
        } else {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pub struct Pool {
    address: SocketAddr,
    pub settings: ArcSwap<ConnSettings>,
    idle: IdleQueue,
    h2: ArcSwapOption<http2::SendRequest<UpBody>>,
}

/// Who the connection is for: PROXY headers carry these; upgrades need a private connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnFor {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub upgrade: bool,
}

impl Pool {
    pub fn new(address: SocketAddr, settings: ConnSettings) -> Self {
        Pool {
            address,
            settings: ArcSwap::from_pointee(settings),
            idle: IdleQueue::default(),
            h2: ArcSwapOption::empty(),
        }
    }

    /// An idle connection, or a new one. Ours come with the pool as their home unless private.
    pub async fn checkout(self: &Arc<Self>, who: ConnFor) -> Result<Checkout, ConnectError> {
        let settings = self.settings.load_full();
        let private = settings.send_proxy.is_some() || who.upgrade;
        if !private && settings.protocol == Protocol::Http2 {
            if let Some(s) = self.h2.load().as_deref() {
                if !s.is_closed() {
                    return Ok(Checkout {
                        conn: Conn::H2(s.clone()),
                        reused: true,
                        connect_time: None,
                        poolable: false,
                    });
                }
            }
        } else if !private {
            while let Some(idle) = self.idle.pop() {
                if idle.since.elapsed() > settings.idle_timeout {
                    continue;
                }
                let conn = match idle.conn {
                    IdleConn::Own(c) if c.is_open() => Conn::Own(Some(c), Some(self.clone())),
                    IdleConn::Own(_) => continue,
                    IdleConn::Hyper(mut sender) => {
                        if sender.is_closed() {
                            continue;
                        }
                        if !sender.is_ready() {
                            // The connection finishes reading the previous response a moment later.
                            let ready =
                                tokio::time::timeout(settings.connect_timeout, sender.ready());
                            if !matches!(ready.await, Ok(Ok(()))) {
                                continue;
                            }
                        }
                        Conn::H1(sender)
                    }
                };
                // Ours return through their response body; `checkin` takes them only once
                // hyper adopted them (see `Conn::send`).
                let poolable = matches!(conn, Conn::H1(_) | Conn::Own(..));
                return Ok(Checkout {
                    conn,
                    reused: true,
                    connect_time: None,
                    poolable,
                });
            }
        }
        let started = Instant::now();
        // Boxed: the connect/TLS/handshake state is large and only needed on this slow path;
        // inline it would be copied with every request's future.
        let mut conn = tokio::time::timeout(
            settings.connect_timeout,
            Box::pin(connect(self.address, &settings, who)),
        )
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))??;
        if let (Conn::H2(s), false) = (&conn, private) {
            self.h2.store(Some(Arc::new(s.clone())));
        }
        if let (Conn::Own(_, home), false) = (&mut conn, private) {
            *home = Some(self.clone());
        }
        Ok(Checkout {
            poolable: !private && matches!(conn, Conn::H1(_) | Conn::Own(..)),
            conn,
            reused: false,
            connect_time: Some(started.elapsed()),
        })
    }

    /// Gives a hyper HTTP/1.1 connection back after its response was read to the end (ours
    /// come back through [`Pool::checkin_own`] from their response body).
    pub fn checkin(&self, conn: Conn) {
        if let Conn::H1(sender) = conn {
            if !sender.is_closed() {
                self.idle.push(Idle {
                    conn: IdleConn::Hyper(sender),
                    since: Instant::now(),
                });
            }
        }
    }

    /// One of our connections whose response body was read to its end, keep-alive allowed.
    pub fn checkin_own(&self, conn: H1Conn) {
        self.idle.push(Idle {
            conn: IdleConn::Own(conn),
            since: Instant::now(),
        });
    }
}

async fn connect(
    address: SocketAddr,
    settings: &ConnSettings,
    who: ConnFor,
) -> Result<Conn, ConnectError> {
    let mut tcp = TcpStream::connect(address).await?;
    let _ = tcp.set_nodelay(true);
    if let Some(v) = settings.send_proxy {
        let header = match v {
            ProxyVersion::V1 => proxy_protocol::encode_v1(who.client, who.local),
            ProxyVersion::V2 => proxy_protocol::encode_v2(who.client, who.local),
        };
        tcp.write_all(&header).await?;
    }
    match &settings.tls {
        None if settings.protocol == Protocol::Http1 && !who.upgrade => {
            Ok(Conn::Own(Some(H1Conn::new(tcp)), None))
        }
        None => handshake(tcp, settings.protocol, who.upgrade).await,
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(ConnectError::Tls)?;
            handshake(tls, settings.protocol, who.upgrade).await
        }
    }
}

async fn handshake<I>(io: I, protocol: Protocol, upgrade: bool) -> Result<Conn, ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http2 if !upgrade => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            Ok(Conn::H2(sender))
        }
        _ => Ok(Conn::H1(http1_handshake(io).await?)),
    }
}

/// hyper's HTTP/1.1 client on `io`, its connection task spawned.
async fn http1_handshake<I>(io: TokioIo<I>) -> Result<http1::SendRequest<UpBody>, ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

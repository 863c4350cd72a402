//! Upstream connections of one endpoint: a lock-free queue of idle HTTP/1.1 connections or one
//! shared HTTP/2 connection; new ones connect with a timeout, then PROXY header, then TLS.

use super::body::UpBody;
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
}

impl Conn {
    pub async fn send(
        &mut self,
        req: Request<UpBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpBody>>> {
        match self {
            Conn::H1(s) => s.try_send_request(req).await,
            Conn::H2(s) => s.try_send_request(req).await,
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

struct Idle {
    sender: http1::SendRequest<UpBody>,
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

    pub async fn checkout(&self, who: ConnFor) -> Result<Checkout, ConnectError> {
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
            while let Some(mut idle) = self.idle.pop() {
                if idle.sender.is_closed() || idle.since.elapsed() > settings.idle_timeout {
                    continue;
                }
                if !idle.sender.is_ready() {
                    // The connection finishes reading the previous response a moment later.
                    let ready = tokio::time::timeout(settings.connect_timeout, idle.sender.ready());
                    if !matches!(ready.await, Ok(Ok(()))) {
                        continue;
                    }
                }
                return Ok(Checkout {
                    conn: Conn::H1(idle.sender),
                    reused: true,
                    connect_time: None,
                    poolable: true,
                });
            }
        }
        let started = Instant::now();
        // Boxed: the connect/TLS/handshake state is large and only needed on this slow path;
        // inline it would be copied with every request's future.
        let conn = tokio::time::timeout(
            settings.connect_timeout,
            Box::pin(connect(self.address, &settings, who)),
        )
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))??;
        if let (Conn::H2(s), false) = (&conn, private) {
            self.h2.store(Some(Arc::new(s.clone())));
        }
        Ok(Checkout {
            poolable: !private && !conn.is_http2(),
            conn,
            reused: false,
            connect_time: Some(started.elapsed()),
        })
    }

    /// Gives an HTTP/1.1 connection back after its response was read to the end.
    pub fn checkin(&self, conn: Conn) {
        if let Conn::H1(sender) = conn {
            if !sender.is_closed() {
                self.idle.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
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
        _ => {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Conn::H1(sender))
        }
    }
}

//! The listener set: binds what the snapshot lists (one socket, or one SO_REUSEPORT socket per
//! worker), stops the rest (open connections finish); per connection: limit, PROXY, TLS, HTTP.

use super::body::ReqBody;
use super::h1guard::HeadGuard;
use super::h1server;
use super::worker_pool::{self, Pool, Worker};
use super::workers::Group;
use super::{handler, ProxyCtx};
use crate::config::Listener;
use crate::proxy_protocol;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// hyper's default maximum number of request headers (`http1::Builder::max_headers`).
const HYPER_MAX_HEADERS: usize = 100;

/// What a request knows about its connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client: the PROXY header's source when a trusted peer sent one, else `peer`.
    pub client: SocketAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    pub tls: bool,
    /// The client as the forwarding headers show it (formatted once per connection).
    pub client_id: super::headers::ClientId,
}

pub struct ListenerSet {
    ctx: Arc<ProxyCtx>,
    /// Accept loops by (name, address); cancelling one stops that listener only.
    running: HashMap<(String, SocketAddr), Running>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Threads of listeners with workers > 1.
    pool: Pool,
}

/// A listener being served: one accept loop on the shared runtime (workers: 1) or one per
/// worker thread on a SO_REUSEPORT group.
struct Running {
    workers: u32,
    stop: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    group: Option<Arc<Group>>,
}

impl ListenerSet {
    pub fn new(ctx: Arc<ProxyCtx>) -> Self {
        ListenerSet {
            ctx,
            running: HashMap::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            pool: Pool::default(),
        }
    }

    /// Makes the running set equal `wanted`. A listener whose worker count changes is stopped
    /// and bound again; a steering change is applied in place. Bind failures are returned (one
    /// line each) after everything else has been applied.
    pub async fn apply(&mut self, wanted: &[Listener]) -> Vec<String> {
        let registry = self.ctx.metrics.workers.clone();
        let mut stopped = Vec::new();
        let keys: Vec<_> = self.running.keys().cloned().collect();
        for key in keys {
            let want = wanted
                .iter()
                .find(|l| l.name == key.0 && l.address == key.1);
            let Some(run) = self.running.get(&key) else {
                continue;
            };
            match want {
                Some(l) if l.workers == run.workers => {
                    if let Some(g) = run.group.as_ref().filter(|g| g.mode() != l.steering) {
                        g.set_mode(l.steering);
                    }
                }
                _ => {
                    tracing::info!(listener = %key.0, address = %key.1, "listener removed or its workers changed");
                    if let Some(run) = self.running.remove(&key) {
                        run.stop.cancel();
                        if let Some(g) = &run.group {
                            registry.unregister(g, want.is_none());
                        }
                        stopped.push(run);
                    }
                }
            }
        }
        // Their sockets must be closed before the address is bound again.
        for loop_ in stopped.into_iter().flat_map(|r| r.loops) {
            let _ = loop_.await;
        }
        let mut errors = Vec::new();
        for l in wanted {
            let key = (l.name.clone(), l.address);
            if self.running.contains_key(&key) {
                continue;
            }
            let started = if l.workers > 1 {
                self.start_group(l)
            } else {
                self.start_single(l).await
            };
            match started {
                Ok(run) => {
                    self.running.insert(key, run);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    async fn start_single(&mut self, l: &Listener) -> Result<Running, String> {
        let sock = TcpListener::bind(l.address)
            .await
            .map_err(|e| format!("listener {} on {}: {e}", l.name, l.address))?;
        let local = sock.local_addr().unwrap_or(l.address);
        tracing::info!(listener = %l.name, address = %local, "listening");
        let stop = self.shutdown.child_token();
        let loop_ = self.tracker.spawn(accept_loop(
            sock,
            l.name.as_str().into(),
            None,
            self.ctx.clone(),
            stop.clone(),
            self.shutdown.clone(),
            self.tracker.clone(),
        ));
        Ok(Running {
            workers: 1,
            stop,
            loops: vec![loop_],
            group: None,
        })
    }

    fn start_group(&mut self, l: &Listener) -> Result<Running, String> {
        let registry = self.ctx.metrics.workers.clone();
        let slots = registry.slots(&l.name, l.workers as usize);
        let bound = worker_pool::bind(l, slots, &mut self.pool)?;
        let group = bound.group;
        tracing::info!(listener = %l.name, address = %group.address, workers = l.workers, steering = ?l.steering, "listening");
        registry.register(group.clone());
        let stop = self.shutdown.child_token();
        let name: Arc<str> = l.name.as_str().into();
        let mut loops = Vec::new();
        for (k, (handle, sock, writer)) in bound.workers.into_iter().enumerate() {
            let worker = Worker::new(&group, k, writer);
            handle.spawn(worker.clone().sync_load(stop.clone()));
            let accept = accept_loop(
                sock,
                name.clone(),
                Some(worker),
                self.ctx.clone(),
                stop.clone(),
                self.shutdown.clone(),
                self.tracker.clone(),
            );
            loops.push(handle.spawn(self.tracker.track_future(accept)));
        }
        Ok(Running {
            workers: l.workers,
            stop,
            loops,
            group: Some(group),
        })
    }

    /// Stops accepting, asks every connection to finish its in-flight request, waits up to
    /// `grace`, then ends the worker threads.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "connections still open after the grace period; closing them"
            );
        }
        self.pool.shutdown();
    }
}

/// Accepts until `stop`; each connection runs on the runtime this loop runs on (a worker
/// thread's, or the shared one).
async fn accept_loop(
    sock: TcpListener,
    name: Arc<str>,
    worker: Option<Worker>,
    ctx: Arc<ProxyCtx>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        // Over max_connections, stop accepting: new clients wait in the kernel backlog.
        let (limit, stats) = match ctx.table.load().listeners.get(&*name) {
            Some(l) => (l.conn_limit.clone(), Some(l.stats.clone())),
            None => (None, None),
        };
        let permit = match limit {
            Some((_, sem)) => tokio::select! {
                _ = stop.cancelled() => return,
                p = sem.acquire_owned() => p.ok(),
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = sock.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let name = name.clone();
        let open = stats.map(|s| s.open());
        let counted = worker.as_ref().map(Worker::open);
        tracker.spawn(async move {
            let _permit = permit;
            let _open = open;
            let _counted = counted;
            if let Err(e) = serve(stream, peer, name, ctx, shutdown).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    name: Arc<str>,
    ctx: Arc<ProxyCtx>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let Some(listener) = ctx.table.load().listeners.get(&*name).cloned() else {
        return Err("listener removed".into());
    };
    let peer_ip = peer.ip().to_canonical();
    let mut info = ConnInfo {
        client: peer,
        peer,
        local,
        listener: name,
        tls: listener.tls.is_some(),
        client_id: super::headers::ClientId::new(peer),
    };
    if listener.proxy_trusted.iter().any(|n| n.contains(&peer_ip)) {
        let (addrs, stream) = proxy_protocol::accept(stream, listener.proxy_timeout)
            .await
            .map_err(|e| format!("PROXY header from {peer}: {e}"))?;
        if let Some(a) = addrs {
            info.client = a.source;
            info.client_id = super::headers::ClientId::new(a.source);
        }
        return tls_then_http(stream, info, &listener, ctx, shutdown).await;
    }
    tls_then_http(stream, info, &listener, ctx, shutdown).await
}

async fn tls_then_http<I>(
    io: I,
    info: ConnInfo,
    listener: &super::table::ListenerState,
    ctx: Arc<ProxyCtx>,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = listener.limits;
    let http2 = listener.http2;
    match &listener.tls {
        None => http(io, info, limits, http2, ctx, shutdown).await,
        Some(acceptor) => {
            let tls = match tokio::time::timeout(limits.header_timeout.0, acceptor.accept(io)).await
            {
                Ok(Ok(tls)) => {
                    listener.stats.handshakes.fetch_add(1, Ordering::Relaxed);
                    tls
                }
                Ok(Err(e)) => {
                    listener.stats.handshake_failed(tls_failure(&e));
                    return Err(format!("TLS handshake: {e}"));
                }
                Err(_) => {
                    listener.stats.handshake_failed(0);
                    return Err("TLS handshake timed out".to_string());
                }
            };
            http(tls, info, limits, http2, ctx, shutdown).await
        }
    }
}

/// Index into [`crate::metrics::stats::TLS_FAILURES`] for a failed handshake.
fn tls_failure(e: &std::io::Error) -> usize {
    use rustls::Error as E;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        // Our SNI resolver found no certificate (unknown name and no default).
        Some(E::General(m)) if m.contains("certificate") => 1,
        Some(E::PeerIncompatible(_) | E::NoApplicationProtocol | E::AlertReceived(_)) => 2,
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. })
        | Some(E::InappropriateHandshakeMessage { .. } | E::DecryptError) => 3,
        Some(_) => 2,
        None => 4,
    }
}

async fn http<I>(
    io: I,
    info: ConnInfo,
    limits: crate::config::Limits,
    http2: bool,
    ctx: Arc<ProxyCtx>,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Strict HTTP/1.1 framing in front of both servers (request smuggling); HTTP/2 passes through.
    let io = HeadGuard::new(io, limits.max_header_bytes);
    let info = Arc::new(info);
    // Our own loop serves what it can; the rest of the connection goes to hyper.
    match h1server::serve(io, info.clone(), limits, &ctx, &shutdown).await? {
        h1server::Served::Closed => Ok(()),
        h1server::Served::HandOver(io) => hyper_serve(io, info, limits, http2, ctx, shutdown).await,
    }
}

/// hyper's server (HTTP/1.1 with bodies and upgrades, HTTP/2) for the rest of a connection.
async fn hyper_serve<I>(
    io: I,
    info: Arc<ConnInfo>,
    limits: crate::config::Limits,
    http2: bool,
    ctx: Arc<ProxyCtx>,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        handler::handle(ctx.clone(), info.clone(), req.map(ReqBody::Hyper))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.0)
        .max_buf_size(limits.max_header_bytes);
    // hyper's own limit (100) parses into an uninitialised array; a configured limit makes it
    // initialise that many slots per request, so it is only given when it differs.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30));
    if !http2 {
        builder = builder.http1_only();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    result.map_err(|e| e.to_string())
}

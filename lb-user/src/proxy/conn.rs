//! One accepted connection: the PROXY header from trusted peers, TLS, then our HTTP/1.1 loop
//! (h1server) with hyper taking over for bodies, upgrades and HTTP/2.

use super::acks::AckNow;
use super::body::ReqBody;
use super::h1guard::HeadGuard;
use super::h1server;
use super::lazy_tcp::LazyTcp;
use super::{handler, ProxyCtx};
use crate::proxy_protocol;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

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

/// Serves one accepted connection until it closes. `bound`: the listener's address when it is
/// not a wildcard (then it is the connection's local address too).
pub async fn serve(
    stream: LazyTcp,
    peer: SocketAddr,
    bound: Option<SocketAddr>,
    name: Arc<str>,
    ctx: Arc<ProxyCtx>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let local = match bound {
        Some(a) => a,
        None => stream.local_addr().map_err(|e| e.to_string())?,
    };
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
        // Boxed: this rarer path's state stays out of every connection's future.
        return Box::pin(tls_then_http(stream, info, &listener, ctx, shutdown)).await;
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
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static + AckNow,
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
            // Boxed: the TLS session's state stays out of plain-text connections' futures.
            Box::pin(http(tls, info, limits, http2, ctx, shutdown)).await
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
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static + AckNow,
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

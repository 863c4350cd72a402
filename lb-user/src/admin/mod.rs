//! The admin endpoint (default 127.0.0.1:9900): `/metrics`, `/healthz`, the `/stats` page and
//! the runtime API under `/api/v1`. Separate from traffic listeners so it never queues behind them.

pub mod api;
pub mod presync;
pub mod status;

use crate::metrics::Metrics;
use crate::proxy::ProxyCtx;
use crate::publisher::InputTx;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const STATS_PAGE: &str = include_str!("stats.html");

/// What the admin endpoint reads (the proxy's table) and writes to (the publisher).
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ctx: Arc<ProxyCtx>,
    pub inputs: InputTx,
}

/// Binds `addr` and serves until `stop` is cancelled; returns the bound address.
///
/// The admin endpoint runs on a thread of its own at a lower priority (nice +10), so a large
/// /metrics or /stats answer never stalls the proxy's workers: the kernel preempts it for them.
pub async fn serve(
    addr: SocketAddr,
    admin: Arc<Admin>,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let sock = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the admin endpoint on {addr}"))?;
    sock.set_nonblocking(true)?;
    let local = sock.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the admin runtime")?;
    std::thread::Builder::new()
        .name("lb-admin".into())
        .spawn(move || {
            lower_priority();
            rt.block_on(accept_loop(sock, admin, stop));
        })
        .context("starting the admin thread")?;
    tracing::info!(address = %local, "admin endpoint (/metrics, /healthz, /stats, /api/v1)");
    Ok(local)
}

/// nice +10 for the calling thread only (Linux: a thread id is a valid PRIO_PROCESS target).
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers and cannot violate memory safety.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "admin thread keeps its priority");
    }
}

async fn accept_loop(sock: std::net::TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    let sock = match TcpListener::from_std(sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "admin endpoint cannot listen");
            return;
        }
    };
    {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = sock.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(admin.clone(), peer, req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

pub type Reply = (StatusCode, &'static str, String);

async fn answer(
    admin: Arc<Admin>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let (status, ctype, body) = if path.starts_with("/api/") {
        api::handle(&admin, peer, req).await
    } else {
        match (req.method(), path.as_str()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                admin.metrics.encode(),
            ),
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            // Serving a snapshot: with --kube this endpoint starts after the first full sync
            // (presync.rs answers 503 before) and stays ready through API server outages.
            (&Method::GET, "/readyz") => (StatusCode::OK, "text/plain", "ready\n".to_string()),
            (&Method::GET, "/stats" | "/stats/") => (
                StatusCode::OK,
                "text/html; charset=utf-8",
                STATS_PAGE.to_string(),
            ),
            (&Method::GET, "/stats.json") => {
                let doc = status::document(&admin.ctx.table.load());
                (StatusCode::OK, "application/json", doc.to_string())
            }
            (_, "/metrics" | "/healthz" | "/readyz" | "/stats" | "/stats.json") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET\n".to_string(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "try /metrics, /healthz, /stats or /api/v1/status\n".to_string(),
            ),
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

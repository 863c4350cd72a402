//! The listener set: binds what the snapshot lists, stops what it no longer lists (open
//! connections finish), and serves each connection with hyper until a graceful shutdown.

use super::{handler, ProxyCtx};
use crate::config::Listener;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time a client has to send complete request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ListenerSet {
    ctx: Arc<ProxyCtx>,
    /// Accept loops by (name, address); cancelling one stops that listener only.
    running: HashMap<(String, SocketAddr), CancellationToken>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl ListenerSet {
    pub fn new(ctx: Arc<ProxyCtx>) -> Self {
        ListenerSet {
            ctx,
            running: HashMap::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Makes the running set equal `wanted`. Bind failures are returned (one line each) after
    /// everything else has been applied.
    pub async fn apply(&mut self, wanted: &[Listener]) -> Vec<String> {
        let keys: Vec<(String, SocketAddr)> =
            wanted.iter().map(|l| (l.name.clone(), l.address)).collect();
        self.running.retain(|key, stop| {
            let keep = keys.contains(key);
            if !keep {
                tracing::info!(listener = %key.0, address = %key.1, "listener removed");
                stop.cancel();
            }
            keep
        });
        let mut errors = Vec::new();
        for key in keys {
            if self.running.contains_key(&key) {
                continue;
            }
            match TcpListener::bind(key.1).await {
                Ok(sock) => {
                    let local = sock.local_addr().unwrap_or(key.1);
                    tracing::info!(listener = %key.0, address = %local, "listening");
                    let stop = self.shutdown.child_token();
                    self.tracker.spawn(accept_loop(
                        sock,
                        self.ctx.clone(),
                        stop.clone(),
                        self.shutdown.clone(),
                        self.tracker.clone(),
                    ));
                    self.running.insert(key, stop);
                }
                Err(e) => errors.push(format!("listener {} on {}: {e}", key.0, key.1)),
            }
        }
        errors
    }

    /// Stops accepting, asks every connection to finish its in-flight request, waits up to `grace`.
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
    }
}

async fn accept_loop(
    sock: TcpListener,
    ctx: Arc<ProxyCtx>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
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
        tracker.spawn(async move {
            let svc = service_fn(move |req| handler::handle(ctx.clone(), peer, req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "downstream connection error");
            }
        });
    }
}

//! The listener set: binds what the snapshot lists (one socket, or one SO_REUSEPORT socket per
//! worker) and stops the rest (open connections finish); accept loops hand connections to conn.

use super::conn;
use super::lazy_tcp::LazyTcp;
use super::listen_opts;
use super::worker_pool::{self, Pool, Worker};
use super::workers::Group;
use super::ProxyCtx;
use crate::config::Listener;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
            l.defer_accept,
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
                l.defer_accept,
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
/// thread's, or the shared one). A reload that changes `defer_accept` applies from the next
/// accepted connection on.
#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    sock: TcpListener,
    name: Arc<str>,
    mut defer_accept: bool,
    worker: Option<Worker>,
    ctx: Arc<ProxyCtx>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let nodelay_inherited = listen_opts::prepare(&sock, &name, defer_accept);
    let sock = match unregistered(sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "listener could not be polled");
            return;
        }
    };
    // Bound to one address, every connection's local address is that one: no getsockname each.
    let bound = sock
        .get_ref()
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        // Over max_connections, stop accepting: new clients wait in the kernel backlog.
        let (limit, stats) = match ctx.table.load().listeners.get(&*name) {
            Some(l) => {
                if l.defer_accept != defer_accept {
                    defer_accept = l.defer_accept;
                    if let Err(e) = listen_opts::set_defer_accept(sock.get_ref(), defer_accept) {
                        tracing::warn!(listener = %name, error = %e, "cannot change TCP_DEFER_ACCEPT");
                    }
                }
                (l.conn_limit.clone(), Some(l.stats.clone()))
            }
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
            accepted = accept(&sock) => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !nodelay_inherited {
            let _ = stream.set_nodelay(true);
        }
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let name = name.clone();
        let open = stats.map(|s| s.open());
        let counted = worker.as_ref().map(Worker::open);
        // The connection's future holds every protocol path's state (~8 KiB). Boxed here, the
        // task holds a pointer: tokio's spawn and task harness move their future by value
        // through several layers, which copied the whole state ~8 times per connection.
        let stream = LazyTcp::new(stream);
        let conn = boxed(|| conn::serve(stream, peer, bound, name, ctx, shutdown));
        tracker.spawn(async move {
            let _permit = permit;
            let _open = open;
            let _counted = counted;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
}

/// The listener polled for readiness by tokio but accepted from directly (mio's accept4:
/// non-blocking, close-on-exec), so accepted sockets start outside the reactor ([`LazyTcp`]).
fn unregistered(sock: TcpListener) -> io::Result<AsyncFd<mio::net::TcpListener>> {
    let sock = mio::net::TcpListener::from_std(sock.into_std()?);
    // SAFETY: the mio listener owns its fd, always reports that one, and keeps it open until
    // it is dropped with the AsyncFd.
    Ok(unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }?)
}

async fn accept(sock: &AsyncFd<mio::net::TcpListener>) -> io::Result<(StdTcpStream, SocketAddr)> {
    loop {
        let mut ready = sock.readable().await?;
        if let Ok(accepted) = ready.try_io(|l| l.get_ref().accept()) {
            return accepted.map(|(s, peer)| (s.into(), peer));
        }
    }
}

/// `make()`'s future in a box allocated before it is made, so the optimiser can build it in
/// place instead of on the stack and then copying it.
fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

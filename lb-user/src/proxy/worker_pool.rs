//! Worker threads (one single-threaded tokio runtime each) and the SO_REUSEPORT group of a
//! listener with workers > 1: N sockets on one address, steered by the SK_REUSEPORT program.

use super::workers::{Group, Slot};
use crate::bpf::reuseport::{LoadWriter, Steering as Program};
use crate::config::{Listener, Steering};
use lb_common::reuseport::{SteerPolicy, STEER_FLOW_HASH, STEER_LEAST_LOADED};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Listen backlog of each worker socket (what tokio's `TcpListener::bind` uses).
const BACKLOG: u32 = 1024;

/// How often a worker rewrites its load for `least_loaded` besides every change.
const LOAD_SYNC: Duration = Duration::from_millis(100);

/// Worker threads, started on demand up to the largest `workers` seen, kept until shutdown
/// (connections accepted by a removed listener finish on the thread that accepted them).
#[derive(Default)]
pub struct Pool {
    threads: Vec<(Handle, std::thread::JoinHandle<()>)>,
    stop: CancellationToken,
}

impl Pool {
    /// Worker `k`'s runtime, starting threads up to `k` as needed.
    pub fn handle(&mut self, k: usize) -> io::Result<Handle> {
        while self.threads.len() <= k {
            let i = self.threads.len();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let stop = self.stop.clone();
            let join = std::thread::Builder::new()
                .name(format!("lb-worker-{i}"))
                .spawn(move || {
                    crate::alloc::cache_this_thread();
                    rt.block_on(stop.cancelled());
                    drop(rt);
                    crate::alloc::release_thread_cache();
                })?;
            self.threads.push((handle, join));
        }
        Ok(self.threads[k].0.clone())
    }

    /// Ends every worker thread; tasks still running on them are dropped.
    pub fn shutdown(self) {
        self.stop.cancel();
        for (_, join) in self.threads {
            let _ = join.join();
        }
    }
}

/// A listener's bound group, ready for its accept loops.
pub struct Bound {
    pub group: Arc<Group>,
    /// (worker runtime, listening socket registered with it, load writer) per worker.
    pub workers: Vec<(Handle, TcpListener, Option<LoadWriter>)>,
}

/// Binds `l.workers` SO_REUSEPORT sockets on `l.address` (each registered with its worker's
/// runtime), then loads the steering program: sockets into its array, policy, attach. Without
/// the program the group still serves, with the kernel's own hash and no drain.
pub fn bind(l: &Listener, slots: Vec<Arc<Slot>>, pool: &mut Pool) -> Result<Bound, String> {
    let fail = |e: io::Error| format!("listener {} on {}: {e}", l.name, l.address);
    let mut addr = l.address;
    let mut socks = Vec::with_capacity(slots.len());
    for k in 0..slots.len() {
        let handle = pool.handle(k).map_err(fail)?;
        let sock = reuseport_socket(addr, &handle).map_err(fail)?;
        // Port 0: every worker joins the port the first one got.
        addr = sock.local_addr().map_err(fail)?;
        socks.push((handle, sock));
    }
    let policy = policy(&slots, l.steering);
    let program = steer(&socks, policy).map_err(|e| {
        let e = format!("{e:#}");
        tracing::warn!(listener = %l.name, "SK_REUSEPORT steering unavailable, the kernel hashes connections over the workers and drain is refused: {e}");
        e
    });
    let group = Arc::new(Group::new(
        l.name.as_str().into(),
        addr,
        slots,
        l.steering,
        program,
    ));
    let workers = socks
        .into_iter()
        .enumerate()
        .map(|(k, (handle, sock))| {
            let writer = group
                .with_program(|p| p.load_writer(k as u32))
                .and_then(|w| w.map_err(|e| tracing::warn!("worker {k}: {e:#}")).ok());
            (handle, sock, writer)
        })
        .collect();
    Ok(Bound { group, workers })
}

/// The policy for `slots` (drained flags) under `mode`.
pub fn policy(slots: &[Arc<Slot>], mode: Steering) -> SteerPolicy {
    let drained = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.drained.load(Relaxed))
        .fold(0u64, |m, (k, _)| m | (1 << k));
    let mode = match mode {
        Steering::FlowHash => STEER_FLOW_HASH,
        Steering::LeastLoaded => STEER_LEAST_LOADED,
    };
    SteerPolicy::new(mode, slots.len() as u32, drained)
}

fn steer(socks: &[(Handle, TcpListener)], policy: SteerPolicy) -> anyhow::Result<Program> {
    let mut program = Program::load()?;
    for (k, (_, sock)) in socks.iter().enumerate() {
        program.set_socket(k as u32, sock)?;
    }
    program.set_policy(policy)?;
    if let Some((_, first)) = socks.first() {
        program.attach(first)?;
    }
    Ok(program)
}

/// A listening socket with SO_REUSEADDR + SO_REUSEPORT, registered with `rt`'s reactor.
fn reuseport_socket(addr: SocketAddr, rt: &Handle) -> io::Result<TcpListener> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    let _rt = rt.enter();
    sock.listen(BACKLOG)
}

/// What a worker's accept loop adds to each connection: its slot's counters and, under
/// `least_loaded`, the program's load map written on every change.
#[derive(Clone)]
pub struct Worker {
    slot: Arc<Slot>,
    load: Option<Arc<Load>>,
}

pub struct Load {
    writer: Mutex<LoadWriter>,
    group: Arc<Group>,
}

impl Load {
    fn write(&self, open: u64) {
        if self.group.least_loaded.load(Relaxed) {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            w.set(open.min(u64::from(u32::MAX)) as u32);
        }
    }
}

impl Worker {
    pub fn new(group: &Arc<Group>, k: usize, writer: Option<LoadWriter>) -> Worker {
        Worker {
            slot: group.slots[k].clone(),
            load: writer.map(|w| {
                Arc::new(Load {
                    writer: Mutex::new(w),
                    group: group.clone(),
                })
            }),
        }
    }

    /// Counts an accepted connection until the guard drops.
    pub fn open(&self) -> WorkerConn {
        self.slot.accepted.fetch_add(1, Relaxed);
        let n = self.slot.open.fetch_add(1, Relaxed) + 1;
        if let Some(l) = &self.load {
            l.write(n);
        }
        WorkerConn(self.clone())
    }

    /// Rewrites the load every [`LOAD_SYNC`] until `stop` (covers a switch to least_loaded).
    pub async fn sync_load(self, stop: CancellationToken) {
        let Some(load) = self.load else { return };
        let mut tick = tokio::time::interval(LOAD_SYNC);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => load.write(self.slot.open.load(Relaxed)),
            }
        }
    }
}

pub struct WorkerConn(Worker);

impl Drop for WorkerConn {
    fn drop(&mut self) {
        // Only this worker's thread changes its count: the map is written first, so whoever
        // sees the lower count in /metrics knows the program sees it too.
        let n = self.0.slot.open.load(Relaxed).saturating_sub(1);
        if let Some(l) = &self.0.load {
            l.write(n);
        }
        self.0.slot.open.fetch_sub(1, Relaxed);
    }
}

//! A cluster as the request path sees it: endpoints (kept across reloads by address, with
//! their pools, limits, observers and stats), weights from the snapshot's views, the picker.

use super::balancer::Picker;
use super::stats::Tally;
use super::upstream::{ConnSettings, Pool};
use crate::config::{Balance, Cluster};
use crate::health::monitor::Handles;
use crate::health::observer::Observer;
use crate::metrics::stats::{ClusterStats, Outcomes};
use crate::snapshot::{view::SCALE, ClusterView, Snapshot};
use arc_swap::ArcSwapOption;
use http::uri::Authority;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct ClusterState {
    pub name: Arc<str>,
    pub cfg: Arc<Cluster>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Effective weights from the snapshot (health, overrides, backups, slow start).
    pub weights: Vec<u32>,
    /// Shared with the previous table when config and weights are unchanged.
    pub picker: Arc<Picker>,
    pub runtime: Arc<ClusterRuntime>,
}

/// Per-cluster counters that survive reloads: the retry budget is computed from them, and
/// /metrics reads them.
#[derive(Default)]
pub struct ClusterRuntime {
    pub active: AtomicU32,
    pub retrying: AtomicU32,
    pub stats: ClusterStats,
}

pub struct Endpoint {
    pub address: SocketAddr,
    /// The endpoint's name in the API, stats and metrics (default: the address).
    pub name: Arc<str>,
    pub authority: Authority,
    /// Value of the affinity cookie naming this endpoint: stable across reloads and nodes.
    pub affinity_id: String,
    /// /metrics: requests answered and errors.
    pub stats: Outcomes,
    pub tally: Tally,
    /// Requests in flight (least connections, P2C).
    pub active: AtomicU32,
    pub limit: ArcSwapOption<Limit>,
    pub pool: Arc<Pool>,
    /// Passive health: outcomes of attempts at this endpoint.
    pub observer: Arc<Observer>,
}

/// `max_connections_per_endpoint` with its bounded queue.
pub struct Limit {
    pub max: u32,
    pub slots: Arc<Semaphore>,
    pub queued: AtomicU32,
}

impl Endpoint {
    pub fn load(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}

/// `old` is what [`build_cluster`] would build for `c` now (with the same TLS material): same
/// config and the same effective weights.
pub(super) fn unchanged(old: &ClusterState, c: &Arc<Cluster>, view: Option<&ClusterView>) -> bool {
    let same_weights = match view {
        Some(v) => (old.weights.iter())
            .copied()
            .eq(v.endpoints.iter().map(|e| e.effective)),
        None => (old.weights.iter())
            .copied()
            .eq(c.endpoints.iter().map(|e| u32::from(e.weight.0) * SCALE)),
    };
    same_weights && (Arc::ptr_eq(&old.cfg, c) || old.cfg == *c)
}

pub(super) fn build_cluster(
    c: &Arc<Cluster>,
    view: Option<&ClusterView>,
    snap: &Snapshot,
    old: Option<&ClusterState>,
    health: &Handles,
) -> ClusterState {
    let tls = snap.tls.clusters.get(&c.name);
    let cname: Arc<str> = c.name.as_str().into();
    let endpoints: Vec<Arc<Endpoint>> = c
        .endpoints
        .iter()
        .map(|e| {
            let settings = ConnSettings {
                protocol: c.protocol,
                tls: tls.map(|(connector, name)| {
                    let name = name
                        .clone()
                        .unwrap_or_else(|| ServerName::IpAddress(e.address.ip().into()));
                    (connector.clone(), name)
                }),
                send_proxy: c.send_proxy,
                connect_timeout: c.connect_timeout.0,
                idle_timeout: c.idle_timeout.0,
            };
            let label = e.label();
            let observer = health.observer((cname.clone(), e.address), c);
            let kept = old.and_then(|o| {
                o.endpoints
                    .iter()
                    .find(|x| x.address == e.address && *x.name == *label)
            });
            let ep = match kept {
                Some(ep) => {
                    ep.pool.settings.store(Arc::new(settings.clone()));
                    ep.clone()
                }
                None => Arc::new(Endpoint {
                    address: e.address,
                    name: label.as_str().into(),
                    authority: authority(e.address),
                    affinity_id: format!(
                        "{:016x}",
                        crate::maglev::hash64(e.address.to_string().as_bytes())
                    ),
                    stats: Outcomes::default(),
                    tally: Tally::default(),
                    active: AtomicU32::new(0),
                    limit: ArcSwapOption::empty(),
                    pool: Arc::new(Pool::new(e.address, settings.clone())),
                    observer,
                }),
            };
            let max = c.max_connections_per_endpoint;
            let current = ep.limit.load().as_ref().map(|l| l.max);
            if max == 0 {
                ep.limit.store(None);
            } else if current != Some(max) {
                ep.limit.store(Some(Arc::new(Limit {
                    max,
                    slots: Arc::new(Semaphore::new(max as usize)),
                    queued: AtomicU32::new(0),
                })));
            }
            ep
        })
        .collect();
    let weights: Vec<u32> = match view {
        Some(v) => v.endpoints.iter().map(|e| e.effective).collect(),
        None => c
            .endpoints
            .iter()
            .map(|e| u32::from(e.weight.0) * SCALE)
            .collect(),
    };
    let picker = match old {
        Some(o) if o.cfg == *c && o.weights == weights => o.picker.clone(),
        _ => {
            let start = match old.map(|o| &*o.picker) {
                Some(Picker::RoundRobin(w)) => w.position(),
                _ => 0,
            };
            Arc::new(picker(c, &endpoints, &weights, start))
        }
    };
    ClusterState {
        name: cname,
        cfg: c.clone(),
        endpoints,
        weights,
        picker,
        runtime: old.map(|o| o.runtime.clone()).unwrap_or_default(),
    }
}

fn picker(c: &Cluster, endpoints: &[Arc<Endpoint>], weights: &[u32], start: usize) -> Picker {
    match c.balance {
        Balance::RoundRobin => Picker::round_robin(weights, start),
        Balance::LeastConnections => Picker::least_connections(),
        Balance::Random => Picker::random(weights),
        Balance::Hash => {
            let keys: Vec<(u64, u32)> = endpoints
                .iter()
                .zip(weights)
                .map(|(e, w)| (crate::maglev::hash64(e.address.to_string().as_bytes()), *w))
                .collect();
            Picker::hash(&keys)
        }
    }
}

fn authority(addr: SocketAddr) -> Authority {
    // A SocketAddr always renders as a valid authority (`1.2.3.4:80`, `[::1]:80`).
    Authority::try_from(addr.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("invalid"))
}

//! The L7 table: what the request path reads through one ArcSwap, derived from a snapshot.
//! State that must outlive a reload (pools, in-flight counts, limiters) is carried over by name.

use super::balancer::{Picker, Wrr};
use super::headers::Edits;
use super::upstream::{ConnSettings, Pool};
use crate::accesslog::AccessLog;
use crate::admin::metrics::{Metrics, RequestCounters};
use crate::config::{self, Balance, Cluster, Limits, NameValue};
use crate::ratelimit::RateLimiter;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwapOption;
use http::uri::Authority;
use http::HeaderValue;
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub struct Table {
    pub snapshot: Arc<Snapshot>,
    pub routes: Vec<RouteState>,
    pub clusters: Vec<ClusterState>,
    pub listeners: HashMap<String, Arc<ListenerState>>,
    /// Counts requests that matched no route (or were refused before one).
    pub unrouted: RequestCounters,
    pub log: Arc<AccessLog>,
    pub metrics: Arc<Metrics>,
}

pub struct ListenerState {
    pub name: Arc<str>,
    pub tls: Option<TlsAcceptor>,
    pub http2: bool,
    pub proxy_trusted: Vec<IpNet>,
    pub proxy_timeout: Duration,
    /// Kept across reloads while the limit is unchanged.
    pub conn_limit: Option<(u32, Arc<Semaphore>)>,
    pub rate: Option<((u32, u32), Arc<RateLimiter>)>,
    pub limits: Limits,
    pub forwarded_trusted: Vec<IpNet>,
}

pub struct RouteState {
    pub name: Arc<str>,
    pub action: Action,
    /// (cluster, header match, cookie match): takes precedence over weights.
    pub canary: Option<(usize, Option<NameValue>, Option<NameValue>)>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub request_edits: Edits,
    pub response_edits: Edits,
    pub hsts: Option<HeaderValue>,
    pub rewrite: Option<String>,
}

pub enum Action {
    Cluster(usize),
    Split { wrr: Wrr, clusters: Vec<usize> },
    Redirect(config::Redirect),
}

pub struct ClusterState {
    pub name: Arc<str>,
    pub cfg: Cluster,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub weights: Vec<u32>,
    pub picker: Picker,
    pub runtime: Arc<ClusterRuntime>,
    /// Requests the cluster could not place on any endpoint.
    pub unplaced: RequestCounters,
    pub retries: Counter,
}

/// Per-cluster counters that survive reloads: the retry budget is computed from them.
#[derive(Default)]
pub struct ClusterRuntime {
    pub active: AtomicU32,
    pub retrying: AtomicU32,
}

pub struct Endpoint {
    pub address: SocketAddr,
    pub authority: Authority,
    /// Value of the affinity cookie naming this endpoint: stable across reloads and nodes.
    pub affinity_id: String,
    pub counters: RequestCounters,
    /// Requests in flight (least connections, P2C).
    pub active: AtomicU32,
    pub limit: ArcSwapOption<Limit>,
    pub pool: Pool,
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

impl Table {
    pub fn build(
        snapshot: Arc<Snapshot>,
        prev: Option<&Table>,
        metrics: &Arc<Metrics>,
        log: Arc<AccessLog>,
    ) -> Table {
        let cfg = &snapshot.config;
        let clusters: Vec<ClusterState> = cfg
            .clusters
            .iter()
            .map(|c| build_cluster(c, &snapshot, prev, metrics))
            .collect();
        let index: HashMap<&str, usize> = cfg
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let routes = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| super::headers::build_route(i, r, &index))
            .collect();
        let listeners = cfg
            .listeners
            .iter()
            .map(|l| {
                let old = prev.and_then(|p| p.listeners.get(&l.name));
                (l.name.clone(), Arc::new(build_listener(l, &snapshot, old)))
            })
            .collect();
        Table {
            routes,
            clusters,
            listeners,
            unrouted: metrics.request_counters("", ""),
            log,
            metrics: metrics.clone(),
            snapshot,
        }
    }
}

fn build_listener(
    l: &config::Listener,
    snap: &Snapshot,
    old: Option<&Arc<ListenerState>>,
) -> ListenerState {
    let cidrs = |v: &[config::Cidr]| v.iter().map(|c| c.0).collect::<Vec<_>>();
    let conn_limit =
        (l.max_connections > 0).then(|| match old.and_then(|o| o.conn_limit.clone()) {
            Some((max, sem)) if max == l.max_connections => (max, sem),
            _ => (
                l.max_connections,
                Arc::new(Semaphore::new(l.max_connections as usize)),
            ),
        });
    let rate = l.rate_limit.map(|r| {
        let key = (
            r.requests_per_second,
            r.burst.unwrap_or(r.requests_per_second),
        );
        match old.and_then(|o| o.rate.clone()) {
            Some((k, lim)) if k == key => (k, lim),
            _ => (key, Arc::new(RateLimiter::new(key.0, key.1, 65536))),
        }
    });
    ListenerState {
        name: l.name.as_str().into(),
        tls: snap
            .tls
            .listeners
            .get(&l.name)
            .cloned()
            .map(TlsAcceptor::from),
        http2: l.http2,
        proxy_trusted: l
            .proxy_protocol
            .as_ref()
            .map(|p| cidrs(&p.trusted))
            .unwrap_or_default(),
        proxy_timeout: l
            .proxy_protocol
            .as_ref()
            .map_or(Duration::from_secs(5), |p| p.timeout.0),
        conn_limit,
        rate,
        limits: l.limits,
        forwarded_trusted: cidrs(&l.forwarded.trusted),
    }
}

fn build_cluster(
    c: &Cluster,
    snap: &Snapshot,
    prev: Option<&Table>,
    metrics: &Metrics,
) -> ClusterState {
    let old = prev.and_then(|p| p.clusters.iter().find(|o| *o.name == *c.name));
    let tls = snap.tls.clusters.get(&c.name);
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
            let kept = old.and_then(|o| o.endpoints.iter().find(|x| x.address == e.address));
            let ep = match kept {
                Some(ep) => {
                    ep.pool.settings.store(Arc::new(settings.clone()));
                    ep.clone()
                }
                None => Arc::new(Endpoint {
                    address: e.address,
                    authority: authority(e.address),
                    affinity_id: format!(
                        "{:016x}",
                        crate::maglev::hash64(e.address.to_string().as_bytes())
                    ),
                    counters: metrics.request_counters(&c.name, &e.address.to_string()),
                    active: AtomicU32::new(0),
                    limit: ArcSwapOption::empty(),
                    pool: Pool::new(e.address, settings.clone()),
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
    let weights: Vec<u32> = c.endpoints.iter().map(|e| u32::from(e.weight.0)).collect();
    let picker = match c.balance {
        Balance::RoundRobin => Picker::round_robin(&weights),
        Balance::LeastConnections => Picker::least_connections(),
        Balance::Random => Picker::random(&weights),
        Balance::Hash => {
            let keys: Vec<(u64, u32)> = endpoints
                .iter()
                .zip(&weights)
                .map(|(e, w)| (crate::maglev::hash64(e.address.to_string().as_bytes()), *w))
                .collect();
            Picker::hash(&keys)
        }
    };
    ClusterState {
        name: c.name.as_str().into(),
        cfg: c.clone(),
        endpoints,
        weights,
        picker,
        runtime: old.map(|o| o.runtime.clone()).unwrap_or_default(),
        unplaced: metrics.request_counters(&c.name, ""),
        retries: metrics.retries(&c.name),
    }
}

fn authority(addr: SocketAddr) -> Authority {
    // A SocketAddr always renders as a valid authority (`1.2.3.4:80`, `[::1]:80`).
    Authority::try_from(addr.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("invalid"))
}

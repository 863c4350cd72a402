//! The L7 table: what the request path reads through one ArcSwap, derived from a snapshot.
//! State that must outlive a reload (pools, in-flight counts, limiters) is carried over by name.

use super::balancer::Wrr;
pub use super::clusters::{ClusterRuntime, ClusterState, Endpoint, Limit};
use super::headers::Edits;
use super::mirror::MirrorState;
use super::stats::Tally;
use crate::accesslog::AccessLog;
use crate::config::{self, Limits, NameValue};
use crate::health::monitor::Handles;
use crate::metrics::stats::{ListenerStats, RouteStats};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::snapshot::Snapshot;
use crate::trace::Tracer;
use http::HeaderValue;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub struct Table {
    pub snapshot: Arc<Snapshot>,
    /// Shared with the previous table while the routes and the cluster order are unchanged.
    pub routes: Arc<Vec<RouteState>>,
    /// Each shared with the previous table while its config, weights and TLS are unchanged.
    pub clusters: Vec<Arc<ClusterState>>,
    /// Looked up per connection and per request: hashed with foldhash, not SipHash (a few
    /// names chosen by the operator, nothing to defend against).
    pub listeners: HashMap<String, Arc<ListenerState>, foldhash::fast::RandomState>,
    pub log: Arc<AccessLog>,
    pub metrics: Arc<Metrics>,
    /// W3C trace context and OTLP export (kept across reloads while its config is unchanged).
    pub tracer: Tracer,
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
    /// Which forwarding headers are set (`forwarded.headers`).
    pub forwarded_set: super::headers::ForwardedSet,
    pub generate_request_id: bool,
    /// TCP_DEFER_ACCEPT on the listening socket (applied by the accept loop when it changes).
    pub defer_accept: bool,
    /// Connections and TLS handshakes (kept across reloads by listener name).
    pub stats: Arc<ListenerStats>,
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
    /// Requests answered on this route (kept across reloads by route name).
    pub tally: Arc<Tally>,
    /// /metrics counters of the route (kept across reloads by route name).
    pub stats: Arc<RouteStats>,
    pub mirror: Option<MirrorState>,
    /// ((rate, burst), limiter): kept across reloads by route name while the limit is unchanged.
    pub rate: Option<((u32, u32), Arc<RateLimiter>)>,
}

pub enum Action {
    Cluster(usize),
    Split { wrr: Wrr, clusters: Vec<usize> },
    Redirect(config::Redirect),
}

impl Table {
    pub fn build(
        snapshot: Arc<Snapshot>,
        prev: Option<&Table>,
        metrics: &Arc<Metrics>,
        log: Arc<AccessLog>,
        health: &Handles,
    ) -> Table {
        let cfg = &snapshot.config;
        // At the same index (the usual case: same cluster list), else by name: with 10k
        // clusters a search per cluster costs more than the whole build.
        let at_index = |i: usize, name: &str| {
            let o = prev.and_then(|p| p.clusters.get(i))?;
            (*o.name == *name).then_some(o)
        };
        let moved = prev.is_some_and(|p| {
            p.clusters.len() != cfg.clusters.len()
                || (cfg.clusters.iter().enumerate()).any(|(i, c)| at_index(i, &c.name).is_none())
        });
        let old_clusters: HashMap<&str, &Arc<ClusterState>> = match prev {
            Some(p) if moved => p.clusters.iter().map(|c| (&*c.name, c)).collect(),
            _ => HashMap::new(),
        };
        let same_tls = prev.is_some_and(|p| Arc::ptr_eq(&p.snapshot.tls, &snapshot.tls));
        let clusters: Vec<Arc<ClusterState>> = cfg
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let view = snapshot.clusters.get(i).map(|v| &**v);
                let old = match moved {
                    true => old_clusters.get(c.name.as_str()).copied(),
                    false => at_index(i, &c.name),
                };
                match old {
                    Some(o) if same_tls && super::clusters::unchanged(o, c, view) => o.clone(),
                    _ => Arc::new(super::clusters::build_cluster(
                        c,
                        view,
                        &snapshot,
                        old.map(|o| &**o),
                        health,
                    )),
                }
            })
            .collect();
        // Routes refer to clusters by index: shared only when both are as before.
        let same_routes =
            prev.filter(|p| Arc::ptr_eq(&p.snapshot.routes, &snapshot.routes) && !moved);
        if let Some(p) = same_routes {
            let listeners = cfg
                .listeners
                .iter()
                .map(|l| {
                    let old = p.listeners.get(&l.name);
                    (l.name.clone(), Arc::new(build_listener(l, &snapshot, old)))
                })
                .collect();
            let tracer = match p.tracer.same_config(&cfg.tracing) {
                true => p.tracer.clone(),
                false => build_tracer(&cfg.tracing),
            };
            return Table {
                tracer,
                routes: p.routes.clone(),
                clusters,
                listeners,
                log,
                metrics: metrics.clone(),
                snapshot,
            };
        }
        let index: HashMap<&str, usize> = cfg
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let old_routes: HashMap<&str, &RouteState> = prev
            .map(|p| p.routes.iter().map(|r| (&*r.name, r)).collect())
            .unwrap_or_default();
        let routes = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut route = super::headers::build_route(i, r, &index);
                if let Some(old) = old_routes.get(&*route.name) {
                    route.tally = old.tally.clone();
                    route.stats = old.stats.clone();
                    // Weighted splits continue their cycle (a 1% canary is not starved by
                    // frequent snapshots).
                    if let (Action::Split { wrr, .. }, Action::Split { wrr: was, .. }) =
                        (&route.action, &old.action)
                    {
                        wrr.resume_at(was.position());
                    }
                }
                route.rate = super::headers::route_rate(r, old_routes.get(&*route.name).copied());
                route.mirror = r.mirror.as_ref().and_then(|m| {
                    let c = *index.get(m.cluster.as_str())?;
                    let old = old_routes
                        .get(&*route.name)
                        .and_then(|o| o.mirror.as_ref())
                        .filter(|o| *o.cluster_name == *m.cluster);
                    let counters = old.map(|o| o.counters.clone()).unwrap_or_default();
                    let mut state = MirrorState::new(m, c, counters);
                    if let Some(o) = old {
                        state.carry_from(o);
                    }
                    Some(state)
                });
                route
            })
            .collect();
        let listeners = cfg
            .listeners
            .iter()
            .map(|l| {
                let old = prev.and_then(|p| p.listeners.get(&l.name));
                (l.name.clone(), Arc::new(build_listener(l, &snapshot, old)))
            })
            .collect();
        let tracer = match prev {
            Some(p) if p.tracer.same_config(&cfg.tracing) => p.tracer.clone(),
            _ => build_tracer(&cfg.tracing),
        };
        Table {
            tracer,
            routes: Arc::new(routes),
            clusters,
            listeners,
            log,
            metrics: metrics.clone(),
            snapshot,
        }
    }
}

/// The configured tracer; if its exporter cannot start, trace context is still propagated
/// (without export) and the error is logged.
fn build_tracer(cfg: &config::Tracing) -> Tracer {
    Tracer::new(cfg).unwrap_or_else(|e| {
        tracing::error!(error = %e, "tracing.otlp: export disabled");
        let local = config::Tracing {
            otlp: None,
            ..cfg.clone()
        };
        Tracer::new(&local).unwrap_or_else(|_| unreachable!("a tracer without OTLP always builds"))
    })
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
        forwarded_set: super::headers::ForwardedSet::new(&l.forwarded.headers),
        generate_request_id: l.generate_request_id,
        defer_accept: l.defer_accept,
        stats: old.map(|o| o.stats.clone()).unwrap_or_default(),
    }
}

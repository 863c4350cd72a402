//! One immutable, versioned view of everything the dataplanes serve, built by a pure function
//! from the config, its TLS material, runtime overrides and health. Consumers derive from it.

pub mod l4;
pub mod view;

use crate::config::{Cidr, Cluster, Config, Listener};
use crate::health::HealthView;
use crate::proxy::route::RouteTable;
use crate::runtime::Overrides;
use crate::source::TlsMaterials;
use std::sync::Arc;
use std::time::Instant;
pub use view::{ClusterView, EndpointView, EpState};

#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per accepted change; consumers report the version they applied.
    pub version: u64,
    pub config: Arc<Config>,
    /// Routes compiled for lookup (hash by host, then precedence order).
    pub routes: Arc<RouteTable>,
    pub tls: Arc<TlsMaterials>,
    /// Deny-list prefixes, deduplicated, with the index of the config rule that first named them.
    pub deny: Arc<Vec<(Cidr, u32)>>,
    /// The runtime API's bearer token (from `admin.token_file`).
    pub admin_token: Option<Arc<str>>,
    pub overrides: Arc<Overrides>,
    pub health: Arc<HealthView>,
    /// Per cluster (same order as `config.clusters`): each endpoint's state and weight now.
    pub clusters: Vec<Arc<ClusterView>>,
    /// The L4 services with their rings, and the node's L4 settings.
    pub l4: Arc<l4::L4View>,
}

impl Snapshot {
    pub fn listeners(&self) -> &[Listener] {
        &self.config.listeners
    }

    /// The same config with other overrides/health (or just a later time, for slow start):
    /// compiled parts are shared, endpoint views recomputed.
    pub fn derive(
        &self,
        overrides: Arc<Overrides>,
        health: Arc<HealthView>,
        now: Instant,
        version: u64,
    ) -> Snapshot {
        let clusters = views(&self.config, &overrides, &health, now);
        Snapshot {
            version,
            config: self.config.clone(),
            routes: self.routes.clone(),
            tls: self.tls.clone(),
            deny: self.deny.clone(),
            admin_token: self.admin_token.clone(),
            l4: l4::derive(&self.l4, &self.config, &clusters),
            clusters,
            overrides,
            health,
        }
    }

    /// A new config that differs from this one in cluster endpoints (the Kubernetes endpoint
    /// fast path): the compiled routes and deny-list are shared while equal, and the TLS
    /// material is kept (endpoints never change it); endpoint and L4 views are recomputed.
    pub fn rebase(
        &self,
        config: Arc<Config>,
        overrides: Arc<Overrides>,
        health: Arc<HealthView>,
        now: Instant,
        version: u64,
    ) -> Snapshot {
        let routes = if same_items(&config.routes, &self.config.routes) {
            self.routes.clone()
        } else {
            Arc::new(RouteTable::build(&config.routes))
        };
        let deny = if config.xdp.deny == self.config.xdp.deny {
            self.deny.clone()
        } else {
            Arc::new(deny_list(&config))
        };
        // A cluster whose config, overrides and health are as before keeps its view (unless
        // slow start is ramping it): with 10k clusters, recomputing all is most of the cost.
        let same_state =
            Arc::ptr_eq(&overrides, &self.overrides) && Arc::ptr_eq(&health, &self.health);
        // The same cluster at the same index (the usual case) keeps its view.
        let old = |i: usize, c: &Arc<Cluster>| {
            let was = self.config.clusters.get(i)?;
            let v = self.clusters.get(i)?;
            (same_state && Arc::ptr_eq(was, c) && v.next_ramp.is_none()).then_some(v)
        };
        let clusters: Vec<Arc<ClusterView>> = (config.clusters.iter().enumerate())
            .map(|(i, c)| match old(i, c) {
                Some(v) => v.clone(),
                None => Arc::new(view::cluster(c, &overrides, &health, now)),
            })
            .collect();
        Snapshot {
            version,
            l4: l4::derive(&self.l4, &config, &clusters),
            clusters,
            config,
            routes,
            tls: self.tls.clone(),
            deny,
            admin_token: self.admin_token.clone(),
            overrides,
            health,
        }
    }

    /// When slow start next changes a weight.
    pub fn next_ramp(&self) -> Option<Instant> {
        self.clusters.iter().filter_map(|c| c.next_ramp).min()
    }
}

fn views(cfg: &Config, o: &Overrides, h: &HealthView, now: Instant) -> Vec<Arc<ClusterView>> {
    cfg.clusters
        .iter()
        .map(|c| Arc::new(view::cluster(c, o, h, now)))
        .collect()
}

/// Builds a snapshot from a config that passed validation (no overrides, everything healthy).
pub fn build(cfg: &Config, tls: TlsMaterials, version: u64) -> Snapshot {
    let deny = deny_list(cfg);
    let (o, h) = (Overrides::default(), HealthView::default());
    let clusters = views(cfg, &o, &h, Instant::now());
    Snapshot {
        version,
        l4: Arc::new(l4::view(cfg, &clusters)),
        clusters,
        config: Arc::new(cfg.clone()),
        routes: Arc::new(RouteTable::build(&cfg.routes)),
        tls: Arc::new(tls),
        deny: Arc::new(deny),
        admin_token: None,
        overrides: Arc::new(o),
        health: Arc::new(h),
    }
}

/// Equal lists of shared items (the same `Arc`s, or equal values).
fn same_items<T: PartialEq>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}

/// The deny-list prefixes, deduplicated, each with the first rule that named it.
fn deny_list(cfg: &Config) -> Vec<(Cidr, u32)> {
    let mut deny: Vec<(Cidr, u32)> = Vec::with_capacity(cfg.xdp.deny.len());
    let mut seen = std::collections::HashSet::new();
    for (rule, cidr) in cfg.xdp.deny.iter().enumerate() {
        if seen.insert(*cidr) {
            deny.push((*cidr, rule as u32));
        }
    }
    deny
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn routes_compiled_and_version_kept() {
        let cfg = parse(
            "clusters: [{name: a}, {name: b}]\nroutes:\n  - {hosts: [A.example, b.example], cluster: a}\n  - {hosts: ['*'], cluster: b}\n",
        )
        .unwrap();
        let s = build(&cfg, TlsMaterials::default(), 7);
        assert_eq!(s.version, 7);
        let req = http::Request::get("/").body(()).unwrap();
        assert_eq!(
            s.routes
                .lookup("l", Some("a.example"), &req)
                .map(|m| m.route),
            Some(0)
        );
        assert_eq!(
            s.routes.lookup("l", Some("other"), &req).map(|m| m.route),
            Some(1)
        );
    }

    #[test]
    fn deny_is_deduplicated_keeping_first_rule() {
        let cfg = parse("xdp: {deny: [10.0.0.0/8, 192.0.2.1, 10.1.0.0/8]}\n").unwrap();
        let s = build(&cfg, TlsMaterials::default(), 1);
        let got: Vec<String> = s.deny.iter().map(|(c, r)| format!("{c}#{r}")).collect();
        assert_eq!(got, ["10.0.0.0/8#0", "192.0.2.1/32#1"]);
    }
}

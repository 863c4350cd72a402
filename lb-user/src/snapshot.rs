//! One immutable, versioned view of everything the dataplanes serve, built by a pure function
//! from the config. Consumers (L7 table, XDP maps) derive their state from it; nothing mutates it.

use crate::config::{Cidr, Config, Listener};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Increases by one per accepted change; consumers report the version they applied.
    pub version: u64,
    pub listeners: Vec<Listener>,
    pub routes: RouteTable,
    pub clusters: Vec<ClusterSpec>,
    /// Deny-list prefixes, deduplicated, with the index of the config rule that first named them.
    pub deny: Vec<(Cidr, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub name: String,
    pub endpoints: Vec<EndpointSpec>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec {
    pub address: SocketAddr,
    /// 0 = drained: receives no new requests.
    pub weight: u16,
}

/// Host -> cluster index. Exact hosts are lowercase; `default` serves hosts routed by `"*"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable {
    exact: HashMap<String, usize>,
    default: Option<usize>,
}

impl RouteTable {
    /// `host` must already be lowercase without a port (see proxy::router::request_host).
    pub fn lookup(&self, host: Option<&str>) -> Option<usize> {
        host.and_then(|h| self.exact.get(h).copied())
            .or(self.default)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + usize::from(self.default.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds a snapshot from a config that passed validation.
pub fn build(cfg: &Config, version: u64) -> Snapshot {
    let index: HashMap<&str, usize> = cfg
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut routes = RouteTable::default();
    for route in &cfg.routes {
        let Some(&cluster) = index.get(route.cluster.as_str()) else {
            continue;
        };
        for host in &route.hosts {
            if host == "*" {
                routes.default.get_or_insert(cluster);
            } else {
                routes
                    .exact
                    .entry(host.to_ascii_lowercase())
                    .or_insert(cluster);
            }
        }
    }
    let clusters = cfg
        .clusters
        .iter()
        .map(|c| ClusterSpec {
            name: c.name.clone(),
            endpoints: c
                .endpoints
                .iter()
                .map(|e| EndpointSpec {
                    address: e.address,
                    weight: e.weight.0,
                })
                .collect(),
            connect_timeout: c.connect_timeout.0,
            response_timeout: c.response_timeout.0,
        })
        .collect();
    let mut deny: Vec<(Cidr, u32)> = Vec::with_capacity(cfg.xdp.deny.len());
    let mut seen = std::collections::HashSet::new();
    for (rule, cidr) in cfg.xdp.deny.iter().enumerate() {
        if seen.insert(*cidr) {
            deny.push((*cidr, rule as u32));
        }
    }
    Snapshot {
        version,
        listeners: cfg.listeners.clone(),
        routes,
        clusters,
        deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn routes_hosts_and_default() {
        let cfg = parse(
            "clusters: [{name: a}, {name: b}]\nroutes:\n  - {hosts: [A.example, b.example], cluster: a}\n  - {hosts: ['*'], cluster: b}\n",
        )
        .unwrap();
        let s = build(&cfg, 7);
        assert_eq!(s.version, 7);
        assert_eq!(s.routes.lookup(Some("a.example")), Some(0));
        assert_eq!(s.routes.lookup(Some("b.example")), Some(0));
        assert_eq!(s.routes.lookup(Some("other")), Some(1));
        assert_eq!(s.routes.lookup(None), Some(1));
    }

    #[test]
    fn no_default_means_no_route() {
        let cfg =
            parse("clusters: [{name: a}]\nroutes: [{hosts: [a.example], cluster: a}]\n").unwrap();
        let s = build(&cfg, 1);
        assert_eq!(s.routes.lookup(Some("b.example")), None);
        assert_eq!(s.routes.lookup(None), None);
    }

    #[test]
    fn deny_is_deduplicated_keeping_first_rule() {
        let cfg = parse("xdp: {deny: [10.0.0.0/8, 192.0.2.1, 10.1.0.0/8]}\n").unwrap();
        let s = build(&cfg, 1);
        let got: Vec<String> = s.deny.iter().map(|(c, r)| format!("{c}#{r}")).collect();
        assert_eq!(got, ["10.0.0.0/8#0", "192.0.2.1/32#1"]);
    }
}

//! One immutable, versioned view of everything the dataplanes serve, built by a pure function
//! from the config and its TLS material. Consumers (L7 table, XDP maps) derive their state from it.

use crate::config::{Cidr, Config, Listener};
use crate::proxy::route::RouteTable;
use crate::source::TlsMaterials;
use std::sync::Arc;

#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per accepted change; consumers report the version they applied.
    pub version: u64,
    pub config: Arc<Config>,
    /// Routes compiled for lookup (hash by host, then precedence order).
    pub routes: RouteTable,
    pub tls: TlsMaterials,
    /// Deny-list prefixes, deduplicated, with the index of the config rule that first named them.
    pub deny: Vec<(Cidr, u32)>,
}

impl Snapshot {
    pub fn listeners(&self) -> &[Listener] {
        &self.config.listeners
    }
}

/// Builds a snapshot from a config that passed validation.
pub fn build(cfg: &Config, tls: TlsMaterials, version: u64) -> Snapshot {
    let mut deny: Vec<(Cidr, u32)> = Vec::with_capacity(cfg.xdp.deny.len());
    let mut seen = std::collections::HashSet::new();
    for (rule, cidr) in cfg.xdp.deny.iter().enumerate() {
        if seen.insert(*cidr) {
            deny.push((*cidr, rule as u32));
        }
    }
    Snapshot {
        version,
        config: Arc::new(cfg.clone()),
        routes: RouteTable::build(&cfg.routes),
        tls,
        deny,
    }
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

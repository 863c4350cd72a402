//! Checks of `l4_services`, `xdp.l4` and `xdp.rate_limit` that the types cannot express: unique
//! destinations, known clusters, one address family per service, SNAT addresses, capacities.

use super::validate::check_name;
use super::{Config, ConfigError, L4Service};
use lb_common::{L4_ENDPOINT_CAPACITY, L4_SERVICE_CAPACITY, PROTECT_CAPACITY};
use std::collections::{HashMap, HashSet};

/// Bounds of `xdp.l4.flows` (an LRU table of ~100 bytes per entry, and its NAT index).
pub const FLOWS_RANGE: (u32, u32) = (1024, 1 << 25);
/// Largest `xdp.l4.ring_slots` (4 bytes each).
pub const MAX_RING_SLOTS: u32 = 1 << 26;
/// Largest `xdp.rate_limit.new_flows_per_second` (the GCRA interval is 1 ns).
pub const MAX_FLOW_RATE: u32 = 1_000_000_000;

/// All errors of the L4 parts of `cfg`; references to `pruned` names are not errors.
pub(super) fn validate(cfg: &Config, pruned: &HashSet<String>) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let clusters: HashMap<&str, usize> = cfg
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut names = HashMap::new();
    let mut targets = HashMap::new();
    let (mut v4, mut v6) = (None, None);
    let (mut ring_need, mut endpoints) = (0u64, 0usize);
    for (i, s) in cfg.l4_services.iter().enumerate() {
        let at = format!("l4_services[{i}]");
        check_name(&mut errs, &at, &s.name, &mut names, "L4 service");
        if s.port == 0 {
            errs.push(ConfigError::new(format!("{at}.port"), "must not be 0"));
        }
        if let Some(prev) = targets.insert(s.target(), i) {
            errs.push(ConfigError::new(
                format!("{at}.vip"),
                format!("{} is already l4_services[{prev}]", s.target()),
            ));
        }
        if let Some((j, _)) = cfg.listeners.iter().enumerate().find(|(_, l)| {
            s.protocol == super::L4Protocol::Tcp
                && l.address.ip() == s.vip
                && l.address.port() == s.port
        }) {
            errs.push(ConfigError::new(
                format!("{at}.vip"),
                format!(
                    "{} is also listeners[{j}]'s address: XDP would take its packets first",
                    s.target()
                ),
            ));
        }
        let family = if s.vip.is_ipv4() { &mut v4 } else { &mut v6 };
        family.get_or_insert(i);
        let Some(&c) = clusters.get(s.cluster.as_str()) else {
            if !pruned.contains(&s.cluster) {
                errs.push(ConfigError::new(
                    format!("{at}.cluster"),
                    format!("unknown cluster {:?}", s.cluster),
                ));
            }
            continue;
        };
        let eps = &cfg.clusters[c].endpoints;
        endpoints += eps.len();
        if let Some((j, e)) = eps
            .iter()
            .enumerate()
            .find(|(_, e)| e.address.is_ipv4() != s.vip.is_ipv4())
        {
            errs.push(ConfigError::new(
                format!("{at}.cluster"),
                format!(
                    "endpoint {} (clusters[{c}].endpoints[{j}]) is {} but the vip {} is {}",
                    e.address,
                    family_name(e.address.is_ipv4()),
                    s.vip,
                    family_name(s.vip.is_ipv4()),
                ),
            ));
        }
        if let Some(e) = maglev_size(s, eps.len()) {
            errs.push(ConfigError::new(format!("{at}.maglev_size"), e));
        }
        ring_need += 2 * u64::from(s.table_size(eps.len()));
    }
    if cfg.l4_services.len() > L4_SERVICE_CAPACITY as usize {
        errs.push(ConfigError::new(
            "l4_services",
            format!(
                "{} services exceed the capacity of {L4_SERVICE_CAPACITY}",
                cfg.l4_services.len()
            ),
        ));
    }
    if endpoints > L4_ENDPOINT_CAPACITY as usize {
        errs.push(ConfigError::new(
            "l4_services",
            format!(
                "the services' clusters have {endpoints} endpoints in all (one slot per service and endpoint), over the capacity of {L4_ENDPOINT_CAPACITY}"
            ),
        ));
    }
    settings(cfg, v4, v6, ring_need, &mut errs);
    errs
}

fn family_name(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// What is wrong with the service's `maglev_size`, if anything.
fn maglev_size(s: &L4Service, endpoints: usize) -> Option<String> {
    let n = s.maglev_size?;
    if n as usize > crate::maglev::MAX_TABLE_SIZE {
        return Some(format!(
            "{n} is above the maximum of {}",
            crate::maglev::MAX_TABLE_SIZE
        ));
    }
    if !crate::maglev::is_prime(n as usize) {
        return Some(format!("{n} is not prime (65537 and 131071 are)"));
    }
    if n as usize <= endpoints {
        return Some(format!(
            "{n} must be greater than the cluster's {endpoints} endpoints (100 x endpoints or more is recommended)"
        ));
    }
    None
}

/// `xdp.l4` and `xdp.rate_limit`. `v4`/`v6`: index of the first service of that family.
fn settings(
    cfg: &Config,
    v4: Option<usize>,
    v6: Option<usize>,
    ring_need: u64,
    errs: &mut Vec<ConfigError>,
) {
    let l4 = &cfg.xdp.l4;
    for (missing, first, field, family) in [
        (l4.snat_v4.is_none(), v4, "snat_v4", "IPv4"),
        (l4.snat_v6.is_none(), v6, "snat_v6", "IPv6"),
    ] {
        if let (true, Some(i)) = (missing, first) {
            errs.push(ConfigError::new(
                format!("xdp.l4.{field}"),
                format!(
                    "required: l4_services[{i}] ({}) has an {family} vip, and NAT'd packets need this node's {family} address as their source",
                    cfg.l4_services[i].name
                ),
            ));
        }
    }
    let (lo, hi) = FLOWS_RANGE;
    if !(lo..=hi).contains(&l4.flows) {
        errs.push(ConfigError::new(
            "xdp.l4.flows",
            format!("{} is not between {lo} and {hi}", l4.flows),
        ));
    }
    if l4.ring_slots == 0 || l4.ring_slots > MAX_RING_SLOTS {
        errs.push(ConfigError::new(
            "xdp.l4.ring_slots",
            format!("{} is not between 1 and {MAX_RING_SLOTS}", l4.ring_slots),
        ));
    } else if ring_need > u64::from(l4.ring_slots) {
        errs.push(ConfigError::new(
            "xdp.l4.ring_slots",
            format!(
                "{} slots cannot hold the services' rings: they need 2 x their maglev sizes = {ring_need} (a new ring is written before the old one is freed)",
                l4.ring_slots
            ),
        ));
    }
    let Some(rl) = &cfg.xdp.rate_limit else {
        return;
    };
    if !(1..=MAX_FLOW_RATE).contains(&rl.new_flows_per_second) {
        errs.push(ConfigError::new(
            "xdp.rate_limit.new_flows_per_second",
            format!(
                "{} is not between 1 and {MAX_FLOW_RATE} (remove rate_limit for no limit)",
                rl.new_flows_per_second
            ),
        ));
    }
    if rl.burst == Some(0) {
        errs.push(ConfigError::new(
            "xdp.rate_limit.burst",
            "must be at least 1",
        ));
    }
    let mut seen = HashMap::new();
    for (i, t) in rl.protect.iter().enumerate() {
        if let Some(prev) = seen.insert(*t, i) {
            errs.push(ConfigError::new(
                format!("xdp.rate_limit.protect[{i}]"),
                format!("{t} is already protect[{prev}]"),
            ));
        }
    }
    if rl.protect.len() > PROTECT_CAPACITY as usize {
        errs.push(ConfigError::new(
            "xdp.rate_limit.protect",
            format!(
                "{} destinations exceed the capacity of {PROTECT_CAPACITY}",
                rl.protect.len()
            ),
        ));
    }
}

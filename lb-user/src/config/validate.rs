//! Semantic checks the types cannot express: unique names, known references, valid hosts,
//! capacities. Each error names the field it is about.

use super::{Config, ConfigError};
use lb_common::DENY_CAPACITY;
use std::collections::{HashMap, HashSet};

/// All semantic errors in `cfg`. `pruned` holds names of items that already failed to parse:
/// references to them are not errors of their own.
pub(super) fn validate(cfg: &Config, pruned: &HashSet<String>) -> Vec<ConfigError> {
    let mut errs = Vec::new();

    let mut names = HashMap::new();
    let mut addrs = HashMap::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        check_name(&mut errs, &at, &l.name, &mut names, "listener");
        if let Some(prev) = addrs.insert(l.address, i) {
            errs.push(ConfigError::new(
                format!("{at}.address"),
                format!("address {} is already used by listeners[{prev}]", l.address),
            ));
        }
    }

    let mut clusters = HashMap::new();
    for (i, c) in cfg.clusters.iter().enumerate() {
        let at = format!("clusters[{i}]");
        check_name(&mut errs, &at, &c.name, &mut clusters, "cluster");
        let mut seen = HashMap::new();
        for (j, e) in c.endpoints.iter().enumerate() {
            let at = format!("{at}.endpoints[{j}].address");
            if e.address.port() == 0 {
                errs.push(ConfigError::new(&at, "port must not be 0"));
            }
            if let Some(prev) = seen.insert(e.address, j) {
                errs.push(ConfigError::new(
                    &at,
                    format!(
                        "endpoint {} is already listed as endpoints[{prev}]",
                        e.address
                    ),
                ));
            }
        }
    }

    let mut hosts: HashMap<String, usize> = HashMap::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.hosts.is_empty() {
            errs.push(ConfigError::new(
                format!("{at}.hosts"),
                "must list at least one host (\"*\" matches any)",
            ));
        }
        for (k, h) in r.hosts.iter().enumerate() {
            let at = format!("{at}.hosts[{k}]");
            if let Err(msg) = check_host(h) {
                errs.push(ConfigError::new(&at, msg));
                continue;
            }
            if let Some(prev) = hosts.insert(h.to_ascii_lowercase(), i) {
                errs.push(ConfigError::new(
                    &at,
                    format!("host {h:?} is already routed by routes[{prev}]"),
                ));
            }
        }
        if !clusters.contains_key(r.cluster.as_str()) && !pruned.contains(&r.cluster) {
            errs.push(ConfigError::new(
                format!("{at}.cluster"),
                format!("unknown cluster {:?}", r.cluster),
            ));
        }
    }

    for (family, count) in [
        (
            "IPv4",
            cfg.xdp.deny.iter().filter(|c| c.0.addr().is_ipv4()).count(),
        ),
        (
            "IPv6",
            cfg.xdp.deny.iter().filter(|c| c.0.addr().is_ipv6()).count(),
        ),
    ] {
        if count > DENY_CAPACITY as usize {
            errs.push(ConfigError::new(
                "xdp.deny",
                format!("{count} {family} prefixes exceed the capacity of {DENY_CAPACITY}"),
            ));
        }
    }
    errs
}

fn check_name<'a>(
    errs: &mut Vec<ConfigError>,
    at: &str,
    name: &'a str,
    seen: &mut HashMap<&'a str, String>,
    what: &str,
) {
    if name.trim().is_empty() {
        errs.push(ConfigError::new(format!("{at}.name"), "must not be empty"));
    } else if let Some(prev) = seen.insert(name, at.to_string()) {
        errs.push(ConfigError::new(
            format!("{at}.name"),
            format!("duplicate {what} name {name:?} (also {prev})"),
        ));
    }
}

/// A route host: `*`, or a DNS name (letters, digits, `-`, dots between labels), no port.
fn check_host(h: &str) -> Result<(), String> {
    if h == "*" {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("invalid host {h:?}: {why}"));
    if h.is_empty() || h.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if h.contains(':') {
        return bad("must not contain a port or scheme (ports are ignored when matching)");
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, '-' and '.' are allowed, or \"*\" for any host");
        }
    }
    Ok(())
}

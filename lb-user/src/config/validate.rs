//! Semantic checks the types cannot express: unique names, known references, valid hosts,
//! capacities. Each error names the field it is about.

use super::validate_route::{header_name_ok, token_ok};
use super::{Balance, Cluster, Config, ConfigError, DefaultCert, HashOn, Listener};
use lb_common::DENY_CAPACITY;
use std::collections::{HashMap, HashSet};

/// hyper cannot buffer a request head smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

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
        listener(&mut errs, &at, l);
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
        cluster(&mut errs, &at, c);
        super::validate_health::endpoints_and_health(&mut errs, &at, c);
    }

    super::validate_route::routes(cfg, &clusters, pruned, &mut errs);
    super::validate_health::mirrors(
        cfg,
        &|c: &str| clusters.contains_key(c) || pruned.contains(c),
        &mut errs,
    );
    errs.extend(super::tracing::validate(&cfg.tracing));
    errs.extend(super::validate_l4::validate(cfg, pruned));

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

fn listener(errs: &mut Vec<ConfigError>, at: &str, l: &Listener) {
    if let Some(tls) = &l.tls {
        if tls.certificates.is_empty() {
            errs.push(ConfigError::new(
                format!("{at}.tls.certificates"),
                "must list at least one certificate",
            ));
        }
        if let DefaultCert::Index(i) = tls.default_certificate {
            if i >= tls.certificates.len() {
                errs.push(ConfigError::new(
                    format!("{at}.tls.default_certificate"),
                    format!(
                        "index {i} is out of range: there are {} certificates",
                        tls.certificates.len()
                    ),
                ));
            }
        }
    }
    if let Some(pp) = &l.proxy_protocol {
        if pp.trusted.is_empty() {
            errs.push(ConfigError::new(
                format!("{at}.proxy_protocol.trusted"),
                "must list the sources that send PROXY headers (e.g. your L4 balancer)",
            ));
        }
    }
    if let Some(rl) = &l.rate_limit {
        super::validate_route::rate_limit(errs, at, rl);
    }
    if !(1..=lb_common::reuseport::MAX_WORKERS).contains(&l.workers) {
        errs.push(ConfigError::new(
            format!("{at}.workers"),
            format!(
                "must be between 1 and {}",
                lb_common::reuseport::MAX_WORKERS
            ),
        ));
    }
    let lim = &l.limits;
    if !(MIN_HEADER_BYTES..=1 << 20).contains(&lim.max_header_bytes) {
        errs.push(ConfigError::new(
            format!("{at}.limits.max_header_bytes"),
            format!("must be between {MIN_HEADER_BYTES} and 1048576"),
        ));
    }
    if !(1..=10_000).contains(&lim.max_headers) {
        errs.push(ConfigError::new(
            format!("{at}.limits.max_headers"),
            "must be between 1 and 10000",
        ));
    }
}

fn cluster(errs: &mut Vec<ConfigError>, at: &str, c: &Cluster) {
    match (&c.balance, &c.hash) {
        (Balance::Hash, None) => errs.push(ConfigError::new(
            format!("{at}.hash"),
            "balance: hash needs a key: hash: {on: source_ip | uri | header (name) | cookie (name)}",
        )),
        (Balance::Hash, Some(HashOn::Header { name })) if !header_name_ok(name) => {
            errs.push(ConfigError::new(
                format!("{at}.hash.name"),
                format!("invalid header name {name:?}"),
            ))
        }
        (Balance::Hash, Some(HashOn::Cookie { name })) if !token_ok(name) => errs.push(
            ConfigError::new(format!("{at}.hash.name"), format!("invalid cookie name {name:?}")),
        ),
        (Balance::Hash, _) => {}
        (_, Some(_)) => errs.push(ConfigError::new(
            format!("{at}.hash"),
            "only used with balance: hash",
        )),
        (_, None) => {}
    }
    if let Some(a) = &c.affinity {
        if !token_ok(&a.cookie) {
            errs.push(ConfigError::new(
                format!("{at}.affinity.cookie"),
                format!("invalid cookie name {:?}", a.cookie),
            ));
        }
    }
    if let Some(tls) = &c.tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            errs.push(ConfigError::new(
                format!("{at}.tls"),
                "client_cert and client_key go together",
            ));
        }
        if tls.ca.is_none() && !tls.insecure_skip_verify {
            errs.push(ConfigError::new(
                format!("{at}.tls.ca"),
                "needs a CA file to verify endpoints (or insecure_skip_verify: true)",
            ));
        }
    }
    if c.retries.attempts > 10 {
        errs.push(ConfigError::new(
            format!("{at}.retries.attempts"),
            "must be at most 10",
        ));
    }
    if c.retries.budget_percent > 100 {
        errs.push(ConfigError::new(
            format!("{at}.retries.budget_percent"),
            "must be between 0 and 100",
        ));
    }
}

pub(super) fn check_name<'a>(
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

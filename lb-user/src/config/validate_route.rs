//! Semantic checks of routes: hosts, one action each, known clusters, path and regex syntax,
//! matchers, redirects, rewrites, header edits and rate limits. Each error names its field.

use super::{Config, ConfigError, PathMatch, RateLimit, Route, ValueMatch};
use http::{HeaderName, HeaderValue, Method};
use std::collections::{HashMap, HashSet};

pub(super) fn routes(
    cfg: &Config,
    clusters: &HashMap<&str, String>,
    pruned: &HashSet<String>,
    errs: &mut Vec<ConfigError>,
) {
    let mut names = HashMap::new();
    let listeners: HashSet<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
    for (i, r) in cfg.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        for (k, l) in r.listeners.iter().enumerate() {
            if !listeners.contains(l.as_str()) && !pruned.contains(l) {
                errs.push(ConfigError::new(
                    format!("{at}.listeners[{k}]"),
                    format!("unknown listener {l:?}"),
                ));
            }
        }
        if let Some(name) = &r.name {
            super::validate::check_name(errs, &at, name, &mut names, "route");
        }
        route(errs, &at, r, &|c: &str| {
            clusters.contains_key(c) || pruned.contains(c)
        });
        if let Some(rl) = &r.rate_limit {
            rate_limit(errs, &at, rl);
        }
    }
}

/// `{at}.rate_limit` (a listener's or a route's): a rate of at least 1, a burst of at least 1.
pub(super) fn rate_limit(errs: &mut Vec<ConfigError>, at: &str, rl: &RateLimit) {
    if rl.requests_per_second == 0 {
        errs.push(ConfigError::new(
            format!("{at}.rate_limit.requests_per_second"),
            "must be at least 1 (remove rate_limit for no limit)",
        ));
    }
    if rl.burst == Some(0) {
        errs.push(ConfigError::new(
            format!("{at}.rate_limit.burst"),
            "must be at least 1",
        ));
    }
}

fn route(errs: &mut Vec<ConfigError>, at: &str, r: &Route, known: &dyn Fn(&str) -> bool) {
    let mut err =
        |field: &str, msg: String| errs.push(ConfigError::new(format!("{at}{field}"), msg));
    if r.hosts.is_empty() {
        err(
            ".hosts",
            "must list at least one host (\"*\" matches any)".into(),
        );
    }
    for (k, h) in r.hosts.iter().enumerate() {
        if let Err(msg) = check_host(h) {
            err(&format!(".hosts[{k}]"), msg);
        }
    }
    let actions = usize::from(r.cluster.is_some())
        + usize::from(!r.clusters.is_empty())
        + usize::from(r.redirect.is_some());
    if actions != 1 {
        err(
            "",
            "needs exactly one of cluster, clusters (weighted) or redirect".into(),
        );
    }
    if let Some(c) = &r.cluster {
        if !known(c) {
            err(".cluster", format!("unknown cluster {c:?}"));
        }
    }
    for (k, wc) in r.clusters.iter().enumerate() {
        if !known(&wc.name) {
            err(
                &format!(".clusters[{k}].name"),
                format!("unknown cluster {:?}", wc.name),
            );
        }
        if wc.weight > 1_000_000 {
            err(
                &format!(".clusters[{k}].weight"),
                "must be at most 1000000".into(),
            );
        }
    }
    if !r.clusters.is_empty() && r.clusters.iter().all(|c| c.weight == 0) {
        err(".clusters", "at least one weight must be above 0".into());
    }
    if let Some(c) = &r.canary {
        if !known(&c.cluster) {
            err(
                ".canary.cluster",
                format!("unknown cluster {:?}", c.cluster),
            );
        }
        if c.header.is_none() && c.cookie.is_none() {
            err(".canary", "needs a header or a cookie to match".into());
        }
        if let Some(h) = &c.header {
            if !header_name_ok(&h.name) {
                err(
                    ".canary.header.name",
                    format!("invalid header name {:?}", h.name),
                );
            }
        }
        if let Some(ck) = &c.cookie {
            if !token_ok(&ck.name) {
                err(
                    ".canary.cookie.name",
                    format!("invalid cookie name {:?}", ck.name),
                );
            }
        }
        if r.cluster.is_none() && r.clusters.is_empty() {
            err(
                ".canary",
                "needs cluster or clusters on the same route".into(),
            );
        }
    }
    match &r.path {
        Some(PathMatch::Exact(p)) | Some(PathMatch::Prefix(p)) if !p.starts_with('/') => {
            err(".path", format!("path {p:?} must start with '/'"));
        }
        Some(PathMatch::Regex(re)) => {
            if let Err(e) = regex::Regex::new(re) {
                err(".path.regex", format!("invalid regex: {e}"));
            }
        }
        _ => {}
    }
    for (k, m) in r.methods.iter().enumerate() {
        if Method::from_bytes(m.as_bytes()).is_err() || m.bytes().any(|b| b.is_ascii_lowercase()) {
            err(
                &format!(".methods[{k}]"),
                format!("invalid method {m:?} (upper case, e.g. GET)"),
            );
        }
    }
    for (k, m) in r.headers.iter().enumerate() {
        if let Err(msg) = value_match(m, true) {
            err(&format!(".headers[{k}]"), msg);
        }
    }
    for (k, m) in r.query.iter().enumerate() {
        if let Err(msg) = value_match(m, false) {
            err(&format!(".query[{k}]"), msg);
        }
    }
    if let Some(rw) = &r.rewrite {
        if !matches!(r.path, Some(PathMatch::Prefix(_))) {
            err(
                ".rewrite",
                "needs path: {prefix: ...} to know what to replace".into(),
            );
        }
        if !rw.prefix.starts_with('/') {
            err(
                ".rewrite.prefix",
                format!("{:?} must start with '/'", rw.prefix),
            );
        }
    }
    if let Some(rd) = &r.redirect {
        if ![301, 302, 303, 307, 308].contains(&rd.status) {
            err(
                ".redirect.status",
                format!("{} is not one of 301, 302, 303, 307, 308", rd.status),
            );
        }
        if let Some(s) = &rd.scheme {
            if s != "http" && s != "https" {
                err(".redirect.scheme", format!("{s:?} must be http or https"));
            }
        }
        if let Some(h) = &rd.host {
            if h == "*" || h.starts_with("*.") || check_host(h).is_err() {
                err(".redirect.host", format!("invalid host {h:?}"));
            }
        }
        if let Some(p) = &rd.path_prefix {
            if !p.starts_with('/') {
                err(
                    ".redirect.path_prefix",
                    format!("{p:?} must start with '/'"),
                );
            }
        }
    }
    for (field, edits) in [
        ("request_headers", &r.request_headers),
        ("response_headers", &r.response_headers),
    ] {
        for (k, v) in edits.set.iter().chain(edits.add.iter()) {
            if !header_name_ok(k) {
                err(&format!(".{field}"), format!("invalid header name {k:?}"));
            } else if HeaderValue::from_str(v).is_err() {
                err(
                    &format!(".{field}.{k}"),
                    format!("invalid header value {v:?}"),
                );
            }
        }
        for k in &edits.remove {
            if !header_name_ok(k) {
                err(
                    &format!(".{field}.remove"),
                    format!("invalid header name {k:?}"),
                );
            }
        }
    }
}

fn value_match(m: &ValueMatch, header: bool) -> Result<(), String> {
    if header && !header_name_ok(&m.name) {
        return Err(format!("invalid header name {:?}", m.name));
    }
    if !header && m.name.is_empty() {
        return Err("name must not be empty".into());
    }
    let kinds = usize::from(m.exact.is_some())
        + usize::from(m.regex.is_some())
        + usize::from(m.present == Some(true));
    if kinds != 1 {
        return Err("needs exactly one of exact, regex or present: true".into());
    }
    if let Some(re) = &m.regex {
        regex::Regex::new(re).map_err(|e| format!("invalid regex: {e}"))?;
    }
    Ok(())
}

pub(super) fn header_name_ok(name: &str) -> bool {
    !name.is_empty() && HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// RFC 9110 token (cookie names, methods).
pub(super) fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A route host: `*`, `*.suffix`, or a DNS name (letters, digits, `-`, dots), no port.
pub(super) fn check_host(h: &str) -> Result<(), String> {
    if h == "*" {
        return Ok(());
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    let bad = |why: &str| Err(format!("invalid host {h:?}: {why}"));
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if name.contains(':') {
        return bad("must not contain a port or scheme (ports are ignored when matching)");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("only letters, digits, '-', '_' and '.' are allowed; \"*.\" only as the first label, or \"*\" for any host");
        }
    }
    Ok(())
}

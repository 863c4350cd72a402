//! HTTPRoute matches → a route's path, headers, query and method (regular expressions anchored
//! to the whole value), and the Gateway API duration format of rule timeouts.

use super::types::Match;
use crate::config::{Interval, PathMatch, Route, ValueMatch};

/// A Gateway API duration (`1h30m`, `10s`, `500ms`); `Ok(None)` for zero (no timeout).
pub(crate) fn duration(s: &str) -> Result<Option<Interval>, String> {
    let bad = || format!("invalid duration {s:?} (like 10s, 1m30s, 500ms)");
    let (mut total, mut rest, mut parts) = (0u64, s, 0);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (ms, len) = match () {
            _ if rest.starts_with("ms") => (1, 2),
            _ if rest.starts_with('h') => (3_600_000, 1),
            _ if rest.starts_with('m') => (60_000, 1),
            _ if rest.starts_with('s') => (1000, 1),
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(ms));
        rest = &rest[len..];
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok((total > 0).then(|| Interval(std::time::Duration::from_millis(total))))
}

pub(super) fn blank(name: String, hosts: Vec<String>, listeners: Vec<String>) -> Route {
    Route {
        name: Some(name),
        hosts,
        path: None,
        listeners,
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        cluster: None,
        clusters: Vec::new(),
        canary: None,
        redirect: None,
        rewrite: None,
        allow: Vec::new(),
        deny: Vec::new(),
        request_headers: Default::default(),
        response_headers: Default::default(),
        hsts: None,
        mirror: None,
        rate_limit: None,
    }
}

/// One match → path, headers, query, method of `r`.
pub(super) fn matcher(r: &mut Route, m: &Match, field: &str) -> Result<(), String> {
    let anchored = |v: &str, at: &str| {
        let re = format!("^(?:{v})$");
        regex::Regex::new(&re)
            .map(|_| re)
            .map_err(|e| format!("{at}: invalid regex: {e}"))
    };
    // The spec's default match is PathPrefix "/".
    r.path = Some(PathMatch::Prefix("/".into()));
    if let Some(p) = &m.path {
        let v = p.value.clone().unwrap_or_else(|| "/".into());
        let at = format!("{field}.path.value");
        r.path = Some(match p.type_.as_deref().unwrap_or("PathPrefix") {
            "Exact" | "PathPrefix" if !v.starts_with('/') => {
                return Err(format!("{at}: {v:?} must start with '/'"));
            }
            "Exact" => PathMatch::Exact(v),
            "PathPrefix" => PathMatch::Prefix(v),
            "RegularExpression" => PathMatch::Regex(anchored(&v, &at)?),
            t => return Err(format!("{field}.path.type: {t:?} is not supported")),
        });
    }
    for (kind, list, out) in [
        ("headers", &m.headers, &mut r.headers),
        ("queryParams", &m.query_params, &mut r.query),
    ] {
        for (k, h) in list.iter().enumerate() {
            let at = format!("{field}.{kind}[{k}]");
            let header = kind == "headers";
            if header && http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                || h.name.is_empty()
            {
                return Err(format!("{at}.name: invalid name {:?}", h.name));
            }
            let (exact, regex) = match h.type_.as_deref().unwrap_or("Exact") {
                "Exact" => (Some(h.value.clone()), None),
                "RegularExpression" => (None, Some(anchored(&h.value, &format!("{at}.value"))?)),
                t => return Err(format!("{at}.type: {t:?} is not supported")),
            };
            let name = h.name.clone();
            out.push(ValueMatch {
                name,
                exact,
                regex,
                present: None,
            });
        }
    }
    if let Some(method) = &m.method {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "{field}.method: {method:?} is not an upper-case method"
            ));
        }
        r.methods = vec![method.clone()];
    }
    Ok(())
}

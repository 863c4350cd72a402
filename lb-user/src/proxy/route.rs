//! The compiled routing table: hosts by hash (exact, longest wildcard suffix, then any), then the
//! host's routes in precedence order (exact, longest prefix, regex, catch-all; more conditions first).

use crate::config::{PathMatch, Route, ValueMatch};
use http::{Method, Request};
use regex::Regex;
use std::collections::HashMap;

/// Which route matched, and how many path bytes its prefix covered (for rewrites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: usize,
    pub prefix_len: usize,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<Box<str>, usize>,
    any: Option<usize>,
    groups: Vec<Vec<Matcher>>,
}

#[derive(Debug)]
struct Matcher {
    route: usize,
    listeners: Vec<Box<str>>,
    path: PathRule,
    methods: Vec<Method>,
    headers: Vec<ValueRule>,
    query: Vec<ValueRule>,
}

#[derive(Debug)]
enum PathRule {
    Exact(String),
    /// Without a trailing slash; empty = everything.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct ValueRule {
    name: String,
    test: ValueTest,
}

#[derive(Debug)]
enum ValueTest {
    Exact(String),
    Regex(Regex),
    Present,
}

impl RouteTable {
    /// Compiles validated routes. Invalid regexes (already reported by validation) never match.
    pub fn build<R: std::borrow::Borrow<Route>>(routes: &[R]) -> RouteTable {
        let mut t = RouteTable::default();
        for (i, r) in routes.iter().enumerate() {
            let r: &Route = r.borrow();
            for host in &r.hosts {
                let host = host.to_ascii_lowercase();
                let g = if host == "*" {
                    *t.any.get_or_insert_with(|| new_group(&mut t.groups))
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    group_for(&mut t.wildcard, &mut t.groups, suffix)
                } else {
                    group_for(&mut t.exact, &mut t.groups, &host)
                };
                if let Some(m) = compile(i, r) {
                    t.groups[g].push(m);
                }
            }
        }
        for g in &mut t.groups {
            // Stable: equal precedence keeps config order.
            g.sort_by_key(|m| {
                let (kind, len) = match &m.path {
                    PathRule::Exact(p) => (0, p.len()),
                    PathRule::Prefix(p) if !p.is_empty() => (1, p.len()),
                    PathRule::Regex(_) => (2, 0),
                    // `/` (or no path at all) is the catch-all: least specific.
                    PathRule::Prefix(_) => (3, 0),
                };
                let conditions = usize::from(!m.methods.is_empty())
                    + usize::from(!m.listeners.is_empty())
                    + m.headers.len()
                    + m.query.len();
                (kind, usize::MAX - len, usize::MAX - conditions)
            });
        }
        t
    }

    /// Number of distinct host keys (exact + wildcard + any).
    pub fn hosts(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// `host` is lowercase without port (see router::request_host). The most specific host
    /// entry that exists decides: its routes are tried in order; there is no fallback to a
    /// less specific host entry (as in Envoy's virtual hosts).
    pub fn lookup<B>(
        &self,
        listener: &str,
        host: Option<&str>,
        req: &Request<B>,
    ) -> Option<RouteMatch> {
        let group = host
            .and_then(|h| self.exact.get(h).or_else(|| self.wildcard_for(h)))
            .or(self.any.as_ref())?;
        let path = req.uri().path();
        let query = req.uri().query();
        self.groups[*group]
            .iter()
            .find_map(|m| m.matches(listener, path, query, req))
    }

    fn wildcard_for(&self, host: &str) -> Option<&usize> {
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(g) = self.wildcard.get(rest) {
                return Some(g);
            }
        }
        None
    }
}

fn new_group(groups: &mut Vec<Vec<Matcher>>) -> usize {
    groups.push(Vec::new());
    groups.len() - 1
}

fn group_for(
    index: &mut HashMap<Box<str>, usize>,
    groups: &mut Vec<Vec<Matcher>>,
    key: &str,
) -> usize {
    if let Some(g) = index.get(key) {
        return *g;
    }
    let g = new_group(groups);
    index.insert(key.into(), g);
    g
}

fn compile(route: usize, r: &Route) -> Option<Matcher> {
    let path = match &r.path {
        None => PathRule::Prefix(String::new()),
        Some(PathMatch::Exact(p)) => PathRule::Exact(p.clone()),
        Some(PathMatch::Prefix(p)) => PathRule::Prefix(p.trim_end_matches('/').to_string()),
        Some(PathMatch::Regex(re)) => PathRule::Regex(Regex::new(re).ok()?),
    };
    let values = |ms: &[ValueMatch], lower: bool| -> Option<Vec<ValueRule>> {
        ms.iter()
            .map(|m| {
                let test = match (&m.exact, &m.regex) {
                    (Some(v), _) => ValueTest::Exact(v.clone()),
                    (None, Some(re)) => ValueTest::Regex(Regex::new(re).ok()?),
                    (None, None) => ValueTest::Present,
                };
                let name = if lower {
                    m.name.to_ascii_lowercase()
                } else {
                    m.name.clone()
                };
                Some(ValueRule { name, test })
            })
            .collect()
    };
    Some(Matcher {
        route,
        listeners: r.listeners.iter().map(|l| l.as_str().into()).collect(),
        path,
        methods: r
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect(),
        headers: values(&r.headers, true)?,
        query: values(&r.query, false)?,
    })
}

impl Matcher {
    fn matches<B>(
        &self,
        listener: &str,
        path: &str,
        query: Option<&str>,
        req: &Request<B>,
    ) -> Option<RouteMatch> {
        if !self.listeners.is_empty() && !self.listeners.iter().any(|l| **l == *listener) {
            return None;
        }
        let prefix_len = match &self.path {
            PathRule::Exact(p) => (path == p).then_some(path.len())?,
            PathRule::Prefix(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some(p.len())?
            }
            PathRule::Regex(re) => re.is_match(path).then_some(0)?,
        };
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            return None;
        }
        for h in &self.headers {
            let mut values = req.headers().get_all(h.name.as_str()).iter();
            let ok = match &h.test {
                ValueTest::Present => values.next().is_some(),
                ValueTest::Exact(v) => values.any(|x| x.as_bytes() == v.as_bytes()),
                ValueTest::Regex(re) => values.any(|x| x.to_str().is_ok_and(|s| re.is_match(s))),
            };
            if !ok {
                return None;
            }
        }
        for q in &self.query {
            let mut values = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == q.name).then_some(v)
                });
            let ok = match &q.test {
                ValueTest::Present => values.next().is_some(),
                ValueTest::Exact(v) => values.any(|x| x == v),
                ValueTest::Regex(re) => values.any(|x| re.is_match(x)),
            };
            if !ok {
                return None;
            }
        }
        Some(RouteMatch {
            route: self.route,
            prefix_len,
        })
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;

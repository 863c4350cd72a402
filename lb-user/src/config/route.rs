//! Route config: which requests a route takes (hosts, path, methods, headers, query) and what it
//! does with them (clusters by weight, canary, redirect, rewrite, header edits, HSTS, ACLs, rate).

use super::scalars::Cidr;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Used in logs and metrics; default `routes[i]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Exact hosts (case-insensitive, port ignored), wildcards `*.example.com` (any deeper
    /// name; the longest suffix wins) or `"*"` for any host.
    pub hosts: Vec<String>,
    /// Path match; default: prefix `/` (everything).
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Only requests that arrived on these listeners (by name); default any. E.g. redirect to
    /// HTTPS only on the plain listener.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Only these methods (upper case, e.g. GET); default any.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    #[serde(default)]
    pub query: Vec<ValueMatch>,
    /// Serve from this cluster...
    #[serde(default)]
    pub cluster: Option<String>,
    /// ...or split by weight between clusters (canary / migration: 99 and 1).
    #[serde(default)]
    pub clusters: Vec<WeightedCluster>,
    /// Requests carrying this header or cookie value go to `canary.cluster`, whatever the weights.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// Answer with a redirect instead of proxying.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Replace the matched path prefix before forwarding (needs `path.prefix`).
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Only clients in these prefixes (403 otherwise); empty = everyone.
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// Clients in these prefixes get 403 (checked after `allow`).
    #[serde(default)]
    pub deny: Vec<Cidr>,
    #[serde(default)]
    pub request_headers: HeaderEdits,
    #[serde(default)]
    pub response_headers: HeaderEdits,
    /// Strict-Transport-Security on responses to HTTPS requests.
    #[serde(default)]
    pub hsts: Option<Hsts>,
    /// Copy a share of requests to another cluster (shadow traffic).
    #[serde(default)]
    pub mirror: Option<super::health::Mirror>,
    /// Requests per client IP on this route (429 over it), checked after routing and after
    /// the listener's `rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<super::RateLimit>,
}

/// Written `{exact: /p}`, `{prefix: /p}` or `{regex: '^/p'}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path (query excluded) equals this.
    Exact(String),
    /// `/api` matches `/api`, `/api/` and `/api/x`, never `/apix` (segment boundaries).
    Prefix(String),
    /// A regular expression over the path (query excluded), like HAProxy's map_reg.
    Regex(String),
}

/// A header or query-parameter condition: exactly one of `exact`, `regex`, `present`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathMatchRepr {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

impl<'de> Deserialize<'de> for PathMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = PathMatchRepr::deserialize(d)?;
        match (r.exact, r.prefix, r.regex) {
            (Some(p), None, None) => Ok(PathMatch::Exact(p)),
            (None, Some(p), None) => Ok(PathMatch::Prefix(p)),
            (None, None, Some(p)) => Ok(PathMatch::Regex(p)),
            _ => Err(serde::de::Error::custom(
                "path needs exactly one of exact, prefix or regex",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    /// Share of requests, relative to the other entries (0 = none).
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub cluster: String,
    #[serde(default)]
    pub header: Option<NameValue>,
    #[serde(default)]
    pub cookie: Option<NameValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`; default: the request's.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Replaces the matched path prefix (route `path.prefix`), or the whole path otherwise.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// 301, 302, 303, 307 or 308; default 302.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Replace (or add) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Add these values next to existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    #[serde(default = "default_hsts_age")]
    pub max_age: u64,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

fn default_redirect_status() -> u16 {
    302
}

fn default_hsts_age() -> u64 {
    31_536_000
}

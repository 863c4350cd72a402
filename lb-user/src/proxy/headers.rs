//! Header work on the way through (hop-by-hop, X-Forwarded-*, X-Request-Id, set/add/remove, HSTS,
//! cookies, redirects, prefix rewrites) and each route's compiled state (build_route, route_rate).

use super::balancer::Wrr;
use super::table::{Action, RouteState};
use crate::config::{ForwardedHeader, HeaderEdits, Redirect, Route};
use crate::ratelimit::RateLimiter;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Compiled set/add/remove edits.
#[derive(Debug, Default)]
pub struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    fn build(e: &HeaderEdits) -> Edits {
        let pair = |(k, v): (&String, &String)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        };
        Edits {
            set: e.set.iter().filter_map(pair).collect(),
            add: e.add.iter().filter_map(pair).collect(),
            remove: e
                .remove
                .iter()
                .filter_map(|k| HeaderName::from_bytes(k.as_bytes()).ok())
                .collect(),
        }
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for name in &self.remove {
            h.remove(name);
        }
        for (k, v) in &self.set {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            h.append(k.clone(), v.clone());
        }
    }
}

pub(super) fn build_route(i: usize, r: &Route, clusters: &HashMap<&str, usize>) -> RouteState {
    let idx = |name: &str| clusters.get(name).copied().unwrap_or(usize::MAX);
    let action = if let Some(rd) = &r.redirect {
        Action::Redirect(rd.clone())
    } else if let Some(c) = &r.cluster {
        Action::Cluster(idx(c))
    } else {
        let weights: Vec<u32> = r.clusters.iter().map(|c| c.weight).collect();
        Action::Split {
            wrr: Wrr::new(&weights),
            clusters: r.clusters.iter().map(|c| idx(&c.name)).collect(),
        }
    };
    let hsts = r.hsts.and_then(|h| {
        let mut v = format!("max-age={}", h.max_age);
        if h.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if h.preload {
            v.push_str("; preload");
        }
        HeaderValue::from_str(&v).ok()
    });
    RouteState {
        name: r
            .name
            .clone()
            .unwrap_or_else(|| format!("routes[{i}]"))
            .into(),
        action,
        canary: r
            .canary
            .as_ref()
            .map(|c| (idx(&c.cluster), c.header.clone(), c.cookie.clone())),
        allow: r.allow.iter().map(|c| c.0).collect(),
        deny: r.deny.iter().map(|c| c.0).collect(),
        request_edits: Edits::build(&r.request_headers),
        response_edits: Edits::build(&r.response_headers),
        tally: Default::default(),
        stats: Default::default(),
        mirror: None,
        rate: None,
        hsts,
        rewrite: r.rewrite.as_ref().map(|rw| rw.prefix.clone()),
    }
}

/// Slots of a route's rate limiter (128 KiB each; a listener's has 65536): clients that hash to
/// one slot share a bucket, so with `n` active clients a client shares with probability n/16384.
const ROUTE_RATE_SLOTS: usize = 16384;

/// The limiter of route `r`: `old`'s (same route name) while (rate, burst) is unchanged, so a
/// reload neither refills nor forgets buckets; a new one otherwise.
pub(super) fn route_rate(
    r: &Route,
    old: Option<&RouteState>,
) -> Option<((u32, u32), Arc<RateLimiter>)> {
    let rl = r.rate_limit?;
    let key = (
        rl.requests_per_second,
        rl.burst.unwrap_or(rl.requests_per_second),
    );
    match old.and_then(|o| o.rate.clone()) {
        Some((k, lim)) if k == key => Some((k, lim)),
        _ => Some((
            key,
            Arc::new(RateLimiter::new(key.0, key.1, ROUTE_RATE_SLOTS)),
        )),
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// [`HOP_BY_HOP`] as header names, in the same order.
const HOP_BY_HOP_NAMES: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes RFC 9110 hop-by-hop headers and every header the Connection header names. Most
/// messages carry none or only Connection: one scan of the names present (no hashing, no
/// allocation) marks them, and only those are removed.
/// `keep_te_trailers` keeps `TE: trailers` (gRPC over HTTP/2 needs it end to end).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Bit i set: HOP_BY_HOP[i] is present. Names compare as values (a standard name is an
    // enum tag), not as strings.
    let present = (headers.keys())
        .filter_map(|k| HOP_BY_HOP_NAMES.iter().position(|h| h == k))
        .fold(0u8, |bits, i| bits | 1 << i);
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // What Connection names besides `close`, `keep-alive` and the fixed set (removed
        // below anyway): usually nothing, so nothing is allocated.
        let mut named: Vec<HeaderName> = Vec::new();
        for token in (headers.get_all(header::CONNECTION).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            let fixed = token.eq_ignore_ascii_case("close")
                || HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h));
            if !fixed {
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(n);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    let te_trailers = keep_te_trailers
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// What the forwarding headers say about one client, formatted once per connection.
#[derive(Debug, Clone)]
pub struct ClientId {
    /// `192.0.2.7` (IPv4-mapped IPv6 shown as IPv4).
    pub ip: HeaderValue,
    v6: bool,
}

impl ClientId {
    pub fn new(client: SocketAddr) -> Self {
        let ip = client.ip().to_canonical();
        // IPv4 by hand on the stack: `Display` goes through the formatter (~2k instructions
        // per connection); the value is then one allocation.
        let mut v4 = [0u8; 15];
        let v6;
        let text: &[u8] = match ip {
            std::net::IpAddr::V4(ip) => {
                let n = ipv4_text(ip, &mut v4);
                &v4[..n]
            }
            std::net::IpAddr::V6(ip) => {
                v6 = ip.to_string();
                v6.as_bytes()
            }
        };
        ClientId {
            ip: HeaderValue::from_bytes(text).unwrap_or(HeaderValue::from_static("unknown")),
            v6: ip.is_ipv6(),
        }
    }

    /// Appends the Forwarded `for=` pair: `for=192.0.2.7` or `for="[2001:db8::1]"` (RFC 7239).
    fn push_forwarded_for(&self, out: &mut String) {
        let ip = self.ip.to_str().unwrap_or("unknown");
        if self.v6 {
            out.push_str("for=\"[");
            out.push_str(ip);
            out.push_str("]\"");
        } else {
            out.push_str("for=");
            out.push_str(ip);
        }
    }
}

/// Writes the dotted-quad text of `ip` to the front of `out`; returns its length.
fn ipv4_text(ip: std::net::Ipv4Addr, out: &mut [u8; 15]) -> usize {
    let mut n = 0;
    let mut push = |b: u8| {
        out[n] = b;
        n += 1;
    };
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        if o >= 100 {
            push(b'0' + o / 100);
        }
        if o >= 10 {
            push(b'0' + o / 10 % 10);
        }
        push(b'0' + o % 10);
    }
    n
}

/// X-Forwarded-For/-Proto/-Host and Forwarded. From a trusted client the existing values are
/// kept and ours appended; from anyone else they are replaced by what we saw.
/// The forwarding headers a listener sets (`forwarded.headers`), one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedSet(u8);

impl ForwardedSet {
    pub const ALL: ForwardedSet = ForwardedSet(0b1111);

    pub fn new(headers: &[ForwardedHeader]) -> ForwardedSet {
        ForwardedSet(headers.iter().fold(0, |bits, h| bits | 1 << *h as u8))
    }

    fn has(self, h: ForwardedHeader) -> bool {
        self.0 & 1 << h as u8 != 0
    }
}

/// Sets the forwarding headers in `set`: earlier hops' values kept (appended to) only from a
/// `trusted` peer, overwritten otherwise.
pub fn forwarded(
    h: &mut HeaderMap,
    set: ForwardedSet,
    client: &ClientId,
    tls: bool,
    host: &str,
    trusted: bool,
) {
    use ForwardedHeader as F;
    let proto = if tls { "https" } else { "http" };
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    let prior = |h: &HeaderMap, name: &HeaderName| -> Option<String> {
        let v: Vec<&str> = h
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!v.is_empty()).then(|| v.join(", "))
    };
    // Earlier hops' values count only from a trusted peer (and are only then read).
    if set.has(F::XForwardedFor) {
        let xff = match trusted.then(|| prior(h, &XFF)).flatten() {
            Some(p) => {
                let ip = client.ip.to_str().unwrap_or("unknown");
                HeaderValue::from_str(&format!("{p}, {ip}")).ok()
            }
            _ => Some(client.ip.clone()),
        };
        if let Some(v) = xff {
            h.insert(XFF, v);
        }
    }
    if set.has(F::Forwarded) {
        let mut fwd = String::with_capacity(client.ip.len() + host.len() + 30);
        client.push_forwarded_for(&mut fwd);
        fwd.push_str(";proto=");
        fwd.push_str(proto);
        if is_token(host) {
            fwd.push_str(";host=");
            fwd.push_str(host);
        }
        let fwd = match trusted.then(|| prior(h, &header::FORWARDED)).flatten() {
            Some(p) => format!("{p}, {fwd}"),
            None => fwd,
        };
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)) {
            h.insert(header::FORWARDED, v);
        }
    }
    if set.has(F::XForwardedProto) && !(trusted && h.contains_key(&XFP)) {
        h.insert(XFP, HeaderValue::from_static(proto));
    }
    if set.has(F::XForwardedHost) && !(trusted && h.contains_key(&XFH)) {
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(XFH, v);
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Keeps a sane incoming X-Request-Id, else sets a fresh random 128-bit one; returns it.
pub fn request_id(h: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&REQUEST_ID) {
        if !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, b) in id.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    let v = HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"));
    h.insert(REQUEST_ID, v.clone());
    v
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// Replaces the first `prefix_len` bytes of the path with `new_prefix` (query kept).
pub fn rewrite_prefix(uri: &Uri, prefix_len: usize, new_prefix: &str) -> Option<PathAndQuery> {
    let path = uri.path();
    let rest = path.get(prefix_len..)?;
    let mut out = String::with_capacity(new_prefix.len() + rest.len() + 16);
    out.push_str(new_prefix.trim_end_matches('/'));
    if rest.is_empty() || !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if out.len() > 1 && rest.is_empty() && !new_prefix.ends_with('/') {
        out.pop();
    }
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::try_from(out).ok()
}

/// Location for a redirect route. `prefix_len` is the matched prefix (0 when not a prefix route);
/// `port` the request's explicit port, kept when the redirect changes neither scheme nor host.
pub fn redirect_location(
    rd: &Redirect,
    uri: &Uri,
    host: &str,
    port: Option<u16>,
    tls: bool,
    prefix_len: usize,
) -> Option<HeaderValue> {
    let scheme = rd
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let host = rd.host.as_deref().unwrap_or(host);
    let same_origin = rd.scheme.is_none() && rd.host.is_none();
    let port = rd
        .port
        .or(port.filter(|_| same_origin))
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let pq = match &rd.path_prefix {
        Some(p) if prefix_len > 0 => rewrite_prefix(uri, prefix_len, p)?,
        Some(p) => PathAndQuery::try_from(match uri.query() {
            Some(q) => format!("{p}?{q}"),
            None => p.clone(),
        })
        .ok()?,
        None => uri
            .path_and_query()
            .cloned()
            .unwrap_or(PathAndQuery::from_static("/")),
    };
    HeaderValue::from_str(&format!("{scheme}://{host}{port}{pq}")).ok()
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;

//! The table of `lb.example.com/` annotations: each name, where it may appear, the config field it
//! writes (docs/kubernetes.md lists the same) and how its string value is read; typo suggestions.

/// Where an annotation may appear and what it configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// A route setting: on an Ingress only, applies to every route the Ingress produces.
    Route,
    /// A cluster setting: on a Service (its clusters) or an Ingress (the clusters of its routes).
    Cluster,
}

/// How the string value becomes a config value (the config's own Deserialize then checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// As written (durations, names, enum values, paths).
    Str,
    /// A YAML scalar: integer, `true`/`false`, decimal number.
    Scalar,
    /// A number with an optional `%` sign (`20`, `20%`, `0.5%`).
    Percent,
    /// A comma-separated list of strings.
    List,
    /// A YAML mapping of strings: `{X-A: one, X-B: two}` or one `Name: value` per line.
    Map,
    /// `true` turns the section on with its defaults (other annotations may refine it).
    Enable,
    /// `source_ip`, `uri`, `header:NAME` or `cookie:NAME`.
    HashKey,
    /// `true` or `false`, read by the mapping (not a config field of its own).
    Flag,
    /// A whole percentage 0..=100, read by the mapping.
    Weight,
    /// Free text read by the mapping (a header or cookie name or value).
    Text,
    /// A Service of the same namespace with its port: `NAME:PORT` (number or port name).
    Service,
    /// Read by another part of the mapping (named here), not by the route/cluster settings.
    Elsewhere(&'static str),
}

/// One annotation (name without the prefix).
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub level: Level,
    pub kind: Kind,
    /// Config fields, dotted, relative to the route or cluster: the first is where the value is
    /// written (writing kinds); all are used to say which annotation a validation error is about.
    pub paths: &'static [&'static str],
}

const fn s(name: &'static str, level: Level, kind: Kind, paths: &'static [&'static str]) -> Spec {
    Spec {
        name,
        level,
        kind,
        paths,
    }
}

use Kind::*;
use Level::{Cluster as C, Route as R};

/// Every annotation we read, in the order docs/kubernetes.md lists them.
pub(crate) static SPECS: &[Spec] = &[
    // Routes (Ingress only).
    s("ssl-redirect", R, Flag, &["redirect"]),
    s("hsts", R, Enable, &["hsts"]),
    s("hsts-max-age", R, Scalar, &["hsts.max_age"]),
    s(
        "hsts-include-subdomains",
        R,
        Scalar,
        &["hsts.include_subdomains"],
    ),
    s("hsts-preload", R, Scalar, &["hsts.preload"]),
    s("allow-source-range", R, List, &["allow"]),
    s("deny-source-range", R, List, &["deny"]),
    s("request-headers-set", R, Map, &["request_headers.set"]),
    s("request-headers-add", R, Map, &["request_headers.add"]),
    s(
        "request-headers-remove",
        R,
        List,
        &["request_headers.remove"],
    ),
    s("response-headers-set", R, Map, &["response_headers.set"]),
    s("response-headers-add", R, Map, &["response_headers.add"]),
    s(
        "response-headers-remove",
        R,
        List,
        &["response_headers.remove"],
    ),
    s("rewrite-prefix", R, Str, &["rewrite.prefix", "rewrite"]),
    s("mirror-target", R, Service, &["mirror.cluster", "mirror"]),
    s("mirror-percent", R, Percent, &["mirror.percent"]),
    s("canary", R, Flag, &["canary"]),
    s("canary-weight", R, Weight, &["clusters"]),
    s(
        "canary-by-header",
        R,
        Text,
        &["canary.header.name", "canary"],
    ),
    s("canary-by-header-value", R, Text, &["canary.header.value"]),
    s(
        "canary-by-cookie",
        R,
        Text,
        &["canary.cookie.name", "canary"],
    ),
    s("rate-limit", R, Scalar, &["rate_limit.requests_per_second"]),
    s("rate-limit-burst", R, Scalar, &["rate_limit.burst"]),
    // Clusters (Service or Ingress).
    s("load-balance", C, Str, &["balance", "hash"]),
    s("hash-key", C, HashKey, &["hash"]),
    s("affinity-cookie", C, Str, &["affinity.cookie"]),
    s("upstream-protocol", C, Str, &["protocol"]),
    s("backend-tls", C, Enable, &["tls"]),
    s("backend-tls-ca", C, Str, &["tls.ca"]),
    s("backend-tls-server-name", C, Str, &["tls.server_name"]),
    s(
        "backend-tls-insecure-skip-verify",
        C,
        Scalar,
        &["tls.insecure_skip_verify", "tls.ca"],
    ),
    s("send-proxy", C, Str, &["send_proxy"]),
    s("connect-timeout", C, Str, &["connect_timeout"]),
    s("response-timeout", C, Str, &["response_timeout"]),
    s("idle-timeout", C, Str, &["idle_timeout"]),
    s("request-timeout", C, Str, &["request_timeout"]),
    s("retries", C, Scalar, &["retries.attempts"]),
    s("retry-on", C, List, &["retries.conditions"]),
    s(
        "retry-non-idempotent",
        C,
        Scalar,
        &["retries.non_idempotent"],
    ),
    s(
        "retry-budget-percent",
        C,
        Percent,
        &["retries.budget_percent"],
    ),
    s("retry-budget-min", C, Scalar, &["retries.budget_min"]),
    s(
        "max-connections-per-endpoint",
        C,
        Scalar,
        &["max_connections_per_endpoint"],
    ),
    s("queue-size", C, Scalar, &["queue.size"]),
    s("queue-timeout", C, Str, &["queue.timeout"]),
    s("health-check-type", C, Str, &["health.active.type"]),
    s("health-check-path", C, Str, &["health.active.path"]),
    s("health-check-method", C, Str, &["health.active.method"]),
    s("health-check-host", C, Str, &["health.active.host"]),
    s(
        "health-check-expect-status",
        C,
        List,
        &["health.active.expect_status"],
    ),
    s(
        "health-check-interval",
        C,
        Str,
        &["health.active.interval", "health.active.timeout"],
    ),
    s("health-check-timeout", C, Str, &["health.active.timeout"]),
    s("health-check-rise", C, Scalar, &["health.active.rise"]),
    s("health-check-fall", C, Scalar, &["health.active.fall"]),
    s(
        "passive-consecutive-errors",
        C,
        Scalar,
        &["health.passive.consecutive_errors", "health.passive"],
    ),
    s(
        "passive-error-percent",
        C,
        Percent,
        &["health.passive.error_percent", "health.passive"],
    ),
    s("passive-window", C, Str, &["health.passive.window"]),
    s(
        "passive-min-requests",
        C,
        Scalar,
        &["health.passive.min_requests"],
    ),
    s(
        "passive-cooldown",
        C,
        Str,
        &["health.passive.cooldown", "health.passive.max_cooldown"],
    ),
    s(
        "passive-max-cooldown",
        C,
        Str,
        &["health.passive.max_cooldown", "health.passive.cooldown"],
    ),
    s(
        "passive-max-ejection-percent",
        C,
        Percent,
        &["health.passive.max_ejection_percent"],
    ),
    s("slow-start", C, Str, &["health.slow_start"]),
    s("backup-service", C, Service, &["endpoints"]),
    s("backups", C, Str, &["backups"]),
    // Read by the L4 mapping (kube/services.rs): a Service as an XDP L4 service.
    s("l4", C, Elsewhere("kube/services.rs"), &[]),
];

/// The spec named `name` (without the prefix).
pub(crate) fn find(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The known name closest to `name` when it looks like a typo of it (edit distance ≤ 2).
pub(crate) fn suggest(name: &str) -> Option<&'static str> {
    SPECS
        .iter()
        .map(|s| (distance(name, s.name), s.name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance (names are short ASCII; longer inputs are cut at 64 characters).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_typos_find_their_name() {
        let mut names: Vec<_> = SPECS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SPECS.len());
        assert_eq!(suggest("conect-timeout"), Some("connect-timeout"));
        assert_eq!(suggest("retires"), Some("retries"));
        assert_eq!(suggest("something-else-entirely"), None);
        assert_eq!(distance("", "abc"), 3);
    }
}

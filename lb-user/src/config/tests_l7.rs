//! Config tests for the L7 fields: a full example parses, and each bad field is named.

use super::*;

use super::tests::{errors, has};

const FULL: &str = r#"
listeners:
  - name: web
    address: "0.0.0.0:8443"
    tls: {certificates: [{cert: a.pem, key: a.key}], default_certificate: none}
    http2: false
    proxy_protocol: {trusted: [10.0.0.0/8], timeout: 2s}
    max_connections: 100
    rate_limit: {requests_per_second: 50, burst: 100}
    limits: {max_header_bytes: 16384, max_headers: 50, max_body_bytes: 1048576, header_timeout: 10s}
    forwarded: {trusted: [192.168.0.0/16], headers: [x-forwarded-for, forwarded]}
    generate_request_id: false
    defer_accept: false
access_log: {format: text}
tracing: {propagate: false}
routes:
  - name: v2
    hosts: [app.example.com, "*.example.com"]
    path: {regex: "^/v2/"}
    methods: [GET, POST]
    headers: [{name: x-env, exact: beta}, {name: x-id, present: true}, {name: ua, regex: "^curl"}]
    query: [{name: debug, exact: "1"}]
    clusters: [{name: onprem, weight: 99}, {name: cloud, weight: 1}]
    canary: {cluster: cloud, header: {name: x-canary, value: "1"}, cookie: {name: canary, value: yes}}
    allow: [10.0.0.0/8]
    deny: [10.9.0.0/16]
    request_headers: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
    response_headers: {set: {x-served-by: lb}}
    hsts: {max_age: 600, include_subdomains: true}
    rate_limit: {requests_per_second: 5, burst: 10}
  - hosts: [old.example.com]
    path: {prefix: /shop}
    redirect: {scheme: https, host: new.example.com, path_prefix: /store, status: 308}
  - hosts: ["*"]
    path: {prefix: /api}
    rewrite: {prefix: /}
    cluster: onprem
clusters:
  - name: onprem
    endpoints: [{address: "10.0.0.1:80", weight: 3}]
    balance: hash
    hash: {on: header, name: x-user}
    affinity: {cookie: srv}
    connect_timeout: 1s
    response_timeout: 5s
    idle_timeout: 10s
    request_timeout: 20s
    max_connections_per_endpoint: 10
    queue: {size: 5, timeout: 1s}
    retries: {attempts: 2, conditions: [connect_failure, reset, 503], non_idempotent: true, budget_percent: 50, budget_min: 1}
    send_proxy: v2
  - name: cloud
    protocol: http2
    balance: least_connections
    tls: {ca: ca.pem, server_name: cloud.internal, client_cert: c.pem, client_key: c.key}
    endpoints: [{address: "[fd00::1]:443"}]
"#;

#[test]
fn full_l7_config_parses() {
    let cfg = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    let l = &cfg.listeners[0];
    assert_eq!(
        l.tls.as_ref().unwrap().default_certificate,
        DefaultCert::None
    );
    assert!(!l.http2);
    assert_eq!(l.limits.max_headers, 50);
    assert_eq!(
        l.forwarded.headers,
        [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded]
    );
    assert!(!l.generate_request_id && !cfg.tracing.propagate);
    assert!(!l.defer_accept);
    assert_eq!(cfg.access_log.format, crate::accesslog::LogFormat::Text);
    let r = &cfg.routes[0];
    assert_eq!(r.path, Some(PathMatch::Regex("^/v2/".into())));
    assert_eq!(r.clusters[1].weight, 1);
    assert_eq!(
        r.rate_limit,
        Some(RateLimit {
            requests_per_second: 5,
            burst: Some(10)
        })
    );
    assert_eq!(cfg.routes[1].rate_limit, None);
    assert_eq!(cfg.routes[1].redirect.as_ref().unwrap().status, 308);
    let c = &cfg.clusters[0];
    assert_eq!(
        c.hash,
        Some(HashOn::Header {
            name: "x-user".into()
        })
    );
    assert_eq!(
        c.retries.conditions,
        [
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Unavailable
        ]
    );
    assert_eq!(c.send_proxy, Some(ProxyVersion::V2));
    assert_eq!(cfg.clusters[1].protocol, Protocol::Http2);
    assert_eq!(cfg.clusters[1].balance, Balance::LeastConnections);
}

#[test]
fn defaults_are_haproxy_like() {
    let cfg =
        parse("clusters: [{name: a}]\nlisteners: [{name: l, address: '127.0.0.1:1'}]\n").unwrap();
    let c = &cfg.clusters[0];
    assert_eq!(c.balance, Balance::RoundRobin);
    assert_eq!(c.retries.attempts, 0);
    assert_eq!(c.queue.size, 1024);
    assert!(cfg.listeners[0].http2);
    assert_eq!(cfg.listeners[0].limits.max_header_bytes, 65536);
    assert_eq!(cfg.access_log.format, crate::accesslog::LogFormat::Json);
    assert_eq!(cfg.listeners[0].forwarded.headers, ForwardedHeader::all());
    assert!(cfg.listeners[0].generate_request_id && cfg.tracing.propagate);
    assert!(cfg.listeners[0].defer_accept);
}

#[test]
fn bad_header_work_fields_are_named() {
    let errs = errors(
        "listeners: [{name: l, address: '127.0.0.1:1', forwarded: {headers: [x-real-ip]}}]\n",
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("listeners[0].forwarded.headers") && e.contains("x-real-ip")),
        "{errs:?}"
    );
    let errs =
        errors("listeners: [{name: l, address: '127.0.0.1:1', generate_request_id: maybe}]\n");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("listeners[0].generate_request_id")),
        "{errs:?}"
    );
    let errs = errors("listeners: [{name: l, address: '127.0.0.1:1', defer_accept: 1s}]\n");
    assert!(has(&errs, "listeners[0].defer_accept", ""), "{errs:?}");
    let errs = errors("tracing: {propagate: 3}\n");
    assert!(has(&errs, "tracing.propagate", ""), "{errs:?}");
    let errs = errors(
        "tracing: {propagate: false, otlp: {endpoint: 'http://127.0.0.1:4318/v1/traces'}}\n",
    );
    assert!(has(&errs, "tracing.propagate", "otlp"), "{errs:?}");
}

#[test]
fn bad_route_fields_are_named() {
    let errs = errors(
        r#"
clusters: [{name: a}]
routes:
  - {hosts: [h], cluster: a, clusters: [{name: a, weight: 1}]}
  - {hosts: [h], path: {regex: "(unclosed"}, cluster: a}
  - {hosts: [h], path: {prefix: nope}, cluster: a}
  - {hosts: [h], methods: [get], cluster: a}
  - {hosts: [h], headers: [{name: x, exact: a, present: true}], cluster: a}
  - {hosts: [h], query: [{name: q, regex: "["}], cluster: a}
  - {hosts: [h], redirect: {status: 200}}
  - {hosts: [h], redirect: {scheme: ftp}}
  - {hosts: [h], rewrite: {prefix: /x}, cluster: a}
  - {hosts: [h], clusters: [{name: a, weight: 0}]}
  - {hosts: [h], cluster: a, canary: {cluster: zz}}
  - {hosts: ["*.*.x"], cluster: a}
  - {hosts: [h], cluster: a, request_headers: {set: {"bad name": v}}}
"#,
    );
    for (prefix, needle) in [
        ("routes[0]", "exactly one of cluster"),
        ("routes[1].path.regex", "invalid regex"),
        ("routes[2].path", "must start with '/'"),
        ("routes[3].methods[0]", "invalid method"),
        ("routes[4].headers[0]", "exactly one of exact"),
        ("routes[5].query[0]", "invalid regex"),
        ("routes[6].redirect.status", "not one of"),
        ("routes[7].redirect.scheme", "http or https"),
        ("routes[8].rewrite", "needs path"),
        ("routes[9].clusters", "at least one weight"),
        ("routes[10].canary.cluster", "unknown cluster"),
        ("routes[10].canary", "needs a header or a cookie"),
        ("routes[11].hosts[0]", "invalid host"),
        ("routes[12].request_headers", "invalid header name"),
    ] {
        assert!(
            has(&errs, prefix, needle),
            "missing {prefix}: {needle} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 14, "{errs:#?}");
}

#[test]
fn bad_listener_and_cluster_fields_are_named() {
    let errs = errors(
        r#"
listeners:
  - name: l
    address: "127.0.0.1:1"
    tls: {certificates: [], default_certificate: 3}
    proxy_protocol: {trusted: []}
    rate_limit: {requests_per_second: 0}
    limits: {max_header_bytes: 100, max_headers: 0}
clusters:
  - {name: a, balance: hash}
  - {name: b, hash: {on: uri}}
  - {name: c, tls: {client_cert: x.pem}}
  - {name: d, retries: {attempts: 11, budget_percent: 101, conditions: [teapot]}}
  - {name: e, balance: fastest}
"#,
    );
    for (prefix, needle) in [
        ("listeners[0].tls.certificates", "at least one"),
        ("listeners[0].tls.default_certificate", "out of range"),
        ("listeners[0].proxy_protocol.trusted", "must list"),
        ("listeners[0].rate_limit.requests_per_second", "at least 1"),
        ("listeners[0].limits.max_header_bytes", "between"),
        ("listeners[0].limits.max_headers", "between"),
        ("clusters[0].hash", "needs a key"),
        ("clusters[1].hash", "only used with balance: hash"),
        ("clusters[2].tls", "go together"),
        ("clusters[2].tls.ca", "needs a CA"),
        (
            "clusters[3].retries.conditions[0]",
            "unknown retry condition",
        ),
        ("clusters[4].balance", "unknown variant `fastest`"),
    ] {
        assert!(
            has(&errs, prefix, needle),
            "missing {prefix}: {needle} in {errs:#?}"
        );
    }
}

#[test]
fn many_routes_may_share_a_host() {
    assert!(errors(
        "clusters: [{name: a}]\nroutes:\n  - {hosts: [h], cluster: a}\n  - {hosts: [h], path: {prefix: /x}, cluster: a}\n"
    )
    .is_empty());
}

#[test]
fn route_rate_limit_is_checked_like_the_listener_one() {
    let cfg = parse(
        "clusters: [{name: a}]\nroutes: [{hosts: [h], cluster: a, rate_limit: {requests_per_second: 3}}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rl = cfg.routes[0]
        .rate_limit
        .unwrap_or_else(|| panic!("no rate_limit"));
    assert_eq!((rl.requests_per_second, rl.burst), (3, None));
    let errs = errors(
        r#"
clusters: [{name: a}]
routes:
  - {hosts: [h], cluster: a, rate_limit: {requests_per_second: 0, burst: 0}}
  - {hosts: [h], cluster: a, rate_limit: {requests_per_second: 1, burst: 0}}
  - {hosts: [h], cluster: a, rate_limit: {requests_per_second: 0}}
"#,
    );
    assert_eq!(
        errs,
        [
            "routes[0].rate_limit.requests_per_second: must be at least 1 (remove rate_limit for no limit)",
            "routes[0].rate_limit.burst: must be at least 1",
            "routes[1].rate_limit.burst: must be at least 1",
            "routes[2].rate_limit.requests_per_second: must be at least 1 (remove rate_limit for no limit)",
        ]
    );
    for (yaml, path, needle) in [
        (
            "{requests_per_second: fast}",
            "routes[0].rate_limit.requests_per_second",
            "invalid type",
        ),
        (
            "{requests_per_second: -1}",
            "routes[0].rate_limit.requests_per_second",
            "invalid value",
        ),
        (
            "{burst: 5}",
            "routes[0].rate_limit",
            "missing field `requests_per_second`",
        ),
        (
            "{requests_per_second: 1, per: ip}",
            "routes[0].rate_limit",
            "unknown field `per`",
        ),
    ] {
        let errs = errors(&format!(
            "clusters: [{{name: a}}]\nroutes: [{{hosts: [h], cluster: a, rate_limit: {yaml}}}]\n"
        ));
        assert!(has(&errs, path, needle), "{yaml}: {errs:#?}");
    }
}

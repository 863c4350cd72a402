//! Table tests of the annotations: fixtures/annotations_*.yaml (plus annotations_common.yaml) →
//! the exact routes and clusters expected (as config YAML) and each rejection's exact message.

use super::annotations::spec::{Kind, Level, SPECS};
use super::tests::objects;
use super::*;

const COMMON: &str = include_str!("fixtures/annotations_common.yaml");
const PLAIN: &[String] = &[];

struct Case<'a> {
    name: &'static str,
    fixture: &'static str,
    /// Config YAML with exactly the routes and clusters expected.
    expect: &'static str,
    /// (kind, name, message) of each rejection in order; a message ending in `…` is a prefix.
    rejected: &'a [(&'a str, &'a str, &'a str)],
}

fn map(fixture: &str, plain: &[String]) -> Mapped {
    let objs = objects(&format!("{COMMON}\n---\n{fixture}"));
    to_config_with(&objs, &Options::default(), plain)
}

fn check(c: &Case<'_>, plain: &[String]) {
    let got = map(c.fixture, plain);
    let want = crate::config::parse(c.expect)
        .unwrap_or_else(|e| panic!("{}: expected config invalid: {e}", c.name));
    super::tests::assert_mapped(c.name, &got, &want);
    let rejected: Vec<(&str, &str, &str)> = got
        .rejected
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        rejected.len(),
        c.rejected.len(),
        "{}: rejected {rejected:#?}",
        c.name
    );
    for (g, w) in rejected.iter().zip(c.rejected) {
        let same = match w.2.strip_suffix('…') {
            Some(prefix) => g.2.starts_with(prefix),
            None => g.2 == w.2,
        };
        assert!(
            g.0 == w.0 && g.1 == w.1 && same,
            "{}: rejected\n  {g:?}\nexpected\n  {w:?}",
            c.name
        );
        assert!(got.rejected.iter().all(|e| e.namespace == "shop"));
    }
}

#[test]
fn route_settings_apply_to_every_route_of_the_ingress() {
    let plain = ["http".to_string()];
    check(
        &Case {
            name: "route settings",
            fixture: include_str!("fixtures/annotations_route.yaml"),
            expect: r#"
listeners: [{name: http, address: "127.0.0.1:1"}]
routes:
  - {name: shop/rewritten/rule-0/path-0, hosts: [api.example.com], path: {prefix: /api}, cluster: "shop/web:80", rewrite: {prefix: /v2}}
  - name: shop/store/rule-0/path-0/ssl-redirect
    hosts: [shop.example.com]
    path: {prefix: /}
    listeners: [http]
    redirect: {scheme: https, status: 308}
    allow: [10.0.0.0/8, 192.168.1.7/32]
    deny: [10.66.0.0/16]
  - name: shop/store/rule-0/path-0
    hosts: [shop.example.com]
    path: {prefix: /}
    cluster: "shop/web:80"
    allow: [10.0.0.0/8, 192.168.1.7/32]
    deny: [10.66.0.0/16]
    request_headers: {set: {X-Env: prod, X-Version: "2"}, add: {X-Trace: "on"}, remove: [X-Debug, Cookie2]}
    response_headers: {set: {X-Frame-Options: DENY}, add: {Cache-Control: no-store}, remove: [Server]}
    hsts: {max_age: 600, include_subdomains: true}
    mirror: {cluster: "shop/shadow:80", percent: 2.5}
    rate_limit: {requests_per_second: 10, burst: 20}
  - {name: shop/untouched/rule-0/path-0, hosts: [blog.example.com], path: {prefix: /}, cluster: "shop/web:80"}
  - name: shop/store/default/ssl-redirect
    hosts: ["*"]
    listeners: [http]
    redirect: {scheme: https, status: 308}
    allow: [10.0.0.0/8, 192.168.1.7/32]
    deny: [10.66.0.0/16]
  - name: shop/store/default
    hosts: ["*"]
    cluster: "shop/web:80"
    allow: [10.0.0.0/8, 192.168.1.7/32]
    deny: [10.66.0.0/16]
    request_headers: {set: {X-Env: prod, X-Version: "2"}, add: {X-Trace: "on"}, remove: [X-Debug, Cookie2]}
    response_headers: {set: {X-Frame-Options: DENY}, add: {Cache-Control: no-store}, remove: [Server]}
    hsts: {max_age: 600, include_subdomains: true}
    mirror: {cluster: "shop/shadow:80", percent: 2.5}
    rate_limit: {requests_per_second: 10, burst: 20}
  - name: shop/store/default-hosts/ssl-redirect
    hosts: [shop.example.com]
    listeners: [http]
    redirect: {scheme: https, status: 308}
    allow: [10.0.0.0/8, 192.168.1.7/32]
    deny: [10.66.0.0/16]
  - name: shop/store/default-hosts
    hosts: [shop.example.com]
    cluster: "shop/web:80"
    allow: [10.0.0.0/8, 192.168.1.7/32]
    deny: [10.66.0.0/16]
    request_headers: {set: {X-Env: prod, X-Version: "2"}, add: {X-Trace: "on"}, remove: [X-Debug, Cookie2]}
    response_headers: {set: {X-Frame-Options: DENY}, add: {Cache-Control: no-store}, remove: [Server]}
    hsts: {max_age: 600, include_subdomains: true}
    mirror: {cluster: "shop/shadow:80", percent: 2.5}
    rate_limit: {requests_per_second: 10, burst: 20}
clusters:
  - name: "shop/shadow:80"
    endpoints: [{address: "10.1.0.8:8080", name: shadow-a}]
  - name: "shop/web:80"
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
"#,
            rejected: &[(
                "Ingress",
                "rewritten",
                "spec.rules[0].http.paths[1]: metadata.annotations[lb.example.com/rewrite-prefix] = \"/v2\": rewrite: needs path: {prefix: ...} to know what to replace",
            )],
        },
        &plain,
    );
    // Without a plain listener there is nothing to redirect from: no twins.
    let got = map(include_str!("fixtures/annotations_route.yaml"), PLAIN);
    assert!(got.routes.iter().all(|r| r.redirect.is_none()));
    assert_eq!(got.routes.len(), 5);
}

#[test]
fn cluster_settings_from_the_service_and_the_ingress() {
    check(
        &Case {
            name: "cluster settings",
            fixture: include_str!("fixtures/annotations_cluster.yaml"),
            expect: r#"
routes:
  - {name: shop/hashed/rule-0/path-0, hosts: [hashed.example.com], path: {prefix: /}, cluster: "shop/web:80@hashed"}
  - {name: shop/plain/rule-0/path-0, hosts: [plain.example.com], path: {prefix: /}, cluster: "shop/web:80"}
  - {name: shop/tuned/rule-0/path-0, hosts: [tuned.example.com], path: {prefix: /}, cluster: "shop/web:80@tuned"}
clusters:
  - name: "shop/web:80"
    connect_timeout: 2s
    retries: {attempts: 2}
    balance: least_connections
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
  - name: "shop/web:80@hashed"
    connect_timeout: 2s
    retries: {attempts: 2}
    balance: hash
    hash: {on: header, name: X-User}
    health: {active: {type: tcp}}
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
  - name: "shop/web:80@tuned"
    balance: least_connections
    connect_timeout: 2s
    response_timeout: 10s
    idle_timeout: 1m
    request_timeout: 30s
    retries: {attempts: 3, conditions: [connect_failure, 503], non_idempotent: true, budget_percent: 50, budget_min: 1}
    max_connections_per_endpoint: 100
    queue: {size: 10, timeout: 250ms}
    health:
      active: {path: /healthz, interval: 5s, timeout: 2s, rise: 1, fall: 2, expect_status: [200-299, "304"], host: web.internal}
      passive: {consecutive_errors: 3, error_percent: 30, cooldown: 20s, max_ejection_percent: 25}
      slow_start: 30s
    backups: all
    affinity: {cookie: lb_pin}
    protocol: http2
    send_proxy: v2
    tls: {server_name: web.internal, insecure_skip_verify: true}
    endpoints:
      - {address: "10.1.0.5:8080", name: web-a}
      - {address: "10.1.0.7:8080", name: old-a, backup: true}
"#,
            rejected: &[],
        },
        PLAIN,
    );
}

#[test]
fn canaries_split_the_main_ingress_routes() {
    check(
        &Case {
            name: "canary",
            fixture: include_str!("fixtures/annotations_canary.yaml"),
            expect: r#"
routes:
  - name: shop/web/rule-0/path-0
    hosts: [shop.example.com]
    path: {prefix: /}
    clusters: [{name: "shop/web:80", weight: 90}, {name: "shop/web-next:80@a-canary", weight: 10}]
    canary: {cluster: "shop/web-next:80@a-canary", header: {name: X-Canary, value: always}, cookie: {name: beta, value: always}}
  - name: shop/web/rule-0/path-1
    hosts: [shop.example.com]
    path: {prefix: /cart}
    cluster: "shop/web:80"
    canary: {cluster: "shop/old:80", header: {name: X-Team, value: payments}}
clusters:
  - name: "shop/old:80"
    endpoints: [{address: "10.1.0.7:8080", name: old-a}]
  - name: "shop/web-next:80@a-canary"
    retries: {attempts: 1}
    endpoints: [{address: "10.1.0.6:8080", name: next-a}]
  - name: "shop/web:80"
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
"#,
            rejected: &[
                ("Ingress", "a-canary", "spec.rules[0].http.paths[1]: canary: no route of a main (non-canary) Ingress has hosts [\"shop.example.com\"] and path prefix /nowhere to split"),
                ("Ingress", "b-canary", "spec.rules[0].http.paths[0]: canary: route shop/web/rule-0/path-0 is already split by another canary Ingress"),
            ],
        },
        PLAIN,
    );
}

#[test]
fn bad_annotations_reject_their_object_only_and_name_the_annotation() {
    let none = "; none of this Ingress's routes are served";
    let rejected: Vec<(&str, &str, String)> = vec![
        ("Ingress", "backed", "spec.rules[0].http.paths[0].backend.service.name: metadata.annotations[lb.example.com/backup-service]: Service shop/web-next has no port with name \"grpc\"".into()),
        ("Ingress", "ghostly", format!("metadata.annotations[lb.example.com/mirror-target]: Service shop/ghost not found{none}")),
        ("Ingress", "parsecs", "spec.tls[0].secretName: Secret shop/missing-tls not found".into()),
        ("Ingress", "parsecs", format!("metadata.annotations[lb.example.com/connect-timeout] = \"5 parsecs\": connect_timeout: invalid duration \"5 parsecs\": expected a number with a unit (ms, s, m, h), like 5s{none}")),
        ("Ingress", "semantic", format!("metadata.annotations[lb.example.com/response-headers-set] = \"{{Bad Name: x}}\": response_headers: invalid header name \"Bad Name\"{none}")),
        ("Ingress", "semantic", format!("metadata.annotations[lb.example.com/health-check-interval, lb.example.com/health-check-timeout]: health.active.timeout: must not exceed the interval{none}")),
        ("Ingress", "throttled-burst", format!("metadata.annotations[lb.example.com/rate-limit-burst]: needs lb.example.com/rate-limit{none}")),
        ("Ingress", "throttled-nan", format!("metadata.annotations[lb.example.com/rate-limit] = \"fast\": rate_limit.requests_per_second: invalid type: string \"fast\", expected u32{none}")),
        ("Ingress", "throttled-zero", format!("metadata.annotations[lb.example.com/rate-limit] = \"0\": rate_limit.requests_per_second: must be at least 1 (remove rate_limit for no limit){none}")),
        ("Service", "shaky", "metadata.annotations[lb.example.com/canary]: a route setting, only read on an Ingress (a Service takes cluster settings); routes to this Service are not served".into()),
        ("Service", "shaky", "metadata.annotations[lb.example.com/retries] = \"11\": retries.attempts: must be at most 10; routes to this Service are not served".into()),
        ("Ingress", "to-shaky", "spec.rules[0].http.paths[0].backend.service.name: Service shop/shaky has invalid lb.example.com/ annotations (see its rejection)".into()),
        ("Ingress", "typo", format!("metadata.annotations[lb.example.com/conect-timeout]: unknown annotation (did you mean lb.example.com/connect-timeout?); see docs/kubernetes.md{none}")),
        ("Ingress", "typo", format!("metadata.annotations[lb.example.com/frobnicate]: unknown annotation; see docs/kubernetes.md{none}")),
        ("Ingress", "wrong", format!("metadata.annotations[lb.example.com/l4]: only read on a Service{none}")),
        ("Ingress", "wrong", format!("metadata.annotations[lb.example.com/hsts] = \"false\": conflicts with lb.example.com/hsts-preload{none}")),
        ("Ingress", "wrong", format!("metadata.annotations[lb.example.com/canary-weight]: needs lb.example.com/canary: \"true\"{none}")),
        ("Ingress", "wrong", format!("metadata.annotations[lb.example.com/allow-source-range] = \"10.0.0.0/8, 10.0.0.300\": allow[1]: invalid CIDR \"10.0.0.300\": expected an address or address/prefix like 192.0.2.0/24 or 2001:db8::/32{none}")),
        ("Ingress", "wrong", format!("metadata.annotations[lb.example.com/health-check-interval, lb.example.com/health-check-timeout]: health.active.timeout: must not exceed the interval{none}")),
    ];
    let rejected: Vec<(&str, &str, &str)> = rejected
        .iter()
        .map(|(k, n, m)| (*k, *n, m.as_str()))
        .collect();
    check(
        &Case {
            name: "bad",
            fixture: include_str!("fixtures/annotations_bad.yaml"),
            expect: r#"
routes:
  - {name: shop/fine/rule-0/path-0, hosts: [fine.example.com], path: {prefix: /}, cluster: "shop/web:80@fine"}
  - {name: shop/throttled-ok/rule-0/path-0, hosts: [ok.example.com], path: {prefix: /}, cluster: "shop/web:80", rate_limit: {requests_per_second: 7}}
  - {name: shop/to-shaky/rule-0/path-1, hosts: [shaky.example.com], path: {prefix: /web}, cluster: "shop/web:80"}
clusters:
  - name: "shop/web:80"
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
  - name: "shop/web:80@fine"
    connect_timeout: 3s
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
"#,
            rejected: &rejected,
        },
        PLAIN,
    );
}

#[test]
fn every_annotation_is_documented_and_reaches_the_config() {
    let doc = include_str!("../../../docs/kubernetes.md");
    for s in SPECS {
        let row = format!("| `{}{}` |", ANNOTATION_PREFIX, s.name);
        assert!(doc.contains(&row), "docs/kubernetes.md has no row {row}");
    }
    // Each route-level field an annotation writes is one Parsed::apply_route copies (else the
    // annotation would be accepted and silently dropped).
    let copied = [
        "allow",
        "deny",
        "request_headers",
        "response_headers",
        "hsts",
        "rewrite",
        "mirror",
        "rate_limit",
    ];
    for s in SPECS.iter().filter(|s| s.level == Level::Route) {
        let writes = !matches!(
            s.kind,
            Kind::Flag | Kind::Weight | Kind::Text | Kind::Elsewhere(_)
        );
        let head = s.paths.first().and_then(|p| p.split('.').next());
        if writes {
            assert!(
                head.is_some_and(|h| copied.contains(&h)),
                "{} writes {head:?}, which apply_route does not copy",
                s.name
            );
        }
    }
}

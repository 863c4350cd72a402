//! Gateway API table tests: YAML fixtures of real-looking objects (fixtures/gateway*.yaml) → the
//! exact routes and clusters (written as config YAML), certificates, rejections and status.

use super::gateway::status::{Cond, Status};
use super::gateway::{self, GatewayMapped};
use super::*;
use serde::Deserialize;

/// Parses a multi-document fixture into the stores, by `kind`.
fn objects(text: &str) -> Objects {
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).expect("fixture is YAML");
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let kind = kind.to_string();
        match kind.as_str() {
            "GatewayClass" => o.gateway_classes.push(typed(&kind, v)),
            "Gateway" => o.gateways.push(typed(&kind, v)),
            "HTTPRoute" => o.http_routes.push(typed(&kind, v)),
            "ReferenceGrant" => o.reference_grants.push(typed(&kind, v)),
            "Service" => o.services.push(typed(&kind, v)),
            "EndpointSlice" => o.endpoint_slices.push(typed(&kind, v)),
            "Secret" => o.secrets.push(typed(&kind, v)),
            other => panic!("fixture has unexpected kind {other:?}"),
        }
    }
    o
}

fn typed<T: serde::de::DeserializeOwned>(kind: &str, v: serde_yaml::Value) -> T {
    serde_yaml::from_value(v).unwrap_or_else(|e| panic!("fixture {kind}: {e}"))
}

/// The config file's listeners: plain HTTP on 80, TLS on 443.
fn listeners() -> Vec<crate::config::Listener> {
    serde_yaml::from_str(
        "[{name: http, address: '0.0.0.0:80'},
          {name: https, address: '0.0.0.0:443', tls: {certificates: []}}]",
    )
    .expect("listeners")
}

const EXPECT: &str = r#"
listeners: [{name: http, address: "0.0.0.0:80"}, {name: https, address: "0.0.0.0:443"}]
routes:
  - {name: shop/broken/rule-3/match-0, hosts: ["*.example.com"], listeners: [http], path: {prefix: /ok}, cluster: "shop/web:80"}
  - {name: shop/payments/rule-0/match-0, hosts: [pay.example.com], listeners: [http], path: {prefix: /}, cluster: "billing/pay:9000"}
  - name: shop/store/rule-0/match-0
    hosts: [shop.example.com]
    listeners: [http, https]
    path: {prefix: /}
    clusters: [{name: "shop/web:80", weight: 99}, {name: "shop/web-v2:80", weight: 1}]
    request_headers: {set: {x-env: prod}, add: {x-trace: "on"}, remove: [x-debug]}
    response_headers: {set: {cache-control: no-store}}
    mirror: {cluster: "shop/mirror:80", percent: 5}
  - name: shop/store/rule-1/match-0
    hosts: [shop.example.com]
    listeners: [http, https]
    path: {exact: /old}
    methods: [GET]
    redirect: {scheme: https, path_prefix: /new, status: 301}
  - name: shop/store/rule-2/match-0
    hosts: [shop.example.com]
    listeners: [http, https]
    path: {prefix: /api}
    headers: [{name: x-canary, exact: "yes"}]
    query: [{name: v, regex: '^(?:[0-9]+)$'}]
    cluster: "shop/web:80@request=10000ms,backend=2000ms"
    rewrite: {prefix: /v2}
    mirror: {cluster: "shop/mirror:80", percent: 0.1}
clusters:
  - name: "billing/pay:9000"
    endpoints: [{address: "10.2.0.9:9000", name: pay-a}]
  - {name: "shop/mirror:80"}
  - name: "shop/web-v2:80"
    endpoints: [{address: "10.1.0.6:8080", name: web-v2-a}]
  - name: "shop/web:80"
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
  - name: "shop/web:80@request=10000ms,backend=2000ms"
    endpoints: [{address: "10.1.0.5:8080", name: web-a}]
    request_timeout: 10s
    response_timeout: 2s
"#;

const REJECTED: &[(&str, &str, &str, &str)] = &[
    ("Gateway", "infra", "edge", "spec.listeners[2].port: lb has no listener without TLS on port 8080"),
    ("Gateway", "infra", "partner", "spec.listeners[0].tls.certificateRefs[0]: Secret certs/partner-tls needs a ReferenceGrant in certs"),
    ("HTTPRoute", "shop", "broken", "spec.rules[0].matches[0].path.value: invalid regex: "),
    ("HTTPRoute", "shop", "broken", "spec.rules[1].filters[0].type: \"ExtensionRef\" is not supported"),
    ("HTTPRoute", "shop", "broken", "spec.rules[2].backendRefs[0].name: Service shop/ghost not found"),
    ("HTTPRoute", "shop", "broken", "spec.rules[2].backendRefs: no valid backend with a weight above 0"),
    ("HTTPRoute", "shop", "ledger", "spec.rules[0].backendRefs[0].namespace: Service billing/ledger needs a ReferenceGrant in billing"),
    ("HTTPRoute", "shop", "ledger", "spec.rules[0].backendRefs: no valid backend with a weight above 0"),
];

fn check(got: &GatewayMapped) {
    let want =
        crate::config::parse(EXPECT).unwrap_or_else(|e| panic!("expected config invalid: {e}"));
    assert_eq!(got.routes, crate::config::owned(&want.routes), "routes");
    assert_eq!(
        got.clusters,
        crate::config::owned(&want.clusters),
        "clusters"
    );
    let rejected: Vec<_> = (got.rejected.iter())
        .map(|e| {
            (
                e.kind.as_str(),
                e.namespace.as_str(),
                e.name.as_str(),
                e.message.as_str(),
            )
        })
        .collect();
    assert_eq!(rejected.len(), REJECTED.len(), "rejected {rejected:#?}");
    for (g, w) in rejected.iter().zip(REJECTED) {
        let ok = (g.0, g.1, g.2) == (w.0, w.1, w.2) && g.3.starts_with(w.3);
        assert!(ok, "rejected {g:?}, expected {w:?}");
    }
    let tls: Vec<_> = got
        .tls
        .iter()
        .map(|t| (t.secret.as_str(), t.hosts.clone()))
        .collect();
    assert_eq!(
        tls,
        [("infra/shop-tls", vec!["shop.example.com".to_string()])]
    );
    assert!(got.tls[0]
        .cert_pem
        .starts_with(b"-----BEGIN CERTIFICATE-----\nshop"));
}

#[test]
fn gateway_fixture_maps_to_the_expected_config() {
    let objs = objects(include_str!("fixtures/gateway.yaml"));
    let got = gateway::map(&objs, &Options::default(), &listeners());
    check(&got);
    // The order objects arrive in does not matter.
    let mut rev = objs.clone();
    rev.gateway_classes.reverse();
    rev.gateways.reverse();
    rev.http_routes.reverse();
    rev.reference_grants.reverse();
    rev.services.reverse();
    rev.secrets.reverse();
    assert_eq!(
        gateway::map(&rev, &Options::default(), &listeners()),
        got,
        "order-dependent"
    );
    // Another controller's classes: nothing is ours.
    let other = Options {
        controller: "other.example.com/x".into(),
        ..Options::default()
    };
    assert_eq!(
        gateway::map(&objs, &other, &listeners()),
        GatewayMapped::default()
    );
}

/// (type, status, reason) of each condition.
fn conds(c: &[Cond]) -> Vec<(&str, bool, &str)> {
    c.iter()
        .map(|c| (c.type_.as_str(), c.status, c.reason.as_str()))
        .collect()
}

#[test]
fn gateway_fixture_status() {
    let objs = objects(include_str!("fixtures/gateway.yaml"));
    let Status {
        classes,
        gateways,
        routes,
    } = gateway::map(&objs, &Options::default(), &listeners()).status;
    assert_eq!(classes.len(), 1);
    assert_eq!(
        conds(&classes[0].conditions),
        [("Accepted", true, "Accepted")]
    );
    assert_eq!(classes[0].conditions[0].observed_generation, Some(1));
    let edge = &gateways[0];
    assert_eq!((edge.name.as_str(), edge.generation), ("edge", Some(2)));
    assert_eq!(
        conds(&edge.conditions),
        [
            ("Accepted", true, "ListenersNotValid"),
            ("Programmed", true, "Programmed")
        ]
    );
    let attached: Vec<_> = edge
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(attached, [("web", 4), ("secure", 1), ("admin", 0)]);
    assert_eq!(
        conds(&edge.listeners[2].conditions),
        [
            ("Accepted", false, "PortUnavailable"),
            ("ResolvedRefs", true, "ResolvedRefs"),
            ("Programmed", false, "Invalid")
        ]
    );
    assert_eq!(
        conds(&gateways[1].conditions),
        [
            ("Accepted", false, "ListenersNotValid"),
            ("Programmed", false, "Invalid")
        ]
    );
    assert_eq!(
        conds(&gateways[1].listeners[0].conditions)[1],
        ("ResolvedRefs", false, "RefNotPermitted")
    );
    let by_name = |n: &str| {
        let r = routes
            .iter()
            .find(|r| r.name == n)
            .unwrap_or_else(|| panic!("route {n}"));
        r.parents
            .iter()
            .map(|p| conds(&p.conditions))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_name("store"),
        [[
            ("Accepted", true, "Accepted"),
            ("ResolvedRefs", true, "ResolvedRefs")
        ]]
    );
    assert_eq!(
        by_name("payments"),
        [[
            ("Accepted", true, "Accepted"),
            ("ResolvedRefs", true, "ResolvedRefs")
        ]]
    );
    assert_eq!(
        by_name("ledger"),
        [[
            ("Accepted", false, "UnsupportedValue"),
            ("ResolvedRefs", false, "RefNotPermitted")
        ]]
    );
    assert_eq!(
        by_name("broken"),
        [[
            ("Accepted", true, "Accepted"),
            ("ResolvedRefs", false, "BackendNotFound")
        ]]
    );
    // The parent of another controller gets no status from us.
    assert_eq!(
        by_name("orphan"),
        [[
            ("Accepted", false, "NoMatchingParent"),
            ("ResolvedRefs", true, "ResolvedRefs")
        ]]
    );
    assert_eq!(routes.len(), 5);
}

#[test]
fn durations_and_hostnames() {
    use gateway::{duration, intersect};
    let ms = |s: &str| duration(s).map(|d| d.map(|i| i.0.as_millis()));
    assert_eq!(ms("10s"), Ok(Some(10_000)));
    assert_eq!(ms("1h30m500ms"), Ok(Some(5_400_500)));
    assert_eq!(ms("0s"), Ok(None));
    assert!(ms("10").is_err() && ms("").is_err() && ms("1d").is_err() && ms("1s1s1s1s1s").is_err());
    assert_eq!(
        intersect("a.example.com", Some("*.example.com")).as_deref(),
        Some("a.example.com")
    );
    assert_eq!(
        intersect("*.example.com", Some("a.example.com")).as_deref(),
        Some("a.example.com")
    );
    assert_eq!(
        intersect("*.a.example.com", Some("*.example.com")).as_deref(),
        Some("*.a.example.com")
    );
    assert_eq!(intersect("example.com", Some("*.example.com")), None);
    assert_eq!(intersect("b.test", None).as_deref(), Some("b.test"));
}

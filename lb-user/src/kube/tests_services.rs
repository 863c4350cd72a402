//! Table tests of the Service → XDP L4 mapping through the whole merge: fixtures/services.yaml
//! (and a ConfigMap) → the exact config expected (written as config YAML) and the rejections.

use super::settings::{Settings, CONFIG_KEY};
use super::source::{merge, merge_with};
use super::*;
use crate::config;
use serde::Deserialize;
use std::path::Path;

fn objects(text: &str) -> Objects {
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).expect("fixture is YAML");
        match v.get("kind").and_then(|k| k.as_str()).unwrap_or_default() {
            "Service" => o.services.push(serde_yaml::from_value(v).expect("Service")),
            "EndpointSlice" => o
                .endpoint_slices
                .push(serde_yaml::from_value(v).expect("slice")),
            other => panic!("fixture has unexpected kind {other:?}"),
        }
    }
    o
}

const FIXTURE: &str = include_str!("fixtures/services.yaml");

const BASE: &str = r#"
listeners: [{name: http, address: "192.0.2.80:8080"}]
xdp: {l4: {snat_v4: 192.0.2.1}}
"#;

const ALL: &str = r#"
l4_services:
  - {name: "kube-system/dns:53/udp@203.0.113.10", vip: 203.0.113.10, port: 53, protocol: udp, cluster: "kube-system/dns:53/udp/v4"}
  - {name: "kube-system/dns:53/tcp@203.0.113.10", vip: 203.0.113.10, port: 53, protocol: tcp, cluster: "kube-system/dns:53/tcp/v4"}
  - {name: "shop/api:443/tcp@10.96.0.20", vip: 10.96.0.20, port: 443, protocol: tcp, cluster: "shop/api:443/tcp/v4"}
  - {name: "shop/ext:80/tcp@198.51.100.7", vip: 198.51.100.7, port: 80, protocol: tcp, cluster: "shop/ext:80/tcp/v4"}
  - {name: "shop/ext:80/tcp@198.51.100.8", vip: 198.51.100.8, port: 80, protocol: tcp, cluster: "shop/ext:80/tcp/v4"}
  - {name: "shop/zz-copy:53/udp@192.0.2.80", vip: 192.0.2.80, port: 53, protocol: udp, cluster: "shop/zz-copy:53/udp/v4"}
  - {name: "shop/zz-copy:8080/tcp@203.0.113.10", vip: 203.0.113.10, port: 8080, protocol: tcp, cluster: "shop/zz-copy:8080/tcp/v4"}
clusters:
  - name: "kube-system/dns:53/udp/v4"
    endpoints: [{address: "10.1.0.11:5353", name: coredns-a}, {address: "10.1.0.12:5353", name: coredns-b, weight: 0}]
  - name: "kube-system/dns:53/tcp/v4"
    endpoints: [{address: "10.1.0.11:5354", name: coredns-a}, {address: "10.1.0.12:5354", name: coredns-b, weight: 0}]
  - name: "shop/api:443/tcp/v4"
    endpoints: [{address: "10.1.1.11:8443", name: api-a}, {address: "10.1.1.12:8443", name: api-b}]
  - {name: "shop/ext:80/tcp/v4"}
  - {name: "shop/zz-copy:53/udp/v4"}
  - {name: "shop/zz-copy:8080/tcp/v4"}
"#;

/// Rejections common to every case (all Services): (namespace, name, message start).
const ALWAYS: [(&str, &str, &str); 3] = [
    (
        "shop",
        "ext",
        "spec.externalIPs[1]: \"not-an-ip\" is not an IP address",
    ),
    ("shop", "pending", "no VIP yet: status.loadBalancer.ingress"),
    (
        "shop",
        "typo",
        "annotation lb.example.com/l4: \"yes\" is not \"true\" or \"false\"",
    ),
];

const SCTP: &str = "spec.ports[2].protocol: SCTP is not supported by the XDP L4 path";

struct Case {
    name: &'static str,
    /// The base config's sections besides BASE's listeners (xdp settings, own l4_services).
    base: &'static str,
    /// l4_services and clusters expected (the base's own included).
    expect: &'static str,
    /// The base without its own l4_services and clusters (they are in `expect`), if it has any.
    expect_base: Option<&'static str>,
    /// Rejections besides ALWAYS, in mapping order after them by Service.
    rejected: &'static [(&'static str, &'static str, &'static str)],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "every kind of Service, IPv4 SNAT only",
            base: BASE,
            expect: ALL,
            expect_base: None,
            rejected: &[
                ("kube-system", "dns", SCTP),
                ("shop", "api", "spec.ports[0]: no snat address for IPv6 (xdp.l4.snat_v6 is not set in the node config): [fd00:96::20]:443/tcp not served"),
                ("shop", "zz-copy", "spec.ports[0]: 203.0.113.10:53/udp is already served"),
                ("shop", "zz-copy", "spec.ports[1]: 192.0.2.80:8080/tcp is a listener's address in the config file"),
            ],
        },
        Case {
            name: "no snat address at all: every family listed, nothing served",
            base: "listeners: [{name: http, address: \"192.0.2.80:8080\"}]\n",
            expect: "",
            expect_base: None,
            rejected: &[
                ("kube-system", "dns", "spec.ports[0]: no snat address for IPv4 (xdp.l4.snat_v4 is not set in the node config): 203.0.113.10:53/udp not served"),
                ("kube-system", "dns", "spec.ports[1]: no snat address for IPv4"),
                ("kube-system", "dns", SCTP),
                ("shop", "api", "spec.ports[0]: no snat address for IPv4"),
                ("shop", "api", "spec.ports[0]: no snat address for IPv6"),
                ("shop", "ext", "spec.ports[0]: no snat address for IPv4 (xdp.l4.snat_v4 is not set in the node config): 198.51.100.7:80/tcp, 198.51.100.8:80/tcp not served"),
                ("shop", "zz-copy", "spec.ports[0]: no snat address for IPv4"),
                ("shop", "zz-copy", "spec.ports[1]: no snat address for IPv4"),
            ],
        },
        Case {
            name: "the file's own service first, ring slots for three rings",
            base: r#"
listeners: [{name: http, address: "192.0.2.80:8080"}]
xdp: {l4: {snat_v4: 192.0.2.1, snat_v6: "2001:db8::1", ring_slots: 400000}}
l4_services: [{name: own, vip: 203.0.113.10, port: 53, protocol: udp, cluster: own}]
clusters: [{name: own, endpoints: [{address: "10.9.0.1:53"}]}]
"#,
            expect_base: Some(
                "listeners: [{name: http, address: \"192.0.2.80:8080\"}]
xdp: {l4: {snat_v4: 192.0.2.1, snat_v6: \"2001:db8::1\", ring_slots: 400000}}\n",
            ),
            expect: r#"
l4_services:
  - {name: own, vip: 203.0.113.10, port: 53, protocol: udp, cluster: own}
  - {name: "kube-system/dns:53/tcp@203.0.113.10", vip: 203.0.113.10, port: 53, protocol: tcp, cluster: "kube-system/dns:53/tcp/v4"}
  - {name: "shop/api:443/tcp@10.96.0.20", vip: 10.96.0.20, port: 443, protocol: tcp, cluster: "shop/api:443/tcp/v4"}
clusters:
  - {name: own, endpoints: [{address: "10.9.0.1:53"}]}
  - name: "kube-system/dns:53/tcp/v4"
    endpoints: [{address: "10.1.0.11:5354", name: coredns-a}, {address: "10.1.0.12:5354", name: coredns-b, weight: 0}]
  - name: "shop/api:443/tcp/v4"
    endpoints: [{address: "10.1.1.11:8443", name: api-a}, {address: "10.1.1.12:8443", name: api-b}]
"#,
            rejected: &[
                ("kube-system", "dns", "spec.ports[0]: 203.0.113.10:53/udp is already served"),
                ("kube-system", "dns", SCTP),
                ("shop", "api", "spec.ports[0]: [fd00:96::20]:443/tcp: no room in xdp.l4.ring_slots for its Maglev ring (131074 slots, 6778 left)"),
                ("shop", "ext", "spec.ports[0]: 198.51.100.7:80/tcp: no room in xdp.l4.ring_slots"),
                ("shop", "ext", "spec.ports[0]: 198.51.100.8:80/tcp: no room in xdp.l4.ring_slots"),
                ("shop", "zz-copy", "spec.ports[0]: 192.0.2.80:53/udp: no room in xdp.l4.ring_slots"),
                ("shop", "zz-copy", "spec.ports[0]: 203.0.113.10:53/udp is already served"),
                ("shop", "zz-copy", "spec.ports[1]: 192.0.2.80:8080/tcp is a listener's address"),
                ("shop", "zz-copy", "spec.ports[1]: 203.0.113.10:8080/tcp: no room in xdp.l4.ring_slots"),
            ],
        },
    ]
}

/// Rejections sorted like the mapping emits them: by Service, in the order within one.
fn want_rejected(c: &Case) -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = ALWAYS
        .iter()
        .chain(c.rejected)
        .map(|(ns, n, m)| (ns.to_string(), n.to_string(), m.to_string()))
        .collect();
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

#[test]
fn services_map_to_the_exact_l4_config() {
    for c in cases() {
        let base = config::parse(c.base).unwrap_or_else(|e| panic!("{}: base: {e}", c.name));
        let objs = objects(FIXTURE);
        let m = merge(&base, Path::new("lb.yaml"), &objs, &Options::default())
            .unwrap_or_else(|e| panic!("{}: merge: {e}", c.name));
        let expect_base = c.expect_base.unwrap_or(c.base);
        let expect = config::parse(&format!("{expect_base}\n{}", c.expect))
            .unwrap_or_else(|e| panic!("{}: expected config: {e}", c.name));
        assert_eq!(
            m.config.l4_services, expect.l4_services,
            "{}: l4_services",
            c.name
        );
        assert_eq!(m.config.clusters, expect.clusters, "{}: clusters", c.name);
        assert_eq!(m.config, expect, "{}: the rest of the config", c.name);
        let want = want_rejected(&c);
        assert_eq!(
            m.rejected.len(),
            want.len(),
            "{}: {:#?}",
            c.name,
            m.rejected
        );
        for (g, w) in m.rejected.iter().zip(&want) {
            let ok = g.kind == "Service" && g.namespace == w.0 && g.name == w.1;
            assert!(
                ok && g.message.starts_with(&w.2),
                "{}: rejected {g:?}, expected {w:?}",
                c.name
            );
        }
        // The order objects arrive in does not matter.
        let mut rev = objs.clone();
        rev.services.reverse();
        rev.endpoint_slices.reverse();
        let again = merge(&base, Path::new("lb.yaml"), &rev, &Options::default()).unwrap();
        assert_eq!(again.config, m.config, "{}: order-dependent", c.name);
    }
}

#[test]
fn watched_namespaces_limit_l4_services_too() {
    let base = config::parse(BASE).unwrap();
    let opts = Options {
        namespaces: vec!["kube-system".into()],
        ..Options::default()
    };
    let m = merge(&base, Path::new("lb.yaml"), &objects(FIXTURE), &opts).unwrap();
    let names: Vec<&str> = m
        .config
        .l4_services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "kube-system/dns:53/udp@203.0.113.10",
            "kube-system/dns:53/tcp@203.0.113.10"
        ]
    );
    assert!(
        m.rejected.iter().all(|r| r.namespace == "kube-system"),
        "{:?}",
        m.rejected
    );
}

#[test]
fn configmap_settings_are_the_base_and_a_bad_one_keeps_the_last_good() {
    let file = config::parse("listeners: [{name: http, address: \"127.0.0.1:1\"}]\n").unwrap();
    let settings = Settings::default();
    let cm = |text: &str| -> Option<k8s_openapi::api::core::v1::ConfigMap> {
        let v = serde_json::json!({"metadata": {"namespace": "lb-system", "name": "lb-config"},
                                   "data": {CONFIG_KEY: text}});
        Some(serde_json::from_value(v).unwrap())
    };
    let mut objs = objects(FIXTURE);
    // The ConfigMap gives the SNAT address: the LoadBalancer Services are served.
    objs.config_map = cm(BASE);
    let m = merge_with(
        &settings,
        &file,
        Path::new("lb.yaml"),
        &objs,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(m.config.listeners[0].address.to_string(), "192.0.2.80:8080");
    assert_eq!(m.config.l4_services.len(), 7);

    // A bad one: the last good settings stay, the ConfigMap is listed with the field.
    objs.config_map = cm("xdp: {l4: {snat_v4: 192.0.2.1, flows: lots}}\n");
    let m = merge_with(
        &settings,
        &file,
        Path::new("lb.yaml"),
        &objs,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(m.config.listeners[0].address.to_string(), "192.0.2.80:8080");
    assert_eq!(m.config.l4_services.len(), 7);
    let r = &m.rejected[0];
    assert_eq!(
        (r.kind.as_str(), r.name.as_str()),
        ("ConfigMap", "lb-config")
    );
    assert!(
        r.message.starts_with("lb.yaml xdp.l4.flows: "),
        "{}",
        r.message
    );

    // Gone: the file again (no SNAT: every L4 Service listed, none served).
    objs.config_map = None;
    let m = merge_with(
        &settings,
        &file,
        Path::new("lb.yaml"),
        &objs,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(m.config.listeners[0].address.to_string(), "127.0.0.1:1");
    assert!(m.config.l4_services.is_empty());
    assert!(m
        .rejected
        .iter()
        .any(|r| r.message.contains("no snat address for IPv4")));
}

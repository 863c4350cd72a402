//! Table tests: multi-document YAML fixtures of real-looking objects (fixtures/*.yaml) → the exact
//! routes and clusters (written as config YAML), certificates and rejections expected.

use super::*;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

/// Parses a multi-document fixture into the stores, by `kind`.
pub(super) fn objects(text: &str) -> Objects {
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).expect("fixture is YAML");
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let kind = kind.to_string();
        match kind.as_str() {
            "IngressClass" => o.ingress_classes.push(typed(&kind, v)),
            "Ingress" => o.ingresses.push(typed(&kind, v)),
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

struct Case {
    name: &'static str,
    fixture: &'static str,
    opts: Options,
    /// Config YAML with exactly the routes and clusters expected (validated by config::parse).
    expect: &'static str,
    /// (namespace, name, start of message) of each rejection, in order (kind is always Ingress).
    rejected: &'static [(&'static str, &'static str, &'static str)],
    /// (secret, hosts, first line after the PEM header of tls.crt) of each certificate.
    tls: &'static [(&'static str, &'static [&'static str], &'static str)],
}

fn case(name: &'static str, fixture: &'static str, expect: &'static str) -> Case {
    Case {
        name,
        fixture,
        opts: Options::default(),
        expect,
        rejected: &[],
        tls: &[],
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        Case {
            rejected: &[],
            ..case("class: name, legacy annotation, default class", include_str!("fixtures/classes.yaml"), r#"
routes:
  - {name: shop/by-name/rule-0/path-0, hosts: [a.example.com], path: {prefix: /}, cluster: "shop/web:80"}
  - {name: shop/classless/rule-0/path-0, hosts: [e.example.com], path: {prefix: /}, cluster: "shop/web:80"}
  - {name: shop/legacy/rule-0/path-0, hosts: [c.example.com], path: {prefix: /}, cluster: "shop/web:80"}
clusters:
  - name: "shop/web:80"
    endpoints: [{address: "10.1.0.5:8080", name: web-5d4f8-x1}]
"#)
        },
        Case {
            opts: Options {
                ingress_class: Some("lb".into()),
                namespaces: vec!["shop".into()],
                ..Options::default()
            },
            ..case("class selected by option, namespace filter, no default class", include_str!("fixtures/classes_selected.yaml"), r#"
routes:
  - {name: shop/legacy/rule-0/path-0, hosts: [e.example.com], path: {prefix: /}, cluster: "shop/web:80"}
  - {name: shop/pinned/rule-0/path-0, hosts: [a.example.com], path: {prefix: /}, cluster: "shop/web:80"}
clusters:
  - {name: "shop/web:80"}
"#)
        },
        case("Exact, Prefix, ImplementationSpecific; hosts; port by number and name", include_str!("fixtures/paths.yaml"), r#"
routes:
  - {name: shop/store/rule-0/path-0, hosts: [shop.example.com], path: {exact: /healthz}, cluster: "shop/web:80"}
  - {name: shop/store/rule-0/path-1, hosts: [shop.example.com], path: {prefix: /api}, cluster: "shop/api:8000"}
  - {name: shop/store/rule-0/path-2, hosts: [shop.example.com], path: {regex: '^(?:/assets/.+\.(css|js))'}, cluster: "shop/web:80"}
  - {name: shop/store/rule-0/path-3, hosts: [shop.example.com], path: {prefix: /admin}, cluster: "shop/web:9090"}
  - {name: shop/store/rule-1/path-0, hosts: ["*.shop.example.com"], path: {prefix: /}, cluster: "shop/web:80"}
  - {name: shop/store/rule-2/path-0, hosts: ["*"], path: {exact: /status}, cluster: "shop/web:80"}
clusters:
  - name: "shop/api:8000"
    endpoints: [{address: "10.1.1.7:8000", name: api-77c9b-q2}]
  - name: "shop/web:80"
    endpoints: [{address: "10.1.0.5:8080", name: web-5d4f8-x1}]
  - name: "shop/web:9090"
    endpoints: [{address: "10.1.0.5:9090", name: web-5d4f8-x1}]
"#),
        case("defaultBackend: last, for * and the Ingress's hosts", include_str!("fixtures/default_backend.yaml"), r#"
routes:
  - {name: shop/blog/rule-0/path-0, hosts: [blog.example.com], path: {prefix: /}, cluster: "shop/api:80"}
  - {name: shop/fallback/rule-0/path-0, hosts: [shop.example.com], path: {prefix: /api}, cluster: "shop/api:80"}
  - {name: shop/fallback/rule-1/path-0, hosts: [www.shop.example.com], path: {prefix: /api}, cluster: "shop/api:80"}
  - {name: shop/fallback/default, hosts: ["*"], cluster: "shop/web:80"}
  - {name: shop/fallback/default-hosts, hosts: [shop.example.com, www.shop.example.com], cluster: "shop/web:80"}
clusters:
  - {name: "shop/api:80"}
  - {name: "shop/web:80"}
"#),
        case("endpoints: ready, draining, out; dual-stack; no targetRef", include_str!("fixtures/endpoints.yaml"), r#"
routes:
  - {name: shop/web/rule-0/path-0, hosts: [web.example.com], path: {prefix: /}, cluster: "shop/web:80"}
clusters:
  - name: "shop/web:80"
    endpoints:
      - {address: "10.1.0.5:8080", name: web-a}
      - {address: "10.1.0.6:8080", name: web-b, weight: 0}
      - {address: "10.1.0.9:8080"}
      - {address: "[fd00:10:1::5]:8080", name: web-a_v6}
      - {address: "[fd00:10:1::6]:8080", name: web-b_v6, weight: 0}
"#),
        Case {
            rejected: &[
                ("shop", "secure", "spec.tls[1].secretName: Secret shop/www-tls not found"),
                ("shop", "secure", "spec.tls[2].secretName: Secret shop/api-tls has no tls.key"),
                ("shop", "secure", "spec.tls[3].secretName: Secret shop/opaque is not of type kubernetes.io/tls"),
            ],
            tls: &[("shop/shop-tls", &["shop.example.com"], "shop")],
            ..case("TLS: good Secret, missing, no key, wrong type", include_str!("fixtures/tls.yaml"), r#"
routes:
  - {name: shop/secure/rule-0/path-0, hosts: [shop.example.com], path: {prefix: /}, cluster: "shop/web:80"}
clusters:
  - {name: "shop/web:80"}
"#)
        },
        Case {
            rejected: &[("shop", "broken", "spec.rules[0].http.paths[1].path: invalid regex: ")],
            ..case("broken regex rejected alone", include_str!("fixtures/broken_regex.yaml"), r#"
routes:
  - {name: shop/broken/rule-0/path-0, hosts: [shop.example.com], path: {prefix: /ok}, cluster: "shop/web:80"}
  - {name: shop/fine/rule-0/path-0, hosts: [shop.example.com], path: {regex: '^(?:/items/\d+)'}, cluster: "shop/web:80"}
clusters:
  - {name: "shop/web:80"}
"#)
        },
        Case {
            rejected: &[
                ("shop", "dangling", "spec.rules[0].http.paths[0].backend.service.name: Service shop/ghost not found"),
                ("shop", "dangling", "spec.rules[0].http.paths[1].backend.service.port.number: Service shop/web has no port with number 8080"),
                ("shop", "dangling", "spec.rules[0].http.paths[2].backend.service.port.name: Service shop/web has no port with name \"grpc\""),
                ("shop", "dangling", "spec.rules[0].http.paths[4].backend: only service backends are supported"),
                ("shop", "dangling", "spec.rules[0].http.paths[5].backend.service.name: Service shop/legacy is ExternalName"),
                ("shop", "dangling", "spec.defaultBackend.service.name: Service shop/ghost not found"),
            ],
            ..case("missing Service / port rejected alone", include_str!("fixtures/missing_service.yaml"), r#"
routes:
  - {name: shop/dangling/rule-0/path-3, hosts: [shop.example.com], path: {prefix: /d}, cluster: "shop/web:80"}
  - {name: shop/healthy/rule-0/path-0, hosts: [blog.example.com], path: {prefix: /}, cluster: "shop/web:80"}
clusters:
  - {name: "shop/web:80"}
"#)
        },
    ];
    // Another controller's class: nothing in the classes fixture is ours.
    v.push(Case {
        opts: Options {
            controller: "other.example.com/controller".into(),
            ..Options::default()
        },
        ..case(
            "not our controller",
            include_str!("fixtures/classes.yaml"),
            "{}",
        )
    });
    v
}

/// The mapping's routes and clusters are exactly `want`'s.
pub(super) fn assert_mapped(name: &str, got: &Mapped, want: &crate::config::Config) {
    use crate::config::owned;
    assert_eq!(got.routes, owned(&want.routes), "{name}: routes");
    assert_eq!(got.clusters, owned(&want.clusters), "{name}: clusters");
}

fn check(c: &Case, got: &Mapped) {
    let want = crate::config::parse(c.expect)
        .unwrap_or_else(|e| panic!("{}: expected config invalid: {e}", c.name));
    assert_mapped(c.name, got, &want);
    let rejected: Vec<_> = got
        .rejected
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.namespace.as_str(),
                e.name.as_str(),
                e.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rejected.len(),
        c.rejected.len(),
        "{}: rejected {rejected:#?}",
        c.name
    );
    for (g, w) in rejected.iter().zip(c.rejected) {
        let ok = g.0 == "Ingress" && g.1 == w.0 && g.2 == w.1 && g.3.starts_with(w.2);
        assert!(ok, "{}: rejected {g:?}, expected {w:?}", c.name);
    }
    let tls: Vec<_> = got
        .tls
        .iter()
        .map(|t| {
            let crt = String::from_utf8_lossy(&t.cert_pem)
                .lines()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let key_ok = t.key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----");
            (t.secret.clone(), t.hosts.clone(), crt, key_ok)
        })
        .collect();
    let want_tls: Vec<_> = c
        .tls
        .iter()
        .map(|(s, h, crt)| {
            (
                s.to_string(),
                h.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                crt.to_string(),
                true,
            )
        })
        .collect();
    assert_eq!(tls, want_tls, "{}: tls", c.name);
}

#[test]
fn fixtures_map_to_the_expected_config() {
    let cases = cases();
    assert!(cases.len() >= 8);
    for c in &cases {
        let objs = objects(c.fixture);
        let got = to_config(&objs, &c.opts);
        check(c, &got);
        // The order objects arrive in does not matter.
        let mut rev = objs.clone();
        rev.ingresses.reverse();
        rev.services.reverse();
        rev.endpoint_slices.reverse();
        rev.secrets.reverse();
        rev.ingress_classes.reverse();
        assert_eq!(to_config(&rev, &c.opts), got, "{}: order-dependent", c.name);
    }
}

#[test]
fn empty_and_nameless_objects_do_not_panic() {
    let mut objs = objects(include_str!("fixtures/classes.yaml"));
    objs.ingresses.push(Default::default());
    objs.services.push(Default::default());
    objs.endpoint_slices.push(Default::default());
    objs.secrets.push(Default::default());
    objs.ingress_classes.push(Default::default());
    let got = to_config(&objs, &Options::default());
    assert_eq!(got.routes.len(), 3);
    assert!(got.rejected.is_empty());
}

#[test]
fn repeated_pod_names_stay_unique_and_target_port_number_matches() {
    let svc: k8s_openapi::api::core::v1::Service = typed(
        "Service",
        serde_yaml::from_str(
            "{apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop},
              spec: {ports: [{name: http, port: 80, targetPort: 8080}]}}",
        )
        .expect("yaml"),
    );
    // A slice whose port name differs (hand-made): matched by the numeric targetPort.
    let slice: EndpointSlice = typed(
        "EndpointSlice",
        serde_yaml::from_str(
            "{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice,
              metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}},
              addressType: IPv6, ports: [{name: web, port: 8080}],
              endpoints: [{addresses: ['fd00::1', 'fd00::2', 'fd00::3'], targetRef: {name: web-a}}]}",
        )
        .expect("yaml"),
    );
    let sp = &svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()[0];
    let eps = endpoints::endpoints("shop", "web", sp, &[slice]);
    let names: Vec<_> = eps.iter().map(|e| e.label()).collect();
    assert_eq!(names, ["web-a", "web-a_v6", "web-a_v6_2"]);
    assert!(eps.iter().all(|e| e.address.port() == 8080));
}

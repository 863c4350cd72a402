//! The endpoint fast path against the full merge: for every fixture and every kind of slice
//! change, a patch either gives exactly the config a full merge gives, or is refused.

use super::fastpath::{changed_services, Served};
use super::source::merge;
use super::*;
use crate::config::{self, Config};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// Every kind the fixtures use, by `kind`.
fn objects(text: &str) -> Objects {
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).expect("fixture is YAML");
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        match kind {
            "IngressClass" => o.ingress_classes.push(t(v)),
            "Ingress" => o.ingresses.push(t(v)),
            "Service" => o.services.push(t(v)),
            "EndpointSlice" => o.endpoint_slices.push(t(v)),
            "Secret" => o.secrets.push(t(v)),
            "GatewayClass" => o.gateway_classes.push(t(v)),
            "Gateway" => o.gateways.push(t(v)),
            "HTTPRoute" => o.http_routes.push(t(v)),
            "ReferenceGrant" => o.reference_grants.push(t(v)),
            other => panic!("fixture has unexpected kind {other:?}"),
        }
    }
    o
}

fn t<T: serde::de::DeserializeOwned>(v: serde_yaml::Value) -> T {
    serde_yaml::from_value(v).expect("fixture object")
}

const COMMON: &str = include_str!("fixtures/annotations_common.yaml");
const CLUSTER: &str = include_str!("fixtures/annotations_cluster.yaml");
const ROUTE: &str = include_str!("fixtures/annotations_route.yaml");
const CANARY: &str = include_str!("fixtures/annotations_canary.yaml");
const BAD: &str = include_str!("fixtures/annotations_bad.yaml");

/// Annotation fixtures come with the common objects (Services, slices, the class).
fn with_common(name: &str, text: &str) -> String {
    if name.starts_with("annotations_") {
        format!("{COMMON}\n---\n{text}")
    } else {
        text.to_string()
    }
}

const BASE: &str =
    "listeners: [{name: http, address: '0.0.0.0:80'}]\nxdp: {l4: {snat_v4: 192.0.2.1}}\n";

fn full(base: &Config, objs: &Objects) -> Option<Config> {
    merge(base, Path::new("lb.yaml"), objs, &Options::default())
        .ok()
        .map(|m| m.config)
}

fn served(base: &Config, objs: &Arc<Objects>) -> Served {
    let m = merge(base, Path::new("lb.yaml"), objs, &Options::default()).expect("merge");
    Served::new(objs.clone(), Arc::new(m.config), m.sources)
}

fn owned(v: &[Arc<EndpointSlice>]) -> Vec<EndpointSlice> {
    v.iter().map(|s| EndpointSlice::clone(s)).collect()
}

fn arcs(v: &[EndpointSlice]) -> Vec<Arc<EndpointSlice>> {
    v.iter().cloned().map(Arc::new).collect()
}

/// Slice changes a scale event or a rollout makes.
fn mutations(slices: &[EndpointSlice]) -> Vec<(String, Vec<EndpointSlice>)> {
    let mut out = Vec::new();
    for (i, s) in slices.iter().enumerate() {
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut flipped = slices.to_vec();
        for ep in &mut flipped[i].endpoints {
            let c = ep.conditions.get_or_insert_with(Default::default);
            c.ready = Some(!c.ready.unwrap_or(true));
            c.serving = c.ready;
        }
        out.push((format!("{name}: readiness flipped"), flipped));
        let mut gone = slices.to_vec();
        gone.remove(i);
        out.push((format!("{name}: deleted"), gone));
        let mut grown = slices.to_vec();
        let mut extra = s.clone();
        extra.metadata.name = Some(format!("{name}-extra"));
        extra.metadata.resource_version = None;
        for (k, ep) in extra.endpoints.iter_mut().enumerate() {
            let v6 = s.address_type == "IPv6";
            ep.addresses = vec![if v6 {
                format!("fd00:250::{k}")
            } else {
                format!("10.250.{i}.{k}")
            }];
            ep.target_ref = None;
        }
        grown.push(extra);
        out.push((format!("{name}: scaled out (new slice)"), grown));
    }
    out
}

#[test]
fn patches_equal_the_full_merge_or_are_refused() {
    let fixtures = [
        ("endpoints", include_str!("fixtures/endpoints.yaml"), true),
        ("paths", include_str!("fixtures/paths.yaml"), true),
        ("classes", include_str!("fixtures/classes.yaml"), true),
        ("annotations_cluster", CLUSTER, true),
        ("annotations_route", ROUTE, true),
        ("annotations_canary", CANARY, true),
        ("annotations_bad", BAD, false),
        ("gateway", include_str!("fixtures/gateway.yaml"), true),
        ("services", include_str!("fixtures/services.yaml"), false),
    ];
    let base = config::parse(BASE).expect("base");
    for (name, text, must_patch) in fixtures {
        let objs = Arc::new(objects(&with_common(name, text)));
        let (mut patched, mut refused) = (0, 0);
        for (what, slices) in mutations(&owned(&objs.endpoint_slices)) {
            let mut s = served(&base, &objs);
            let mut next = Objects::clone(&objs);
            next.endpoint_slices = slices.into();
            let next = Arc::new(next);
            match s.patch(&next) {
                Some(cfg) => {
                    let want = full(&base, &next).expect("a patch is only given for a valid merge");
                    assert!(
                        *cfg == want,
                        "{name}, {what}: the patch differs from the full merge"
                    );
                    assert!(
                        Arc::ptr_eq(s.config(), &cfg),
                        "{name}, {what}: not moved on"
                    );
                    patched += 1;
                }
                None => refused += 1,
            }
        }
        if must_patch {
            assert!(
                patched > 0,
                "{name}: no change took the fast path ({refused} refused)"
            );
        }
        eprintln!("{name}: {patched} patched, {refused} refused");
    }
}

#[test]
fn backup_endpoints_are_patched_as_backups() {
    let base = config::parse(BASE).expect("base");
    let objs = Arc::new(objects(&with_common("annotations_cluster", CLUSTER)));
    let mut s = served(&base, &objs);
    let backups = |c: &Config| -> usize {
        c.clusters
            .iter()
            .flat_map(|c| &c.endpoints)
            .filter(|e| e.backup)
            .count()
    };
    let before = backups(s.config());
    assert!(
        before > 0,
        "the fixture has a backup Service with endpoints"
    );
    let mut next = Objects::clone(&objs);
    let old = owned(&next.endpoint_slices);
    next.endpoint_slices = old
        .into_iter()
        .filter(|sl| {
            let svc = sl
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            svc.map(String::as_str) != Some("old")
        })
        .collect();
    let next = Arc::new(next);
    let cfg = s
        .patch(&next)
        .expect("a backup Service's slices are patchable");
    assert_eq!(backups(&cfg), 0);
    assert!(*cfg == full(&base, &next).expect("merge"));
}

#[test]
fn other_changes_and_l4_services_go_the_full_way() {
    let base = config::parse(BASE).expect("base");
    let objs = Arc::new(objects(include_str!("fixtures/endpoints.yaml")));
    let mut s = served(&base, &objs);
    let mut svc_changed = Objects::clone(&objs);
    Arc::make_mut(&mut svc_changed.services[0]).metadata.labels =
        Some([("x".to_string(), "y".to_string())].into());
    assert!(
        s.patch(&Arc::new(svc_changed)).is_none(),
        "a Service change"
    );
    let same = Arc::new(Objects::clone(&objs));
    let cfg = s.patch(&same).expect("nothing changed");
    assert!(
        Arc::ptr_eq(&cfg, s.config()),
        "no new config when no cluster changed"
    );

    let l4 = Arc::new(objects(include_str!("fixtures/services.yaml")));
    let mut s = served(&base, &l4);
    for (what, slices) in mutations(&owned(&l4.endpoint_slices)) {
        let mut next = Objects::clone(&l4);
        next.endpoint_slices = slices.into();
        assert!(
            s.patch(&Arc::new(next)).is_none(),
            "L4 Service slices, {what}"
        );
    }
}

#[test]
fn changed_services_compare_resource_versions_then_content() {
    let slice = |name: &str, svc: &str, rv: Option<&str>, ip: &str| -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip]}]}))
        .expect("slice")
    };
    let old = [
        slice("a-1", "a", Some("1"), "10.0.0.1"),
        slice("b-1", "b", None, "10.0.0.2"),
    ];
    let keys = |v: &[(&str, &str)]| -> std::collections::BTreeSet<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    // Same resourceVersion: equal, unread.
    let new = [
        slice("a-1", "a", Some("1"), "10.9.9.9"),
        slice("b-1", "b", None, "10.0.0.2"),
    ];
    assert_eq!(changed_services(&arcs(&old), &arcs(&new)), keys(&[]));
    // No resourceVersion: compared by content.
    let new = [
        slice("a-1", "a", Some("1"), "10.0.0.1"),
        slice("b-1", "b", None, "10.0.0.3"),
    ];
    assert_eq!(
        changed_services(&arcs(&old), &arcs(&new)),
        keys(&[("ns", "b")])
    );
    // Added, removed, and moved to another Service.
    let new = [
        slice("a-1", "c", Some("2"), "10.0.0.1"),
        slice("d-1", "d", None, "10.0.0.4"),
    ];
    assert_eq!(
        changed_services(&arcs(&old), &arcs(&new)),
        keys(&[("ns", "a"), ("ns", "b"), ("ns", "c"), ("ns", "d")])
    );
}

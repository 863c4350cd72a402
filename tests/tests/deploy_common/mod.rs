//! Shared by the deploy tests: deploy/'s objects and the chart's, the kinds deploy/ may hold (each
//! a k8s-openapi type, also a discovery entry for kubectl), a JSON diff for readable failures.
#![allow(dead_code)]

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::serde::{de::DeserializeOwned, Serialize};
use k8s_openapi::{NamespaceResourceScope, Resource};
use lb_tests::helm::{self, Chart};
use lb_tests::kubectl;
use lb_tests::manifests::{self, key, repo};
use serde_json::Value;
use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};

pub type Check = fn(&Value) -> Result<(), String>;

/// Deserialises into `T` and back; the JSON must be unchanged (serde drops unknown fields).
fn round_trip<T>(v: &Value) -> Result<(), String>
where
    T: DeserializeOwned + Serialize,
{
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if &back != v {
        return Err(format!(
            "changed by the round trip (unknown or misspelt field?):\n{v:#}\nbecame\n{back:#}"
        ));
    }
    Ok(())
}

/// The kinds deploy/ may hold: discovery entry and round trip of each.
pub fn kinds() -> Vec<(kubectl::ApiResource, Check)> {
    fn kind<T: Resource + DeserializeOwned + Serialize + 'static>() -> (kubectl::ApiResource, Check)
    {
        let namespaced = TypeId::of::<T::Scope>() == TypeId::of::<NamespaceResourceScope>();
        let (g, v, p, k) = (T::GROUP, T::VERSION, T::URL_PATH_SEGMENT, T::KIND);
        (
            (g.into(), v.into(), p.into(), k.into(), namespaced),
            round_trip::<T>,
        )
    }
    vec![
        kind::<Namespace>(),
        kind::<ServiceAccount>(),
        kind::<ClusterRole>(),
        kind::<ClusterRoleBinding>(),
        kind::<Role>(),
        kind::<RoleBinding>(),
        kind::<IngressClass>(),
        kind::<ConfigMap>(),
        kind::<DaemonSet>(),
    ]
}

/// A known kind with the right apiVersion, in lb-system iff namespaced, unchanged by its type.
pub fn typed_check(v: &Value) -> Result<(), String> {
    for ((group, version, _, kind, namespaced), check) in kinds() {
        let api_version = if group.is_empty() {
            version
        } else {
            format!("{group}/{version}")
        };
        if v["kind"] == kind.as_str() && v["apiVersion"] == api_version.as_str() {
            let ns = v.pointer("/metadata/namespace").and_then(Value::as_str);
            if namespaced != (ns == Some("lb-system")) {
                return Err(format!("{}: namespace {ns:?} for a {kind}", key(v)));
            }
            return check(v).map_err(|e| format!("{}: {e}", key(v)));
        }
    }
    Err(format!("{}: not a kind deploy/ may hold", key(v)))
}

/// JSON pointers where `a` and `b` differ (for readable failures).
fn diff(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (l, r) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff(l, r, &format!("{at}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                diff(l, r, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} vs {b}")),
        _ => {}
    }
}

pub fn assert_same(left: &Value, right: &Value, what: &str) {
    let mut out = Vec::new();
    diff(left, right, "", &mut out);
    assert!(out.is_empty(), "{what}:\n{}", out.join("\n"));
}

/// The objects `kubectl apply -f deploy/` sends.
pub fn plain() -> Vec<Value> {
    let files = manifests::yaml_files(&repo().join("deploy")).unwrap();
    manifests::load(&files)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// deploy/privileged/40-daemonset.yaml.
pub fn privileged_ds() -> Value {
    let f = repo().join("deploy/privileged/40-daemonset.yaml");
    let mut docs = manifests::load(&[f]).unwrap();
    assert_eq!(
        docs.len(),
        1,
        "deploy/privileged/40-daemonset.yaml: one DaemonSet"
    );
    docs.remove(0).1
}

/// The chart's objects for release `lb` in `lb-system` with `overrides` on the default values.
pub fn render(overrides: Value) -> Vec<Value> {
    let chart = Chart::load(&repo().join("deploy/helm/lb")).unwrap();
    let docs = chart.render("lb", "lb-system", &overrides).unwrap();
    helm::documents_to_json(&docs).unwrap()
}

/// Objects by `kind namespace/name`; duplicates fail.
pub fn by_key(objs: &[Value]) -> BTreeMap<String, Value> {
    let map: BTreeMap<String, Value> = objs.iter().map(|o| (key(o), o.clone())).collect();
    assert_eq!(map.len(), objs.len(), "duplicate objects: {:?}", map.keys());
    map
}

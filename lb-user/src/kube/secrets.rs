//! Which TLS Secrets the mapping sees: only those an Ingress of ours names in `spec.tls`, or a
//! Gateway of ours in a listener's certificateRefs. The rest stay in the store, out of [`Objects`].

use super::{ingress, Objects, Options};
use std::collections::BTreeSet;

/// `namespace/name` keys of the Secrets referenced by Ingresses and Gateways of ours (class and
/// namespace filter as the mappings apply them). A cross-namespace certificateRef is kept here;
/// whether a ReferenceGrant allows it is the Gateway mapping's decision.
pub(super) fn referenced(objs: &Objects, opts: &Options) -> BTreeSet<(String, String)> {
    let classes = ingress::Classes::new(&objs.ingress_classes, opts);
    let mut refs = BTreeSet::new();
    for ing in &objs.ingresses {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        if !(opts.namespaces.is_empty() || opts.namespaces.iter().any(|n| n == ns))
            || !classes.is_ours(ing)
        {
            continue;
        }
        let tls = ing.spec.as_ref().and_then(|s| s.tls.as_deref());
        for t in tls.unwrap_or_default() {
            if let Some(name) = &t.secret_name {
                refs.insert((ns.to_string(), name.clone()));
            }
        }
    }
    let classes: Vec<&str> = (objs.gateway_classes.items())
        .filter(|c| c.spec.controller_name == opts.controller)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    for g in &objs.gateways {
        let ns = g.metadata.namespace.as_deref().unwrap_or("default");
        if !classes.contains(&g.spec.gateway_class_name.as_str()) {
            continue;
        }
        let tls = g.spec.listeners.iter().filter_map(|l| l.tls.as_ref());
        for r in tls.flat_map(|t| &t.certificate_refs) {
            let is_secret = r.kind.as_deref().unwrap_or("Secret") == "Secret"
                && r.group.as_deref().unwrap_or("").is_empty();
            if is_secret {
                let rns = r.namespace.as_deref().unwrap_or(ns);
                refs.insert((rns.to_string(), r.name.clone()));
            }
        }
    }
    refs
}

/// Drops the Secrets no Ingress of ours references (memory: their data is never copied out of
/// the store, and a change to them does not cause a new config).
pub(super) fn keep_referenced(objs: &mut Objects, opts: &Options) {
    let refs = referenced(objs, opts);
    objs.secrets.retain(|s| {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        let name = s.metadata.name.as_deref().unwrap_or_default();
        refs.contains(&(ns.to_string(), name.to_string()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_named_by_our_gateways_are_kept() {
        let class = json!({"metadata": {"name": "lb"}, "spec": {"controllerName": super::super::DEFAULT_CONTROLLER}});
        let gw = json!({"metadata": {"namespace": "edge", "name": "gw"},
            "spec": {"gatewayClassName": "lb", "listeners": [{"name": "https", "port": 443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "local"}, {"name": "far", "namespace": "certs"},
                                            {"name": "cm", "kind": "ConfigMap", "group": ""}]}}]}});
        let other = json!({"metadata": {"namespace": "edge", "name": "theirs"},
            "spec": {"gatewayClassName": "nginx", "listeners": [{"name": "https", "port": 443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "theirs"}]}}]}});
        let objs = Objects {
            gateway_classes: vec![serde_json::from_value(class).unwrap()].into(),
            gateways: vec![
                serde_json::from_value(gw).unwrap(),
                serde_json::from_value(other).unwrap(),
            ]
            .into(),
            ..Objects::default()
        };
        let refs: Vec<(String, String)> =
            referenced(&objs, &Options::default()).into_iter().collect();
        let want =
            [("certs", "far"), ("edge", "local")].map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(refs, want);
    }

    #[test]
    fn only_secrets_named_by_our_ingresses_are_kept() {
        let class = json!({"metadata": {"name": "lb"}, "spec": {"controller": super::super::DEFAULT_CONTROLLER}});
        let ing = |ns: &str, class: &str, secret: &str| {
            json!({"metadata": {"namespace": ns, "name": "web"},
                   "spec": {"ingressClassName": class, "tls": [{"hosts": ["a.test"], "secretName": secret}]}})
        };
        let secret = |ns: &str, name: &str| {
            json!({"metadata": {"namespace": ns, "name": name}, "type": "kubernetes.io/tls",
                   "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}})
        };
        let mut objs = Objects {
            ingress_classes: vec![serde_json::from_value(class).unwrap()].into(),
            ingresses: [ing("shop", "lb", "used"), ing("other", "nginx", "theirs")]
                .into_iter()
                .map(|v| serde_json::from_value(v).unwrap())
                .collect(),
            secrets: [
                secret("shop", "used"),
                secret("shop", "unused"),
                secret("other", "theirs"),
                secret("blog", "used"),
            ]
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect(),
            ..Objects::default()
        };
        keep_referenced(&mut objs, &Options::default());
        let kept: Vec<(Option<&str>, Option<&str>)> = objs
            .secrets
            .iter()
            .map(|s| (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()))
            .collect();
        assert_eq!(kept, [(Some("shop"), Some("used"))]);
    }
}

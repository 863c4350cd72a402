//! The Helm chart (deploy/helm/lb) renders the plain manifests of deploy/ object by object with its
//! default values (and deploy/privileged/ with privileged=true); values reach the objects; every
//! value is in deploy/README.md's table. Rendered by lb_tests::helm (helm is not installed here).

mod deploy_common;

use deploy_common::{assert_same, by_key, plain, privileged_ds, render};
use lb_tests::manifests::{args, flag, lb_config, lb_container, one, repo};
use serde_json::{json, Value};

#[test]
fn helm_chart_renders_the_plain_manifests() {
    let mut want = by_key(&plain());
    // helm install --create-namespace makes the namespace; a chart must not own it.
    assert!(want.remove("Namespace /lb-system").is_some());
    let got = by_key(&render(json!({})));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert_same(&got[k], v, &format!("{k}: chart vs deploy/"));
    }
    let rendered = render(json!({"privileged": true}));
    let ds = one(&rendered, "DaemonSet").unwrap();
    assert_same(
        ds,
        &privileged_ds(),
        "chart with privileged=true vs deploy/privileged/",
    );
}

#[test]
fn helm_values_reach_the_daemonset() {
    let objs = render(
        json!({"watchNamespaces": ["shop", "web"], "ifaces": ["eth1", "eth2"],
        "xdpMode": "skb", "extraArgs": ["--workers=4"], "image": {"tag": "1.2.3"},
        "ingressClass": {"name": "edge", "controller": "x.example/c", "default": true},
        "nodeSelector": {"lb.example.com/edge": "true"},
        "admin": {"port": 9901}, "config": "listeners: []\n"}),
    );
    let ds = one(&objs, "DaemonSet").unwrap();
    let c = lb_container(ds).unwrap();
    let a = args(c).unwrap();
    assert_eq!(flag(&a, "watch-namespace"), ["shop", "web"]);
    assert_eq!(flag(&a, "iface"), ["eth1", "eth2"]);
    assert_eq!(flag(&a, "xdp-mode"), ["skb"]);
    assert_eq!(flag(&a, "ingress-class"), ["edge"]);
    assert_eq!(flag(&a, "controller"), ["x.example/c"]);
    assert_eq!(flag(&a, "admin"), ["0.0.0.0:9901"]);
    assert_eq!(a.last().map(String::as_str), Some("--workers=4"));
    assert_eq!(c["image"], "registry.example/lb:1.2.3");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"lb.example.com/edge": "true"}));
    let class = one(&objs, "IngressClass").unwrap();
    let default = &class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"];
    assert_eq!(default, "true");
    assert_eq!(class["spec"]["controller"], "x.example/c");
    assert_eq!(
        lb_config(one(&objs, "ConfigMap").unwrap()).unwrap(),
        "listeners: []\n"
    );
}

#[test]
fn every_helm_value_is_in_the_readme_table() {
    let text = std::fs::read_to_string(repo().join("deploy/helm/lb/values.yaml")).unwrap();
    let values: Value = serde_yaml::from_str(&text).unwrap();
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let mut missing = Vec::new();
    for (group, v) in values.as_object().unwrap() {
        // Maps of settings are listed key by key; maps that are Kubernetes fields as a whole.
        let nested = v.is_object() && !["resources", "nodeSelector"].contains(&group.as_str());
        let paths: Vec<String> = match v.as_object().filter(|_| nested) {
            Some(m) => m.keys().map(|k| format!("{group}.{k}")).collect(),
            None => vec![group.clone()],
        };
        missing.extend(
            paths
                .into_iter()
                .filter(|p| !readme.contains(&format!("| `{p}` |"))),
        );
    }
    assert!(
        missing.is_empty(),
        "values missing from deploy/README.md: {missing:?}"
    );
}

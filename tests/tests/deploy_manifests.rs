//! deploy/ cannot drift: every manifest is a known k8s-openapi type with no unknown field, the
//! DaemonSet/RBAC/IngressClass say what lb needs (the chart: deploy_helm.rs), the configs pass
//! `lb check`, the Dockerfile runs the README's build commands, kubectl dry-run accepts deploy/.

mod deploy_common;

use deploy_common::{assert_same, kinds, plain, privileged_ds, render, typed_check};
use lb_tests::manifests::{self, args, flag, lb_config, lb_container, one, repo};
use lb_tests::{kubectl, lb_bin};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

#[test]
fn every_object_is_a_known_kind_with_no_unknown_field() {
    let mut all = plain();
    all.push(privileged_ds());
    all.extend(render(json!({})));
    all.extend(render(json!({"privileged": true, "watchNamespaces": ["shop", "web"],
        "nodeSelector": {"lb.example.com/edge": "true"}, "priorityClassName": "system-node-critical",
        "tolerations": [{"key": "lb.example.com/edge", "operator": "Exists", "effect": "NoSchedule"}],
        "extraArgs": ["--workers=4"]})));
    for v in &all {
        typed_check(v).unwrap();
    }
    // The check catches what it is for: a misspelt field, a wrong apiVersion, an unknown kind.
    let ds = all.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let mut typo = ds.clone();
    typo["spec"]["template"]["spec"]["hostNetwrk"] = json!(true);
    assert!(typed_check(&typo).unwrap_err().contains("round trip"));
    let mut old = ds.clone();
    old["apiVersion"] = json!("extensions/v1beta1");
    assert!(typed_check(&old).is_err());
    assert!(typed_check(&json!({"apiVersion": "v1", "kind": "Pod"})).is_err());
}

#[test]
fn daemonset_is_host_network_unprivileged_with_named_capabilities() {
    let objs = plain();
    let ds = one(&objs, "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = lb_container(ds).unwrap();
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        json!(["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE"])
    );
    assert_eq!(
        pod["securityContext"],
        Value::Null,
        "no pod-level overrides"
    );
    let a = args(c).unwrap();
    assert_eq!(a.first().map(String::as_str), Some("run"));
    assert!(a.contains(&"--kube".to_string()));
    assert_eq!(flag(&a, "config"), ["/etc/lb/lb.yaml"]);

    // Probes on the admin port lb is told to serve: readiness on /readyz (503 until the first
    // full list), startup and liveness on /healthz.
    let admin = flag(&a, "admin");
    let admin_port: u64 = admin[0].rsplit(':').next().unwrap().parse().unwrap();
    let ports = c["ports"].as_array().unwrap();
    let named = |n: &str| ports.iter().find(|p| p["name"] == n).unwrap();
    assert_eq!(named("admin")["containerPort"], admin_port);
    assert_eq!(named("http")["containerPort"], 80);
    for p in ports {
        assert_eq!(p["hostPort"], p["containerPort"], "hostNetwork: {p}");
    }
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        assert_eq!(
            c[probe]["httpGet"],
            json!({"path": path, "port": "admin"}),
            "{probe}"
        );
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], admin_port.to_string());

    // Shutdown: kubelet waits longer than lb's own grace.
    let grace: u64 = flag(&a, "grace-secs")[0].parse().unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > grace);
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"],
        json!({"maxUnavailable": 1, "maxSurge": 0})
    );

    // The names it refers to exist.
    let sa = one(&objs, "ServiceAccount").unwrap();
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let cm = one(&objs, "ConfigMap").unwrap();
    assert_eq!(
        pod["volumes"],
        json!([{"name": "config", "configMap": {"name": cm["metadata"]["name"]}}])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "config", "mountPath": "/etc/lb", "readOnly": true}])
    );
    let class = one(&objs, "IngressClass").unwrap();
    assert_eq!(
        flag(&a, "ingress-class"),
        [class["metadata"]["name"].as_str().unwrap()]
    );
    assert_eq!(
        flag(&a, "controller"),
        [class["spec"]["controller"].as_str().unwrap()]
    );
    let ns = one(&objs, "Namespace").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn privileged_variant_differs_only_in_the_security_context() {
    let objs = plain();
    let mut ds = one(&objs, "DaemonSet").unwrap().clone();
    let privileged = privileged_ds();
    let sc = &lb_container(&privileged).unwrap()["securityContext"];
    assert_eq!(
        sc,
        &json!({"runAsUser": 0, "privileged": true, "readOnlyRootFilesystem": true})
    );
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"] = sc.clone();
    assert_same(
        &ds,
        &privileged,
        "deploy/40-daemonset.yaml vs deploy/privileged/",
    );
}

#[test]
fn rbac_reads_the_watched_kinds_and_writes_only_status_events_and_leases() {
    let objs = plain();
    let grants = |role: &Value| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(
                rule.as_object().unwrap().len(),
                3,
                "only apiGroups/resources/verbs: {rule}"
            );
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        let (g, r, v) = (
                            g.as_str().unwrap(),
                            r.as_str().unwrap(),
                            v.as_str().unwrap(),
                        );
                        out.insert(format!("{g}/{r}:{v}"));
                    }
                }
            }
        }
        out
    };
    let mut want = BTreeSet::new();
    let read = [
        ("", "services"),
        ("", "secrets"),
        ("", "configmaps"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "ingressclasses"),
        ("networking.k8s.io", "ingresses"),
        ("gateway.networking.k8s.io", "gatewayclasses"),
        ("gateway.networking.k8s.io", "gateways"),
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "referencegrants"),
    ];
    for (g, r) in read {
        for v in ["get", "list", "watch"] {
            want.insert(format!("{g}/{r}:{v}"));
        }
    }
    let status = [
        ("networking.k8s.io", "ingresses/status"),
        ("gateway.networking.k8s.io", "gatewayclasses/status"),
        ("gateway.networking.k8s.io", "gateways/status"),
        ("gateway.networking.k8s.io", "httproutes/status"),
    ];
    for (g, r) in status {
        for v in ["patch", "update"] {
            want.insert(format!("{g}/{r}:{v}"));
        }
    }
    want.insert("events.k8s.io/events:create".into());
    want.insert("events.k8s.io/events:patch".into());
    assert_eq!(grants(one(&objs, "ClusterRole").unwrap()), want);
    let leases: BTreeSet<String> = ["get", "create", "update"]
        .iter()
        .map(|v| format!("coordination.k8s.io/leases:{v}"))
        .collect();
    assert_eq!(grants(one(&objs, "Role").unwrap()), leases);

    let sa = one(&objs, "ServiceAccount").unwrap();
    let subject = json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                          "namespace": sa["metadata"]["namespace"]}]);
    for (binding, role) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = one(&objs, binding).unwrap();
        assert_eq!(b["subjects"], subject, "{binding}");
        let r = one(&objs, role).unwrap();
        assert_eq!(b["roleRef"]["kind"], role);
        assert_eq!(b["roleRef"]["name"], r["metadata"]["name"], "{binding}");
    }
}

#[test]
fn ingress_class_controller_is_the_code_default() {
    let objs = plain();
    let class = one(&objs, "IngressClass").unwrap();
    assert_eq!(
        class["spec"]["controller"],
        lb_user::kube::DEFAULT_CONTROLLER
    );
}

#[test]
fn configs_pass_lb_check() {
    let values = std::fs::read_to_string(repo().join("deploy/helm/lb/values.yaml")).unwrap();
    let values: Value = serde_yaml::from_str(&values).unwrap();
    let cm = plain()
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("deploy", lb_config(&cm).unwrap()),
        ("values", values["config"].as_str().unwrap()),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(lb_bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
    }
}

/// The commands of the first code block after `heading` (comments and blank lines dropped).
fn readme_commands(text: &str, heading: &str) -> Vec<String> {
    let section = text.split_once(heading).expect("README build section").1;
    let block = section.split("```").nth(1).expect("a code block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn dockerfile_runs_the_readme_build_commands_in_order() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let want = readme_commands(&readme, "## Build and deploy");
    assert!(
        want.iter()
            .any(|c| c.starts_with("cargo xtask build-release")),
        "{want:?}"
    );
    let docker = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let joined = docker.replace("\\\n", " ");
    let run: Vec<String> = joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RUN "))
        .flat_map(|l| {
            l.split("&&")
                .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect();
    let cargo: Vec<&String> = run.iter().filter(|c| c.starts_with("cargo ")).collect();
    assert_eq!(
        cargo,
        want.iter().collect::<Vec<_>>(),
        "Dockerfile RUN cargo steps vs README"
    );
}

#[test]
fn kubectl_dry_run_accepts_deploy() {
    let Some(bin) = kubectl::find() else {
        println!("SKIPPED kubectl_dry_run_accepts_deploy: no kubectl on PATH (it is not part of this project's toolchain)");
        return;
    };
    let resources: Vec<kubectl::ApiResource> = kinds().into_iter().map(|(r, _)| r).collect();
    let api = kubectl::Discovery::start(kubectl::discovery_docs(&resources)).unwrap();
    let deploy = repo().join("deploy");
    let files: Vec<PathBuf> = manifests::yaml_files(&deploy).unwrap();
    let privileged = repo().join("deploy/privileged/40-daemonset.yaml");
    // `-f deploy/` exactly as documented (kubectl picks the files), then the privileged set.
    let runs = [
        (vec![deploy.clone()], files.clone()),
        (
            vec![files[0].clone(), privileged.clone()],
            vec![files[0].clone(), privileged],
        ),
    ];
    for (args, set) in runs {
        let paths: Vec<&std::path::Path> = args.iter().map(PathBuf::as_path).collect();
        let (ok, out, err) = kubectl::dry_run_apply(&bin, &api.url(), &paths).unwrap();
        assert!(ok, "kubectl apply --dry-run=client failed:\n{err}");
        let created: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_suffix(" created (dry run)"))
            .collect();
        assert_eq!(
            created.len(),
            manifests::load(&set).unwrap().len(),
            "{out}{err}"
        );
        // The namespace comes first, or nothing namespaced could be created in it.
        assert_eq!(created.first(), Some(&"namespace/lb-system"), "{out}");
    }
    // And it fails where it should: an unknown kind.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n").unwrap();
    let (ok, _, err) = kubectl::dry_run_apply(&bin, &api.url(), &[&bad]).unwrap();
    assert!(!ok, "{err}");
}

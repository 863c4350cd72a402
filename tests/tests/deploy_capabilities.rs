//! deploy/40-daemonset.yaml's capabilities are exactly what lb needs: lb started as the DaemonSet
//! starts it (its args and env, the ConfigMap's config, --kube against a mock API server serving
//! deploy's IngressClass) with only those capabilities attaches XDP and answers /healthz; without
//! any one of them it fails to start. Runs in a network namespace whose `eth0` is a veth.

use lb_tests::kubeapi::MockApi;
use lb_tests::manifests::{self, args, flag, lb_config, lb_container, one, repo};
use lb_tests::netns::Netns;
use lb_tests::process::ChildGuard;
use lb_tests::{http, lb_bin, require_root};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

struct Deploy {
    args: Vec<String>,
    env: Vec<(String, String)>,
    caps: Vec<String>,
    config: String,
    class: Value,
}

fn deploy() -> Deploy {
    let files = manifests::yaml_files(&repo().join("deploy")).unwrap();
    let objs: Vec<Value> = manifests::load(&files)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let c = lb_container(one(&objs, "DaemonSet").unwrap())
        .unwrap()
        .clone();
    let env = c["env"].as_array().unwrap().iter();
    let env = env.map(|e| {
        (
            e["name"].as_str().unwrap().into(),
            e["value"].as_str().unwrap().into(),
        )
    });
    let caps = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap();
    Deploy {
        args: args(&c).unwrap(),
        env: env.collect(),
        caps: caps
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect(),
        config: lb_config(one(&objs, "ConfigMap").unwrap())
            .unwrap()
            .to_string(),
        class: one(&objs, "IngressClass").unwrap().clone(),
    }
}

/// How one start ended: ready (then stopped cleanly) or exited first, with lb's log.
enum Outcome {
    Ready { xdp_attached: bool, exit_ok: bool },
    Failed(String),
}

/// Runs lb under `setpriv` with only `caps` (bounding set; root, as in the pod), no new privileges
/// (allowPrivilegeEscalation: false), waits for /healthz or exit, then stops it.
fn start(ns: &Netns, d: &Deploy, caps: &[String], dir: &Path) -> Outcome {
    let config = dir.join("lb.yaml");
    std::fs::write(&config, &d.config).unwrap();
    let run_args: Vec<String> = d
        .args
        .iter()
        .map(|a| match a.strip_prefix("--config=") {
            Some(_) => format!("--config={}", config.display()),
            None => a.clone(),
        })
        .collect();
    let bounding: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let log_path = dir.join("lb.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = ns.cmd("setpriv");
    cmd.args([
        "--bounding-set",
        &bounding,
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ])
    .arg(lb_bin())
    .args(&run_args)
    .envs(d.env.iter().map(|(k, v)| (k, v)))
    .env("KUBECONFIG", dir.join("kubeconfig"))
    .env("HOME", dir)
    .stdin(std::process::Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let port: u16 = flag(&d.args, "admin")[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if child.0.try_wait().unwrap().is_some() {
            return Outcome::Failed(read_log());
        }
        let get = move || http::get(admin, "admin", "/healthz", Duration::from_secs(1));
        if ns.run(get).unwrap().is_ok_and(|r| r.status == 200) {
            let link = ns.ip(&["link", "show", "eth0"]).unwrap();
            let exit_ok = child.stop().is_some_and(|s| s.success());
            return Outcome::Ready {
                xdp_attached: link.contains(" xdp"),
                exit_ok,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "lb neither ready nor exited within {START_TIMEOUT:?}; log:\n{}",
        read_log()
    );
}

#[test]
fn daemonset_capabilities_are_sufficient_and_each_is_needed() {
    require_root();
    let d = deploy();
    assert_eq!(flag(&d.args, "iface"), ["eth0"], "the test's veth is eth0");
    let ns = Netns::new(&format!("lbt-{}-cap", std::process::id())).unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ])
    .unwrap();
    for dev in ["eth0", "peer0"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    // The API server must be reachable from inside the namespace: bind it there.
    let api = ns.run(MockApi::start).unwrap().unwrap();
    api.apply(d.class.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: m, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: m, context: {{cluster: m, user: u}}}}]\n\
             current-context: m\n",
            api.url()
        ),
    )
    .unwrap();

    match start(&ns, &d, &d.caps, dir.path()) {
        Outcome::Ready {
            xdp_attached,
            exit_ok,
        } => {
            assert!(xdp_attached, "XDP not attached to eth0 while ready");
            assert!(exit_ok, "lb did not exit cleanly on SIGTERM");
        }
        Outcome::Failed(log) => panic!("lb failed with {:?}:\n{log}", d.caps),
    }
    let link = ns.ip(&["link", "show", "eth0"]).unwrap();
    assert!(
        !link.contains(" xdp"),
        "XDP left attached after exit: {link}"
    );

    for missing in &d.caps {
        let fewer: Vec<String> = d.caps.iter().filter(|c| c != &missing).cloned().collect();
        match start(&ns, &d, &fewer, dir.path()) {
            Outcome::Ready { .. } => {
                panic!("lb started without CAP_{missing}: drop it from the DaemonSet and the docs")
            }
            Outcome::Failed(log) => assert!(
                log.contains("Operation not permitted") || log.contains("Permission denied"),
                "without CAP_{missing} lb failed for another reason:\n{log}"
            ),
        }
    }
}

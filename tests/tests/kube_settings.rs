//! `lb --kube` readiness and the settings ConfigMap, against the mock API server: `/readyz` (and
//! `/healthz`) 503 before the first full list, 200 after and while the API server is gone;
//! the ConfigMap's `lb.yaml` is the base config (its listener served), a bad one keeps the last
//! good one with the field logged; only the named ConfigMap counts (field selector).

mod support;

use lb_tests::http::{self, Backend, KeepAliveClient};
use lb_tests::kubeapi::MockApi;
use lb_tests::kubetest::{kubeconfig, start_lb_with, WAIT};
use lb_tests::lb::free_local_addr;
use lb_tests::lb_bin;
use lb_tests::process::ChildGuard;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::admin::{plain_log, wait_until};

fn status(admin: SocketAddr, path: &str) -> Option<u16> {
    http::get(admin, "admin", path, Duration::from_secs(2))
        .ok()
        .map(|r| r.status)
}

#[test]
fn not_ready_before_the_first_list() {
    // Nothing listens on this port: the first list never completes.
    let dead = free_local_addr();
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://{dead}"));
    let cfg = dir.path().join("lb.yaml");
    std::fs::write(
        &cfg,
        "listeners: [{name: http, address: \"127.0.0.1:1\"}]\n",
    )
    .unwrap();
    let admin = free_local_addr();
    let log = std::fs::File::create(dir.path().join("lb.log")).unwrap();
    let child = Command::new(lb_bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--admin", &admin.to_string(), "--kube", "--kubeconfig"])
        .arg(&kc)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _guard = ChildGuard(child);
    let up = wait_until(WAIT, || status(admin, "/readyz").is_some());
    let log = || std::fs::read_to_string(dir.path().join("lb.log")).unwrap_or_default();
    assert!(up, "/readyz never answered:\n{}", log());
    for _ in 0..5 {
        assert_eq!(status(admin, "/readyz"), Some(503), "{}", log());
        assert_eq!(status(admin, "/healthz"), Some(503), "{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn configmap(name: &str, listen: SocketAddr, cluster: &str) -> Value {
    let yaml = format!(
        "listeners: [{{name: cm, address: \"{listen}\"}}]\naccess_log: {{format: off}}\n\
         routes: [{{name: all, hosts: [\"*\"], cluster: c}}]\nclusters: [{{name: c, endpoints: [{{address: \"{cluster}\"}}]}}]\n"
    );
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"namespace": "lb-system", "name": name},
           "data": {"lb.yaml": yaml}})
}

fn served_by(listen: SocketAddr) -> Option<String> {
    let mut c = KeepAliveClient::connect(listen, Duration::from_secs(2)).ok()?;
    let r = c.get("any.test", "/").ok()?;
    r.header("x-backend").map(str::to_string)
}

#[test]
fn configmap_is_the_base_config_and_readiness_survives_the_api_server() {
    let backend_addr = free_local_addr();
    let _backend = Backend::start(None, backend_addr, "from-configmap").unwrap();
    let api = MockApi::start().unwrap();
    let cm_listen = free_local_addr();
    // Same namespace, another name: the field selector keeps it out.
    api.apply(configmap("unrelated", free_local_addr(), "127.0.0.1:1"));
    api.apply(configmap("lb-config", cm_listen, &backend_addr.to_string()));

    let file_listen = free_local_addr();
    let yaml = format!("listeners: [{{name: http, address: \"{file_listen}\"}}]\n");
    let lb = start_lb_with(&api, &yaml);
    assert_eq!(lb.admin_get("/readyz").unwrap().status, 200);

    // The ConfigMap's listener and route are served, the file's listener is not.
    assert_eq!(
        served_by(cm_listen).as_deref(),
        Some("from-configmap"),
        "{}",
        plain_log(&lb)
    );
    assert!(
        std::net::TcpStream::connect(file_listen).is_err(),
        "the file's listener is open"
    );

    // A bad ConfigMap: logged with the field, the last good one stays in force.
    let mut bad = configmap("lb-config", cm_listen, &backend_addr.to_string());
    bad["data"]["lb.yaml"] = json!("listeners: [{name: cm, address: nowhere}]\n");
    api.apply(bad);
    let logged = wait_until(WAIT, || {
        let log = plain_log(&lb);
        log.contains("not served") && log.contains("lb.yaml listeners[0].address")
    });
    assert!(logged, "no rejection logged:\n{}", plain_log(&lb));
    assert_eq!(served_by(cm_listen).as_deref(), Some("from-configmap"));

    // The API server goes away: still ready, still serving.
    drop(api);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lb.admin_get("/readyz").unwrap().status, 200);
    assert_eq!(lb.admin_get("/healthz").unwrap().status, 200);
    assert_eq!(served_by(cm_listen).as_deref(), Some("from-configmap"));
}

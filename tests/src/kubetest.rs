//! Setup shared by the `lb --kube` end-to-end tests: a kubeconfig for the mock API server, Services
//! with their EndpointSlices, loopback backends, `lb` started against the mock, and traffic tallies.

use crate::http::{Backend, KeepAliveClient};
use crate::kubeapi::MockApi;
use crate::lb::{free_local_addr, Lb};
use crate::lb_bin;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the kube tests wait for a change to show (in traffic, the log or the mock).
pub const WAIT: Duration = Duration::from_secs(10);

/// Writes `dir/kubeconfig`: one cluster at `url` (the mock API server), no credentials.
pub fn kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: mock, cluster: {{server: \"{url}\"}}}}]\n\
         users: [{{name: none, user: {{}}}}]\n\
         contexts: [{{name: mock, context: {{cluster: mock, user: none}}}}]\ncurrent-context: mock\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// IngressClass `lb` for `controller` (the tests pass `lb_user::kube::DEFAULT_CONTROLLER`).
pub fn ingress_class(controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "lb"},
        "spec": {"controller": controller}
    })
}

/// Applies Service shop/`name` (port 80 → `port`) and its slice `name-1` with one ready
/// endpoint (pod `name-a`) on 127.0.0.`ip`.
pub fn service(api: &MockApi, name: &str, port: u16, ip: u8) {
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "shop", "name": format!("{name}-1"),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [format!("127.0.0.{ip}")], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "namespace": "shop", "name": format!("{name}-a")}}]
    }));
}

/// A loopback port that was free a moment ago (the backends bind it on several 127.0.0.X).
pub fn free_port() -> u16 {
    free_local_addr().port()
}

/// A backend on 127.0.0.`ip`:`port` answering with `x-backend: name`.
pub fn backend(ip: u8, port: u16, name: &str) -> Backend {
    let addr = SocketAddr::from(([127, 0, 0, ip], port));
    Backend::start(None, addr, name).expect("start backend")
}

/// `lb` started by [`start_lb`]: derefs to the [`Lb`]; keeps its kubeconfig until lb is gone.
pub struct KubeLb {
    lb: Lb<'static>,
    _kubeconfig: tempfile::TempDir,
}

impl Deref for KubeLb {
    type Target = Lb<'static>;

    fn deref(&self) -> &Lb<'static> {
        &self.lb
    }
}

/// `lb run --kube` against `api` with one HTTP listener on `listen` and no access log; returns
/// once lb is ready (it starts only after the first full list).
pub fn start_lb(api: &MockApi, listen: SocketAddr) -> KubeLb {
    let yaml = format!(
        "listeners: [{{name: http, address: \"{listen}\"}}]\naccess_log: {{format: off}}\n"
    );
    start_lb_with(api, &yaml)
}

/// `lb run --kube` against `api` with the config file `yaml`, admin on a free loopback port;
/// returns once lb is ready.
pub fn start_lb_with(api: &MockApi, yaml: &str) -> KubeLb {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), &api.url());
    let kc_arg = kc.to_string_lossy().to_string();
    let args = ["--kube", "--kubeconfig", kc_arg.as_str()];
    let lb = Lb::start(&lb_bin(), None, yaml, free_local_addr(), &args).expect("start lb");
    KubeLb {
        lb,
        _kubeconfig: dir,
    }
}

/// `n` GETs for `host` (paths `/0`, `/1`, ...) on one connection to `listen`, each asserted
/// 200; counts by the answering backend's name (`x-backend`).
pub fn tally(listen: SocketAddr, host: &str, n: usize) -> HashMap<String, usize> {
    let mut c = KeepAliveClient::connect(listen, Duration::from_secs(5)).expect("connect to lb");
    let mut out = HashMap::new();
    for i in 0..n {
        let r = c.get(host, &format!("/{i}")).expect("GET through lb");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        *out.entry(r.header("x-backend").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    out
}

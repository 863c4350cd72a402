//! The real `lb --kube` against the mock API server (real list/watch protocol) and real local
//! backends: an Ingress + Service + EndpointSlice become a served route; scaling the slice sends
//! traffic to the new endpoint and none to the terminating one; a broken Ingress is left out alone;
//! the API server going away changes nothing for traffic.

mod support;

use lb_tests::http::{Backend, KeepAliveClient};
use lb_tests::kubeapi::MockApi;
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use support::admin::{plain_log, wait_until};

const T: Duration = Duration::from_secs(10);
const HOST: &str = "shop.test";

fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: mock, cluster: {{server: \"{url}\"}}}}]\n\
         users: [{{name: none, user: {{}}}}]\n\
         contexts: [{{name: mock, context: {{cluster: mock, user: none}}}}]\ncurrent-context: mock\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn ingress(name: &str, path: &str, path_type: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"ingressClassName": "lb", "rules": [{"host": HOST, "http": {"paths": [{
            "path": path, "pathType": path_type,
            "backend": {"service": {"name": "web", "port": {"number": 80}}}
        }]}}]}
    })
}

/// The slice of Service web: (last octet of 127.0.0.X, pod, ready, terminating).
fn slice(port: u16, eps: &[(u8, &str, bool, bool)]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, pod, ready, terminating)| {
            json!({
                "addresses": [format!("127.0.0.{ip}")],
                "conditions": {"ready": ready, "serving": true, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "shop", "name": "web-x1",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// `n` requests on one connection; counts by backend name.
fn tally(listen: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut c = KeepAliveClient::connect(listen, Duration::from_secs(5)).unwrap();
    let mut out = HashMap::new();
    for i in 0..n {
        let r = c.get(HOST, &format!("/{i}")).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        *out.entry(r.header("x-backend").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    out
}

#[test]
fn ingress_from_the_api_server_is_served_and_follows_endpoint_changes() {
    // Three backends on one port, on 127.0.0.1-3 (all of 127/8 is loopback).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backends: Vec<Backend> = (1..=3)
        .map(|i| {
            Backend::start(
                None,
                SocketAddr::from(([127, 0, 0, i], port)),
                &format!("web-{i}"),
            )
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let api = MockApi::start().unwrap();
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "lb"},
        "spec": {"controller": lb_user::kube::DEFAULT_CONTROLLER}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}
    }));
    api.apply(slice(
        port,
        &[(1, "web-1", true, false), (2, "web-2", true, false)],
    ));
    api.apply(ingress("web", "/", "Prefix"));

    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &api.url());
    let listen = free_local_addr();
    let yaml = format!(
        "listeners: [{{name: http, address: \"{listen}\"}}]\naccess_log: {{format: off}}\n"
    );
    let kc_arg = kc.to_string_lossy().to_string();
    let args = ["--kube", "--kubeconfig", kc_arg.as_str()];
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), &args).unwrap();

    // Served as soon as lb is up: it starts only after the first full list.
    let m = tally(listen, 20);
    assert_eq!(
        (m.get("web-1"), m.get("web-2"), m.get("web-3")),
        (Some(&10), Some(&10), None),
        "{m:?}"
    );

    // Scale: web-3 joins, web-1 terminates (still serving: it drains, no new requests).
    api.apply(slice(
        port,
        &[
            (1, "web-1", false, true),
            (2, "web-2", true, false),
            (3, "web-3", true, false),
        ],
    ));
    let moved = wait_until(T, || {
        let m = tally(listen, 4);
        m.contains_key("web-3") && !m.contains_key("web-1")
    });
    assert!(moved, "web-3 never got traffic:\n{}", plain_log(&lb));
    let before = backends[0].requests();
    let m = tally(listen, 20);
    assert_eq!(
        (m.get("web-2"), m.get("web-3")),
        (Some(&10), Some(&10)),
        "{m:?}"
    );
    assert_eq!(
        backends[0].requests(),
        before,
        "the terminating endpoint got new requests"
    );

    // A broken Ingress (invalid regex) is left out alone, with a log line naming it.
    api.apply(ingress("broken", "/(", "ImplementationSpecific"));
    let logged = wait_until(T, || {
        let log = plain_log(&lb);
        log.contains("not served") && log.contains("broken") && log.contains("invalid regex")
    });
    assert!(logged, "no rejection logged:\n{}", plain_log(&lb));
    assert_eq!(tally(listen, 4).values().sum::<usize>(), 4);

    // The API server goes away: the last objects stay in force.
    let lists = api.lists();
    assert!(lists >= 5, "one list per kind, got {lists}");
    drop(api);
    std::thread::sleep(Duration::from_secs(2));
    let m = tally(listen, 20);
    assert_eq!(
        (m.get("web-2"), m.get("web-3")),
        (Some(&10), Some(&10)),
        "{m:?}"
    );
    assert!(lb.admin_get("/healthz").unwrap().status == 200);
}

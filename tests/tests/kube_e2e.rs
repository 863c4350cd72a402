//! The real `lb --kube` against the mock API server (real list/watch protocol) and real local
//! backends: an Ingress + Service + EndpointSlice become a served route; scaling the slice sends
//! traffic to the new endpoint and none to the terminating one; a broken Ingress is left out alone;
//! the API server going away changes nothing for traffic.

mod support;

use lb_tests::http::Backend;
use lb_tests::kubeapi::MockApi;
use lb_tests::kubetest::{backend, free_port, ingress_class, start_lb, tally, WAIT};
use lb_tests::lb::free_local_addr;
use serde_json::{json, Value};
use std::time::Duration;
use support::admin::{plain_log, wait_until};

const HOST: &str = "shop.test";

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

#[test]
fn ingress_from_the_api_server_is_served_and_follows_endpoint_changes() {
    // Three backends on one port, on 127.0.0.1-3 (all of 127/8 is loopback).
    let port = free_port();
    let backends: Vec<Backend> = (1..=3)
        .map(|i| backend(i, port, &format!("web-{i}")))
        .collect();
    let api = MockApi::start().unwrap();
    api.apply(ingress_class(lb_user::kube::DEFAULT_CONTROLLER));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}
    }));
    api.apply(slice(
        port,
        &[(1, "web-1", true, false), (2, "web-2", true, false)],
    ));
    api.apply(ingress("web", "/", "Prefix"));

    let listen = free_local_addr();
    let lb = start_lb(&api, listen);

    // Served as soon as lb is up: it starts only after the first full list.
    let m = tally(listen, HOST, 20);
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
    let moved = wait_until(WAIT, || {
        let m = tally(listen, HOST, 4);
        m.contains_key("web-3") && !m.contains_key("web-1")
    });
    assert!(moved, "web-3 never got traffic:\n{}", plain_log(&lb));
    let before = backends[0].requests();
    let m = tally(listen, HOST, 20);
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
    let logged = wait_until(WAIT, || {
        let log = plain_log(&lb);
        log.contains("not served") && log.contains("broken") && log.contains("invalid regex")
    });
    assert!(logged, "no rejection logged:\n{}", plain_log(&lb));
    assert_eq!(tally(listen, HOST, 4).values().sum::<usize>(), 4);

    // The API server goes away: the last objects stay in force.
    let lists = api.lists();
    assert!(lists >= 5, "one list per kind, got {lists}");
    drop(api);
    std::thread::sleep(Duration::from_secs(2));
    let m = tally(listen, HOST, 20);
    assert_eq!(
        (m.get("web-2"), m.get("web-3")),
        (Some(&10), Some(&10)),
        "{m:?}"
    );
    assert!(lb.admin_get("/healthz").unwrap().status == 200);
}

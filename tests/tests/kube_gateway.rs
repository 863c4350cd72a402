//! Gateway API end to end: the real `lb --kube` against the mock API server with real local
//! backends (an HTTPRoute split 99/1 by weight, a request header added, status conditions written
//! back), and the status-writer Lease: one of two lb processes writes, the other takes over.

mod support;

use lb_tests::kubeapi::MockApi;
use lb_tests::kubetest::{backend, free_port, service, start_lb, tally, WAIT};
use lb_tests::lb::{free_local_addr, Lb};
use lb_user::kube::lease::{Elector, LeaseConfig};
use lb_user::kube::watch::kube;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::admin::{plain_log, wait_until};

const HOST: &str = "shop.test";
const GW: &str = "gateway.networking.k8s.io/v1";

/// Our GatewayClass and Gateway infra/edge with one HTTP listener on `port`.
fn gateway(api: &MockApi, port: u16) {
    api.apply(json!({
        "apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "lb", "generation": 1},
        "spec": {"controllerName": lb_user::kube::DEFAULT_CONTROLLER}
    }));
    api.apply(json!({
        "apiVersion": GW, "kind": "Gateway",
        "metadata": {"namespace": "infra", "name": "edge", "generation": 1},
        "spec": {"gatewayClassName": "lb", "listeners": [{"name": "web", "port": port,
                 "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}
    }));
}

/// HTTPRoute shop/`name` on infra/edge for `host`: web 99, canary 1, header x-gateway: edge.
fn route(name: &str, host: &str, generation: i64) -> Value {
    json!({
        "apiVersion": GW, "kind": "HTTPRoute",
        "metadata": {"namespace": "shop", "name": name, "generation": generation},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": "infra"}],
            "hostnames": [host],
            "rules": [{
                "backendRefs": [{"name": "web", "port": 80, "weight": 99},
                                {"name": "canary", "port": 80, "weight": 1}],
                "filters": [{"type": "RequestHeaderModifier",
                             "requestHeaderModifier": {"set": [{"name": "x-gateway", "value": "edge"}]}}]
            }]
        }
    })
}

/// (type, status, reason) of the conditions at `v`.
fn conds(v: &Value) -> Vec<(String, String, String)> {
    let s = |c: &Value, k: &str| c[k].as_str().unwrap_or("").to_string();
    (v.as_array().into_iter().flatten())
        .map(|c| (s(c, "type"), s(c, "status"), s(c, "reason")))
        .collect()
}

fn has(v: &Value, t: &str, status: &str) -> bool {
    conds(v).iter().any(|c| c.0 == t && c.1 == status)
}

#[test]
fn httproute_weights_filters_and_status() {
    let port = free_port();
    let web = backend(1, port, "web");
    let _canary = backend(2, port, "canary");
    let api = MockApi::start().unwrap();
    let listen = free_local_addr();
    service(&api, "web", port, 1);
    service(&api, "canary", port, 2);
    gateway(&api, listen.port());
    api.apply(route("store", HOST, 1));
    let lb = start_lb(&api, listen);

    // Status: written by lb (the only Lease candidate) on all three kinds.
    let written = wait_until(Duration::from_secs(20), || {
        let gw = api
            .get(GW, "Gateway", Some("infra"), "edge")
            .unwrap_or_default();
        let rt = api
            .get(GW, "HTTPRoute", Some("shop"), "store")
            .unwrap_or_default();
        let gc = api.get(GW, "GatewayClass", None, "lb").unwrap_or_default();
        has(&gw["status"]["conditions"], "Programmed", "True")
            && has(
                &rt["status"]["parents"][0]["conditions"],
                "Accepted",
                "True",
            )
            && has(&gc["status"]["conditions"], "Accepted", "True")
    });
    assert!(
        written,
        "no status on the mock: {:#?}\n{}",
        api.status_writes(),
        plain_log(&lb)
    );
    let gw = api.get(GW, "Gateway", Some("infra"), "edge").unwrap();
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1, "{gw:#}");
    assert_eq!(
        gw["status"]["conditions"][0]["observedGeneration"], 1,
        "{gw:#}"
    );
    let rt = api.get(GW, "HTTPRoute", Some("shop"), "store").unwrap();
    let parent = &rt["status"]["parents"][0];
    assert_eq!(parent["controllerName"], lb_user::kube::DEFAULT_CONTROLLER);
    assert_eq!(parent["parentRef"]["name"], "edge");
    assert!(has(&parent["conditions"], "ResolvedRefs", "True"), "{rt:#}");
    let lease = api.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("default"),
        "lb-status-writer",
    );
    let holder = lease.as_ref().map(|l| l["spec"]["holderIdentity"].clone());
    let pid = lb.pid().unwrap();
    assert!(
        holder
            .as_ref()
            .and_then(|h| h.as_str())
            .is_some_and(|h| h.ends_with(&format!("-{pid}"))),
        "{lease:?}"
    );

    // Written once: a status that does not change is not written again.
    let writes = api.status_writes().len();
    assert!(writes >= 3, "{writes}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        api.status_writes().len(),
        writes,
        "status rewritten without a change"
    );

    // 99/1 by weight (smooth weighted round robin), and the header reaches the backend.
    let m = tally(listen, HOST, 200);
    let (w, c) = (
        m.get("web").copied().unwrap_or(0),
        m.get("canary").copied().unwrap_or(0),
    );
    assert!(w + c == 200 && (1..=6).contains(&c), "{m:?}");
    let headers = web.last_request_headers();
    let got = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-gateway"));
    assert_eq!(got.map(|(_, v)| v.as_str()), Some("edge"), "{headers:?}");

    // A route whose backend is missing gets ResolvedRefs=False on the mock; the others serve on.
    let mut broken = route("broken", "broken.test", 2);
    broken["spec"]["rules"][0]["backendRefs"] = json!([{"name": "ghost", "port": 80}]);
    api.apply(broken);
    let refused = wait_until(WAIT, || {
        let r = api
            .get(GW, "HTTPRoute", Some("shop"), "broken")
            .unwrap_or_default();
        conds(&r["status"]["parents"][0]["conditions"]).contains(&(
            "ResolvedRefs".into(),
            "False".into(),
            "BackendNotFound".into(),
        ))
    });
    assert!(
        refused,
        "{:#?}",
        api.get(GW, "HTTPRoute", Some("shop"), "broken")
    );
    assert_eq!(tally(listen, HOST, 4).values().sum::<usize>(), 4);
}

#[test]
fn one_of_two_lb_processes_writes_status_and_the_other_takes_over() {
    let port = free_port();
    let _web = backend(1, port, "web");
    let api = MockApi::start().unwrap();
    service(&api, "web", port, 1);
    service(&api, "canary", port, 1);
    // Same port on two loopback addresses: both lb processes serve the Gateway's listener, as
    // a DaemonSet's pods on different nodes do (Gateway listeners are matched by port).
    let l1 = free_local_addr();
    let l2 = SocketAddr::from(([127, 0, 0, 2], l1.port()));
    gateway(&api, l1.port());
    api.apply(route("store", HOST, 1));
    let a = start_lb(&api, l1);
    let b = start_lb(&api, l2);
    let holder = || {
        let l = api.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("default"),
            "lb-status-writer",
        );
        l.and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    let pid_of = |lb: &Lb| format!("-{}", lb.pid().unwrap());
    assert!(
        wait_until(WAIT, || holder().is_some()),
        "no Lease:\n{}",
        plain_log(&a)
    );
    assert!(
        wait_until(WAIT, || !api.status_writes().is_empty()),
        "no status written"
    );
    let first = holder().unwrap();
    let (leader, other) = if first.ends_with(&pid_of(&a)) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(first.ends_with(&pid_of(&leader)), "{first}");
    let said = "holding the status writer Lease";
    assert!(
        wait_until(WAIT, || plain_log(&leader).contains(said)),
        "{}",
        plain_log(&leader)
    );
    std::thread::sleep(Duration::from_secs(3)); // a few renew / retry rounds
    assert!(
        !plain_log(&other).contains(said),
        "both hold the Lease:\n{}",
        plain_log(&other)
    );
    assert_eq!(
        holder().as_deref(),
        Some(first.as_str()),
        "the Lease changed hands"
    );

    // The holder dies: the other takes over within the lease duration (15 s, plus its 2 s retry
    // and the time it needed to see the last renew), then writes status for a new route.
    let killed = Instant::now();
    drop(leader);
    let took = wait_until(Duration::from_secs(25), || {
        holder().is_some_and(|h| h.ends_with(&pid_of(&other)))
    });
    assert!(took, "no takeover:\n{}", plain_log(&other));
    let after = killed.elapsed();
    eprintln!("status writer Lease taken over {after:?} after the holder was killed");
    assert!(
        after <= Duration::from_secs(22),
        "took over after {after:?}"
    );
    api.apply(route("later", "later.test", 1));
    let written = wait_until(WAIT, || {
        let r = api
            .get(GW, "HTTPRoute", Some("shop"), "later")
            .unwrap_or_default();
        has(&r["status"]["parents"][0]["conditions"], "Accepted", "True")
    });
    assert!(
        written,
        "the new holder wrote no status:\n{}",
        plain_log(&other)
    );
}

#[test]
fn elector_conflicts_and_expiry_against_the_mock() {
    let api = MockApi::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = kube::Config::new(api.url().parse().unwrap());
        let client = kube::Client::try_from(cfg).unwrap();
        let lc = |id: &str| LeaseConfig {
            namespace: "lb".into(),
            name: "w".into(),
            identity: id.into(),
            duration: Duration::from_secs(1),
            renew: Duration::from_millis(200),
            retry: Duration::from_millis(100),
        };
        let (mut a, mut b) = (
            Elector::new(client.clone(), lc("a")),
            Elector::new(client, lc("b")),
        );
        assert!(a.round().await.unwrap(), "a creates the Lease");
        assert!(a.holding());
        assert!(!b.round().await.unwrap(), "b sees a's record");
        assert!(!b.round().await.unwrap(), "a's record is fresh");
        assert!(a.round().await.unwrap(), "a renews");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !b.round().await.unwrap(),
            "a renewed: the record changed, b starts counting again"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(b.round().await.unwrap(), "a stopped renewing: b takes over");
        assert!(!a.round().await.unwrap(), "a is no longer the holder");
        assert!(!a.holding() && b.holding());
    });
    let lease = api
        .get("coordination.k8s.io/v1", "Lease", Some("lb"), "w")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

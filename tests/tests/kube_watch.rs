//! The kube-rs reflectors (lb_user::kube::watch) against the mock API server (lb_tests::kubeapi):
//! first sync, changes into new Objects and routes, debounce, bookmarks, 410 re-list, deletes.

use lb_tests::kubeapi::MockApi;
use lb_tests::kubetest::{ingress_class, WAIT};
use lb_user::kube::watch::{self, kube, Watch};
use lb_user::kube::{to_config, Objects, Options};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch::Receiver;

const DEBOUNCE: Duration = Duration::from_millis(250);

fn start(mock: &MockApi, opts: &Options) -> anyhow::Result<Watch> {
    let client = kube::Client::try_from(kube::Config::new(mock.url().parse()?))?;
    Ok(watch::start(client, opts, DEBOUNCE))
}

/// Waits (≤ WAIT) until the latest Objects satisfy `ok`.
async fn wait_for(
    rx: &mut Receiver<Option<Arc<Objects>>>,
    what: &str,
    ok: impl Fn(&Objects) -> bool,
) -> Arc<Objects> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(o) = rx.borrow_and_update().clone() {
            if ok(&o) {
                return o;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("watch stopped while waiting for {what}"),
            Err(_) => panic!("no Objects with {what} within {WAIT:?}: {:?}", *rx.borrow()),
        }
    }
}

/// Waits (≤ WAIT) for a condition that is not on the channel.
async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names<K: kube::Resource>(v: &[std::sync::Arc<K>]) -> Vec<String> {
    v.iter()
        .map(|o| {
            let m = o.meta();
            let ns = m.namespace.clone().unwrap_or_default();
            format!("{ns}/{}", m.name.clone().unwrap_or_default())
        })
        .collect()
}

fn class() -> Value {
    ingress_class(lb_user::kube::DEFAULT_CONTROLLER)
}

fn ingress(ns: &str, name: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns,
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1"}]},
        "spec": {"ingressClassName": "lb", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

fn service(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice(ns: &str, ips: &[String]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-x1", "namespace": ns,
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps})
}

fn secret(ns: &str, name: &str, typ: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
        "type": typ, "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}})
}

/// Endpoint addresses of cluster `shop/web:80` after mapping.
fn endpoints(o: &Objects) -> Vec<String> {
    let m = to_config(o, &Options::default());
    m.clusters
        .iter()
        .filter(|c| c.name == "shop/web:80")
        .flat_map(|c| c.endpoints.iter().map(|e| e.address.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_apply_map_delete() -> anyhow::Result<()> {
    let mock = MockApi::start()?;
    mock.apply(class());
    mock.apply(secret("shop", "token", "Opaque"));
    mock.apply(secret("shop", "web-tls", "kubernetes.io/tls"));
    let w = start(&mock, &Options::default())?;
    let mut rx = w.objects();
    assert!(
        rx.borrow().is_none(),
        "no Objects before the first full list"
    );

    // Initial list → synced; no Secret yet: none is referenced by an Ingress of ours.
    let o = wait_for(&mut rx, "the initial list", |_| true).await;
    assert!(w.synced());
    assert_eq!(names(&o.ingress_classes), ["/lb"]);
    assert!(o.secrets.is_empty(), "unreferenced Secrets are left out");
    assert!(o.ingresses.is_empty() && o.services.is_empty());

    // Ingress + Service + EndpointSlice → a new Objects that maps to the route.
    // It names both Secrets: only the TLS one is watched (field selector type=kubernetes.io/tls).
    let mut web = ingress("shop", "web", "a.example.com");
    web["spec"]["tls"] = json!([{"hosts": ["a.example.com"], "secretName": "web-tls"},
                                {"hosts": ["a.example.com"], "secretName": "token"}]);
    mock.apply(web);
    mock.apply(service("shop"));
    mock.apply(slice("shop", &["10.1.0.5".into()]));
    let o = wait_for(&mut rx, "ingress, service and slice", |o| {
        !o.ingresses.is_empty() && !o.services.is_empty() && !o.endpoint_slices.is_empty()
    })
    .await;
    assert_eq!(
        names(&o.secrets),
        ["shop/web-tls"],
        "Opaque Secrets are not watched"
    );
    assert_eq!(
        o.ingresses[0].metadata.managed_fields, None,
        "managed fields stripped"
    );
    let m = to_config(&o, &Options::default());
    let rejected: Vec<&str> = m.rejected.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(
        rejected,
        ["spec.tls[1].secretName: Secret shop/token not found"]
    );
    assert_eq!(m.routes.len(), 1);
    assert_eq!(m.routes[0].name.as_deref(), Some("shop/web/rule-0/path-0"));
    assert_eq!(m.routes[0].hosts, ["a.example.com"]);
    assert_eq!(m.routes[0].cluster.as_deref(), Some("shop/web:80"));
    assert_eq!(endpoints(&o), ["10.1.0.5:8080"]);

    // Sorted by namespace/name whatever the arrival order.
    mock.apply(ingress("shop", "b", "b.example.com"));
    mock.apply(ingress("alpha", "z", "z.example.com"));
    let o = wait_for(&mut rx, "three ingresses", |o| o.ingresses.len() == 3).await;
    assert_eq!(names(&o.ingresses), ["alpha/z", "shop/b", "shop/web"]);

    // Delete → gone (and its route with it).
    mock.delete("networking.k8s.io/v1", "Ingress", Some("shop"), "web");
    mock.delete("v1", "Secret", Some("shop"), "web-tls");
    let o = wait_for(&mut rx, "the deletes", |o| {
        o.ingresses.len() == 2 && o.secrets.is_empty()
    })
    .await;
    assert_eq!(names(&o.ingresses), ["alpha/z", "shop/b"]);
    let m = to_config(&o, &Options::default());
    assert!(m
        .routes
        .iter()
        .all(|r| !r.hosts.contains(&"a.example.com".into())));

    // API server gone: the last Objects stay, still synced (the watchers retry with backoff).
    drop(mock);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = rx.borrow().clone().expect("objects kept");
    assert!(Arc::ptr_eq(&kept, &o), "an outage changed the Objects");
    assert!(w.synced());
    drop(w);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_coalesces_and_bookmarks_do_not_recompute() -> anyhow::Result<()> {
    let mock = MockApi::start()?;
    mock.apply(class());
    mock.apply(ingress("shop", "web", "a.example.com"));
    mock.apply(service("shop"));
    mock.apply(slice("shop", &["10.1.0.1".into()]));
    let w = start(&mock, &Options::default())?;
    let mut rx = w.objects();
    wait_for(&mut rx, "the initial list", |o| endpoints(o).len() == 1).await;
    let before = w.recomputes();

    // 20 applies within the debounce window → a few recomputes, the last state wins.
    for i in 1..=20 {
        let ips: Vec<String> = (1..=i).map(|n| format!("10.1.0.{n}")).collect();
        mock.apply(slice("shop", &ips));
    }
    let o = wait_for(&mut rx, "20 endpoints", |o| endpoints(o).len() == 20).await;
    assert_eq!(endpoints(&o)[19], "10.1.0.20:8080");
    tokio::time::sleep(DEBOUNCE * 3).await;
    let burst = w.recomputes() - before;
    eprintln!("20 applies → {burst} recompute(s)");
    assert!((1..=3).contains(&burst), "20 applies → {burst} recomputes");

    // Bookmarks move the resume point only: no recompute.
    let quiet = w.recomputes();
    let watches = mock.watches();
    for _ in 0..5 {
        mock.bookmark();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(DEBOUNCE * 4).await;
    assert_eq!(w.recomputes(), quiet, "bookmarks triggered a recompute");
    assert_eq!(mock.watches(), watches, "bookmarks restarted a watch");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_relists_and_keeps_state() -> anyhow::Result<()> {
    let mock = MockApi::start()?;
    mock.apply(class());
    mock.apply(ingress("shop", "web", "a.example.com"));
    mock.apply(ingress("other", "web", "o.example.com"));
    mock.apply(service("shop"));
    mock.apply(slice("shop", &["10.1.0.5".into()]));
    // Watched namespaces: one store per kind and namespace; "other" is never seen.
    let opts = Options {
        namespaces: vec!["shop".into(), "empty".into()],
        ..Options::default()
    };
    let w = start(&mock, &opts)?;
    let mut rx = w.objects();
    let first = wait_for(&mut rx, "the initial list", |o| !o.ingresses.is_empty()).await;
    assert_eq!(names(&first.ingresses), ["shop/web"]);
    assert_eq!(endpoints(&first), ["10.1.0.5:8080"]);

    // 410 Gone: every watch (1 IngressClass + 4 kinds x 2 namespaces) re-lists from scratch.
    let lists = mock.lists();
    mock.expire();
    wait_until("9 re-lists after expire", || mock.lists() >= lists + 9).await;
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert!(w.synced());
    let same = rx.borrow().clone().expect("objects kept");
    assert!(
        Arc::ptr_eq(&same, &first),
        "a re-list that changed nothing sends no new Objects"
    );

    // The resumed watches see later changes.
    mock.apply(slice("shop", &["10.1.0.5".into(), "10.1.0.6".into()]));
    mock.apply(ingress("other", "late", "l.example.com"));
    let o = wait_for(&mut rx, "the change after the re-list", |o| {
        endpoints(o).len() == 2
    })
    .await;
    assert_eq!(endpoints(&o), ["10.1.0.5:8080", "10.1.0.6:8080"]);
    assert_eq!(names(&o.ingresses), ["shop/web"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_gateway_crds_do_not_hold_back_the_first_sync() -> anyhow::Result<()> {
    let mock = MockApi::start()?;
    mock.hide_group("gateway.networking.k8s.io");
    mock.apply(class());
    let w = start(&mock, &Options::default())?;
    let mut rx = w.objects();
    // Without the Gateway API CRDs the Ingress world still syncs (a cluster without them must
    // not leave every node unready), and Gateway kinds are simply none.
    let o = wait_for(&mut rx, "the first sync without Gateway CRDs", |_| true).await;
    assert!(w.synced());
    assert_eq!(names(&o.ingress_classes), ["/lb"]);
    assert!(o.gateways.is_empty() && o.http_routes.is_empty());
    Ok(())
}

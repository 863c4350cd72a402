//! `lb --kube` against the mock API server with real local backends: Ingress annotations take
//! effect on real traffic (header edits, ssl-redirect 308, source allow-list 403, canary by header
//! and by weight, rate limit 429), and an Ingress with one bad annotation value loses only its
//! own routes, with a log line and one Kubernetes Event (posted again only when the problem comes
//! back).

mod support;

use lb_tests::http::{KeepAliveClient, Response};
use lb_tests::kubeapi::MockApi;
use lb_tests::kubetest::{backend, free_port, ingress_class, service, start_lb, WAIT};
use lb_tests::lb::free_local_addr;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::admin::{plain_log, wait_until};

/// An Ingress for `host` (path `/`, Prefix) to Service `svc` port 80.
fn ingress(name: &str, host: &str, svc: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "shop", "name": name, "annotations": annotations},
        "spec": {"ingressClassName": "lb", "rules": [{"host": host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": svc, "port": {"number": 80}}}
        }]}}]}
    })
}

fn get(listen: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut c = KeepAliveClient::connect(listen, Duration::from_secs(5)).unwrap();
    c.request("GET", host, path, headers, b"").unwrap()
}

/// Events the mock holds about Ingress `name`.
fn events_about(api: &MockApi, name: &str) -> Vec<Value> {
    let about = |e: &Value| e["regarding"]["kind"] == "Ingress" && e["regarding"]["name"] == name;
    api.events().into_iter().filter(about).collect()
}

#[test]
fn annotations_take_effect_and_a_bad_one_rejects_only_its_ingress() {
    let port = free_port();
    let web = backend(1, port, "web");
    let _next = backend(2, port, "next");
    let api = MockApi::start().unwrap();
    api.apply(ingress_class(lb_user::kube::DEFAULT_CONTROLLER));
    service(&api, "web", port, 1);
    service(&api, "web-next", port, 2);
    let p = lb_user::kube::ANNOTATION_PREFIX;
    let ann = |pairs: &[(&str, &str)]| -> Value {
        pairs
            .iter()
            .map(|(k, v)| (format!("{p}{k}"), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    api.apply(ingress(
        "shop",
        "shop.test",
        "web",
        ann(&[
            ("response-headers-set", "X-Served-By: lb"),
            ("request-headers-set", "{X-Env: test}"),
        ]),
    ));
    api.apply(ingress(
        "shop-canary",
        "shop.test",
        "web-next",
        ann(&[
            ("canary", "true"),
            ("canary-weight", "25"),
            ("canary-by-header", "X-Canary"),
        ]),
    ));
    api.apply(ingress(
        "legacy",
        "legacy.test",
        "web",
        ann(&[("ssl-redirect", "true")]),
    ));
    let private = ann(&[("allow-source-range", "10.0.0.0/8")]);
    api.apply(ingress("private", "private.test", "web", private));
    let throttled = ann(&[("rate-limit", "1"), ("rate-limit-burst", "2")]);
    api.apply(ingress("throttled", "throttled.test", "web", throttled));
    let zero = ann(&[("rate-limit", "0")]);
    api.apply(ingress("unthrottled", "zero.test", "web", zero));
    let bad = ann(&[("connect-timeout", "5 parsecs")]);
    api.apply(ingress("broken", "broken.test", "web", bad.clone()));

    let listen = free_local_addr();
    let lb = start_lb(&api, listen);
    let log = || plain_log(&lb);

    // Header edits both ways.
    let r = get(listen, "shop.test", "/a", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), log());
    assert_eq!(r.header("x-backend"), Some("web"));
    assert_eq!(r.header("x-served-by"), Some("lb"));
    let sent = web.last_request_headers();
    let env = sent.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-env"));
    assert_eq!(env.map(|(_, v)| v.as_str()), Some("test"), "{sent:?}");

    // Canary: the header always wins; without it exactly 25% by weight (5 of 20, one cycle of
    // 4 repeated: the split is smooth and exact).
    for _ in 0..4 {
        let r = get(listen, "shop.test", "/c", &[("X-Canary", "always")]);
        assert_eq!(r.header("x-backend"), Some("next"), "{}", r.text());
    }
    let mut c = KeepAliveClient::connect(listen, Duration::from_secs(5)).unwrap();
    let to_next = (0..20)
        .filter(|i| {
            let r = c.get("shop.test", &format!("/w{i}")).unwrap();
            assert_eq!(r.status, 200);
            r.header("x-backend") == Some("next")
        })
        .count();
    assert_eq!(to_next, 5, "canary-weight 25 of 20 requests");

    // ssl-redirect: 308 to https, path and query kept.
    let r = get(listen, "legacy.test", "/old?q=1", &[]);
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(r.header("location"), Some("https://legacy.test/old?q=1"));

    // allow-source-range: loopback is not in 10/8.
    assert_eq!(get(listen, "private.test", "/", &[]).status, 403);

    // rate-limit: burst 2 at 1/s per client, then 429 (all 5 served would take
    // 3 s of refills). rate-limit 0 is rejected alone.
    let mut c = KeepAliveClient::connect(listen, Duration::from_secs(5)).unwrap();
    let statuses: Vec<u16> = (0..5)
        .map(|_| c.get("throttled.test", "/").unwrap().status)
        .collect();
    assert_eq!(statuses[..2], [200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(get(listen, "zero.test", "/", &[]).status, 404);
    let logged = wait_until(WAIT, || {
        let l = log();
        l.contains("not served") && l.contains("lb.example.com/rate-limit")
    });
    assert!(logged, "no log line names rate-limit:\n{}", log());

    // The bad annotation: that Ingress is not served, named in the log and in one Event.
    assert_eq!(get(listen, "broken.test", "/", &[]).status, 404);
    let logged = wait_until(WAIT, || {
        let l = log();
        l.contains("not served") && l.contains("lb.example.com/connect-timeout")
    });
    assert!(logged, "no log line names the annotation:\n{}", log());
    assert!(wait_until(WAIT, || !events_about(&api, "broken").is_empty()));
    let ev = &events_about(&api, "broken")[0];
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev["metadata"]["namespace"], "shop");
    assert_eq!(
        (&ev["type"], &ev["reason"]),
        (&json!("Warning"), &json!("Rejected"))
    );
    assert_eq!(ev["regarding"]["apiVersion"], "networking.k8s.io/v1");
    assert!(ev["regarding"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert_eq!(ev["reportingController"], lb_user::kube::DEFAULT_CONTROLLER);
    let note = ev["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("lb.example.com/connect-timeout") && note.contains("5 parsecs"),
        "{note}"
    );
    assert_eq!(events_about(&api, "shop").len(), 0);

    // A recompute with the problem unchanged posts nothing new.
    api.apply(ingress("late", "late.test", "web", json!({})));
    assert!(wait_until(WAIT, || get(listen, "late.test", "/", &[])
        .status
        == 200));
    assert_eq!(events_about(&api, "broken").len(), 1, "posted again");
    assert_eq!(get(listen, "shop.test", "/", &[]).status, 200);

    // Fixed: served. Broken again: a second Event.
    api.apply(ingress("broken", "broken.test", "web", json!({})));
    assert!(wait_until(WAIT, || get(listen, "broken.test", "/", &[])
        .status
        == 200));
    api.apply(ingress("broken", "broken.test", "web", bad));
    assert!(wait_until(WAIT, || events_about(&api, "broken").len() == 2));
    assert_eq!(get(listen, "broken.test", "/", &[]).status, 404);
    assert_eq!(get(listen, "legacy.test", "/", &[]).status, 308);
}

#[test]
fn the_mock_keeps_events_posted_in_either_api_group() {
    let api = MockApi::start().unwrap();
    let addr: SocketAddr = api.url().trim_start_matches("http://").parse().unwrap();
    let mut c = KeepAliveClient::connect(addr, Duration::from_secs(5)).unwrap();
    let mut post = |path: &str, body: Value| {
        let json = [("content-type", "application/json")];
        let r = c.request("POST", "mock", path, &json, body.to_string().as_bytes());
        r.unwrap().status
    };
    let core = json!({"metadata": {"name": "web.1"}, "reason": "Rejected", "type": "Warning",
                      "involvedObject": {"kind": "Ingress", "name": "web"}});
    let new = json!({"metadata": {"name": "web.2"}, "reason": "Rejected", "type": "Warning",
                     "regarding": {"kind": "Ingress", "name": "web"}});
    assert_eq!(post("/api/v1/namespaces/shop/events", core.clone()), 201);
    assert_eq!(
        post("/apis/events.k8s.io/v1/namespaces/shop/events", new),
        201
    );
    assert_eq!(post("/api/v1/namespaces/shop/events", core), 409);
    let got: Vec<(String, String, String)> = api
        .events()
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&e["apiVersion"]),
                s(&e["metadata"]["namespace"]),
                s(&e["metadata"]["name"]),
            )
        })
        .collect();
    let want = [
        ("v1", "shop", "web.1"),
        ("events.k8s.io/v1", "shop", "web.2"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
}

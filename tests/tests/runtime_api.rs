//! The runtime API of the real `lb` binary: it refuses bad input with the right status, needs
//! the bearer token when configured, is loopback-only by default, and reloads drop overrides.

mod support;

use lb_tests::http::{self, Response};
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::netns::{Topology, TopologyOpts};
use lb_tests::{lb_bin, require_root};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::admin::{
    admin_request, api_put, ctl, endpoint, json_of, metric, put_endpoint, status_doc, wait_log,
    wait_until,
};

const T: Duration = Duration::from_secs(8);
/// Flags for every lb here: no file watcher (reloads only by SIGHUP), short shutdown.
const ARGS: &[&str] = &["--watch-secs", "0", "--grace-secs", "1"];

fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, ARGS)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The `error` message of a JSON error answer, after checking the status and the content type.
fn api_error(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    json_of(r)["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {}", r.text()))
        .to_string()
}

fn version(doc: &Value) -> f64 {
    doc["version"].as_f64().expect("numeric version")
}

/// Reloads with `yaml` and waits (bounded) until the proxy serves a newer snapshot and the
/// reload was counted as ok.
fn reload_applied(lb: &Lb, yaml: &str) {
    let before = version(&status_doc(lb));
    let ok_before = metric(lb, "lb_config_reloads_total", &[("result", "ok")]);
    lb.reload(yaml).unwrap();
    let applied = wait_until(Duration::from_secs(10), || {
        lb.metric("lb_config_reloads_total", &[("result", "ok")])
            .unwrap_or(0.0)
            > ok_before
            && lb
                .metric("lb_snapshot_applied_version", &[])
                .is_ok_and(|v| v > before)
    });
    assert!(applied, "reload not applied; log:\n{}", lb.log());
}

// ---------------------------------------------------------------------------------------------
// Runtime API tests share this config: cluster app with endpoints cloud (10) and onprem (10).

fn api_config(listen: SocketAddr, eps: [SocketAddr; 2], admin_section: &str) -> String {
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [app.test], cluster: app}}]
clusters:
  - name: app
    endpoints:
      - {{address: "{a}", name: cloud, weight: 10}}
      - {{address: "{b}", name: onprem, weight: 10}}
{admin_section}
"#,
        a = eps[0],
        b = eps[1],
    )
}

// 1. Bad input is refused with the right status and a JSON error; nothing changes.

#[test]
fn runtime_api_rejects_bad_input() {
    let eps = [free_local_addr(), free_local_addr()];
    let yaml = api_config(free_local_addr(), eps, "");
    let lb = start(&yaml);
    let a = lb.admin;
    let v0 = version(&status_doc(&lb));

    let e = api_error(&api_put(a, "app", "nope", br#"{"weight":5}"#), 404);
    assert!(e.contains("nope") && e.contains("endpoint"), "{e}");
    let e = api_error(&api_put(a, "ghost", "cloud", br#"{"weight":5}"#), 404);
    assert!(e.contains("ghost") && e.contains("cluster"), "{e}");
    // Bad bodies for app/cloud: 400 and what the error message must say.
    let bad: [(&[u8], &str); 4] = [
        (br#"{"weight":"300%"}"#, "out of range"),
        (br#"{"weight":257}"#, "out of range"),
        (b"{", "invalid JSON"),
        (br#"{"state":"sleepy"}"#, "sleepy"),
    ];
    for (body, want) in bad {
        let e = api_error(&api_put(a, "app", "cloud", body), 400);
        assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
    }
    let cloud = "/api/v1/clusters/app/endpoints/cloud";
    api_error(&admin_request(a, "GET", cloud, &[], b""), 405);
    api_error(&admin_request(a, "GET", "/api/v1/nope", &[], b""), 404);
    // A body over 64 KiB (valid JSON that would otherwise change the weight).
    let big = format!("{{\"weight\": 5{}}}", " ".repeat(70 * 1024));
    api_error(&api_put(a, "app", "cloud", big.as_bytes()), 413);

    // Nothing changed: no override, configured weights, same snapshot version.
    let doc = status_doc(&lb);
    assert_eq!(version(&doc), v0, "a refused command published a snapshot");
    for name in ["cloud", "onprem"] {
        let ep = endpoint(&doc, "app", name);
        assert!(ep["override"].is_null(), "{name}: {ep}");
        assert_eq!(ep["weight"].as_f64(), Some(10.0), "{name}: {ep}");
        assert_eq!(ep["state"], "up", "{name}: {ep}");
    }
    // And a good command still works afterwards (by address).
    let v = put_endpoint(a, "app", &eps[1].to_string(), json!({"weight": "50%"}));
    assert_eq!(v["endpoint"]["name"], "onprem", "{v}");
    assert_eq!(v["endpoint"]["weight"].as_f64(), Some(5.0), "{v}");
}

// 2. With admin.token_file the API needs the bearer token; /metrics and /healthz do not.

#[test]
fn runtime_api_token() {
    const TOKEN: &str = "s3cret-token-0123456789abcdef";
    let eps = [free_local_addr(), free_local_addr()];
    let listen = free_local_addr();
    let yaml = api_config(listen, eps, "");
    let lb = start(&yaml);
    let a = lb.admin;
    let token_file = lb.dir().join("token.txt");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    reload_applied(
        &lb,
        &api_config(listen, eps, "admin: {token_file: token.txt}"),
    );
    assert!(
        lb.log().contains("config reloaded"),
        "no reload logged:\n{}",
        lb.log()
    );

    let status = |headers: &[(&str, &str)]| admin_request(a, "GET", "/api/v1/status", headers, b"");
    let e = api_error(&status(&[]), 401);
    assert!(e.contains("token"), "{e}");
    let wrong = "Bearer wrong-token-0123456789abcdef";
    for bad in [wrong, TOKEN] {
        api_error(&status(&[("authorization", bad)]), 401);
    }
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let r = status(&auth);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(json_of(&r)["version"].as_f64().is_some());
    // A PUT without the token changes nothing.
    api_error(&api_put(a, "app", "cloud", br#"{"weight":3}"#), 401);
    let doc = json_of(&status(&auth));
    assert!(endpoint(&doc, "app", "cloud")["override"].is_null());

    // lb ctl with --token-file works; without it, it fails with the 401.
    let tf = token_file.to_string_lossy().to_string();
    let with_token = |args: &[&str]| {
        let mut all = vec!["--token-file", tf.as_str()];
        all.extend_from_slice(args);
        let o = ctl(a, &all);
        assert_eq!(o.code, Some(0), "{}", o.all());
        o.all()
    };
    let out = with_token(&["status"]);
    assert!(
        out.contains("cluster app") && out.contains("cloud"),
        "{out}"
    );
    let out = with_token(&["set-weight", "app", "cloud", "3"]);
    assert!(out.contains("app/cloud: state up, weight 3"), "{out}");
    for args in [&["status"][..], &["drain", "app", "cloud"]] {
        let out = ctl(a, args);
        assert_eq!(out.code, Some(1), "{}", out.all());
        assert!(out.all().contains("401"), "{}", out.all());
    }
    let doc = json_of(&status(&auth));
    let ep = endpoint(&doc, "app", "cloud");
    assert_eq!(ep["weight"].as_f64(), Some(3.0), "{ep}");
    assert_eq!(ep["state"], "up", "drain without token: {ep}");

    // Not under /api: no token needed.
    for path in ["/metrics", "/healthz", "/stats.json"] {
        let r = admin_request(a, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

// 3. The API answers loopback only by default; admin.allow opens it to other networks.

#[test]
fn runtime_api_loopback_only_by_default() {
    require_root();
    const ADMIN_PORT: u16 = 19_471;
    let topo = Topology::new(TopologyOpts { clients: 1 }).unwrap();
    let listen: SocketAddr = "127.0.0.1:18471".parse().unwrap();
    let eps: [SocketAddr; 2] = [
        "127.0.0.1:18472".parse().unwrap(),
        "127.0.0.1:18473".parse().unwrap(),
    ];
    let admin_addr: SocketAddr = SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT));
    let lb = Lb::start(
        &lb_bin(),
        Some(&topo.node),
        &api_config(listen, eps, ""),
        admin_addr,
        ARGS,
    )
    .unwrap();
    let node = SocketAddr::new(topo.node_addr_v4(0).into(), ADMIN_PORT);
    let from_client = |path: &str| {
        let path = path.to_string();
        topo.clients[0]
            .run(move || http::get(node, "admin", &path, T))
            .unwrap()
            .unwrap()
    };

    let r = from_client("/api/v1/status");
    let e = api_error(&r, 403);
    assert!(e.contains("10.77.1.2") && e.contains("admin.allow"), "{e}");
    assert_eq!(from_client("/metrics").status, 200);
    assert_eq!(from_client("/healthz").status, 200);
    // Loopback inside the node namespace is allowed.
    let v0 = version(&status_doc(&lb));

    let allow = "admin: {allow: [10.77.0.0/16, 127.0.0.0/8]}";
    reload_applied(&lb, &api_config(listen, eps, allow));
    let r = from_client("/api/v1/status");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(version(&json_of(&r)) > v0);
    assert_eq!(lb.admin_get("/api/v1/status").unwrap().status, 200);
}

// 4. A reload discards runtime overrides, unless admin.keep_runtime_overrides is set.

#[test]
fn overrides_discarded_or_kept_on_reload() {
    let eps = [free_local_addr(), free_local_addr()];
    let listen = free_local_addr();
    let yaml = api_config(listen, eps, "");
    let lb = start(&yaml);
    let set = |body: Value| put_endpoint(lb.admin, "app", "cloud", body);
    let ep = |name: &str| endpoint(&status_doc(&lb), "app", name).clone();
    let three = Duration::from_secs(3);

    let v = set(json!({"weight": 3}));
    assert_eq!(v["endpoint"]["weight"].as_f64(), Some(3.0), "{v}");
    let cloud = ep("cloud");
    assert_eq!(cloud["override"]["weight"].as_f64(), Some(3.0), "{cloud}");
    assert_eq!(cloud["configured_weight"].as_f64(), Some(10.0), "{cloud}");

    // Same config plus a comment: the override is gone.
    reload_applied(&lb, &format!("{yaml}# touched\n"));
    let cloud = ep("cloud");
    assert!(cloud["override"].is_null(), "override survived: {cloud}");
    assert_eq!(cloud["weight"].as_f64(), Some(10.0), "{cloud}");
    wait_log(&lb, "runtime_overrides_discarded=1", three);

    // With keep_runtime_overrides: the override survives a reload.
    let keep = api_config(listen, eps, "admin: {keep_runtime_overrides: true}");
    reload_applied(&lb, &keep);
    assert_eq!(status_doc(&lb)["keep_runtime_overrides"], true);
    set(json!({"weight": "40%"}));
    set(json!({"state": "drain"}));
    reload_applied(&lb, &format!("{keep}# touched\n"));
    let cloud = ep("cloud");
    assert_eq!(cloud["override"]["weight"], "40%", "{cloud}");
    assert_eq!(cloud["override"]["state"], "drain", "{cloud}");
    assert_eq!(cloud["weight"].as_f64(), Some(4.0), "{cloud}");
    assert_eq!(cloud["state"], "drain", "{cloud}");
    wait_log(&lb, "runtime_overrides_kept=1", three);
    assert!(ep("onprem")["override"].is_null());
}

//! The real `lb` process on loopback (no XDP): routing by host, weighted split, the statuses it
//! answers itself, hop-by-hop headers, reloads (valid and invalid) and a clean SIGTERM.

use lb_tests::http::{self, Backend, KeepAliveClient};
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

struct Setup {
    backends: Vec<Backend>,
    listen: SocketAddr,
    admin: SocketAddr,
}

fn backends(names: &[&str]) -> Vec<Backend> {
    names
        .iter()
        .map(|n| Backend::start(None, "127.0.0.1:0".parse().unwrap(), n).unwrap())
        .collect()
}

fn setup(names: &[&str]) -> Setup {
    Setup {
        backends: backends(names),
        listen: free_local_addr(),
        admin: free_local_addr(),
    }
}

/// web.test -> a,b,c weighted 3/2/1; api.test -> d; everything else -> 404.
fn config(s: &Setup, weights: [u16; 3]) -> String {
    let b = |i: usize| s.backends[i].addr();
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [web.test], cluster: web}}
  - {{hosts: [api.test], cluster: api}}
clusters:
  - name: web
    endpoints:
      - {{address: "{a}", weight: {wa}}}
      - {{address: "{b}", weight: {wb}}}
      - {{address: "{c}", weight: {wc}}}
  - name: api
    endpoints: [{{address: "{d}"}}]
"#,
        listen = s.listen,
        a = b(0),
        b = b(1),
        c = b(2),
        d = b(3),
        wa = weights[0],
        wb = weights[1],
        wc = weights[2],
    )
}

fn tally(client: &mut KeepAliveClient, host: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = client.get(host, "/").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        *counts
            .entry(r.header("x-backend").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    counts
}

#[test]
fn routes_by_host_and_splits_exactly_by_weight() {
    let s = setup(&["a", "b", "c", "d"]);
    let lb = Lb::start(&lb_bin(), None, &config(&s, [3, 2, 1]), s.admin, &[]).unwrap();
    let mut client = KeepAliveClient::connect(s.listen, T).unwrap();
    let web = tally(&mut client, "web.test", 60);
    assert_eq!((web["a"], web["b"], web["c"]), (30, 20, 10), "{web:?}");
    let api = tally(&mut client, "API.Test:8080", 5);
    assert_eq!(
        api.get("d"),
        Some(&5),
        "host match ignores case and port: {api:?}"
    );
    // The proxy's own counters agree with what the backends saw.
    let a = s.backends[0].addr().to_string();
    let counted = lb
        .metric(
            "lb_endpoint_requests_total",
            &[("cluster", "web"), ("endpoint", &a), ("class", "2xx")],
        )
        .unwrap();
    assert_eq!(counted, 30.0);
    assert_eq!(s.backends[0].requests(), 30);
}

#[test]
fn statuses_the_proxy_answers_itself() {
    // A backend that accepts and never answers (bounded: it lets go after 10 s).
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let hanger = std::thread::spawn(move || {
        hang.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && !stop2.load(Ordering::Relaxed) {
            if let Ok((c, _)) = hang.accept() {
                held.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let refused = free_local_addr();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [drained.test], cluster: drained}}
  - {{hosts: [refused.test], cluster: refused}}
  - {{hosts: [slow.test], cluster: slow}}
  - {{hosts: [empty.test], cluster: empty}}
clusters:
  - {{name: drained, endpoints: [{{address: "{refused}", weight: 0}}]}}
  - {{name: refused, connect_timeout: 1s, endpoints: [{{address: "{refused}"}}]}}
  - {{name: slow, response_timeout: 300ms, endpoints: [{{address: "{hang_addr}"}}]}}
  - {{name: empty}}
"#
    );
    let lb = Lb::start(&lb_bin(), None, &yaml, admin, &[]).unwrap();
    let get = |host: &str| http::get(listen, host, "/", T).unwrap().status;
    assert_eq!(get("unknown.test"), 404);
    assert_eq!(get("drained.test"), 503, "weight 0 only");
    assert_eq!(get("empty.test"), 503, "no endpoints");
    assert_eq!(get("refused.test"), 503, "connection refused");
    let started = Instant::now();
    assert_eq!(get("slow.test"), 504, "no response headers in time");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let raw = |req: &str| {
        String::from_utf8_lossy(&http::raw(listen, req.as_bytes(), T).unwrap()).to_string()
    };
    assert!(
        raw("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 400"),
        "missing Host"
    );
    assert!(
        raw("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n")
            .starts_with("HTTP/1.1 400"),
        "two Hosts"
    );
    assert!(
        raw("GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 400"),
        "bad Host"
    );
    assert!(
        raw("\x01\x02 garbage\r\n\r\n").starts_with("HTTP/1.1 400"),
        "garbage request line"
    );
    // Every outcome is counted under the right labels.
    let m = lb.metrics().unwrap();
    let sum = |name: &str, labels: &[(&str, &str)]| lb_tests::lb::metric_sum(&m, name, labels);
    let unrouted = sum("lb_http_unrouted_requests_total", &[]);
    assert_eq!(unrouted, 4.0, "404 + 3 bad Host:\n{m}");
    let code = |c: &str| sum("lb_http_responses_total", &[("code", c)]);
    assert_eq!((code("404"), code("400")), (1.0, 3.0), "{m}");
    let cluster_5xx = |c: &str| {
        sum(
            "lb_cluster_requests_total",
            &[("cluster", c), ("class", "5xx")],
        )
    };
    assert_eq!(
        cluster_5xx("drained"),
        1.0,
        "no endpoint: counted on the cluster"
    );
    let labels = [
        ("cluster", "refused"),
        ("endpoint", &*refused.to_string()),
        ("class", "5xx"),
    ];
    assert_eq!(sum("lb_endpoint_requests_total", &labels), 1.0);
    assert_eq!(cluster_5xx("refused"), 1.0);
    assert_eq!(cluster_5xx("slow"), 1.0);
    let upstream = |c: &str| {
        sum(
            "lb_cluster_errors_total",
            &[("cluster", c), ("source", "upstream")],
        )
    };
    assert_eq!(
        (upstream("drained"), upstream("refused"), upstream("slow")),
        (1.0, 1.0, 1.0)
    );
    stop.store(true, Ordering::Relaxed);
    hanger.join().unwrap();
}

#[test]
fn upstream_connections_are_pooled_and_reused() {
    let s = setup(&["a", "b", "c", "d"]);
    let _lb = Lb::start(&lb_bin(), None, &config(&s, [1, 0, 0]), s.admin, &[]).unwrap();
    // Sequential requests, each on a new client connection: the upstream side reuses one.
    for _ in 0..20 {
        assert_eq!(http::get(s.listen, "web.test", "/", T).unwrap().status, 200);
    }
    assert_eq!(s.backends[0].requests(), 20);
    assert_eq!(
        s.backends[0].connections(),
        1,
        "lb opened a connection per request"
    );
}

#[test]
fn hop_by_hop_headers_do_not_reach_the_backend() {
    let s = setup(&["a", "b", "c", "d"]);
    let _lb = Lb::start(&lb_bin(), None, &config(&s, [1, 0, 0]), s.admin, &[]).unwrap();
    let mut client = KeepAliveClient::connect(s.listen, T).unwrap();
    let r = client
        .request(
            "GET",
            "web.test",
            "/x?y=1",
            &[
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("X-Kept", "yes"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = s.backends[0].last_request_headers();
    let has = |name: &str| seen.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    assert!(!has("x-secret") && !has("keep-alive"), "{seen:?}");
    assert!(has("x-kept"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("host") && v == "web.test"),
        "{seen:?}"
    );
    assert!(s.backends[0]
        .last_request_line()
        .starts_with("GET /x?y=1 HTTP/1.1"));
}

#[test]
fn reload_applies_valid_configs_and_keeps_serving_on_invalid_ones() {
    let s = setup(&["a", "b", "c", "d"]);
    let lb = Lb::start(&lb_bin(), None, &config(&s, [1, 0, 0]), s.admin, &[]).unwrap();
    let mut client = KeepAliveClient::connect(s.listen, T).unwrap();
    assert_eq!(tally(&mut client, "web.test", 4).get("a"), Some(&4));

    // Valid: shift all weight to c, on the same keep-alive connection.
    lb.reload(&config(&s, [0, 0, 1])).unwrap();
    lb.wait_log("config reloaded", T).unwrap();
    wait_metric(
        &lb,
        "lb_snapshot_applied_version",
        &[("consumer", "proxy")],
        2.0,
    );
    assert_eq!(tally(&mut client, "web.test", 4).get("c"), Some(&4));

    // Invalid: rejected with the field path; the previous config keeps serving.
    lb.reload("clusters: [{name: web, endpoints: [{address: '127.0.0.1:1', weight: 999}]}]\n")
        .unwrap();
    lb.wait_log("config reload rejected", T).unwrap();
    assert!(
        lb.log().contains("clusters[0].endpoints[0].weight"),
        "{}",
        lb.log()
    );
    assert_eq!(tally(&mut client, "web.test", 4).get("c"), Some(&4));
    assert_eq!(
        lb.metric("lb_config_reloads_total", &[("result", "invalid")])
            .unwrap(),
        1.0
    );
    // Empty (a file caught mid-write): rejected too, never "serve nothing".
    lb.reload("").unwrap();
    wait_metric(
        &lb,
        "lb_config_reloads_total",
        &[("result", "invalid")],
        2.0,
    );
    assert!(lb.log().contains("is empty"), "{}", lb.log());
    assert_eq!(tally(&mut client, "web.test", 4).get("c"), Some(&4));
    assert_eq!(
        lb.metric("lb_config_reloads_total", &[("result", "ok")])
            .unwrap(),
        1.0
    );
    assert_eq!(
        lb.metric("lb_snapshot_applied_version", &[("consumer", "proxy")])
            .unwrap(),
        2.0
    );
}

#[test]
fn reload_adds_and_removes_listeners() {
    let s = setup(&["a", "b", "c", "d"]);
    let lb = Lb::start(&lb_bin(), None, &config(&s, [1, 1, 1]), s.admin, &[]).unwrap();
    let second = free_local_addr();
    let with_second = config(&s, [1, 1, 1]).replace(
        "listeners: [",
        &format!("listeners: [{{name: extra, address: \"{second}\"}}, "),
    );
    lb.reload(&with_second).unwrap();
    wait_metric(
        &lb,
        "lb_snapshot_applied_version",
        &[("consumer", "proxy")],
        2.0,
    );
    assert_eq!(http::get(second, "api.test", "/", T).unwrap().status, 200);
    lb.reload(&config(&s, [1, 1, 1])).unwrap();
    wait_metric(
        &lb,
        "lb_snapshot_applied_version",
        &[("consumer", "proxy")],
        3.0,
    );
    assert!(
        http::get(second, "api.test", "/", Duration::from_secs(1)).is_err(),
        "removed listener still accepts"
    );
    assert_eq!(http::get(s.listen, "api.test", "/", T).unwrap().status, 200);
}

#[test]
fn admin_endpoint_answers_only_what_it_serves() {
    let s = setup(&["a", "b", "c", "d"]);
    let lb = Lb::start(&lb_bin(), None, &config(&s, [1, 1, 1]), s.admin, &[]).unwrap();
    assert_eq!(lb.admin_get("/healthz").unwrap().text(), "ok\n");
    let metrics = lb.admin_get("/metrics").unwrap();
    assert!(
        metrics
            .text()
            .contains("# TYPE lb_cluster_requests counter"),
        "{}",
        metrics.text()
    );
    assert!(metrics.text().ends_with("# EOF\n"));
    assert_eq!(lb.admin_get("/nope").unwrap().status, 404);
    let post = http::raw(
        s.admin,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        T,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&post).starts_with("HTTP/1.1 405"));
}

#[test]
fn sigterm_exits_cleanly() {
    let s = setup(&["a", "b", "c", "d"]);
    let lb = Lb::start(&lb_bin(), None, &config(&s, [1, 1, 1]), s.admin, &[]).unwrap();
    assert_eq!(http::get(s.listen, "web.test", "/", T).unwrap().status, 200);
    let status = lb.stop(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status}");
    assert!(http::get(s.listen, "web.test", "/", Duration::from_secs(1)).is_err());
}

#[test]
fn invalid_config_at_startup_is_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lb.yaml");
    std::fs::write(&cfg, "listeners: [{name: h, address: nowhere}]\n").unwrap();
    let out = std::process::Command::new(lb_bin())
        .args(["run", "--admin", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("listeners[0].address"), "{text}");
}

fn wait_metric(lb: &Lb, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if lb.metric(name, labels).unwrap_or(0.0) == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{name}{labels:?} never reached {want}:\n{}",
        lb.metrics().unwrap_or_default()
    );
}

//! L7 workers on SO_REUSEPORT steered by the SK_REUSEPORT program (real `lb`, loopback, root):
//! flow hash spreads and counts exactly, least_loaded follows the loads, drain and ready.
//!
//! Which worker took a connection is read from `lb_worker_accepted_total{worker}`: the tests
//! open connections one at a time, so exactly one worker's counter moves per connection.

mod support;

use lb_tests::http::{self, Backend, KeepAliveClient};
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::{lb_bin, require_root};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::admin::{admin_request, ctl, json_of, wait_until};

const T: Duration = Duration::from_secs(5);
const WORKERS: usize = 4;

struct Setup {
    backend: Backend,
    listen: SocketAddr,
    admin: SocketAddr,
}

fn setup() -> Setup {
    require_root();
    Setup {
        backend: Backend::start(None, "127.0.0.1:0".parse().unwrap(), "a").unwrap(),
        listen: free_local_addr(),
        admin: free_local_addr(),
    }
}

fn config(s: &Setup, workers: usize, steering: &str) -> String {
    format!(
        r#"
listeners: [{{name: http, address: "{listen}", workers: {workers}, steering: {steering}}}]
routes: [{{hosts: ["*"], cluster: app}}]
clusters: [{{name: app, endpoints: [{{address: "{backend}"}}]}}]
access_log: {{format: off}}
"#,
        listen = s.listen,
        backend = s.backend.addr(),
    )
}

fn start(s: &Setup, steering: &str) -> Lb<'static> {
    let lb = Lb::start(&lb_bin(), None, &config(s, WORKERS, steering), s.admin, &[]).unwrap();
    let doc = workers_doc(&lb);
    assert_eq!(
        doc["listeners"][0]["program"], "attached",
        "the steering program must be attached: {doc}"
    );
    lb
}

fn workers_doc(lb: &Lb) -> Value {
    let r = lb.admin_get("/api/v1/workers").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    json_of(&r)
}

/// Per worker: accepted connections, then open connections, as /metrics shows them.
fn counts(lb: &Lb) -> ([u64; WORKERS], [u64; WORKERS]) {
    let text = lb.metrics().unwrap();
    let mut accepted = [0; WORKERS];
    let mut open = [0; WORKERS];
    for k in 0..WORKERS {
        let labels = [("listener", "http"), ("worker", &*k.to_string())];
        accepted[k] = lb_tests::lb::metric_sum(&text, "lb_worker_accepted_total", &labels) as u64;
        open[k] = lb_tests::lb::metric_sum(&text, "lb_worker_connections", &labels) as u64;
    }
    (accepted, open)
}

/// Opens a keep-alive connection, gets one 200 on it, and returns it with the worker that
/// accepted it (the only counter that moved).
fn connect(s: &Setup, lb: &Lb) -> (KeepAliveClient, usize) {
    let (before, _) = counts(lb);
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    let r = c.get("app.test", "/").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (after, _) = counts(lb);
    let moved: Vec<usize> = (0..WORKERS).filter(|&k| after[k] != before[k]).collect();
    assert_eq!(
        moved.len(),
        1,
        "one connection, one worker: {before:?} -> {after:?}"
    );
    assert_eq!(after[moved[0]], before[moved[0]] + 1);
    (c, moved[0])
}

/// `n` connections, one request each (`connection: close`); returns accepted per worker.
fn burst(s: &Setup, lb: &Lb, n: usize) -> [u64; WORKERS] {
    let (before, _) = counts(lb);
    for i in 0..n {
        let r = http::get(s.listen, "app.test", "/", T).unwrap();
        assert_eq!(r.status, 200, "connection {i}: {}", r.text());
    }
    let (after, _) = counts(lb);
    std::array::from_fn(|k| after[k] - before[k])
}

fn wait_open(lb: &Lb, want: [u64; WORKERS]) {
    let mut seen = [0; WORKERS];
    let ok = wait_until(T, || {
        seen = counts(lb).1;
        seen == want
    });
    assert!(
        ok,
        "open connections per worker: want {want:?}, have {seen:?}"
    );
}

fn put_worker(admin: SocketAddr, k: &str, body: Value) -> (u16, Value) {
    let json = [("content-type", "application/json")];
    let path = format!("/api/v1/workers/{k}");
    let r = admin_request(admin, "PUT", &path, &json, body.to_string().as_bytes());
    (r.status, json_of(&r))
}

#[test]
fn flow_hash_spreads_every_connection_and_counts_add_up() {
    let s = setup();
    let lb = start(&s, "flow_hash");
    let listener_before = lb.metric("lb_listener_connections_total", &[]).unwrap();
    let got = burst(&s, &lb, 400);
    assert_eq!(
        got.iter().sum::<u64>(),
        400,
        "per-worker counts add up: {got:?}"
    );
    // Uniform over 4 workers: 100 each expected, below 40 is ~7 standard deviations away.
    assert!(
        got.iter().all(|&n| n >= 40),
        "every worker gets a share: {got:?}"
    );
    let listener = lb.metric("lb_listener_connections_total", &[]).unwrap() - listener_before;
    assert_eq!(listener, 400.0, "listener and worker counters agree");
    let doc = workers_doc(&lb);
    let api: u64 = doc["listeners"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(api, 400, "{doc}");
    wait_open(&lb, [0; WORKERS]);
}

#[test]
fn least_loaded_sends_each_new_connection_to_a_least_loaded_worker() {
    let s = setup();
    let lb = start(&s, "least_loaded");
    let mut model = [0u64; WORKERS];
    let mut held: Vec<(KeepAliveClient, usize)> = Vec::new();
    // Open 3, close 1 (from the most loaded worker), 10 times: loads become uneven, and every
    // new connection must land on a worker whose load is the minimum at that moment.
    for round in 0..10 {
        for _ in 0..3 {
            wait_open(&lb, model);
            let (c, k) = connect(&s, &lb);
            let min = *model.iter().min().unwrap();
            assert_eq!(
                model[k], min,
                "round {round}: worker {k} took a connection with loads {model:?}"
            );
            model[k] += 1;
            held.push((c, k));
        }
        let busiest = (0..WORKERS).max_by_key(|&k| (model[k], k)).unwrap();
        let i = held.iter().position(|(_, k)| *k == busiest).unwrap();
        drop(held.remove(i));
        model[busiest] -= 1;
    }
    wait_open(&lb, model);
    // The held connections are all still served.
    for (c, k) in &mut held {
        let r = c.get("app.test", "/").unwrap();
        assert_eq!(r.status, 200, "connection on worker {k}");
    }
    drop(held);
    wait_open(&lb, [0; WORKERS]);
}

#[test]
fn drained_worker_gets_no_new_connections_while_its_open_one_finishes() {
    let s = setup();
    let lb = start(&s, "flow_hash");
    // A keep-alive connection on worker 2 (each try lands there with probability 1/4).
    let mut on2 = None;
    for _ in 0..64 {
        let (c, k) = connect(&s, &lb);
        if k == 2 {
            on2 = Some(c);
            break;
        }
    }
    let mut on2 = on2.expect("no connection reached worker 2 in 64 tries");
    wait_open(&lb, [0, 0, 1, 0]);

    let out = ctl(s.admin, &["drain-worker", "2"]);
    assert!(out.ok(), "{}", out.all());
    assert!(
        out.stdout.contains("worker 2: drain on http"),
        "{}",
        out.all()
    );
    let doc = workers_doc(&lb);
    let w2 = &doc["listeners"][0]["workers"][2];
    assert_eq!(
        (w2["state"].as_str(), w2["connections"].as_u64()),
        (Some("drain"), Some(1))
    );

    let mut total = [0u64; WORKERS];
    for round in 0..10 {
        let got = burst(&s, &lb, 20);
        total.iter_mut().zip(got).for_each(|(t, g)| *t += g);
        let r = on2.get("app.test", "/").unwrap();
        assert_eq!(
            r.status, 200,
            "round {round}: the drained worker's connection is served"
        );
    }
    assert_eq!(
        total[2], 0,
        "drained worker 2 took new connections: {total:?}"
    );
    assert_eq!(total.iter().sum::<u64>(), 200, "{total:?}");
    assert!(
        total.iter().enumerate().all(|(k, &n)| k == 2 || n > 0),
        "{total:?}"
    );

    // It finishes: the client closes, the worker has nothing open.
    drop(on2);
    wait_open(&lb, [0; WORKERS]);

    // Ready again (through the API this time): it gets new connections.
    let (status, v) = put_worker(s.admin, "2", json!({"state": "ready"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "ready");
    let got = burst(&s, &lb, 200);
    assert!(got[2] > 0, "worker 2 is ready again: {got:?}");
    assert_eq!(got.iter().sum::<u64>(), 200);

    // Nothing selectable: the program passes and the kernel picks (no connection refused).
    for k in 0..WORKERS {
        let (status, v) = put_worker(s.admin, &k.to_string(), json!({"state": "drain"}));
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(burst(&s, &lb, 40).iter().sum::<u64>(), 40);
}

#[test]
fn worker_api_refuses_what_it_cannot_do() {
    let s = setup();
    let lb = start(&s, "flow_hash");
    let (status, v) = put_worker(s.admin, "4", json!({"state": "drain"}));
    assert_eq!(status, 404, "{v}");
    let (status, v) = put_worker(s.admin, "1", json!({"state": "maint"}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = put_worker(s.admin, "x", json!({"state": "drain"}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = put_worker(s.admin, "1", json!({"state": "drain", "listener": "nope"}));
    assert_eq!(status, 404, "{v}");
    let out = ctl(s.admin, &["workers"]);
    assert!(
        out.ok() && out.stdout.contains("listener http"),
        "{}",
        out.all()
    );
    // Nothing changed by the refused requests.
    let doc = workers_doc(&lb);
    let states: Vec<&str> = doc["listeners"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ready"; WORKERS]);
}

#[test]
fn reloads_keep_worker_connections_and_drains_and_resize_the_group() {
    let s = setup();
    let lb = start(&s, "flow_hash");
    let (mut held, k) = connect(&s, &lb);
    let (status, v) = put_worker(s.admin, "3", json!({"state": "drain"}));
    assert_eq!(status, 200, "{v}");
    // Same workers, new steering and a new backend: applied in place, the drain is kept and
    // the held connection is served through the new table.
    let other = Backend::start(None, "127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let moved = config(&s, WORKERS, "least_loaded")
        .replace(&s.backend.addr().to_string(), &other.addr().to_string());
    lb.reload(&moved).unwrap();
    let ok = wait_until(T, || {
        held.get("app.test", "/").unwrap().header("x-backend") == Some("b")
    });
    assert!(
        ok,
        "the connection on worker {k} is served by the new config"
    );
    let doc = workers_doc(&lb);
    assert_eq!(doc["listeners"][0]["steering"], "least_loaded", "{doc}");
    assert_eq!(doc["listeners"][0]["workers"][3]["state"], "drain", "{doc}");
    assert_eq!(burst(&s, &lb, 40)[3], 0, "the drain survives the reload");

    // Two workers: the group is bound again; the held connection keeps its worker.
    lb.reload(&moved.replace("workers: 4", "workers: 2"))
        .unwrap();
    let ok = wait_until(T, || {
        workers_doc(&lb)["listeners"][0]["workers"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    });
    assert!(ok, "{}", workers_doc(&lb));
    let r = held.get("app.test", "/").unwrap();
    assert_eq!(
        r.status, 200,
        "a connection accepted before the rebind is served"
    );
    let got = burst(&s, &lb, 40);
    assert_eq!(got[..2].iter().sum::<u64>(), 40, "{got:?}");
}

#[test]
fn bad_worker_counts_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.yaml");
    let yaml = "listeners: [{name: http, address: \"127.0.0.1:1\", workers: 0}]\n";
    std::fs::write(&path, yaml).unwrap();
    let out = support::admin::run_lb(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.ok(), "{}", out.all());
    assert!(out.stderr.contains("listeners[0].workers"), "{}", out.all());
    std::fs::write(&path, yaml.replace("workers: 0", "steering: random")).unwrap();
    let out = support::admin::run_lb(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        out.stderr.contains("listeners[0].steering"),
        "{}",
        out.all()
    );
}

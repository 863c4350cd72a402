//! Upstream timeouts as HAProxy answers them: refused 503, silent 504, the request timeout
//! across retries, connect timeout to a full backlog, idle pooled connections not reused.

use crate::{get, origin, start};
use lb_tests::lb::free_local_addr;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn refused_endpoint_is_503_and_silent_endpoint_is_504() {
    let o = origin("o");
    let refused = free_local_addr();
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [refused.test], cluster: refused}}
  - {{hosts: [slow.test], cluster: slow}}
clusters:
  - {{name: refused, endpoints: [{{address: "{refused}"}}]}}
  - {{name: slow, response_timeout: 300ms, endpoints: [{{address: "{o}"}}]}}
"#,
        o = o.addr()
    ));
    let r = get(listen, "refused.test", "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains(&format!("cannot connect to {refused}")),
        "{}",
        r.text()
    );
    let started = Instant::now();
    let r = get(listen, "slow.test", "/hang");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("sent no response headers within 300ms"),
        "{}",
        r.text()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(o.requests(), 1, "the hanging request reached the origin");
    // A normal request on the same cluster still works.
    assert_eq!(get(listen, "slow.test", "/fine").status, 200);
    assert_eq!(
        lb.metric(
            "lb_cluster_requests_total",
            &[("cluster", "slow"), ("class", "5xx")]
        )
        .unwrap(),
        1.0
    );
}

#[test]
fn request_timeout_bounds_the_whole_request_across_retries() {
    let o = origin("o");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [whole.test], cluster: whole}}
  - {{hosts: [retried.test], cluster: retried}}
clusters:
  - name: whole
    response_timeout: 10s
    request_timeout: 300ms
    endpoints: [{{address: "{o}"}}]
  - name: retried
    response_timeout: 400ms
    request_timeout: 1s
    retries: {{attempts: 10, conditions: ["504"], budget_min: 20}}
    endpoints: [{{address: "{o}"}}]
"#,
        o = o.addr()
    ));
    // request_timeout shorter than response_timeout: it decides.
    let started = Instant::now();
    let r = get(listen, "whole.test", "/hang");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("request not answered within 300ms"),
        "{}",
        r.text()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(o.requests(), 1);

    // Retries on 504: 11 attempts of 400 ms would take 4.4 s; the 1 s budget stops them.
    let started = Instant::now();
    let r = get(listen, "retried.test", "/hang");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("request not answered within 1s"),
        "{}",
        r.text()
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let attempts = o.requests() - 1;
    assert!(
        (2..=4).contains(&attempts),
        "expected 2-4 attempts (retried, then cut by request_timeout), origin saw {attempts}"
    );
}

#[test]
fn connect_timeout_to_a_full_backlog_is_503() {
    // A listener with backlog 0 whose accept queue is full: the kernel drops further SYNs,
    // so a connect neither succeeds nor is refused — a loopback-safe blackhole.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = sock.listen(0).unwrap();
    let addr = blackhole.local_addr().unwrap();
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the backlog-0 listener never filled up");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [bh.test], cluster: bh}}]
clusters:
  - {{name: bh, connect_timeout: 300ms, endpoints: [{{address: "{addr}"}}]}}
"#
    ));
    let started = Instant::now();
    let r = get(listen, "bh.test", "/");
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("connect timed out after 300ms"),
        "{}",
        r.text()
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    drop(fillers);
}

#[test]
fn pooled_connections_idle_past_idle_timeout_are_not_reused() {
    let short = origin("short");
    let long = origin("long");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [short.test], cluster: short}}
  - {{hosts: [long.test], cluster: long}}
clusters:
  - {{name: short, idle_timeout: 200ms, endpoints: [{{address: "{s}"}}]}}
  - {{name: long, endpoints: [{{address: "{l}"}}]}}
"#,
        s = short.addr(),
        l = long.addr()
    ));
    for _ in 0..5 {
        assert_eq!(get(listen, "short.test", "/").status, 200);
        assert_eq!(get(listen, "long.test", "/").status, 200);
    }
    assert_eq!(short.connections(), 1, "back-to-back requests reuse one");
    assert_eq!(long.connections(), 1, "back-to-back requests reuse one");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(get(listen, "short.test", "/").status, 200);
    assert_eq!(get(listen, "long.test", "/").status, 200);
    assert_eq!(
        short.connections(),
        2,
        "a connection idle 500 ms > idle_timeout 200ms was reused"
    );
    assert_eq!(long.connections(), 1, "default idle_timeout (30s) keeps it");
    assert_eq!((short.requests(), long.requests()), (6, 6));
}

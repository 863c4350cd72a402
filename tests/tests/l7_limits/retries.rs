//! Retries: connect failures redispatched to the other endpoint, 503 retried for idempotent
//! methods (POST opt-in) against a fixed-status backend, and an empty retry budget.

use crate::{get, origin, start, T};
use lb_tests::http::{KeepAliveClient, Response};
use lb_tests::lb::free_local_addr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

fn post(addr: SocketAddr, host: &str, path: &str, body: &[u8]) -> Response {
    let mut c = KeepAliveClient::connect(addr, T).unwrap();
    c.request("POST", host, path, &[("connection", "close")], body)
        .unwrap()
}

/// A backend answering every request with one fixed status (`Connection: close`); counts the
/// requests it read completely. Lives at most 60 s.
struct Fixed {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fixed {
    fn start(status: u16) -> Fixed {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (requests.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while !halt.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((s, _)) => {
                        let count = count.clone();
                        thread::spawn(move || Fixed::serve(s, status, &count));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fixed {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(mut s: TcpStream, status: u16, count: &AtomicU64) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_write_timeout(Some(T));
        let deadline = Instant::now() + T;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || got.len() > 65536 {
                return;
            }
            let _ = s.set_read_timeout(Some(left));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let cl = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding:");
        loop {
            let body = &got[head_end..];
            let done = match (cl, chunked) {
                (_, true) => body.ends_with(b"0\r\n\r\n"),
                (Some(n), false) => body.len() >= n,
                (None, false) => true,
            };
            if done {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let _ = s.set_read_timeout(Some(left));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
        let resp = format!(
            "HTTP/1.1 {status} Fixed\r\ncontent-length: 6\r\nx-backend: fixed\r\nconnection: close\r\n\r\nfixed\n"
        );
        let _ = s.write_all(resp.as_bytes());
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn connect_failures_are_redispatched_to_the_other_endpoint() {
    let good = origin("good");
    let refused = free_local_addr();
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [r.test], cluster: redispatch}}]
clusters:
  - name: redispatch
    retries: {{attempts: 2}}
    endpoints: [{{address: "{refused}"}}, {{address: "{g}"}}]
"#,
        g = good.addr()
    ));
    for i in 0..10 {
        let r = get(listen, "r.test", &format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-backend"), Some("good"));
    }
    assert_eq!(good.requests(), 10);
    let retries = lb
        .metric("lb_cluster_retries_total", &[("cluster", "redispatch")])
        .unwrap();
    assert!(retries >= 1.0, "lb_cluster_retries_total = {retries}");
}

#[test]
fn retry_on_503_for_idempotent_methods_and_opt_in_for_post() {
    let bad = Fixed::start(503);
    let good = origin("good");
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [safe.test], cluster: safe}}
  - {{hosts: [any.test], cluster: any}}
clusters:
  - name: safe
    retries: {{attempts: 2, conditions: ["503"]}}
    endpoints: [{{address: "{b}"}}, {{address: "{g}"}}]
  - name: any
    retries: {{attempts: 2, conditions: ["503"], non_idempotent: true}}
    endpoints: [{{address: "{b}"}}, {{address: "{g}"}}]
"#,
        b = bad.addr,
        g = good.addr()
    ));
    // GET: a 503 from `bad` is retried on `good`.
    for i in 0..6 {
        let r = get(listen, "safe.test", &format!("/get/{i}"));
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert_eq!(r.header("x-backend"), Some("good"));
    }
    let bad_gets = bad.requests();
    assert!(
        bad_gets >= 1,
        "round robin never sent a GET to the 503 endpoint"
    );
    let retried = lb
        .metric("lb_cluster_retries_total", &[("cluster", "safe")])
        .unwrap();
    assert_eq!(retried, bad_gets as f64, "one retry per 503");

    // POST without non_idempotent: the 503 goes back to the client.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = post(listen, "safe.test", &format!("/post/{i}"), b"payload");
        statuses.push((r.status, r.header("x-backend").unwrap_or("").to_string()));
    }
    let rejected = statuses.iter().filter(|(s, _)| *s == 503).count();
    assert!(rejected >= 1, "no POST hit the 503 endpoint: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(s, b)| (*s == 503 && b == "fixed") || (*s == 200 && b == "good")),
        "{statuses:?}"
    );
    assert_eq!(bad.requests() - bad_gets, rejected as u64, "POST retried");
    assert_eq!(
        lb.metric("lb_cluster_retries_total", &[("cluster", "safe")])
            .unwrap(),
        retried,
        "a POST was retried"
    );

    // POST with non_idempotent: true is retried, with its body.
    let before = bad.requests();
    for i in 0..6 {
        let r = post(listen, "any.test", &format!("/post/{i}"), b"payload");
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        let last = good.last().unwrap();
        assert_eq!((last.method.as_str(), last.body_len), ("POST", 7));
    }
    assert!(bad.requests() > before, "no POST went to the 503 endpoint");
    assert!(
        lb.metric("lb_cluster_retries_total", &[("cluster", "any")])
            .unwrap()
            >= 1.0
    );
}

#[test]
fn an_empty_retry_budget_allows_no_retries() {
    let good = origin("good");
    let refused = free_local_addr();
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [nb.test], cluster: nobudget}}]
clusters:
  - name: nobudget
    retries: {{attempts: 2, budget_percent: 0, budget_min: 0}}
    endpoints: [{{address: "{refused}"}}, {{address: "{g}"}}]
"#,
        g = good.addr()
    ));
    let statuses: Vec<u16> = (0..8)
        .map(|i| get(listen, "nb.test", &format!("/{i}")).status)
        .collect();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        failed >= 1,
        "no request was sent to the refusing endpoint: {statuses:?}"
    );
    assert_eq!(failed + good.requests() as usize, 8, "{statuses:?}");
    assert_eq!(
        lb.metric("lb_cluster_retries_total", &[("cluster", "nobudget")])
            .unwrap(),
        0.0
    );
}

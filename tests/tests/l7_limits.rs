//! The real `lb` process on loopback: upstream timeouts and retries as HAProxy answers them,
//! the per-endpoint queue, listener connection/rate/size limits, PROXY protocol in and out,
//! a request-smuggling battery, and 1000 reloads under load without a failed request.

mod support;

use lb_tests::http::{self, Backend, KeepAliveClient, Response};
use lb_tests::lb::{free_local_addr, metric_sum, Lb};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::origin::{Origin, OriginOptions};

const T: Duration = Duration::from_secs(5);

/// `lb run` with file watching off (reloads only by SIGHUP).
fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, &["--watch-secs", "0"])
}

fn origin(name: &str) -> Origin {
    Origin::plain(name).unwrap()
}

/// The status of a raw HTTP/1.x response (None when nothing or not HTTP came back).
fn status_of(bytes: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(bytes.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    http::raw(addr, bytes, timeout).unwrap()
}

/// Reads until EOF, reset or `timeout`, whichever comes first.
fn read_until_close(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while out.len() < (1 << 20) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(100))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    out
}

fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    http::get(addr, host, path, T).unwrap()
}

fn post(addr: SocketAddr, host: &str, path: &str, body: &[u8]) -> Response {
    let mut c = KeepAliveClient::connect(addr, T).unwrap();
    c.request("POST", host, path, &[("connection", "close")], body)
        .unwrap()
}

/// Polls `cond` every 10 ms up to `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
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

// ---------------------------------------------------------------------------------------------
// 1. Timeouts

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

// ---------------------------------------------------------------------------------------------
// 2. Retries

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

// ---------------------------------------------------------------------------------------------
// 3. Queue

fn timed_get(
    addr: SocketAddr,
    host: &'static str,
    path: &'static str,
) -> JoinHandle<(Response, Instant)> {
    thread::spawn(move || {
        let r = http::get(addr, host, path, Duration::from_secs(15)).unwrap();
        (r, Instant::now())
    })
}

#[test]
fn queue_full_and_queue_timeout_are_503_and_a_slot_is_handed_over() {
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
  - name: short
    max_connections_per_endpoint: 1
    queue: {{size: 1, timeout: 1s}}
    endpoints: [{{address: "{s}"}}]
  - name: long
    max_connections_per_endpoint: 1
    queue: {{size: 1, timeout: 10s}}
    endpoints: [{{address: "{l}"}}]
"#,
        s = short.addr(),
        l = long.addr()
    ));
    // A holds the only slot for 3 s; B waits in the queue (1 s); C finds the queue full.
    let a = timed_get(listen, "short.test", "/delay/3000");
    wait_until("A at the origin", T, || short.requests() == 1);
    let b = timed_get(listen, "short.test", "/delay/10");
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let c = get(listen, "short.test", "/delay/10");
    let c_took = started.elapsed();
    let (b, _) = b.join().unwrap();
    let (a, _) = a.join().unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let mut got = [(b.status, b.text()), (c.status, c.text())];
    got.sort_by_key(|(_, t)| t.contains("is full"));
    assert!(
        got[0].0 == 503 && got[0].1.contains("waited 1s in the queue"),
        "expected one expired queue slot: {got:?}"
    );
    assert!(
        got[1].0 == 503 && got[1].1.contains("is full"),
        "expected one full-queue refusal: {got:?}"
    );
    assert!(
        c.text().contains("is full"),
        "C (sent while B waited) should be refused at once: {}",
        c.text()
    );
    assert!(c_took < Duration::from_millis(900), "C took {c_took:?}");
    assert_eq!(short.requests(), 1, "B or C reached the origin");

    // With a long queue timeout the waiting request gets the slot when A finishes.
    let a = timed_get(listen, "long.test", "/delay/1500");
    wait_until("A at the origin", T, || long.requests() == 1);
    let b = timed_get(listen, "long.test", "/delay/200");
    let (b, b_done) = b.join().unwrap();
    let (a, a_done) = a.join().unwrap();
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} / {}",
        a.text(),
        b.text()
    );
    assert!(
        b_done > a_done,
        "B (200 ms) finished before A (1500 ms): it was not queued behind A's slot"
    );
    assert_eq!(long.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// 4-6. Listener limits

#[test]
fn listener_max_connections_holds_the_second_client_until_the_first_leaves() {
    let o = origin("o");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}", max_connections: 1}}]
routes: [{{hosts: [mc.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let mut first = KeepAliveClient::connect(listen, T).unwrap();
    assert_eq!(first.get("mc.test", "/first").unwrap().status, 200);
    // The first connection stays open and idle.
    let mut second = TcpStream::connect_timeout(&listen, T).unwrap();
    second
        .write_all(b"GET /second HTTP/1.1\r\nHost: mc.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let early = read_until_close(&mut second, Duration::from_millis(500));
    assert!(
        early.is_empty(),
        "second client served while the first was open: {}",
        text(&early)
    );
    assert_eq!(o.requests(), 1);
    drop(first);
    let late = read_until_close(&mut second, T);
    assert_eq!(status_of(&late), Some(200), "{}", text(&late));
    assert_eq!(o.last().unwrap().uri, "/second");
}

#[test]
fn rate_limit_per_client_ip_answers_429_with_retry_after() {
    let o = origin("o");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}", rate_limit: {{requests_per_second: 5, burst: 5}}}}]
routes: [{{hosts: [rl.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    let mut burst = |n: usize| {
        let started = Instant::now();
        let mut statuses = Vec::new();
        for _ in 0..n {
            let r = c.get("rl.test", "/").unwrap();
            if r.status == 429 {
                assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
            }
            statuses.push(r.status);
        }
        // Tokens that may have been refilled while the burst ran (5/s).
        let refilled = (started.elapsed().as_millis() / 200) as usize;
        (statuses, refilled)
    };
    let (statuses, refilled) = burst(20);
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + limited, 20, "{statuses:?}");
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        (5..=5 + refilled).contains(&ok),
        "burst 5 (+{refilled} refilled): {statuses:?}"
    );
    assert_eq!(o.requests(), ok as u64, "a 429 reached the backend");
    thread::sleep(Duration::from_millis(1200));
    let (statuses, refilled) = burst(10);
    let ok2 = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    assert!((5..=5 + refilled).contains(&ok2), "{statuses:?}");
    assert_eq!(o.requests(), (ok + ok2) as u64);
}

/// Without a configured count the listener's default (100, hyper's own) holds: 101 header
/// lines are refused with 431 before the backend sees anything. (The control stays at 94: the
/// test origin has the same limit and lb adds six forwarding and tracing headers.)
#[test]
fn default_header_count_limit_is_100() {
    let o = origin("o");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [lim.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let req = |n: usize| {
        // Host and Connection are two of the n lines.
        let extra: String = (0..n - 2).map(|i| format!("X-H{i}: v\r\n")).collect();
        let r = format!("GET /x HTTP/1.1\r\nHost: lim.test\r\nConnection: close\r\n{extra}\r\n");
        raw(listen, r.as_bytes(), T)
    };
    let ok = req(94);
    assert_eq!(status_of(&ok), Some(200), "94 headers: {}", text(&ok));
    let before = o.requests();
    let many = req(101);
    assert_eq!(status_of(&many), Some(431), "101 headers: {}", text(&many));
    assert_eq!(
        o.requests(),
        before,
        "an over-limit request reached the backend"
    );
}

#[test]
fn header_and_body_limits_answer_431_and_413() {
    let o = origin("o");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners:
  - name: http
    address: "{listen}"
    limits: {{max_header_bytes: 8192, max_headers: 10, max_body_bytes: 1000}}
routes: [{{hosts: [lim.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let req = |extra: &str, body: &[u8]| {
        let mut r =
            format!("POST /echo HTTP/1.1\r\nHost: lim.test\r\nConnection: close\r\n{extra}\r\n")
                .into_bytes();
        r.extend_from_slice(body);
        raw(listen, &r, T)
    };
    // Controls within the limits.
    let ok = req(&format!("X-Big: {}\r\n", "a".repeat(4096)), b"");
    assert_eq!(status_of(&ok), Some(200), "{}", text(&ok));
    let seven: String = (0..7).map(|i| format!("X-H{i}: v\r\n")).collect();
    let ok = req(&seven, b"");
    assert_eq!(status_of(&ok), Some(200), "10 headers: {}", text(&ok));
    let ok = req("Content-Length: 500\r\n", &[b'x'; 500]);
    assert_eq!(status_of(&ok), Some(200), "{}", text(&ok));
    assert_eq!(o.last().unwrap().body_len, 500);
    let before = o.requests();

    let big = req(&format!("X-Big: {}\r\n", "a".repeat(20 * 1024)), b"");
    assert_eq!(status_of(&big), Some(431), "20 KiB header: {}", text(&big));
    let twenty: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = req(&twenty, b"");
    assert_eq!(status_of(&many), Some(431), "20 headers: {}", text(&many));
    let large = req("Content-Length: 5000\r\n", &[b'x'; 5000]);
    assert_eq!(status_of(&large), Some(413), "CL 5000: {}", text(&large));
    assert_eq!(
        o.requests(),
        before,
        "an over-limit request reached the backend"
    );

    let mut chunks = Vec::new();
    for _ in 0..3 {
        chunks.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
        chunks.extend_from_slice(&[b'y'; 600]);
        chunks.extend_from_slice(b"\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    let out = req("Transfer-Encoding: chunked\r\n", &chunks);
    let status = status_of(&out);
    assert!(
        status == Some(413) || status.is_none(),
        "chunked 1800 bytes over a 1000 limit: {}",
        text(&out)
    );
    let seen = o.seen();
    assert!(
        seen.iter().all(|s| s.body_len <= 1000),
        "the backend got a body over the limit: {:?}",
        seen.iter().map(|s| s.body_len).collect::<Vec<_>>()
    );
    // Still serving.
    let ok = req("Content-Length: 3\r\n", b"abc");
    assert_eq!(status_of(&ok), Some(200), "{}", text(&ok));
}

// ---------------------------------------------------------------------------------------------
// 7-8. PROXY protocol

#[test]
fn proxy_protocol_accepted_from_trusted_peers_only() {
    let o = origin("o");
    let (pp, plain) = (free_local_addr(), free_local_addr());
    let _lb = start(&format!(
        r#"
listeners:
  - {{name: pp, address: "{pp}", proxy_protocol: {{trusted: [127.0.0.1]}}}}
  - {{name: untrusted, address: "{plain}", proxy_protocol: {{trusted: [10.0.0.0/8]}}}}
routes: [{{hosts: [pp.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let xff = || {
        let last = o.last().unwrap();
        let v = last
            .headers
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_string());
        (last.uri, v)
    };
    // v1 from a trusted peer: the header's source is the client.
    let mut v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n".to_vec();
    v1.extend(request("/v1"));
    let out = raw(pp, &v1, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    assert_eq!(xff(), ("/v1".into(), Some("203.0.113.7".into())));
    // v2.
    let mut v2 = lb_user::proxy_protocol::encode_v2(
        "203.0.113.9:6666".parse().unwrap(),
        "10.0.0.1:80".parse().unwrap(),
    );
    v2.extend(request("/v2"));
    let out = raw(pp, &v2, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    assert_eq!(xff(), ("/v2".into(), Some("203.0.113.9".into())));
    // No header from a peer that must send one: closed, no HTTP answer, nothing forwarded.
    let before = o.requests();
    let out = raw(pp, &request("/garbage"), T);
    assert!(
        out.is_empty(),
        "answered a connection without PROXY header: {}",
        text(&out)
    );
    assert_eq!(o.requests(), before);
    let out = raw(pp, b"\x00\x01garbage\r\n\r\n", T);
    assert!(out.is_empty(), "{}", text(&out));
    // ...and the next good connection is served.
    let out = raw(pp, &v1, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));

    // Untrusted peer (we are 127.0.0.1, trusted is 10/8): a PROXY header is a bad request.
    let before = o.requests();
    let mut spoof = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n".to_vec();
    spoof.extend(request("/spoofed"));
    let out = raw(plain, &spoof, T);
    assert_eq!(status_of(&out), Some(400), "{}", text(&out));
    assert_eq!(o.requests(), before, "the spoofed request was forwarded");
    let out = raw(plain, &request("/plain"), T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    assert_eq!(xff(), ("/plain".into(), Some("127.0.0.1".into())));
}

#[test]
fn send_proxy_v1_and_v2_carry_the_client_address() {
    let o = Origin::start(OriginOptions {
        name: "pp".into(),
        proxy_protocol: true,
        ..Default::default()
    })
    .unwrap();
    let (listen, pp_listen) = (free_local_addr(), free_local_addr());
    let _lb = start(&format!(
        r#"
listeners:
  - {{name: http, address: "{listen}"}}
  - {{name: pp, address: "{pp_listen}", proxy_protocol: {{trusted: [127.0.0.1]}}}}
routes:
  - {{hosts: [v1.test], cluster: v1}}
  - {{hosts: [v2.test], cluster: v2}}
clusters:
  - {{name: v1, send_proxy: v1, endpoints: [{{address: "{o}"}}]}}
  - {{name: v2, send_proxy: v2, endpoints: [{{address: "{o}"}}]}}
"#,
        o = o.addr()
    ));
    for host in ["v1.test", "v2.test", "v1.test", "v2.test"] {
        let mut s = TcpStream::connect_timeout(&listen, T).unwrap();
        let me = s.local_addr().unwrap();
        s.write_all(
            format!("GET /{host} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let out = read_until_close(&mut s, T);
        assert_eq!(status_of(&out), Some(200), "{host}: {}", text(&out));
        let last = o.last().unwrap();
        assert_eq!(last.uri, format!("/{host}"));
        assert_eq!(
            last.proxy_source,
            Some(me),
            "{host}: PROXY source is not this client"
        );
    }
    assert_eq!(o.connections(), 4, "PROXY connections must not be shared");
    // Chained: the client address from an incoming PROXY header goes out in ours.
    let mut req = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n".to_vec();
    req.extend_from_slice(b"GET /chained HTTP/1.1\r\nHost: v2.test\r\nConnection: close\r\n\r\n");
    let out = raw(pp_listen, &req, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    let last = o.last().unwrap();
    assert_eq!(last.uri, "/chained");
    assert_eq!(last.proxy_source, Some("203.0.113.7:5555".parse().unwrap()));
}

// ---------------------------------------------------------------------------------------------
// 9. Request smuggling: each is a 400, and the backend never sees a second (smuggled) request.

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: s.test\r\n\r\n";

/// Sends `req` on one connection; asserts one 400 and at most `reach` backend requests (0 when
/// the head itself is bad; 1 when only the body is, as the head may be forwarded first).
fn smuggling_case(req: &[u8], reach: u64) {
    let o = origin("s");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [s.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let ok = get(listen, "s.test", "/control");
    assert_eq!(ok.status, 200);
    let before = o.requests();
    let out = raw(listen, req, Duration::from_secs(2));
    let reached = o.requests() - before;
    let uris: Vec<String> = o.seen().into_iter().map(|s| s.uri).collect();
    let responses = text(&out).matches("HTTP/1.1 ").count();
    let report = format!(
        "status {:?}, {responses} response(s), backend got {reached} request(s) {uris:?}; response:\n{}",
        status_of(&out),
        text(&out)
    );
    assert!(
        !uris.iter().any(|u| u.contains("smuggled")),
        "SMUGGLED: {report}"
    );
    assert_eq!(status_of(&out), Some(400), "{report}");
    assert_eq!(responses, 1, "{report}");
    assert!(reached <= reach, "{report}");
}

fn bytes(parts: &[&str]) -> Vec<u8> {
    parts.concat().into_bytes()
}

#[test]
fn smuggling_cl_te() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\n",
            &format!("Content-Length: {}\r\n", body.len()),
            "Transfer-Encoding: chunked\r\n\r\n",
            &body,
        ]),
        0,
    );
}

#[test]
fn smuggling_te_cl() {
    let size = format!("{:x}", SMUGGLED.len());
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n",
            &format!("Content-Length: {}\r\n\r\n", size.len() + 2),
            &size,
            "\r\n",
            SMUGGLED,
            "\r\n0\r\n\r\n",
        ]),
        0,
    );
}

#[test]
fn smuggling_two_differing_content_lengths() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_content_length_list() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5, 6\r\n\r\nhello!",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_obs_fold() {
    smuggling_case(
        &bytes(&[
            "GET / HTTP/1.1\r\nHost: s.test\r\nX-Folded: a\r\n b\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_obs_fold_transfer_encoding() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            "0\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

fn chunk_case(size_line: &str) {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            size_line,
            "hello\r\n0\r\n\r\n",
            SMUGGLED,
        ]),
        1,
    );
}

#[test]
fn smuggling_chunk_size_zz() {
    chunk_case("zz\r\n");
}

#[test]
fn smuggling_chunk_size_negative() {
    chunk_case("-1\r\n");
}

#[test]
fn smuggling_chunk_size_0x() {
    chunk_case("0x5\r\n");
}

#[test]
fn smuggling_chunk_size_bare_lf() {
    chunk_case("5\n");
}

#[test]
fn smuggling_bare_lf_request_line_and_headers() {
    smuggling_case(
        &bytes(&["GET / HTTP/1.1\nHost: s.test\nX-A: b\n\n", SMUGGLED]),
        0,
    );
}

#[test]
fn smuggling_bare_lf_header_line() {
    smuggling_case(
        &bytes(&["GET / HTTP/1.1\r\nHost: s.test\nX-A: b\r\n\r\n", SMUGGLED]),
        0,
    );
}

#[test]
fn smuggling_space_before_colon_host() {
    smuggling_case(
        &bytes(&["GET / HTTP/1.1\r\nHost : s.test\r\n\r\n", SMUGGLED]),
        0,
    );
}

#[test]
fn smuggling_space_before_colon_content_length() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length : 5\r\n\r\nhello",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_transfer_encoding_chunked_identity() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_transfer_encoding_on_http10() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.0\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Reloads under load

/// Metrics over one keep-alive admin connection (reconnects if it drops).
struct Admin {
    addr: SocketAddr,
    client: Option<KeepAliveClient>,
}

impl Admin {
    fn metric(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        for _ in 0..3 {
            if self.client.is_none() {
                self.client = KeepAliveClient::connect(self.addr, T).ok();
            }
            if let Some(c) = self.client.as_mut() {
                match c.get("admin", "/metrics") {
                    Ok(r) if r.status == 200 => return metric_sum(&r.text(), name, labels),
                    _ => self.client = None,
                }
            }
        }
        panic!("admin endpoint {} not answering", self.addr);
    }
}

#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl LoadStats {
    fn record(&self, what: &str, r: anyhow::Result<Response>) {
        match r {
            Ok(r) if r.status == 200 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut e) = self.errors.lock() {
                    if e.len() < 20 {
                        e.push(match other {
                            Ok(r) => format!("{what}: {} {}", r.status, r.text()),
                            Err(err) => format!("{what}: {err:#}"),
                        });
                    }
                }
            }
        }
    }
}

#[test]
fn thousand_reloads_under_load_fail_no_request() {
    const RELOADS: usize = 1000;
    let a = Backend::start(None, "127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let b = Backend::start(None, "127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let listen = free_local_addr();
    let config = |i: usize| {
        let (wa, wb) = if i.is_multiple_of(2) { (1, 2) } else { (2, 1) };
        let extra = if (i / 100) % 2 == 1 {
            "\n  - {hosts: [extra.test], cluster: web}"
        } else {
            ""
        };
        format!(
            r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [web.test], cluster: web}}{extra}
clusters:
  - name: web
    endpoints:
      - {{address: "{a}", weight: {wa}}}
      - {{address: "{b}", weight: {wb}}}
"#,
            a = a.addr(),
            b = b.addr()
        )
    };
    let lb = start(&config(0));
    let mut admin = Admin {
        addr: lb.admin,
        client: None,
    };
    assert_eq!(
        admin.metric("lb_snapshot_applied_version", &[("consumer", "proxy")]),
        1.0
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let load = {
        let (stop, stats) = (stop.clone(), stats.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut ka: Option<KeepAliveClient> = None;
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if i.is_multiple_of(2) {
                    let r = match ka.as_mut() {
                        Some(c) => c.get("web.test", "/ka"),
                        None => KeepAliveClient::connect(listen, T).and_then(|mut c| {
                            let r = c.get("web.test", "/ka");
                            ka = Some(c);
                            r
                        }),
                    };
                    stats.record("keep-alive", r);
                    if i.is_multiple_of(500) {
                        ka = None;
                    }
                } else {
                    stats.record("new connection", http::get(listen, "web.test", "/new", T));
                }
            }
        })
    };

    let started = Instant::now();
    let budget = Duration::from_secs(50);
    let mut applied = 1.0;
    for i in 1..=RELOADS {
        if started.elapsed() > budget {
            break;
        }
        lb.reload(&config(i)).unwrap();
        let want = (i + 1) as f64;
        let deadline = Instant::now() + T;
        loop {
            applied = admin.metric("lb_snapshot_applied_version", &[("consumer", "proxy")]);
            if applied >= want || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(applied, want, "reload {i} not applied within {T:?}");
        if i == 100 || i == 200 {
            let status = get(listen, "extra.test", "/").status;
            let want = if i == 100 { 200 } else { 404 };
            assert_eq!(status, want, "route added/removed by reload {i}");
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (
        stats.ok.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
    );
    let errors = stats.errors.lock().unwrap().clone();
    assert_eq!(
        applied,
        (RELOADS + 1) as f64,
        "only {applied} versions applied in {took:?}"
    );
    // The reload counter is bumped after the snapshot is published, so it may trail the
    // applied version by a moment.
    let mut reloads = 0.0;
    wait_until(
        "lb_config_reloads_total{result=ok} to reach 1000",
        T,
        || {
            reloads = admin.metric("lb_config_reloads_total", &[("result", "ok")]);
            reloads >= RELOADS as f64
        },
    );
    assert_eq!(reloads, RELOADS as f64);
    assert_eq!(
        admin.metric("lb_config_reloads_total", &[("result", "invalid")]),
        0.0
    );
    assert_eq!(
        failed,
        0,
        "{failed} failed requests of {}: {errors:#?}",
        ok + failed
    );
    assert!(
        ok >= 300,
        "only {ok} requests completed during the reloads ({took:?})"
    );
    // The last config (weights a:1 b:2) is the one serving.
    let before = (a.requests(), b.requests());
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    for _ in 0..30 {
        assert_eq!(c.get("web.test", "/after").unwrap().status, 200);
    }
    let (da, db) = (a.requests() - before.0, b.requests() - before.1);
    assert!(
        (8..=12).contains(&da) && (18..=22).contains(&db),
        "weights 1:2 after the last reload, got a={da} b={db}"
    );
    eprintln!("{RELOADS} reloads in {took:?} with {ok} requests served, 0 failed");
}

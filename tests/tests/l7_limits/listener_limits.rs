//! Listener limits: max connections holding a second client, per-client-IP rate limit (429
//! with Retry-After), the default 100-header limit, header and body limits (431, 413).

use crate::{get, origin, raw, read_until_close, start, status_of, text, T};
use lb_tests::http::KeepAliveClient;
use lb_tests::lb::free_local_addr;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

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

/// Deferred accept (on by default): a client that connects and sends nothing is not handed to
/// the workers before the kernel's SYN-ACK retransmission (1 s), so a 100 ms header timeout
/// cannot close it sooner; `defer_accept: false`, applied by a reload, lets it close at once.
#[test]
fn deferred_accept_holds_silent_clients_until_a_reload_turns_it_off() {
    let o = origin("o");
    let listen = free_local_addr();
    let yaml = |defer: bool| {
        format!(
            r#"
listeners: [{{name: http, address: "{listen}", defer_accept: {defer}, limits: {{header_timeout: 100ms}}}}]
routes: [{{hosts: [da.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
            o = o.addr()
        )
    };
    let lb = start(&yaml(true));
    let mut silent = TcpStream::connect_timeout(&listen, T).unwrap();
    assert!(
        !closed_within(&mut silent, Duration::from_millis(800)),
        "a client that sent nothing was accepted (and timed out) before the kernel's 1 s"
    );
    drop(silent);
    lb.reload(&yaml(false)).unwrap();
    lb.wait_log("config reloaded", T).unwrap();
    // The accept loop applies the change from its next connection on.
    assert_eq!(get(listen, "da.test", "/").status, 200);
    let mut silent = TcpStream::connect_timeout(&listen, T).unwrap();
    // Well before the 1 s a deferred connection would still be held.
    assert!(
        closed_within(&mut silent, Duration::from_millis(700)),
        "a silent client was not cut off by the header timeout with defer_accept off"
    );
}

/// Whether the peer closes (EOF or reset; a 408 before it is fine) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match std::io::Read::read(s, &mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

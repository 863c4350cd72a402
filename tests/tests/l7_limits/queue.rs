//! The per-endpoint queue: a full queue and a queue timeout answer 503, and a freed slot is
//! handed over to a waiting request.

use crate::{get, origin, start, wait_until, T};
use lb_tests::http::{self, Response};
use lb_tests::lb::free_local_addr;
use std::net::SocketAddr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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

//! lb's own HTTP/1.1 server loop end to end: pipelined GET and HEAD, a chunked response, HTTP/1.0
//! keep-alive and close, and a connection that moves to hyper for a request body and keeps going.

mod support;

use lb_tests::http::{self, KeepAliveClient};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::origin::Origin;

const T: Duration = Duration::from_secs(5);

fn start(origin: SocketAddr) -> (lb_tests::lb::Lb<'static>, SocketAddr) {
    let listen = lb_tests::lb::free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: o}}]
clusters: [{{name: o, endpoints: [{{address: "{origin}"}}]}}]
"#
    );
    (support::start_lb(&yaml, &["--watch-secs", "0"]), listen)
}

#[test]
fn pipelined_requests_then_a_body_on_the_same_connection() {
    let origin = Origin::plain("o").unwrap();
    let (_lb, listen) = start(origin.addr());
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    // Three requests in one write: answered in order, each complete.
    c.send_raw(
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /b HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /big/100000 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let a = c.response("GET").unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, "o\n"), "{a:?}");
    assert!(a.header("date").is_some(), "{a:?}");
    let b = c.response("HEAD").unwrap();
    assert_eq!(b.status, 200, "{b:?}");
    assert!(b.body.is_empty());
    let big = c.response("GET").unwrap();
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 100_000);
    assert_eq!(big.header("transfer-encoding"), Some("chunked"), "{big:?}");
    let seen = origin.seen();
    let first = seen.iter().find(|s| s.uri == "/a").expect("origin saw /a");
    assert_eq!(first.headers["x-forwarded-for"], "127.0.0.1");
    assert!(first.headers.contains_key("x-request-id"));
    // A body: the rest of the connection is hyper's, and it keeps working.
    let echo = c.request("POST", "t", "/echo", &[], b"hello").unwrap();
    assert_eq!((echo.status, echo.text().as_str()), (200, "hello"));
    let after = c.get("t", "/after").unwrap();
    assert_eq!(after.status, 200);
    assert!(!c.is_closed());
    // No Host on HTTP/1.1 is still a 400.
    c.send_raw(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(c.response("GET").unwrap().status, 400);
}

#[test]
fn http_1_0_is_closed_unless_it_asks_for_keep_alive() {
    let origin = Origin::plain("o").unwrap();
    let (_lb, listen) = start(origin.addr());
    let started = Instant::now();
    let bytes = http::raw(listen, b"GET /x HTTP/1.0\r\n\r\n", T).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    // Closed by lb after the answer, not by the test's timeout.
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());

    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    for path in ["/1", "/2"] {
        c.send_raw(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .unwrap();
        let r = c.response("GET").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
        assert_eq!(r.text(), "o\n");
    }
}

#[test]
fn connection_close_is_answered_then_closed() {
    let origin = Origin::plain("o").unwrap();
    let (_lb, listen) = start(origin.addr());
    let started = Instant::now();
    let two = b"GET /1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n";
    let bytes = http::raw(listen, two, T).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());
    assert!(origin.seen().iter().all(|s| s.uri != "/2"));
}

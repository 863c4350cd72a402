//! Header work: X-Forwarded-* by trust, request ids, request/response header edits, and
//! hop-by-hop headers removed in both directions (against a raw backend that sends them).

use crate::{backend, get, send, served_by, start, values, T};
use lb_tests::http::KeepAliveClient;
use lb_tests::lb::free_local_addr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn forwarded_headers_overwritten_for_untrusted_appended_for_trusted() {
    let b = backend("b");
    let (plain, trusted) = (free_local_addr(), free_local_addr());
    let yaml = format!(
        r#"
listeners:
  - {{name: plain, address: "{plain}"}}
  - {{name: trusted, address: "{trusted}", forwarded: {{trusted: [127.0.0.1]}}}}
routes: [{{hosts: ["*"], cluster: c}}]
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    let spoof = [
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
    ];
    let one = |name: &str| {
        let v = values(&b.last_request_headers(), name);
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        v[0].clone()
    };
    // Untrusted client: every value is what the proxy saw.
    served_by(&send(plain, "GET", "fwd.test", "/", &spoof));
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "http");
    assert_eq!(one("x-forwarded-host"), "fwd.test");
    assert_eq!(one("forwarded"), "for=127.0.0.1;proto=http;host=fwd.test");
    // Without any incoming values: the same.
    served_by(&get(plain, "fwd.test", "/"));
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("forwarded"), "for=127.0.0.1;proto=http;host=fwd.test");
    // Trusted client: appended to / kept.
    served_by(&send(trusted, "GET", "fwd.test", "/", &spoof));
    assert_eq!(one("x-forwarded-for"), "1.2.3.4, 127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "https");
    assert_eq!(one("x-forwarded-host"), "evil.test");
    assert_eq!(
        one("forwarded"),
        "for=1.2.3.4;proto=https, for=127.0.0.1;proto=http;host=fwd.test"
    );
    // Trusted client without incoming values: ours alone.
    served_by(&get(trusted, "fwd.test", "/"));
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "http");
}

/// With `forwarded.headers: [x-forwarded-for]`, `generate_request_id: false` and
/// `tracing.propagate: false`, lb does only what HAProxy's `option forwardfor` does: one XFF;
/// the other headers pass as the client sent them (or stay absent).
#[test]
fn forwarding_request_id_and_trace_headers_can_be_turned_off() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
tracing: {{propagate: false}}
listeners:
  - {{name: http, address: "{listen}", generate_request_id: false, forwarded: {{headers: [x-forwarded-for]}}}}
routes: [{{hosts: ["*"], cluster: c}}]
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    served_by(&send(
        listen,
        "GET",
        "off.test",
        "/",
        &[("X-Forwarded-Proto", "https"), ("traceparent", parent)],
    ));
    let h = b.last_request_headers();
    assert_eq!(values(&h, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&h, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&h, "traceparent"), [parent]);
    for absent in [
        "x-forwarded-host",
        "forwarded",
        "x-request-id",
        "tracestate",
    ] {
        assert!(values(&h, absent).is_empty(), "{absent}: {h:?}");
    }
    served_by(&get(listen, "off.test", "/"));
    let h = b.last_request_headers();
    for absent in ["x-request-id", "traceparent", "x-forwarded-proto"] {
        assert!(values(&h, absent).is_empty(), "{absent}: {h:?}");
    }
}

#[test]
fn request_id_generated_when_absent_kept_when_present() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: c}}]
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    let id = || {
        let v = values(&b.last_request_headers(), "x-request-id");
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].clone()
    };
    let is_hex32 = |s: &str| s.len() == 32 && s.bytes().all(|c| c.is_ascii_hexdigit());
    served_by(&get(listen, "id.test", "/"));
    let first = id();
    assert!(is_hex32(&first), "generated id {first:?}");
    served_by(&get(listen, "id.test", "/"));
    let second = id();
    assert!(is_hex32(&second), "generated id {second:?}");
    assert_ne!(first, second, "ids must be unique");
    served_by(&send(
        listen,
        "GET",
        "id.test",
        "/",
        &[("X-Request-Id", "abc-123")],
    ));
    assert_eq!(id(), "abc-123");
}

#[test]
fn request_and_response_header_edits() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - hosts: ["*"]
    cluster: c
    request_headers:
      set: {{x-set: new}}
      add: {{x-add: two}}
      remove: [x-drop, X-Drop-Too]
    response_headers:
      set: {{content-type: application/x-lb, x-served-by: lb}}
      add: {{x-extra: b}}
      remove: [x-backend]
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    let r = send(
        listen,
        "GET",
        "edit.test",
        "/",
        &[
            ("x-set", "old"),
            ("x-set", "older"),
            ("x-add", "one"),
            ("x-drop", "1"),
            ("x-drop-too", "2"),
            ("x-untouched", "u"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "b\n");
    let seen = b.last_request_headers();
    assert_eq!(values(&seen, "x-set"), ["new"], "{seen:?}");
    assert_eq!(values(&seen, "x-add"), ["one", "two"], "{seen:?}");
    assert!(values(&seen, "x-drop").is_empty(), "{seen:?}");
    assert!(values(&seen, "x-drop-too").is_empty(), "{seen:?}");
    assert_eq!(values(&seen, "x-untouched"), ["u"], "{seen:?}");
    assert_eq!(
        values(&r.headers, "content-type"),
        ["application/x-lb"],
        "{:?}",
        r.headers
    );
    assert_eq!(values(&r.headers, "x-served-by"), ["lb"]);
    assert_eq!(values(&r.headers, "x-extra"), ["b"]);
    assert!(
        values(&r.headers, "x-backend").is_empty(),
        "{:?}",
        r.headers
    );
}

/// A backend that answers every request with a fixed raw response and closes; records heads.
struct RawBackend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawBackend {
    fn start(response: &'static str) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && !st.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Ok(mut h) = h.lock() {
                    h.push(String::from_utf8_lossy(&buf).into_owned());
                }
                let _ = s.write_all(response.as_bytes());
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        });
        RawBackend {
            addr,
            heads,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn hop_by_hop_headers_removed_in_both_directions() {
    let raw = RawBackend::start(
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: x-internal\r\nx-internal: secret\r\n\
         keep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-fine: 1\r\n\r\nok\n",
    );
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: c}}]
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        raw.addr
    );
    let _lb = start(&yaml);
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    let r = c
        .request(
            "GET",
            "hop.test",
            "/",
            &[
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "gzip"),
                ("X-Kept", "yes"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let head = raw
        .heads
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
        .to_ascii_lowercase();
    for gone in ["x-secret:", "keep-alive:", "proxy-connection:", "\r\nte:"] {
        assert!(!head.contains(gone), "{gone} reached the backend:\n{head}");
    }
    assert!(head.contains("x-kept: yes"), "{head}");
    for gone in ["x-internal", "keep-alive", "proxy-connection"] {
        assert!(
            values(&r.headers, gone).is_empty(),
            "{gone} reached the client: {:?}",
            r.headers
        );
    }
    assert_eq!(values(&r.headers, "x-fine"), ["1"]);
    // The client connection is still usable (the upstream's Connection header did not leak).
    let again = c.get("hop.test", "/").unwrap();
    assert_eq!(again.status, 200);
}

//! The real `lb` on loopback with tracing: W3C trace context reaches the origin (continued,
//! created, or restarted when malformed), the access log carries the trace id, and sampled spans
//! reach an OTLP/HTTP collector with the ids that went upstream; unsampled ones do not.

mod support;

use lb_tests::http::KeepAliveClient;
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::admin::{metric, plain_log, wait_until};
use support::origin::Origin;

const T: Duration = Duration::from_secs(5);
const LIFETIME: Duration = Duration::from_secs(60);

/// An OTLP/HTTP collector stand-in: keeps every POSTed body, answers 200. Protobuf stores the
/// ids as raw bytes, so a test can look for them without decoding.
struct Collector {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + LIFETIME;
            while Instant::now() < until {
                match listener.accept() {
                    Ok((s, _)) => {
                        let keep = keep.clone();
                        std::thread::spawn(move || serve(s, &keep, until));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            }
        });
        Collector { addr, bodies }
    }

    fn holding(&self, needle: &[u8]) -> Vec<Vec<u8>> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .filter(|b| contains(b, needle))
            .cloned()
            .collect()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Keep-alive HTTP/1.1 requests with Content-Length bodies, until EOF or the deadline.
fn serve(mut s: TcpStream, keep: &Mutex<Vec<Vec<u8>>>, until: Instant) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = Vec::new();
    while Instant::now() < until {
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            keep.lock()
                .unwrap()
                .push(buf[end + 4..end + 4 + len].to_vec());
            buf.drain(..end + 4 + len);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (trace id, parent id, flags) of a valid lowercase version-00 traceparent.
fn parts(tp: &str) -> (String, String, String) {
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(f.len(), 4, "{tp}");
    assert_eq!(f[0], "00", "{tp}");
    assert!(
        f[1].len() == 32 && f[2].len() == 16 && f[3].len() == 2,
        "{tp}"
    );
    assert!(tp
        .chars()
        .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
    (f[1].to_string(), f[2].to_string(), f[3].to_string())
}

#[test]
fn trace_context_propagates_and_sampled_spans_reach_the_collector() {
    let origin = Origin::plain("app").unwrap();
    let collector = Collector::start();
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes: [{{name: app, hosts: [app.test], cluster: app}}]
clusters: [{{name: app, endpoints: [{{address: "{}"}}]}}]
tracing: {{sample_percent: 100, otlp: {{endpoint: "http://{}/v1/traces", service_name: lb-test}}}}
"#,
        origin.addr(),
        collector.addr
    );
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), &[]).unwrap();
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    let mut send = |headers: &[(&str, &str)]| -> http::HeaderMap {
        let r = c.request("GET", "app.test", "/", headers, b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        origin.last().unwrap().headers
    };
    let value = |h: &http::HeaderMap, n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());

    // 1. A valid sampled traceparent: same trace, lb's own span id, flags and tracestate kept.
    let (tid1, pid1) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let tp = format!("00-{tid1}-{pid1}-01");
    let h = send(&[("traceparent", &tp), ("tracestate", "vendor=1,other=2")]);
    let (t, span1, flags) = parts(&value(&h, "traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (tid1, "01"));
    assert_ne!(span1, pid1, "lb is a hop of its own");
    assert_eq!(value(&h, "tracestate").as_deref(), Some("vendor=1,other=2"));

    // 2. None: a new sampled trace (sample_percent 100); no tracestate.
    let h = send(&[]);
    let (tid2, span2, flags) = parts(&value(&h, "traceparent").unwrap());
    assert_eq!(flags, "01");
    assert_ne!(tid2, tid1);
    assert_eq!(value(&h, "tracestate"), None);

    // 3. Malformed (uppercase hex): treated as absent; its tracestate is dropped.
    let bad = format!("00-{}-{pid1}-01", tid1.to_uppercase());
    let h = send(&[("traceparent", &bad), ("tracestate", "vendor=1")]);
    let (tid3, _, _) = parts(&value(&h, "traceparent").unwrap());
    assert_ne!(tid3, tid1);
    assert_eq!(value(&h, "tracestate"), None);

    // 4. Not sampled upstream: the flag is kept and no span is exported.
    let tid4 = "0af7651916cd43dd8448eb211c80319c";
    let h = send(&[("traceparent", &format!("00-{tid4}-b7ad6b7169203331-00"))]);
    let (t, _, flags) = parts(&value(&h, "traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (tid4, "00"));

    // Spans 1-3 reach the collector (batches leave within about a second), with the ids sent
    // upstream: span 1 names lb's span id and the caller's as parent.
    let exported = wait_until(T, || {
        metric(&lb, "lb_trace_spans_total", &[("result", "exported")]) == 3.0
    });
    assert!(exported, "{}", lb.metrics().unwrap());
    let with1 = collector.holding(&unhex(tid1));
    assert_eq!(with1.len(), 1, "one export holds trace 1");
    assert!(contains(&with1[0], &unhex(&span1)), "lb's span id");
    assert!(
        contains(&with1[0], &unhex(pid1)),
        "the caller's span as parent"
    );
    assert!(contains(&with1[0], b"lb-test"), "service.name");
    assert!(contains(&with1[0], b"GET app"), "span name");
    let with2 = collector.holding(&unhex(&tid2));
    assert!(with2.iter().any(|b| contains(b, &unhex(&span2))));
    assert!(!collector.holding(&unhex(&tid3)).is_empty());
    assert!(
        collector.holding(&unhex(tid4)).is_empty(),
        "unsampled span exported"
    );
    for r in ["dropped", "failed"] {
        assert_eq!(
            metric(&lb, "lb_trace_spans_total", &[("result", r)]),
            0.0,
            "{r}"
        );
    }

    // The JSON access log names each request's trace.
    let log = plain_log(&lb);
    for tid in [tid1, tid2.as_str(), tid3.as_str(), tid4] {
        let field = format!("\"trace_id\":\"{tid}\"");
        assert!(
            log.contains(&field),
            "{field} not in the access log:\n{log}"
        );
    }
}

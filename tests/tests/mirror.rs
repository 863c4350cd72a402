//! Mirroring against the real `lb` binary: a slow, failing or saturated mirror changes nothing
//! for clients; the mirrored share is exact and the copy carries the same path, headers and body.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_tests::http::{self, KeepAliveClient};
use lb_tests::lb::{free_local_addr, Lb};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::admin::{metric, named, status_doc, wait_until};
use support::origin::Origin;

const T: Duration = Duration::from_secs(8);
/// Flags for every lb here: no file watcher (reloads only by SIGHUP), short shutdown.
const ARGS: &[&str] = &["--watch-secs", "0", "--grace-secs", "1"];

fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, ARGS)
}

// ---------------------------------------------------------------------------------------------
// A mirror target: records every request as it arrives (method, uri, headers, body bytes), then
// waits `delay` and answers `status`. Lives at most 60 s.

struct Got {
    method: String,
    uri: String,
    headers: ::http::HeaderMap,
    body: Bytes,
}

struct Shadow {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shadow {
    fn start(status: u16, delay: Duration) -> Shadow {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = got.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| {
                                shadow_answer(req, shared.clone(), status, delay)
                            });
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = rx => {}
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Shadow {
            addr,
            got,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// How many requests have arrived so far.
    fn arrived(&self) -> u64 {
        self.got.lock().unwrap().len() as u64
    }

    /// Runs `f` over every request seen so far, oldest first.
    fn with_got<R>(&self, f: impl FnOnce(&[Got]) -> R) -> R {
        f(&self.got.lock().unwrap())
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn shadow_answer(
    req: ::http::Request<hyper::body::Incoming>,
    got: Arc<Mutex<Vec<Got>>>,
    status: u16,
    delay: Duration,
) -> Result<::http::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    got.lock().unwrap().push(Got {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    tokio::time::sleep(delay).await;
    let mut resp = ::http::Response::new(Full::new(Bytes::from_static(b"shadow\n")));
    *resp.status_mut() = ::http::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn mirror_count(lb: &Lb, route: &str, cluster: &str, result: &str) -> f64 {
    let labels = [("route", route), ("cluster", cluster), ("result", result)];
    metric(lb, "lb_mirror_requests_total", &labels)
}

/// Waits (up to 5 s) until [`mirror_count`] is `want`.
fn wait_mirror_count(lb: &Lb, route: &str, cluster: &str, result: &str, want: f64) {
    let reached = wait_until(Duration::from_secs(5), || {
        mirror_count(lb, route, cluster, result) == want
    });
    assert!(
        reached,
        "lb_mirror_requests_total{{route={route}, result={result}}} = {} (want {want})",
        mirror_count(lb, route, cluster, result)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. A slow, failing or saturated mirror changes nothing for clients.

#[test]
fn mirror_slow_or_failing_changes_nothing_for_clients() {
    const N: usize = 20;
    let main = Origin::plain("main").unwrap();
    let slow = Shadow::start(200, Duration::from_secs(5));
    let failing = Shadow::start(500, Duration::ZERO);
    let capped = Shadow::start(200, Duration::from_secs(5));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: slow, hosts: [slow.test], cluster: main, mirror: {{cluster: shadow, percent: 100}}}}
  - {{name: fail, hosts: [fail.test], cluster: main, mirror: {{cluster: shadow_500, percent: 100}}}}
  - {{name: capped, hosts: [capped.test], cluster: main, mirror: {{cluster: shadow_cap, percent: 100, max_in_flight: 2}}}}
clusters:
  - {{name: main, endpoints: [{{address: "{main}"}}]}}
  - {{name: shadow, response_timeout: 20s, endpoints: [{{address: "{slow}"}}]}}
  - {{name: shadow_500, endpoints: [{{address: "{failing}"}}]}}
  - {{name: shadow_cap, response_timeout: 20s, endpoints: [{{address: "{capped}"}}]}}
"#,
        main = main.addr(),
        slow = slow.addr,
        failing = failing.addr,
        capped = capped.addr,
    );
    let lb = start(&yaml);

    // Sends `n` GETs for `host` on one connection; each must be main's 200. Returns the
    // total and the slowest single request.
    let burst = |host: &str, n: usize| -> (Duration, Duration) {
        let mut c = KeepAliveClient::connect(listen, T).unwrap();
        let (started, mut slowest) = (Instant::now(), Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let r = c.get(host, &format!("/r/{i}")).unwrap();
            slowest = slowest.max(t.elapsed());
            assert_eq!(r.status, 200, "{host} #{i}: {}", r.text());
            assert_eq!(r.header("x-backend"), Some("main"), "{host} #{i}");
            assert_eq!(r.text(), "main\n", "{host} #{i}");
        }
        (started.elapsed(), slowest)
    };

    // (a) A mirror that takes 5 s per request: nobody waits for it, yet it gets every copy.
    let (total, slowest) = burst("slow.test", N);
    assert!(
        total < Duration::from_millis(2500) && slowest < Duration::from_secs(2),
        "clients waited for the slow mirror: {N} requests took {total:?} (slowest {slowest:?})"
    );
    assert!(
        wait_until(Duration::from_secs(3), || slow.arrived() == N as u64),
        "the slow mirror received {} of {N} copies",
        slow.arrived()
    );
    // Its answers are still pending: none counted yet, none failed.
    for r in ["2xx", "5xx", "failed", "dropped", "skipped"] {
        let n = mirror_count(&lb, "slow", "shadow", r);
        assert_eq!(n, 0.0, "{r} counted before the mirror answered");
    }

    // (b) A mirror answering 500 to everything: clients still get main's 200; each copy counted.
    let (total, _) = burst("fail.test", N);
    assert!(total < Duration::from_millis(2500), "{total:?}");
    wait_mirror_count(&lb, "fail", "shadow_500", "5xx", N as f64);
    assert_eq!(failing.arrived(), N as u64);
    // The status document's mirror summary agrees.
    let doc = status_doc(&lb);
    let m = &named(&doc, "routes", "fail")["mirror"];
    assert_eq!(m["cluster"], "shadow_500", "{m}");
    assert_eq!(m["percent"].as_f64(), Some(100.0), "{m}");
    for (k, want) in [("sent", N), ("failed", N), ("ok", 0), ("dropped", 0)] {
        assert_eq!(m[k].as_f64(), Some(want as f64), "{k}: {m}");
    }
    for r in ["2xx", "failed", "dropped", "skipped"] {
        assert_eq!(mirror_count(&lb, "fail", "shadow_500", r), 0.0, "{r}");
    }
    // Main served every client request of (a) and (b): 2 × N.
    assert_eq!(main.requests(), 2 * N as u64);

    // (c) max_in_flight 2 with a 5 s mirror: beyond two copies in flight, copies are dropped.
    let (total, _) = burst("capped.test", 10);
    assert!(total < Duration::from_millis(2500), "{total:?}");
    let settled = wait_until(Duration::from_secs(3), || {
        capped.arrived() as f64 + mirror_count(&lb, "capped", "shadow_cap", "dropped") == 10.0
    });
    let dropped = mirror_count(&lb, "capped", "shadow_cap", "dropped");
    assert!(
        settled && dropped >= 1.0 && capped.arrived() <= 2,
        "capped mirror: {} arrived, {dropped} dropped (want <= 2 arrived, the rest dropped)",
        capped.arrived()
    );
    assert_eq!(main.requests(), 2 * N as u64 + 10);
}

// ---------------------------------------------------------------------------------------------
// 2. The mirrored share is exact; the copy has the same path, headers and body bytes.

#[test]
fn mirror_share_and_body() {
    let main = Origin::plain("main").unwrap();
    let share = Shadow::start(200, Duration::ZERO);
    let copies = Shadow::start(200, Duration::ZERO);
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: share, hosts: [share.test], cluster: main, mirror: {{cluster: shadow, percent: 10}}}}
  - name: body
    hosts: [body.test]
    path: {{prefix: /in}}
    rewrite: {{prefix: /}}
    request_headers: {{set: {{x-edited: "yes"}}}}
    cluster: main
    mirror: {{cluster: shadow_body, percent: 100, max_body_bytes: 1000}}
clusters:
  - {{name: main, endpoints: [{{address: "{main}"}}]}}
  - {{name: shadow, endpoints: [{{address: "{share}"}}]}}
  - {{name: shadow_body, endpoints: [{{address: "{copies}"}}]}}
"#,
        main = main.addr(),
        share = share.addr,
        copies = copies.addr,
    );
    let lb = start(&yaml);

    // 10 % of 200 requests: exactly 20, every 10th (requests 10, 20, ..., 200).
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    for i in 1..=200 {
        let r = c.get("share.test", &format!("/n/{i}")).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "main\n"), "#{i}");
    }
    let done = wait_until(Duration::from_secs(10), || {
        share.arrived() >= 20 && mirror_count(&lb, "share", "shadow", "2xx") >= 20.0
    });
    assert!(done, "mirror got {} copies", share.arrived());
    std::thread::sleep(Duration::from_millis(300)); // no late extra copy
    assert_eq!(share.arrived(), 20);
    assert_eq!(mirror_count(&lb, "share", "shadow", "2xx"), 20.0);
    let mut paths = share.with_got(|g| g.iter().map(|g| g.uri.clone()).collect::<Vec<_>>());
    paths.sort_by_key(|p| p.trim_start_matches("/n/").parse::<u32>().unwrap_or(0));
    let want: Vec<String> = (1..=20).map(|k| format!("/n/{}", k * 10)).collect();
    assert_eq!(paths, want, "every 10th request is mirrored");
    assert_eq!(main.requests(), 200);

    // A body within max_body_bytes reaches the mirror byte for byte, with the rewritten path
    // and the same headers (request id, route header edits, client headers) as main's copy.
    let body: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = c
        .request(
            "POST",
            "body.test",
            "/in/echo?k=v",
            &[
                ("x-client", "abc"),
                ("content-type", "application/octet-stream"),
            ],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body, "main echoes the full body");
    let main_seen = main.last().unwrap();
    assert_eq!(main_seen.uri, "/echo?k=v");
    assert!(
        wait_until(Duration::from_secs(5), || copies.arrived() == 1),
        "the body was not mirrored"
    );
    copies.with_got(|g| {
        let g = &g[0];
        assert_eq!(g.method, "POST");
        assert_eq!(g.uri, "/echo?k=v", "the mirror sees the rewritten path");
        assert!(
            g.body == body,
            "mirrored body differs: {} bytes",
            g.body.len()
        );
        let hv = |h: &::http::HeaderMap, n: &str| {
            h.get(n)
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .unwrap_or_default()
        };
        let rid = hv(&main_seen.headers, "x-request-id");
        assert!(!rid.is_empty(), "main got no x-request-id");
        for name in [
            "x-request-id",
            "x-edited",
            "x-client",
            "content-type",
            "x-forwarded-for",
        ] {
            assert_eq!(
                hv(&g.headers, name),
                hv(&main_seen.headers, name),
                "header {name}"
            );
        }
        assert_eq!(hv(&g.headers, "x-edited"), "yes");
        assert_eq!(hv(&g.headers, "content-length"), "1000");
    });
    wait_mirror_count(&lb, "body", "shadow_body", "2xx", 1.0);

    // A body over max_body_bytes: not mirrored (skipped), main still gets all of it.
    let big: Vec<u8> = (0..1001u32).map(|i| (i * 13 % 251) as u8).collect();
    let r = c
        .request("POST", "body.test", "/in/echo", &[], &big)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, big, "main echoes the full larger body");
    assert_eq!(main.last().unwrap().body_len, 1001);
    assert_eq!(mirror_count(&lb, "body", "shadow_body", "skipped"), 1.0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(copies.arrived(), 1, "the larger body must not be mirrored");
    assert_eq!(mirror_count(&lb, "body", "shadow_body", "2xx"), 1.0);

    // A chunked body (length unknown until the end) is not mirrored either.
    let chunked = b"POST /in/echo HTTP/1.1\r\nhost: body.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let out = http::raw(listen, chunked, T).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("hello"),
        "{out}"
    );
    assert_eq!(main.last().unwrap().body_len, 5);
    assert_eq!(mirror_count(&lb, "body", "shadow_body", "skipped"), 2.0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(copies.arrived(), 1, "the chunked body must not be mirrored");
}

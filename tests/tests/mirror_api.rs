//! Mirroring and the runtime API against the real `lb` binary: a slow, failing or saturated
//! mirror changes nothing for clients; the mirrored share is exact and carries the same path,
//! headers and body bytes; the API refuses bad input with the right status, requires the bearer
//! token when configured, is loopback-only by default (network namespaces), and runtime
//! overrides are discarded (or kept) by a config reload.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_tests::http::{self, KeepAliveClient, Response};
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::netns::{Topology, TopologyOpts};
use lb_tests::process::ChildGuard;
use lb_tests::{lb_bin, require_root};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::origin::Origin;

const T: Duration = Duration::from_secs(8);
/// Flags for every lb here: no file watcher (reloads only by SIGHUP), short shutdown.
const ARGS: &[&str] = &["--watch-secs", "0", "--grace-secs", "1"];

// ---------------------------------------------------------------------------------------------
// A mirror target: records every request as it arrives (method, uri, headers, body bytes), then
// waits `delay` and answers `status`. Lives at most 60 s.

struct Got {
    method: String,
    uri: String,
    headers: ::http::HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct ShadowLog {
    arrived: AtomicU64,
    got: Mutex<Vec<Got>>,
}

struct Shadow {
    addr: SocketAddr,
    log: Arc<ShadowLog>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shadow {
    fn start(status: u16, delay: Duration) -> Shadow {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(ShadowLog::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = log.clone();
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
            log,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn arrived(&self) -> u64 {
        self.log.arrived.load(Ordering::SeqCst)
    }

    /// Runs `f` over every request seen so far, oldest first.
    fn with_got<R>(&self, f: impl FnOnce(&[Got]) -> R) -> R {
        f(&self.log.got.lock().unwrap())
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
    log: Arc<ShadowLog>,
    status: u16,
    delay: Duration,
) -> Result<::http::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    log.got.lock().unwrap().push(Got {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    log.arrived.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    let mut resp = ::http::Response::new(Full::new(Bytes::from_static(b"shadow\n")));
    *resp.status_mut() = ::http::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader (serde_json is not a dependency of lb-tests).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            b: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing bytes at {} in {text:?}", p.i));
        }
        Ok(v)
    }
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }
    fn items(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        *self == Json::Null
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }
    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }
    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        self.ws();
        match self.b.get(self.i).copied() {
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    m.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'n') => self.lit("null", Json::Null),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| b"+-.eE".contains(c) || c.is_ascii_digit())
                {
                    self.i += 1;
                }
                let s = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("");
                s.parse()
                    .map(Json::Num)
                    .map_err(|_| format!("bad number {s:?}"))
            }
            _ => Err(format!("unexpected input at {}", self.i)),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.b.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4).ok_or("short \\u")?;
                            self.i += 4;
                            let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                            let n = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            char::from_u32(n).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Polls `f` every 25 ms until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One request to the admin endpoint on a fresh connection (`Connection: close`).
fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut c = KeepAliveClient::connect(addr, T).unwrap();
    let mut h = vec![("connection", "close")];
    h.extend_from_slice(headers);
    c.request(method, "admin", path, &h, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

fn json_of(r: &Response) -> Json {
    Json::parse(&r.text())
        .unwrap_or_else(|e| panic!("not JSON ({e}): status {} {:?}", r.status, r.text()))
}

/// The `error` message of a JSON error answer, after checking the status and the content type.
fn api_error(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    json_of(r)
        .get("error")
        .str()
        .unwrap_or_else(|| panic!("no error field: {}", r.text()))
        .to_string()
}

/// The status document (GET /api/v1/status, no token).
fn status_doc(addr: SocketAddr) -> Json {
    let r = admin(addr, "GET", "/api/v1/status", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    json_of(&r)
}

/// An endpoint object of the status document, by cluster and endpoint name.
fn endpoint<'a>(doc: &'a Json, cluster: &str, name: &str) -> &'a Json {
    doc.get("clusters")
        .items()
        .iter()
        .find(|c| c.get("name").str() == Some(cluster))
        .and_then(|c| {
            c.get("endpoints")
                .items()
                .iter()
                .find(|e| e.get("name").str() == Some(name))
        })
        .unwrap_or_else(|| panic!("no endpoint {cluster}/{name} in {doc:?}"))
}

fn version(doc: &Json) -> f64 {
    doc.get("version").num().expect("numeric version")
}

/// Reloads with `yaml` and waits (bounded) until the proxy serves a newer snapshot and the
/// reload was counted as ok.
fn reload_applied(lb: &Lb, yaml: &str) {
    let before = version(&status_doc(lb.admin));
    let ok_before = lb
        .metric("lb_config_reloads_total", &[("result", "ok")])
        .unwrap();
    lb.reload(yaml).unwrap();
    let applied = wait_until(Duration::from_secs(10), || {
        lb.metric("lb_config_reloads_total", &[("result", "ok")])
            .unwrap_or(0.0)
            > ok_before
            && lb
                .metric("lb_snapshot_applied_version", &[])
                .is_ok_and(|v| v > before)
    });
    assert!(applied, "reload not applied; log:\n{}", lb.log());
}

/// The log without ANSI colour sequences (tracing colours field names).
fn plain_log(lb: &Lb) -> String {
    let log = lb.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn mirror_count(lb: &Lb, route: &str, cluster: &str, result: &str) -> f64 {
    lb.metric(
        "lb_mirror_requests_total",
        &[("route", route), ("cluster", cluster), ("result", result)],
    )
    .unwrap()
}

/// Runs `lb ARGS` (bounded: 15 s); returns the exit code and stdout + stderr.
fn lb_cmd(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(lb_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let status = guard.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some(), "lb {args:?} did not finish in 15 s");
    let mut text = String::new();
    use std::io::Read;
    if let Some(mut o) = guard.0.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    if let Some(mut e) = guard.0.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    (status.and_then(|s| s.code()), text)
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
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), ARGS).unwrap();

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
    let pending: f64 = ["2xx", "5xx", "failed", "dropped", "skipped"]
        .iter()
        .map(|r| mirror_count(&lb, "slow", "shadow", r))
        .sum();
    assert_eq!(
        pending, 0.0,
        "mirror results counted before the mirror answered"
    );

    // (b) A mirror answering 500 to everything: clients still get main's 200; each copy counted.
    let (total, _) = burst("fail.test", N);
    assert!(total < Duration::from_millis(2500), "{total:?}");
    assert!(
        wait_until(Duration::from_secs(5), || mirror_count(
            &lb,
            "fail",
            "shadow_500",
            "5xx"
        ) == N as f64),
        "lb_mirror_requests_total{{result=5xx}} = {} (want {N})",
        mirror_count(&lb, "fail", "shadow_500", "5xx")
    );
    assert_eq!(failing.arrived(), N as u64);
    // The status document's mirror summary agrees.
    let doc = status_doc(lb.admin);
    let route = |name: &str| {
        doc.get("routes")
            .items()
            .iter()
            .find(|r| r.get("name").str() == Some(name))
            .unwrap_or_else(|| panic!("no route {name} in {doc:?}"))
            .get("mirror")
            .clone()
    };
    let m = route("fail");
    assert_eq!(m.get("cluster").str(), Some("shadow_500"), "{m:?}");
    assert_eq!(m.get("percent").num(), Some(100.0), "{m:?}");
    for (k, want) in [("sent", N), ("failed", N), ("ok", 0), ("dropped", 0)] {
        assert_eq!(m.get(k).num(), Some(want as f64), "{k}: {m:?}");
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
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), ARGS).unwrap();

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
    assert!(wait_until(Duration::from_secs(5), || mirror_count(
        &lb,
        "body",
        "shadow_body",
        "2xx"
    ) == 1.0));

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

// ---------------------------------------------------------------------------------------------
// Runtime API tests share this config: cluster app with endpoints cloud (10) and onprem (10).

fn api_config(listen: SocketAddr, eps: [SocketAddr; 2], admin_section: &str) -> String {
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [app.test], cluster: app}}]
clusters:
  - name: app
    endpoints:
      - {{address: "{a}", name: cloud, weight: 10}}
      - {{address: "{b}", name: onprem, weight: 10}}
{admin_section}
"#,
        a = eps[0],
        b = eps[1],
    )
}

const JSON_CT: (&str, &str) = ("content-type", "application/json");

// 3. Bad input is refused with the right status and a JSON error; nothing changes.

#[test]
fn runtime_api_rejects_bad_input() {
    let eps = [free_local_addr(), free_local_addr()];
    let yaml = api_config(free_local_addr(), eps, "");
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), ARGS).unwrap();
    let a = lb.admin;
    let v0 = version(&status_doc(a));
    let put = |path: &str, body: &[u8]| admin(a, "PUT", path, &[JSON_CT], body);
    let cloud = "/api/v1/clusters/app/endpoints/cloud";

    let e = api_error(
        &put("/api/v1/clusters/app/endpoints/nope", br#"{"weight":5}"#),
        404,
    );
    assert!(e.contains("nope") && e.contains("endpoint"), "{e}");
    let e = api_error(
        &put("/api/v1/clusters/ghost/endpoints/cloud", br#"{"weight":5}"#),
        404,
    );
    assert!(e.contains("ghost") && e.contains("cluster"), "{e}");
    let e = api_error(&put(cloud, br#"{"weight":"300%"}"#), 400);
    assert!(e.contains("out of range"), "{e}");
    let e = api_error(&put(cloud, br#"{"weight":257}"#), 400);
    assert!(e.contains("out of range"), "{e}");
    let e = api_error(&put(cloud, b"{"), 400);
    assert!(e.contains("invalid JSON"), "{e}");
    let e = api_error(&put(cloud, br#"{"state":"sleepy"}"#), 400);
    assert!(e.contains("sleepy"), "{e}");
    api_error(&admin(a, "GET", cloud, &[], b""), 405);
    api_error(&admin(a, "GET", "/api/v1/nope", &[], b""), 404);
    // A body over 64 KiB (valid JSON that would otherwise change the weight).
    let big = format!("{{\"weight\": 5{}}}", " ".repeat(70 * 1024));
    api_error(&put(cloud, big.as_bytes()), 413);

    // Nothing changed: no override, configured weights, same snapshot version.
    let doc = status_doc(a);
    assert_eq!(version(&doc), v0, "a refused command published a snapshot");
    for name in ["cloud", "onprem"] {
        let ep = endpoint(&doc, "app", name);
        assert!(ep.get("override").is_null(), "{name}: {ep:?}");
        assert_eq!(ep.get("weight").num(), Some(10.0), "{name}: {ep:?}");
        assert_eq!(ep.get("state").str(), Some("up"), "{name}: {ep:?}");
    }
    // And a good command still works afterwards (by address, percent-encoded or not).
    let r = put(
        &format!("/api/v1/clusters/app/endpoints/{}", eps[1]),
        br#"{"weight":"50%"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v.get("cluster").str(), Some("app"));
    assert_eq!(v.get("endpoint").get("name").str(), Some("onprem"));
    assert_eq!(v.get("endpoint").get("weight").num(), Some(5.0));
}

// 4. With admin.token_file the API needs the bearer token; /metrics and /healthz do not.

#[test]
fn runtime_api_token() {
    const TOKEN: &str = "s3cret-token-0123456789abcdef";
    let eps = [free_local_addr(), free_local_addr()];
    let listen = free_local_addr();
    let lb = Lb::start(
        &lb_bin(),
        None,
        &api_config(listen, eps, ""),
        free_local_addr(),
        ARGS,
    )
    .unwrap();
    let a = lb.admin;
    let token_file = lb.dir().join("token.txt");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    reload_applied(
        &lb,
        &api_config(listen, eps, "admin: {token_file: token.txt}"),
    );
    assert!(
        lb.log().contains("config reloaded"),
        "no reload logged:\n{}",
        lb.log()
    );

    let status = "/api/v1/status";
    let e = api_error(&admin(a, "GET", status, &[], b""), 401);
    assert!(e.contains("token"), "{e}");
    api_error(
        &admin(
            a,
            "GET",
            status,
            &[("authorization", "Bearer wrong-token-0123456789abcdef")],
            b"",
        ),
        401,
    );
    api_error(
        &admin(a, "GET", status, &[("authorization", TOKEN)], b""),
        401,
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let r = admin(a, "GET", status, &auth, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(json_of(&r).get("version").num().is_some());
    // A PUT without the token changes nothing.
    let cloud = "/api/v1/clusters/app/endpoints/cloud";
    api_error(&admin(a, "PUT", cloud, &[JSON_CT], br#"{"weight":3}"#), 401);
    let r = admin(a, "GET", status, &auth, b"");
    let doc = json_of(&r);
    assert!(endpoint(&doc, "app", "cloud").get("override").is_null());

    // lb ctl with and without --token-file.
    let addr = a.to_string();
    let tf = token_file.to_string_lossy().to_string();
    let (code, out) = lb_cmd(&["ctl", "--admin", &addr, "--token-file", &tf, "status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("cluster app") && out.contains("cloud"),
        "{out}"
    );
    let (code, out) = lb_cmd(&[
        "ctl",
        "--admin",
        &addr,
        "--token-file",
        &tf,
        "set-weight",
        "app",
        "cloud",
        "3",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("app/cloud: state up, weight 3"), "{out}");
    let (code, out) = lb_cmd(&["ctl", "--admin", &addr, "status"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("401"), "{out}");
    let (code, out) = lb_cmd(&["ctl", "--admin", &addr, "drain", "app", "cloud"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("401"), "{out}");
    let doc = json_of(&admin(a, "GET", status, &auth, b""));
    let ep = endpoint(&doc, "app", "cloud");
    assert_eq!(ep.get("weight").num(), Some(3.0), "{ep:?}");
    assert_eq!(
        ep.get("state").str(),
        Some("up"),
        "drain without token: {ep:?}"
    );

    // Not under /api: no token needed.
    for path in ["/metrics", "/healthz", "/stats.json"] {
        let r = admin(a, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

// 5. The API answers loopback only by default; admin.allow opens it to other networks.

#[test]
fn runtime_api_loopback_only_by_default() {
    require_root();
    const ADMIN_PORT: u16 = 19_471;
    let topo = Topology::new(TopologyOpts { clients: 1 }).unwrap();
    let listen: SocketAddr = "127.0.0.1:18471".parse().unwrap();
    let eps: [SocketAddr; 2] = [
        "127.0.0.1:18472".parse().unwrap(),
        "127.0.0.1:18473".parse().unwrap(),
    ];
    let admin_addr: SocketAddr = SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT));
    let lb = Lb::start(
        &lb_bin(),
        Some(&topo.node),
        &api_config(listen, eps, ""),
        admin_addr,
        ARGS,
    )
    .unwrap();
    let node = SocketAddr::new(topo.node_addr_v4(0).into(), ADMIN_PORT);
    let from_client = |path: &str| {
        let path = path.to_string();
        topo.clients[0]
            .run(move || http::get(node, "admin", &path, T))
            .unwrap()
            .unwrap()
    };

    let r = from_client("/api/v1/status");
    let e = api_error(&r, 403);
    assert!(e.contains("10.77.1.2") && e.contains("admin.allow"), "{e}");
    assert_eq!(from_client("/metrics").status, 200);
    assert_eq!(from_client("/healthz").status, 200);
    // Loopback inside the node namespace is allowed.
    let r = lb.admin_get("/api/v1/status").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v0 = version(&json_of(&r));

    let ok_before = lb
        .metric("lb_config_reloads_total", &[("result", "ok")])
        .unwrap();
    lb.reload(&api_config(
        listen,
        eps,
        "admin: {allow: [10.77.0.0/16, 127.0.0.0/8]}",
    ))
    .unwrap();
    let applied = wait_until(Duration::from_secs(10), || {
        lb.metric("lb_config_reloads_total", &[("result", "ok")])
            .unwrap_or(0.0)
            > ok_before
            && lb
                .metric("lb_snapshot_applied_version", &[])
                .is_ok_and(|v| v > v0)
    });
    assert!(applied, "reload not applied; log:\n{}", lb.log());
    let r = from_client("/api/v1/status");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(version(&json_of(&r)) > v0);
    assert_eq!(lb.admin_get("/api/v1/status").unwrap().status, 200);
}

// 6. A reload discards runtime overrides, unless admin.keep_runtime_overrides is set.

#[test]
fn overrides_discarded_or_kept_on_reload() {
    let eps = [free_local_addr(), free_local_addr()];
    let listen = free_local_addr();
    let yaml = api_config(listen, eps, "");
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), ARGS).unwrap();
    let a = lb.admin;
    let cloud = "/api/v1/clusters/app/endpoints/cloud";
    let set = |body: &[u8]| {
        let r = admin(a, "PUT", cloud, &[JSON_CT], body);
        assert_eq!(r.status, 200, "{}", r.text());
        json_of(&r)
    };

    let v = set(br#"{"weight":3}"#);
    assert_eq!(v.get("endpoint").get("weight").num(), Some(3.0), "{v:?}");
    let doc = status_doc(a);
    let ep = endpoint(&doc, "app", "cloud");
    assert_eq!(ep.get("override").get("weight").num(), Some(3.0), "{ep:?}");
    assert_eq!(ep.get("configured_weight").num(), Some(10.0), "{ep:?}");

    // Same config plus a comment: the override is gone.
    reload_applied(&lb, &format!("{yaml}# touched\n"));
    let doc = status_doc(a);
    let ep = endpoint(&doc, "app", "cloud");
    assert!(ep.get("override").is_null(), "override survived: {ep:?}");
    assert_eq!(ep.get("weight").num(), Some(10.0), "{ep:?}");
    assert!(
        wait_until(Duration::from_secs(3), || plain_log(&lb)
            .contains("runtime_overrides_discarded=1")),
        "no runtime_overrides_discarded=1 in the log:\n{}",
        plain_log(&lb)
    );

    // With keep_runtime_overrides: the override survives a reload.
    let keep = api_config(listen, eps, "admin: {keep_runtime_overrides: true}");
    reload_applied(&lb, &keep);
    let doc = status_doc(a);
    assert_eq!(doc.get("keep_runtime_overrides"), &Json::Bool(true));
    set(br#"{"weight":"40%"}"#);
    set(br#"{"state":"drain"}"#);
    reload_applied(&lb, &format!("{keep}# touched\n"));
    let doc = status_doc(a);
    let ep = endpoint(&doc, "app", "cloud");
    assert_eq!(
        ep.get("override").get("weight").str(),
        Some("40%"),
        "{ep:?}"
    );
    assert_eq!(
        ep.get("override").get("state").str(),
        Some("drain"),
        "{ep:?}"
    );
    assert_eq!(ep.get("weight").num(), Some(4.0), "{ep:?}");
    assert_eq!(ep.get("state").str(), Some("drain"), "{ep:?}");
    assert!(
        wait_until(Duration::from_secs(3), || plain_log(&lb)
            .contains("runtime_overrides_kept=1")),
        "no runtime_overrides_kept=1 in the log:\n{}",
        plain_log(&lb)
    );
    assert!(endpoint(&doc, "app", "onprem").get("override").is_null());
}

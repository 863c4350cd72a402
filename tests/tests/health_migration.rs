//! The real `lb` process on loopback, issue 4: a migration from on-prem to cloud driven by the
//! runtime API (1% → 100%), passive ejection with cool-down and slow start, backups (first/all),
//! active HTTP and TCP checks, the ejection cap, error-ratio ejection, and `lb ctl`.
//!
//! The backends are [`Switch`]es: keep-alive HTTP/1.1 servers whose status can be flipped at
//! runtime (200 → 503 → 200), so health transitions are driven by the test, not by sleeps.

use lb_tests::http::{self, KeepAliveClient, Response};
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);
/// Poll step for status-document waits.
const POLL: Duration = Duration::from_millis(20);
/// Hard cap on a switch backend's life (and of each of its connections).
const SWITCH_LIFETIME: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// A switchable backend
// ---------------------------------------------------------------------------------------------

struct Shared {
    name: String,
    status: AtomicU16,
    /// Answer 200, 503, 200, 503, ... (per request) instead of `status`.
    alternate: AtomicBool,
    flips: AtomicU64,
    /// Requests other than health checks (paths under /health).
    requests: AtomicU64,
    checks: AtomicU64,
    stop: AtomicBool,
}

/// HTTP/1.1 keep-alive server on 127.0.0.1:0: every request gets the status held in an
/// AtomicU16 (200 at first), body = its name, header `x-backend: NAME`. Stops on drop.
struct Switch {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Switch {
    fn start(name: &str) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            status: AtomicU16::new(200),
            alternate: AtomicBool::new(false),
            flips: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            let until = Instant::now() + SWITCH_LIFETIME;
            while Instant::now() < until && !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(stream, &s));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Switch {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    fn set_alternate(&self, on: bool) {
        self.shared.alternate.store(on, Ordering::SeqCst);
    }

    /// Requests served, health checks not included.
    fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn checks(&self) -> u64 {
        self.shared.checks.load(Ordering::SeqCst)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One connection: sequential requests until EOF, `connection: close`, stop or the lifetime.
fn serve(mut stream: TcpStream, s: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let until = Instant::now() + SWITCH_LIFETIME;
    let mut buf: Vec<u8> = Vec::new();
    let head_end = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
    for _ in 0..1_000_000 {
        if !fill(&mut stream, s, until, &mut buf, &|b: &[u8]| {
            head_end(b).is_some()
        }) {
            return;
        }
        let end = head_end(&buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/")
            .to_string();
        let (mut length, mut close) = (0usize, false);
        for line in lines {
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim());
            if n == "content-length" {
                length = v.parse().unwrap_or(0);
            } else if n == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        if !fill(&mut stream, s, until, &mut buf, &|b: &[u8]| {
            b.len() >= length
        }) {
            return;
        }
        buf.drain(..length);
        if path.starts_with("/health") {
            s.checks.fetch_add(1, Ordering::SeqCst);
        } else {
            s.requests.fetch_add(1, Ordering::SeqCst);
        }
        let status = if s.alternate.load(Ordering::SeqCst) {
            match s.flips.fetch_add(1, Ordering::SeqCst) % 2 {
                0 => 200,
                _ => 503,
            }
        } else {
            s.status.load(Ordering::SeqCst)
        };
        let reason = match status {
            200 => "OK",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let reply = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {}\r\n{}\r\n{}",
            s.name.len(),
            s.name,
            if close { "connection: close\r\n" } else { "" },
            s.name
        );
        if stream.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Reads into `buf` until `done(buf)`; false on EOF, error, stop or the lifetime.
fn fill(
    stream: &mut TcpStream,
    s: &Shared,
    until: Instant,
    buf: &mut Vec<u8>,
    done: &dyn Fn(&[u8]) -> bool,
) -> bool {
    let mut chunk = [0u8; 8192];
    while !done(buf) {
        if s.stop.load(Ordering::Relaxed) || Instant::now() > until || buf.len() > 1 << 20 {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader (serde_json is not a dependency of lb-tests)
// ---------------------------------------------------------------------------------------------

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
        let b = text.as_bytes();
        let mut i = 0;
        let v = Json::value(b, &mut i, 0)?;
        Json::ws(b, &mut i);
        if i != b.len() {
            return Err(format!("trailing bytes at {i}"));
        }
        Ok(v)
    }

    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }

    fn value(b: &[u8], i: &mut usize, depth: usize) -> Result<Json, String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        Json::ws(b, i);
        let lit = |i: &mut usize, word: &str, v: Json| {
            if b[*i..].starts_with(word.as_bytes()) {
                *i += word.len();
                Ok(v)
            } else {
                Err(format!("bad literal at {i}"))
            }
        };
        match b.get(*i) {
            None => Err("unexpected end".into()),
            Some(b'n') => lit(i, "null", Json::Null),
            Some(b't') => lit(i, "true", Json::Bool(true)),
            Some(b'f') => lit(i, "false", Json::Bool(false)),
            Some(b'"') => Json::string(b, i).map(Json::Str),
            Some(b'[') => {
                *i += 1;
                let mut items = Vec::new();
                Json::ws(b, i);
                if b.get(*i) == Some(&b']') {
                    *i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(Json::value(b, i, depth + 1)?);
                    Json::ws(b, i);
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b']') => {
                            *i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected , or ] at {i}")),
                    }
                }
            }
            Some(b'{') => {
                *i += 1;
                let mut fields = Vec::new();
                Json::ws(b, i);
                if b.get(*i) == Some(&b'}') {
                    *i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    Json::ws(b, i);
                    let k = Json::string(b, i)?;
                    Json::ws(b, i);
                    if b.get(*i) != Some(&b':') {
                        return Err(format!("expected : at {i}"));
                    }
                    *i += 1;
                    fields.push((k, Json::value(b, i, depth + 1)?));
                    Json::ws(b, i);
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("expected , or }} at {i}")),
                    }
                }
            }
            Some(_) => {
                let start = *i;
                while *i < b.len() && b"+-0123456789.eE".contains(&b[*i]) {
                    *i += 1;
                }
                let s = std::str::from_utf8(&b[start..*i]).unwrap_or("");
                s.parse()
                    .map(Json::Num)
                    .map_err(|_| format!("bad value at {start}"))
            }
        }
    }

    fn string(b: &[u8], i: &mut usize) -> Result<String, String> {
        if b.get(*i) != Some(&b'"') {
            return Err(format!("expected a string at {i}"));
        }
        *i += 1;
        let mut out = Vec::new();
        while let Some(&c) = b.get(*i) {
            *i += 1;
            match c {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let e = *b.get(*i).ok_or("unterminated escape")?;
                    *i += 1;
                    let ch = match e {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = b.get(*i..*i + 4).ok_or("short \\u escape")?;
                            *i += 4;
                            let n = u32::from_str_radix(&String::from_utf8_lossy(hex), 16)
                                .map_err(|_| "bad \\u escape")?;
                            char::from_u32(n).unwrap_or('\u{fffd}')
                        }
                        other => other as char,
                    };
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    /// Field `k` of an object (Null when absent or not an object).
    fn get(&self, k: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields.iter().find(|(n, _)| n == k).map_or(&NULL, |f| &f.1),
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

#[test]
fn json_reader_reads_what_the_status_document_uses() {
    let v = Json::parse(
        r#" {"a": [1, -2.5e1, true, false, null], "s": "x\"y\u00e9", "o": {}, "e": []} "#,
    )
    .unwrap();
    let a = v.get("a").items();
    assert_eq!(a[0].num(), Some(1.0));
    assert_eq!(a[1].num(), Some(-25.0));
    assert_eq!((&a[2], &a[3]), (&Json::Bool(true), &Json::Bool(false)));
    assert!(a[4].is_null() && v.get("missing").is_null());
    assert_eq!(v.get("s").str(), Some("x\"yé"));
    assert_eq!(v.get("o"), &Json::Obj(vec![]));
    assert!(Json::parse("{\"a\": }").is_err());
    assert!(Json::parse("[1] x").is_err());
}

// ---------------------------------------------------------------------------------------------
// Helpers: lb, admin API, traffic
// ---------------------------------------------------------------------------------------------

fn start(yaml: &str) -> Lb<'static> {
    Lb::start(&lb_bin(), None, yaml, free_local_addr(), &[]).unwrap()
}

/// The status document (GET /api/v1/status).
fn doc(lb: &Lb) -> Json {
    let r = lb.admin_get("/api/v1/status").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    Json::parse(&r.text()).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// One endpoint object of the status document (panics when absent).
fn ep<'a>(doc: &'a Json, cluster: &str, name: &str) -> &'a Json {
    let c = doc
        .get("clusters")
        .items()
        .iter()
        .find(|c| c.get("name").str() == Some(cluster))
        .unwrap_or_else(|| panic!("no cluster {cluster} in {doc:?}"));
    c.get("endpoints")
        .items()
        .iter()
        .find(|e| e.get("name").str() == Some(name))
        .unwrap_or_else(|| panic!("no endpoint {cluster}/{name} in {c:?}"))
}

fn state(lb: &Lb, cluster: &str, name: &str) -> String {
    let d = doc(lb);
    ep(&d, cluster, name)
        .get("state")
        .str()
        .unwrap_or("?")
        .to_string()
}

/// Polls the status document until `pred` holds for the endpoint, up to `timeout`; returns the
/// endpoint object that satisfied it, or panics with the last one seen.
fn wait_ep(
    lb: &Lb,
    cluster: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + timeout;
    let mut last = Json::Null;
    while Instant::now() < deadline {
        let d = doc(lb);
        let e = ep(&d, cluster, name);
        if pred(e) {
            return e.clone();
        }
        last = e.clone();
        std::thread::sleep(POLL);
    }
    panic!(
        "{cluster}/{name}: {what} not reached within {timeout:?}; last: {last:?}\nlog:\n{}",
        log(lb)
    )
}

fn wait_state(lb: &Lb, cluster: &str, name: &str, want: &str, timeout: Duration) -> Json {
    wait_ep(lb, cluster, name, timeout, &format!("state {want}"), |e| {
        e.get("state").str() == Some(want)
    })
}

/// PUT /api/v1/clusters/C/endpoints/E with a JSON body: (status, body).
fn api_put(lb: &Lb, cluster: &str, endpoint: &str, body: &str) -> (u16, String) {
    let req = format!(
        "PUT /api/v1/clusters/{cluster}/endpoints/{endpoint} HTTP/1.1\r\nhost: admin\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = http::raw(lb.admin, req.as_bytes(), T).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad API response {raw:?}"));
    (status, body.to_string())
}

/// Sets an endpoint's weight through the API; returns the endpoint object from the 200 reply.
fn set_weight(lb: &Lb, cluster: &str, endpoint: &str, weight: &str) -> Json {
    let (status, body) = api_put(lb, cluster, endpoint, &format!("{{\"weight\": {weight}}}"));
    assert_eq!(status, 200, "weight {weight}: {body}");
    let v = Json::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v.get("cluster").str(), Some(cluster), "{body}");
    v.get("endpoint").clone()
}

fn set_state(lb: &Lb, cluster: &str, endpoint: &str, state: &str) -> Json {
    let (status, body) = api_put(
        lb,
        cluster,
        endpoint,
        &format!("{{\"state\": \"{state}\"}}"),
    );
    assert_eq!(status, 200, "state {state}: {body}");
    Json::parse(&body).unwrap().get("endpoint").clone()
}

/// The log with ANSI colour codes removed (tracing colours field names).
fn log(lb: &Lb) -> String {
    let raw = lb.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Log lines with `message` about `endpoint` (None: any endpoint). tracing writes the field as
/// `endpoint=NAME` or `endpoint="NAME"`.
fn log_lines(lb: &Lb, message: &str, endpoint: Option<&str>) -> Vec<String> {
    let about = |l: &str| match endpoint {
        None => true,
        Some(e) => {
            l.contains(&format!("endpoint=\"{e}\""))
                || l.contains(&format!("endpoint={e} "))
                || l.ends_with(&format!("endpoint={e}"))
        }
    };
    log(lb)
        .lines()
        .filter(|l| l.contains(message) && about(l))
        .map(str::to_string)
        .collect()
}

/// Polls the (uncoloured) log until it contains `needle`; panics with the log after `timeout`.
fn wait_log(lb: &Lb, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if log(lb).contains(needle) {
            return;
        }
        std::thread::sleep(POLL);
    }
    panic!(
        "{needle:?} not logged within {timeout:?}; log:\n{}",
        log(lb)
    )
}

fn metric(lb: &Lb, name: &str, labels: &[(&str, &str)]) -> f64 {
    lb.metric(name, labels).unwrap()
}

/// A keep-alive client to lb that reconnects once if lb closed the connection.
struct Client {
    addr: SocketAddr,
    conn: Option<KeepAliveClient>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    fn get(&mut self, path: &str) -> Response {
        let mut last = None;
        for _ in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(KeepAliveClient::connect(self.addr, T).unwrap());
            }
            match self.conn.as_mut().map(|c| c.get("app.test", path)) {
                Some(Ok(r)) => {
                    if r.header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                    {
                        self.conn = None;
                    }
                    return r;
                }
                Some(Err(e)) => {
                    self.conn = None;
                    last = Some(e);
                }
                None => unreachable!(),
            }
        }
        panic!("GET {path} via {} failed: {last:?}", self.addr)
    }

    /// (backend that served, status).
    fn hit(&mut self, path: &str) -> (String, u16) {
        let r = self.get(path);
        (r.header("x-backend").unwrap_or("-").to_string(), r.status)
    }

    /// `n` requests that must all be 200: how many each backend served.
    fn tally(&mut self, path: &str, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let (who, status) = self.hit(path);
            assert_eq!(
                status, 200,
                "request {i} of {n} to {path} (served by {who})"
            );
            *counts.entry(who).or_default() += 1;
        }
        counts
    }
}

fn count(m: &BTreeMap<String, usize>, who: &str) -> usize {
    m.get(who).copied().unwrap_or(0)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Sends requests (10 ms apart) until `victim` is down, at most `max` requests. Every
/// non-200 must be a 503 from `victim`. Returns how many requests failed.
fn fail_until_down(lb: &Lb, c: &mut Client, cluster: &str, victim: &str, max: usize) -> usize {
    let mut failed = 0;
    for _ in 0..max {
        let (who, status) = c.hit("/");
        if status != 200 {
            assert_eq!((who.as_str(), status), (victim, 503));
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
        if state(lb, cluster, victim) == "down" {
            return failed;
        }
    }
    panic!(
        "{cluster}/{victim} not down after {max} requests ({failed} failed)\nlog:\n{}",
        log(lb)
    )
}

/// Runs `lb ctl --admin ADDR ARGS...` (bounded): (success, stdout, stderr).
fn ctl(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(lb_bin())
        .arg("ctl")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning lb ctl");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lb ctl {args:?} did not finish within 15 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), out, err)
}

// ---------------------------------------------------------------------------------------------
// 1. The migration (the issue's headline acceptance)
// ---------------------------------------------------------------------------------------------

fn migration_config(listen: SocketAddr, onprem: &Switch, cloud: &Switch, backup: bool) -> String {
    format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    health:
      passive: {{consecutive_errors: 3, cooldown: 1s, max_cooldown: 2s}}
      slow_start: 2s
    endpoints:
      - {{name: onprem, address: "{o}", weight: 100, backup: {backup}}}
      - {{name: cloud, address: "{c}", weight: 100}}
"#,
        o = onprem.addr(),
        c = cloud.addr(),
    )
}

#[test]
fn migration_scenario() {
    let onprem = Switch::start("onprem");
    let cloud = Switch::start("cloud");
    let listen = free_local_addr();
    let lb = start(&migration_config(listen, &onprem, &cloud, false));
    let mut c = Client::new(listen);
    let labels = |state: &'static str| -> [(&'static str, &'static str); 3] {
        [("cluster", "app"), ("endpoint", "cloud"), ("state", state)]
    };

    // Day 0: everything on-prem.
    let e = set_weight(&lb, "app", "cloud", "0");
    assert_eq!(e.get("weight").num(), Some(0.0), "{e:?}");
    assert_eq!(e.get("in_use"), &Json::Bool(false), "{e:?}");
    let m = c.tally("/", 200);
    assert_eq!(count(&m, "onprem"), 200, "{m:?}");

    // 1% → 100%: smooth weighted round robin is exact over each full cycle of
    // (100 + w) / gcd(100, w) picks, w = cloud's weight (percent of 100, rounded up).
    for pct in [1usize, 2, 5, 25, 100] {
        let e = set_weight(&lb, "app", "cloud", &format!("\"{pct}%\""));
        assert_eq!(e.get("weight").num(), Some(pct as f64), "{pct}%: {e:?}");
        assert_eq!(e.get("state").str(), Some("up"), "{pct}%: {e:?}");
        let g = gcd(100, pct);
        let cycle = (100 + pct) / g;
        let cycles = 400usize.div_ceil(cycle);
        let n = cycle * cycles;
        let m = c.tally("/", n);
        let got = count(&m, "cloud");
        assert_eq!(got, cycles * pct / g, "{pct}%: {n} requests: {m:?}");
        assert_eq!(count(&m, "onprem") + got, n, "{m:?}");
        let share = got as f64 / n as f64;
        let want = pct as f64 / (100 + pct) as f64;
        assert!(
            (share - want).abs() < 0.015,
            "{pct}%: share {share} vs {want}"
        );
    }

    // Cloud breaks: ejected after 3 consecutive errors (plus what was in flight).
    cloud.set_status(503);
    let failed = fail_until_down(&lb, &mut c, "app", "cloud", 60);
    assert!(
        (3..=6).contains(&failed),
        "{failed} failed requests before cloud was ejected"
    );
    let d = doc(&lb);
    let e = ep(&d, "app", "cloud");
    assert_eq!(e.get("state").str(), Some("down"), "{e:?}");
    assert_eq!(e.get("in_use"), &Json::Bool(false), "{e:?}");
    let h = e.get("health");
    assert_eq!(h.get("passive").str(), Some("ejected"), "{e:?}");
    let reason = h.get("reason").str().unwrap_or("");
    assert!(
        reason.contains("3 consecutive errors") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(h.get("ejections").num(), Some(1.0), "{e:?}");
    let down_lines = log_lines(&lb, "endpoint is down", Some("cloud"));
    assert_eq!(down_lines.len(), 1, "{down_lines:?}");
    assert_eq!(metric(&lb, "lb_endpoint_state", &labels("down")), 1.0);
    assert_eq!(metric(&lb, "lb_endpoint_state", &labels("up")), 0.0);
    let ejections = [("cluster", "app"), ("endpoint", "cloud")];
    assert_eq!(metric(&lb, "lb_endpoint_ejections_total", &ejections), 1.0);
    let cloud_before = cloud.requests();
    let m = c.tally("/", 200);
    assert_eq!(
        count(&m, "onprem"),
        200,
        "all on-prem while cloud is out: {m:?}"
    );
    assert_eq!(cloud.requests(), cloud_before, "no request reached cloud");

    // Cloud heals: back after the 1 s cool-down, ramping up (slow start 2 s).
    cloud.set_status(200);
    let e = wait_state(&lb, "app", "cloud", "up", Duration::from_secs(5));
    let ramp = e.get("slow_start").num();
    assert!(ramp.is_some_and(|f| f > 0.0 && f < 1.0), "{e:?}");
    let eff = e.get("effective_weight").num().unwrap();
    assert!(
        eff > 0.0 && eff < 100.0,
        "effective weight in slow start: {e:?}"
    );
    let m = c.tally("/", 200);
    assert!(
        count(&m, "cloud") < 80,
        "cloud's share during slow start below its full 50%: {m:?}"
    );
    assert!(!log_lines(&lb, "endpoint is up", Some("cloud")).is_empty());
    assert_eq!(metric(&lb, "lb_endpoint_state", &labels("up")), 1.0);
    assert_eq!(
        metric(&lb, "lb_endpoint_transitions_total", &labels("up")),
        1.0
    );
    wait_ep(
        &lb,
        "app",
        "cloud",
        Duration::from_secs(6),
        "end of slow start",
        |e| e.get("slow_start").is_null() && e.get("effective_weight").num() == Some(100.0),
    );
    let m = c.tally("/", 400);
    let got = count(&m, "cloud");
    assert!((194..=206).contains(&got), "50/50 after slow start: {m:?}");

    // Reload: on-prem becomes the backup; everything goes to cloud.
    lb.reload(&migration_config(listen, &onprem, &cloud, true))
        .unwrap();
    wait_ep(&lb, "app", "onprem", T, "backup after reload", |e| {
        e.get("backup") == &Json::Bool(true)
    });
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "cloud"), 100, "{m:?}");

    // Cloud breaks again: the backup takes over.
    cloud.set_status(503);
    let failed = fail_until_down(&lb, &mut c, "app", "cloud", 60);
    assert!((3..=6).contains(&failed), "{failed} failed requests");
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "onprem"), 100, "backup serves: {m:?}");
    assert_eq!(metric(&lb, "lb_endpoint_ejections_total", &ejections), 2.0);

    // Cloud heals: traffic returns to cloud only (the backup is idle again).
    cloud.set_status(200);
    wait_state(&lb, "app", "cloud", "up", Duration::from_secs(6));
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "cloud"), 100, "{m:?}");
    let d = doc(&lb);
    assert_eq!(
        ep(&d, "app", "onprem").get("effective_weight").num(),
        Some(0.0)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Path split: /v2 migrates, the rest stays
// ---------------------------------------------------------------------------------------------

#[test]
fn path_split_v2_migrates_rest_stays() {
    let onprem = Switch::start("onprem");
    let cloud = Switch::start("cloud");
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{name: v2, hosts: ["*"], path: {{prefix: /v2}}, cluster: migrating}}
  - {{name: rest, hosts: ["*"], cluster: onprem_only}}
clusters:
  - name: onprem_only
    endpoints: [{{name: onprem, address: "{o}", weight: 4}}]
  - name: migrating
    endpoints:
      - {{name: onprem, address: "{o}", weight: 4}}
      - {{name: cloud, address: "{c}", weight: 1}}
"#,
        o = onprem.addr(),
        c = cloud.addr(),
    ));
    let mut c = Client::new(listen);
    // 4:1 → cycle of 5, cloud once per cycle.
    let m = c.tally("/v2/items", 500);
    assert_eq!(
        (count(&m, "onprem"), count(&m, "cloud")),
        (400, 100),
        "{m:?}"
    );
    let cloud_before = cloud.requests();
    let m = c.tally("/other/thing", 200);
    assert_eq!(count(&m, "onprem"), 200, "{m:?}");
    assert_eq!(cloud.requests(), cloud_before, "/other never reaches cloud");

    // The API moves /v2 further (cloud at 4 = 50%); the rest still stays on-prem.
    set_weight(&lb, "migrating", "cloud", "4");
    let m = c.tally("/v2/", 200);
    assert_eq!(
        (count(&m, "onprem"), count(&m, "cloud")),
        (100, 100),
        "{m:?}"
    );
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "onprem"), 100, "{m:?}");
    assert_eq!(cloud.requests(), cloud_before + 100);
    let split = |ep: &str| {
        metric(
            &lb,
            "lb_http_requests_total",
            &[("cluster", "onprem_only"), ("endpoint", ep)],
        )
    };
    assert_eq!((split("onprem"), split("cloud")), (300.0, 0.0));
}

// ---------------------------------------------------------------------------------------------
// 3. Backups: first versus all
// ---------------------------------------------------------------------------------------------

fn backups_config(listen: SocketAddr, s: &[Switch], mode: &str) -> String {
    format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
admin: {{keep_runtime_overrides: true}}
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    backups: {mode}
    endpoints:
      - {{name: p1, address: "{}", weight: 2}}
      - {{name: p2, address: "{}", weight: 1}}
      - {{name: b1, address: "{}", weight: 1, backup: true}}
      - {{name: b2, address: "{}", weight: 3, backup: true}}
"#,
        s[0].addr(),
        s[1].addr(),
        s[2].addr(),
        s[3].addr(),
    )
}

#[test]
fn backups_first_versus_all() {
    let s: Vec<Switch> = ["p1", "p2", "b1", "b2"].map(Switch::start).into();
    let listen = free_local_addr();
    let lb = start(&backups_config(listen, &s, "first"));
    let mut c = Client::new(listen);
    let m = c.tally("/", 300);
    assert_eq!((count(&m, "p1"), count(&m, "p2")), (200, 100), "{m:?}");

    // Both primaries in maintenance: only the first backup serves.
    for p in ["p1", "p2"] {
        let e = set_state(&lb, "app", p, "maint");
        assert_eq!(e.get("state").str(), Some("maint"), "{e:?}");
    }
    let d = doc(&lb);
    assert_eq!(ep(&d, "app", "b1").get("effective_weight").num(), Some(1.0));
    assert_eq!(ep(&d, "app", "b2").get("effective_weight").num(), Some(0.0));
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "b1"), 100, "backups: first: {m:?}");

    // backups: all (the overrides are kept across the reload): both backups by weight 1:3.
    lb.reload(&backups_config(listen, &s, "all")).unwrap();
    wait_log(&lb, "runtime_overrides_kept=2", T);
    let deadline = Instant::now() + T;
    while doc(&lb)
        .get("clusters")
        .items()
        .first()
        .and_then(|c| c.get("backups").str().map(str::to_string))
        != Some("all".into())
    {
        assert!(
            Instant::now() < deadline,
            "reload not applied:\n{}",
            log(&lb)
        );
        std::thread::sleep(POLL);
    }
    assert_eq!(state(&lb, "app", "p1"), "maint");
    let m = c.tally("/", 400);
    assert_eq!(
        (count(&m, "b1"), count(&m, "b2")),
        (100, 300),
        "backups: all: {m:?}"
    );

    // A primary back: backups get nothing.
    let e = set_state(&lb, "app", "p2", "ready");
    assert_eq!(e.get("state").str(), Some("up"), "{e:?}");
    let (b1, b2) = (s[2].requests(), s[3].requests());
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "p2"), 100, "{m:?}");
    assert_eq!((s[2].requests(), s[3].requests()), (b1, b2));
}

// ---------------------------------------------------------------------------------------------
// 4. Active checks: HTTP rise/fall, body_contains, TCP
// ---------------------------------------------------------------------------------------------

#[test]
fn active_http_check_rise_fall() {
    let alpha = Switch::start("alpha");
    let beta = Switch::start("beta");
    let gamma = Switch::start("gamma");
    let delta = Switch::start("delta");
    let ghost = free_local_addr(); // nothing listens there
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: [app.test], cluster: app}}
  - {{hosts: [strict.test], cluster: strict}}
  - {{hosts: [tcp.test], cluster: tcp}}
clusters:
  - name: app
    health:
      active: {{path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2, expect_status: ["200"]}}
    endpoints:
      - {{name: alpha, address: "{a}"}}
      - {{name: beta, address: "{b}"}}
  - name: strict
    health:
      active: {{path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2, body_contains: healthy}}
    endpoints:
      - {{name: gamma, address: "{g}"}}
  - name: tcp
    health:
      active: {{type: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}}
    endpoints:
      - {{name: ghost, address: "{ghost}"}}
      - {{name: delta, address: "{d}"}}
"#,
        a = alpha.addr(),
        b = beta.addr(),
        g = gamma.addr(),
        d = delta.addr(),
    ));
    let three = Duration::from_secs(3);
    // Checks run: both app endpoints pass; a 200 without the text fails; TCP to no listener fails.
    for name in ["alpha", "beta"] {
        wait_ep(&lb, "app", name, three, "passing checks", |e| {
            e.get("health").get("checks_ok").num() >= Some(2.0)
                && e.get("state").str() == Some("up")
        });
    }
    assert!(alpha.checks() >= 2 && beta.checks() >= 2);
    let g = wait_state(&lb, "strict", "gamma", "down", three);
    let why = g.get("health").get("reason").str().unwrap_or("");
    assert!(why.contains("body does not contain"), "{g:?}");
    let gh = wait_state(&lb, "tcp", "ghost", "down", three);
    assert_eq!(gh.get("health").get("active").str(), Some("down"), "{gh:?}");
    let why = gh.get("health").get("reason").str().unwrap_or("");
    assert!(why.starts_with("connect"), "{gh:?}");
    assert_eq!(state(&lb, "tcp", "delta"), "up");

    // alpha fails its checks: down after `fall` failures, traffic avoids it.
    alpha.set_status(503);
    let since = Instant::now();
    let e = wait_state(&lb, "app", "alpha", "down", three);
    assert!(since.elapsed() < three);
    assert_eq!(e.get("health").get("active").str(), Some("down"), "{e:?}");
    assert_eq!(
        e.get("health").get("reason").str(),
        Some("status 503"),
        "{e:?}"
    );
    let mut c = Client::new(listen);
    let m = c.tally("/", 100);
    assert_eq!(count(&m, "beta"), 100, "{m:?}");
    assert!(!log_lines(&lb, "endpoint is down", Some("alpha")).is_empty());

    // alpha heals: up after `rise` passes, and gets traffic again.
    alpha.set_status(200);
    wait_state(&lb, "app", "alpha", "up", three);
    let m = c.tally("/", 100);
    assert!(count(&m, "alpha") >= 40, "{m:?}");
    assert!(!log_lines(&lb, "endpoint is up", Some("alpha")).is_empty());

    let a = |k: &'static str, v: &'static str| -> [(&'static str, &'static str); 3] {
        [("cluster", "app"), ("endpoint", "alpha"), (k, v)]
    };
    assert!(metric(&lb, "lb_health_checks_total", &a("result", "failed")) >= 2.0);
    assert!(metric(&lb, "lb_health_checks_total", &a("result", "ok")) >= 4.0);
    assert!(metric(&lb, "lb_endpoint_transitions_total", &a("state", "down")) >= 1.0);
    assert!(metric(&lb, "lb_endpoint_transitions_total", &a("state", "up")) >= 1.0);
    let ghost_labels = [("cluster", "tcp"), ("endpoint", "ghost")];
    let down = [ghost_labels[0], ghost_labels[1], ("state", "down")];
    assert_eq!(metric(&lb, "lb_endpoint_transitions_total", &down), 1.0);
    assert_eq!(metric(&lb, "lb_endpoint_state", &down), 1.0);
    let failed = [ghost_labels[0], ghost_labels[1], ("result", "failed")];
    assert!(metric(&lb, "lb_health_checks_total", &failed) >= 2.0);
}

// ---------------------------------------------------------------------------------------------
// 5. max_ejection_percent
// ---------------------------------------------------------------------------------------------

#[test]
fn max_ejection_percent_protects_the_cluster() {
    let x = Switch::start("x");
    let y = Switch::start("y");
    x.set_status(503);
    y.set_status(503);
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    health:
      passive: {{consecutive_errors: 3, cooldown: 30s, max_cooldown: 60s, max_ejection_percent: 50}}
    endpoints:
      - {{name: x, address: "{}"}}
      - {{name: y, address: "{}"}}
"#,
        x.addr(),
        y.addr()
    ));
    let mut c = Client::new(listen);
    let mut served = BTreeMap::new();
    let deadline = Instant::now() + T;
    for _ in 0..60 {
        let (who, status) = c.hit("/");
        assert_eq!(status, 503);
        *served.entry(who).or_insert(0usize) += 1;
        std::thread::sleep(Duration::from_millis(10));
        if !log_lines(&lb, "not ejecting", None).is_empty() || Instant::now() > deadline {
            break;
        }
    }
    let lines = log_lines(&lb, "not ejecting", None);
    assert!(!lines.is_empty(), "{served:?}\nlog:\n{}", log(&lb));
    let d = doc(&lb);
    let states: Vec<&str> = ["x", "y"]
        .iter()
        .map(|n| ep(&d, "app", n).get("state").str().unwrap_or("?"))
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, ["down", "up"], "exactly one ejected: {states:?}");
    let survivor = if states[0] == "up" { "x" } else { "y" };
    assert_eq!(
        log_lines(&lb, "not ejecting", Some(survivor)).len(),
        lines.len(),
        "only the survivor is refused: {lines:?}"
    );
    assert_eq!(
        metric(&lb, "lb_endpoint_ejections_total", &[("cluster", "app")]),
        1.0
    );
    assert_eq!(log_lines(&lb, "endpoint is down", None).len(), 1);
    // The survivor keeps serving (its 503s go to the client).
    for _ in 0..10 {
        assert_eq!(c.hit("/"), (survivor.to_string(), 503));
    }
    assert_eq!(state(&lb, "app", survivor), "up");
}

// ---------------------------------------------------------------------------------------------
// 6. Error-ratio ejection
// ---------------------------------------------------------------------------------------------

#[test]
fn error_ratio_ejects() {
    let good = Switch::start("good");
    let flaky = Switch::start("flaky");
    flaky.set_alternate(true);
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    health:
      passive: {{consecutive_errors: 1000, error_percent: 50, window: 2s, min_requests: 10, cooldown: 30s, max_cooldown: 60s}}
    endpoints:
      - {{name: good, address: "{}"}}
      - {{name: flaky, address: "{}"}}
"#,
        good.addr(),
        flaky.addr()
    ));
    let mut c = Client::new(listen);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut sent = 0;
    let mut ejected = false;
    while sent < 2000 && Instant::now() < deadline {
        let (who, status) = c.hit("/");
        assert!(
            status == 200 || (who == "flaky" && status == 503),
            "{who} {status}"
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
        if sent % 10 == 0 && state(&lb, "app", "flaky") == "down" {
            ejected = true;
            break;
        }
    }
    assert!(
        ejected,
        "flaky not ejected after {sent} requests\nlog:\n{}",
        log(&lb)
    );
    let d = doc(&lb);
    let e = ep(&d, "app", "flaky");
    let reason = e.get("health").get("reason").str().unwrap_or("");
    assert!(
        reason.contains("errors") && !reason.contains("consecutive"),
        "{e:?}"
    );
    assert_eq!(e.get("health").get("ejections").num(), Some(1.0), "{e:?}");
    assert_eq!(ep(&d, "app", "good").get("state").str(), Some("up"));
    assert_eq!(
        metric(
            &lb,
            "lb_endpoint_ejections_total",
            &[("cluster", "app"), ("endpoint", "flaky")]
        ),
        1.0
    );
    let lines = log_lines(&lb, "endpoint is down", Some("flaky"));
    assert!(lines.iter().any(|l| l.contains("errors")), "{lines:?}");
    let m = c.tally("/", 50);
    assert_eq!(count(&m, "good"), 50, "{m:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. Drain / maint / ready through lb ctl
// ---------------------------------------------------------------------------------------------

#[test]
fn drain_and_maint_via_api_and_ctl() {
    let onprem = Switch::start("onprem");
    let cloud = Switch::start("cloud");
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    endpoints:
      - {{name: onprem, address: "{}"}}
      - {{name: cloud, address: "{}"}}
"#,
        onprem.addr(),
        cloud.addr()
    ));
    let admin = lb.admin;
    let mut c = Client::new(listen);
    let m = c.tally("/", 10);
    assert_eq!((count(&m, "onprem"), count(&m, "cloud")), (5, 5), "{m:?}");

    let (ok, out, err) = ctl(admin, &["drain", "app", "cloud"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("app/cloud: state drain"), "{out}");
    let before = cloud.requests();
    let m = c.tally("/", 50);
    assert_eq!(count(&m, "onprem"), 50, "{m:?}");
    assert_eq!(cloud.requests(), before);
    let d = doc(&lb);
    let e = ep(&d, "app", "cloud");
    assert_eq!(e.get("override").get("state").str(), Some("drain"), "{e:?}");

    let (ok, out, err) = ctl(admin, &["ready", "app", "cloud"]);
    assert!(ok && out.contains("app/cloud: state up"), "{out}{err}");
    assert!(ep(&doc(&lb), "app", "cloud").get("override").is_null());
    let m = c.tally("/", 10);
    assert_eq!((count(&m, "onprem"), count(&m, "cloud")), (5, 5), "{m:?}");

    let (ok, out, err) = ctl(admin, &["maint", "app", "cloud"]);
    assert!(ok && out.contains("app/cloud: state maint"), "{out}{err}");
    assert_eq!(state(&lb, "app", "cloud"), "maint");
    let maint = [
        ("cluster", "app"),
        ("endpoint", "cloud"),
        ("state", "maint"),
    ];
    assert_eq!(metric(&lb, "lb_endpoint_state", &maint), 1.0);
    let m = c.tally("/", 20);
    assert_eq!(count(&m, "onprem"), 20, "{m:?}");

    let (ok, out, err) = ctl(admin, &["status"]);
    assert!(ok, "{err}");
    let row = |name: &str, addr: SocketAddr| {
        out.lines()
            .any(|l| l.contains(name) && l.contains(&addr.to_string()))
    };
    assert!(
        out.contains("cluster app") && row("onprem", onprem.addr()) && row("cloud", cloud.addr()),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("cloud") && l.contains("maint")),
        "{out}"
    );

    let (ok, out, err) = ctl(admin, &["set-weight", "app", "nope", "5"]);
    assert!(!ok, "{out}");
    assert!(err.contains("404") && err.contains("nope"), "{err}");
    // And the API itself: the same refusal as JSON, nothing changed.
    let (status, body) = api_put(&lb, "app", "nope", "{\"weight\": 5}");
    assert_eq!(status, 404, "{body}");
    assert!(Json::parse(&body).unwrap().get("error").str().is_some());
    assert_eq!(state(&lb, "app", "cloud"), "maint");
}

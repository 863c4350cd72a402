//! Helpers for tests that drive `lb` through its admin port: lb's log without colours, the
//! runtime API and status document (serde_json), `lb ctl`, and a reconnecting client.

use lb_tests::http::{KeepAliveClient, Response};
use lb_tests::lb::Lb;
use lb_tests::lb_bin;
use lb_tests::process::ChildGuard;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Timeout of one admin request or one client request to lb.
const T: Duration = Duration::from_secs(8);
/// Poll step of every wait here.
const POLL: Duration = Duration::from_millis(20);
/// Longest an `lb` command (e.g. `lb ctl`) may run.
const CMD_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Waiting, metrics and the log

/// Polls `f` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The value of a metric summed over series with these labels (panics when unreadable).
pub fn metric(lb: &Lb, name: &str, labels: &[(&str, &str)]) -> f64 {
    lb.metric(name, labels).unwrap()
}

/// lb's log without ANSI colour sequences (ESC [ ... final byte; tracing colours field names).
pub fn plain_log(lb: &Lb) -> String {
    let raw = lb.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls the uncoloured log until it contains `needle`; panics with the log after `timeout`.
pub fn wait_log(lb: &Lb, needle: &str, timeout: Duration) {
    if !wait_until(timeout, || plain_log(lb).contains(needle)) {
        panic!(
            "{needle:?} not logged within {timeout:?}; log:\n{}",
            plain_log(lb)
        );
    }
}

/// Uncoloured log lines with `message` about `endpoint` (None: any endpoint); tracing writes
/// the field as `endpoint=NAME` or `endpoint="NAME"`.
pub fn log_lines(lb: &Lb, message: &str, endpoint: Option<&str>) -> Vec<String> {
    let about = |l: &str| match endpoint {
        None => true,
        Some(e) => {
            l.contains(&format!("endpoint=\"{e}\""))
                || l.contains(&format!("endpoint={e} "))
                || l.ends_with(&format!("endpoint={e}"))
        }
    };
    plain_log(lb)
        .lines()
        .filter(|l| l.contains(message) && about(l))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The admin API and the status document

/// One request to the admin endpoint on a fresh connection (`connection: close`).
pub fn admin_request(
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

/// The body of `r` as JSON (panics with the status and text when it is not JSON).
pub fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): status {} {:?}", r.status, r.text()))
}

/// PUT /api/v1/clusters/CLUSTER/endpoints/ENDPOINT with `body` as application/json, no token.
pub fn api_put(addr: SocketAddr, cluster: &str, endpoint: &str, body: &[u8]) -> Response {
    let path = format!("/api/v1/clusters/{cluster}/endpoints/{endpoint}");
    let json = [("content-type", "application/json")];
    admin_request(addr, "PUT", &path, &json, body)
}

/// [`api_put`] of `body` that must answer 200 about `cluster`; returns the whole reply
/// (`version`, `cluster`, `endpoint`).
pub fn put_endpoint(addr: SocketAddr, cluster: &str, endpoint: &str, body: Value) -> Value {
    let r = api_put(addr, cluster, endpoint, body.to_string().as_bytes());
    assert_eq!(
        r.status,
        200,
        "PUT {body} on {cluster}/{endpoint}: {}",
        r.text()
    );
    let v = json_of(&r);
    assert_eq!(v["cluster"], cluster, "{v}");
    v
}

/// The status document (GET /api/v1/status through [`Lb::admin_get`], must be 200).
pub fn status_doc(lb: &Lb) -> Value {
    let r = lb.admin_get("/api/v1/status").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    json_of(&r)
}

/// The item of array `v[field]` whose `name` is `name` (a cluster, endpoint or route).
pub fn named<'a>(v: &'a Value, field: &str, name: &str) -> &'a Value {
    v[field]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no {field} entry {name:?} in {v}"))
}

/// An endpoint object of the status document, by cluster and endpoint name.
pub fn endpoint<'a>(doc: &'a Value, cluster: &str, name: &str) -> &'a Value {
    named(named(doc, "clusters", cluster), "endpoints", name)
}

/// An endpoint's state now ("?" when the document has none).
pub fn endpoint_state(lb: &Lb, cluster: &str, name: &str) -> String {
    let doc = status_doc(lb);
    endpoint(&doc, cluster, name)["state"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// Polls the status document until `pred` holds for the endpoint, up to `timeout`; returns
/// that endpoint object, or panics (with `what`, the last one seen and the log).
pub fn wait_endpoint(
    lb: &Lb,
    cluster: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(timeout, || {
        last = endpoint(&status_doc(lb), cluster, name).clone();
        pred(&last)
    });
    if !reached {
        panic!(
            "{cluster}/{name}: {what} not reached within {timeout:?}; last: {last}\nlog:\n{}",
            plain_log(lb)
        );
    }
    last
}

/// [`wait_endpoint`] until its `state` is `want`.
pub fn wait_state(lb: &Lb, cluster: &str, name: &str, want: &str, timeout: Duration) -> Value {
    wait_endpoint(lb, cluster, name, timeout, &format!("state {want}"), |e| {
        e["state"] == want
    })
}

// ---------------------------------------------------------------------------------------------
// lb commands

/// How an `lb` command ended and what it printed.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Exited with status 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout, then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `lb ARGS` to its end (killed, and the test failed, after 15 s).
pub fn run_lb(args: &[&str]) -> Output {
    let mut child = Command::new(lb_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning lb");
    // Read both pipes while it runs (a full pipe would block it).
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let mut guard = ChildGuard(child);
    let status = guard.wait_timeout(CMD_TIMEOUT);
    drop(guard); // kills it if it is still running, so the readers see EOF
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!("lb {args:?} did not finish within {CMD_TIMEOUT:?}; {stdout}{stderr}");
    };
    Output {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// `lb ctl --admin ADMIN ARGS...` through [`run_lb`].
pub fn ctl(admin: SocketAddr, args: &[&str]) -> Output {
    let admin = admin.to_string();
    let mut all = vec!["ctl", "--admin", admin.as_str()];
    all.extend_from_slice(args);
    run_lb(&all)
}

// ---------------------------------------------------------------------------------------------
// A client to lb's listener

/// A keep-alive client to lb (Host `app.test`) that reconnects once if lb closed the connection.
pub struct Client {
    addr: SocketAddr,
    conn: Option<KeepAliveClient>,
}

impl Client {
    /// A client for lb's listener at `addr` (connects on first use).
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    /// GET `path` (any status), on a new connection when lb closed the last one.
    pub fn get(&mut self, path: &str) -> Response {
        let mut last = None;
        for _ in 0..2 {
            let conn = match &mut self.conn {
                Some(c) => c,
                None => self
                    .conn
                    .insert(KeepAliveClient::connect(self.addr, T).unwrap()),
            };
            match conn.get("app.test", path) {
                Ok(r) => {
                    if r.header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                    {
                        self.conn = None;
                    }
                    return r;
                }
                Err(e) => {
                    self.conn = None;
                    last = Some(e);
                }
            }
        }
        panic!("GET {path} via {} failed: {last:?}", self.addr)
    }

    /// (backend that served, status).
    pub fn hit(&mut self, path: &str) -> (String, u16) {
        let r = self.get(path);
        (r.header("x-backend").unwrap_or("-").to_string(), r.status)
    }

    /// `n` requests that must all be 200: how many each backend served.
    pub fn tally(&mut self, path: &str, n: usize) -> BTreeMap<String, usize> {
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

    /// `n` requests that must all be 200 and served by `who`.
    pub fn all_to(&mut self, path: &str, n: usize, who: &str) {
        let m = self.tally(path, n);
        assert_eq!(count(&m, who), n, "all {n} to {path} by {who}: {m:?}");
    }
}

/// How many requests of a [`Client::tally`] `who` served.
pub fn count(m: &BTreeMap<String, usize>, who: &str) -> usize {
    m.get(who).copied().unwrap_or(0)
}

//! The real `lb` process on loopback: routing precedence (hosts, paths, methods, headers, query),
//! balancing (round robin, drain, least connections, P2C, Maglev hash, affinity cookie), weighted
//! cluster splits and canaries, redirects and rewrites, header work, per-route ACLs and the
//! access log (JSON and text).

mod support;

use lb_tests::http::{self, Backend, KeepAliveClient, Response};
use lb_tests::lb::{free_local_addr, Lb};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::origin::Origin;

const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn backend(name: &str) -> Backend {
    Backend::start(None, "127.0.0.1:0".parse().unwrap(), name).unwrap()
}

/// Starts lb with `yaml` (which must use `listen`); panics with the log on failure.
fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, &[])
}

/// One request on a fresh connection (`Connection: close`) with extra headers.
fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut c = KeepAliveClient::connect(addr, T).unwrap();
    let mut all = headers.to_vec();
    all.push(("connection", "close"));
    c.request(method, host, path, &all, b"")
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e:#}"))
}

fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    send(addr, "GET", host, path, &[])
}

/// The `x-backend` header of a 200 response (panics on any other status).
fn served_by(r: &Response) -> String {
    assert_eq!(
        r.status,
        200,
        "expected 200, got {}: {}",
        r.status,
        r.text()
    );
    r.header("x-backend").unwrap_or("?").to_string()
}

/// Every value of header `name` (case-insensitive) in order.
fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

fn tally(c: &mut KeepAliveClient, host: &str, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = c.get(host, path).unwrap();
        *counts.entry(served_by(&r)).or_default() += 1;
    }
    counts
}

/// Waits (bounded) until the proxy has applied config version `want` (1 = the initial one).
fn wait_applied(lb: &Lb, want: f64) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let v = lb
            .metric("lb_snapshot_applied_version", &[("consumer", "proxy")])
            .unwrap_or(0.0);
        if v >= want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("config version {want} never applied; log:\n{}", lb.log());
}

fn reload(lb: &Lb, yaml: &str, version: f64) {
    lb.reload(yaml).unwrap();
    wait_applied(lb, version);
}

/// Polls `f` until it returns true (bounded by `T`).
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// GET with `Connection: close` from a chosen loopback source address (127.0.0.x), so the
/// proxy sees different client IPs. The destination is always `dst` (127.0.0.1).
fn get_from(src: Ipv4Addr, dst: SocketAddr, host: &str, path: &str) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(src.into(), 0))?;
            tokio::time::timeout(T, s.connect(dst))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))?
        })
        .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
    let mut stream = stream.into_std().unwrap();
    drop(rt);
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let raw = read_to_eof(&mut stream);
    parse_response(&raw)
        .unwrap_or_else(|| panic!("bad response: {:?}", String::from_utf8_lossy(&raw)))
}

fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline && out.len() < 1 << 20 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Parses a whole `Connection: close` response (Content-Length or read-to-EOF body).
fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Status code of a raw exchange (0 if none).
fn raw_status(addr: SocketAddr, req: &str) -> u16 {
    let out = http::raw(addr, req.as_bytes(), T).unwrap();
    parse_response(&out).map_or(0, |r| r.status)
}

// --- access log: lines of flat JSON objects ---------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum J {
    Str(String),
    /// Numbers, true/false, null: the raw token.
    Raw(String),
}

impl J {
    fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            J::Raw(_) => None,
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            J::Raw(r) => r.parse().ok(),
            J::Str(_) => None,
        }
    }
    fn is_null(&self) -> bool {
        *self == J::Raw("null".into())
    }
}

/// Parses one flat JSON object (string/number/bool/null values), as the access log writes.
fn parse_flat_json(line: &str) -> Option<HashMap<String, J>> {
    let b: Vec<char> = line.trim().chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Option<String> {
        if b.get(*i) != Some(&'"') {
            return None;
        }
        *i += 1;
        let mut s = String::new();
        while *i < b.len() {
            let c = b[*i];
            *i += 1;
            match c {
                '"' => return Some(s),
                '\\' => {
                    let e = *b.get(*i)?;
                    *i += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'u' => {
                            let hex: String = b.get(*i..*i + 4)?.iter().collect();
                            *i += 4;
                            s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        other => s.push(other),
                    }
                }
                c => s.push(c),
            }
        }
        None
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&'{') {
        return None;
    }
    i += 1;
    let mut out = HashMap::new();
    loop {
        skip_ws(&mut i);
        if b.get(i) == Some(&'}') {
            return Some(out);
        }
        let key = string(&mut i)?;
        skip_ws(&mut i);
        if b.get(i) != Some(&':') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let value = if b.get(i) == Some(&'"') {
            J::Str(string(&mut i)?)
        } else {
            let start = i;
            while i < b.len() && !matches!(b[i], ',' | '}') && !b[i].is_whitespace() {
                i += 1;
            }
            J::Raw(b[start..i].iter().collect())
        };
        out.insert(key, value);
        skip_ws(&mut i);
        match b.get(i) {
            Some(',') => i += 1,
            Some('}') => return Some(out),
            _ => return None,
        }
    }
}

/// Access-log JSON records in lb's output.
fn json_records(lb: &Lb) -> Vec<HashMap<String, J>> {
    lb.log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(parse_flat_json)
        .collect()
}

/// Waits (bounded) for the JSON record whose `path` is `path`.
fn wait_record(lb: &Lb, path: &str) -> HashMap<String, J> {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if let Some(r) = json_records(lb)
            .into_iter()
            .find(|r| r.get("path").and_then(J::str) == Some(path))
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no access-log record for {path}; log:\n{}", lb.log());
}

fn field<'a>(rec: &'a HashMap<String, J>, name: &str) -> &'a J {
    rec.get(name)
        .unwrap_or_else(|| panic!("record has no {name:?}: {rec:?}"))
}

fn sfield<'a>(rec: &'a HashMap<String, J>, name: &str) -> &'a str {
    field(rec, name)
        .str()
        .unwrap_or_else(|| panic!("{name} is not a string: {rec:?}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Routing precedence
// ---------------------------------------------------------------------------------------------

#[test]
fn hosts_exact_then_longest_wildcard_then_any() {
    let names = ["exact", "wild", "deep", "any"];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    // Config order is the reverse of precedence: order must not matter.
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: any, hosts: ["*"], cluster: any}}
  - {{name: wild, hosts: ["*.example.test"], cluster: wild}}
  - {{name: deep, hosts: ["*.deep.example.test"], cluster: deep}}
  - {{name: exact, hosts: [api.example.test], cluster: exact}}
clusters:
  - {{name: exact, endpoints: [{{address: "{}"}}]}}
  - {{name: wild, endpoints: [{{address: "{}"}}]}}
  - {{name: deep, endpoints: [{{address: "{}"}}]}}
  - {{name: any, endpoints: [{{address: "{}"}}]}}
"#,
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr(),
        bs[3].addr()
    );
    let _lb = start(&yaml);
    for (host, want) in [
        ("api.example.test", "exact"),
        ("API.Example.TEST:8080", "exact"),
        ("foo.example.test", "wild"),
        ("a.b.example.test", "wild"),
        ("deep.example.test", "wild"),
        ("x.deep.example.test", "deep"),
        ("y.x.deep.example.test", "deep"),
        ("example.test", "any"),
        ("other.test", "any"),
        ("example.test.evil", "any"),
        ("xexample.test", "any"),
    ] {
        assert_eq!(served_by(&get(listen, host, "/")), want, "Host: {host}");
    }
}

#[test]
fn paths_exact_then_longest_prefix_then_regex_then_catch_all() {
    let names = ["catch", "regex", "api", "apiv1", "exact"];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    // Listed from least to most specific: precedence, not config order, must decide.
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: catch, hosts: [app.test], cluster: catch}}
  - {{name: regex, hosts: [app.test], path: {{regex: "^/(api/)?v[0-9]+/items$"}}, cluster: regex}}
  - {{name: api, hosts: [app.test], path: {{prefix: /api}}, cluster: api}}
  - {{name: apiv1, hosts: [app.test], path: {{prefix: /api/v1/}}, cluster: apiv1}}
  - {{name: exact, hosts: [app.test], path: {{exact: /api/v1/items}}, cluster: exact}}
  - {{name: only-prefix, hosts: [strict.test], path: {{prefix: /api}}, cluster: api}}
clusters:
  - {{name: catch, endpoints: [{{address: "{}"}}]}}
  - {{name: regex, endpoints: [{{address: "{}"}}]}}
  - {{name: api, endpoints: [{{address: "{}"}}]}}
  - {{name: apiv1, endpoints: [{{address: "{}"}}]}}
  - {{name: exact, endpoints: [{{address: "{}"}}]}}
"#,
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr(),
        bs[3].addr(),
        bs[4].addr()
    );
    let _lb = start(&yaml);
    for (path, want) in [
        ("/api/v1/items", "exact"),
        ("/api/v1/items?x=1", "exact"),
        ("/api/v1/items/", "apiv1"),
        ("/api/v1/other", "apiv1"),
        ("/api/v1", "apiv1"),
        ("/api/v1x", "api"),
        ("/api/v2/items", "api"),
        ("/api", "api"),
        ("/api/", "api"),
        ("/apix", "catch"),
        ("/v3/items", "regex"),
        ("/v3/items/", "catch"),
        ("/v3/other", "catch"),
        ("/", "catch"),
    ] {
        assert_eq!(
            served_by(&get(listen, "app.test", path)),
            want,
            "GET {path}"
        );
    }
    // A host whose only route is prefix /api: segment boundaries, then nothing.
    assert_eq!(served_by(&get(listen, "strict.test", "/api/x")), "api");
    assert_eq!(get(listen, "strict.test", "/apix").status, 404);
    assert_eq!(get(listen, "strict.test", "/").status, 404);
}

#[test]
fn method_header_and_query_conditions() {
    let names = [
        "write",
        "m-any",
        "h-exact",
        "h-regex",
        "h-present",
        "h-both",
        "h-plain",
        "q-exact",
        "q-present",
        "q-plain",
    ];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    let mut clusters = String::new();
    for (n, b) in names.iter().zip(&bs) {
        clusters.push_str(&format!(
            "  - {{name: {n}, endpoints: [{{address: \"{}\"}}]}}\n",
            b.addr()
        ));
    }
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [c.test], path: {{prefix: /m}}, cluster: m-any}}
  - {{hosts: [c.test], path: {{prefix: /m}}, methods: [POST, PUT], cluster: write}}
  - {{hosts: [c.test], path: {{prefix: /h}}, cluster: h-plain}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: X-Env, exact: beta}}], cluster: h-exact}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: user-agent, regex: "^curl/"}}], cluster: h-regex}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: x-debug, present: true}}], cluster: h-present}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: x-env, exact: beta}}, {{name: x-debug, present: true}}], cluster: h-both}}
  - {{hosts: [c.test], path: {{prefix: /q}}, cluster: q-plain}}
  - {{hosts: [c.test], path: {{prefix: /q}}, query: [{{name: debug, exact: "1"}}], cluster: q-exact}}
  - {{hosts: [c.test], path: {{prefix: /q}}, query: [{{name: trace, present: true}}], cluster: q-present}}
clusters:
{clusters}"#
    );
    let _lb = start(&yaml);
    let req =
        |m: &str, path: &str, h: &[(&str, &str)]| served_by(&send(listen, m, "c.test", path, h));
    // Methods.
    assert_eq!(req("POST", "/m", &[("content-length", "0")]), "write");
    assert_eq!(req("PUT", "/m/x", &[("content-length", "0")]), "write");
    assert_eq!(req("GET", "/m", &[]), "m-any");
    assert_eq!(req("DELETE", "/m", &[]), "m-any");
    // Headers: exact (case-sensitive value, case-insensitive name), regex, present, both.
    assert_eq!(req("GET", "/h", &[("x-env", "beta")]), "h-exact");
    assert_eq!(req("GET", "/h", &[("X-ENV", "beta")]), "h-exact");
    assert_eq!(req("GET", "/h", &[("x-env", "Beta")]), "h-plain");
    assert_eq!(req("GET", "/h", &[("x-env", "beta2")]), "h-plain");
    assert_eq!(req("GET", "/h", &[("user-agent", "curl/8.5")]), "h-regex");
    assert_eq!(
        req("GET", "/h", &[("user-agent", "wget curl/8")]),
        "h-plain"
    );
    assert_eq!(req("GET", "/h", &[("x-debug", "")]), "h-present");
    assert_eq!(req("GET", "/h", &[("x-debug", "0")]), "h-present");
    assert_eq!(
        req("GET", "/h", &[("x-env", "beta"), ("x-debug", "1")]),
        "h-both",
        "two conditions beat one"
    );
    assert_eq!(req("GET", "/h", &[]), "h-plain");
    // Query: exact, present (with or without a value), names matched whole.
    assert_eq!(req("GET", "/q?debug=1", &[]), "q-exact");
    assert_eq!(req("GET", "/q?a=b&debug=1", &[]), "q-exact");
    assert_eq!(req("GET", "/q?debug=0", &[]), "q-plain");
    assert_eq!(req("GET", "/q?debug=10", &[]), "q-plain");
    assert_eq!(req("GET", "/q?a=1&trace", &[]), "q-present");
    assert_eq!(req("GET", "/q?trace=", &[]), "q-present");
    assert_eq!(req("GET", "/q?trace=yes", &[]), "q-present");
    assert_eq!(req("GET", "/q?xtrace=1", &[]), "q-plain");
    assert_eq!(req("GET", "/q", &[]), "q-plain");
}

#[test]
fn v2_migrates_to_new_cluster_the_rest_stays_on_old() {
    let (old, new) = (backend("old"), backend("new"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: rest, hosts: [app.test], cluster: old}}
  - {{name: v2, hosts: [app.test], path: {{regex: "^/v2(/|$)"}}, cluster: new}}
  - {{name: rest2, hosts: [app2.test], cluster: old}}
  - {{name: v2p, hosts: [app2.test], path: {{prefix: /v2}}, cluster: new}}
clusters:
  - {{name: old, endpoints: [{{address: "{}"}}]}}
  - {{name: new, endpoints: [{{address: "{}"}}]}}
"#,
        old.addr(),
        new.addr()
    );
    let _lb = start(&yaml);
    for host in ["app.test", "app2.test"] {
        for (path, want) in [
            ("/v2/users", "new"),
            ("/v2/users/7?full=1", "new"),
            ("/v2", "new"),
            ("/v2/", "new"),
            ("/v20", "old"),
            ("/v2x/users", "old"),
            ("/v1/users", "old"),
            ("/users/v2", "old"),
            ("/", "old"),
        ] {
            assert_eq!(served_by(&get(listen, host, path)), want, "{host}{path}");
        }
    }
    // The path reaches the new cluster unchanged.
    assert_eq!(new.last_request_line(), "GET /v2/ HTTP/1.1");
}

#[test]
fn no_route_is_404_and_malformed_host_is_400() {
    let b = backend("only");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [known.test], path: {{prefix: /app}}, cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    assert_eq!(served_by(&get(listen, "known.test", "/app")), "only");
    assert_eq!(get(listen, "unknown.test", "/app").status, 404);
    assert_eq!(get(listen, "known.test", "/other").status, 404);
    assert_eq!(get(listen, "sub.known.test", "/app").status, 404);
    for (what, req) in [
        ("space in Host", "GET /app HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
        (
            "two Host headers",
            "GET /app HTTP/1.1\r\nHost: known.test\r\nHost: known.test\r\nConnection: close\r\n\r\n",
        ),
        ("missing Host", "GET /app HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("bad port", "GET /app HTTP/1.1\r\nHost: known.test:8x\r\nConnection: close\r\n\r\n"),
        ("slash in Host", "GET /app HTTP/1.1\r\nHost: known.test/x\r\nConnection: close\r\n\r\n"),
        ("userinfo in Host", "GET /app HTTP/1.1\r\nHost: u@known.test\r\nConnection: close\r\n\r\n"),
    ] {
        assert_eq!(raw_status(listen, req), 400, "{what}");
    }
    assert_eq!(b.requests(), 1, "bad requests must not reach the backend");
}

// ---------------------------------------------------------------------------------------------
// 2. Balancing
// ---------------------------------------------------------------------------------------------

#[test]
fn round_robin_splits_exactly_by_weight() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: web}}]
clusters:
  - name: web
    balance: round_robin
    endpoints:
      - {{address: "{}", weight: 3}}
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 0}}
"#,
        a.addr(),
        b.addr(),
        c.addr()
    );
    let _lb = start(&yaml);
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "rr.test", "/", 40);
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), None, "weight 0 got traffic: {counts:?}");
    assert_eq!(c.requests(), 0);
}

#[test]
fn weight_zero_drains_new_requests_but_in_flight_one_completes() {
    let a = Origin::plain("a").unwrap();
    let b = Origin::plain("b").unwrap();
    let listen = free_local_addr();
    let config = |wa: u16, wb: u16| {
        format!(
            r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: web}}]
clusters:
  - name: web
    endpoints:
      - {{address: "{}", weight: {wa}}}
      - {{address: "{}", weight: {wb}}}
"#,
            a.addr(),
            b.addr()
        )
    };
    let lb = start(&config(1, 0));
    let slow = std::thread::spawn(move || {
        http::get(listen, "drain.test", "/delay/3000", Duration::from_secs(10))
    });
    wait_until("the slow request to reach a", || a.requests() == 1);
    reload(&lb, &config(0, 1), 2.0);
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "drain.test", "/", 10);
    assert!(
        !slow.is_finished(),
        "the slow request ended before the reload took effect: nothing was drained in flight"
    );
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "drained endpoint got new requests: {counts:?}"
    );
    let r = slow
        .join()
        .unwrap()
        .expect("in-flight request to the drained endpoint");
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("a")),
        "{}",
        r.text()
    );
    assert_eq!(r.text(), "a\n");
    assert_eq!(a.requests(), 1);
    assert_eq!(b.requests(), 10);
}

#[test]
fn least_connections_avoids_busy_endpoints() {
    let os: Vec<Origin> = ["a", "b", "c"]
        .iter()
        .map(|n| Origin::plain(n).unwrap())
        .collect();
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: lc}}]
clusters:
  - name: lc
    balance: least_connections
    endpoints: [{{address: "{}"}}, {{address: "{}"}}, {{address: "{}"}}]
"#,
        os[0].addr(),
        os[1].addr(),
        os[2].addr()
    );
    let _lb = start(&yaml);
    let total = |os: &[Origin]| os.iter().map(Origin::requests).sum::<u64>();
    let slow = |n: u64| {
        let h = std::thread::spawn(move || {
            http::get(listen, "lc.test", "/delay/4000", Duration::from_secs(10))
        });
        wait_until("slow request to land", || total(&os) == n);
        h
    };
    let s1 = slow(1);
    let s2 = slow(2);
    let busy: Vec<usize> = (0..3).filter(|i| os[*i].requests() == 1).collect();
    assert_eq!(busy.len(), 2, "two slow requests on the same endpoint");
    let idle = (0..3).find(|i| !busy.contains(i)).unwrap();
    let idle_name = ["a", "b", "c"][idle];
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "lc.test", "/", 8);
    assert_eq!(
        counts.get(idle_name),
        Some(&8),
        "requests went to busy endpoints: {counts:?}"
    );
    assert!(
        !s1.is_finished() && !s2.is_finished(),
        "slow requests ended early: the endpoints were not busy during the check"
    );
    for h in [s1, s2] {
        assert_eq!(h.join().unwrap().unwrap().status, 200);
    }
    // Once idle again, every endpoint gets requests.
    let counts = tally(&mut client, "lc.test", "/", 9);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn random_p2c_spreads_over_weighted_endpoints_never_weight_zero() {
    let names = ["a", "b", "c", "z"];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: r}}]
clusters:
  - name: r
    balance: random
    endpoints:
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 2}}
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 0}}
"#,
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr(),
        bs[3].addr()
    );
    let _lb = start(&yaml);
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "r.test", "/", 200);
    for n in ["a", "b", "c"] {
        assert!(
            counts.get(n).is_some_and(|c| *c >= 10),
            "{n} starved: {counts:?}"
        );
    }
    assert_eq!(
        counts.get("z"),
        None,
        "weight-0 endpoint chosen: {counts:?}"
    );
    assert_eq!(bs[3].requests(), 0);
}

/// Four backends shared by four hash clusters (one per key kind), one host each.
struct HashSetup {
    bs: Vec<Backend>,
    listen: SocketAddr,
}

fn hash_yaml(s: &HashSetup, endpoints: &[usize]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|i| format!("{{address: \"{}\"}}", s.bs[*i].addr()))
        .collect();
    let eps = eps.join(", ");
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [ip.test], cluster: hip}}
  - {{hosts: [hdr.test], cluster: hhdr}}
  - {{hosts: [ck.test], cluster: hck}}
  - {{hosts: [uri.test], cluster: huri}}
clusters:
  - {{name: hip, balance: hash, hash: {{on: source_ip}}, endpoints: [{eps}]}}
  - {{name: hhdr, balance: hash, hash: {{on: header, name: x-user}}, endpoints: [{eps}]}}
  - {{name: hck, balance: hash, hash: {{on: cookie, name: session}}, endpoints: [{eps}]}}
  - {{name: huri, balance: hash, hash: {{on: uri}}, endpoints: [{eps}]}}
"#,
        listen = s.listen
    )
}

fn hash_setup() -> HashSetup {
    HashSetup {
        bs: ["e0", "e1", "e2", "e3"]
            .iter()
            .map(|n| backend(n))
            .collect(),
        listen: free_local_addr(),
    }
}

/// Sends every key 1 time (and the first two keys 20 times) via `req`; asserts stickiness and
/// a spread over at least two endpoints; returns key -> endpoint.
fn check_sticky_and_spread(
    what: &str,
    keys: &[String],
    mut req: impl FnMut(&str) -> String,
) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for k in keys {
        map.insert(k.clone(), req(k));
    }
    for k in &keys[..2] {
        for i in 0..20 {
            assert_eq!(req(k), map[k], "{what}: key {k} moved on repeat {i}");
        }
    }
    let used: HashSet<&String> = map.values().collect();
    assert!(
        used.len() >= 2,
        "{what}: {} keys all on {used:?}",
        keys.len()
    );
    map
}

#[test]
fn hash_on_header_cookie_and_uri_is_sticky_and_spreads() {
    let s = hash_setup();
    let _lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    check_sticky_and_spread("header", &keys, |k| {
        served_by(
            &c.request("GET", "hdr.test", "/", &[("x-user", k)], b"")
                .unwrap(),
        )
    });
    check_sticky_and_spread("cookie", &keys, |k| {
        let cookie = format!("a=1; session={k}; z=2");
        served_by(
            &c.request("GET", "ck.test", "/", &[("cookie", &cookie)], b"")
                .unwrap(),
        )
    });
    let paths: Vec<String> = (0..20).map(|i| format!("/item/{i}?v=1")).collect();
    check_sticky_and_spread("uri", &paths, |p| served_by(&c.get("uri.test", p).unwrap()));
    // The same header key from a different connection and path still lands on the same endpoint.
    let first = served_by(
        &c.request("GET", "hdr.test", "/a", &[("x-user", "user-0")], b"")
            .unwrap(),
    );
    let other = send(
        s.listen,
        "GET",
        "hdr.test",
        "/b/c?d",
        &[("x-user", "user-0")],
    );
    assert_eq!(served_by(&other), first);
}

#[test]
fn hash_on_source_ip_is_sticky_and_spreads() {
    let s = hash_setup();
    let _lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let keys: Vec<String> = (2..22).map(|i| format!("127.0.0.{i}")).collect();
    check_sticky_and_spread("source_ip", &keys, |ip| {
        served_by(&get_from(ip.parse().unwrap(), s.listen, "ip.test", "/"))
    });
}

#[test]
fn hash_keeps_keys_in_place_when_an_endpoint_is_removed() {
    let s = hash_setup();
    let lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    let mut on = |k: &str| {
        served_by(
            &c.request("GET", "hdr.test", "/", &[("x-user", k)], b"")
                .unwrap(),
        )
    };
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let before: HashMap<&String, String> = keys.iter().map(|k| (k, on(k))).collect();
    let used: HashSet<&String> = before.values().collect();
    assert_eq!(
        used.len(),
        4,
        "200 keys should use all 4 endpoints: {used:?}"
    );
    // Remove a middle endpoint (e1): indexes of the later ones shift, addresses do not.
    reload(&lb, &hash_yaml(&s, &[0, 2, 3]), 2.0);
    let after: HashMap<&String, String> = keys.iter().map(|k| (k, on(k))).collect();
    assert!(
        after.values().all(|e| e != "e1"),
        "removed endpoint still used"
    );
    let kept: Vec<&&String> = before.keys().filter(|k| before[**k] != "e1").collect();
    let stayed = kept.iter().filter(|k| before[***k] == after[***k]).count();
    assert!(
        stayed * 100 >= kept.len() * 95,
        "only {stayed} of {} keys not on the removed endpoint stayed put",
        kept.len()
    );
}

#[test]
fn affinity_cookie_sticks_and_falls_back_when_endpoint_removed() {
    let bs: Vec<Backend> = ["a", "b", "c"].iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    let config = |idx: &[usize]| {
        let eps: Vec<String> = idx
            .iter()
            .map(|i| format!("{{address: \"{}\"}}", bs[*i].addr()))
            .collect();
        format!(
            r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: web}}]
clusters:
  - {{name: web, affinity: {{cookie: srv}}, endpoints: [{}]}}
"#,
            eps.join(", ")
        )
    };
    let lb = start(&config(&[0, 1, 2]));
    let cookie_of = |r: &Response| -> String {
        let sc = r
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no set-cookie: {:?}", r.headers));
        let pair = sc.split(';').next().unwrap().trim();
        let id = pair
            .strip_prefix("srv=")
            .unwrap_or_else(|| panic!("set-cookie not srv=<id>: {sc}"));
        assert!(!id.is_empty(), "{sc}");
        id.to_string()
    };
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    // Without the cookie, round robin rotates and every response offers a cookie.
    let mut ids = HashMap::new();
    for _ in 0..3 {
        let r = c.get("aff.test", "/").unwrap();
        ids.insert(served_by(&r), cookie_of(&r));
    }
    assert_eq!(ids.len(), 3, "round robin over 3 should hit all 3: {ids:?}");
    let distinct: HashSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), 3, "ids must differ per endpoint: {ids:?}");
    // With the cookie, 10 requests stick (round robin would have rotated), no new cookie.
    let (stuck_on, id) = ("b".to_string(), ids["b"].clone());
    let cookie = format!("other=1; srv={id}");
    for i in 0..10 {
        let r = c
            .request("GET", "aff.test", "/", &[("cookie", &cookie)], b"")
            .unwrap();
        assert_eq!(served_by(&r), stuck_on, "request {i} with the cookie moved");
        assert_eq!(
            r.header("set-cookie"),
            None,
            "cookie re-set although it matched"
        );
    }
    // An unknown id falls back and gets a fresh cookie naming the endpoint that served.
    let r = c
        .request(
            "GET",
            "aff.test",
            "/",
            &[("cookie", "srv=ffffffffffffffff")],
            b"",
        )
        .unwrap();
    let who = served_by(&r);
    assert_eq!(cookie_of(&r), ids[&who]);
    // Remove b: its cookie falls back to another endpoint and is replaced.
    reload(&lb, &config(&[0, 2]), 2.0);
    let r = c
        .request("GET", "aff.test", "/", &[("cookie", &cookie)], b"")
        .unwrap();
    let who = served_by(&r);
    assert_ne!(who, "b");
    let new_id = cookie_of(&r);
    assert_ne!(new_id, id);
    assert_eq!(new_id, ids[&who]);
    // And the new cookie sticks.
    let cookie = format!("srv={new_id}");
    for _ in 0..5 {
        let r = c
            .request("GET", "aff.test", "/", &[("cookie", &cookie)], b"")
            .unwrap();
        assert_eq!(served_by(&r), who);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Weighted split between clusters, canary
// ---------------------------------------------------------------------------------------------

#[test]
fn weighted_cluster_split_is_exact_and_canary_overrides_weights() {
    let (old, new) = (backend("old"), backend("new"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - name: split
    hosts: [split.test]
    clusters: [{{name: old, weight: 99}}, {{name: new, weight: 1}}]
    canary: {{cluster: new, header: {{name: x-canary, value: "1"}}, cookie: {{name: canary, value: always}}}}
clusters:
  - {{name: old, endpoints: [{{address: "{}"}}]}}
  - {{name: new, endpoints: [{{address: "{}"}}]}}
"#,
        old.addr(),
        new.addr()
    );
    let _lb = start(&yaml);
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut c, "split.test", "/", 100);
    assert_eq!(
        (counts.get("old"), counts.get("new")),
        (Some(&99), Some(&1)),
        "{counts:?}"
    );
    let mut via =
        |h: &[(&str, &str)]| served_by(&c.request("GET", "split.test", "/", h, b"").unwrap());
    for _ in 0..10 {
        assert_eq!(via(&[("x-canary", "1")]), "new", "canary header");
        assert_eq!(
            via(&[("cookie", "a=b; canary=always")]),
            "new",
            "canary cookie"
        );
    }
    // Other values do not trigger the canary: the next 99 follow the weights again (98 + 1).
    let mut non = HashMap::<String, usize>::new();
    for i in 0..99 {
        let h: &[(&str, &str)] = match i % 3 {
            0 => &[("x-canary", "0")],
            1 => &[("cookie", "canary=never")],
            _ => &[],
        };
        *non.entry(via(h)).or_default() += 1;
    }
    assert!(non.get("new").copied().unwrap_or(0) <= 1, "{non:?}");
    assert!(non.get("old").copied().unwrap_or(0) >= 98, "{non:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Redirects and rewrites
// ---------------------------------------------------------------------------------------------

#[test]
fn redirects_status_and_location() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [http.test], redirect: {{scheme: https, status: 301}}}}
  - {{hosts: [move.test], redirect: {{host: new.test}}}}
  - {{hosts: [shop.test], path: {{prefix: /shop}}, redirect: {{path_prefix: /store, status: 308}}}}
  - {{hosts: [shop.test], path: {{prefix: /old/api}}, redirect: {{path_prefix: /api/v2, status: 307}}}}
  - {{hosts: [shop.test], path: {{exact: /legacy}}, redirect: {{scheme: https, port: 8443, path_prefix: /modern}}}}
  - {{hosts: [shop.test], cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    for (method, host, path, status, location) in [
        (
            "GET",
            "http.test",
            "/a/b?c=1",
            301,
            "https://http.test/a/b?c=1",
        ),
        ("GET", "http.test", "/", 301, "https://http.test/"),
        ("GET", "move.test", "/x?y=2", 302, "http://new.test/x?y=2"),
        ("POST", "move.test", "/form", 302, "http://new.test/form"),
        (
            "GET",
            "shop.test",
            "/shop/cart?id=3",
            308,
            "http://shop.test/store/cart?id=3",
        ),
        (
            "POST",
            "shop.test",
            "/shop/cart",
            308,
            "http://shop.test/store/cart",
        ),
        ("GET", "shop.test", "/shop", 308, "http://shop.test/store"),
        ("GET", "shop.test", "/shop/", 308, "http://shop.test/store/"),
        (
            "PUT",
            "shop.test",
            "/old/api/users/1",
            307,
            "http://shop.test/api/v2/users/1",
        ),
        (
            "DELETE",
            "shop.test",
            "/old/api?q=1",
            307,
            "http://shop.test/api/v2?q=1",
        ),
        (
            "GET",
            "shop.test",
            "/legacy?x",
            302,
            "https://shop.test:8443/modern?x",
        ),
    ] {
        let h: &[(&str, &str)] = if method == "GET" {
            &[]
        } else {
            &[("content-length", "0")]
        };
        let r = send(listen, method, host, path, h);
        assert_eq!(r.status, status, "{method} {host}{path}: {}", r.text());
        assert_eq!(
            r.header("location"),
            Some(location),
            "{method} {host}{path}"
        );
        assert_eq!(r.header("x-backend"), None, "redirect must not be proxied");
    }
    // Not under the redirect prefixes: proxied.
    assert_eq!(served_by(&get(listen, "shop.test", "/shopping")), "b");
    assert_eq!(served_by(&get(listen, "shop.test", "/legacy/x")), "b");
    assert_eq!(b.requests(), 2);
}

#[test]
fn rewrite_prefix_changes_the_path_the_backend_sees() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [rw.test], path: {{prefix: /api}}, rewrite: {{prefix: /}}, cluster: c}}
  - {{hosts: [rw.test], path: {{prefix: /svc/}}, rewrite: {{prefix: /internal/}}, cluster: c}}
  - {{hosts: [rw.test], path: {{prefix: /keep}}, cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    for (path, seen) in [
        ("/api/v1/users?x=1", "/v1/users?x=1"),
        ("/api/v1/users", "/v1/users"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api?x=1", "/?x=1"),
        ("/svc/a/b?c=d", "/internal/a/b?c=d"),
        // The rewrite prefix is used as written (trailing slash kept) when nothing follows.
        ("/svc", "/internal/"),
        ("/svc/", "/internal/"),
        ("/keep/me?x=1", "/keep/me?x=1"),
    ] {
        assert_eq!(served_by(&get(listen, "rw.test", path)), "b", "{path}");
        assert_eq!(
            b.last_request_line(),
            format!("GET {seen} HTTP/1.1"),
            "GET {path}"
        );
    }
    assert_eq!(get(listen, "rw.test", "/apix").status, 404);
}

// ---------------------------------------------------------------------------------------------
// 5. Header work
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 6. Allow / deny per route
// ---------------------------------------------------------------------------------------------

#[test]
fn allow_and_deny_cidrs_per_route() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [acl.test], path: {{prefix: /ten}}, allow: [10.0.0.0/8], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /deny-lo}}, deny: [127.0.0.0/8], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /lo}}, allow: [127.0.0.0/8], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /both}}, allow: [127.0.0.0/8], deny: [127.0.0.1], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /two}}, allow: ["127.0.0.2/32", "::1"], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /open}}, cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    let st = |path: &str| get(listen, "acl.test", path).status;
    assert_eq!(st("/ten"), 403, "allow 10/8 must refuse 127.0.0.1");
    assert_eq!(st("/deny-lo"), 403, "deny 127/8");
    assert_eq!(st("/lo"), 200, "allow 127/8");
    assert_eq!(st("/both"), 403, "deny is checked after allow");
    assert_eq!(st("/two"), 403);
    assert_eq!(st("/open"), 200);
    assert_eq!(
        b.requests(),
        2,
        "refused requests must not reach the backend"
    );
    // From other loopback sources.
    let from =
        |ip: [u8; 4], path: &str| get_from(Ipv4Addr::from(ip), listen, "acl.test", path).status;
    assert_eq!(from([127, 0, 0, 2], "/two"), 200);
    assert_eq!(from([127, 0, 0, 3], "/two"), 403);
    assert_eq!(from([127, 0, 0, 2], "/both"), 200);
    assert_eq!(from([127, 0, 0, 2], "/deny-lo"), 403);
    assert_eq!(b.requests(), 4);
}

// ---------------------------------------------------------------------------------------------
// 7. Access log
// ---------------------------------------------------------------------------------------------

#[test]
fn access_log_json_records_success_and_errors() {
    let b = backend("b");
    let (listen, refused) = (free_local_addr(), free_local_addr());
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: api, hosts: [log.test], cluster: web}}
  - {{name: broken, hosts: [refused.test], cluster: refused}}
  - {{name: nothing, hosts: [empty.test], cluster: empty}}
clusters:
  - {{name: web, endpoints: [{{address: "{}"}}]}}
  - {{name: refused, connect_timeout: 1s, endpoints: [{{address: "{refused}"}}]}}
  - {{name: empty}}
"#,
        b.addr()
    );
    let lb = start(&yaml);
    served_by(&get(listen, "log.test", "/log/ok?x=1"));
    let backend_id = values(&b.last_request_headers(), "x-request-id")[0].clone();
    let rec = wait_record(&lb, "/log/ok?x=1");
    assert_eq!(field(&rec, "status").num(), Some(200.0), "{rec:?}");
    assert_eq!(sfield(&rec, "route"), "api");
    assert_eq!(sfield(&rec, "cluster"), "web");
    assert_eq!(sfield(&rec, "endpoint"), b.addr().to_string());
    assert_eq!(sfield(&rec, "method"), "GET");
    assert_eq!(sfield(&rec, "host"), "log.test");
    assert_eq!(sfield(&rec, "listener"), "http");
    assert_eq!(sfield(&rec, "protocol"), "HTTP/1.1");
    assert_eq!(field(&rec, "retries").num(), Some(0.0));
    assert_eq!(sfield(&rec, "termination"), "--");
    assert_eq!(
        sfield(&rec, "request_id"),
        backend_id,
        "log and backend ids differ"
    );
    assert!(sfield(&rec, "client").starts_with("127.0.0.1:"), "{rec:?}");
    let total = field(&rec, "t_total_ms")
        .num()
        .expect("t_total_ms is a number");
    let resp = field(&rec, "t_response_ms")
        .num()
        .expect("t_response_ms is a number");
    assert!(total >= 0.0 && resp >= 0.0 && resp <= total, "{rec:?}");
    assert!(
        field(&rec, "t_connect_ms").num().is_some(),
        "first request connects: {rec:?}"
    );
    assert!(
        field(&rec, "error").is_null() && field(&rec, "error_source").is_null(),
        "{rec:?}"
    );
    assert!(
        field(&rec, "bytes_out").num().is_some_and(|n| n > 0.0),
        "{rec:?}"
    );
    rfc3339_like(sfield(&rec, "time"));

    // Connection refused: 503, upstream, the endpoint that refused.
    assert_eq!(get(listen, "refused.test", "/log/refused").status, 503);
    let rec = wait_record(&lb, "/log/refused");
    assert_eq!(field(&rec, "status").num(), Some(503.0));
    assert_eq!(sfield(&rec, "error_source"), "upstream", "{rec:?}");
    assert_eq!(sfield(&rec, "termination"), "SC");
    assert_eq!(sfield(&rec, "route"), "broken");
    assert_eq!(sfield(&rec, "cluster"), "refused");
    assert_eq!(sfield(&rec, "endpoint"), refused.to_string());
    assert!(!sfield(&rec, "error").is_empty());

    // No endpoint at all: 503, upstream.
    assert_eq!(get(listen, "empty.test", "/log/empty").status, 503);
    let rec = wait_record(&lb, "/log/empty");
    assert_eq!(field(&rec, "status").num(), Some(503.0));
    assert_eq!(sfield(&rec, "error_source"), "upstream", "{rec:?}");
    assert_eq!(sfield(&rec, "cluster"), "empty");

    // Bad Host: 400, downstream.
    let bad = "GET /log/badhost HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(listen, bad), 400);
    let rec = wait_record(&lb, "/log/badhost");
    assert_eq!(field(&rec, "status").num(), Some(400.0));
    assert_eq!(sfield(&rec, "error_source"), "downstream", "{rec:?}");
    assert_eq!(sfield(&rec, "termination"), "PR");
    assert!(field(&rec, "route").is_null(), "{rec:?}");

    // No route: 404, downstream.
    assert_eq!(get(listen, "nowhere.test", "/log/noroute").status, 404);
    let rec = wait_record(&lb, "/log/noroute");
    assert_eq!(field(&rec, "status").num(), Some(404.0));
    assert_eq!(sfield(&rec, "error_source"), "downstream", "{rec:?}");
}

fn rfc3339_like(t: &str) {
    let b = t.as_bytes();
    assert!(
        b.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "time {t:?}"
    );
}

#[test]
fn access_log_text_format_is_haproxy_like() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
access_log: {{format: text}}
routes:
  - {{name: txt, hosts: [text.test], cluster: web}}
clusters:
  - {{name: web, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let lb = start(&yaml);
    served_by(&get(listen, "text.test", "/text/path"));
    lb.wait_log("/text/path", T).unwrap();
    let log = lb.log();
    let line = log
        .lines()
        .find(|l| l.contains("/text/path"))
        .unwrap()
        .to_string();
    assert!(
        !line.starts_with('{'),
        "text format requested, got JSON: {line}"
    );
    assert!(line.starts_with("127.0.0.1:"), "client first: {line}");
    assert!(line.contains(" 200 "), "status: {line}");
    let triple = format!(" txt/web/{} ", b.addr());
    assert!(
        line.contains(&triple),
        "route/cluster/endpoint {triple:?}: {line}"
    );
    assert!(line.contains(" -- "), "termination: {line}");
    assert!(
        line.contains("\"GET /text/path HTTP/1.1\""),
        "HAProxy-style request field \"GET /text/path HTTP/1.1\": {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// Edges found along the way
// ---------------------------------------------------------------------------------------------

#[test]
fn absolute_form_uri_routes_on_its_authority() {
    let (a, b) = (backend("api"), backend("other"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [api.example.test], cluster: a}}
  - {{hosts: ["*"], cluster: b}}
clusters:
  - {{name: a, endpoints: [{{address: "{}"}}]}}
  - {{name: b, endpoints: [{{address: "{}"}}]}}
"#,
        a.addr(),
        b.addr()
    );
    let _lb = start(&yaml);
    let req = "GET http://API.example.test:8080/x?y=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    let r = parse_response(&http::raw(listen, req.as_bytes(), T).unwrap()).unwrap();
    assert_eq!(served_by(&r), "api", "the absolute URI's authority decides");
    assert_eq!(
        a.last_request_line(),
        "GET /x?y=1 HTTP/1.1",
        "origin form upstream"
    );
}

#[test]
fn redirect_that_changes_only_the_path_keeps_the_request_port() {
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [shop.test], path: {{prefix: /shop}}, redirect: {{path_prefix: /store, status: 308}}}}
"#
    );
    let _lb = start(&yaml);
    let r = get(listen, "shop.test:8080", "/shop/cart?id=3");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("http://shop.test:8080/store/cart?id=3"),
        "a path-only redirect must not send the client to another port"
    );
}

#[test]
fn hash_without_a_key_still_spreads_like_round_robin() {
    let s = hash_setup();
    let _lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    // No x-user header / no session cookie: HAProxy falls back to round robin.
    let by_header = tally(&mut c, "hdr.test", "/", 12);
    assert!(
        by_header.len() >= 2,
        "all keyless requests on one endpoint: {by_header:?}"
    );
    let by_cookie = tally(&mut c, "ck.test", "/", 12);
    assert!(
        by_cookie.len() >= 2,
        "all keyless requests on one endpoint: {by_cookie:?}"
    );
}

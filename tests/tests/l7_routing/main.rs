//! The real `lb` process on loopback: routing, balancing, splits, redirects, header work, ACLs and
//! the access log, one file per feature family (the `mod` lines); here the helpers they share.

#[path = "../support/mod.rs"]
mod support;

mod access_log;
mod acl;
mod balancing;
mod canary;
mod hashing;
mod headers;
mod precedence;
mod redirects;

use lb_tests::http::{self, Backend, KeepAliveClient, Response};
use lb_tests::lb::Lb;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

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

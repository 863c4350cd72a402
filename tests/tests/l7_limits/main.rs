//! The real `lb` process on loopback: timeouts, retries, queue, listener limits, PROXY protocol,
//! request smuggling and reloads under load, one file per family (the `mod` lines); shared helpers.

#[path = "../support/mod.rs"]
mod support;

mod listener_limits;
mod proxy_protocol;
mod queue;
mod reloads;
mod retries;
mod smuggling;
mod timeouts;

use crate::support::origin::Origin;
use lb_tests::http::{self, Response};
use lb_tests::lb::Lb;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// `lb run` with file watching off (reloads only by SIGHUP).
fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, &["--watch-secs", "0"])
}

fn origin(name: &str) -> Origin {
    Origin::plain(name).unwrap()
}

/// The status of a raw HTTP/1.x response (None when nothing or not HTTP came back).
fn status_of(bytes: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(bytes.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    http::raw(addr, bytes, timeout).unwrap()
}

/// Reads until EOF, reset or `timeout`, whichever comes first.
fn read_until_close(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while out.len() < (1 << 20) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(100))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    out
}

fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    http::get(addr, host, path, T).unwrap()
}

/// Polls `cond` every 10 ms up to `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

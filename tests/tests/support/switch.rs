//! [`Switch`]: a keep-alive HTTP/1.1 backend whose answer (status, or alternating 200/503)
//! the test flips at runtime; counts client requests and `/health` checks separately.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A switchable backend

/// Hard cap on a switch backend's life (and of each of its connections).
const SWITCH_LIFETIME: Duration = Duration::from_secs(120);

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
pub struct Switch {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Switch {
    /// Listens on 127.0.0.1:0 and serves as `name` until dropped (or [`SWITCH_LIFETIME`]).
    pub fn start(name: &str) -> Switch {
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

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The status every later request (health checks included) gets.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Answer 200 and 503 in turn (on) instead of the set status (off).
    pub fn set_alternate(&self, on: bool) {
        self.shared.alternate.store(on, Ordering::SeqCst);
    }

    /// Requests served, health checks not included.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Health checks served (paths under /health).
    pub fn checks(&self) -> u64 {
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

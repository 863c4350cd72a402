//! The test backend: answers every request `200 OK` with its name (or `/status/NNN`), thread
//! per connection, HTTP/1.1 keep-alive, bounded reads; counts connections and requests,
//! records the last request.

use super::{
    content_length, find, parse_head, Conn, Headers, IDLE, MAX_BACKEND_LIFETIME,
    MAX_REQUESTS_PER_CONN,
};
use crate::netns::Netns;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    accepted: AtomicU64,
    last: Mutex<(String, Headers)>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// A test backend answering every request `200 OK`, body `NAME\n`, header `x-backend`.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    /// Listens on `addr` (inside `ns` if given; port 0 picks one, see `addr()`).
    pub fn start(ns: Option<&Netns>, addr: SocketAddr, name: &str) -> Result<Backend> {
        let listener = match ns {
            Some(ns) => ns.run(|| TcpListener::bind(addr))?,
            None => TcpListener::bind(addr),
        };
        let listener = listener.with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (sh, name) = (shared.clone(), name.to_string());
        let accept = thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || accept_loop(&listener, &sh, &name))?;
        let accept = Some(accept);
        Ok(Backend {
            addr,
            shared,
            accept,
        })
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Requests answered so far (all connections).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
    fn last(&self) -> (String, Headers) {
        let last = self.shared.last.lock();
        last.map(|l| l.clone()).unwrap_or_default()
    }
    pub fn last_request_headers(&self) -> Headers {
        self.last().1
    }
    /// Request line of the last request, e.g. `GET /x HTTP/1.1`.
    pub fn last_request_line(&self) -> String {
        self.last().0
    }
}

fn join_bounded(handle: JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(2);
        if let Some(h) = self.accept.take() {
            join_bounded(h, deadline);
        }
        let conns = self.shared.conns.lock();
        let conns = conns.map(|mut c| std::mem::take(&mut *c));
        for h in conns.unwrap_or_default() {
            join_bounded(h, deadline);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, name: &str) {
    use nix::poll::{poll, PollFd, PollFlags};
    let end = Instant::now() + MAX_BACKEND_LIFETIME;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < end {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, 100u16), Ok(n) if n > 0) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let (sh, name) = (shared.clone(), name.to_string());
        let conn = thread::Builder::new().spawn(move || {
            let _ = serve(stream, &sh, &name);
        });
        if let (Ok(h), Ok(mut conns)) = (conn, shared.conns.lock()) {
            conns.retain(|h| !h.is_finished());
            conns.push(h);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        411 => "Length Required",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(stream: TcpStream, shared: &Shared, name: &str) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut conn = Conn::new(stream, Some(&shared.stop));
    for _ in 0..MAX_REQUESTS_PER_CONN {
        let Some(head) = conn.until(b"\r\n\r\n", Instant::now() + IDLE)? else {
            break;
        };
        let (line, headers) = parse_head(&head).unwrap_or_default();
        let parts: Vec<&str> = line.split(' ').collect();
        let (status, keep) = match parts[..] {
            [method, target, version] if version.starts_with("HTTP/1.") => {
                let conn_hdr = find(&headers, "connection").unwrap_or("");
                let conn_hdr = conn_hdr.to_ascii_lowercase();
                let keep = match version {
                    "HTTP/1.1" => !conn_hdr.contains("close"),
                    _ => conn_hdr.contains("keep-alive"),
                };
                if find(&headers, "transfer-encoding").is_some() {
                    (411, false)
                } else if let Ok(len) = content_length(&headers) {
                    let deadline = Instant::now() + IDLE;
                    conn.exact(len.unwrap_or(0), deadline)?;
                    shared.requests.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut last) = shared.last.lock() {
                        *last = (line.clone(), headers.clone());
                    }
                    let code = target.strip_prefix("/status/").and_then(|c| c.parse().ok());
                    let code = code.filter(|c| (200..=599).contains(c)).unwrap_or(200);
                    (code, keep && method != "CONNECT")
                } else {
                    (400, false)
                }
            }
            _ => (400, false),
        };
        let body = format!("{name}\n");
        let mut resp = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        resp.push_str("content-type: text/plain\r\nx-backend: ");
        resp.push_str(name);
        let no_body = status == 204 || status == 304;
        if !no_body {
            resp.push_str(&format!("\r\ncontent-length: {}", body.len()));
        }
        let end = ["\r\nconnection: close\r\n\r\n", "\r\n\r\n"][usize::from(keep)];
        resp.push_str(end);
        if !no_body && !line.starts_with("HEAD ") {
            resp.push_str(&body);
        }
        conn.stream.write_all(resp.as_bytes())?;
        if !keep {
            break;
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
    Ok(())
}

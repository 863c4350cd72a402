//! Tiny std-only HTTP/1.1 client for tests and the demo (`get`, `KeepAliveClient`, `raw`),
//! bounded reads and timeouts; the test backend lives in [`backend`].

mod backend;
pub use backend::Backend;

use anyhow::{bail, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) const MAX_HEAD: usize = 64 * 1024;
pub(crate) const MAX_BODY: usize = 16 << 20;
/// Server-side idle timeout of a keep-alive connection.
pub(crate) const IDLE: Duration = Duration::from_secs(30);
pub(crate) const MAX_REQUESTS_PER_CONN: usize = 100_000;
pub(crate) const MAX_BACKEND_LIFETIME: Duration = Duration::from_secs(24 * 3600);
pub(crate) const TICK: Duration = Duration::from_millis(100);

pub(crate) type Headers = Vec<(String, String)>;

pub(crate) fn find<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    let hit = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    hit.map(|(_, v)| v.as_str())
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A stream plus read buffer; every read is bounded by a deadline (and a stop flag).
pub(crate) struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    stop: Option<&'a AtomicBool>,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(stream: TcpStream, stop: Option<&'a AtomicBool>) -> Conn<'a> {
        Conn {
            stream,
            buf: Vec::new(),
            stop,
        }
    }
    /// Reads more bytes; Ok(0) is EOF.
    pub(crate) fn fill(&mut self, deadline: Instant) -> Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                bail!("timed out or stopped");
            }
            self.stream.set_read_timeout(Some(left.min(TICK)))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }
    /// Reads up to `pat` (consumed, not returned); None on EOF before any byte.
    pub(crate) fn until(&mut self, pat: &[u8], deadline: Instant) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.windows(pat.len()).position(|w| w == pat) {
                let raw = self.take(end + pat.len());
                return Ok(Some(String::from_utf8_lossy(&raw[..end]).into_owned()));
            }
            if self.buf.len() > MAX_HEAD {
                bail!("head or line larger than {MAX_HEAD} bytes");
            }
            if self.fill(deadline)? == 0 {
                match self.buf.is_empty() {
                    true => return Ok(None),
                    false => bail!("EOF inside a message head"),
                }
            }
        }
    }
    pub(crate) fn exact(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>> {
        if n > MAX_BODY {
            bail!("body of {n} bytes too large");
        }
        while self.buf.len() < n {
            if self.fill(deadline)? == 0 {
                bail!("EOF after {} of {n} body bytes", self.buf.len());
            }
        }
        Ok(self.take(n))
    }
    pub(crate) fn line(&mut self, deadline: Instant) -> Result<String> {
        self.until(b"\r\n", deadline)?
            .context("EOF in chunked body")
    }
    pub(crate) fn chunked(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        for _ in 0..MAX_BODY {
            let size_line = self.line(deadline)?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).context("bad chunk size")?;
            if size == 0 {
                while !self.line(deadline)?.is_empty() {} // trailers
                return Ok(body);
            }
            body.extend(self.exact(size, deadline)?);
            self.exact(2, deadline)?;
            if body.len() > MAX_BODY {
                break;
            }
        }
        bail!("chunked body too large")
    }
    pub(crate) fn until_eof(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        while self.buf.len() <= MAX_BODY && self.fill(deadline)? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

/// Splits a head into its first line and headers; None if a header line has no ':'.
pub(crate) fn parse_head(head: &str) -> Option<(String, Headers)> {
    let mut lines = head.split("\r\n");
    let first = lines.next()?.to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    Some((first, headers))
}

pub(crate) fn content_length(headers: &Headers) -> Result<Option<usize>> {
    let cl = find(headers, "content-length").map(str::parse::<usize>);
    cl.transpose().context("bad content-length")
}

/// An HTTP/1.1 client connection reused for sequential requests.
pub struct KeepAliveClient {
    conn: Conn<'static>,
    timeout: Duration,
    closed: bool,
}

impl KeepAliveClient {
    /// Connects from the calling thread's namespace (use `Netns::run` to connect from a
    /// namespace; the socket keeps working from any thread).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<KeepAliveClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        let conn = Conn::new(stream, None);
        Ok(KeepAliveClient {
            conn,
            timeout,
            closed: false,
        })
    }
    pub fn get(&mut self, host: &str, path: &str) -> Result<Response> {
        self.request("GET", host, path, &[], b"")
    }
    /// Sends one request (Content-Length added for non-empty bodies) and reads the reply.
    pub fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        if self.closed {
            bail!("connection already closed by the server");
        }
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes)?;
        self.response(method)
    }

    /// Writes `bytes` as they are (several pipelined requests, say).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = &mut self.conn.stream;
        stream.write_all(bytes).context("sending request")
    }

    /// Reads the next response, to a request with `method` (HEAD responses have no body).
    pub fn response(&mut self, method: &str) -> Result<Response> {
        let deadline = Instant::now() + self.timeout;
        for _ in 0..8 {
            let head = self.conn.until(b"\r\n\r\n", deadline)?;
            let head = head.context("EOF before response")?;
            let (first, headers) = parse_head(&head).context("malformed response head")?;
            let mut parts = first.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            let status = parts.next().and_then(|s| s.parse::<u16>().ok());
            let status = match status {
                Some(s) if version.starts_with("HTTP/1.") => s,
                _ => bail!("bad status line {first:?}"),
            };
            if (100..200).contains(&status) {
                continue; // interim response
            }
            let close =
                find(&headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
            let chunked =
                find(&headers, "transfer-encoding").is_some_and(|t| t.contains("chunked"));
            let body = if method == "HEAD" || status == 204 || status == 304 {
                Vec::new()
            } else if chunked {
                self.conn.chunked(deadline)?
            } else if let Some(n) = content_length(&headers)? {
                self.conn.exact(n, deadline)?
            } else {
                self.closed = true;
                self.conn.until_eof(deadline)?
            };
            self.closed |= close;
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
        bail!("too many interim responses")
    }

    /// Whether the server said it closes (or closed) the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// One GET on a fresh connection with `Connection: close`.
pub fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<Response> {
    let mut client = KeepAliveClient::connect(addr, timeout)?;
    client.request("GET", host, path, &[("connection", "close")], b"")
}

/// Sends `bytes` as-is and returns everything read until EOF, reset or `timeout`.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    let mut client = KeepAliveClient::connect(addr, timeout)?;
    let stream = &mut client.conn.stream;
    stream.write_all(bytes).context("sending raw bytes")?;
    let deadline = Instant::now() + timeout;
    while client.conn.buf.len() <= MAX_BODY {
        match client.conn.fill(deadline) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(client.conn.buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn backend(name: &str) -> Backend {
        Backend::start(None, "127.0.0.1:0".parse().unwrap(), name).unwrap()
    }

    #[test]
    fn keep_alive_reuses_one_connection() {
        let b = backend("alpha");
        let mut c = KeepAliveClient::connect(b.addr(), T).unwrap();
        for i in 0..5 {
            let r = c.get("example.test", &format!("/n/{i}")).unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "alpha\n"));
            assert_eq!(r.header("X-Backend"), Some("alpha"));
            assert_eq!(r.header("content-type"), Some("text/plain"));
        }
        let r = c
            .request("POST", "h", "/p", &[("x-test", "1")], b"body")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(b.requests(), 6);
        assert_eq!(b.last_request_line(), "POST /p HTTP/1.1");
        let hdrs = b.last_request_headers();
        assert!(hdrs.contains(&("x-test".into(), "1".into())), "{hdrs:?}");
        assert!(hdrs.contains(&("host".into(), "h".into())));
    }

    #[test]
    fn status_path_and_connection_close() {
        let b = backend("beta");
        let r = get(b.addr(), "h", "/status/503", T).unwrap();
        assert_eq!((r.status, r.header("x-backend")), (503, Some("beta")));
        assert_eq!(r.header("connection"), Some("close"));
        let mut c = KeepAliveClient::connect(b.addr(), T).unwrap();
        let r = c
            .request("GET", "h", "/", &[("Connection", "close")], b"")
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(c.get("h", "/").is_err(), "server closed the connection");
        assert_eq!(get(b.addr(), "h", "/status/204", T).unwrap().body, b"");
        assert_eq!(get(b.addr(), "h", "/status/99", T).unwrap().status, 200);
        assert_eq!(b.requests(), 4);
    }

    #[test]
    fn raw_requests() {
        let b = backend("gamma");
        let ok = raw(b.addr(), b"GET / HTTP/1.0\r\n\r\n", T).unwrap();
        let ok = String::from_utf8(ok).unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\ngamma\n"),
            "{ok}"
        );
        let bad = raw(b.addr(), b"NONSENSE\r\n\r\n", T).unwrap();
        assert!(bad.starts_with(b"HTTP/1.1 400 "));
        let chunked = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(raw(b.addr(), chunked, T)
            .unwrap()
            .starts_with(b"HTTP/1.1 411 "));
        let two = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nconnection: close\r\n\r\n";
        let two = String::from_utf8(raw(b.addr(), two, T).unwrap()).unwrap();
        assert_eq!(
            two.matches("HTTP/1.1 200 OK").count(),
            2,
            "pipelined: {two}"
        );
        assert_eq!(b.requests(), 3);
    }

    #[test]
    fn drop_stops_backend() {
        let b = backend("delta");
        let addr = b.addr();
        let mut idle = KeepAliveClient::connect(addr, T).unwrap();
        assert_eq!(idle.get("h", "/").unwrap().status, 200);
        let started = Instant::now();
        drop(b);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(get(addr, "h", "/", Duration::from_millis(500)).is_err());
        assert!(idle.get("h", "/").is_err());
    }

    #[test]
    fn backend_inside_namespace() {
        crate::require_root();
        let topo = crate::netns::Topology::new(Default::default()).unwrap();
        let addr = SocketAddr::new(topo.backend_addr_v6().into(), 8080);
        let b = Backend::start(Some(&topo.backend), addr, "ns").unwrap();
        let r = topo.clients[1]
            .run(|| get(addr, "h", "/", T))
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.text().as_str(), b.requests()),
            (200, "ns\n", 1)
        );
    }
}

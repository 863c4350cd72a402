//! Our HTTP/1.1 client for pooled plain-TCP upstream connections: the request's own task writes
//! the request and reads the response head (no connection task, no channel hand-off between tasks).
//!
//! The response body (h1body.rs) owns the connection and gives it back to the pool at its end.
//! TLS, HTTP/2, Upgrade requests and streamed request bodies stay on hyper's client
//! (upstream.rs).

use super::body::UpBody;
use super::h1body::{Framing, H1Body};
use super::h1write::header as header_field;
use super::upstream::Pool;
use bytes::BytesMut;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http::{request, Version};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Largest response head (status line and header fields) we read.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// The deadline of a timeout too long for the clock.
const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);
/// Request bodies up to this size go out in one write with the head.
const INLINE_BODY: usize = 16 * 1024;

pub struct H1Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed (the start of a body after a head).
    pub(super) buf: BytesMut,
    /// The request head being written (kept for the connection's next request).
    out: Vec<u8>,
    /// A response has been read from this connection (it is a reused one now).
    served: bool,
    /// The response timer, kept for the connection's next request: moving a registered
    /// deadline later is one compare-and-swap, a new timer per request a timer-wheel insert
    /// and removal. It belongs to the runtime of the thread that made it.
    timer: Option<(ThreadId, Pin<Box<Sleep>>)>,
}

/// A request that failed on an upstream connection (ours or hyper's).
pub struct SendError {
    /// The request, when none of it was written (the endpoint had closed the connection).
    pub back: Option<Box<Request<UpBody>>>,
    /// The endpoint's answer is not HTTP/1.x.
    pub parse: bool,
    /// No complete response head within the response timeout.
    pub timed_out: bool,
    pub message: String,
}

impl SendError {
    fn io(what: &str, e: io::Error) -> Self {
        SendError {
            back: None,
            parse: false,
            timed_out: false,
            message: format!("{what}: {e}"),
        }
    }

    fn parse(message: impl Into<String>) -> Self {
        SendError {
            back: None,
            parse: true,
            timed_out: false,
            message: message.into(),
        }
    }

    /// A request refused before anything was written: it goes back to the caller.
    pub fn unsent(req: Request<UpBody>, message: impl Into<String>) -> Self {
        SendError {
            back: Some(Box::new(req)),
            parse: false,
            timed_out: false,
            message: message.into(),
        }
    }

    pub fn timed_out() -> Self {
        SendError {
            back: None,
            parse: false,
            timed_out: true,
            message: "no response head within the response timeout".into(),
        }
    }
}

impl H1Conn {
    pub fn new(io: TcpStream) -> Self {
        H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::with_capacity(512),
            served: false,
            timer: None,
        }
    }

    /// The socket, for hyper's client to adopt (only between requests: nothing is buffered).
    pub fn into_io(self) -> TcpStream {
        self.io
    }

    /// An idle connection is usable while the endpoint has neither closed it nor sent anything.
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    pub(super) fn poll_read_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Sends `req` and reads the response head (1xx interim responses are skipped), within
    /// `timeout`. The body owns the connection and hands it to `home` once read to its end,
    /// when keep-alive allows.
    pub async fn send(
        mut self,
        req: Request<UpBody>,
        home: Option<Arc<Pool>>,
        timeout: Duration,
    ) -> Result<Response<H1Body>, SendError> {
        let head_request = req.method() == Method::HEAD;
        let (parts, body) = req.into_parts();
        // Streamed bodies go to hyper's client (`Conn::send`): the endpoint may answer before
        // they end. What reaches here is empty or fully buffered.
        let data = match &body {
            UpBody::Full(data) => data.clone(),
            UpBody::Stream { .. } => {
                return Err(SendError::unsent(
                    Request::from_parts(parts, body),
                    "a streamed request body needs hyper's client",
                ))
            }
        };
        let H1Conn {
            io,
            buf,
            out,
            served,
            timer,
        } = &mut self;
        let timer = arm(timer, timeout);
        out.clear();
        encode_head(&parts, data.as_ref().map_or(0, |d| d.len()), out);
        let rest = match data {
            Some(d) if d.len() <= INLINE_BODY => {
                out.extend_from_slice(&d);
                None
            }
            other => other,
        };
        // Let the other ready connections run first: their requests then go out together, and
        // the endpoint is woken once for them rather than once per request.
        tokio::task::yield_now().await;
        // Nothing written yet: a failure here means the request never left.
        let n = match timed(timer, io.write(out)).await? {
            Ok(n) => n,
            Err(e) => {
                return Err(SendError {
                    back: Some(Box::new(Request::from_parts(parts, body))),
                    ..SendError::io("writing the request", e)
                })
            }
        };
        let write = |e| SendError::io("writing the request", e);
        timed(timer, io.write_all(&out[n..]))
            .await?
            .map_err(write)?;
        if let Some(rest) = &rest {
            timed(timer, io.write_all(rest)).await?.map_err(write)?;
        }
        // No byte of an answer on a connection that had served before: the endpoint closed it
        // while idle (keep-alive race). An idempotent request with a replayable body goes back
        // to the caller, which sends it again on another connection (as hyper's client and
        // Go's do).
        let replayable = parts.method.is_idempotent();
        loop {
            let (resp, framing, reuse) = match timed(timer, read_head(io, buf, head_request))
                .await
                .and_then(|r| r)
            {
                Ok(head) => head,
                Err(mut e)
                    if replayable && !e.parse && !e.timed_out && buf.is_empty() && *served =>
                {
                    e.back = Some(Box::new(Request::from_parts(parts, body)));
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            *served = true;
            let status = resp.status();
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(SendError::parse("101 without an Upgrade request"));
            }
            let body = H1Body::new(self, framing, reuse, home);
            // The same for the answers: other connections' responses are read first and the
            // clients' writes then go out together.
            tokio::task::yield_now().await;
            return Ok(resp.map(|()| body));
        }
    }
}

/// Reads until a complete response head is buffered and parses it.
async fn read_head(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<(Response<()>, Framing, bool), SendError> {
    loop {
        if !buf.is_empty() {
            if let Some(parsed) = parse_head(buf, head_request)? {
                return Ok(parsed);
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(SendError::parse("response head over 64 KiB"));
        }
        buf.reserve(8 * 1024);
        let n = (io.read_buf(buf).await).map_err(|e| SendError::io("reading the response", e))?;
        if n == 0 {
            return Err(SendError {
                back: None,
                parse: false,
                timed_out: false,
                message: "connection closed before a complete response head".into(),
            });
        }
    }
}

/// The connection's response timer set to fire `timeout` from now: the one it has, when this
/// thread's runtime made it, else a new one.
fn arm(slot: &mut Option<(ThreadId, Pin<Box<Sleep>>)>, timeout: Duration) -> &mut Pin<Box<Sleep>> {
    // As tokio's own timeout: a duration past the clock's range means about 30 years.
    let now = Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now + FAR_FUTURE);
    let here = this_thread();
    let fresh = || (here, Box::pin(tokio::time::sleep_until(deadline)));
    match slot {
        Some((thread, sleep)) if *thread == here => sleep.as_mut().reset(deadline),
        _ => *slot = Some(fresh()),
    }
    &mut slot.get_or_insert_with(fresh).1
}

/// `f`, unless the response timer fires first.
async fn timed<T>(timer: &mut Pin<Box<Sleep>>, f: impl Future<Output = T>) -> Result<T, SendError> {
    tokio::select! {
        biased;
        v = f => Ok(v),
        () = timer.as_mut() => Err(SendError::timed_out()),
    }
}

/// This thread's id, read once per thread.
fn this_thread() -> ThreadId {
    thread_local! {
        static ID: ThreadId = std::thread::current().id();
    }
    ID.with(|id| *id)
}

/// Request line, header fields, and our framing: Content-Length `len` (the client's own
/// Content-Length and Transfer-Encoding are replaced).
fn encode_head(parts: &request::Parts, len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let had_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        header_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let bodied = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if len > 0 || had_length || bodied {
        use std::io::Write;
        let _ = write!(out, "content-length: {len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response head from the front of `buf` (consumed), its body framing and whether
/// the connection may be reused after it; None when more bytes are needed.
fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<(Response<()>, Framing, bool)>, SendError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(SendError::parse(format!("invalid response head: {e}"))),
    };
    let code = r.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| SendError::parse(format!("invalid status code {code}")))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Offsets of names and values (on the stack), then the map over the frozen head: values
    // are slices of it, standard names are not copied.
    let base = buf.as_ptr() as usize;
    let count = r.headers.len();
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    for (f, h) in fields.iter_mut().zip(r.headers.iter()) {
        let name = (h.name.as_ptr() as usize - base) as u32;
        let value = (h.value.as_ptr() as usize - base) as u32;
        *f = (name, h.name.len() as u32, value, h.value.len() as u32);
    }
    let head = buf.split_to(n).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &(name, name_len, value, value_len) in &fields[..count] {
        let name = &head[name as usize..(name + name_len) as usize];
        let name = HeaderName::from_bytes(name).map_err(|_| {
            SendError::parse(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(name)
            ))
        })?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(value as usize..(value + value_len) as usize),
        )
        .map_err(|_| SendError::parse(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    let (framing, reuse) = framing(head_request, status, version, &headers)?;
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some((resp, framing, reuse)))
}

/// RFC 9112 section 6.3, strictly: conflicting or invalid lengths are a bad response.
fn framing(
    head_request: bool,
    status: StatusCode,
    version: Version,
    h: &HeaderMap,
) -> Result<(Framing, bool), SendError> {
    // Comma-separated tokens of every `name` field, compared without allocating.
    let has = |name, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let mut reuse = if version == Version::HTTP_10 {
        has(header::CONNECTION, "keep-alive")
    } else {
        !has(header::CONNECTION, "close")
    };
    let code = status.as_u16();
    if head_request || status.is_informational() || code == 204 || code == 304 {
        return Ok((Framing::Length(0), reuse));
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        // The last coding of the last field decides.
        let chunked = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if h.contains_key(header::CONTENT_LENGTH) {
            // Both: Transfer-Encoding wins and the connection is not reused (RFC 9112 6.3).
            reuse = false;
        }
        return Ok(if chunked {
            (Framing::Chunked, reuse)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let part = part.trim();
            let n: u64 = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
                .ok_or_else(|| SendError::parse("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(SendError::parse("differing Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), reuse),
        None => (Framing::Close, false),
    })
}

#[cfg(test)]
#[path = "h1client_tests.rs"]
mod tests;

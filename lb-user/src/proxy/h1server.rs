//! Our HTTP/1.1 server loop: requests without a body are parsed, handled and answered on the
//! connection's own task; bodies, upgrades, Expect and HTTP/2 hand the connection to hyper.
//!
//! Why: hyper's server costs a dispatcher, a fresh read buffer and a timer per request; this
//! loop reuses one buffer, one timer and one output buffer per connection (BENCHMARKS.md has
//! the measurement). The framing guard ([`HeadGuard`]) still validates every byte read here.

use super::acks::AckNow;
use super::body::ReqBody;
use super::conn::ConnInfo;
use super::h1guard::HeadGuard;
use super::h1write::{self, Framing};
use super::{handler, ProxyCtx};
use crate::config::Limits;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most header slots parsed on the stack; a larger configured limit uses a heap array.
const STACK_HEADERS: usize = 100;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 4096;

/// How the loop ended: the connection is done, or hyper takes it from here (with the bytes
/// already read in front of the stream).
pub enum Served<I> {
    Closed,
    HandOver(Prefixed<HeadGuard<I>>),
}

/// A parsed head that this loop serves itself.
struct Head {
    req: Request<ReqBody>,
    /// HTTP/1.0, or `Connection: close`: answer, then close.
    close: bool,
    /// HTTP/1.0 with `Connection: keep-alive`: say so in the response.
    keep_alive_10: bool,
    head_method: bool,
}

enum Parsed {
    Partial,
    Reject(u16),
    HandOver,
    Serve(Box<Head>),
}

/// Serves requests until the client closes, a request needs hyper, or `shutdown` (between
/// requests). `Err` says why the connection was dropped (logged at debug).
pub async fn serve<I>(
    mut io: HeadGuard<I>,
    info: Arc<ConnInfo>,
    limits: Limits,
    ctx: &Arc<ProxyCtx>,
    shutdown: &CancellationToken,
) -> Result<Served<I>, String>
where
    I: AsyncRead + AsyncWrite + Unpin + AckNow,
{
    let mut buf = BytesMut::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let timeout = limits.header_timeout.0;
    // One timer per connection: the deadline moves with each request, the timer only when it
    // fires early (so keep-alive traffic does not re-register it per request).
    let mut deadline = Instant::now() + timeout;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    let stop = shutdown.clone().cancelled_owned();
    tokio::pin!(stop);
    loop {
        // Read until a complete head (or a verdict).
        let head = loop {
            match parse(&mut buf, &limits) {
                Parsed::Serve(h) => break h,
                Parsed::HandOver => {
                    // Most hand-overs read a body next: acknowledge the head now (acks.rs).
                    io.ack_now();
                    return Ok(Served::HandOver(Prefixed::new(buf.freeze(), io)));
                }
                Parsed::Reject(status) => {
                    h1write::reject(&mut io, &mut out, status).await;
                    return Err(format!("bad request head ({status})"));
                }
                Parsed::Partial => {}
            }
            if buf.capacity() - buf.len() < READ_ROOM {
                buf.reserve(8192);
            }
            let idle = buf.is_empty();
            let read = tokio::select! {
                biased;
                r = read_head(&mut io, &mut buf) => r,
                _ = sleep.as_mut() => {
                    if Instant::now() < deadline {
                        sleep.as_mut().reset(deadline);
                        continue;
                    }
                    if !idle {
                        h1write::reject(&mut io, &mut out, 408).await;
                    }
                    return Err("no request head within header_timeout".into());
                }
                _ = stop.as_mut(), if idle => return Ok(Served::Closed),
            };
            match read {
                Ok(0) if idle => return Ok(Served::Closed),
                Ok(0) => return Err("closed inside a request head".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        let Head {
            req,
            mut close,
            keep_alive_10,
            head_method,
        } = *head;
        let version_10 = req.version() == Version::HTTP_10;
        let resp = match handler::handle(ctx.clone(), info.clone(), req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        close |= shutdown.is_cancelled();
        let framing = Framing {
            head_method,
            version_10,
            close,
            keep_alive_10,
        };
        let keep = h1write::respond(&mut io, &mut out, resp, framing)
            .await
            .map_err(|e| e.to_string())?;
        if !keep {
            return Ok(Served::Closed);
        }
        deadline = Instant::now() + timeout;
    }
}

/// Reads more of a request head. While it waits with part of a head already read (held by the
/// guard, or in `buf`), the client may be waiting for that part's ACK to send the rest
/// (Nagle's algorithm against our delayed ACK, acks.rs): acknowledge it at once, once per wait.
async fn read_head<I>(io: &mut HeadGuard<I>, buf: &mut BytesMut) -> std::io::Result<usize>
where
    I: AsyncRead + Unpin + AckNow,
{
    let mut acked = false;
    std::future::poll_fn(|cx| {
        let read = std::pin::pin!(io.read_buf(&mut *buf)).poll(cx);
        if read.is_pending() && !acked && (io.holds_partial() || !buf.is_empty()) {
            io.ack_now();
            acked = true;
        }
        read
    })
    .await
}

/// Parses one request head from the front of `buf`.
fn parse(buf: &mut BytesMut, limits: &Limits) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    if buf.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(buf) {
        return if buf.len() >= H2_PREFACE.len() {
            Parsed::HandOver
        } else {
            Parsed::Partial
        };
    }
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![MaybeUninit::uninit(); limits.max_headers];
        &mut heap[..]
    };
    // Where each name and value sits in the head (the parsed slices borrow `buf`, which is
    // split before the request is built): on the stack like the slots.
    let mut stack_offsets = [[0u32; 4]; STACK_HEADERS];
    let mut heap_offsets;
    let offsets: &mut [[u32; 4]] = if slots.len() <= STACK_HEADERS {
        &mut stack_offsets[..]
    } else {
        heap_offsets = vec![[0u32; 4]; slots.len()];
        &mut heap_offsets[..]
    };
    let mut r = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let n = match r.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
            return Parsed::Reject(431)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(431),
        Err(_) => return Parsed::Reject(400),
    };
    if n > limits.max_header_bytes {
        return Parsed::Reject(431);
    }
    let (Some(method), Some(path), Some(minor)) = (r.method, r.path, r.version) else {
        return Parsed::Reject(400);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Reject(400);
    };
    if method == Method::CONNECT {
        return Parsed::HandOver;
    }
    let off = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let path = [off(path.as_bytes()), path.len() as u32];
    let (mut saw_close, mut saw_keep_alive) = (false, false);
    let count = r.headers.len();
    for (h, o) in r.headers.iter().zip(offsets.iter_mut()) {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::HandOver;
        }
        if name.eq_ignore_ascii_case(b"content-length") && !is_zero(h.value) {
            return Parsed::HandOver;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    saw_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    saw_keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::HandOver;
                }
            }
        }
        *o = [
            off(name),
            name.len() as u32,
            off(h.value),
            h.value.len() as u32,
        ];
    }
    let close = saw_close || (minor == 0 && !saw_keep_alive);
    let head = buf.split_to(n).freeze();
    match build(&head, method, path, minor, &offsets[..count]) {
        Some(req) => Parsed::Serve(Box::new(Head {
            head_method: req.method() == Method::HEAD,
            req,
            close,
            keep_alive_10: minor == 0 && !close,
        })),
        None => Parsed::Reject(400),
    }
}

fn is_zero(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| b == b'0')
}

/// The `http` request over the frozen head: the path and values are slices of it, not copies.
fn build(
    head: &Bytes,
    method: Method,
    path: [u32; 2],
    minor: u8,
    offsets: &[[u32; 4]],
) -> Option<Request<ReqBody>> {
    let slice = |o: u32, l: u32| head.slice(o as usize..(o + l) as usize);
    let uri = Uri::from_maybe_shared(slice(path[0], path[1])).ok()?;
    // Room for what the handler adds on the way up (X-Forwarded-*, Forwarded, X-Request-Id,
    // traceparent) without growing the map.
    let mut headers = HeaderMap::with_capacity(offsets.len() + 8);
    for o in offsets {
        let name = HeaderName::from_bytes(&head[o[0] as usize..(o[0] + o[1]) as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(o[2], o[3])).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(ReqBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    Some(req)
}

/// A stream with bytes already read in front of it (what this loop read, handed to hyper).
pub struct Prefixed<I> {
    pre: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(pre: Bytes, inner: I) -> Self {
        Prefixed { pre, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        rb: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(rb.remaining());
            rb.put_slice(&this.pre.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, rb)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[path = "h1server_tests.rs"]
mod tests;

//! Responses on our HTTP/1.1 server loop: the head (framing, Connection and Date added as
//! hyper adds them) and the body, streamed with Content-Length, chunked or until close.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Response, StatusCode};
use hyper::body::Body;
use std::cell::RefCell;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Written out once the buffer holds this much; larger data frames are written directly.
const FLUSH_AT: usize = 16 * 1024;

/// What the request said about the response's framing and the connection.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub head_method: bool,
    pub version_10: bool,
    /// Close after this response (HTTP/1.0 without keep-alive, `Connection: close`, shutdown).
    pub close: bool,
    /// HTTP/1.0 keep-alive: the response must say `Connection: keep-alive`.
    pub keep_alive_10: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    NoBody,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes `resp`; Ok(true) when the connection may carry another request.
pub async fn respond<W, B>(
    io: &mut W,
    out: &mut Vec<u8>,
    resp: Response<B>,
    f: Framing,
) -> io::Result<bool>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let h = &parts.headers;
    let mut close = f.close
        || h.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
    status_line(out, status);
    let mut declared = None;
    for (name, value) in h {
        if name == CONNECTION || name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            declared = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !h.contains_key(DATE) {
        DATE_CACHE.with(|d| header(out, b"date", d.borrow_mut().now()));
    }
    let no_body = f.head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mode = if no_body {
        Mode::NoBody
    } else if let Some(n) = declared {
        Mode::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {n}\r\n");
        Mode::Length(n)
    } else if !f.version_10 {
        header(out, b"transfer-encoding", b"chunked");
        Mode::Chunked
    } else {
        close = true;
        Mode::UntilClose
    };
    if close {
        header(out, b"connection", b"close");
    } else if f.keep_alive_10 {
        header(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    if mode == Mode::NoBody {
        drop(body);
        flush(io, out).await?;
        return Ok(!close);
    }
    let mut sent = 0u64;
    loop {
        // Take what is ready now; before waiting for more, send what is buffered.
        let ready = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match ready.await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                flush(io, out).await?;
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(io::Error::other(format!("response body: {e}"))),
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                sent += data.len() as u64;
                if let Mode::Length(n) = mode {
                    if sent > n {
                        return Err(io::Error::other("response body longer than its length"));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if mode == Mode::Chunked {
                    let _ = write!(out, "{:x}\r\n", data.len());
                }
                if data.len() >= FLUSH_AT {
                    flush(io, out).await?;
                    io.write_all(&data).await?;
                } else {
                    out.extend_from_slice(&data);
                }
                if mode == Mode::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= FLUSH_AT {
                    flush(io, out).await?;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let (Ok(trailers), Mode::Chunked) = (frame.into_trailers(), mode) {
            out.extend_from_slice(b"0\r\n");
            for (name, value) in &trailers {
                header(out, name.as_str().as_bytes(), value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            flush(io, out).await?;
            return Ok(!close);
        }
    }
    match mode {
        Mode::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Mode::Length(n) if sent < n => {
            flush(io, out).await?;
            return Err(io::Error::other("response body shorter than its length"));
        }
        _ => {}
    }
    flush(io, out).await?;
    Ok(!close && mode != Mode::UntilClose)
}

/// Answers a request this loop will not serve (bad head, oversized head, head timeout) before
/// closing; write errors do not matter then.
pub async fn reject<W: AsyncWrite + Unpin>(io: &mut W, out: &mut Vec<u8>, status: u16) {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    status_line(out, status);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n");
    DATE_CACHE.with(|d| header(out, b"date", d.borrow_mut().now()));
    out.extend_from_slice(b"\r\n");
    let _ = flush(io, out).await;
}

/// Clears `out` and starts it with the status line (always HTTP/1.1, as hyper writes it).
fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One `name: value` line of a head (responses here, requests in h1client).
pub(super) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

async fn flush<W: AsyncWrite + Unpin>(io: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.flush().await
}

thread_local! {
    static DATE_CACHE: RefCell<DateCache> = RefCell::new(DateCache::default());
}

/// The IMF-fixdate of the current second, formatted once per second per thread.
#[derive(Default)]
struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

#[cfg(test)]
#[path = "h1write_tests.rs"]
mod tests;

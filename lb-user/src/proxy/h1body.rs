//! A response body read straight from our own upstream HTTP/1.1 connection (h1client.rs): fixed
//! length, chunked (strictly decoded, trailers kept) or until close; at its end the connection goes home.

use super::body::BoxError;
use super::h1client::H1Conn;
use super::upstream::Pool;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Longest chunk-size line (size and extensions) we accept.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section we accept.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most bytes read from the socket at once while streaming a body.
const MAX_READ: usize = 64 * 1024;
/// Bytes read at least once more is needed.
const MIN_READ: usize = 8 * 1024;

/// How the body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Content-Length (0 for HEAD, 1xx, 204 and 304).
    Length(u64),
    Chunked,
    /// Until the endpoint closes (the connection cannot be reused).
    Close,
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

pub struct H1Body {
    conn: Option<H1Conn>,
    state: State,
    /// The connection may carry another request after this body (keep-alive).
    reuse: bool,
    /// The pool the connection returns to (None: a private connection, closed at the end).
    home: Option<Arc<Pool>>,
}

impl H1Body {
    /// A body over `conn`; an empty one gives the connection back at once.
    pub fn new(conn: H1Conn, framing: Framing, reuse: bool, home: Option<Arc<Pool>>) -> Self {
        let state = match framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size),
            Framing::Close => State::Close,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            reuse: reuse && framing != Framing::Close,
            home,
        };
        if matches!(body.state, State::Length(0)) {
            body.done();
        }
        body
    }

    /// The body was read to its end: the connection goes back to its pool when it may be reused
    /// and nothing follows the body (anything more would be a protocol error).
    fn done(&mut self) {
        self.state = State::Done;
        let Some(conn) = self.conn.take() else { return };
        if let (true, Some(home)) = (self.reuse && conn.buf.is_empty(), &self.home) {
            home.checkin_own(conn);
        }
    }

    fn fail(&mut self, message: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(message.into().into())))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(rem) => {
                    if !conn.buf.is_empty() {
                        let n = (*rem).min(conn.buf.len() as u64) as usize;
                        let data = conn.buf.split_to(n).freeze();
                        *rem -= n as u64;
                        if *rem == 0 {
                            this.done();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    (*rem).min(MAX_READ as u64) as usize
                }
                State::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    MAX_READ
                }
                State::Chunked(c) => match c.decode(&mut conn.buf) {
                    Err(e) => return this.fail(format!("upstream chunked body: {e}")),
                    Ok(Some(Item::Data(d))) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Some(Item::Trailers(t))) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Some(Item::End)) => {
                        this.done();
                        return Poll::Ready(None);
                    }
                    Ok(None) => MAX_READ,
                },
            };
            conn.buf.reserve(want.max(MIN_READ));
            let read = ready!(conn.poll_read_buf(cx));
            match read {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("upstream closed the connection mid-body"),
                Ok(_) => {}
                Err(e) => return this.fail(format!("upstream body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    End,
}

enum Item {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

impl Chunked {
    /// The next item from `buf`; None when more bytes are needed. Strict: CRLF line ends, hex
    /// sizes (at most 15 digits), extensions ignored, trailers parsed as header fields.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, String> {
        loop {
            match self {
                Chunked::Size => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let line = &buf[..end];
                    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
                    let digits = trim_ws(digits);
                    if digits.is_empty()
                        || digits.len() > 15
                        || !digits.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err("invalid chunk size".into());
                    }
                    let size = digits.iter().fold(0u64, |n, d| {
                        n * 16 + u64::from((*d as char).to_digit(16).unwrap_or(0))
                    });
                    buf.advance(end + 2);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(rem) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*rem).min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    *rem -= n as u64;
                    if *rem == 0 {
                        *self = Chunked::DataEnd;
                    }
                    return Ok(Some(Item::Data(data)));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Chunked::End;
                        continue;
                    }
                    let Some(end) = find(buf, b"\r\n\r\n", MAX_TRAILERS)? else {
                        return Ok(None);
                    };
                    let section = buf.split_to(end + 4);
                    *self = Chunked::End;
                    return Ok(Some(Item::Trailers(trailers(&section)?)));
                }
                Chunked::End => return Ok(Some(Item::End)),
            }
        }
    }
}

fn trailers(section: &[u8]) -> Result<HeaderMap, String> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            let mut map = HeaderMap::with_capacity(parsed.len());
            for f in parsed {
                let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|e| e.to_string())?;
                let value = HeaderValue::from_bytes(f.value).map_err(|e| e.to_string())?;
                map.append(name, value);
            }
            Ok(map)
        }
        Ok(httparse::Status::Partial) => Err("incomplete trailers".into()),
        Err(e) => Err(format!("trailers: {e}")),
    }
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, String> {
    find(buf, b"\r\n", limit)
}

/// Where `needle` starts in `buf`; an error when it is not within `limit` bytes.
fn find(buf: &[u8], needle: &[u8], limit: usize) -> Result<Option<usize>, String> {
    match buf.windows(needle.len()).position(|w| w == needle) {
        Some(i) if i <= limit => Ok(Some(i)),
        Some(_) => Err("line too long".into()),
        None if buf.len() > limit => Err("line too long".into()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the data, trailers and whether it ended.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, bool), String> {
        let mut c = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(item) = c.decode(&mut buf)? {
                match item {
                    Item::Data(d) => data.extend_from_slice(&d),
                    Item::Trailers(t) => trailers = Some(t),
                    Item::End => return Ok((data, trailers, true)),
                }
            }
        }
        Ok((data, trailers, false))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-sum: 9\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers, ended) = run(input, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(ended, "step {step}");
            assert_eq!(trailers.unwrap()["x-sum"], "9");
        }
        let (data, trailers, ended) = run(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(
            (data.as_slice(), trailers.is_none(), ended),
            (&b"abc"[..], true, true)
        );
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        for bad in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"1234567890abcdef0\r\n",
            b"-1\r\n",
        ] {
            assert!(run(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(run(&long, 64).is_err());
    }
}

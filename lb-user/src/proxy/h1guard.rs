//! Strict HTTP/1.1 request-framing guard between an accepted stream and hyper's server:
//! it rejects the request-smuggling ambiguities that hyper would otherwise accept.
//!
//! Request heads are held until complete and validated (CL+TE, Content-Length, Transfer-Encoding,
//! bare LF, whitespace before a colon, obs-fold, CTLs, request line); a bad one becomes `POISON`,
//! which hyper answers with 400 + close. Bodies flow on while their framing (Content-Length,
//! strict chunked grammar, trailers) is tracked; a violation fails a read with `InvalidData`, a
//! body error for the service. A head over `max_head` goes to hyper unfinished: 431, given http1
//! `max_buf_size(max_head)`. The HTTP/2 preface, CONNECT and an HTTP/1.1 `Upgrade` + `Connection:
//! upgrade` request (after its body) switch to passthrough. That is decided from the request
//! alone: a declined upgrade or CONNECT should be answered with `Connection: close`. With HTTP/2
//! enabled, await [`HeadGuard::first_head`] under the header timeout before serving.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MAX_TRAILER: usize = 16 * 1024;
const MAX_EXT: u16 = 4 * 1024;
/// Invalid method byte: hyper replies 400 and closes without calling the service.
const POISON: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";
/// Bytes read from the stream at most per read.
const SCRATCH_LEN: usize = 8192;

thread_local! {
    /// Where reads land before validation; nothing stays in it between reads, so one per
    /// thread serves every connection (no 8 KiB buffer per connection).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

type Verdict<T> = Result<T, &'static str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Holding a request head (or an empty line before one) until its empty line.
    Head,
    /// Content-Length body: bytes left.
    Body(u64),
    /// Chunk-size line: in the hex digits, in whitespace after them, in an extension, CR seen.
    Size,
    SizeWs,
    Ext,
    SizeCr,
    /// Chunk data: bytes left, then its CRLF.
    Data(u64),
    DataCr,
    DataLf,
    /// Holding the trailer section until its empty line.
    Trailers,
    Passthrough,
    /// Poisoned, failed or oversized: EOF once `out` and `err` are delivered.
    Failed,
}

/// `AsyncRead + AsyncWrite` wrapper validating what is read; writes go straight to `inner`.
pub struct HeadGuard<T> {
    inner: T,
    st: St,
    /// State once the current message ends: `Head`, or `Passthrough` after an upgrade / CONNECT.
    after: St,
    max_head: usize,
    /// Nothing released yet: only then may the HTTP/2 preface come.
    first: bool,
    /// Chunk size being parsed, and its digit (then extension byte) count.
    chunk: u64,
    count: u16,
    /// Unfinished head or trailer section.
    held: Vec<u8>,
    /// Validated bytes not yet handed out, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Body framing violation, reported once `out` is drained.
    err: Option<&'static str>,
}

impl<T> HeadGuard<T> {
    /// The guarded stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Part of a head (or trailer section) is read and held back until its end arrives.
    pub fn holds_partial(&self) -> bool {
        !self.held.is_empty()
    }

    /// `max_head`: the listener's max header bytes, also given to hyper's http1 `max_buf_size`.
    /// Usage: `TokioIo::new(HeadGuard::new(stream, max_header_bytes))`.
    pub fn new(inner: T, max_head: usize) -> Self {
        HeadGuard {
            inner,
            st: St::Head,
            after: St::Head,
            max_head,
            first: true,
            chunk: 0,
            count: 0,
            held: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            err: None,
        }
    }

    /// Resolves once the first bytes for hyper are ready (first head validated, rejected, ...).
    /// hyper-util's auto builder waits for the first bytes (HTTP/2 preface detection) without a
    /// timeout, and the guard holds an unfinished head: with HTTP/2 enabled, a listener should
    /// await this under its header timeout before serving the connection.
    pub async fn first_head(&mut self) -> io::Result<()>
    where
        T: AsyncRead + Unpin,
    {
        std::future::poll_fn(|cx| {
            while self.out.is_empty() && self.err.is_none() && self.st == St::Head {
                ready!(self.poll_fill(cx))?;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// One read into this thread's scratch buffer, validated into `out`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        T: AsyncRead + Unpin,
    {
        SCRATCH.with(|cell| {
            // Busy only if a guard's stream is itself a guard on this thread: then a local one.
            let mut local = Vec::new();
            let mut shared = cell.try_borrow_mut();
            let scratch = match shared.as_deref_mut() {
                Ok(v) => v,
                Err(_) => &mut local,
            };
            scratch.clear();
            scratch.reserve_exact(SCRATCH_LEN);
            // Read into the spare capacity: nothing is zeroed, and `n` bytes are initialised.
            let mut rb = ReadBuf::uninit(scratch.spare_capacity_mut());
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity
            // (ReadBuf's contract: its filled part is initialised and began at its start).
            unsafe { scratch.set_len(n) };
            if n == 0 {
                // EOF: hyper gets any unfinished head, and reports it.
                self.out.extend_from_slice(&self.held);
                self.held.clear();
                self.st = St::Failed;
            }
            self.feed(scratch);
            scratch.clear();
            Poll::Ready(Ok(()))
        })
    }

    /// Poisons the head (`None`) or fails the body (`Some(why)`); either way the end.
    fn fail(&mut self, body_error: Option<&'static str>) {
        self.held.clear();
        match body_error {
            Some(why) => self.err = Some(why),
            None => self.out.extend_from_slice(POISON),
        }
        self.st = St::Failed;
    }

    /// `k` bytes of the current body (at most what is left) went to hyper.
    fn consumed(&mut self, k: usize) {
        let k = k as u64;
        self.st = match self.st {
            St::Body(n) if n > k => St::Body(n - k),
            St::Body(_) => self.after,
            St::Data(n) if n > k => St::Data(n - k),
            St::Data(_) => St::DataCr,
            st => st,
        };
    }

    /// Validates `data`, appending what may go to hyper to `out`.
    fn feed(&mut self, mut data: &[u8]) {
        while let Some(&b) = data.first() {
            let used = match self.st {
                St::Failed => return,
                St::Passthrough => data.len(),
                St::Body(n) | St::Data(n) => {
                    data.len().min(usize::try_from(n).unwrap_or(usize::MAX))
                }
                St::Head | St::Trailers => {
                    data = data.get(self.feed_block(data)..).unwrap_or_default();
                    continue;
                }
                _ => {
                    if let Err(why) = self.chunk_byte(b) {
                        return self.fail(Some(why));
                    }
                    self.out.push(b);
                    data = data.get(1..).unwrap_or_default();
                    continue;
                }
            };
            let (now, rest) = data.split_at_checked(used).unwrap_or((data, &[]));
            self.out.extend_from_slice(now);
            self.consumed(used);
            data = rest;
        }
    }

    /// Head or trailer section: held until its empty line, then validated and released.
    /// Returns how much of `data` was used.
    fn feed_block(&mut self, data: &[u8]) -> usize {
        let trailers = self.st == St::Trailers;
        let limit = if trailers { MAX_TRAILER } else { self.max_head };
        match block_end(&self.held, data) {
            Ok(Some(end)) if self.held.len() + end <= limit => {
                let mut held = std::mem::take(&mut self.held);
                let now = data.get(..end).unwrap_or_default();
                let block = if held.is_empty() {
                    now
                } else {
                    held.extend_from_slice(now);
                    &held[..]
                };
                self.release(block, trailers);
                held.clear();
                self.held = held;
                return end;
            }
            Ok(None) if self.held.len() + data.len() <= limit => self.held.extend_from_slice(data),
            _ if trailers => self.fail(Some("bare LF in, or oversized, trailer section")),
            Err(_) => self.fail(None),
            Ok(_) => {
                // Unfinished, to hyper: over its max_buf_size (= max_head) it answers 431.
                self.out.extend_from_slice(&self.held);
                self.out.extend_from_slice(data);
                self.held.clear();
                self.st = St::Failed;
            }
        }
        data.len()
    }

    /// A complete head or trailer section (ending in its empty line, or just an empty line).
    fn release(&mut self, block: &[u8], trailers: bool) {
        let first = std::mem::replace(&mut self.first, false);
        if trailers {
            let lines = block.strip_suffix(b"\r\n").unwrap_or_default();
            if let Err(why) = fields(lines, |_, _| Ok(())) {
                return self.fail(Some(why));
            }
            self.st = self.after;
        } else if first && block == H2_PREFACE_HEAD {
            self.st = St::Passthrough;
        } else if block != b"\r\n" {
            // (an empty line before a request line is allowed, RFC 9112 2.2)
            let Ok((next, after)) = validate_head(block) else {
                return self.fail(None);
            };
            (self.st, self.after) = (next, after);
        }
        self.out.extend_from_slice(block);
    }

    /// One byte of chunk framing: a chunk-size line, or the CRLF after chunk data.
    fn chunk_byte(&mut self, b: u8) -> Verdict<()> {
        let digit = char::from(b).to_digit(16).filter(|_| self.st == St::Size);
        self.st = match (self.st, b) {
            (St::Size, _) if digit.is_some() && self.count < 16 => {
                self.chunk = self.chunk << 4 | u64::from(digit.unwrap_or(0));
                self.count += 1;
                St::Size
            }
            // BWS is only allowed before ';'
            (St::Size | St::SizeWs, b' ' | b'\t') if self.count > 0 => St::SizeWs,
            (St::Size | St::SizeWs, b';') if self.count > 0 => {
                self.count = 0;
                St::Ext
            }
            (St::Size, b'\r') if self.count > 0 => St::SizeCr,
            (St::Ext, b'\r') => St::SizeCr,
            // chunk-ext: VCHAR / obs-text / SP / HTAB only, up to CR
            (St::Ext, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff) if self.count < MAX_EXT => {
                self.count += 1;
                St::Ext
            }
            (St::SizeCr, b'\n') => {
                self.count = 0;
                match std::mem::take(&mut self.chunk) {
                    0 => St::Trailers,
                    size => St::Data(size),
                }
            }
            (St::DataCr, b'\r') => St::DataLf,
            (St::DataLf, b'\n') => St::Size,
            _ => return Err("invalid chunk framing"),
        };
        Ok(())
    }
}

/// Where the block starting with `held` and continued by `data` ends: the index in `data` after
/// the LF of its first empty line, `None` if not there yet, `Err` on a bare LF.
fn block_end(held: &[u8], data: &[u8]) -> Verdict<Option<usize>> {
    let at = |j: usize| match j.checked_sub(held.len()) {
        None => held.get(j).copied(),
        Some(d) => data.get(d).copied(),
    };
    for (i, _) in data.iter().enumerate().filter(|&(_, &b)| b == b'\n') {
        let lf = held.len() + i;
        if lf.checked_sub(1).and_then(at) != Some(b'\r') {
            return Err("bare LF");
        }
        if lf == 1 || lf.checked_sub(2).and_then(at) == Some(b'\n') {
            return Ok(Some(i + 1));
        }
    }
    Ok(None)
}

/// Byte classes: `TCHAR` (token), `VCHAR` (field value: VCHAR, obs-text, SP, HTAB).
const TCHAR: u8 = 1;
const VCHAR: u8 = 2;
const CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric()
            || matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.')
            || matches!(b, b'^' | b'_' | b'`' | b'|' | b'~')
        {
            t[i] = TCHAR;
        }
        if matches!(b, b'\t' | b' '..=b'~' | 0x80..) {
            t[i] |= VCHAR;
        }
        i += 1;
    }
    t
};

fn is(class: u8, b: u8) -> bool {
    CLASS[usize::from(b)] & class != 0
}

/// Field lines, each ending in CRLF: a token name right before the colon (so no whitespace there,
/// no obs-fold), a value of VCHAR / obs-text / SP / HTAB. Calls `f(name, value without OWS)`.
fn fields(mut block: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Verdict<()>) -> Verdict<()> {
    while !block.is_empty() {
        let (name, rest) = block.split_at(block.iter().position(|&b| !is(TCHAR, b)).unwrap_or(0));
        let rest = rest.strip_prefix(b":").filter(|_| !name.is_empty());
        let rest = rest.ok_or("bad field name (whitespace before colon, obs-fold, CTL)")?;
        let (value, rest) = rest.split_at(rest.iter().position(|&b| !is(VCHAR, b)).unwrap_or(0));
        block = rest
            .strip_prefix(b"\r\n")
            .ok_or("CTL or DEL in field value")?;
        // (trim_ascii trims OWS here: CR, LF and FF are not in a value)
        f(name, value.trim_ascii())?;
    }
    Ok(())
}

/// A request head ending in its empty line: the state after it, and after its message.
fn validate_head(head: &[u8]) -> Verdict<(St, St)> {
    let mut split = head.splitn(2, |&b| b == b'\n');
    let (Some(line), Some(rest)) = (split.next(), split.next()) else {
        return Err("no request line");
    };
    // request-line = method SP request-target SP HTTP-version
    let mut parts = line
        .strip_suffix(b"\r")
        .unwrap_or(line)
        .split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("bad request line");
    };
    if m.is_empty() || !m.iter().all(|&b| is(TCHAR, b)) {
        return Err("bad method");
    }
    if t.is_empty() || t.iter().any(|&b| !(0x21..=0x7e).contains(&b) || b == b'#') {
        return Err("bad request-target");
    }
    let http10 = match v {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err("bad version"),
    };
    let (mut cl, mut te, mut upgrade, mut conn_upgrade) = (None, false, false, false);
    fields(rest.strip_suffix(b"\r\n").unwrap_or(rest), |name, value| {
        if name.eq_ignore_ascii_case(b"content-length") {
            // 1 to 19 digits (no sign, no list), which fit in a u64
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err("bad Content-Length");
            }
            let n = value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0'));
            if cl.replace(n).is_some_and(|prev| prev != n) {
                return Err("differing Content-Length");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te || !value.eq_ignore_ascii_case(b"chunked") {
                return Err("Transfer-Encoding other than one `chunked`");
            }
            te = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case(b"connection") && value.is_ascii() {
            // (a value with obs-text is skipped, as the proxy's `HeaderValue::to_str` fails on it)
            let mut tokens = value.split(|&b| b == b',');
            conn_upgrade |= tokens.any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        }
        Ok(())
    })?;
    if te && (cl.is_some() || http10) {
        return Err("Transfer-Encoding with Content-Length or on HTTP/1.0");
    }
    let after = match m == b"CONNECT" || (upgrade && conn_upgrade && !http10) {
        true => St::Passthrough,
        false => St::Head,
    };
    let next = match cl {
        _ if te => St::Size,
        Some(n) if n > 0 => St::Body(n),
        _ => after,
    };
    Ok((next, after))
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let pending = this.out.get(this.out_pos..).unwrap_or_default();
            if !pending.is_empty() {
                let n = pending.len().min(buf.remaining());
                buf.put_slice(pending.get(..n).unwrap_or_default());
                this.out_pos += n;
                if this.out_pos >= this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = this.err.take() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
            }
            match this.st {
                St::Failed => return Poll::Ready(Ok(())),
                St::Passthrough => {
                    // Buffers are no longer needed: free them for long-lived tunnels.
                    (this.out, this.held) = Default::default();
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                St::Body(n) | St::Data(n) => {
                    // Nothing buffered: read straight into hyper's buffer, at most `n`.
                    let mut sub = buf.take(usize::try_from(n).unwrap_or(usize::MAX));
                    let start = sub.filled().as_ptr();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
                    if sub.filled().as_ptr() != start {
                        return Poll::Ready(Err(io::Error::other("inner reader swapped ReadBuf")));
                    }
                    let k = sub.filled().len();
                    // SAFETY: `sub` is `buf`'s unfilled part (same memory, checked above), whose
                    // first `k` bytes the inner reader initialized and filled.
                    unsafe { buf.assume_init(k) };
                    buf.advance(k);
                    this.consumed(k);
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[path = "h1guard_tests.rs"]
mod tests;

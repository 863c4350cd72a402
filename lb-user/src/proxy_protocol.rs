//! PROXY protocol v1 and v2 — read the header a trusted peer sends first on an accepted
//! connection, and encode the header we send to backends.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
const V2_MAX_BODY: usize = 4096;

/// Client addresses carried by a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddrs {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl ProxyAddrs {
    pub fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        Self {
            source,
            destination,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyProtoError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("v1 header longer than 107 bytes")]
    V1TooLong,
    #[error("malformed v1 header: {0}")]
    V1Malformed(&'static str),
    #[error("v2 unsupported version/command (0x{0:02x})")]
    V2Unsupported(u8),
    #[error("v2 unsupported address family/transport (0x{0:02x})")]
    V2Family(u8),
    #[error("v2 declared length {0} exceeds 4096")]
    V2TooLong(usize),
    #[error("v2 address block too short")]
    V2ShortAddr,
    #[error("timed out reading PROXY header")]
    Timeout,
    #[error("connection closed inside PROXY header")]
    Eof,
    #[error("I/O error reading PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Outcome of parsing the bytes received so far.
enum Parse {
    Incomplete,
    /// Addresses (if any) and the header's total length in bytes.
    Done(Option<ProxyAddrs>, usize),
}

/// Reads exactly one v1 or v2 header from `stream` (auto-detected by its first bytes), within `timeout`.
/// Returns the addresses (None for v1 "UNKNOWN", v2 LOCAL command, or v2 AF_UNSPEC / AF_UNIX)
/// and a `Prefixed<S>` stream that first yields any bytes read past the header, then the inner stream.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    timeout: Duration,
) -> Result<(Option<ProxyAddrs>, Prefixed<S>), ProxyProtoError> {
    // Bounded: `parse` decides by 107 bytes (v1) or 16 + 4096 (v2), so the buffer never fills.
    let mut buf = vec![0u8; V2_FIXED + V2_MAX_BODY];
    let read = async {
        let mut filled = 0;
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]).await? {
                0 => return Err(ProxyProtoError::Eof),
                n => filled += n,
            }
            if let Parse::Done(addrs, len) = parse(&buf[..filled])? {
                return Ok((addrs, len, filled));
            }
        }
        Err(ProxyProtoError::NotProxy)
    };
    let (addrs, len, filled) = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ProxyProtoError::Timeout)??;
    let prefix = Bytes::copy_from_slice(buf.get(len..filled).unwrap_or_default());
    Ok((addrs, Prefixed::new(prefix, stream)))
}

fn parse(buf: &[u8]) -> Result<Parse, ProxyProtoError> {
    // Compare on the common length: a short read that is still a valid prefix waits for more.
    let matches = |sig: &[u8]| buf.iter().zip(sig).all(|(a, b)| a == b);
    if matches(V2_SIG) {
        parse_v2(buf)
    } else if matches(V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyProtoError::NotProxy)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parse, ProxyProtoError> {
    use ProxyProtoError::V1Malformed as Bad;
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(ProxyProtoError::V1TooLong);
        }
        return Ok(Parse::Incomplete);
    };
    let line = match lf.checked_sub(1).map(|cr| (cr, window[cr])) {
        Some((cr, b'\r')) => &window[..cr],
        _ => return Err(Bad("line must end in CRLF")),
    };
    if line.starts_with(b"PROXY UNKNOWN") {
        return Ok(Parse::Done(None, lf + 1));
    }
    let line = std::str::from_utf8(line).map_err(|_| Bad("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let ["PROXY", proto, src, dst, sport, dport] = fields[..] else {
        return Err(Bad("expected 6 single-space separated fields"));
    };
    let v4 = match proto {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(Bad("unknown protocol")),
    };
    let ip = |s: &str| s.parse::<IpAddr>().ok().filter(|ip| ip.is_ipv4() == v4);
    let ip = |s: &str| ip(s).ok_or(Bad("bad address"));
    let digits = |s: &str| s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    let port = |s: &str| Some(s).filter(|s| digits(s)).and_then(|s| s.parse().ok());
    let port = |s: &str| port(s).ok_or(Bad("bad port"));
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Parse::Done(
        Some(ProxyAddrs::new(source, destination)),
        lf + 1,
    ))
}

fn parse_v2(buf: &[u8]) -> Result<Parse, ProxyProtoError> {
    use ProxyProtoError::{V2Family, V2ShortAddr};
    let &[.., ver_cmd, fam, len_hi, len_lo] = buf.get(..V2_FIXED).unwrap_or_default() else {
        return Ok(Parse::Incomplete);
    };
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Err(ProxyProtoError::V2Unsupported(ver_cmd));
    }
    let body_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if body_len > V2_MAX_BODY {
        return Err(ProxyProtoError::V2TooLong(body_len));
    }
    let local = ver_cmd & 0x0f == 0; // LOCAL: ignore the address block whatever the family
    let need = match fam {
        _ if local => 0,
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return Err(V2Family(fam)),
    };
    if body_len < need {
        return Err(V2ShortAddr); // decided before waiting for the body
    }
    let Some(body) = buf.get(V2_FIXED..V2_FIXED + body_len) else {
        return Ok(Parse::Incomplete);
    };
    let addrs = match fam {
        _ if local => None,
        0x11 | 0x12 => Some(v2_addrs::<4>(body).ok_or(V2ShortAddr)?),
        0x21 | 0x22 => Some(v2_addrs::<16>(body).ok_or(V2ShortAddr)?),
        _ => None, // AF_UNSPEC, AF_UNIX; TLVs after the block are skipped
    };
    Ok(Parse::Done(addrs, V2_FIXED + body_len))
}

/// src addr, dst addr (N bytes each), src port, dst port.
fn v2_addrs<const N: usize>(b: &[u8]) -> Option<ProxyAddrs>
where
    IpAddr: From<[u8; N]>,
{
    let ip = |i: usize| Some(IpAddr::from(<[u8; N]>::try_from(b.get(i..i + N)?).ok()?));
    let port = |i: usize| Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let (src, dst) = (
        SocketAddr::new(ip(0)?, port(2 * N)?),
        SocketAddr::new(ip(N)?, port(2 * N + 2)?),
    );
    Some(ProxyAddrs::new(src, dst))
}

/// If the families differ, map the IPv4 side to IPv4-mapped IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into(),
        v6 => v6,
    };
    match a.is_ipv4() == b.is_ipv4() {
        true => (a, b),
        false => (v6(a), v6(b)),
    }
}

/// v1 text header; TCP6 when either side is IPv6.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    let (sip, dip, sp, dp) = (s.ip(), d.ip(), s.port(), d.port());
    format!("PROXY {proto} {sip} {dip} {sp} {dp}\r\n").into_bytes()
}

/// v2 binary header: PROXY command, STREAM over INET/INET6, no TLVs.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let fam: u8 = if s.is_ipv4() { 0x11 } else { 0x21 };
    let body = [octets(s.ip()), octets(d.ip())].concat();
    let len = (body.len() as u16 + 4).to_be_bytes();
    let ports = [s.port().to_be_bytes(), d.port().to_be_bytes()].concat();
    [&V2_SIG[..], &[0x21, fam], &len, &body, &ports].concat()
}

/// A stream that first yields bytes read past the PROXY header, then the inner stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
    /// Not-yet-read leftover bytes and the inner stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

type IoRes<T> = Poll<std::io::Result<T>>;

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> IoRes<usize> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> IoRes<usize> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> IoRes<()> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> IoRes<()> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

//! An accepted TCP connection that joins tokio's reactor only when it first has to wait: a
//! request read and answered at once never costs the epoll_ctl add and delete.
//!
//! HAProxy does the same (it reads a new connection before polling it). Reads and writes go
//! straight to the non-blocking socket until one would block; from then on the connection is
//! an ordinary registered `tokio::net::TcpStream`. Registering after a would-block is safe:
//! epoll reports readiness that is already there when the socket is added.

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcp};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct LazyTcp(State);

enum State {
    /// Not registered: I/O is tried directly.
    Plain(StdTcp),
    Polled(TcpStream),
    /// Registration failed (the socket is closed).
    Failed,
}

impl LazyTcp {
    /// `stream` must be in non-blocking mode (as `accept4(SOCK_NONBLOCK)` returns it).
    pub fn new(stream: StdTcp) -> Self {
        LazyTcp(State::Plain(stream))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            State::Plain(s) => s.local_addr(),
            State::Polled(s) => s.local_addr(),
            State::Failed => Err(failed()),
        }
    }

    /// `f` on the socket (socket options), unless it could not join the reactor.
    pub fn with_socket<R>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> Option<R> {
        match &self.0 {
            State::Plain(s) => Some(f(socket2::SockRef::from(s))),
            State::Polled(s) => Some(f(socket2::SockRef::from(s))),
            State::Failed => None,
        }
    }

    /// Whether the connection has joined the reactor.
    pub fn is_polled(&self) -> bool {
        matches!(self.0, State::Polled(_))
    }

    /// The registered stream, registering it first if needed.
    fn polled(&mut self) -> io::Result<&mut TcpStream> {
        if let State::Plain(_) = &self.0 {
            if let State::Plain(s) = std::mem::replace(&mut self.0, State::Failed) {
                self.0 = State::Polled(TcpStream::from_std(s)?);
            }
        }
        match &mut self.0 {
            State::Polled(s) => Ok(s),
            _ => Err(failed()),
        }
    }

    /// The unregistered socket, if it still is.
    fn plain(&self) -> Option<&StdTcp> {
        match &self.0 {
            State::Plain(s) => Some(s),
            _ => None,
        }
    }
}

fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection could not join the reactor",
    )
}

/// `Some(result)` unless the socket would block or the call was interrupted (then the caller
/// registers and polls, and tokio's stream retries).
fn direct<T>(r: io::Result<T>) -> Option<io::Result<T>> {
    match r {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        r => Some(r),
    }
}

impl AsyncRead for LazyTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(s) = this.plain() {
            // SAFETY: recv only writes bytes it received into the unfilled part, and exactly
            // `n` of them are then marked initialised and filled.
            let got = direct(socket2::SockRef::from(s).recv(unsafe { buf.unfilled_mut() }));
            if let Some(r) = got {
                return Poll::Ready(r.map(|n| {
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                }));
            }
        }
        match this.polled() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LazyTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.plain().and_then(|mut s| direct(s.write(data))) {
            return Poll::Ready(r);
        }
        match this.polled() {
            Ok(s) => Pin::new(s).poll_write(cx, data),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this
            .plain()
            .and_then(|mut s| direct(s.write_vectored(bufs)))
        {
            return Poll::Ready(r);
        }
        match this.polled() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            State::Polled(s) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            State::Plain(s) => Poll::Ready(s.shutdown(Shutdown::Write)),
            State::Polled(s) => Pin::new(s).poll_shutdown(cx),
            State::Failed => Poll::Ready(Err(failed())),
        }
    }
}

#[cfg(test)]
#[path = "lazy_tcp_tests.rs"]
mod tests;

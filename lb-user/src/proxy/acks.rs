//! Delayed ACKs on client connections: off from the listening socket, so a request's ACK rides
//! on its response; back to immediate ACKs when a request arrives in pieces.
//!
//! HAProxy does both on its HTTP listeners. The second half matters: a client with Nagle's
//! algorithm on holds the rest of a split request until its first part is acknowledged, which a
//! delayed ACK would put off by up to 40 ms (HAProxy commit 5e20552, "re-enable TCP quick-ack
//! upon incomplete HTTP requests").

use super::h1guard::HeadGuard;
use super::lazy_tcp::LazyTcp;
use socket2::SockRef;
use std::os::fd::AsFd;

/// Turns quick ACKs off on a listening socket; accepted sockets inherit it, so the kernel
/// delays the ACK of a request and sends it with the response instead of as a packet of its
/// own: one packet less per new connection, for the client and us. The delayed-ACK timer still
/// acknowledges a slow response.
pub fn delay_first_ack(sock: &impl AsFd, name: &str) {
    if let Err(e) = SockRef::from(sock).set_tcp_quickack(false) {
        tracing::debug!(listener = %name, error = %e, "cannot turn TCP_QUICKACK off");
    }
}

/// A client connection that can acknowledge what it has received now (`TCP_QUICKACK` on the
/// TCP socket underneath): called when a request head is incomplete, or before a request body
/// is read, so a client waiting for that ACK sends the rest.
pub trait AckNow {
    fn ack_now(&self);
}

impl AckNow for LazyTcp {
    fn ack_now(&self) {
        if let Some(Err(e)) = self.with_socket(|s| s.set_tcp_quickack(true)) {
            tracing::debug!(error = %e, "cannot turn TCP_QUICKACK on");
        }
    }
}

impl<T: AckNow> AckNow for HeadGuard<T> {
    fn ack_now(&self) {
        self.get_ref().ack_now();
    }
}

impl<T: AckNow> AckNow for crate::proxy_protocol::Prefixed<T> {
    fn ack_now(&self) {
        self.get_ref().ack_now();
    }
}

impl<T: AckNow> AckNow for tokio_rustls::server::TlsStream<T> {
    fn ack_now(&self) {
        self.get_ref().0.ack_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// `ack_now` through the guard reaches the socket: an accepted socket that inherited
    /// delayed ACKs (`TCP_QUICKACK` reads 0; listen_opts_tests.rs tests the inheritance) reads 1 after.
    #[tokio::test]
    async fn ack_now_turns_quick_acks_back_on() {
        let sock = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = sock.local_addr().expect("bound address");
        delay_first_ack(&sock, "test");
        let (_client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), sock.accept());
        let (stream, _) = accepted.expect("accept");
        let guarded = HeadGuard::new(LazyTcp::new(stream.into_std().expect("std stream")), 1024);
        let quickack = |g: &HeadGuard<LazyTcp>| {
            g.get_ref()
                .with_socket(|s| s.tcp_quickack())
                .expect("the socket")
                .expect("getsockopt TCP_QUICKACK")
        };
        assert!(!quickack(&guarded));
        guarded.ack_now();
        assert!(quickack(&guarded));
    }
}

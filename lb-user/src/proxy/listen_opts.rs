//! Options set on a listening socket instead of on every connection: no Nagle and a delayed first
//! ACK (accepted sockets inherit both), and the deferred accept a listener can switch off.
//!
//! HAProxy sets TCP_NODELAY with one setsockopt per accepted connection; Linux copies it from the
//! listener, so we set it once. `defer_accept` is HAProxy's `defer-accept` and nginx's `deferred`.

use socket2::SockRef;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// How long the kernel keeps a connection whose client has sent nothing before accepting it
/// anyway: one SYN-ACK retransmission (as HAProxy's `defer-accept`).
const DEFER_SECS: libc::c_int = 1;

/// Prepares a listening socket; returns whether accepted sockets inherit TCP_NODELAY (if not,
/// the accept loop sets it on each connection).
pub fn prepare(sock: &impl AsFd, name: &str, defer_accept: bool) -> bool {
    super::acks::delay_first_ack(sock, name);
    if let Err(e) = set_defer_accept(sock, defer_accept) {
        tracing::warn!(listener = %name, error = %e, "cannot set TCP_DEFER_ACCEPT");
    }
    match SockRef::from(sock).set_tcp_nodelay(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(listener = %name, error = %e, "TCP_NODELAY on the listener failed; setting it per connection");
            false
        }
    }
}

/// Deferred accept on or off: on, the kernel hands over a connection only once its client has
/// sent data, so the worker wakes once per connection instead of twice (accept, then request)
/// and never registers a connection whose request is already there.
pub fn set_defer_accept(sock: &impl AsFd, on: bool) -> io::Result<()> {
    let secs: libc::c_int = if on { DEFER_SECS } else { 0 };
    // SAFETY: a valid fd for the call's duration, and a c_int option value of its own size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether deferred accept is on (the kernel reads back a rounded number of seconds).
pub fn defer_accept(sock: &impl AsFd) -> io::Result<bool> {
    let mut secs: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid fd, and an out-value of the size passed in `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_mut(&mut secs).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(secs > 0),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
#[path = "listen_opts_tests.rs"]
mod tests;

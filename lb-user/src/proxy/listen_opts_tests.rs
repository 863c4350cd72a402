//! Listening-socket options as the kernel applies them to real loopback connections.

use super::*;
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}

/// Polls `accept` until it returns a connection or `within` has passed (None).
fn accept_within(l: &TcpListener, within: Duration) -> Option<TcpStream> {
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => return Some(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if start.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn accepted_sockets_inherit_nodelay_from_a_prepared_listener() {
    let plain = listener();
    let _c = TcpStream::connect(plain.local_addr().expect("address")).expect("connect");
    let s = accept_within(&plain, Duration::from_secs(5)).expect("accepted");
    // The kernel's default, so the check below can tell.
    assert!(!SockRef::from(&s).tcp_nodelay().expect("getsockopt"));

    let prepared = listener();
    assert!(
        prepare(&prepared, "test", false),
        "TCP_NODELAY on the listener"
    );
    let _c = TcpStream::connect(prepared.local_addr().expect("address")).expect("connect");
    let s = accept_within(&prepared, Duration::from_secs(5)).expect("accepted");
    assert!(SockRef::from(&s).tcp_nodelay().expect("getsockopt"));
}

#[test]
fn accepted_sockets_delay_their_first_ack() {
    let quickack = |prepared: bool| {
        let l = listener();
        if prepared {
            prepare(&l, "test", false);
        }
        let _c = TcpStream::connect(l.local_addr().expect("address")).expect("connect");
        let s = accept_within(&l, Duration::from_secs(5)).expect("accepted");
        // Reads 0 while the kernel delays ACKs.
        SockRef::from(&s)
            .tcp_quickack()
            .expect("getsockopt TCP_QUICKACK")
    };
    // The kernel's default, so the check below can tell.
    assert!(quickack(false));
    assert!(!quickack(true));
}

#[test]
fn deferred_accept_hands_over_a_connection_with_its_first_bytes() {
    let l = listener();
    prepare(&l, "test", true);
    assert!(defer_accept(&l).expect("getsockopt"));
    let mut c = TcpStream::connect(l.local_addr().expect("address")).expect("connect");
    // Connected on the client's side, but nothing to read yet: the kernel keeps it (until the
    // SYN-ACK retransmission after 1 s).
    assert!(accept_within(&l, Duration::from_millis(300)).is_none());
    c.write_all(b"GET / HTTP/1.1\r\n").expect("send");
    let s = accept_within(&l, Duration::from_secs(5)).expect("accepted once data came");
    let mut buf = [0u8; 64];
    s.set_nonblocking(false).expect("blocking");
    let n = std::io::Read::read(&mut &s, &mut buf).expect("read");
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n");
}

#[test]
fn without_deferred_accept_a_silent_client_is_accepted_at_once() {
    let l = listener();
    prepare(&l, "test", false);
    assert!(!defer_accept(&l).expect("getsockopt"));
    let _c = TcpStream::connect(l.local_addr().expect("address")).expect("connect");
    assert!(accept_within(&l, Duration::from_secs(5)).is_some());
}

#[test]
fn deferred_accept_switches_in_place() {
    let l = listener();
    set_defer_accept(&l, true).expect("on");
    assert!(defer_accept(&l).expect("getsockopt"));
    set_defer_accept(&l, false).expect("off");
    assert!(!defer_accept(&l).expect("getsockopt"));
}

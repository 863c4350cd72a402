use super::*;
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

/// A connected pair on loopback: (client, server side as LazyTcp).
fn pair() -> (std::net::TcpStream, LazyTcp) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    (client, LazyTcp::new(s))
}

#[tokio::test]
async fn an_exchange_that_never_waits_stays_off_the_reactor() {
    let (mut client, mut conn) = pair();
    // On loopback the bytes are in the server's queue when write returns.
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(T, conn.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
    timeout(T, conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n"))
        .await
        .unwrap()
        .unwrap();
    let mut got = [0u8; 19];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(!conn.is_polled(), "nothing had to wait: no registration");
    assert_eq!(conn.local_addr().unwrap(), client.peer_addr().unwrap());
    // A shutdown while still unregistered reaches the client as EOF.
    timeout(T, conn.shutdown()).await.unwrap().unwrap();
    assert_eq!(client.read(&mut got).unwrap(), 0);
}

#[tokio::test]
async fn a_read_with_nothing_there_registers_and_wakes_on_data() {
    let (mut client, mut conn) = pair();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        client.write_all(b"late").unwrap();
        client
    });
    let mut buf = [0u8; 16];
    let n = timeout(T, conn.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"late");
    assert!(conn.is_polled());
    // EOF once the client closes, through the registered stream.
    drop(writer.join().unwrap());
    assert_eq!(timeout(T, conn.read(&mut buf)).await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn a_write_larger_than_the_socket_buffer_registers_and_completes() {
    let (mut client, mut conn) = pair();
    const LEN: usize = 16 << 20;
    let reader = std::thread::spawn(move || {
        // Start reading only later, so the server's first writes fill the buffers.
        std::thread::sleep(Duration::from_millis(50));
        let mut total = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    let data = vec![7u8; LEN];
    timeout(T, conn.write_all(&data)).await.unwrap().unwrap();
    assert!(conn.is_polled(), "the kernel buffer filled: it had to wait");
    drop(conn);
    assert_eq!(reader.join().unwrap(), LEN);
}

#[tokio::test]
async fn eof_before_any_registration_reads_as_zero() {
    let (client, mut conn) = pair();
    drop(client);
    let mut buf = [0u8; 8];
    assert_eq!(timeout(T, conn.read(&mut buf)).await.unwrap().unwrap(), 0);
    assert!(!conn.is_polled());
}

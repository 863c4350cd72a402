//! HeadGuard tests: a table of framing cases run whole, byte by byte and in small reads, plus
//! the async read paths.
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use Want::*;

const MAX: usize = 256;
const H: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\n";
const CH: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
const GET: &[u8] = b"GET /n HTTP/1.1\r\nHost: x\r\n\r\n";
/// WebSocket-like bytes, with LFs and a request line that is not valid HTTP.
const BIN: &[u8] = b"\x81\x85\x37\xfa\x21\x3d\x7f\n\x00GET / HTTP/1.1 junk\r\n\n\r\n\r\n\xff";
/// Poisoned if parsed as a request.
const JUNK: &[u8] = b"\x81\x85abcd\r\n\r\n";

/// Pass: output == input. Poison: a prefix of the input + POISON. BodyErr: an InvalidData
/// error after a strict prefix. Oversize: a prefix longer than MAX, no poison (hyper: 431).
#[derive(Clone, Copy, Debug)]
enum Want {
    Pass,
    Poison,
    BodyErr,
    Oversize,
}

#[rustfmt::skip]
fn rows() -> Vec<(Want, Vec<u8>)> {
    let rows: &[(Want, &[&[u8]])] = &[
        // valid controls
        (Pass, &[H, b"Content-Length: 5\r\n\r\nhello", GET]),
        (Pass, &[CH, b"5\r\nhello\r\n0\r\n\r\n", GET]),
        (Pass, &[CH, b"5;a=b\r\nhello\r\n3 ;n=\"q v\"\t\r\nabc\r\n0;x\r\n\r\n", GET]),
        (Pass, &[CH, b"5\r\nhello\r\n0\r\nX-T: a\r\nX-U:b\r\n\r\n", GET]),
        (Pass, &[b"\r\n\r\n", GET, b"\r\n", GET]),
        (Pass, &[b"GET / HTTP/1.0\r\n\r\nPOST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"]),
        (Pass, &[H, b"Content-Length: 5\r\ncontent-length:5 \r\nX: a\xffb\r\n\r\nhello"]),
        (Pass, &[H, b"Transfer-Encoding: CHUNKED\r\n\r\n000000000000000F\r\n"]),
        (Pass, &[b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET http://x/?q HTTP/1.1\r\n\r\n"]),
        (Pass, &[b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: a, Upgrade\r\n\r\n", BIN]),
        (Pass, &[H, b"Upgrade: x\r\nConnection: upgrade\r\nContent-Length: 3\r\n\r\nabc", BIN]),
        (Pass, &[H, b"Upgrade: x\r\nConnection:UPGRADE\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1\r\nx\r\n0\r\n\r\n", BIN]),
        (Pass, &[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00", BIN]),
        (Pass, &[b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", BIN]),
        (Pass, &[GET, b"GET / HTTP/1.1\r\nHost: x\r"]), // EOF mid-head
        (Pass, &[H, b"Content-Length: 9\r\n\r\nhel"]), // EOF mid-body
        // no upgrade: what follows is still parsed
        (Poison, &[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", JUNK]),
        (Poison, &[b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n", JUNK]),
        (Poison, &[b"GET / HTTP/1.0\r\nUpgrade: w\r\nConnection: upgrade\r\n\r\n", JUNK]),
        (Poison, &[b"GET / HTTP/1.1\r\nUpgrade: w\r\nConnection: upgrades\r\n\r\n", JUNK]),
        (Poison, &[b"GET / HTTP/1.1\r\nUpgrade: w\r\nConnection: upgrade, \xff\r\n\r\n", JUNK]),
        (Poison, &[GET, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]),
        (Poison, &[b"\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]),
        // CL + TE, TE on HTTP/1.0, repeated TE
        (Poison, &[H, b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", GET]),
        (Poison, &[H, b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"]),
        (Poison, &[H, b"Transfer-Encoding: chunked\r\nContent-Length: abc\r\n\r\n"]),
        (Poison, &[b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]),
        (Poison, &[H, b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"]),
        // bare LF / CR in the head
        (Poison, &[b"GET / HTTP/1.1\nHost: x\r\n\r\n"]),
        (Poison, &[b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"]),
        (Poison, &[b"GET / HTTP/1.1\nHost: x\n\n"]),
        (Poison, &[b"GET / HTTP/1.1\r\nHost: x\r\n\n", GET]),
        (Poison, &[b"\nGET / HTTP/1.1\r\n\r\n"]),
        (Poison, &[GET, b"POST / HTTP/1.1\nContent-Length: 5\n\nhello"]),
        (Poison, &[b"GET / HTTP/1.1\rHost: x\r\n\r\n"]),
        (Poison, &[b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n"]),
        // chunk framing and trailers
        (BodyErr, &[CH, b"5\r\nhelloXX\r\n0\r\n\r\n", GET]),
        (BodyErr, &[CH, b"5;a\nhello\r\n0\r\n\r\n"]),
        (BodyErr, &[CH, b"5\r\nhello\n0\r\n\r\n"]),
        (BodyErr, &[CH, b"5\r\nhello\r0\r\n\r\n"]),
        (BodyErr, &[CH, b"5\r\nhelloX\n0\r\n\r\n"]),
        (BodyErr, &[CH, b"0\n\n"]),
        (BodyErr, &[CH, b"0\r\n\n", GET]),
        (BodyErr, &[CH, b"0\r\nX-T: a\n", GET]),
        (BodyErr, &[CH, b"0\r\nX-T: a\r\n\n", GET]),
        (BodyErr, &[CH, b"0\r\nX T: a\r\n\r\n"]),
        (BodyErr, &[CH, b"0\r\nX-T: a\r\n b\r\n\r\n"]),
        (BodyErr, &[CH, b"0\r\nX-T: a\x00\r\n\r\n"]),
    ];
    let mut v: Vec<_> = rows.iter().map(|(w, parts)| (*w, parts.concat())).collect();
    for cl in ["5\r\nContent-Length: 6", "5, 6", "5, 5", "+5", "-1", "0x5", "", "1e3",
        "99999999999999999999"] {
        v.push((Poison, [H, b"Content-Length: ", cl.as_bytes(), b"\r\n\r\nhello"].concat()));
    }
    for te in ["chunked, identity", "xchunked", "identity", "gzip, chunked", ",chunked", "",
        "\"chunked\"", "chunked\x0b"] {
        v.push((Poison, [H, b"Transfer-Encoding: ", te.as_bytes(), b"\r\n\r\n0\r\n\r\n"].concat()));
    }
    for f in ["Host : x", "Content-Length\t: 5", "X: a\r\n b", "X: a\r\n\tb", " X: a", "X: a\x00b",
        "X: a\x7fb", "X: a\x0bb", "X\x00Y: b", "NoColon", ": x", "X Y: b", "X: a\rb"] {
        v.push((Poison, [b"GET / HTTP/1.1\r\nHost: x\r\n", f.as_bytes(), b"\r\n\r\n"].concat()));
    }
    for l in ["GET  / HTTP/1.1", "GET /  HTTP/1.1", "GET / HTTP/1.1 ", "GET /", "GET / ",
        "GET\t/\tHTTP/1.1", "GET / HTTP/1.2", "GET / http/1.1", "GET / HTTP/2.0", "GET /a\x00b HTTP/1.1",
        "GET /a#f HTTP/1.1", "G@T / HTTP/1.1", " / HTTP/1.1", "GET http://a b/ HTTP/1.1"] {
        v.push((Poison, [l.as_bytes(), b"\r\nHost: x\r\n\r\n"].concat()));
    }
    for s in ["zz", "-1", "0x5", "10000000000000005", "5 ", "5\t", " 5", "+5", "", "5 x", "5;\x00",
        "5\n", "5\rhello", "5 ;a\rx"] {
        v.push((BodyErr, [CH, s.as_bytes(), b"\r\nhello\r\n0\r\n\r\n"].concat()));
    }
    v.push((BodyErr, [CH, b"5;", &[b'e'; 4100], b"\r\nhello\r\n0\r\n\r\n"].concat()));
    v.push((BodyErr, [CH, b"0\r\n", &b"X-T: aaaaaaaaaaaaa\r\n".repeat(900), b"\r\n"].concat()));
    // head size: exactly MAX passes; MAX + 1, complete or not, goes to hyper for its 431
    let pad = |n: usize| [b"GET / HTTP/1.1\r\nX: ", &vec![b'a'; n - 23][..], b"\r\n\r\n"].concat();
    v.push((Pass, [&pad(MAX)[..], GET].concat()));
    v.push((Oversize, [&pad(MAX + 1)[..], GET].concat()));
    v.push((Oversize, pad(2 * MAX)[..2 * MAX - 4].to_vec()));
    v
}

/// Serves `.0` in reads of at most `.2` bytes, then EOF.
struct Src(Vec<u8>, usize, usize);
impl AsyncRead for Src {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context,
        b: &mut ReadBuf,
    ) -> Poll<io::Result<()>> {
        let Src(data, pos, step) = &mut *self;
        let end = data.len().min(*pos + (*step).min(b.remaining()));
        b.put_slice(&data[*pos..end]);
        *pos = end;
        Poll::Ready(Ok(()))
    }
}

/// Reads a guard over `input` to EOF with `rbuf`-byte reads: what it gave, and whether an
/// InvalidData error came (once, then EOF).
fn run(input: &[u8], step: usize, rbuf: usize) -> (Vec<u8>, bool) {
    let mut g = HeadGuard::new(Src(input.to_vec(), 0, step), MAX);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let (mut out, mut err, mut tmp) = (Vec::new(), false, vec![0; rbuf]);
    for _ in 0..input.len() * 2 + 50 {
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut g).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return (out, err),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) if !err && e.kind() == io::ErrorKind::InvalidData => err = true,
            r => panic!("unexpected {r:?}"),
        }
    }
    panic!("no EOF");
}

#[test]
fn table() {
    for (want, input) in rows() {
        // one write read at once, byte by byte, and one write read 3 bytes at a time
        for (step, rbuf) in [(usize::MAX, 1 << 16), (1, 1 << 16), (usize::MAX, 3)] {
            let (out, err) = run(&input, step, rbuf);
            let prefix = |o: &[u8]| input.starts_with(o);
            let ok = match want {
                Pass => !err && out == input,
                Poison => !err && out.strip_suffix(POISON).is_some_and(prefix),
                BodyErr => err && out.len() < input.len() && prefix(&out),
                Oversize => !err && out.len() > MAX && prefix(&out),
            };
            let (i, o) = (input.escape_ascii(), out.escape_ascii());
            assert!(
                ok,
                "{want:?} step {step} rbuf {rbuf}\n in: {i}\nout: {o} err {err}"
            );
        }
    }
}

#[tokio::test]
async fn async_reads() {
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let mut g = HeadGuard::new(s, 1024);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
    c.write_all(&head[..30]).await.unwrap();
    // nothing is released before the head is complete
    let reader = tokio::spawn(async move {
        let mut buf = [0; 4096];
        let n = g.read(&mut buf).await.unwrap();
        (g, buf[..n].to_vec())
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!reader.is_finished());
    c.write_all(&head[30..]).await.unwrap();
    let (mut g, got) = reader.await.unwrap();
    assert_eq!(got, head);
    // the body goes straight into the caller's buffer (`out` stays empty), never past its end
    let next = b"GET /ws HTTP/1.1\r\nUpgrade: w\r\nConnection: upgrade\r\n\r\n";
    c.write_all(&[&b"0123456789"[..], next].concat())
        .await
        .unwrap();
    let mut buf = [0; 4096];
    assert_eq!(g.read(&mut buf[..4]).await.unwrap(), 4);
    assert!(g.out.is_empty() && g.st == St::Body(6));
    assert_eq!(g.read(&mut buf).await.unwrap(), 6);
    assert_eq!(&buf[..6], b"456789");
    let n = g.read(&mut buf).await.unwrap();
    assert!(buf[..n] == next[..] && g.st == St::Passthrough);
    // passthrough: straight too
    c.write_all(BIN).await.unwrap();
    assert_eq!(g.read(&mut buf[..5]).await.unwrap(), 5);
    assert!(
        g.out.capacity() == 0 && g.held.capacity() == 0,
        "buffers freed"
    );
    let n = g.read(&mut buf[5..]).await.unwrap();
    assert_eq!(&buf[..5 + n], BIN);
    drop(c);
    assert_eq!(g.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn first_head_waits_for_a_whole_head() {
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let mut g = HeadGuard::new(s, 1024);
    c.write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
    let t = tokio::spawn(async move { g.first_head().await.map(|()| g) });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!t.is_finished());
    c.write_all(b": x\r\n\r\n").await.unwrap();
    let g = t.await.unwrap().unwrap();
    assert_eq!(g.out, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

#[tokio::test]
async fn async_eof_and_overflow() {
    // EOF mid-head: hyper gets the unfinished head, then EOF
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let mut g = HeadGuard::new(s, 1024);
    c.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    drop(c);
    let mut got = Vec::new();
    g.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\nHo");
    // over max_head: handed over unfinished, then EOF although the peer is still open
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let mut g = HeadGuard::new(s, 1024);
    let big = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 2000]].concat();
    c.write_all(&big).await.unwrap();
    let mut got = Vec::new();
    g.read_to_end(&mut got).await.unwrap();
    assert!(got.len() > 1024 && big.starts_with(&got));
}

use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn parse_str(s: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(s.as_bytes());
    (parse(&mut buf, &limits()), buf)
}

fn served(s: &str) -> (Head, BytesMut) {
    match parse_str(s) {
        (Parsed::Serve(h), rest) => (*h, rest),
        (other, _) => panic!("{s:?} not served: {}", name(&other)),
    }
}

fn name(p: &Parsed) -> String {
    match p {
        Parsed::Partial => "partial".into(),
        Parsed::Reject(s) => format!("reject {s}"),
        Parsed::HandOver => "hand over".into(),
        Parsed::Serve(_) => "serve".into(),
    }
}

#[test]
fn a_get_becomes_an_http_request_over_the_head_bytes() {
    let (h, rest) =
        served("GET /a/b?x=1 HTTP/1.1\r\nHost: shop.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\n");
    assert_eq!(h.req.method(), Method::GET);
    assert_eq!(h.req.uri(), "/a/b?x=1");
    assert_eq!(h.req.version(), Version::HTTP_11);
    assert_eq!(h.req.headers()["host"], "shop.test");
    let two: Vec<_> = h.req.headers().get_all("x-two").iter().collect();
    assert_eq!(two, ["1", "2"]);
    assert!(!h.close && !h.keep_alive_10 && !h.head_method);
    assert!(rest.is_empty());
}

#[test]
fn pipelined_requests_are_parsed_one_at_a_time() {
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HT"[..],
    );
    let Parsed::Serve(first) = parse(&mut buf, &limits()) else {
        panic!("first")
    };
    assert_eq!(first.req.uri(), "/1");
    let Parsed::Serve(second) = parse(&mut buf, &limits()) else {
        panic!("second")
    };
    assert_eq!(second.req.uri(), "/2");
    assert!(second.head_method);
    assert!(matches!(parse(&mut buf, &limits()), Parsed::Partial));
    assert_eq!(&buf[..], b"GET /3 HT");
}

#[test]
fn connection_close_and_http_1_0_keep_alive() {
    assert!(
        served("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n")
            .0
            .close
    );
    let (h, _) = served("GET / HTTP/1.0\r\n\r\n");
    assert!(h.close && !h.keep_alive_10);
    assert_eq!(h.req.version(), Version::HTTP_10);
    let (h, _) = served("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(!h.close && h.keep_alive_10);
    let (h, _) = served("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
    assert!(h.close && !h.keep_alive_10);
}

#[test]
fn bodies_upgrades_expect_connect_and_http2_go_to_hyper() {
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let (p, rest) = parse_str(head);
        assert!(matches!(p, Parsed::HandOver), "{head:?}: {}", name(&p));
        // Nothing consumed: hyper gets the whole request.
        assert_eq!(&rest[..], head.as_bytes(), "{head:?}");
    }
    // A zero length is no body.
    served("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    // The start of the HTTP/2 preface waits for more.
    assert!(matches!(parse_str("PRI * HT").0, Parsed::Partial));
}

#[test]
fn bad_and_oversized_heads_are_rejected() {
    assert!(matches!(
        parse_str("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").0,
        Parsed::Reject(400)
    ));
    assert!(matches!(
        parse_str("\x00 / HTTP/1.1\r\n\r\n").0,
        Parsed::Reject(400)
    ));
    assert!(matches!(
        parse_str("GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n").0,
        Parsed::Reject(400)
    ));
    let lim = limits();
    let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(lim.max_header_bytes));
    assert!(matches!(parse_str(&long).0, Parsed::Reject(431)));
    let many: String = (0..=lim.max_headers)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    let p = parse_str(&format!("GET / HTTP/1.1\r\n{many}\r\n")).0;
    assert!(matches!(p, Parsed::Reject(431)), "{}", name(&p));
    let exactly: String = (0..lim.max_headers)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    served(&format!("GET / HTTP/1.1\r\n{exactly}\r\n"));
}

#[test]
fn a_header_limit_above_the_stack_array_is_honoured() {
    let lim = Limits {
        max_headers: STACK_HEADERS + 20,
        ..Limits::default()
    };
    let many: String = (0..STACK_HEADERS + 10)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    let p = parse(&mut buf, &lim);
    assert!(matches!(p, Parsed::Serve(_)), "{}", name(&p));
}

#[tokio::test]
async fn prefixed_replays_its_bytes_then_reads_the_stream() {
    use tokio::io::AsyncReadExt;
    let inner: &[u8] = b" world";
    let mut p = Prefixed::new(Bytes::from_static(b"hello"), inner);
    let mut got = String::new();
    p.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello world");
}

/// What a scripted connection saw: bytes written to it and immediate-ACK requests.
#[derive(Default)]
struct Seen {
    written: std::sync::Mutex<Vec<u8>>,
    acks: std::sync::atomic::AtomicUsize,
}

/// A client connection scripted as the chunks it delivers, each after a wait (as a socket
/// would block between packets), then end of stream.
struct Script {
    chunks: std::collections::VecDeque<&'static [u8]>,
    waited: bool,
    seen: Arc<Seen>,
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.waited {
            self.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.waited = false;
        if let Some(c) = self.chunks.pop_front() {
            buf.put_slice(c);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Ok(mut w) = self.seen.written.lock() {
            w.extend_from_slice(b);
        }
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AckNow for Script {
    fn ack_now(&self) {
        self.seen
            .acks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs the server loop over `chunks` with an empty config (every request gets a 404): how
/// many times it asked for an immediate ACK, whether it handed over, and what it wrote.
async fn acks_for(chunks: &[&'static [u8]]) -> (usize, bool, String) {
    let cfg = crate::config::parse("").expect("empty config");
    let snap = Arc::new(crate::snapshot::build(
        &cfg,
        crate::source::TlsMaterials::default(),
        1,
    ));
    let metrics = Arc::new(crate::metrics::Metrics::new(None));
    let log = Arc::new(crate::accesslog::AccessLog::stdout(
        crate::accesslog::LogFormat::Off,
        16,
    ));
    let (handles, _streaks) = crate::health::monitor::Handles::new();
    let ctx = Arc::new(ProxyCtx {
        table: arc_swap::ArcSwap::from_pointee(super::super::table::Table::build(
            snap, None, &metrics, log, &handles,
        )),
        metrics,
        health: handles,
        applied: tokio::sync::watch::Sender::new(1),
    });
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let info = Arc::new(ConnInfo {
        client: peer,
        peer,
        local: "127.0.0.1:80".parse().expect("address"),
        listener: "http".into(),
        tls: false,
        client_id: super::super::headers::ClientId::new(peer),
    });
    let seen = Arc::new(Seen::default());
    let io = Script {
        chunks: chunks.iter().copied().collect(),
        waited: false,
        seen: seen.clone(),
    };
    let limits = limits();
    let io = HeadGuard::new(io, limits.max_header_bytes);
    let shutdown = CancellationToken::new();
    let handed_over = match serve(io, info, limits, &ctx, &shutdown).await {
        Ok(Served::Closed) => false,
        Ok(Served::HandOver(_)) => true,
        Err(e) => panic!("connection failed: {e}"),
    };
    let n = seen.acks.load(std::sync::atomic::Ordering::Relaxed);
    let written = seen.written.lock().map(|w| w.clone()).unwrap_or_default();
    (
        n,
        handed_over,
        String::from_utf8_lossy(&written).into_owned(),
    )
}

#[tokio::test]
async fn a_head_in_pieces_or_a_body_to_come_asks_for_an_immediate_ack() {
    // Whole head in one read: the ACK waits for the response.
    let (n, over, out) = acks_for(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await;
    assert_eq!((n, over), (0, false));
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    // In two pieces: acknowledged after the first, so a Nagle client sends the second.
    let (n, over, out) = acks_for(&[b"GET / HTTP/1.1\r\nHo", b"st: a\r\n\r\n"]).await;
    assert_eq!((n, over), (1, false));
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    // A body follows (hyper reads it): acknowledged before the hand-over.
    let (n, over, _) =
        acks_for(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"]).await;
    assert_eq!((n, over), (1, true));
}

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

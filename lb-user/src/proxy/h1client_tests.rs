use super::*;
use bytes::Bytes;

fn head(text: &str, head_request: bool) -> Result<Option<(Response<()>, Framing, bool)>, String> {
    let mut buf = BytesMut::from(text.as_bytes());
    parse_head(&mut buf, head_request).map_err(|e| e.message)
}

fn framing_of(text: &str) -> (Framing, bool) {
    let (_, f, reuse) = head(text, false).unwrap().unwrap();
    (f, reuse)
}

#[test]
fn response_heads_give_status_headers_and_framing() {
    let (resp, f, reuse) = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    let xa: Vec<_> = resp.headers().get_all("x-a").iter().collect();
    assert_eq!(xa, ["1", "2"]);
    assert_eq!((f, reuse), (Framing::Length(3), true));
    assert!(head("HTTP/1.1 200 OK\r\nContent-Le", false)
        .unwrap()
        .is_none());

    let cases = [
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            (Framing::Chunked, true),
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", (Framing::Close, false)),
        (
            "HTTP/1.1 204 No Content\r\n\r\n",
            (Framing::Length(0), true),
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            (Framing::Length(0), true),
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            (Framing::Length(1), false),
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
            (Framing::Length(1), false),
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            (Framing::Length(1), true),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            (Framing::Length(5), true),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            (Framing::Chunked, false),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            (Framing::Close, false),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(framing_of(text), want, "{text:?}");
    }
    // A HEAD response has no body whatever its Content-Length says.
    let (_, f, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(f, Framing::Length(0));
}

#[test]
fn bad_response_heads_are_parse_errors() {
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ] {
        assert!(head(bad, false).is_err(), "{bad:?}");
    }
}

fn encoded(method: Method, headers: &[(&str, &str)], len: usize) -> String {
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = "/p?q=1".parse().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (parts, ()) = req.into_parts();
    let mut out = Vec::new();
    encode_head(&parts, len, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn request_heads_carry_our_framing_only() {
    let get = encoded(Method::GET, &[("host", "a"), ("x-b", "1")], 0);
    assert_eq!(get, "GET /p?q=1 HTTP/1.1\r\nhost: a\r\nx-b: 1\r\n\r\n");
    // A client's own framing headers are replaced by what the body is.
    let post = encoded(
        Method::POST,
        &[
            ("host", "a"),
            ("content-length", "99"),
            ("transfer-encoding", "chunked"),
        ],
        3,
    );
    assert_eq!(
        post,
        "POST /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
    );
    let empty_post = encoded(Method::POST, &[("host", "a")], 0);
    assert!(
        empty_post.ends_with("content-length: 0\r\n\r\n"),
        "{empty_post}"
    );
}

/// An endpoint that reads one request and never answers: it closes at once, or after `silent`.
async fn reads_one_request(
    silent: std::time::Duration,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        tokio::time::sleep(silent).await;
    });
    (addr, server)
}

/// An endpoint that closes without answering, as one does when its keep-alive timeout fires
/// just as the request arrives.
async fn closes_unanswered(method: Method, body: UpBody, served: bool) -> SendError {
    let (addr, server) = reads_one_request(std::time::Duration::ZERO).await;
    let mut conn = H1Conn::new(TcpStream::connect(addr).await.unwrap());
    conn.served = served;
    let req = Request::builder()
        .method(method)
        .uri("/x")
        .body(body)
        .unwrap();
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.send(req, None, std::time::Duration::from_secs(30)),
    );
    let err = match sent.await.expect("bounded") {
        Ok(_) => panic!("no answer was sent"),
        Err(e) => e,
    };
    server.await.unwrap();
    err
}

#[tokio::test]
async fn an_idempotent_request_on_a_reused_connection_closed_unanswered_comes_back() {
    let e = closes_unanswered(Method::GET, UpBody::Full(None), true).await;
    let back = e.back.expect("handed back to be sent again");
    assert_eq!((back.method(), back.uri().path()), (&Method::GET, "/x"));
    // A fresh connection: the endpoint really failed; a POST: it may have acted on it.
    assert!(closes_unanswered(Method::GET, UpBody::Full(None), false)
        .await
        .back
        .is_none());
    let post = UpBody::Full(Some(Bytes::from_static(b"a")));
    assert!(closes_unanswered(Method::POST, post, true)
        .await
        .back
        .is_none());
}

#[tokio::test]
async fn no_response_head_within_the_timeout_is_a_timeout_and_never_replayed() {
    let (addr, server) = reads_one_request(std::time::Duration::from_secs(5)).await;
    let mut conn = H1Conn::new(TcpStream::connect(addr).await.unwrap());
    // A reused connection: a stale keep-alive race would hand the request back; a timeout not.
    conn.served = true;
    let req = Request::builder()
        .uri("/x")
        .body(UpBody::Full(None))
        .unwrap();
    let sent = conn.send(req, None, std::time::Duration::from_millis(100));
    let bounded = tokio::time::timeout(std::time::Duration::from_secs(5), sent);
    let err = match bounded.await.expect("the response timer fires") {
        Ok(_) => panic!("no answer was sent"),
        Err(e) => e,
    };
    assert!(err.timed_out, "{}", err.message);
    assert!(err.back.is_none() && !err.parse);
    server.abort();
}

#[tokio::test]
async fn the_response_timer_is_rearmed_not_remade() {
    let mut slot = None;
    let first = &**arm(&mut slot, std::time::Duration::from_secs(30)) as *const Sleep;
    let early = slot.as_ref().unwrap().1.deadline();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = arm(&mut slot, std::time::Duration::from_secs(30));
    assert_eq!(&**again as *const Sleep, first, "the same timer");
    assert!(again.deadline() > early, "moved to the new deadline");
    // A huge timeout is about 30 years away, not an overflow.
    let far = arm(&mut slot, std::time::Duration::MAX).deadline();
    assert!(far > tokio::time::Instant::now() + std::time::Duration::from_secs(86400 * 365));
    // One made by another thread's runtime is replaced.
    let other = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut slot = None;
            arm(&mut slot, std::time::Duration::from_secs(30));
            slot.map(|(thread, _)| thread)
        })
    })
    .join()
    .unwrap();
    slot.as_mut().unwrap().0 = other.unwrap();
    let replaced = &**arm(&mut slot, std::time::Duration::from_secs(30)) as *const Sleep;
    assert_ne!(replaced, first);
    assert_eq!(slot.unwrap().0, std::thread::current().id());
}

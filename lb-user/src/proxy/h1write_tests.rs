use super::*;
use http::HeaderMap;
use hyper::body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::task::Context;

/// A body of given frames, of unknown length unless `exact`.
struct Frames {
    frames: VecDeque<Result<Frame<Bytes>, String>>,
    exact: Option<u64>,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = String;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        Poll::Ready(self.frames.pop_front())
    }
    fn size_hint(&self) -> SizeHint {
        self.exact.map(SizeHint::with_exact).unwrap_or_default()
    }
}

fn body(parts: &[&str], exact: Option<u64>) -> Frames {
    Frames {
        frames: parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p.as_bytes()))))
            .collect(),
        exact,
    }
}

const KEEP: Framing = Framing {
    head_method: false,
    version_10: false,
    close: false,
    keep_alive_10: false,
};

async fn write(resp: Response<Frames>, f: Framing) -> (io::Result<bool>, String) {
    let mut io = Vec::new();
    let mut out = Vec::new();
    let r = respond(&mut io, &mut out, resp, f).await;
    (r, String::from_utf8(io).unwrap())
}

fn split(text: &str) -> (Vec<String>, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let lines = head.lines().map(str::to_string).collect();
    (lines, body.to_string())
}

#[tokio::test]
async fn known_length_gets_content_length_and_date() {
    let resp = Response::builder()
        .status(404)
        .header("x-a", "1")
        .body(body(&["not ", "here"], Some(8)))
        .unwrap();
    let (r, text) = write(resp, KEEP).await;
    assert!(r.unwrap(), "keep-alive");
    let (lines, b) = split(&text);
    assert_eq!(lines[0], "HTTP/1.1 404 Not Found");
    assert!(lines.contains(&"x-a: 1".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"content-length: 8".to_string()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("date: ") && l.ends_with(" GMT")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("connection")),
        "{lines:?}"
    );
    assert_eq!(b, "not here");
}

#[tokio::test]
async fn unknown_length_is_chunked_with_trailers() {
    let mut b = body(&["abc", "", "defgh"], None);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    b.frames.push_back(Ok(Frame::trailers(trailers)));
    let resp = Response::builder()
        .header("date", "Mon, 01 Jan 2024 00:00:00 GMT")
        .header("transfer-encoding", "gzip")
        .body(b)
        .unwrap();
    let (r, text) = write(resp, KEEP).await;
    assert!(r.unwrap());
    let (lines, b) = split(&text);
    assert!(
        lines.contains(&"transfer-encoding: chunked".to_string()),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("date")).count(),
        1,
        "{lines:?}"
    );
    assert!(
        !lines.contains(&"transfer-encoding: gzip".to_string()),
        "{lines:?}"
    );
    assert_eq!(b, "3\r\nabc\r\n5\r\ndefgh\r\n0\r\ngrpc-status: 0\r\n\r\n");
}

#[tokio::test]
async fn http_1_0_without_length_is_delimited_by_close() {
    let f = Framing {
        version_10: true,
        keep_alive_10: true,
        ..KEEP
    };
    let (r, text) = write(Response::new(body(&["x"], None)), f).await;
    assert!(!r.unwrap(), "must close");
    let (lines, b) = split(&text);
    assert!(
        lines.contains(&"connection: close".to_string()),
        "{lines:?}"
    );
    assert_eq!(b, "x");
    // With a length, HTTP/1.0 keep-alive is confirmed.
    let (r, text) = write(Response::new(body(&["x"], Some(1))), f).await;
    assert!(r.unwrap());
    assert!(
        split(&text)
            .0
            .contains(&"connection: keep-alive".to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn head_204_and_304_send_no_body() {
    let f = Framing {
        head_method: true,
        ..KEEP
    };
    let resp = Response::builder()
        .header("content-length", "10")
        .body(body(&[], None))
        .unwrap();
    let (r, text) = write(resp, f).await;
    assert!(r.unwrap());
    assert!(
        text.ends_with("\r\n\r\n") && text.contains("content-length: 10"),
        "{text}"
    );
    for status in [204, 304] {
        let resp = Response::builder()
            .status(status)
            .body(body(&[], None))
            .unwrap();
        let (_, text) = write(resp, KEEP).await;
        assert!(
            !text.contains("transfer-encoding") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn close_is_said_and_length_mismatches_fail() {
    let f = Framing {
        close: true,
        ..KEEP
    };
    let resp = Response::builder()
        .header("connection", "keep-alive")
        .body(body(&["ok"], Some(2)))
        .unwrap();
    let (r, text) = write(resp, f).await;
    assert!(!r.unwrap());
    assert!(
        text.contains("connection: close") && !text.contains("keep-alive"),
        "{text}"
    );
    // A handler's own Connection: close closes too.
    let resp = Response::builder()
        .header("connection", "close")
        .body(body(&[], Some(0)))
        .unwrap();
    assert!(!write(resp, KEEP).await.0.unwrap());
    for parts in [&["toolong"][..], &["ab"][..]] {
        let resp = Response::builder()
            .header("content-length", "5")
            .body(body(parts, None))
            .unwrap();
        assert!(write(resp, KEEP).await.0.is_err(), "{parts:?}");
    }
    let mut b = body(&["ab"], None);
    b.frames.push_back(Err("upstream reset".into()));
    assert!(write(Response::new(b), KEEP).await.0.is_err());
}

#[tokio::test]
async fn rejections_close_with_an_empty_body() {
    let mut io = Vec::new();
    reject(&mut io, &mut Vec::new(), 431).await;
    let text = String::from_utf8(io).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{text}"
    );
    assert!(
        text.contains("content-length: 0\r\nconnection: close\r\n"),
        "{text}"
    );
}

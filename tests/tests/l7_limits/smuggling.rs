//! Request smuggling battery: each bad framing (CL+TE, obs-fold, bad chunk sizes, bare LF, ...)
//! is a 400, and the backend never sees a second (smuggled) request.

use crate::{get, origin, raw, start, status_of, text};
use lb_tests::lb::free_local_addr;
use std::time::Duration;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: s.test\r\n\r\n";

/// Sends `req` on one connection; asserts one 400 and at most `reach` backend requests (0 when
/// the head itself is bad; 1 when only the body is, as the head may be forwarded first).
fn smuggling_case(req: &[u8], reach: u64) {
    let o = origin("s");
    let listen = free_local_addr();
    let _lb = start(&format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: [s.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let ok = get(listen, "s.test", "/control");
    assert_eq!(ok.status, 200);
    let before = o.requests();
    let out = raw(listen, req, Duration::from_secs(2));
    let reached = o.requests() - before;
    let uris: Vec<String> = o.seen().into_iter().map(|s| s.uri).collect();
    let responses = text(&out).matches("HTTP/1.1 ").count();
    let report = format!(
        "status {:?}, {responses} response(s), backend got {reached} request(s) {uris:?}; response:\n{}",
        status_of(&out),
        text(&out)
    );
    assert!(
        !uris.iter().any(|u| u.contains("smuggled")),
        "SMUGGLED: {report}"
    );
    assert_eq!(status_of(&out), Some(400), "{report}");
    assert_eq!(responses, 1, "{report}");
    assert!(reached <= reach, "{report}");
}

fn bytes(parts: &[&str]) -> Vec<u8> {
    parts.concat().into_bytes()
}

#[test]
fn smuggling_cl_te() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\n",
            &format!("Content-Length: {}\r\n", body.len()),
            "Transfer-Encoding: chunked\r\n\r\n",
            &body,
        ]),
        0,
    );
}

#[test]
fn smuggling_te_cl() {
    let size = format!("{:x}", SMUGGLED.len());
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n",
            &format!("Content-Length: {}\r\n\r\n", size.len() + 2),
            &size,
            "\r\n",
            SMUGGLED,
            "\r\n0\r\n\r\n",
        ]),
        0,
    );
}

#[test]
fn smuggling_two_differing_content_lengths() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_content_length_list() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5, 6\r\n\r\nhello!",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_obs_fold() {
    smuggling_case(
        &bytes(&[
            "GET / HTTP/1.1\r\nHost: s.test\r\nX-Folded: a\r\n b\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_obs_fold_transfer_encoding() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            "0\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

fn chunk_case(size_line: &str) {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            size_line,
            "hello\r\n0\r\n\r\n",
            SMUGGLED,
        ]),
        1,
    );
}

#[test]
fn smuggling_chunk_size_zz() {
    chunk_case("zz\r\n");
}

#[test]
fn smuggling_chunk_size_negative() {
    chunk_case("-1\r\n");
}

#[test]
fn smuggling_chunk_size_0x() {
    chunk_case("0x5\r\n");
}

#[test]
fn smuggling_chunk_size_bare_lf() {
    chunk_case("5\n");
}

#[test]
fn smuggling_bare_lf_request_line_and_headers() {
    smuggling_case(
        &bytes(&["GET / HTTP/1.1\nHost: s.test\nX-A: b\n\n", SMUGGLED]),
        0,
    );
}

#[test]
fn smuggling_bare_lf_header_line() {
    smuggling_case(
        &bytes(&["GET / HTTP/1.1\r\nHost: s.test\nX-A: b\r\n\r\n", SMUGGLED]),
        0,
    );
}

#[test]
fn smuggling_space_before_colon_host() {
    smuggling_case(
        &bytes(&["GET / HTTP/1.1\r\nHost : s.test\r\n\r\n", SMUGGLED]),
        0,
    );
}

#[test]
fn smuggling_space_before_colon_content_length() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length : 5\r\n\r\nhello",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_transfer_encoding_chunked_identity() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

#[test]
fn smuggling_transfer_encoding_on_http10() {
    smuggling_case(
        &bytes(&[
            "POST / HTTP/1.0\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            SMUGGLED,
        ]),
        0,
    );
}

//! Bodies stream through lb in both directions (no whole-body buffering), the config file is
//! watched (reload without SIGHUP; a bad write keeps the old config), and slow request heads
//! are cut off after `header_timeout`.

mod support;

use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::origin::Origin;

const T: Duration = Duration::from_secs(5);

fn config(listen: SocketAddr, origin: SocketAddr, extra_route: &str, limits: &str) -> String {
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"{limits}}}]
routes:
  - {{hosts: ["*"], cluster: o}}
{extra_route}
clusters:
  - {{name: o, endpoints: [{{address: "{origin}"}}]}}
"#
    )
}

/// Reads from `s` until `needle` has been seen or `deadline`; returns everything read.
fn read_until(s: &mut TcpStream, needle: &str, deadline: Instant) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&got).contains(needle) {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn request_body_is_streamed_not_buffered() {
    let origin = Origin::plain("o").unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let _lb = Lb::start(
        &lb_bin(),
        None,
        &config(listen, origin.addr(), "", ""),
        admin,
        &[],
    )
    .unwrap();
    let mut s = TcpStream::connect(listen).unwrap();
    // First chunk only: the rest of the body never comes. A buffering proxy would wait forever.
    s.write_all(b"POST /first-chunk HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    let got = read_until(&mut s, "\r\n\r\n5\n", Instant::now() + T);
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(
        got.ends_with("5\n"),
        "the origin saw the first chunk alone: {got:?}"
    );
}

#[test]
fn response_body_is_streamed_not_buffered() {
    let origin = Origin::plain("o").unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let _lb = Lb::start(
        &lb_bin(),
        None,
        &config(listen, origin.addr(), "", ""),
        admin,
        &[],
    )
    .unwrap();
    let mut s = TcpStream::connect(listen).unwrap();
    s.write_all(b"GET /gated HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // part2 is only produced after /release: part1 must reach us before that.
    let first = read_until(&mut s, "part1", Instant::now() + T);
    assert!(
        first.contains("part1") && !first.contains("part2"),
        "{first:?}"
    );
    assert!(get(listen, "/release").contains("released"));
    let rest = read_until(&mut s, "part2", Instant::now() + T);
    assert!(rest.contains("part2"), "{rest:?}");
}

#[test]
fn config_file_changes_are_picked_up_without_sighup() {
    let origin = Origin::plain("o").unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let cfg = config(listen, origin.addr(), "", "");
    let lb = Lb::start(&lb_bin(), None, &cfg, admin, &["--watch-secs", "1"]).unwrap();
    assert!(get(listen, "/moved").starts_with("HTTP/1.1 200"));
    // Replace the file atomically, as operators (and kubelet) do; no signal.
    let write = |text: &str| {
        let tmp = lb.dir().join("lb.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, lb.config_path()).unwrap();
    };
    let moved =
        "  - {hosts: [\"*\"], path: {prefix: /moved}, redirect: {path_prefix: /new, status: 301}}";
    write(&config(listen, origin.addr(), moved, ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = String::new();
    while Instant::now() < deadline {
        got = get(listen, "/moved");
        if got.starts_with("HTTP/1.1 301") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got.starts_with("HTTP/1.1 301"), "{got:?}");
    assert_eq!(
        lb.metric("lb_config_reloads_total", &[("result", "ok")])
            .unwrap(),
        1.0
    );
    // A broken file is rejected; the config that works keeps serving.
    write("routes: [{hosts: [\"*\"], cluster: nowhere}]\n");
    lb.wait_log("unknown cluster", Duration::from_secs(10))
        .unwrap();
    assert!(get(listen, "/moved").starts_with("HTTP/1.1 301"));
    assert_eq!(
        lb.metric("lb_config_reloads_total", &[("result", "invalid")])
            .unwrap(),
        1.0
    );
}

#[test]
fn slow_request_heads_are_cut_off_after_header_timeout() {
    let origin = Origin::plain("o").unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let cfg = config(listen, origin.addr(), "", ", limits: {header_timeout: 1s}");
    let _lb = Lb::start(&lb_bin(), None, &cfg, admin, &[]).unwrap();
    let mut slow = TcpStream::connect(listen).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap(); // never finished
    let started = Instant::now();
    // Others are served meanwhile.
    assert!(get(listen, "/").starts_with("HTTP/1.1 200"));
    let mut buf = [0u8; 256];
    slow.set_read_timeout(Some(T)).unwrap();
    let n = slow.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    // hyper closes (optionally with 408); what matters is that it does, well before T.
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(
        origin.requests(),
        1,
        "the slow head never reached the origin"
    );
}

#[test]
fn a_declined_upgrade_closes_the_connection() {
    // The framing guard stops checking after an Upgrade request; if the endpoint does not switch
    // protocols, lb must not read a (possibly smuggled) next request from that connection.
    let origin = Origin::plain("o").unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let _lb = Lb::start(
        &lb_bin(),
        None,
        &config(listen, origin.addr(), "", ""),
        admin,
        &[],
    )
    .unwrap();
    let mut s = TcpStream::connect(listen).unwrap();
    s.write_all(
        b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
          POST /smuggled HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out:?}"
    );
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out:?}");
    assert!(origin.seen().iter().all(|r| !r.uri.contains("smuggled")));
}

#[test]
fn empty_responses_end_normally_and_keep_their_upstream_connection() {
    // 204 and HEAD responses have no body to stream: the exchange still ends normally (not as a
    // client abort) and the upstream connection goes back to the pool.
    let backend =
        lb_tests::http::Backend::start(None, "127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let lb = Lb::start(
        &lb_bin(),
        None,
        &config(listen, backend.addr(), "", ""),
        admin,
        &[],
    )
    .unwrap();
    let mut c = lb_tests::http::KeepAliveClient::connect(listen, T).unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("t", "/status/204").unwrap().status, 204);
        assert_eq!(c.request("HEAD", "t", "/", &[], b"").unwrap().status, 200);
    }
    assert_eq!(backend.requests(), 6);
    assert_eq!(backend.connections(), 1, "one pooled upstream connection");
    let deadline = Instant::now() + T;
    while lb.log().matches("\"termination\":\"--\"").count() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        lb.log().matches("\"termination\":\"--\"").count(),
        6,
        "{}",
        lb.log()
    );
    assert!(!lb.log().contains("\"termination\":\"CD\""));
}

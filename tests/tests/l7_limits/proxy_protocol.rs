//! PROXY protocol: accepted from trusted peers only, and sent to backends (v1 and v2)
//! carrying the client address.

use crate::support::origin::{Origin, OriginOptions};
use crate::{origin, raw, read_until_close, start, status_of, text, T};
use lb_tests::lb::free_local_addr;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};

#[test]
fn proxy_protocol_accepted_from_trusted_peers_only() {
    let o = origin("o");
    let (pp, plain) = (free_local_addr(), free_local_addr());
    let _lb = start(&format!(
        r#"
listeners:
  - {{name: pp, address: "{pp}", proxy_protocol: {{trusted: [127.0.0.1]}}}}
  - {{name: untrusted, address: "{plain}", proxy_protocol: {{trusted: [10.0.0.0/8]}}}}
routes: [{{hosts: [pp.test], cluster: c}}]
clusters: [{{name: c, endpoints: [{{address: "{o}"}}]}}]
"#,
        o = o.addr()
    ));
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let xff = || {
        let last = o.last().unwrap();
        let v = last
            .headers
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_string());
        (last.uri, v)
    };
    // v1 from a trusted peer: the header's source is the client.
    let mut v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n".to_vec();
    v1.extend(request("/v1"));
    let out = raw(pp, &v1, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    assert_eq!(xff(), ("/v1".into(), Some("203.0.113.7".into())));
    // v2.
    let mut v2 = lb_user::proxy_protocol::encode_v2(
        "203.0.113.9:6666".parse().unwrap(),
        "10.0.0.1:80".parse().unwrap(),
    );
    v2.extend(request("/v2"));
    let out = raw(pp, &v2, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    assert_eq!(xff(), ("/v2".into(), Some("203.0.113.9".into())));
    // No header from a peer that must send one: closed, no HTTP answer, nothing forwarded.
    let before = o.requests();
    let out = raw(pp, &request("/garbage"), T);
    assert!(
        out.is_empty(),
        "answered a connection without PROXY header: {}",
        text(&out)
    );
    assert_eq!(o.requests(), before);
    let out = raw(pp, b"\x00\x01garbage\r\n\r\n", T);
    assert!(out.is_empty(), "{}", text(&out));
    // ...and the next good connection is served.
    let out = raw(pp, &v1, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));

    // Untrusted peer (we are 127.0.0.1, trusted is 10/8): a PROXY header is a bad request.
    let before = o.requests();
    let mut spoof = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n".to_vec();
    spoof.extend(request("/spoofed"));
    let out = raw(plain, &spoof, T);
    assert_eq!(status_of(&out), Some(400), "{}", text(&out));
    assert_eq!(o.requests(), before, "the spoofed request was forwarded");
    let out = raw(plain, &request("/plain"), T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    assert_eq!(xff(), ("/plain".into(), Some("127.0.0.1".into())));
}

#[test]
fn send_proxy_v1_and_v2_carry_the_client_address() {
    let o = Origin::start(OriginOptions {
        name: "pp".into(),
        proxy_protocol: true,
        ..Default::default()
    })
    .unwrap();
    let (listen, pp_listen) = (free_local_addr(), free_local_addr());
    // A wildcard listener: its connections' local address is looked up, not the bound one.
    let any_port = free_local_addr().port();
    let _lb = start(&format!(
        r#"
listeners:
  - {{name: http, address: "{listen}"}}
  - {{name: any, address: "0.0.0.0:{any_port}"}}
  - {{name: pp, address: "{pp_listen}", proxy_protocol: {{trusted: [127.0.0.1]}}}}
routes:
  - {{hosts: [v1.test], cluster: v1}}
  - {{hosts: [v2.test], cluster: v2}}
clusters:
  - {{name: v1, send_proxy: v1, endpoints: [{{address: "{o}"}}]}}
  - {{name: v2, send_proxy: v2, endpoints: [{{address: "{o}"}}]}}
"#,
        o = o.addr()
    ));
    let via_any: SocketAddr = format!("127.0.0.1:{any_port}").parse().unwrap();
    for (host, to) in [
        ("v1.test", listen),
        ("v2.test", listen),
        ("v1.test", via_any),
        ("v2.test", via_any),
    ] {
        let mut s = TcpStream::connect_timeout(&to, T).unwrap();
        let me = s.local_addr().unwrap();
        s.write_all(
            format!("GET /{host} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let out = read_until_close(&mut s, T);
        assert_eq!(status_of(&out), Some(200), "{host}: {}", text(&out));
        let last = o.last().unwrap();
        assert_eq!(last.uri, format!("/{host}"));
        assert_eq!(
            last.proxy_source,
            Some(me),
            "{host}: PROXY source is not this client"
        );
        assert_eq!(
            last.proxy_destination,
            Some(to),
            "{host}: PROXY destination is not the address the client connected to"
        );
    }
    assert_eq!(o.connections(), 4, "PROXY connections must not be shared");
    // Chained: the client address from an incoming PROXY header goes out in ours.
    let mut req = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n".to_vec();
    req.extend_from_slice(b"GET /chained HTTP/1.1\r\nHost: v2.test\r\nConnection: close\r\n\r\n");
    let out = raw(pp_listen, &req, T);
    assert_eq!(status_of(&out), Some(200), "{}", text(&out));
    let last = o.last().unwrap();
    assert_eq!(last.uri, "/chained");
    assert_eq!(last.proxy_source, Some("203.0.113.7:5555".parse().unwrap()));
}

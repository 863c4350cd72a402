//! Header work tests: hop-by-hop, forwarding trust, request ids, cookies, rewrites, redirects.

use super::*;

#[test]
fn strips_hop_by_hop_and_connection_named() {
    let mut h = HeaderMap::new();
    h.insert(
        "connection",
        HeaderValue::from_static("keep-alive, X-Secret"),
    );
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    h.insert("upgrade", HeaderValue::from_static("h2c"));
    h.insert("te", HeaderValue::from_static("trailers"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    let mut grpc = h.clone();
    // Every hop-by-hop name at once (each has its own bit in the scan).
    let mut all = h.clone();
    for name in HOP_BY_HOP {
        all.append(name, HeaderValue::from_static("x"));
    }
    strip_hop_by_hop(&mut all, false);
    let left: Vec<&str> = all.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["x-kept"]);
    strip_hop_by_hop(&mut h, false);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["x-kept"]);
    strip_hop_by_hop(&mut grpc, true);
    assert_eq!(grpc.get("te").unwrap(), "trailers");
}

#[test]
fn forwarded_sets_only_the_chosen_headers() {
    use crate::config::ForwardedHeader;
    let client = ClientId::new("192.0.2.7:5000".parse().unwrap());
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let only_xff = ForwardedSet::new(&[ForwardedHeader::XForwardedFor]);
    forwarded(&mut h, only_xff, &client, false, "app.example", false);
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    // Not chosen: an incoming value passes as it came, none is added.
    assert_eq!(h["x-forwarded-proto"], "https");
    assert!(h.get("x-forwarded-host").is_none() && h.get("forwarded").is_none());
    let mut none = HeaderMap::new();
    forwarded(&mut none, ForwardedSet::new(&[]), &client, true, "h", false);
    assert!(none.is_empty());
    let all = ForwardedSet::new(&ForwardedHeader::all());
    assert_eq!(all, ForwardedSet::ALL);
}

#[test]
fn forwarded_overwrites_untrusted_and_appends_trusted() {
    let client: SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
    let mut trusted = h.clone();
    forwarded(
        &mut h,
        ForwardedSet::ALL,
        &ClientId::new(client),
        false,
        "app.example",
        false,
    );
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.example");
    assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http;host=app.example");
    forwarded(
        &mut trusted,
        ForwardedSet::ALL,
        &ClientId::new(client),
        false,
        "app.example",
        true,
    );
    assert_eq!(trusted["x-forwarded-for"], "6.6.6.6, 192.0.2.7");
    assert_eq!(trusted["x-forwarded-proto"], "https");
    assert_eq!(
        trusted["forwarded"],
        "for=6.6.6.6, for=192.0.2.7;proto=http;host=app.example"
    );
    let mut v6 = HeaderMap::new();
    forwarded(
        &mut v6,
        ForwardedSet::ALL,
        &ClientId::new("[2001:db8::1]:1".parse().unwrap()),
        true,
        "h",
        false,
    );
    assert_eq!(v6["forwarded"], "for=\"[2001:db8::1]\";proto=https;host=h");
    let mut mapped = HeaderMap::new();
    forwarded(
        &mut mapped,
        ForwardedSet::ALL,
        &ClientId::new("[::ffff:10.0.0.1]:1".parse().unwrap()),
        true,
        "h",
        false,
    );
    assert_eq!(mapped["x-forwarded-for"], "10.0.0.1");
}

/// The client address is written by hand: it must read as `Display` writes it, every octet.
#[test]
fn client_ip_text_matches_display() {
    for o in 0..=255u8 {
        for ip in [
            std::net::Ipv4Addr::new(o, 0, 9, 255),
            std::net::Ipv4Addr::new(10, o, 100, 1),
            std::net::Ipv4Addr::new(192, 168, o, 99),
            std::net::Ipv4Addr::new(1, 20, 200, o),
        ] {
            let id = ClientId::new(SocketAddr::from((ip, 80)));
            assert_eq!(id.ip.to_str().unwrap(), ip.to_string());
        }
    }
    let v6 = ClientId::new("[2001:db8::7]:443".parse().unwrap());
    assert_eq!(v6.ip, "2001:db8::7");
}

#[test]
fn request_id_kept_or_generated() {
    let mut h = HeaderMap::new();
    let a = request_id(&mut h);
    assert_eq!(a.len(), 32);
    assert_eq!(h[&REQUEST_ID], a);
    let mut h2 = HeaderMap::new();
    assert_ne!(request_id(&mut h2), a);
    let mut keep = HeaderMap::new();
    keep.insert(REQUEST_ID, HeaderValue::from_static("abc-1"));
    assert_eq!(request_id(&mut keep), "abc-1");
    let mut bad = HeaderMap::new();
    bad.insert(REQUEST_ID, HeaderValue::from_static("has space"));
    assert_ne!(request_id(&mut bad), "has space");
}

#[test]
fn cookies_and_edits() {
    let mut h = HeaderMap::new();
    h.append("cookie", HeaderValue::from_static("a=1; lb=\"xyz\""));
    h.append("cookie", HeaderValue::from_static("c=3"));
    assert_eq!(cookie(&h, "lb"), Some("xyz"));
    assert_eq!(cookie(&h, "c"), Some("3"));
    assert_eq!(cookie(&h, "d"), None);
    let mut e = HeaderEdits::default();
    e.set.insert("x-a".into(), "1".into());
    e.add.insert("cookie".into(), "z=9".into());
    e.remove.push("c".into());
    h.insert("c", HeaderValue::from_static("gone"));
    Edits::build(&e).apply(&mut h);
    assert_eq!(h["x-a"], "1");
    assert!(!h.contains_key("c"));
    assert_eq!(h.get_all("cookie").iter().count(), 3);
}

#[test]
fn prefix_rewrites() {
    let rw = |uri: &str, len: usize, p: &str| {
        rewrite_prefix(&uri.parse().unwrap(), len, p)
            .unwrap()
            .to_string()
    };
    assert_eq!(rw("/api/v1/users?x=1", 4, "/"), "/v1/users?x=1");
    assert_eq!(rw("/api", 4, "/"), "/");
    assert_eq!(rw("/api", 4, "/new"), "/new");
    assert_eq!(rw("/api/", 4, "/new"), "/new/");
    assert_eq!(rw("/api/x", 4, "/new/"), "/new/x");
}

#[test]
fn redirect_locations() {
    let rd = |scheme: Option<&str>, host: Option<&str>, prefix: Option<&str>| Redirect {
        scheme: scheme.map(Into::into),
        host: host.map(Into::into),
        port: None,
        path_prefix: prefix.map(Into::into),
        status: 301,
    };
    let uri: Uri = "/old/page?q=1".parse().unwrap();
    let loc =
        |r: &Redirect, len| redirect_location(r, &uri, "a.example", None, false, len).unwrap();
    assert_eq!(
        loc(&rd(Some("https"), None, None), 0),
        "https://a.example/old/page?q=1"
    );
    assert_eq!(
        loc(&rd(None, Some("b.example"), None), 0),
        "http://b.example/old/page?q=1"
    );
    assert_eq!(
        loc(&rd(None, None, Some("/new")), 4),
        "http://a.example/new/page?q=1"
    );
    assert_eq!(
        loc(&rd(None, None, Some("/home")), 0),
        "http://a.example/home?q=1"
    );
}

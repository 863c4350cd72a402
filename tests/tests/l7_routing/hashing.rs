//! Hash balancing on header, cookie, URI and source IP: sticky keys spread over endpoints, keys
//! kept in place when an endpoint leaves, and keyless requests spread like round robin.

use crate::{backend, get_from, reload, send, served_by, start, tally, T};
use lb_tests::http::{Backend, KeepAliveClient};
use lb_tests::lb::free_local_addr;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Four backends shared by four hash clusters (one per key kind), one host each.
struct HashSetup {
    bs: Vec<Backend>,
    listen: SocketAddr,
}

fn hash_yaml(s: &HashSetup, endpoints: &[usize]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|i| format!("{{address: \"{}\"}}", s.bs[*i].addr()))
        .collect();
    let eps = eps.join(", ");
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [ip.test], cluster: hip}}
  - {{hosts: [hdr.test], cluster: hhdr}}
  - {{hosts: [ck.test], cluster: hck}}
  - {{hosts: [uri.test], cluster: huri}}
clusters:
  - {{name: hip, balance: hash, hash: {{on: source_ip}}, endpoints: [{eps}]}}
  - {{name: hhdr, balance: hash, hash: {{on: header, name: x-user}}, endpoints: [{eps}]}}
  - {{name: hck, balance: hash, hash: {{on: cookie, name: session}}, endpoints: [{eps}]}}
  - {{name: huri, balance: hash, hash: {{on: uri}}, endpoints: [{eps}]}}
"#,
        listen = s.listen
    )
}

fn hash_setup() -> HashSetup {
    HashSetup {
        bs: ["e0", "e1", "e2", "e3"]
            .iter()
            .map(|n| backend(n))
            .collect(),
        listen: free_local_addr(),
    }
}

/// Sends every key 1 time (and the first two keys 20 times) via `req`; asserts stickiness and
/// a spread over at least two endpoints; returns key -> endpoint.
fn check_sticky_and_spread(
    what: &str,
    keys: &[String],
    mut req: impl FnMut(&str) -> String,
) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for k in keys {
        map.insert(k.clone(), req(k));
    }
    for k in &keys[..2] {
        for i in 0..20 {
            assert_eq!(req(k), map[k], "{what}: key {k} moved on repeat {i}");
        }
    }
    let used: HashSet<&String> = map.values().collect();
    assert!(
        used.len() >= 2,
        "{what}: {} keys all on {used:?}",
        keys.len()
    );
    map
}

#[test]
fn hash_on_header_cookie_and_uri_is_sticky_and_spreads() {
    let s = hash_setup();
    let _lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    check_sticky_and_spread("header", &keys, |k| {
        served_by(
            &c.request("GET", "hdr.test", "/", &[("x-user", k)], b"")
                .unwrap(),
        )
    });
    check_sticky_and_spread("cookie", &keys, |k| {
        let cookie = format!("a=1; session={k}; z=2");
        served_by(
            &c.request("GET", "ck.test", "/", &[("cookie", &cookie)], b"")
                .unwrap(),
        )
    });
    let paths: Vec<String> = (0..20).map(|i| format!("/item/{i}?v=1")).collect();
    check_sticky_and_spread("uri", &paths, |p| served_by(&c.get("uri.test", p).unwrap()));
    // The same header key from a different connection and path still lands on the same endpoint.
    let first = served_by(
        &c.request("GET", "hdr.test", "/a", &[("x-user", "user-0")], b"")
            .unwrap(),
    );
    let other = send(
        s.listen,
        "GET",
        "hdr.test",
        "/b/c?d",
        &[("x-user", "user-0")],
    );
    assert_eq!(served_by(&other), first);
}

#[test]
fn hash_on_source_ip_is_sticky_and_spreads() {
    let s = hash_setup();
    let _lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let keys: Vec<String> = (2..22).map(|i| format!("127.0.0.{i}")).collect();
    check_sticky_and_spread("source_ip", &keys, |ip| {
        served_by(&get_from(ip.parse().unwrap(), s.listen, "ip.test", "/"))
    });
}

#[test]
fn hash_keeps_keys_in_place_when_an_endpoint_is_removed() {
    let s = hash_setup();
    let lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    let mut on = |k: &str| {
        served_by(
            &c.request("GET", "hdr.test", "/", &[("x-user", k)], b"")
                .unwrap(),
        )
    };
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let before: HashMap<&String, String> = keys.iter().map(|k| (k, on(k))).collect();
    let used: HashSet<&String> = before.values().collect();
    assert_eq!(
        used.len(),
        4,
        "200 keys should use all 4 endpoints: {used:?}"
    );
    // Remove a middle endpoint (e1): indexes of the later ones shift, addresses do not.
    reload(&lb, &hash_yaml(&s, &[0, 2, 3]), 2.0);
    let after: HashMap<&String, String> = keys.iter().map(|k| (k, on(k))).collect();
    assert!(
        after.values().all(|e| e != "e1"),
        "removed endpoint still used"
    );
    let kept: Vec<&&String> = before.keys().filter(|k| before[**k] != "e1").collect();
    let stayed = kept.iter().filter(|k| before[***k] == after[***k]).count();
    assert!(
        stayed * 100 >= kept.len() * 95,
        "only {stayed} of {} keys not on the removed endpoint stayed put",
        kept.len()
    );
}

#[test]
fn hash_without_a_key_still_spreads_like_round_robin() {
    let s = hash_setup();
    let _lb = start(&hash_yaml(&s, &[0, 1, 2, 3]));
    let mut c = KeepAliveClient::connect(s.listen, T).unwrap();
    // No x-user header / no session cookie: HAProxy falls back to round robin.
    let by_header = tally(&mut c, "hdr.test", "/", 12);
    assert!(
        by_header.len() >= 2,
        "all keyless requests on one endpoint: {by_header:?}"
    );
    let by_cookie = tally(&mut c, "ck.test", "/", 12);
    assert!(
        by_cookie.len() >= 2,
        "all keyless requests on one endpoint: {by_cookie:?}"
    );
}

//! Balancing within a cluster: round robin by weight, weight 0 draining, least connections,
//! random P2C, and the affinity cookie falling back when its endpoint goes.

use crate::support::origin::Origin;
use crate::{backend, reload, served_by, start, tally, wait_until, T};
use lb_tests::http::{self, Backend, KeepAliveClient, Response};
use lb_tests::lb::free_local_addr;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[test]
fn round_robin_splits_exactly_by_weight() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: web}}]
clusters:
  - name: web
    balance: round_robin
    endpoints:
      - {{address: "{}", weight: 3}}
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 0}}
"#,
        a.addr(),
        b.addr(),
        c.addr()
    );
    let _lb = start(&yaml);
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "rr.test", "/", 40);
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), None, "weight 0 got traffic: {counts:?}");
    assert_eq!(c.requests(), 0);
}

#[test]
fn weight_zero_drains_new_requests_but_in_flight_one_completes() {
    let a = Origin::plain("a").unwrap();
    let b = Origin::plain("b").unwrap();
    let listen = free_local_addr();
    let config = |wa: u16, wb: u16| {
        format!(
            r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: web}}]
clusters:
  - name: web
    endpoints:
      - {{address: "{}", weight: {wa}}}
      - {{address: "{}", weight: {wb}}}
"#,
            a.addr(),
            b.addr()
        )
    };
    let lb = start(&config(1, 0));
    let slow = std::thread::spawn(move || {
        http::get(listen, "drain.test", "/delay/3000", Duration::from_secs(10))
    });
    wait_until("the slow request to reach a", || a.requests() == 1);
    reload(&lb, &config(0, 1), 2.0);
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "drain.test", "/", 10);
    assert!(
        !slow.is_finished(),
        "the slow request ended before the reload took effect: nothing was drained in flight"
    );
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "drained endpoint got new requests: {counts:?}"
    );
    let r = slow
        .join()
        .unwrap()
        .expect("in-flight request to the drained endpoint");
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("a")),
        "{}",
        r.text()
    );
    assert_eq!(r.text(), "a\n");
    assert_eq!(a.requests(), 1);
    assert_eq!(b.requests(), 10);
}

#[test]
fn least_connections_avoids_busy_endpoints() {
    let os: Vec<Origin> = ["a", "b", "c"]
        .iter()
        .map(|n| Origin::plain(n).unwrap())
        .collect();
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: lc}}]
clusters:
  - name: lc
    balance: least_connections
    endpoints: [{{address: "{}"}}, {{address: "{}"}}, {{address: "{}"}}]
"#,
        os[0].addr(),
        os[1].addr(),
        os[2].addr()
    );
    let _lb = start(&yaml);
    let total = |os: &[Origin]| os.iter().map(Origin::requests).sum::<u64>();
    let slow = |n: u64| {
        let h = std::thread::spawn(move || {
            http::get(listen, "lc.test", "/delay/4000", Duration::from_secs(10))
        });
        wait_until("slow request to land", || total(&os) == n);
        h
    };
    let s1 = slow(1);
    let s2 = slow(2);
    let busy: Vec<usize> = (0..3).filter(|i| os[*i].requests() == 1).collect();
    assert_eq!(busy.len(), 2, "two slow requests on the same endpoint");
    let idle = (0..3).find(|i| !busy.contains(i)).unwrap();
    let idle_name = ["a", "b", "c"][idle];
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "lc.test", "/", 8);
    assert_eq!(
        counts.get(idle_name),
        Some(&8),
        "requests went to busy endpoints: {counts:?}"
    );
    assert!(
        !s1.is_finished() && !s2.is_finished(),
        "slow requests ended early: the endpoints were not busy during the check"
    );
    for h in [s1, s2] {
        assert_eq!(h.join().unwrap().unwrap().status, 200);
    }
    // Once idle again, every endpoint gets requests.
    let counts = tally(&mut client, "lc.test", "/", 9);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn random_p2c_spreads_over_weighted_endpoints_never_weight_zero() {
    let names = ["a", "b", "c", "z"];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: r}}]
clusters:
  - name: r
    balance: random
    endpoints:
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 2}}
      - {{address: "{}", weight: 1}}
      - {{address: "{}", weight: 0}}
"#,
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr(),
        bs[3].addr()
    );
    let _lb = start(&yaml);
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut client, "r.test", "/", 200);
    for n in ["a", "b", "c"] {
        assert!(
            counts.get(n).is_some_and(|c| *c >= 10),
            "{n} starved: {counts:?}"
        );
    }
    assert_eq!(
        counts.get("z"),
        None,
        "weight-0 endpoint chosen: {counts:?}"
    );
    assert_eq!(bs[3].requests(), 0);
}

#[test]
fn affinity_cookie_sticks_and_falls_back_when_endpoint_removed() {
    let bs: Vec<Backend> = ["a", "b", "c"].iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    let config = |idx: &[usize]| {
        let eps: Vec<String> = idx
            .iter()
            .map(|i| format!("{{address: \"{}\"}}", bs[*i].addr()))
            .collect();
        format!(
            r#"
listeners: [{{name: http, address: "{listen}"}}]
routes: [{{hosts: ["*"], cluster: web}}]
clusters:
  - {{name: web, affinity: {{cookie: srv}}, endpoints: [{}]}}
"#,
            eps.join(", ")
        )
    };
    let lb = start(&config(&[0, 1, 2]));
    let cookie_of = |r: &Response| -> String {
        let sc = r
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no set-cookie: {:?}", r.headers));
        let pair = sc.split(';').next().unwrap().trim();
        let id = pair
            .strip_prefix("srv=")
            .unwrap_or_else(|| panic!("set-cookie not srv=<id>: {sc}"));
        assert!(!id.is_empty(), "{sc}");
        id.to_string()
    };
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    // Without the cookie, round robin rotates and every response offers a cookie.
    let mut ids = HashMap::new();
    for _ in 0..3 {
        let r = c.get("aff.test", "/").unwrap();
        ids.insert(served_by(&r), cookie_of(&r));
    }
    assert_eq!(ids.len(), 3, "round robin over 3 should hit all 3: {ids:?}");
    let distinct: HashSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), 3, "ids must differ per endpoint: {ids:?}");
    // With the cookie, 10 requests stick (round robin would have rotated), no new cookie.
    let (stuck_on, id) = ("b".to_string(), ids["b"].clone());
    let cookie = format!("other=1; srv={id}");
    for i in 0..10 {
        let r = c
            .request("GET", "aff.test", "/", &[("cookie", &cookie)], b"")
            .unwrap();
        assert_eq!(served_by(&r), stuck_on, "request {i} with the cookie moved");
        assert_eq!(
            r.header("set-cookie"),
            None,
            "cookie re-set although it matched"
        );
    }
    // An unknown id falls back and gets a fresh cookie naming the endpoint that served.
    let r = c
        .request(
            "GET",
            "aff.test",
            "/",
            &[("cookie", "srv=ffffffffffffffff")],
            b"",
        )
        .unwrap();
    let who = served_by(&r);
    assert_eq!(cookie_of(&r), ids[&who]);
    // Remove b: its cookie falls back to another endpoint and is replaced.
    reload(&lb, &config(&[0, 2]), 2.0);
    let r = c
        .request("GET", "aff.test", "/", &[("cookie", &cookie)], b"")
        .unwrap();
    let who = served_by(&r);
    assert_ne!(who, "b");
    let new_id = cookie_of(&r);
    assert_ne!(new_id, id);
    assert_eq!(new_id, ids[&who]);
    // And the new cookie sticks.
    let cookie = format!("srv={new_id}");
    for _ in 0..5 {
        let r = c
            .request("GET", "aff.test", "/", &[("cookie", &cookie)], b"")
            .unwrap();
        assert_eq!(served_by(&r), who);
    }
}

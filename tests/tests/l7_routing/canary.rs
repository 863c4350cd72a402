//! Weighted split between clusters: exact by weight, and the canary (a header or cookie value)
//! that sends matching requests to the canary cluster whatever the weights.

use crate::{backend, served_by, start, tally, T};
use lb_tests::http::KeepAliveClient;
use lb_tests::lb::free_local_addr;
use std::collections::HashMap;

#[test]
fn weighted_cluster_split_is_exact_and_canary_overrides_weights() {
    let (old, new) = (backend("old"), backend("new"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - name: split
    hosts: [split.test]
    clusters: [{{name: old, weight: 99}}, {{name: new, weight: 1}}]
    canary: {{cluster: new, header: {{name: x-canary, value: "1"}}, cookie: {{name: canary, value: always}}}}
clusters:
  - {{name: old, endpoints: [{{address: "{}"}}]}}
  - {{name: new, endpoints: [{{address: "{}"}}]}}
"#,
        old.addr(),
        new.addr()
    );
    let _lb = start(&yaml);
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    let counts = tally(&mut c, "split.test", "/", 100);
    assert_eq!(
        (counts.get("old"), counts.get("new")),
        (Some(&99), Some(&1)),
        "{counts:?}"
    );
    let mut via =
        |h: &[(&str, &str)]| served_by(&c.request("GET", "split.test", "/", h, b"").unwrap());
    for _ in 0..10 {
        assert_eq!(via(&[("x-canary", "1")]), "new", "canary header");
        assert_eq!(
            via(&[("cookie", "a=b; canary=always")]),
            "new",
            "canary cookie"
        );
    }
    // Other values do not trigger the canary: the next 99 follow the weights again (98 + 1).
    let mut non = HashMap::<String, usize>::new();
    for i in 0..99 {
        let h: &[(&str, &str)] = match i % 3 {
            0 => &[("x-canary", "0")],
            1 => &[("cookie", "canary=never")],
            _ => &[],
        };
        *non.entry(via(h)).or_default() += 1;
    }
    assert!(non.get("new").copied().unwrap_or(0) <= 1, "{non:?}");
    assert!(non.get("old").copied().unwrap_or(0) >= 98, "{non:?}");
}

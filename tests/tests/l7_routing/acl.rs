//! Per-route allow and deny CIDR lists, seen from different loopback source addresses (403
//! when denied; the backend never sees those requests).

use crate::{backend, get, get_from, start};
use lb_tests::lb::free_local_addr;
use std::net::Ipv4Addr;

#[test]
fn allow_and_deny_cidrs_per_route() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [acl.test], path: {{prefix: /ten}}, allow: [10.0.0.0/8], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /deny-lo}}, deny: [127.0.0.0/8], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /lo}}, allow: [127.0.0.0/8], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /both}}, allow: [127.0.0.0/8], deny: [127.0.0.1], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /two}}, allow: ["127.0.0.2/32", "::1"], cluster: c}}
  - {{hosts: [acl.test], path: {{prefix: /open}}, cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    let st = |path: &str| get(listen, "acl.test", path).status;
    assert_eq!(st("/ten"), 403, "allow 10/8 must refuse 127.0.0.1");
    assert_eq!(st("/deny-lo"), 403, "deny 127/8");
    assert_eq!(st("/lo"), 200, "allow 127/8");
    assert_eq!(st("/both"), 403, "deny is checked after allow");
    assert_eq!(st("/two"), 403);
    assert_eq!(st("/open"), 200);
    assert_eq!(
        b.requests(),
        2,
        "refused requests must not reach the backend"
    );
    // From other loopback sources.
    let from =
        |ip: [u8; 4], path: &str| get_from(Ipv4Addr::from(ip), listen, "acl.test", path).status;
    assert_eq!(from([127, 0, 0, 2], "/two"), 200);
    assert_eq!(from([127, 0, 0, 3], "/two"), 403);
    assert_eq!(from([127, 0, 0, 2], "/both"), 200);
    assert_eq!(from([127, 0, 0, 2], "/deny-lo"), 403);
    assert_eq!(b.requests(), 4);
}

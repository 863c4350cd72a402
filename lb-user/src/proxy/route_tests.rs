//! Route table tests: host precedence, path kinds and precedence, matchers.

use super::*;
use crate::config::parse;

fn table(yaml: &str) -> RouteTable {
    let cfg = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::build(&cfg.routes)
}

fn get(t: &RouteTable, host: &str, uri: &str) -> Option<usize> {
    req(t, host, Request::get(uri).body(()).unwrap())
}

fn req(t: &RouteTable, host: &str, r: Request<()>) -> Option<usize> {
    t.lookup("l", Some(host), &r).map(|m| m.route)
}

const CLUSTERS: &str = "clusters: [{name: a}, {name: b}]\n";

#[test]
fn host_precedence_exact_then_longest_wildcard_then_any() {
    let t = table(&format!(
        "{CLUSTERS}routes:
  - {{hosts: ['*'], cluster: a}}
  - {{hosts: ['*.example.com'], cluster: a}}
  - {{hosts: ['*.api.example.com'], cluster: a}}
  - {{hosts: [www.example.com], cluster: a}}
"
    ));
    assert_eq!(get(&t, "www.example.com", "/"), Some(3));
    assert_eq!(get(&t, "x.api.example.com", "/"), Some(2));
    assert_eq!(get(&t, "a.b.api.example.com", "/"), Some(2));
    assert_eq!(get(&t, "shop.example.com", "/"), Some(1));
    assert_eq!(
        get(&t, "example.com", "/"),
        Some(0),
        "a wildcard needs a label"
    );
    assert_eq!(get(&t, "other.org", "/"), Some(0));
    assert_eq!(
        t.lookup("l", None, &Request::get("/").body(()).unwrap())
            .map(|m| m.route),
        Some(0)
    );
}

#[test]
fn path_precedence_exact_longest_prefix_regex() {
    let t = table(&format!(
        "{CLUSTERS}routes:
  - {{hosts: [h], cluster: a}}
  - {{hosts: [h], path: {{regex: '^/v[0-9]+/'}}, cluster: b}}
  - {{hosts: [h], path: {{prefix: /v2}}, cluster: b}}
  - {{hosts: [h], path: {{prefix: /v2/admin/}}, cluster: a}}
  - {{hosts: [h], path: {{exact: /v2/login}}, cluster: a}}
"
    ));
    assert_eq!(get(&t, "h", "/v2/login"), Some(4));
    assert_eq!(get(&t, "h", "/v2/login/x"), Some(2));
    assert_eq!(get(&t, "h", "/v2/admin"), Some(3));
    assert_eq!(get(&t, "h", "/v2/admin/users?x=1"), Some(3));
    assert_eq!(get(&t, "h", "/v2"), Some(2));
    assert_eq!(
        get(&t, "h", "/v2x"),
        Some(0),
        "prefix is on segment boundaries"
    );
    assert_eq!(get(&t, "h", "/v3/x"), Some(1));
    assert_eq!(get(&t, "h", "/"), Some(0));
    assert_eq!(get(&t, "other", "/"), None, "no host entry, no any");
}

#[test]
fn no_fallback_to_less_specific_host() {
    let t = table(&format!(
        "{CLUSTERS}routes:
  - {{hosts: ['*'], cluster: a}}
  - {{hosts: [h], path: {{prefix: /api}}, cluster: b}}
"
    ));
    assert_eq!(get(&t, "h", "/api/x"), Some(1));
    assert_eq!(get(&t, "h", "/web"), None);
}

#[test]
fn methods_headers_query_and_more_conditions_first() {
    let t = table(&format!(
        "{CLUSTERS}routes:
  - {{hosts: [h], cluster: a}}
  - {{hosts: [h], methods: [POST], cluster: b}}
  - {{hosts: [h], headers: [{{name: X-Env, exact: canary}}], cluster: b}}
  - {{hosts: [h], headers: [{{name: x-debug, present: true}}, {{name: user-agent, regex: '^curl/'}}], cluster: b}}
  - {{hosts: [h], query: [{{name: v, exact: '2'}}], cluster: b}}
  - {{hosts: [h], query: [{{name: trace, present: true}}], cluster: b}}
"
    ));
    assert_eq!(get(&t, "h", "/"), Some(0));
    assert_eq!(req(&t, "h", Request::post("/").body(()).unwrap()), Some(1));
    assert_eq!(
        req(
            &t,
            "h",
            Request::get("/")
                .header("x-env", "canary")
                .body(())
                .unwrap()
        ),
        Some(2)
    );
    assert_eq!(
        req(
            &t,
            "h",
            Request::get("/")
                .header("x-env", "Canary")
                .body(())
                .unwrap()
        ),
        Some(0)
    );
    let both = Request::get("/")
        .header("x-debug", "")
        .header("user-agent", "curl/8")
        .header("x-env", "canary")
        .body(())
        .unwrap();
    assert_eq!(req(&t, "h", both), Some(3), "two conditions beat one");
    let half = Request::get("/")
        .header("x-debug", "1")
        .header("user-agent", "wget")
        .body(())
        .unwrap();
    assert_eq!(req(&t, "h", half), Some(0));
    assert_eq!(get(&t, "h", "/?a=1&v=2"), Some(4));
    assert_eq!(get(&t, "h", "/?v=20"), Some(0));
    assert_eq!(get(&t, "h", "/?trace"), Some(5));
}

#[test]
fn ten_thousand_hosts_lookup_is_by_hash() {
    let mut y = String::from(CLUSTERS);
    y.push_str("routes:\n");
    for i in 0..10_000 {
        y.push_str(&format!("  - {{hosts: [h{i}.example], cluster: a}}\n"));
    }
    let t = table(&y);
    assert_eq!(t.hosts(), 10_000);
    assert_eq!(get(&t, "h9999.example", "/"), Some(9999));
    assert_eq!(get(&t, "h0.example", "/"), Some(0));
    assert_eq!(get(&t, "h10000.example", "/"), None);
}

#[test]
fn listener_condition() {
    let t = table(&format!(
        "{CLUSTERS}listeners: [{{name: plain, address: '127.0.0.1:1'}}, {{name: tls, address: '127.0.0.1:2'}}]
routes:
  - {{hosts: [h], cluster: a}}
  - {{hosts: [h], listeners: [plain], redirect: {{scheme: https}}}}
"
    ));
    let r = || Request::get("/").body(()).unwrap();
    assert_eq!(t.lookup("plain", Some("h"), &r()).map(|m| m.route), Some(1));
    assert_eq!(t.lookup("tls", Some("h"), &r()).map(|m| m.route), Some(0));
}

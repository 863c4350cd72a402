//! Routing precedence: exact host, longest wildcard, any; paths exact, prefix, regex; method,
//! header and query conditions; 404 for no route, 400 for a bad Host; absolute-form URIs.

use crate::{backend, get, parse_response, raw_status, send, served_by, start, T};
use lb_tests::http::{self, Backend};
use lb_tests::lb::free_local_addr;

#[test]
fn hosts_exact_then_longest_wildcard_then_any() {
    let names = ["exact", "wild", "deep", "any"];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    // Config order is the reverse of precedence: order must not matter.
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: any, hosts: ["*"], cluster: any}}
  - {{name: wild, hosts: ["*.example.test"], cluster: wild}}
  - {{name: deep, hosts: ["*.deep.example.test"], cluster: deep}}
  - {{name: exact, hosts: [api.example.test], cluster: exact}}
clusters:
  - {{name: exact, endpoints: [{{address: "{}"}}]}}
  - {{name: wild, endpoints: [{{address: "{}"}}]}}
  - {{name: deep, endpoints: [{{address: "{}"}}]}}
  - {{name: any, endpoints: [{{address: "{}"}}]}}
"#,
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr(),
        bs[3].addr()
    );
    let _lb = start(&yaml);
    for (host, want) in [
        ("api.example.test", "exact"),
        ("API.Example.TEST:8080", "exact"),
        ("foo.example.test", "wild"),
        ("a.b.example.test", "wild"),
        ("deep.example.test", "wild"),
        ("x.deep.example.test", "deep"),
        ("y.x.deep.example.test", "deep"),
        ("example.test", "any"),
        ("other.test", "any"),
        ("example.test.evil", "any"),
        ("xexample.test", "any"),
    ] {
        assert_eq!(served_by(&get(listen, host, "/")), want, "Host: {host}");
    }
}

#[test]
fn paths_exact_then_longest_prefix_then_regex_then_catch_all() {
    let names = ["catch", "regex", "api", "apiv1", "exact"];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    // Listed from least to most specific: precedence, not config order, must decide.
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: catch, hosts: [app.test], cluster: catch}}
  - {{name: regex, hosts: [app.test], path: {{regex: "^/(api/)?v[0-9]+/items$"}}, cluster: regex}}
  - {{name: api, hosts: [app.test], path: {{prefix: /api}}, cluster: api}}
  - {{name: apiv1, hosts: [app.test], path: {{prefix: /api/v1/}}, cluster: apiv1}}
  - {{name: exact, hosts: [app.test], path: {{exact: /api/v1/items}}, cluster: exact}}
  - {{name: only-prefix, hosts: [strict.test], path: {{prefix: /api}}, cluster: api}}
clusters:
  - {{name: catch, endpoints: [{{address: "{}"}}]}}
  - {{name: regex, endpoints: [{{address: "{}"}}]}}
  - {{name: api, endpoints: [{{address: "{}"}}]}}
  - {{name: apiv1, endpoints: [{{address: "{}"}}]}}
  - {{name: exact, endpoints: [{{address: "{}"}}]}}
"#,
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr(),
        bs[3].addr(),
        bs[4].addr()
    );
    let _lb = start(&yaml);
    for (path, want) in [
        ("/api/v1/items", "exact"),
        ("/api/v1/items?x=1", "exact"),
        ("/api/v1/items/", "apiv1"),
        ("/api/v1/other", "apiv1"),
        ("/api/v1", "apiv1"),
        ("/api/v1x", "api"),
        ("/api/v2/items", "api"),
        ("/api", "api"),
        ("/api/", "api"),
        ("/apix", "catch"),
        ("/v3/items", "regex"),
        ("/v3/items/", "catch"),
        ("/v3/other", "catch"),
        ("/", "catch"),
    ] {
        assert_eq!(
            served_by(&get(listen, "app.test", path)),
            want,
            "GET {path}"
        );
    }
    // A host whose only route is prefix /api: segment boundaries, then nothing.
    assert_eq!(served_by(&get(listen, "strict.test", "/api/x")), "api");
    assert_eq!(get(listen, "strict.test", "/apix").status, 404);
    assert_eq!(get(listen, "strict.test", "/").status, 404);
}

#[test]
fn method_header_and_query_conditions() {
    let names = [
        "write",
        "m-any",
        "h-exact",
        "h-regex",
        "h-present",
        "h-both",
        "h-plain",
        "q-exact",
        "q-present",
        "q-plain",
    ];
    let bs: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let listen = free_local_addr();
    let mut clusters = String::new();
    for (n, b) in names.iter().zip(&bs) {
        clusters.push_str(&format!(
            "  - {{name: {n}, endpoints: [{{address: \"{}\"}}]}}\n",
            b.addr()
        ));
    }
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [c.test], path: {{prefix: /m}}, cluster: m-any}}
  - {{hosts: [c.test], path: {{prefix: /m}}, methods: [POST, PUT], cluster: write}}
  - {{hosts: [c.test], path: {{prefix: /h}}, cluster: h-plain}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: X-Env, exact: beta}}], cluster: h-exact}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: user-agent, regex: "^curl/"}}], cluster: h-regex}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: x-debug, present: true}}], cluster: h-present}}
  - {{hosts: [c.test], path: {{prefix: /h}}, headers: [{{name: x-env, exact: beta}}, {{name: x-debug, present: true}}], cluster: h-both}}
  - {{hosts: [c.test], path: {{prefix: /q}}, cluster: q-plain}}
  - {{hosts: [c.test], path: {{prefix: /q}}, query: [{{name: debug, exact: "1"}}], cluster: q-exact}}
  - {{hosts: [c.test], path: {{prefix: /q}}, query: [{{name: trace, present: true}}], cluster: q-present}}
clusters:
{clusters}"#
    );
    let _lb = start(&yaml);
    let req =
        |m: &str, path: &str, h: &[(&str, &str)]| served_by(&send(listen, m, "c.test", path, h));
    // Methods.
    assert_eq!(req("POST", "/m", &[("content-length", "0")]), "write");
    assert_eq!(req("PUT", "/m/x", &[("content-length", "0")]), "write");
    assert_eq!(req("GET", "/m", &[]), "m-any");
    assert_eq!(req("DELETE", "/m", &[]), "m-any");
    // Headers: exact (case-sensitive value, case-insensitive name), regex, present, both.
    assert_eq!(req("GET", "/h", &[("x-env", "beta")]), "h-exact");
    assert_eq!(req("GET", "/h", &[("X-ENV", "beta")]), "h-exact");
    assert_eq!(req("GET", "/h", &[("x-env", "Beta")]), "h-plain");
    assert_eq!(req("GET", "/h", &[("x-env", "beta2")]), "h-plain");
    assert_eq!(req("GET", "/h", &[("user-agent", "curl/8.5")]), "h-regex");
    assert_eq!(
        req("GET", "/h", &[("user-agent", "wget curl/8")]),
        "h-plain"
    );
    assert_eq!(req("GET", "/h", &[("x-debug", "")]), "h-present");
    assert_eq!(req("GET", "/h", &[("x-debug", "0")]), "h-present");
    assert_eq!(
        req("GET", "/h", &[("x-env", "beta"), ("x-debug", "1")]),
        "h-both",
        "two conditions beat one"
    );
    assert_eq!(req("GET", "/h", &[]), "h-plain");
    // Query: exact, present (with or without a value), names matched whole.
    assert_eq!(req("GET", "/q?debug=1", &[]), "q-exact");
    assert_eq!(req("GET", "/q?a=b&debug=1", &[]), "q-exact");
    assert_eq!(req("GET", "/q?debug=0", &[]), "q-plain");
    assert_eq!(req("GET", "/q?debug=10", &[]), "q-plain");
    assert_eq!(req("GET", "/q?a=1&trace", &[]), "q-present");
    assert_eq!(req("GET", "/q?trace=", &[]), "q-present");
    assert_eq!(req("GET", "/q?trace=yes", &[]), "q-present");
    assert_eq!(req("GET", "/q?xtrace=1", &[]), "q-plain");
    assert_eq!(req("GET", "/q", &[]), "q-plain");
}

#[test]
fn v2_migrates_to_new_cluster_the_rest_stays_on_old() {
    let (old, new) = (backend("old"), backend("new"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: rest, hosts: [app.test], cluster: old}}
  - {{name: v2, hosts: [app.test], path: {{regex: "^/v2(/|$)"}}, cluster: new}}
  - {{name: rest2, hosts: [app2.test], cluster: old}}
  - {{name: v2p, hosts: [app2.test], path: {{prefix: /v2}}, cluster: new}}
clusters:
  - {{name: old, endpoints: [{{address: "{}"}}]}}
  - {{name: new, endpoints: [{{address: "{}"}}]}}
"#,
        old.addr(),
        new.addr()
    );
    let _lb = start(&yaml);
    for host in ["app.test", "app2.test"] {
        for (path, want) in [
            ("/v2/users", "new"),
            ("/v2/users/7?full=1", "new"),
            ("/v2", "new"),
            ("/v2/", "new"),
            ("/v20", "old"),
            ("/v2x/users", "old"),
            ("/v1/users", "old"),
            ("/users/v2", "old"),
            ("/", "old"),
        ] {
            assert_eq!(served_by(&get(listen, host, path)), want, "{host}{path}");
        }
    }
    // The path reaches the new cluster unchanged.
    assert_eq!(new.last_request_line(), "GET /v2/ HTTP/1.1");
}

#[test]
fn no_route_is_404_and_malformed_host_is_400() {
    let b = backend("only");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [known.test], path: {{prefix: /app}}, cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    assert_eq!(served_by(&get(listen, "known.test", "/app")), "only");
    assert_eq!(get(listen, "unknown.test", "/app").status, 404);
    assert_eq!(get(listen, "known.test", "/other").status, 404);
    assert_eq!(get(listen, "sub.known.test", "/app").status, 404);
    for (what, req) in [
        ("space in Host", "GET /app HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
        (
            "two Host headers",
            "GET /app HTTP/1.1\r\nHost: known.test\r\nHost: known.test\r\nConnection: close\r\n\r\n",
        ),
        ("missing Host", "GET /app HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("bad port", "GET /app HTTP/1.1\r\nHost: known.test:8x\r\nConnection: close\r\n\r\n"),
        ("slash in Host", "GET /app HTTP/1.1\r\nHost: known.test/x\r\nConnection: close\r\n\r\n"),
        ("userinfo in Host", "GET /app HTTP/1.1\r\nHost: u@known.test\r\nConnection: close\r\n\r\n"),
    ] {
        assert_eq!(raw_status(listen, req), 400, "{what}");
    }
    assert_eq!(b.requests(), 1, "bad requests must not reach the backend");
}

#[test]
fn absolute_form_uri_routes_on_its_authority() {
    let (a, b) = (backend("api"), backend("other"));
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [api.example.test], cluster: a}}
  - {{hosts: ["*"], cluster: b}}
clusters:
  - {{name: a, endpoints: [{{address: "{}"}}]}}
  - {{name: b, endpoints: [{{address: "{}"}}]}}
"#,
        a.addr(),
        b.addr()
    );
    let _lb = start(&yaml);
    let req = "GET http://API.example.test:8080/x?y=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    let r = parse_response(&http::raw(listen, req.as_bytes(), T).unwrap()).unwrap();
    assert_eq!(served_by(&r), "api", "the absolute URI's authority decides");
    assert_eq!(
        a.last_request_line(),
        "GET /x?y=1 HTTP/1.1",
        "origin form upstream"
    );
}

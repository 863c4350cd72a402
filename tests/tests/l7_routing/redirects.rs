//! Redirects (status and Location; a path-only redirect keeps the request port) and prefix
//! rewrites that change the path the backend sees.

use crate::{backend, get, send, served_by, start};
use lb_tests::lb::free_local_addr;

#[test]
fn redirects_status_and_location() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [http.test], redirect: {{scheme: https, status: 301}}}}
  - {{hosts: [move.test], redirect: {{host: new.test}}}}
  - {{hosts: [shop.test], path: {{prefix: /shop}}, redirect: {{path_prefix: /store, status: 308}}}}
  - {{hosts: [shop.test], path: {{prefix: /old/api}}, redirect: {{path_prefix: /api/v2, status: 307}}}}
  - {{hosts: [shop.test], path: {{exact: /legacy}}, redirect: {{scheme: https, port: 8443, path_prefix: /modern}}}}
  - {{hosts: [shop.test], cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    for (method, host, path, status, location) in [
        (
            "GET",
            "http.test",
            "/a/b?c=1",
            301,
            "https://http.test/a/b?c=1",
        ),
        ("GET", "http.test", "/", 301, "https://http.test/"),
        ("GET", "move.test", "/x?y=2", 302, "http://new.test/x?y=2"),
        ("POST", "move.test", "/form", 302, "http://new.test/form"),
        (
            "GET",
            "shop.test",
            "/shop/cart?id=3",
            308,
            "http://shop.test/store/cart?id=3",
        ),
        (
            "POST",
            "shop.test",
            "/shop/cart",
            308,
            "http://shop.test/store/cart",
        ),
        ("GET", "shop.test", "/shop", 308, "http://shop.test/store"),
        ("GET", "shop.test", "/shop/", 308, "http://shop.test/store/"),
        (
            "PUT",
            "shop.test",
            "/old/api/users/1",
            307,
            "http://shop.test/api/v2/users/1",
        ),
        (
            "DELETE",
            "shop.test",
            "/old/api?q=1",
            307,
            "http://shop.test/api/v2?q=1",
        ),
        (
            "GET",
            "shop.test",
            "/legacy?x",
            302,
            "https://shop.test:8443/modern?x",
        ),
    ] {
        let h: &[(&str, &str)] = if method == "GET" {
            &[]
        } else {
            &[("content-length", "0")]
        };
        let r = send(listen, method, host, path, h);
        assert_eq!(r.status, status, "{method} {host}{path}: {}", r.text());
        assert_eq!(
            r.header("location"),
            Some(location),
            "{method} {host}{path}"
        );
        assert_eq!(r.header("x-backend"), None, "redirect must not be proxied");
    }
    // Not under the redirect prefixes: proxied.
    assert_eq!(served_by(&get(listen, "shop.test", "/shopping")), "b");
    assert_eq!(served_by(&get(listen, "shop.test", "/legacy/x")), "b");
    assert_eq!(b.requests(), 2);
}

#[test]
fn rewrite_prefix_changes_the_path_the_backend_sees() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [rw.test], path: {{prefix: /api}}, rewrite: {{prefix: /}}, cluster: c}}
  - {{hosts: [rw.test], path: {{prefix: /svc/}}, rewrite: {{prefix: /internal/}}, cluster: c}}
  - {{hosts: [rw.test], path: {{prefix: /keep}}, cluster: c}}
clusters:
  - {{name: c, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let _lb = start(&yaml);
    for (path, seen) in [
        ("/api/v1/users?x=1", "/v1/users?x=1"),
        ("/api/v1/users", "/v1/users"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api?x=1", "/?x=1"),
        ("/svc/a/b?c=d", "/internal/a/b?c=d"),
        // The rewrite prefix is used as written (trailing slash kept) when nothing follows.
        ("/svc", "/internal/"),
        ("/svc/", "/internal/"),
        ("/keep/me?x=1", "/keep/me?x=1"),
    ] {
        assert_eq!(served_by(&get(listen, "rw.test", path)), "b", "{path}");
        assert_eq!(
            b.last_request_line(),
            format!("GET {seen} HTTP/1.1"),
            "GET {path}"
        );
    }
    assert_eq!(get(listen, "rw.test", "/apix").status, 404);
}

#[test]
fn redirect_that_changes_only_the_path_keeps_the_request_port() {
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [shop.test], path: {{prefix: /shop}}, redirect: {{path_prefix: /store, status: 308}}}}
"#
    );
    let _lb = start(&yaml);
    let r = get(listen, "shop.test:8080", "/shop/cart?id=3");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("http://shop.test:8080/store/cart?id=3"),
        "a path-only redirect must not send the client to another port"
    );
}

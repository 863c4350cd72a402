//! The mock Kubernetes API server (lb_tests::kubeapi) over plain HTTP: lists, pagination, watch
//! replay + live events (chunked, one JSON per line), bookmarks, expire → 410, scopes, 404.

use lb_tests::http::{get, KeepAliveClient};
use lb_tests::kubeapi::MockApi;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

fn addr(api: &MockApi) -> SocketAddr {
    api.url().trim_start_matches("http://").parse().unwrap()
}

fn get_json(api: &MockApi, path: &str) -> (u16, Value) {
    let r = get(addr(api), "kube", path, T).unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

fn svc(ns: &str, name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
           "spec": {"ports": [{"port": port}]}})
}

fn names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().unwrap();
    let name = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap()
        )
    };
    items.iter().map(name).collect()
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A watch read chunk by chunk: every chunk must be exactly one JSON event ending in '\n'.
struct Watch {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Watch {
    fn open(api: &MockApi, path: &str) -> Watch {
        let mut stream = TcpStream::connect(addr(api)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: kube\r\naccept: application/json\r\n\r\n"
        )
        .unwrap();
        let mut w = Watch {
            stream,
            buf: Vec::new(),
        };
        let head = w.until(b"\r\n\r\n").expect("response head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        w
    }
    fn fill(&mut self, deadline: Instant) -> usize {
        let mut chunk = [0u8; 4096];
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "watch read timed out; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("watch read: {e}"),
            }
        }
        panic!("watch read looped")
    }
    /// Up to `pat`, consumed; None on EOF.
    fn until(&mut self, pat: &[u8]) -> Option<String> {
        let deadline = Instant::now() + T;
        for _ in 0..10_000 {
            if let Some(end) = self.buf.windows(pat.len()).position(|w| w == pat) {
                let raw: Vec<u8> = self.buf.drain(..end + pat.len()).collect();
                return Some(String::from_utf8(raw[..end].to_vec()).unwrap());
            }
            if self.fill(deadline) == 0 {
                return None;
            }
        }
        panic!("no {pat:?}")
    }
    /// The next event, or None at the clean end of the chunked body.
    fn next(&mut self) -> Option<Value> {
        let size = usize::from_str_radix(&self.until(b"\r\n").expect("chunk size"), 16).unwrap();
        if size == 0 {
            assert_eq!(
                self.until(b"\r\n").as_deref(),
                Some(""),
                "end of chunked body"
            );
            return None;
        }
        let data = self.until(b"\r\n").expect("chunk data");
        assert_eq!(data.len(), size);
        let line = data.strip_suffix('\n').expect("one event per line");
        assert!(!line.contains('\n'), "one event per chunk: {line}");
        Some(serde_json::from_str(line).unwrap())
    }
    fn expect(&mut self, typ: &str, name: &str) -> Value {
        let e = self
            .next()
            .unwrap_or_else(|| panic!("watch ended before {typ} {name}"));
        assert_eq!(
            (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
            (Some(typ), Some(name)),
            "{e}"
        );
        e["object"].clone()
    }
}

#[test]
fn list_pagination_scopes_and_404() {
    let api = MockApi::start().unwrap();
    assert!(api.url().starts_with("http://127.0.0.1:"));
    for (ns, name) in [("b", "s2"), ("a", "s1"), ("a", "s3")] {
        api.apply(svc(ns, name, 80));
    }
    api.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "lb"},
                     "spec": {"controller": "example.com/lb"}}));
    let (code, list) = get_json(&api, "/api/v1/services");
    assert_eq!(
        (code, list["kind"].as_str(), list["apiVersion"].as_str()),
        (200, Some("ServiceList"), Some("v1"))
    );
    assert_eq!(names(&list), ["a/s1", "a/s3", "b/s2"]);
    assert_eq!(
        rv(&list),
        5,
        "four applies after the initial resourceVersion 1"
    );
    let s1 = &list["items"][0];
    assert_eq!(
        (
            s1["kind"].as_str(),
            s1["metadata"]["resourceVersion"].as_str()
        ),
        (Some("Service"), Some("3"))
    );
    assert_eq!(s1["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(s1["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        names(&get_json(&api, "/api/v1/namespaces/a/services").1),
        ["a/s1", "a/s3"]
    );
    assert!(names(&get_json(&api, "/api/v1/namespaces/c/services").1).is_empty());
    assert!(names(&get_json(&api, "/api/v1/secrets").1).is_empty());

    // Pagination: limit + continue, the continued page keeps the first page's resourceVersion.
    let (_, p1) = get_json(
        &api,
        "/api/v1/services?limit=2&resourceVersion=0&resourceVersionMatch=NotOlderThan",
    );
    assert_eq!(names(&p1), ["a/s1", "a/s3"]);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    api.apply(svc("c", "s4", 80));
    let enc = token.replace(':', "%3A");
    let (code, p2) = get_json(&api, &format!("/api/v1/services?limit=2&continue={enc}"));
    assert_eq!(
        (code, names(&p2), rv(&p2)),
        (200, vec!["b/s2".to_string(), "c/s4".into()], 5)
    );
    assert!(p2["metadata"]["continue"].is_null(), "{p2}");
    assert_eq!(get_json(&api, "/api/v1/services?continue=junk").0, 400);
    assert_eq!(get_json(&api, "/api/v1/services?limit=x").0, 400);
    assert_eq!(
        get_json(&api, "/api/v1/services?resourceVersion=abc").0,
        400
    );

    // Cluster-scoped: no namespaced path; namespaced kinds serve both paths.
    let (code, ic) = get_json(&api, "/apis/networking.k8s.io/v1/ingressclasses");
    assert_eq!(
        (code, ic["kind"].as_str(), names(&ic)),
        (200, Some("IngressClassList"), vec!["/lb".to_string()])
    );
    assert!(ic["items"][0]["metadata"]["namespace"].is_null());
    // One object by name (as the API server serves it: the Lease elector reads its Lease so).
    let (code, s1) = get_json(&api, "/api/v1/namespaces/a/services/s1");
    assert_eq!((code, s1["metadata"]["name"].as_str()), (200, Some("s1")));
    for path in [
        "/apis/networking.k8s.io/v1/namespaces/a/ingressclasses",
        "/api/v1/pods",
        "/api/v1/namespaces/a/services/missing",
        "/apis/networking.k8s.io/v2/ingresses",
        "/",
    ] {
        let (code, st) = get_json(&api, path);
        assert_eq!(
            (code, st["kind"].as_str(), st["code"].as_u64()),
            (404, Some("Status"), Some(404)),
            "{path}"
        );
    }
    for path in [
        "/apis/networking.k8s.io/v1/namespaces/a/ingresses",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/configmaps",
    ] {
        assert_eq!(get_json(&api, path).0, 200, "{path}");
    }
    let post = KeepAliveClient::connect(addr(&api), T).unwrap().request(
        "POST",
        "kube",
        "/api/v1/services",
        &[],
        b"{}",
    );
    assert_eq!(post.unwrap().status, 404);

    // Keep-alive: several requests on one connection; garbage → 400.
    let mut c = KeepAliveClient::connect(addr(&api), T).unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.get("kube", "/api/v1/services?limit=1").unwrap().status,
            200
        );
    }
    let bad = lb_tests::http::raw(addr(&api), b"NONSENSE\r\nno colon\r\n\r\n", T).unwrap();
    assert!(
        bad.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&bad)
    );
    assert_eq!((api.lists(), api.watches()), (13, 0));
}

#[test]
fn watch_replays_then_streams_live_events_and_bookmarks() {
    let api = MockApi::start().unwrap();
    api.apply(svc("a", "web", 80));
    let list_rv = rv(&get_json(&api, "/api/v1/namespaces/a/services").1);
    api.apply(svc("a", "db", 5432)); // replayed as ADDED
    api.apply(svc("a", "web", 8080)); // replayed as MODIFIED
    api.apply(svc("b", "other", 80)); // other namespace: not on this watch
    let path = format!("/api/v1/namespaces/a/services?watch=true&resourceVersion={list_rv}&allowWatchBookmarks=true&timeoutSeconds=10");
    let mut w = Watch::open(&api, &path);
    assert_eq!(w.expect("ADDED", "db")["spec"]["ports"][0]["port"], 5432);
    assert_eq!(
        w.expect("MODIFIED", "web")["spec"]["ports"][0]["port"],
        8080
    );
    // Live: a MODIFIED, a DELETED (last object, new resourceVersion), a BOOKMARK.
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "a", "name": "x"}}),
    );
    api.apply(svc("a", "db", 5433));
    let before = rv(&w.expect("MODIFIED", "db"));
    api.delete("v1", "Service", Some("a"), "web");
    api.delete("v1", "Service", Some("a"), "absent"); // no-op
    let gone = w.expect("DELETED", "web");
    assert_eq!(
        (rv(&gone), gone["spec"]["ports"][0]["port"].as_u64()),
        (before + 1, Some(8080))
    );
    api.bookmark();
    let bm = w.next().unwrap();
    assert_eq!(
        bm,
        json!({"type": "BOOKMARK", "object": {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": (before + 1).to_string()}}})
    );
    assert_eq!((api.watches(), api.lists()), (1, 1));

    // All-namespace watch without bookmarks from "now" sees only later events and no bookmark.
    let mut all = Watch::open(
        &api,
        &format!("/api/v1/services?watch=1&resourceVersion={}", before + 1),
    );
    api.bookmark();
    api.apply(svc("b", "other", 81));
    all.expect("MODIFIED", "other");
    // resourceVersion "0": the current state as ADDED events first.
    let mut zero = Watch::open(
        &api,
        "/api/v1/services?watch=true&resourceVersion=0&timeoutSeconds=1",
    );
    let mut added: Vec<String> = (0..2)
        .map(|_| {
            zero.next().unwrap()["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    added.sort();
    assert_eq!(added, ["db", "other"]);
    let started = Instant::now();
    assert!(
        zero.next().is_none(),
        "timeoutSeconds ends the watch cleanly"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A short watch read whole by the plain client: chunked, one event per line.
    let r = get(
        addr(&api),
        "kube",
        "/api/v1/services?watch=true&timeoutSeconds=1",
        T,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.header("transfer-encoding")),
        (200, Some("chunked"))
    );
    assert_eq!(r.text().lines().count(), 2, "{}", r.text());
    drop(w);
    let started = Instant::now();
    drop(api);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop closes every watch"
    );
    assert!(
        all.next().is_none(),
        "dropped server ends the watch cleanly"
    );
}

#[test]
fn expire_sends_410_and_old_versions_are_gone() {
    let api = MockApi::start().unwrap();
    api.apply(svc("a", "web", 80));
    let old = rv(&get_json(&api, "/api/v1/services").1);
    let mut w = Watch::open(
        &api,
        &format!("/api/v1/services?watch=true&resourceVersion={old}"),
    );
    let mut ic = Watch::open(
        &api,
        &format!("/apis/networking.k8s.io/v1/ingressclasses?watch=true&resourceVersion={old}"),
    );
    api.apply(svc("a", "web", 81));
    w.expect("MODIFIED", "web");
    api.expire();
    for w in [&mut w, &mut ic] {
        let e = w.next().unwrap();
        assert_eq!(e["type"], "ERROR");
        let st = &e["object"];
        assert_eq!(
            (
                st["kind"].as_str(),
                st["code"].as_u64(),
                st["reason"].as_str()
            ),
            (Some("Status"), Some(410), Some("Expired")),
            "{e}"
        );
        assert!(w.next().is_none(), "closed after the ERROR event");
    }
    // A watch from the old version: 200, one ERROR 410 event, end (what makes clients re-list).
    let mut late = Watch::open(
        &api,
        &format!("/api/v1/services?watch=true&resourceVersion={old}"),
    );
    let e = late.next().unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410)),
        "{e}"
    );
    assert!(late.next().is_none(), "closed after the ERROR event");
    for path in [
        format!("/api/v1/services?resourceVersion={old}"),
        format!(
            "/api/v1/services?resourceVersion={}&resourceVersionMatch=Exact",
            old + 1
        ),
    ] {
        let (code, st) = get_json(&api, &path);
        assert_eq!(
            (code, st["code"].as_u64(), st["reason"].as_str()),
            (410, Some(410), Some("Expired")),
            "{path}"
        );
    }
    // Re-list from scratch, then watch from the new version.
    let (code, list) = get_json(&api, "/api/v1/services?resourceVersion=0");
    assert_eq!((code, names(&list)), (200, vec!["a/web".to_string()]));
    assert_eq!(rv(&list), old + 2);
    assert_eq!(get_json(&api, "/api/v1/services").0, 200);
    let mut w = Watch::open(
        &api,
        &format!("/api/v1/services?watch=true&resourceVersion={}", rv(&list)),
    );
    api.delete("v1", "Service", Some("a"), "web");
    w.expect("DELETED", "web");
    assert_eq!((api.lists(), api.watches()), (3, 3));
}

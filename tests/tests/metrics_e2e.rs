//! The real `lb` with XDP in the node namespace: known traffic (200s, 500s, 503s after retries, a
//! down endpoint, 404s, TLS handshakes good and bad, denied datagrams) gives exact counter values
//! on /metrics, and every metric docs/metrics.md lists is in the scrape. Needs root.

mod support;

use lb_tests::http::KeepAliveClient;
use lb_tests::lb::{metric_sum, Lb};
use lb_tests::netns::{Topology, TopologyOpts};
use lb_tests::{lb_bin, require_root};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use support::admin::wait_until;
use support::certs::{client_config, Ca, Leaf};
use support::switch::Switch;

const T: Duration = Duration::from_secs(5);
const HTTP: u16 = 8080;
const HTTPS: u16 = 8443;
/// Requests per kind (each on its own keep-alive connection), and denied datagrams.
const N_OK: usize = 10;
const N_500: usize = 4;
const N_RETRY: usize = 3;
const N_DOWN: usize = 2;
const N_404: usize = 5;
const DATAGRAMS: usize = 5;
/// Requests on route ok (GETs, a DELETE, one over TLS); the mirror copies half of them.
const ON_OK: usize = N_OK + 2;
const MIRRORED: usize = ON_OK / 2;

struct Backends {
    ok: Switch,
    e500: Switch,
    e503: Switch,
    shadow: Switch,
}

fn config(b: &Backends, cert: &Leaf, denied: IpAddr) -> String {
    format!(
        r#"
listeners:
  - {{name: http, address: "0.0.0.0:{HTTP}"}}
  - {{name: https, address: "0.0.0.0:{HTTPS}", tls: {{certificates: [{{cert: {:?}, key: {:?}}}]}}}}
routes:
  - {{name: ok, hosts: [ok.test], cluster: ok, mirror: {{cluster: shadow, percent: 50}}}}
  - {{name: e500, hosts: [e500.test], cluster: e500}}
  - {{name: retry, hosts: [retry.test], cluster: retry}}
  - {{name: down, hosts: [down.test], cluster: down}}
clusters:
  - {{name: ok, endpoints: [{{name: ok, address: "{}"}}]}}
  - {{name: shadow, endpoints: [{{name: shadow, address: "{}"}}]}}
  - {{name: e500, endpoints: [{{name: e500, address: "{}"}}]}}
  - {{name: retry, retries: {{attempts: 2, conditions: ["503"]}}, endpoints: [{{name: e503, address: "{}"}}]}}
  - name: down
    health: {{active: {{type: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1}}}}
    endpoints: [{{name: dead, address: "127.0.0.1:9"}}]
xdp:
  deny: ["{denied}/32"]
# Spans go to a collector that is not there: exports fail and are counted.
tracing: {{otlp: {{endpoint: "http://127.0.0.1:9/v1/traces", timeout: 1s}}}}
"#,
        cert.cert,
        cert.key,
        b.ok.addr(),
        b.shadow.addr(),
        b.e500.addr(),
        b.e503.addr(),
    )
}

/// `n` GETs for `host` on one new connection from client 0; returns the body bytes received.
fn burst(topo: &Topology, node: SocketAddr, method: &str, host: &str, n: usize, want: u16) -> u64 {
    let host = host.to_string();
    let method = method.to_string();
    topo.clients[0]
        .run(move || {
            let mut c = KeepAliveClient::connect(node, T).unwrap();
            let mut bytes = 0;
            for i in 0..n {
                let r = c
                    .request(&method, &host, &format!("/{i}"), &[], b"")
                    .unwrap();
                assert_eq!(r.status, want, "{host} #{i}: {}", r.text());
                bytes += r.body.len() as u64;
            }
            bytes
        })
        .unwrap()
}

/// One TLS request from client 0 (a complete handshake), and two failed handshakes: plain HTTP
/// bytes (bad_message) and a TLS 1.0 ClientHello (protocol).
fn tls_traffic(topo: &Topology, node: SocketAddr, ca: &std::path::Path) {
    let cfg = client_config(ca, &[b"http/1.1"], None).unwrap();
    topo.clients[0]
        .run(move || {
            let name = "ok.test".try_into().unwrap();
            let conn = rustls::ClientConnection::new(cfg, name).unwrap();
            let tcp = TcpStream::connect_timeout(&node, T).unwrap();
            tcp.set_read_timeout(Some(T)).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(b"GET /tls HTTP/1.1\r\nhost: ok.test\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            assert!(
                out.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&out)
            );

            for hello in [
                b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
                tls10_client_hello(),
            ] {
                let mut tcp = TcpStream::connect_timeout(&node, T).unwrap();
                tcp.set_read_timeout(Some(T)).unwrap();
                tcp.write_all(&hello).unwrap();
                let mut sink = Vec::new();
                let _ = tcp.read_to_end(&mut sink);
            }
        })
        .unwrap();
}

/// A TLS 1.0 ClientHello record without extensions.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0x00, 0x04, 0x00, 0x2f, 0x00, 0x35, 0x01, 0x00]);
    let mut hs = vec![0x01, 0, 0, body.len() as u8];
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    record.extend(hs);
    record
}

/// Metric names (as exposed) listed in docs/metrics.md's tables: first-column backticked names.
fn documented_names() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("lb_") || n.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// Names of the samples in a scrape (histogram samples under their family name).
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .flat_map(|n| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            [n.to_string(), family.to_string()]
        })
        .collect()
}

#[test]
fn known_traffic_gives_exact_counters() {
    require_root();
    let topo = Topology::new(TopologyOpts { clients: 2 }).unwrap();
    let b = topo
        .node
        .run(|| Backends {
            ok: Switch::start("ok"),
            e500: Switch::start("e500"),
            e503: Switch::start("e503"),
            shadow: Switch::start("shadow"),
        })
        .unwrap();
    b.e500.set_status(500);
    b.e503.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "metrics").unwrap();
    let cert = ca.leaf("ok", &["ok.test"]).unwrap();
    let iface = topo.node_client_iface(1);
    let args = ["--iface", iface.as_str(), "--xdp-mode", "skb"];
    let yaml = config(&b, &cert, topo.client_addr_v4(1).into());
    let admin: SocketAddr = "127.0.0.1:9900".parse().unwrap();
    let lb = Lb::start(&lb_bin(), Some(&topo.node), &yaml, admin, &args).unwrap();
    let node = SocketAddr::new(topo.node_addr_v4(0).into(), HTTP);
    let m = |name: &str, labels: &[(&str, &str)]| metric_sum(&lb.metrics().unwrap(), name, labels);
    let dead = [("cluster", "down"), ("endpoint", "dead"), ("state", "down")];
    assert!(
        wait_until(T, || m("lb_endpoint_state", &dead) == 1.0),
        "{}",
        lb.log()
    );

    // Known traffic; each burst is one client connection.
    let ok_bytes = burst(&topo, node, "GET", "ok.test", N_OK, 200);
    assert_eq!(ok_bytes, (N_OK * "ok".len()) as u64);
    burst(&topo, node, "DELETE", "ok.test", 1, 200);
    burst(&topo, node, "GET", "e500.test", N_500, 500);
    burst(&topo, node, "GET", "retry.test", N_RETRY, 503);
    burst(&topo, node, "GET", "down.test", N_DOWN, 503);
    burst(&topo, node, "GET", "nowhere.test", N_404, 404);
    tls_traffic(&topo, SocketAddr::new(node.ip(), HTTPS), &ca.pem_path);
    // Denied: exactly DATAGRAMS packets from client 1, dropped by XDP before anything else.
    let target = SocketAddr::new(topo.node_addr_v4(1).into(), 9999);
    topo.clients[1]
        .run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..DATAGRAMS {
                s.send_to(&[i as u8; 16], target).unwrap();
            }
        })
        .unwrap();

    // Counters settle once every exchange has ended (duration and bytes count at the end).
    let route_done = [("route", "ok")];
    let settled = wait_until(T, || {
        m("lb_route_request_duration_seconds_count", &route_done) == ON_OK as f64
            && m("lb_xdp_packets_total", &[("reason", "deny_v4")]) >= DATAGRAMS as f64
            && m("lb_mirror_requests_total", &[("result", "2xx")]) == MIRRORED as f64
    });
    let text = lb.metrics().unwrap();
    assert!(settled, "counters did not settle:\n{text}");
    let v = |name: &str, labels: &[(&str, &str)]| metric_sum(&text, name, labels);
    let code = |c: &str| v("lb_http_responses_total", &[("code", c)]);
    // Top level: exact codes tell a 500 from a 503.
    assert_eq!(
        code("200"),
        ON_OK as f64,
        "GETs, the DELETE and the TLS request"
    );
    assert_eq!(code("500"), N_500 as f64);
    assert_eq!(code("503"), (N_RETRY + N_DOWN) as f64);
    assert_eq!(code("404"), N_404 as f64);
    assert_eq!(v("lb_http_unrouted_requests_total", &[]), N_404 as f64);
    // Route level: method and status classes, bytes, durations.
    let route = |r: &str, method: &str, class: &str| {
        v(
            "lb_route_requests_total",
            &[("route", r), ("method", method), ("class", class)],
        )
    };
    assert_eq!(route("ok", "read", "2xx"), (N_OK + 1) as f64);
    assert_eq!(route("ok", "write", "2xx"), 1.0);
    assert_eq!(route("e500", "read", "5xx"), N_500 as f64);
    assert_eq!(route("retry", "read", "5xx"), N_RETRY as f64);
    assert_eq!(route("down", "read", "5xx"), N_DOWN as f64);
    assert_eq!(
        v("lb_route_response_bytes_total", &route_done),
        ok_bytes as f64 + 4.0
    );
    assert_eq!(v("lb_route_request_bytes_total", &route_done), 0.0);
    let le = |b: &str| {
        v(
            "lb_route_request_duration_seconds_bucket",
            &[("route", "ok"), ("le", b)],
        )
    };
    assert_eq!(le("+Inf"), ON_OK as f64);
    // Cluster and endpoint level: classes, errors by source, retries, the down endpoint.
    let cluster = |c: &str, class: &str| {
        v(
            "lb_cluster_requests_total",
            &[("cluster", c), ("class", class)],
        )
    };
    assert_eq!(cluster("ok", "2xx"), ON_OK as f64);
    assert_eq!(cluster("shadow", "2xx"), MIRRORED as f64, "mirror copies");
    assert_eq!(cluster("e500", "5xx"), N_500 as f64);
    assert_eq!(cluster("retry", "5xx"), N_RETRY as f64);
    assert_eq!(cluster("down", "5xx"), N_DOWN as f64);
    let errors = |c: &str, s: &str| v("lb_cluster_errors_total", &[("cluster", c), ("source", s)]);
    assert_eq!(
        errors("e500", "upstream"),
        0.0,
        "a 500 from the endpoint is no proxy error"
    );
    assert_eq!(
        errors("down", "upstream"),
        N_DOWN as f64,
        "no endpoint available"
    );
    assert_eq!(
        v("lb_cluster_retries_total", &[("cluster", "retry")]),
        2.0 * N_RETRY as f64
    );
    assert_eq!(
        b.e503.requests(),
        3 * N_RETRY as u64,
        "three attempts per request"
    );
    let ep = |c: &str, e: &str, class: &str| {
        v(
            "lb_endpoint_requests_total",
            &[("cluster", c), ("endpoint", e), ("class", class)],
        )
    };
    assert_eq!(ep("e500", "e500", "5xx"), N_500 as f64);
    assert_eq!(ep("retry", "e503", "5xx"), N_RETRY as f64);
    assert_eq!(
        v(
            "lb_cluster_endpoints",
            &[("cluster", "down"), ("state", "down")]
        ),
        1.0
    );
    assert_eq!(v("lb_endpoint_state", &dead), 1.0);
    let went_down = [("cluster", "down"), ("endpoint", "dead"), ("state", "down")];
    assert_eq!(v("lb_endpoint_transitions_total", &went_down), 1.0);
    let failed = [("cluster", "down"), ("result", "failed")];
    assert!(v("lb_health_checks_total", &failed) >= 1.0);
    assert_eq!(
        v(
            "lb_mirror_requests_total",
            &[("route", "ok"), ("result", "2xx")]
        ),
        MIRRORED as f64
    );
    // Listeners: one connection per burst; TLS handshakes done and failed by reason.
    let bursts = 6.0;
    assert_eq!(
        v("lb_listener_connections_total", &[("listener", "http")]),
        bursts
    );
    assert_eq!(
        v("lb_listener_connections_total", &[("listener", "https")]),
        3.0
    );
    assert_eq!(
        v("lb_listener_tls_handshakes_total", &[("listener", "https")]),
        1.0
    );
    let tls_failed = |r: &str| {
        v(
            "lb_listener_tls_handshake_failures_total",
            &[("listener", "https"), ("reason", r)],
        )
    };
    assert_eq!(
        (tls_failed("bad_message"), tls_failed("protocol")),
        (1.0, 1.0),
        "{text}"
    );
    // XDP: exactly the datagrams sent, dropped for the deny-list.
    let deny = [("verdict", "drop"), ("reason", "deny_v4")];
    assert_eq!(v("lb_xdp_packets_total", &deny), DATAGRAMS as f64);
    assert_eq!(
        v("lb_xdp_bytes_total", &deny),
        (DATAGRAMS * (14 + 20 + 8 + 16)) as f64
    );

    // Every documented metric is in this scrape (XDP attached, TLS, mirror and checks on).
    let scraped = scraped_names(&text);
    let documented = documented_names();
    assert!(
        documented.len() >= 40,
        "docs/metrics.md lists only {documented:?}"
    );
    // Per-L4-service and per-worker series exist only with L4 services / `workers` > 1:
    // tests/tests/l4_e2e.rs, xdp_l4_maps.rs and reuseport.rs scrape those.
    let elsewhere = |n: &str| {
        n.starts_with("lb_l4_service_")
            || n.starts_with("lb_l4_endpoint_")
            || n.starts_with("lb_worker_")
    };
    let missing: Vec<_> = documented
        .into_iter()
        .filter(|n| !scraped.contains(n) && !elsewhere(n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exposed: {missing:?}"
    );
}

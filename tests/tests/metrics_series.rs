//! The real `lb` with 10k routes: /metrics has exactly the number of series docs/metrics.md's
//! formula gives, a scrape stays within its size budget, and both detail switches shrink it.

mod support;

use lb_tests::http;
use lb_tests::lb::{free_local_addr, metric_sum, Lb};
use lb_tests::lb_bin;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::admin::wait_until;
use support::certs::Ca;

const ROUTES: usize = 10_000;
const CLUSTERS: usize = 100;
const ENDPOINTS_PER_CLUSTER: usize = 2;
/// Routes with a mirror, and clusters with active health checks.
const MIRRORED: usize = 10;
const CHECKED: usize = 5;
/// Average bytes per sample line a scrape may use (names, labels and value included).
const BYTES_PER_SERIES: usize = 80;

struct Shape {
    listeners: usize,
    tls_listeners: usize,
    routes: usize,
    mirrored: usize,
    clusters: usize,
    endpoints: usize,
    checked_endpoints: usize,
    codes: usize,
}

/// docs/metrics.md: series = 13 + 2·A + K + 2·L + 6·T + 25·R + 8·M + 17·C + 17·E + 2·H (+ 2·X
/// with XDP; A = 1 consumer without XDP).
fn formula(s: &Shape) -> usize {
    13 + 2
        + s.codes
        + 2 * s.listeners
        + 6 * s.tls_listeners
        + 25 * s.routes
        + 8 * s.mirrored
        + 17 * s.clusters
        + 17 * s.endpoints
        + 2 * s.checked_endpoints
}

fn config(
    plain: SocketAddr,
    tls: SocketAddr,
    cert: &support::certs::Leaf,
    switches: &str,
) -> String {
    let mut y = format!(
        "listeners:\n  - {{name: http, address: \"{plain}\"}}\n  - {{name: https, address: \"{tls}\", tls: {{certificates: [{{cert: {:?}, key: {:?}}}]}}}}\n{switches}routes:\n",
        cert.cert, cert.key
    );
    for i in 0..ROUTES {
        let mirror = if i < MIRRORED {
            format!(", mirror: {{cluster: c{}, percent: 1}}", CLUSTERS - 1)
        } else {
            String::new()
        };
        y += &format!(
            "  - {{hosts: [h{i}.test], cluster: c{}{mirror}}}\n",
            i % CLUSTERS
        );
    }
    y += "clusters:\n";
    for c in 0..CLUSTERS {
        let health = if c < CHECKED {
            ", health: {active: {type: tcp, interval: 1s, timeout: 200ms}}"
        } else {
            ""
        };
        // Ports nothing listens on: requests get 503, checks fail (both counted, neither matters).
        let eps: Vec<String> = (0..ENDPOINTS_PER_CLUSTER)
            .map(|e| format!("{{address: \"127.0.0.1:{}\"}}", 9 + e))
            .collect();
        y += &format!(
            "  - {{name: c{c}, endpoints: [{}]{health}}}\n",
            eps.join(", ")
        );
    }
    y
}

/// One scrape over HTTP/1.0 (the answer ends when the connection closes), read whole: the
/// test client's body cap is far below 250k series. Bounded by a 60 s read timeout.
fn scrape(lb: &Lb) -> String {
    let mut s = TcpStream::connect_timeout(&lb.admin, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

fn reloads_ok(lb: &Lb) -> f64 {
    metric_sum(&scrape(lb), "lb_config_reloads_total", &[("result", "ok")])
}

/// Sample lines by metric family (name up to `{` or space), # lines excluded.
fn samples(text: &str) -> (usize, BTreeMap<String, usize>) {
    let mut by = BTreeMap::new();
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        n += 1;
        let name = line.split(['{', ' ']).next().unwrap_or("").to_string();
        *by.entry(name).or_insert(0) += 1;
    }
    (n, by)
}

#[test]
fn ten_thousand_routes_series_match_the_formula_within_the_size_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "series").unwrap();
    let cert = ca.leaf("site", &["h0.test"]).unwrap();
    let (plain, tls) = (free_local_addr(), free_local_addr());
    let yaml = config(plain, tls, &cert, "");
    let lb = Lb::start(&lb_bin(), None, &yaml, free_local_addr(), &[]).unwrap();
    // Two codes answered: a 404 (no route) and a 503 (no endpoint accepts connections).
    assert_eq!(
        http::get(plain, "nowhere.test", "/", Duration::from_secs(5))
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http::get(plain, "h1.test", "/", Duration::from_secs(5))
            .unwrap()
            .status,
        503
    );
    let shape = Shape {
        listeners: 2,
        tls_listeners: 1,
        routes: ROUTES,
        mirrored: MIRRORED,
        clusters: CLUSTERS,
        endpoints: CLUSTERS * ENDPOINTS_PER_CLUSTER,
        checked_endpoints: CHECKED * ENDPOINTS_PER_CLUSTER,
        codes: 2,
    };
    let text = scrape(&lb);
    let (n, by) = samples(&text);
    assert_eq!(n, formula(&shape), "series by family: {by:#?}");
    assert!(
        text.len() <= BYTES_PER_SERIES * n,
        "scrape of {} bytes for {n} series: over the budget of {BYTES_PER_SERIES} bytes/series",
        text.len()
    );
    eprintln!("10k routes: {n} series, {} bytes", text.len());

    // Both switches off: route and endpoint series go; the rest stays.
    let lean = config(
        plain,
        tls,
        &cert,
        "metrics: {route_labels: false, endpoint_labels: false}\n",
    );
    let before = reloads_ok(&lb);
    lb.reload(&lean).unwrap();
    let applied = wait_until(Duration::from_secs(60), || reloads_ok(&lb) > before);
    assert!(applied, "reload not applied:\n{}", lb.log());
    let text = scrape(&lb);
    let (n, by) = samples(&text);
    let lean_shape = Shape {
        routes: 0,
        endpoints: 0,
        checked_endpoints: 0,
        ..shape
    };
    assert_eq!(n, formula(&lean_shape), "series by family: {by:#?}");
    assert!(
        text.len() <= BYTES_PER_SERIES * n,
        "{} bytes for {n} series",
        text.len()
    );
    eprintln!("10k routes, lean: {n} series, {} bytes", text.len());
}

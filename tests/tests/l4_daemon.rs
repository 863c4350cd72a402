//! `lb run` with L4 services: the XDP apply path of the daemon (first snapshot, reloads, map
//! sizes fixed at start, the no-`--iface` warning) seen through /metrics and the log. No traffic
//! (the L4 packet paths are the XDP fixtures' and l4_e2e's job). Needs root.

use lb_tests::lb::{metric_sum, Lb};
use lb_tests::netns::Netns;
use lb_tests::{lb_bin, require_root};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn config(weight_b: u32, extra_l4: &str) -> String {
    format!(
        r#"
l4_services:
  - {{name: dns, vip: 10.96.0.10, port: 53, protocol: udp, cluster: dns, maglev_size: 1009}}
clusters:
  - name: dns
    endpoints:
      - {{address: "10.1.0.1:53", name: a}}
      - {{address: "10.1.0.2:53", name: b, weight: {weight_b}}}
xdp:
  l4: {{snat_v4: 10.0.0.2{extra_l4}}}
"#
    )
}

/// Polls the metrics until `ok` holds on them (bounded by `T`); returns the last text.
fn wait_metrics(lb: &Lb, ok: impl Fn(&str) -> bool) -> (bool, String) {
    let deadline = Instant::now() + T;
    loop {
        let text = lb.metrics().unwrap_or_default();
        if ok(&text) || Instant::now() >= deadline {
            return (ok(&text), text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn weight(text: &str, ep: &str) -> f64 {
    metric_sum(
        text,
        "lb_l4_endpoint_weight",
        &[("service", "dns"), ("endpoint", ep)],
    )
}

fn applied(text: &str) -> bool {
    let published = metric_sum(text, "lb_snapshot_published_version", &[]);
    let xdp = metric_sum(text, "lb_snapshot_applied_version", &[("consumer", "xdp")]);
    published > 0.0 && xdp == published
}

#[test]
fn lb_run_applies_l4_services_and_reloads_to_the_xdp_maps() {
    require_root();
    let ns = Netns::new(&format!("lbl4d{}", std::process::id())).unwrap();
    ns.ip(&["link", "add", "l4a", "type", "veth", "peer", "name", "l4b"])
        .unwrap();
    ns.ip(&["link", "set", "l4a", "up"]).unwrap();
    ns.ip(&["link", "set", "l4b", "up"]).unwrap();
    let admin: SocketAddr = "127.0.0.1:9900".parse().unwrap();
    let args = ["--iface", "l4a", "--xdp-mode", "skb"];
    let lb = Lb::start(&lb_bin(), Some(&ns), &config(1, ""), admin, &args).unwrap();

    let (ok, text) = wait_metrics(&lb, |t| applied(t) && weight(t, "b") == 1.0);
    assert!(ok, "first snapshot not applied:\n{text}\n{}", lb.log());
    assert_eq!(weight(&text, "a"), 1.0);
    assert_eq!(metric_sum(&text, "lb_l4_ring_slots_used", &[]), 1009.0);
    assert_eq!(metric_sum(&text, "lb_l4_flows", &[]), 0.0);
    let services = metric_sum(&text, "lb_l4_service_flows_total", &[("service", "dns")]);
    assert_eq!(services, 0.0);
    assert!(
        text.contains("lb_l4_service_flows_total{service=\"dns\"}"),
        "{text}"
    );
    assert!(lb.log().contains("XDP L4 services applied"), "{}", lb.log());

    // A weight change: one ring rewritten, applied by the XDP consumer, nothing failed.
    lb.reload(&config(3, "")).unwrap();
    let (ok, text) = wait_metrics(&lb, |t| applied(t) && weight(t, "b") == 3.0);
    assert!(ok, "reload not applied:\n{text}\n{}", lb.log());
    let failed = metric_sum(&text, "lb_config_reloads_total", &[("result", "failed")]);
    assert_eq!(failed, 0.0, "{}", lb.log());

    // Map sizes are fixed at start: the reload is served, the new size is a warning.
    lb.reload(&config(3, ", flows: 8192")).unwrap();
    lb.wait_log("maps keep their sizes until lb restarts", T)
        .unwrap();
    let (ok, text) = wait_metrics(&lb, applied);
    assert!(ok, "{text}");
    let status = lb.stop(T).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn without_an_interface_lb_warns_that_l4_services_are_not_served() {
    let admin = lb_tests::lb::free_local_addr();
    let lb = Lb::start(&lb_bin(), None, &config(1, ""), admin, &[]).unwrap();
    lb.wait_log("l4_services are set but no --iface was given", T)
        .unwrap();
    let text = lb.metrics().unwrap();
    assert!(!text.contains("lb_l4_"), "no XDP, no L4 series:\n{text}");
}

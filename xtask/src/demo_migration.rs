//! The demo's second act: migrating shop.demo from "onprem" to "cloud" with `lb ctl`
//! (0% → 1% → 2% → 5% → 25% → 100%), then cloud crashes and passive health takes it out.

use anyhow::Result;
use lb_tests::http::KeepAliveClient;
use lb_tests::lb::metric_sum;
use lb_tests::netns::Topology;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

pub const HOST: &str = "shop.demo";
pub const STEPS: [u32; 5] = [1, 2, 5, 25, 100];
const REQUESTS: usize = 202;

/// The route and cluster, appended to the demo's config: cloud starts at weight 0 via the API.
pub fn config(onprem: SocketAddr, cloud: SocketAddr) -> String {
    format!(
        "  - name: shop
    retries: {{attempts: 1, conditions: [connect_failure, reset, 503]}}
    health:
      passive: {{consecutive_errors: 3, cooldown: 5m, max_cooldown: 5m}}
    endpoints:
      - {{address: \"{onprem}\", name: onprem, weight: 100}}
      - {{address: \"{cloud}\", name: cloud, weight: 100}}
"
    )
}

pub struct Outcome {
    /// (percent, requests, answered by cloud)
    pub steps: Vec<(u32, usize, usize)>,
    /// After the crash: requests sent, answered 200, answered by onprem.
    pub crash: (usize, usize, usize),
    pub ctl_status: String,
}

fn ctl(topo: &Topology, lb_bin: &Path, admin: &str, args: &[&str]) -> Result<String> {
    let bin = lb_bin.to_string_lossy();
    let mut all = vec![bin.as_ref(), "ctl", "--admin", admin];
    all.extend_from_slice(args);
    topo.node.exec(&all)
}

fn burst(topo: &Topology, node: IpAddr, port: u16, n: usize) -> Result<BTreeMap<String, usize>> {
    topo.clients[0].run(move || -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        let mut c = KeepAliveClient::connect(SocketAddr::new(node, port), super::demo::TIMEOUT)?;
        for _ in 0..n {
            let r = c.get(HOST, "/")?;
            let who = match r.status {
                200 => r.header("x-backend").unwrap_or("?").to_string(),
                s => format!("status {s}"),
            };
            *counts.entry(who).or_insert(0) += 1;
        }
        Ok(counts)
    })?
}

/// Steps the weight, then stops the cloud backend (`crash`) and sends traffic again.
pub fn run(
    topo: &Topology,
    lb_bin: &Path,
    admin: &str,
    node: IpAddr,
    port: u16,
    cloud_name: &str,
    crash: impl FnOnce(),
) -> Result<Outcome> {
    ctl(topo, lb_bin, admin, &["set-weight", "shop", "cloud", "0"])?;
    let mut steps = Vec::new();
    for pct in STEPS {
        let out = ctl(
            topo,
            lb_bin,
            admin,
            &["set-weight", "shop", "cloud", &format!("{pct}%")],
        )?;
        eprintln!(
            "demo: lb ctl set-weight shop cloud {pct}%  ->  {}",
            out.trim()
        );
        let counts = burst(topo, node, port, REQUESTS)?;
        steps.push((pct, REQUESTS, counts.get(cloud_name).copied().unwrap_or(0)));
    }
    eprintln!("demo: stopping the cloud backend (a crash): connections to it are refused");
    crash();
    let counts = burst(topo, node, port, 100)?;
    let ok: usize = counts
        .iter()
        .filter(|(k, _)| !k.starts_with("status"))
        .map(|(_, v)| v)
        .sum();
    let onprem = counts
        .iter()
        .filter(|(k, _)| k.as_str() != cloud_name && !k.starts_with("status"))
        .map(|(_, v)| v)
        .sum();
    let ctl_status = ctl(topo, lb_bin, admin, &["status"])?;
    Ok(Outcome {
        steps,
        crash: (100, ok, onprem),
        ctl_status,
    })
}

pub fn report(o: &Outcome, metrics: &str) {
    println!(
        "\nMigration of {HOST} with lb ctl (onprem weight 100; cloud set to N% of its weight 100)"
    );
    println!(
        "  {:>7} {:>9} {:>7} {:>7} {:>9}",
        "cloud", "requests", "cloud", "share", "expected"
    );
    for (pct, n, cloud) in &o.steps {
        let expected = 100.0 * f64::from(*pct) / f64::from(100 + pct);
        println!(
            "  {:>6}% {n:>9} {cloud:>7} {:>6.1}% {expected:>8.1}%",
            pct,
            100.0 * *cloud as f64 / (*n).max(1) as f64
        );
    }
    let (n, ok, onprem) = o.crash;
    let ejections = metric_sum(
        metrics,
        "lb_endpoint_ejections_total",
        &[("cluster", "shop"), ("endpoint", "cloud")],
    );
    let retries = metric_sum(metrics, "lb_cluster_retries_total", &[("cluster", "shop")]);
    println!("\nCloud crashed: {ok} of {n} requests answered 200 ({onprem} by onprem); passive health ejected cloud {ejections} time(s), {retries} request(s) retried on onprem meanwhile");
    println!("\nlb ctl status");
    for line in o.ctl_status.lines() {
        println!("  {line}");
    }
}

//! `cargo xtask demo`: builds everything, runs `lb` with XDP on a node namespace between two
//! clients and three backends, sends a bounded burst of real requests, and prints what happened.

use anyhow::{bail, Context, Result};
use lb_tests::http::{self, Backend, KeepAliveClient};
use lb_tests::lb::{metric_sum, Lb};
use lb_tests::netns::{attach_xdp, Topology, TopologyOpts, PEER_IFACE};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

const PORT: u16 = 8080;
const ADMIN: &str = "127.0.0.1:9900";
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// One host of the demo: its cluster's endpoints (backend index, weight) and the requests sent.
struct Route {
    host: &'static str,
    cluster: &'static str,
    endpoints: &'static [(usize, u16)],
    requests: usize,
}

const PLAN: [Route; 2] = [
    Route {
        host: "web.demo",
        cluster: "web",
        endpoints: &[(0, 5), (1, 3), (2, 2)],
        requests: 200,
    },
    Route {
        host: "api.demo",
        cluster: "api",
        endpoints: &[(1, 1), (2, 1)],
        requests: 100,
    },
];
const BACKENDS: [&str; 3] = ["backend-1", "backend-2", "backend-3"];

/// The lb process and its scratch dir, so a Ctrl-C can stop and remove them too.
static LB_PID: AtomicU32 = AtomicU32::new(0);
static LB_DIR: OnceLock<PathBuf> = OnceLock::new();

pub fn run() -> Result<()> {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        bail!("the demo needs root: it creates network namespaces and attaches XDP");
    }
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: stopping lb and removing the demo's namespaces");
        let pid = LB_PID.load(Ordering::Relaxed);
        if pid != 0 {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        lb_tests::netns::delete_registered();
        if let Some(dir) = LB_DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    lb_tests::netns::cleanup_stale_topologies();

    crate::setup::run(false)?;
    let object = std::fs::read(crate::build::ebpf(true)?)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(
        Command::new(cargo)
            .current_dir(crate::root())
            .args(["build", "-q", "-p", "lb-user", "--bin", "lb"]),
    )?;
    let lb_bin = crate::target_dir().join("debug").join("lb");

    eprintln!("demo: creating namespaces (2 clients, node, backend) joined by veth");
    let topo = Topology::new(TopologyOpts { clients: 2 })?;
    let backends = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let addr = SocketAddr::new(topo.backend_addr_v4().into(), 8081 + i as u16);
            Backend::start(Some(&topo.backend), addr, name)
        })
        .collect::<Result<Vec<_>>>()?;
    // Native XDP on veth: the receiving peers carry a pass-through program.
    let _peers = topo
        .clients
        .iter()
        .map(|c| {
            attach_xdp(
                c,
                PEER_IFACE,
                &object,
                lb_common::PROG_XDP_PASS,
                aya::programs::XdpMode::Driver,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let denied = topo.client_addr_v4(1);
    let yaml = config(&backends, &format!("{denied}/32"));
    let ifaces = [topo.node_client_iface(0), topo.node_client_iface(1)];
    eprintln!(
        "demo: starting lb in the node namespace, XDP (native) on {} and {}",
        ifaces[0], ifaces[1]
    );
    let lb = Lb::start(
        &lb_bin,
        Some(&topo.node),
        &yaml,
        ADMIN.parse()?,
        &[
            "--iface",
            &ifaces[0],
            "--iface",
            &ifaces[1],
            "--xdp-mode",
            "native",
        ],
    )?;

    LB_PID.store(lb.pid().unwrap_or(0), Ordering::Relaxed);
    let _ = LB_DIR.set(lb.dir().to_path_buf());

    let node: IpAddr = topo.node_addr_v4(0).into();
    let mut by_host = BTreeMap::new();
    for Route {
        host, requests: n, ..
    } in PLAN
    {
        eprintln!(
            "demo: {n} requests for {host} from client {} (4 keep-alive connections)",
            topo.client_addr_v4(0)
        );
        by_host.insert(host, topo.clients[0].run(move || burst(node, host, n))??);
    }
    let denied_node: IpAddr = topo.node_addr_v4(1).into();
    let attempts = 3;
    eprintln!("demo: {attempts} requests from the deny-listed client {denied} (1 s timeout each)");
    let unanswered = topo.clients[1].run(move || {
        (0..attempts)
            .filter(|_| {
                http::get(
                    SocketAddr::new(denied_node, PORT),
                    "web.demo",
                    "/",
                    Duration::from_secs(1),
                )
                .is_err()
            })
            .count()
    })?;
    let mut backends = backends;
    let cloud = backends.pop();
    let migration =
        crate::demo_migration::run(&topo, &lb_bin, ADMIN, node, PORT, BACKENDS[2], move || {
            drop(cloud)
        })?;
    let metrics = lb.metrics()?;
    drop(lb);
    let l4 = crate::demo_l4::run(&lb_bin, &object)?;
    report(&by_host, &metrics, denied, unanswered, attempts);
    crate::demo_migration::report(&migration, &metrics);
    crate::demo_l4::report(&l4);
    next_steps();
    Ok(())
}

fn config(backends: &[Backend], deny: &str) -> String {
    let mut yaml = format!("listeners: [{{name: http, address: \"0.0.0.0:{PORT}\"}}]\nroutes:\n");
    for Route { host, cluster, .. } in PLAN {
        yaml.push_str(&format!("  - {{hosts: [{host}], cluster: {cluster}}}\n"));
    }
    let shop = crate::demo_migration::HOST;
    yaml.push_str(&format!("  - {{hosts: [{shop}], cluster: shop}}\n"));
    yaml.push_str("clusters:\n");
    for Route {
        cluster, endpoints, ..
    } in PLAN
    {
        yaml.push_str(&format!("  - name: {cluster}\n    endpoints:\n"));
        for (i, w) in endpoints {
            yaml.push_str(&format!(
                "      - {{address: \"{}\", weight: {w}}}\n",
                backends[*i].addr()
            ));
        }
    }
    yaml.push_str(&crate::demo_migration::config(
        backends[0].addr(),
        backends[2].addr(),
    ));
    yaml.push_str(&format!("xdp:\n  deny: [\"{deny}\"]\n"));
    yaml
}

/// `n` requests over 4 keep-alive connections; responses counted by the backend that answered.
fn burst(node: IpAddr, host: &str, n: usize) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for chunk in 0..4 {
        let mut c = KeepAliveClient::connect(SocketAddr::new(node, PORT), TIMEOUT)?;
        for _ in (chunk * n / 4)..((chunk + 1) * n / 4) {
            let r = c.get(host, "/")?;
            let who = match r.status {
                200 => r.header("x-backend").unwrap_or("?").to_string(),
                s => format!("status {s}"),
            };
            *counts.entry(who).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn report(
    by_host: &BTreeMap<&str, BTreeMap<String, usize>>,
    metrics: &str,
    denied: std::net::Ipv4Addr,
    unanswered: usize,
    attempts: usize,
) {
    println!("\nRequests by host and backend (smooth weighted round robin)");
    println!(
        "  {:<10} {:<10} {:>6} {:>9} {:>7} {:>9}",
        "host", "backend", "weight", "requests", "share", "expected"
    );
    for Route {
        host,
        endpoints: eps,
        ..
    } in PLAN
    {
        let counts = &by_host[host];
        let total: usize = counts.values().sum();
        let wsum: u16 = eps.iter().map(|(_, w)| w).sum();
        for (i, w) in eps {
            let got = counts.get(BACKENDS[*i]).copied().unwrap_or(0);
            println!(
                "  {:<10} {:<10} {:>6} {:>9} {:>6.1}% {:>8.1}%",
                host,
                BACKENDS[*i],
                w,
                got,
                100.0 * got as f64 / total.max(1) as f64,
                100.0 * f64::from(*w) / f64::from(wsum)
            );
        }
        for (who, n) in counts
            .iter()
            .filter(|(who, _)| !BACKENDS.contains(&who.as_str()))
        {
            println!("  {host:<10} {who:<10} {:>6} {n:>9}", "-");
        }
    }
    println!("\nDeny-listed client {denied}: {unanswered} of {attempts} requests got no answer (dropped by XDP)");

    println!("\nXDP counters (lb_xdp_packets_total / lb_xdp_bytes_total, summed over CPUs; non-zero only)");
    println!(
        "  {:<8} {:<20} {:>9} {:>10}",
        "verdict", "reason", "packets", "bytes"
    );
    for reason in lb_common::Reason::ALL {
        let labels = [
            ("verdict", reason.verdict().name()),
            ("reason", reason.name()),
        ];
        let packets = metric_sum(metrics, "lb_xdp_packets_total", &labels);
        if packets > 0.0 {
            let bytes = metric_sum(metrics, "lb_xdp_bytes_total", &labels);
            println!(
                "  {:<8} {:<20} {packets:>9} {bytes:>10}",
                labels[0].1, labels[1].1
            );
        }
    }

    println!("\nProxy counters (lb_endpoint_requests_total, non-zero only)");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("lb_endpoint_requests_total{"))
    {
        if line.rsplit_once(' ').is_some_and(|(_, v)| v != "0") {
            println!("  {line}");
        }
    }
}

fn next_steps() {
    println!("\nWhere to look next");
    println!("  README.md            what lb is, the architecture picture");
    println!("  docs/config.md       every config field, the CLI, every metric");
    println!("  docs/runtime-api.md  lb ctl, the runtime API, the /stats page");
    println!(
        "  examples/*.yaml      configs to start from (`lb check --config FILE` validates one)"
    );
    println!("  cargo xtask test     the full test suite (fixtures, proxy and netns end-to-end)");
    println!("  tests/tests/         how each behaviour above is tested\n");
}

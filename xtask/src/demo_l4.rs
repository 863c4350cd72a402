//! The demo's L4 part: a VIP served entirely in XDP (Maglev + connection table + full NAT) over
//! three backend namespaces; connections by weight, then one backend leaves while others stay.

use anyhow::{ensure, Context, Result};
use lb_tests::l4world::{who, Answerer, World, BACKENDS};
use lb_tests::lb::{metric_sum, Lb};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 300;
const DATAGRAMS: usize = 90;
const T: Duration = Duration::from_secs(3);
const ADMIN: &str = "127.0.0.1:9901";
const VIP: &str = "10.96.0.1";

fn config(weights: &[(usize, u32)]) -> String {
    let eps = |port: u16, set: &[(usize, u32)]| {
        set.iter()
            .map(|(k, w)| format!("{{address: \"10.81.{k}.2:{port}\", weight: {w}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<(usize, u32)> = (0..BACKENDS).map(|k| (k, 1)).collect();
    format!(
        "clusters:\n  - {{name: tcp-pods, endpoints: [{}]}}\n  - {{name: dns-pods, endpoints: [{}]}}\n\
         l4_services:\n  - {{name: web, vip: {VIP}, port: 80, protocol: tcp, cluster: tcp-pods}}\n\
         \x20 - {{name: dns, vip: {VIP}, port: 53, protocol: udp, cluster: dns-pods}}\n\
         xdp:\n  l4: {{snat_v4: 10.81.0.1, nat_ports: 20000-29999}}\n",
        eps(7000, weights),
        eps(7001, &all)
    )
}

/// What the L4 part saw, for the report.
pub struct L4Demo {
    by_backend: BTreeMap<String, usize>,
    udp: BTreeMap<String, usize>,
    kept: usize,
    moved: usize,
    moved_to_new: usize,
    metrics: String,
}

pub fn run(lb_bin: &Path, object: &[u8]) -> Result<L4Demo> {
    eprintln!(
        "demo: L4 — namespaces client, node and 3 backends; VIP {VIP}:80/tcp and :53/udp in XDP"
    );
    let world = World::new("demo");
    let _answerers: Vec<Answerer> = world
        .backends
        .iter()
        .enumerate()
        .map(|(k, ns)| Answerer::start(ns, &format!("pod-{k}"), 7000, 7001))
        .collect();
    let _peers = std::iter::once(&world.client)
        .chain(&world.backends)
        .map(|ns| {
            let mode = aya::programs::XdpMode::Driver;
            lb_tests::netns::attach_xdp(ns, "eth0", object, lb_common::PROG_XDP_PASS, mode)
        })
        .collect::<Result<Vec<_>>>()?;
    let ifaces = world.ifaces();
    let mut args: Vec<&str> = ifaces
        .iter()
        .flat_map(|i| ["--iface", i.as_str()])
        .collect();
    args.extend(["--xdp-mode", "native"]);
    let weights = [(0, 3), (1, 2), (2, 1)];
    let lb = Lb::start(
        lb_bin,
        Some(&world.node),
        &config(&weights),
        ADMIN.parse()?,
        &args,
    )?;

    eprintln!("demo: {CONNECTIONS} TCP connections to {VIP}:80 (weights 3:2:1), kept open");
    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    let mut conns = world.client.run(move || connect(vip, CONNECTIONS))??;
    let by_backend = tally(conns.iter().map(|c| c.1.clone()));
    eprintln!("demo: {DATAGRAMS} UDP flows to {VIP}:53");
    let udp = tally(world.client.run(|| datagrams(DATAGRAMS))??.into_iter());

    eprintln!("demo: pod-1 leaves the TCP service (reload); asking every open connection again");
    let before = metric_sum(
        &lb.metrics()?,
        "lb_snapshot_applied_version",
        &[("consumer", "xdp")],
    );
    lb.reload(&config(&[(0, 3), (2, 1)]))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(
        &lb.metrics()?,
        "lb_snapshot_applied_version",
        &[("consumer", "xdp")],
    ) <= before
    {
        ensure!(
            Instant::now() < deadline,
            "the reload was not applied to XDP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut kept, mut moved) = (0, 0);
    for (c, name) in conns.iter_mut() {
        match who(c, Duration::from_secs(2)) {
            Some(now) if now == *name => kept += 1,
            _ if name == "pod-1" => moved += 1,
            other => anyhow::bail!("a connection to {name} changed: {other:?}"),
        }
    }
    let fresh = world.client.run(move || connect(vip, 60))??;
    let moved_to_new = fresh.iter().filter(|c| c.1 != "pod-1").count();
    let metrics = lb.metrics()?;
    drop(conns);
    drop(fresh);
    Ok(L4Demo {
        by_backend,
        udp,
        kept,
        moved,
        moved_to_new,
        metrics,
    })
}

fn connect(vip: SocketAddr, n: usize) -> Result<Vec<(TcpStream, String)>> {
    (0..n)
        .map(|i| {
            let mut c =
                TcpStream::connect_timeout(&vip, T).with_context(|| format!("connection {i}"))?;
            let name = who(&mut c, T).with_context(|| format!("connection {i}: no answer"))?;
            Ok((c, name))
        })
        .collect()
}

fn datagrams(n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                s.send_to(b"who\n", format!("{VIP}:53"))?;
                if let Ok((len, _)) = s.recv_from(&mut buf) {
                    return Ok(String::from_utf8_lossy(&buf[..len]).trim().to_string());
                }
            }
            anyhow::bail!("UDP flow {i}: no answer")
        })
        .collect()
}

fn tally(names: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

pub fn report(d: &L4Demo) {
    println!("\nL4 service {VIP}:80/tcp in XDP (Maglev ring, connection table, full NAT)");
    println!(
        "  {:<8} {:>6} {:>12} {:>8}",
        "backend", "weight", "connections", "share"
    );
    for (k, w) in [(0, 3), (1, 2), (2, 1)] {
        let name = format!("pod-{k}");
        let n = d.by_backend.get(&name).copied().unwrap_or(0);
        let share = 100.0 * n as f64 / CONNECTIONS as f64;
        println!("  {name:<8} {w:>6} {n:>12} {share:>7.1}%");
    }
    let udp: Vec<String> = d.udp.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  UDP {VIP}:53, {DATAGRAMS} flows: {}", udp.join(", "));
    println!(
        "  pod-1 removed: {} connections kept their backend and answered, {} (pod-1's) were re-picked and reset; {} of 60 new connections avoided pod-1",
        d.kept, d.moved, d.moved_to_new
    );
    println!("  L4 counters (lb_l4_service_*, lb_xdp_packets_total for l4 reasons; non-zero only)");
    for line in d.metrics.lines().filter(|l| {
        (l.starts_with("lb_l4_service")
            || (l.starts_with("lb_xdp_packets_total") && l.contains("l4_")))
            && !l.ends_with(" 0")
    }) {
        println!("    {line}");
    }
}

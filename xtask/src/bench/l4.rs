//! Suite `l4`: forwarding through a node namespace (client -> node -> 3 backends) by lb's XDP L4
//! dataplane (native, SKB), iptables DNAT as kube-proxy writes it and HAProxy `mode tcp`.
//!
//! Each contender gets its own identical copy of the topology (so conntrack hooks, XDP programs
//! and local VIPs never meet), plus a routed reference without a load balancer ("direct").
//! Everything runs on CPU 1; the kernel does the forwarding in softirq on the sending CPU, so
//! the CPU numbers are that core's /proc/stat time, not any one process's.

use super::l4_load::{iperf3, short_exchanges, Cpu, CLIENT_THREADS};
use super::l4_peers::{start, xdp_counters, Contender, KINDS};
use super::l4_world::{Servers, World};
use super::{median, Env, SuiteResult};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// The core the whole topology (client, backends, HAProxy, lb, iperf3) runs on: the harness
/// pins itself there and every thread and child inherits it.
pub const WORLD_CPU: usize = 1;
const SHORT: &str = "short connections: connect, 100 B each way, close";
const BULK: &str = "bulk: iperf3 -P 4 through the VIP";
/// lb's two modes are compared with these two (indices into KINDS).
const LBS: [usize; 2] = [0, 1];
const PEERS: [usize; 2] = [2, 3];
/// The routed reference (index into KINDS).
const DIRECT: usize = 4;

pub fn run(env: &Env) -> Result<SuiteResult> {
    let object = std::fs::read(&env.object)?;
    let worlds = KINDS
        .iter()
        .map(|k| World::new(k.tag()))
        .collect::<Result<Vec<_>>>()?;
    let _servers = worlds
        .iter()
        .map(|w| w.start_servers(&env.scratch))
        .collect::<Result<Vec<Servers>>>()?;
    let contenders = KINDS
        .iter()
        .zip(&worlds)
        .map(|(k, w)| start(env, *k, w, &object))
        .collect::<Result<Vec<_>>>()?;
    let (short_dur, bulk_secs) = if env.quick {
        (Duration::from_secs(2), 2)
    } else {
        (Duration::from_secs(10), 10)
    };
    for c in &contenders {
        eprintln!("bench l4: warm-up {}", c.kind.name());
        short_exchanges(&c.world.client, &c.web, Duration::from_secs(1))?;
        iperf3(&c.world.client, c.bulk, 1, &env.scratch)?;
    }
    let mut result = SuiteResult::new("l4");
    let idle0 = cpu0_share(|| Ok(()), Duration::from_secs(1))?;
    let mut cpu0 = Vec::new();
    let (rate, cpu_conn) = measure_short(env, &contenders, short_dur, &mut result, &mut cpu0)?;
    let (gbit, cpu_gb) = measure_bulk(env, &contenders, bulk_secs, &mut result, &mut cpu0)?;
    for (scenario, metric, values, higher) in [
        (SHORT, "connection rate", &rate, true),
        (SHORT, "CPU per connection", &cpu_conn, false),
        (BULK, "throughput", &gbit, true),
        (BULK, "CPU per GB", &cpu_gb, false),
    ] {
        paired(&mut result, scenario, metric, values, higher);
    }
    let mut notes = notes(env, short_dur, bulk_secs);
    notes.push(format!(
        "CPU 0 (other tenants, not the topology) was {:.0}% busy during the runs (median; {:.0}% before them).",
        median(&cpu0) * 100.0,
        idle0 * 100.0
    ));
    for c in contenders.iter().filter(|c| c.lb.is_some()) {
        notes.push(xdp_counters(c)?);
    }
    result.notes = notes;
    Ok(result)
}

/// Contender order of repetition `r`: rotated, so nobody always runs first or last.
fn order(r: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + r) % n)
}

/// Busy share of CPU 0 while `f` runs (a check that the topology stayed on CPU 1, and of how
/// loaded the rest of the machine was).
fn cpu0_share(f: impl FnOnce() -> Result<()>, at_least: Duration) -> Result<f64> {
    let (t0, c0) = (Instant::now(), Cpu::read(0)?);
    f()?;
    std::thread::sleep(at_least.saturating_sub(t0.elapsed()));
    let wall = t0.elapsed().as_secs_f64().max(0.2);
    Ok(Cpu::read(0)?.since(c0).busy / wall)
}

type PerContender = Vec<Vec<f64>>;

fn measure_short(
    env: &Env,
    cs: &[Contender],
    dur: Duration,
    result: &mut SuiteResult,
    cpu0: &mut Vec<f64>,
) -> Result<(PerContender, PerContender)> {
    let n = cs.len();
    let [mut rate, mut p99, mut cpu, mut failed, mut process] =
        [(); 5].map(|_| vec![Vec::new(); n]);
    for r in 0..env.reps {
        for i in order(r, n) {
            let c = &cs[i];
            eprintln!(
                "bench l4: short connections, {} ({}/{})",
                c.kind.name(),
                r + 1,
                env.reps
            );
            let (before, proc0) = (Cpu::read(WORLD_CPU)?, c.process_cpu());
            let mut s = None;
            cpu0.push(cpu0_share(
                || {
                    s = Some(short_exchanges(&c.world.client, &c.web, dur)?);
                    Ok(())
                },
                Duration::ZERO,
            )?);
            let (s, used) = (s.context("no run")?, Cpu::read(WORLD_CPU)?.since(before));
            if s.ok == 0 || s.failed * 20 > s.ok {
                bail!(
                    "{}: {} exchanges failed, {} succeeded",
                    c.kind.name(),
                    s.failed,
                    s.ok
                );
            }
            rate[i].push(s.ok as f64 / s.secs);
            p99[i].push(super::l7::percentile(&s.lat_ms, 99.0));
            cpu[i].push(used.busy / s.ok as f64 * 1e6);
            if let (Some(a), Some(b)) = (proc0, c.process_cpu()) {
                process[i].push((b - a) / s.ok as f64 * 1e6);
            }
            failed[i].push(s.failed as f64);
        }
    }
    for (i, c) in cs.iter().enumerate() {
        let name = c.kind.name();
        result.push(
            SHORT,
            name,
            "connection rate",
            "conn/s",
            true,
            rate[i].clone(),
        );
        result.push(SHORT, name, "p99 latency", "ms", false, p99[i].clone());
        result.push(
            SHORT,
            name,
            "CPU per connection",
            "µs",
            false,
            cpu[i].clone(),
        );
        if i != DIRECT {
            let above = above(&cpu[i], &cpu[DIRECT]);
            result.push(
                SHORT,
                name,
                "CPU per connection above direct",
                "µs",
                false,
                above,
            );
        }
        result.push(
            SHORT,
            name,
            "failed connections",
            "count",
            false,
            failed[i].clone(),
        );
    }
    Ok((rate, cpu))
}

fn measure_bulk(
    env: &Env,
    cs: &[Contender],
    secs: u64,
    result: &mut SuiteResult,
    cpu0: &mut Vec<f64>,
) -> Result<(PerContender, PerContender)> {
    let n = cs.len();
    let [mut gbit, mut per_gb, mut sys_gb, mut per_pkt, mut pkts, mut retr, mut process] =
        [(); 7].map(|_| vec![Vec::new(); n]);
    for r in 0..env.reps {
        for i in order(r, n) {
            let c = &cs[i];
            eprintln!("bench l4: bulk, {} ({}/{})", c.kind.name(), r + 1, env.reps);
            let (before, p0) = (Cpu::read(WORLD_CPU)?, c.world.packets_into_node()?);
            let proc0 = c.process_cpu();
            let mut b = None;
            cpu0.push(cpu0_share(
                || {
                    b = Some(iperf3(&c.world.client, c.bulk, secs, &env.scratch)?);
                    Ok(())
                },
                Duration::ZERO,
            )?);
            let b = b.context("no run")?;
            let used = Cpu::read(WORLD_CPU)?.since(before);
            let packets = (c.world.packets_into_node()? - p0) as f64;
            let gb = b.bytes / 1e9;
            if gb <= 0.0 || packets <= 0.0 {
                bail!("{}: iperf3 moved no data", c.kind.name());
            }
            gbit[i].push(b.bytes * 8.0 / b.secs / 1e9);
            per_gb[i].push(used.busy / gb * 1e3);
            sys_gb[i].push(used.sys_softirq / gb * 1e3);
            per_pkt[i].push(used.busy / packets * 1e9);
            if let (Some(a), Some(b)) = (proc0, c.process_cpu()) {
                process[i].push((b - a) / gb * 1e3);
            }
            pkts[i].push(packets / gb / 1e3);
            retr[i].push(b.retransmits);
        }
    }
    for (i, c) in cs.iter().enumerate() {
        let name = c.kind.name();
        let mut row = |metric: &str, unit: &str, higher: bool, v: &[f64]| {
            result.push(BULK, name, metric, unit, higher, v.to_vec());
        };
        row("throughput", "Gbit/s", true, &gbit[i]);
        row("CPU per GB", "ms", false, &per_gb[i]);
        if i != DIRECT {
            row(
                "CPU per GB above direct",
                "ms",
                false,
                &above(&per_gb[i], &per_gb[DIRECT]),
            );
        }
        if !process[i].is_empty() {
            row("of which its own process", "ms", false, &process[i]);
        }
        row("sys+softirq per GB", "ms", false, &sys_gb[i]);
        row("packets into the node per GB", "k", false, &pkts[i]);
        row("CPU per packet", "ns", false, &per_pkt[i]);
        if i != DIRECT {
            let v = above(&per_pkt[i], &per_pkt[DIRECT]);
            row("CPU per packet above direct", "ns", false, &v);
        }
        row("TCP retransmits", "count", false, &retr[i]);
    }
    Ok((gbit, per_gb))
}

/// Per repetition, a contender's value minus the routed reference's: the load balancer's own
/// cost (client, backends and plain forwarding are in both).
fn above(v: &[f64], direct: &[f64]) -> Vec<f64> {
    v.iter().zip(direct).map(|(a, d)| a - d).collect()
}

/// Rows `paired ratio vs PEER: METRIC` on each lb contender: per repetition, lb's value over
/// the peer's from the same repetition (this machine's speed drifts between repetitions).
fn paired(result: &mut SuiteResult, scenario: &str, metric: &str, v: &PerContender, higher: bool) {
    for lb in LBS {
        for peer in PEERS {
            let ratios: Vec<f64> = v[lb]
                .iter()
                .zip(&v[peer])
                .filter(|(_, p)| **p > 0.0)
                .map(|(a, p)| a / p)
                .collect();
            let m = format!("paired ratio vs {}: {metric}", KINDS[peer].name());
            result.push(scenario, KINDS[lb].name(), &m, "×", higher, ratios);
        }
    }
}

fn notes(env: &Env, short: Duration, bulk: u64) -> Vec<String> {
    vec![
        "Topology per contender (identical copies, built once): client ns -veth- node ns -veth- 3 backend ns; the node \
         forwards (ip_forward=1). lb attaches its XDP program to the node's 4 veths (`lb run --iface ... --xdp-mode`); in \
         native mode the client's and backends' veth ends run lb_xdp_pass (a native redirect into a veth is delivered \
         only where the peer runs XDP). iptables: kube-proxy's nat chains (statistic-mode random spread over the 3 \
         backends, MASQUERADE to the node's address). HAProxy 2.6: nbthread 1, `mode tcp`, the VIP on the node's lo, \
         roundrobin. `direct`: the client connects to the backends' own addresses through the same node (routing only, \
         no load balancer): the floor. The client and backends send with `ethtool -K eth0 tx off` in every copy, as hosts \
         behind a real NIC send complete checksums and wire-sized segments (a native XDP redirect would forward veth's \
         never-completed CHECKSUM_PARTIAL checksums, which the receiver drops)."
            .into(),
        format!(
            "Short connections: {CLIENT_THREADS} client threads, each connect, send 100 B, read the 100 B reply, close \
             (the client closes first; tcp_tw_reuse=1 in the client and node namespaces), for {short:?} per repetition; \
             latency is connect to last reply byte. Backends answer from 16 blocking threads each."
        ),
        format!(
            "Bulk: `iperf3 -P 4 -t {bulk}` from the client to VIP:5201, a service with one endpoint (backend 0): iperf3's \
             control and data connections must reach the same server. Packets counted as the client's and backends' veth \
             ends handed them to the node (wire-sized: no GSO without tx checksum offload)."
        ),
        format!(
            "All namespaces, lb, HAProxy, iperf3, the client and backend threads run on CPU {WORLD_CPU}; the kernel \
             forwards in softirq on the sending CPU, so forwarding cost cannot be charged to a process. CPU numbers are \
             /proc/stat busy time (all but idle/iowait) of CPU {WORLD_CPU} over the run, divided by connections, GB or \
             packets: machine-level counters, so they include the client, the backends and anything else on that core. \
             `above direct`: per repetition, minus the routed reference's value (the load balancer's own cost); `of which \
             its own process`: user+system time of the lb daemon or HAProxy process (lb's is the user-space side only, \
             e.g. counting connection-table entries every 5 s)."
        ),
        format!(
            "{} repetitions per contender and workload, contender order rotated each repetition, after a 1 s warm-up; \
             medians shown. `paired ratio` rows: per repetition, lb's value over the peer's in the same repetition, then \
             the median (the machine's speed drifts between repetitions).",
            env.reps
        ),
        "Configs: bench/results/configs/l4-lb.yaml, l4-iptables.rules, l4-haproxy.cfg.".into(),
    ]
}

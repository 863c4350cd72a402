//! Suite `l4`: forwarding through a node namespace (client -> node -> 3 backends) by lb's XDP L4
//! dataplane (native, SKB), iptables DNAT as kube-proxy writes it and HAProxy `mode tcp`.
//!
//! Each contender gets its own identical copy of the topology (so conntrack hooks, XDP programs
//! and local VIPs never meet), plus a routed reference without a load balancer ("direct").
//! Everything runs on CPU 1; see `notes` for how CPU time is counted.

use super::l4_load::{iperf3, short_exchanges, Cpu, CLIENT_THREADS};
use super::l4_peers::{start, xdp_counters, Contender, KINDS};
use super::l4_world::{Servers, World};
use super::{median, Env, SuiteResult};
use anyhow::{bail, Result};
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
    let mut cpu0 = Vec::new();
    let short = measure_short(env, &contenders, short_dur, &mut cpu0)?;
    short.write(&mut result, SHORT, &["CPU per connection"]);
    let bulk = measure_bulk(env, &contenders, bulk_secs, &mut cpu0)?;
    bulk.write(&mut result, BULK, &["CPU per GB", "CPU per packet"]);
    for (t, scenario, metrics) in [
        (&short, SHORT, ["connection rate", "CPU per connection"]),
        (&bulk, BULK, ["throughput", "CPU per GB"]),
    ] {
        for m in metrics {
            t.paired(&mut result, scenario, m);
        }
    }
    let mut notes = notes(env, short_dur, bulk_secs);
    notes.push(format!(
        "CPU 0 (other tenants: the topology is on CPU {WORLD_CPU}) was {:.0}% busy during the runs (median).",
        median(&cpu0) * 100.0
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

/// CPU time used while contender `i` runs (see `notes`).
struct Used {
    /// Seconds: the harness's process tree and ksoftirqd, minus the other contenders' processes.
    own: f64,
    /// Seconds: CPU `WORLD_CPU`'s /proc/stat busy and system+softirq time.
    busy: f64,
    sys_softirq: f64,
    /// Seconds: the contender's own process (lb, HAProxy), if it has one.
    process: Option<f64>,
    /// Busy share of CPU 0 (other tenants).
    cpu0: f64,
}

struct Meter {
    t0: Instant,
    cpu: Cpu,
    cpu0: Cpu,
    others: f64,
    process: Option<f64>,
}

fn others(cs: &[Contender], i: usize) -> f64 {
    cs.iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, c)| c.process_cpu())
        .sum()
}

impl Meter {
    fn start(cs: &[Contender], i: usize) -> Result<Meter> {
        Ok(Meter {
            t0: Instant::now(),
            cpu: Cpu::read(WORLD_CPU)?,
            cpu0: Cpu::read(0)?,
            others: others(cs, i),
            process: cs[i].process_cpu(),
        })
    }

    fn stop(self, cs: &[Contender], i: usize) -> Result<Used> {
        let cpu = Cpu::read(WORLD_CPU)?.since(self.cpu);
        let wall = self.t0.elapsed().as_secs_f64().max(1e-3);
        Ok(Used {
            own: cpu.own - (others(cs, i) - self.others),
            busy: cpu.busy,
            sys_softirq: cpu.sys_softirq,
            process: self.process.zip(cs[i].process_cpu()).map(|(a, b)| b - a),
            cpu0: Cpu::read(0)?.since(self.cpu0).busy / wall,
        })
    }
}

/// Samples per metric and contender, in the order metrics were first added.
struct Table {
    n: usize,
    metrics: Vec<(&'static str, &'static str, bool, Vec<Vec<f64>>)>,
}

impl Table {
    fn new(n: usize) -> Table {
        Table {
            n,
            metrics: Vec::new(),
        }
    }

    fn add(&mut self, metric: &'static str, unit: &'static str, higher: bool, i: usize, v: f64) {
        let at = match self.metrics.iter().position(|m| m.0 == metric) {
            Some(at) => at,
            None => {
                self.metrics
                    .push((metric, unit, higher, vec![Vec::new(); self.n]));
                self.metrics.len() - 1
            }
        };
        self.metrics[at].3[i].push(v);
    }

    fn get(&self, metric: &str) -> Option<&Vec<Vec<f64>>> {
        self.metrics.iter().find(|m| m.0 == metric).map(|m| &m.3)
    }

    /// One row per contender and metric; `above` metrics also get `METRIC above direct`: per
    /// repetition, minus the routed reference's value (what the load balancer adds).
    fn write(&self, result: &mut SuiteResult, scenario: &str, above: &[&str]) {
        for (i, kind) in KINDS.iter().enumerate() {
            for (metric, unit, higher, v) in &self.metrics {
                if v[i].is_empty() {
                    continue;
                }
                result.push(scenario, kind.name(), metric, unit, *higher, v[i].clone());
                if above.contains(metric) && i != DIRECT {
                    let d: Vec<f64> = v[i].iter().zip(&v[DIRECT]).map(|(a, d)| a - d).collect();
                    let m = format!("{metric} above direct");
                    result.push(scenario, kind.name(), &m, unit, *higher, d);
                }
            }
        }
    }

    /// Rows `paired ratio vs PEER: METRIC` on each lb contender: per repetition, lb's value
    /// over the peer's in the same repetition (this machine's speed drifts between them).
    fn paired(&self, result: &mut SuiteResult, scenario: &str, metric: &str) {
        let (Some(v), Some(higher)) = (
            self.get(metric),
            self.metrics.iter().find(|m| m.0 == metric).map(|m| m.2),
        ) else {
            return;
        };
        for lb in LBS {
            for peer in PEERS {
                let ratios = super::paired(&v[lb], &v[peer]);
                let m = format!("paired ratio vs {}: {metric}", KINDS[peer].name());
                result.push(scenario, KINDS[lb].name(), &m, "×", higher, ratios);
            }
        }
    }
}

fn measure_short(env: &Env, cs: &[Contender], dur: Duration, cpu0: &mut Vec<f64>) -> Result<Table> {
    let mut t = Table::new(cs.len());
    for r in 0..env.reps {
        for i in order(r, cs.len()) {
            let c = &cs[i];
            eprintln!(
                "bench l4: short connections, {} ({}/{})",
                c.kind.name(),
                r + 1,
                env.reps
            );
            let meter = Meter::start(cs, i)?;
            let s = short_exchanges(&c.world.client, &c.web, dur)?;
            let used = meter.stop(cs, i)?;
            if s.ok == 0 || s.failed * 20 > s.ok {
                bail!(
                    "{}: {} exchanges failed, {} succeeded",
                    c.kind.name(),
                    s.failed,
                    s.ok
                );
            }
            let per = |sec: f64| sec / s.ok as f64 * 1e6;
            cpu0.push(used.cpu0);
            t.add("connection rate", "conn/s", true, i, s.ok as f64 / s.secs);
            t.add(
                "p99 latency",
                "ms",
                false,
                i,
                super::l7::percentile(&s.lat_ms, 99.0),
            );
            t.add("CPU per connection", "µs", false, i, per(used.own));
            if let Some(p) = used.process {
                t.add("of which its own process", "µs", false, i, per(p));
            }
            t.add("CPU 1 busy per connection", "µs", false, i, per(used.busy));
            t.add("failed connections", "count", false, i, s.failed as f64);
        }
    }
    Ok(t)
}

fn measure_bulk(env: &Env, cs: &[Contender], secs: u64, cpu0: &mut Vec<f64>) -> Result<Table> {
    let mut t = Table::new(cs.len());
    for r in 0..env.reps {
        for i in order(r, cs.len()) {
            let c = &cs[i];
            eprintln!("bench l4: bulk, {} ({}/{})", c.kind.name(), r + 1, env.reps);
            let p0 = c.world.packets_into_node()?;
            let meter = Meter::start(cs, i)?;
            let b = iperf3(&c.world.client, c.bulk, secs, &env.scratch)?;
            let used = meter.stop(cs, i)?;
            let packets = (c.world.packets_into_node()? - p0) as f64;
            let gb = b.bytes / 1e9;
            if gb <= 0.0 || packets <= 0.0 {
                bail!("{}: iperf3 moved no data", c.kind.name());
            }
            cpu0.push(used.cpu0);
            t.add(
                "throughput",
                "Gbit/s",
                true,
                i,
                b.bytes * 8.0 / b.secs / 1e9,
            );
            t.add("CPU per GB", "ms", false, i, used.own / gb * 1e3);
            if let Some(p) = used.process {
                t.add("of which its own process", "ms", false, i, p / gb * 1e3);
            }
            t.add("CPU per packet", "ns", false, i, used.own / packets * 1e9);
            t.add("CPU 1 busy per GB", "ms", false, i, used.busy / gb * 1e3);
            t.add(
                "CPU 1 sys+softirq per GB",
                "ms",
                false,
                i,
                used.sys_softirq / gb * 1e3,
            );
            t.add(
                "packets into the node per GB",
                "k",
                false,
                i,
                packets / gb / 1e3,
            );
            t.add("TCP retransmits", "count", false, i, b.retransmits);
        }
    }
    Ok(t)
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
            "All namespaces, lb, HAProxy, iperf3, the client and backend threads run on CPU {WORLD_CPU}. The kernel \
             forwards in softirq, which no per-process counter isolates, so `CPU per ...` is the CPU time of everything \
             the run consists of: this harness's process tree (client and backend threads, the contender's lb or HAProxy, \
             iperf3) plus the ksoftirqd threads. Tick accounting charges softirq work to the task it interrupts, and veth \
             forwarding runs inline in the sending thread, so forwarding lands in that sum; other contenders' idle \
             processes are subtracted. `CPU {WORLD_CPU} busy` rows are that core's /proc/stat busy time (all but \
             idle/iowait), the machine-level counter, which also holds other tenants' work. `above direct`: per \
             repetition, minus the routed reference's value (what the load balancer adds); `of which its own process`: \
             user+system time of the lb daemon or HAProxy process (lb's is its user-space side, e.g. counting \
             connection-table entries every 5 s)."
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

//! Load for the `l4` suite, generated inside the client namespace: short TCP exchanges from
//! bounded client threads, iperf3 bulk transfers, and /proc/stat CPU time around each run.

use super::l4_world::MESSAGE;
use super::proc::cpu_seconds;
use anyhow::{bail, Context, Result};
use lb_tests::netns::Netns;
use lb_tests::process::ChildGuard;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Client threads of the short-connection workload.
pub const CLIENT_THREADS: usize = 16;
/// Upper bound of exchanges per thread and run (whatever the duration).
const MAX_PER_THREAD: usize = 400_000;
/// A thread gives up after this many failed exchanges (a broken setup, not a result).
const MAX_FAILED: u64 = 1_000;
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// One run of short exchanges.
pub struct Short {
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
    /// Connect + request + reply time of every successful exchange, ms.
    pub lat_ms: Vec<f64>,
}

/// `CLIENT_THREADS` threads in `client`, each: connect, send 100 B, read the 100 B reply,
/// close; repeated until `dur` passes. Thread i starts at `targets[i % len]` and cycles.
pub fn short_exchanges(client: &Netns, targets: &[SocketAddr], dur: Duration) -> Result<Short> {
    let start = Instant::now();
    let deadline = start + dur;
    let handles: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let targets = targets.to_vec();
            client.spawn(move || {
                let mut lat = Vec::with_capacity(8192);
                let mut failed = 0u64;
                let mut i = t;
                while Instant::now() < deadline && lat.len() < MAX_PER_THREAD && failed < MAX_FAILED
                {
                    let addr = targets[i % targets.len()];
                    i += 1;
                    let t0 = Instant::now();
                    match exchange(addr) {
                        Ok(()) => lat.push(t0.elapsed().as_secs_f64() * 1e3),
                        Err(_) => failed += 1,
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut out = Short {
        ok: 0,
        failed: 0,
        secs: 0.0,
        lat_ms: Vec::new(),
    };
    for h in handles {
        let (lat, failed) = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        out.ok += lat.len() as u64;
        out.failed += failed;
        out.lat_ms.extend(lat);
    }
    out.secs = start.elapsed().as_secs_f64();
    out.lat_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

/// One exchange from inside `client`: did it work?
pub fn one_exchange(client: &Netns, addr: SocketAddr) -> Result<bool> {
    client.run(move || exchange(addr).is_ok())
}

fn exchange(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&[b'q'; MESSAGE])?;
    let mut buf = [0u8; MESSAGE];
    s.read_exact(&mut buf)
}

/// One iperf3 run.
pub struct Bulk {
    pub bytes: f64,
    pub secs: f64,
    pub retransmits: f64,
}

/// `iperf3 -c target -P 4 -t secs` from `client`, JSON report to a scratch file; bounded by
/// `secs` + 20 s.
pub fn iperf3(client: &Netns, target: SocketAddr, secs: u64, scratch: &Path) -> Result<Bulk> {
    let report = scratch.join(format!("{}-iperf3.json", client.name()));
    let file = std::fs::File::create(&report)?;
    let child = client
        .cmd("iperf3")
        .args([
            "-c",
            &target.ip().to_string(),
            "-p",
            &target.port().to_string(),
        ])
        .args(["-P", "4", "-t", &secs.to_string(), "-i", "0", "-J"])
        .args(["--connect-timeout", "3000"])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 (package iperf3)")?;
    let mut guard = ChildGuard(child);
    let status = guard
        .wait_timeout(Duration::from_secs(secs + 20))
        .with_context(|| format!("iperf3 to {target} did not finish within {secs} s + 20 s"))?;
    let text = std::fs::read_to_string(&report)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("iperf3 to {target} ({status}): output is not JSON"))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3 to {target}: {e}");
    }
    let end = &v["end"];
    let num = |x: &serde_json::Value, what: &str| {
        x.as_f64()
            .with_context(|| format!("iperf3 report without {what}"))
    };
    Ok(Bulk {
        bytes: num(&end["sum_received"]["bytes"], "end.sum_received.bytes")?,
        secs: num(&end["sum_received"]["seconds"], "end.sum_received.seconds")?,
        retransmits: end["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0),
    })
}

/// CPU seconds used so far, two ways: `own` counts this process tree (client and backend
/// threads, lb, HAProxy, iperf3; reaped children too) plus the ksoftirqd threads: tick
/// accounting charges softirq work to the task it interrupts, so packet forwarding lands on the
/// sending threads. `busy` and `sys_softirq` are CPU `cpu`'s /proc/stat counters (everything
/// on that core, other tenants' work included).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub own: f64,
    pub busy: f64,
    pub sys_softirq: f64,
}

impl Cpu {
    pub fn read(cpu: usize) -> Result<Cpu> {
        let text = std::fs::read_to_string("/proc/stat")?;
        let name = format!("cpu{cpu}");
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .with_context(|| format!("{name} missing from /proc/stat"))?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse::<f64>().unwrap_or(0.0) / tick())
            .collect();
        if f.len() < 8 {
            bail!("/proc/stat has fewer than 8 CPU time fields");
        }
        let me = std::process::id();
        let reaped = stat(me).map_or(0.0, |s| field(&s, 13) + field(&s, 14)) / tick();
        let softirqd: f64 = ksoftirqd().iter().map(|p| cpu_seconds(*p)).sum();
        Ok(Cpu {
            own: cpu_seconds(me) + reaped + softirqd,
            busy: f.iter().sum::<f64>() - f[3] - f[4],
            sys_softirq: f[2] + f[6],
        })
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            own: self.own - before.own,
            busy: self.busy - before.busy,
            sys_softirq: self.sys_softirq - before.sys_softirq,
        }
    }
}

fn tick() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// /proc/PID/stat fields after the command name (index 0 is field 3, `state`).
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn field(f: &[String], i: usize) -> f64 {
    f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// The per-CPU softirq threads (found once).
fn ksoftirqd() -> &'static [u32] {
    static PIDS: OnceLock<Vec<u32>> = OnceLock::new();
    PIDS.get_or_init(|| {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with("ksoftirqd/"))
            })
            .collect()
    })
}

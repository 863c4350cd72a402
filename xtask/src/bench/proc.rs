//! Processes under measurement: started pinned to one CPU, their CPU time and memory read from
//! /proc (the process and its children), readiness by polling; stopped when the guard drops.

use anyhow::{bail, Context, Result};
use lb_tests::process::ChildGuard;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pins the calling thread (and every thread it starts later) to `cpu`.
pub fn pin_self(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("sched_setaffinity")
}

/// Starts `program args...` pinned to `cpu` (taskset execs it: the pid is the program's).
pub fn spawn_pinned(cpu: usize, program: &Path, args: &[&str], log: &Path) -> Result<ChildGuard> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(ChildGuard(child))
}

/// `pid` and its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let stats: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse().ok()?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            stats
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// Fields of /proc/PID/stat after the command name (index 0 is field 3, `state`).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User + system CPU seconds used so far by `pid` and its children.
pub fn cpu_seconds(pid: u32) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    tree(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            t(11) + t(12)
        })
        .sum::<f64>()
        / tick
}

/// Resident memory (KiB) of `pid` and its children.
pub fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// Replaces `path` atomically (temp file + rename), as operators and kubelet update configs:
/// a reload never sees a half-written file.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming over {}", path.display()))
}

/// Polls `GET path` with `host` until it answers 200; returns how long that took.
pub fn wait_http(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if lb_tests::http::get(addr, host, path, Duration::from_millis(500))
            .is_ok_and(|r| r.status == 200)
        {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("{addr} (Host {host}, {path}) did not answer 200 within {timeout:?}")
}

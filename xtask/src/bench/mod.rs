//! `cargo xtask bench [SUITE...] [--quick]`: fair, same-run comparisons of `lb` against its peers
//! (HAProxy 2.6, nginx) on one machine; writes bench/results/*.json, plots and BENCHMARKS.md.

mod bolt;
mod control;
mod kube;
mod l4;
mod l4_load;
mod l4_peers;
mod l4_world;
mod l7;
mod origin;
mod pairing;
mod pgo;
mod proc;
mod reload;
mod report;
mod reuseport;
mod routes;
mod runtime;
mod scrape;
mod scraper;
mod wrk;
mod xdp;

pub use pairing::{paired, paired_order, rotated};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Suites that exist so far, in run order. Regex paths (routes), HTTP/2 (l7) and the runtime
/// API (reload) arrived with the L7 and health work, `l4` with the XDP L4 dataplane.
pub const SUITES: [&str; 9] = [
    "l7",
    "scrape",
    "routes",
    "reload",
    "xdp",
    "l4",
    "control",
    "kube",
    "reuseport",
];
const PEERS: [&str; 6] = [
    "haproxy",
    "nginx",
    "wrk",
    "util-linux",
    "iptables",
    "iperf3",
];

/// Where and how long to measure.
pub struct Env {
    pub lb: PathBuf,
    pub object: PathBuf,
    /// Results, plots and contender configs (committed after a full run).
    pub out: PathBuf,
    /// Logs, pid files, generated bodies (never committed).
    pub scratch: PathBuf,
    pub quick: bool,
    /// Alternating repetitions per measurement (A B C A B C ...).
    pub reps: usize,
    /// Length of one measured run.
    pub run: Duration,
}

/// One measured quantity of one contender in one scenario, over all repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub contender: String,
    pub metric: String,
    pub unit: String,
    /// True when more is better (req/s), false for latency, time and memory.
    pub higher_is_better: bool,
    pub samples: Vec<f64>,
    pub median: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteResult {
    pub suite: String,
    /// The command that regenerates this suite's numbers.
    pub command: String,
    pub rows: Vec<Row>,
    /// What the reader must know to interpret the numbers (setup, contenders, caveats).
    pub notes: Vec<String>,
}

impl SuiteResult {
    pub fn new(suite: &str) -> Self {
        SuiteResult {
            suite: suite.to_string(),
            command: format!("cargo xtask bench {suite}"),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        scenario: &str,
        contender: &str,
        metric: &str,
        unit: &str,
        higher_is_better: bool,
        samples: Vec<f64>,
    ) {
        self.rows.push(Row {
            scenario: scenario.into(),
            contender: contender.into(),
            metric: metric.into(),
            unit: unit.into(),
            higher_is_better,
            median: median(&samples),
            samples,
        });
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// `cargo xtask build-release`: the PGO release build on its own (deploy/Dockerfile).
pub fn release() -> Result<PathBuf> {
    if !is_root() {
        bail!("the PGO build needs root (nginx and wrk installed from Debian packages for its training load)");
    }
    crate::setup::run(false)?;
    install_peers()?;
    let object = crate::build::ebpf(true)?;
    let scratch = crate::root().join("target-bench/pgo");
    std::fs::create_dir_all(&scratch)?;
    let env = Env {
        lb: PathBuf::new(),
        object,
        out: scratch.clone(),
        scratch,
        quick: false,
        reps: 1,
        run: Duration::from_secs(1),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    pgo::build(&env, &cargo)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

pub fn run(suites: &[String], quick: bool) -> Result<()> {
    if !is_root() {
        bail!(
            "benchmarks need root (XDP test runs, pinning, peers installed from Debian packages)"
        );
    }
    for s in suites {
        if !SUITES.contains(&s.as_str()) {
            bail!("unknown suite {s:?}; suites: {}", SUITES.join(", "));
        }
    }
    let selected: Vec<&str> = if suites.is_empty() {
        SUITES.to_vec()
    } else {
        SUITES
            .iter()
            .copied()
            .filter(|s| suites.iter().any(|x| x == s))
            .collect()
    };
    if nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)?.unwrap_or(1) < 2 {
        bail!("benchmarks pin the proxy to CPU 0 and load + backends to CPU 1: they need 2 CPUs");
    }
    crate::setup::run(false)?;
    install_peers()?;
    let object = crate::build::ebpf(true)?;
    let root = crate::root();
    let (out, scratch) = if quick {
        (
            root.join("target-bench/quick"),
            root.join("target-bench/quick-scratch"),
        )
    } else {
        (
            root.join("bench/results"),
            root.join("target-bench/scratch"),
        )
    };
    for dir in [&out, &scratch] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut env = Env {
        lb: crate::target_dir().join("debug").join("lb"),
        object,
        out,
        scratch,
        quick,
        reps: if quick { 1 } else { 5 },
        run: if quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        },
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if quick {
        // Quick mode only proves the harness: it reuses the debug build `cargo xtask test` made.
        crate::run_cmd(
            Command::new(&cargo)
                .current_dir(&root)
                .args(["build", "-q", "-p", "lb-user", "--bin", "lb"]),
        )?;
    } else {
        // What an operator deploys (deploy/Dockerfile builds the same way): release, PGO, BOLT.
        env.lb = pgo::build(&env, &cargo)?;
    }
    // The harness itself (probe, load generator) lives on CPU 1; contenders pin themselves.
    proc::pin_self(1)?;
    for suite in &selected {
        eprintln!(
            "bench: suite {suite}{}",
            if quick { " (quick)" } else { "" }
        );
        let result = match *suite {
            "l7" => l7::run(&env)?,
            "scrape" => scrape::run(&env)?,
            "routes" => routes::run(&env)?,
            "reload" => reload::run(&env)?,
            "xdp" => xdp::run(&env)?,
            "l4" => l4::run(&env)?,
            "control" => control::run(&env)?,
            "reuseport" => reuseport::run(&env)?,
            "kube" => kube::run(&env)?,
            _ => unreachable!("checked above"),
        };
        let path = env.out.join(format!("{suite}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
        eprintln!("bench: wrote {}", path.display());
    }
    let md = if quick {
        env.out.join("BENCHMARKS.md")
    } else {
        root.join("BENCHMARKS.md")
    };
    report::write(&env, &md)?;
    eprintln!("bench: wrote {}", md.display());
    Ok(())
}

/// The peers, from Debian packages; their packaged services are stopped (we run our own).
fn install_peers() -> Result<()> {
    let missing: Vec<&str> = PEERS
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("bench: installing peers: {}", missing.join(" "));
        crate::run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        crate::run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    for service in ["nginx", "haproxy"] {
        let _ = Command::new("service").args([service, "stop"]).output();
    }
    Ok(())
}

/// The HAProxy config every suite shares: one thread, HTTP keep-alive on both sides, a
/// frontend on `bind` routed by `route`; the suite appends its backends.
pub fn haproxy_head(bind: &str, route: &str, extra_global: &str) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n{extra_global}\ndefaults\n  mode http\n  timeout connect 5s\n  \
         timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\n  option forwardfor\n\n\
         frontend fe\n  bind {bind}\n  {route}\n\n"
    )
}

/// Saves `conf` beside the results as `name` and writes the live copy; returns the live path.
pub fn live_config(env: &Env, name: &str, conf: &str) -> Result<String> {
    save_config(env, name, conf)?;
    let live = env.scratch.join(name);
    std::fs::write(&live, conf)?;
    Ok(live.display().to_string())
}

/// Saves a contender's exact config beside the results.
pub fn save_config(env: &Env, name: &str, text: &str) -> Result<PathBuf> {
    let dir = env.out.join("configs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Replaces the scratch directory path in a config so the saved copy is machine-independent.
pub fn portable(text: &str, scratch: &Path) -> String {
    text.replace(&scratch.display().to_string(), "$SCRATCH")
}

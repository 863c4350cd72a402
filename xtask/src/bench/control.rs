//! Suite `control`: the control plane at 1k and 10k Ingress-equivalent routes (a host, a cluster
//! of two endpoints): start-to-serving time, memory, and config change -> applied latency, for
//! `lb` (file + SIGHUP) and HAProxy (map file + master-worker seamless reload, SIGUSR2).

use super::proc::{rss_kib, spawn_pinned, wait_http, write_atomic};
use super::{haproxy_head, l7, save_config, Env, SuiteResult};
use anyhow::Result;
use lb_tests::process::ChildGuard;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LB: &str = "127.0.0.1:19011";
const HAPROXY: &str = "127.0.0.1:19012";
const TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(env: &Env) -> Result<SuiteResult> {
    let _origin = super::origin::start_origin(env)?;
    let sizes: &[usize] = if env.quick {
        &[1_000]
    } else {
        &[1_000, 10_000]
    };
    let changes = if env.quick { 3 } else { 10 };
    let mut result = SuiteResult::new("control");
    for &n in sizes {
        let scenario = format!("{n} routes");
        eprintln!("bench control: {scenario}");
        let mut start = [Vec::new(), Vec::new()];
        let mut rss = [Vec::new(), Vec::new()];
        let mut apply = [Vec::new(), Vec::new()];
        for rep in 0..env.reps {
            for (i, kind) in [Kind::Lb, Kind::Haproxy].into_iter().enumerate() {
                let mut c = Contestant::start(env, kind, n, rep == 0)?;
                start[i].push(c.ready.as_secs_f64() * 1e3);
                rss[i].push(rss_kib(c.process.id()) as f64 / 1024.0);
                for k in 0..changes {
                    apply[i].push(c.change(k)?.as_secs_f64() * 1e3);
                }
            }
        }
        for (i, name) in ["lb", "haproxy"].into_iter().enumerate() {
            result.push(
                &scenario,
                name,
                "start to serving",
                "ms",
                false,
                start[i].clone(),
            );
            result.push(
                &scenario,
                name,
                "resident memory",
                "MiB",
                false,
                rss[i].clone(),
            );
            result.push(
                &scenario,
                name,
                "change to applied, p50",
                "ms",
                false,
                apply[i].clone(),
            );
            let mut sorted = apply[i].clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let p99 = sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize];
            result.push(
                &scenario,
                name,
                "change to applied, p99",
                "ms",
                false,
                vec![p99],
            );
        }
    }
    result.notes = vec![
        "Each route: one host, one cluster (HAProxy: backend) of two endpoints, the second with weight 0.".into(),
        "Start to serving: process start until a request for the first host answers 200 (1 ms polling).".into(),
        format!(
            "Change to applied: a new host is added to the file, then lb gets SIGHUP / HAProxy's master gets SIGUSR2 \
             (seamless reload); measured until the new host answers 200. {changes} changes per repetition."
        ),
        "Both pinned to CPU 0; HAProxy runs master-worker (-W) so reloads keep the listening socket.".into(),
    ];
    Ok(result)
}

#[derive(Clone, Copy)]
enum Kind {
    Lb,
    Haproxy,
}

struct Contestant {
    kind: Kind,
    n: usize,
    process: ChildGuard,
    ready: Duration,
    config: PathBuf,
    log: PathBuf,
    /// Reloads HAProxy's master has completed ("Loading success." lines seen).
    loaded: usize,
}

impl Contestant {
    fn start(env: &Env, kind: Kind, n: usize, save: bool) -> Result<Self> {
        let (config, program, args, addr) = match kind {
            Kind::Lb => {
                let path = env.scratch.join("control-lb.yaml");
                std::fs::write(&path, lb_config(n, &[]))?;
                let p = path.display().to_string();
                let args = vec![
                    "run".into(),
                    "--config".into(),
                    p,
                    "--workers".into(),
                    "1".into(),
                    "--admin".into(),
                    "127.0.0.1:19911".into(),
                ];
                (path, env.lb.clone(), args, LB)
            }
            Kind::Haproxy => {
                let (cfg, map) = (
                    env.scratch.join("control-haproxy.cfg"),
                    env.scratch.join("control-hosts.map"),
                );
                std::fs::write(&cfg, haproxy_config(n, &map))?;
                std::fs::write(&map, haproxy_map(n, &[]))?;
                let args = vec![
                    "-W".into(),
                    "-db".into(),
                    "-f".into(),
                    cfg.display().to_string(),
                ];
                (map, PathBuf::from("/usr/sbin/haproxy"), args, HAPROXY)
            }
        };
        if save && n == 1_000 {
            match kind {
                Kind::Lb => save_config(env, "control-lb-1k.yaml", &lb_config(n, &[]))?,
                Kind::Haproxy => save_config(
                    env,
                    "control-haproxy-1k.cfg",
                    &haproxy_config(n, Path::new("$SCRATCH/control-hosts.map")),
                )?,
            };
        }
        let started = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = env.scratch.join(match kind {
            Kind::Lb => "control-lb.log",
            Kind::Haproxy => "control-haproxy.log",
        });
        let process = spawn_pinned(0, &program, &args, &log)?;
        wait_http(addr.parse()?, "app-0.bench", "/small", TIMEOUT)?;
        let ready = started.elapsed();
        let mut c = Contestant {
            kind,
            n,
            process,
            ready,
            config,
            log,
            loaded: 0,
        };
        c.settle()?;
        Ok(c)
    }

    /// Sends SIGUSR2 until the master logs "Reloading HAProxy" (it drops signals for a while
    /// after loading); returns when the signal that started the reload was sent.
    fn reload_haproxy(&self, pid: Pid, k: usize) -> Result<Instant> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let t = Instant::now();
            kill(pid, Signal::SIGUSR2)?;
            while t.elapsed() < Duration::from_millis(100) {
                let reexecs = std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .matches("Reloading HAProxy")
                    .count();
                if reexecs > k {
                    return Ok(t);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            anyhow::ensure!(Instant::now() < deadline, "HAProxy never reloaded");
        }
    }

    /// HAProxy's master drops a SIGUSR2 that arrives before it has finished (re)loading: wait
    /// for its "Loading success." line before the next change. lb is ready when it serves.
    fn settle(&mut self) -> Result<()> {
        if let Kind::Lb = self.kind {
            return Ok(());
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let seen = std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .matches("Loading success.")
                .count();
            if seen > self.loaded {
                self.loaded = seen;
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "HAProxy master never reported Loading success"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Adds host `probe-K.bench`, triggers a reload, returns the time until it is served.
    fn change(&mut self, k: usize) -> Result<Duration> {
        let probes: Vec<String> = (0..=k).map(|i| format!("probe-{i}.bench")).collect();
        let (text, addr): (String, SocketAddr) = match self.kind {
            Kind::Lb => (lb_config(self.n, &probes), LB.parse()?),
            Kind::Haproxy => (haproxy_map(self.n, &probes), HAPROXY.parse()?),
        };
        write_atomic(&self.config, &text)?;
        let pid = Pid::from_raw(self.process.id() as i32);
        let t = match self.kind {
            Kind::Lb => {
                let t = Instant::now();
                kill(pid, Signal::SIGHUP)?;
                t
            }
            Kind::Haproxy => self.reload_haproxy(pid, k)?,
        };
        wait_http(addr, &probes[k], "/small", TIMEOUT)?;
        let applied = t.elapsed();
        self.settle()?;
        Ok(applied)
    }
}

fn lb_config(n: usize, probes: &[String]) -> String {
    let mut s = format!(
        "access_log: {{format: off}}\nlisteners: [{{name: http, address: \"{LB}\"}}]\nroutes:\n"
    );
    for i in 0..n {
        let _ = writeln!(s, "  - {{hosts: [app-{i}.bench], cluster: c{i}}}");
    }
    for p in probes {
        let _ = writeln!(s, "  - {{hosts: [{p}], cluster: c0}}");
    }
    s.push_str("clusters:\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "  - {{name: c{i}, endpoints: [{{address: \"{}\"}}, {{address: \"127.0.0.1:{}\", weight: 0}}]}}",
            l7::ORIGIN,
            20000 + i % 40000
        );
    }
    s
}

fn haproxy_config(n: usize, map: &Path) -> String {
    let route = format!("use_backend %[req.hdr(host),lower,map({})]", map.display());
    let mut s = haproxy_head(HAPROXY, &route, "");
    for i in 0..n {
        let _ = writeln!(
            s,
            "backend c{i}\n  server s1 {}\n  server s2 127.0.0.1:{} weight 0\n",
            l7::ORIGIN,
            20000 + i % 40000
        );
    }
    s
}

fn haproxy_map(n: usize, probes: &[String]) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = writeln!(s, "app-{i}.bench c{i}");
    }
    for p in probes {
        let _ = writeln!(s, "{p} c0");
    }
    s
}

//! Runs the real `lb` binary (optionally inside a namespace) for end-to-end tests and the demo:
//! temp config, captured log, readiness via /readyz, SIGHUP reloads, SIGTERM stop, metrics.

use crate::http;
use crate::netns::Netns;
use crate::process::ChildGuard;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `lb run`; SIGTERMed (then killed) on drop.
pub struct Lb<'a> {
    child: Option<ChildGuard>,
    ns: Option<&'a Netns>,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl<'a> Lb<'a> {
    /// Starts `lb run --config <yaml> --admin <admin> EXTRA...` (inside `ns` if given) and waits
    /// until /readyz answers. `binary`: usually [`crate::lb_bin`].
    pub fn start(
        binary: &Path,
        ns: Option<&'a Netns>,
        yaml: &str,
        admin: SocketAddr,
        extra: &[&str],
    ) -> Result<Lb<'a>> {
        let dir = tempfile::Builder::new().prefix("lbt-").tempdir()?;
        let config = dir.path().join("lb.yaml");
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("lb.log"))?;
        let mut cmd = match ns {
            Some(ns) => ns.cmd(&binary.to_string_lossy()),
            None => Command::new(binary),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--admin")
            .arg(admin.to_string())
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("LB_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let mut lb = Lb {
            child: Some(ChildGuard(child)),
            ns,
            admin,
            dir,
        };
        lb.wait_ready()?;
        Ok(lb)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.0.try_wait().ok().flatten())
            {
                bail!("lb exited during startup ({status}); log:\n{}", self.log());
            }
            if self.admin_get("/readyz").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("lb not ready after {READY_TIMEOUT:?}; log:\n{}", self.log())
    }

    /// GET on the admin endpoint (from inside the namespace when there is one).
    pub fn admin_get(&self, path: &str) -> Result<http::Response> {
        let (admin, path) = (self.admin, path.to_string());
        let get = move || http::get(admin, "admin", &path, Duration::from_secs(2));
        match self.ns {
            Some(ns) => ns.run(get)?,
            None => get(),
        }
    }

    pub fn metrics(&self) -> Result<String> {
        Ok(self.admin_get("/metrics")?.text())
    }

    /// Sum of the samples of `name` whose labels include every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(metric_sum(&self.metrics()?, name, labels))
    }

    /// Rewrites the config file and sends SIGHUP.
    pub fn reload(&self, yaml: &str) -> Result<()> {
        std::fs::write(self.config_path(), yaml)?;
        self.signal(nix::sys::signal::Signal::SIGHUP)
    }

    /// The lb process id (for signal handlers that must stop it without the guard).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::id)
    }

    /// The temporary directory holding the config and the log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("lb.yaml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lb.log")).unwrap_or_default()
    }

    /// Polls until the log contains `needle`, up to `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "{needle:?} not logged within {timeout:?}; log:\n{}",
            self.log()
        )
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let child = self.child.as_ref().context("lb already stopped")?;
        // Under `ip netns exec` the pid is lb itself (ip execs it).
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, sig).context("signalling lb")
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status.
    pub fn stop(mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        let mut child = self.child.take().context("lb already stopped")?;
        child
            .wait_timeout(timeout)
            .with_context(|| format!("lb did not exit within {timeout:?}; log:\n{}", self.log()))
    }
}

/// A loopback address with a port that was free a moment ago, for a server the test starts
/// later. Taken from 10000–17999, below the kernel's ephemeral range and clear of the fixed
/// ports tests, benchmarks and L4 NAT ranges use: a port from `bind(":0")` is an ephemeral one,
/// and the test's own outgoing connections could take it before the server binds it (flaky
/// "Address already in use"). Each process walks its own sequence (seeded by pid), checking
/// that the port binds; the kernel's choice is the fallback.
pub fn free_local_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 10_000;
    const SPAN: u32 = 8_000;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = BASE + seed.wrapping_add(n) % SPAN;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// Sums Prometheus text samples of `name` whose label set contains every pair in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let text = "# HELP x\nlb_x_total{a=\"1\",b=\"2\"} 3\nlb_x_total{a=\"1\",b=\"3\"} 4\nlb_x_total{a=\"2\"} 10\nlb_y 7\n";
        assert_eq!(metric_sum(text, "lb_x_total", &[("a", "1")]), 7.0);
        assert_eq!(metric_sum(text, "lb_x_total", &[("b", "3")]), 4.0);
        assert_eq!(metric_sum(text, "lb_x_total", &[]), 17.0);
        assert_eq!(metric_sum(text, "lb_y", &[]), 7.0);
        assert_eq!(metric_sum(text, "lb_z", &[]), 0.0);
    }
}

//! Network namespaces for tests: named, registered (so a Ctrl-C handler can remove them all),
//! deleted on drop (panic included), with helpers to run code or commands inside them.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;
use std::thread::{self, JoinHandle};

static REGISTRY: Mutex<Vec<String>> = Mutex::new(Vec::new());
pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);

fn registry() -> std::sync::MutexGuard<'static, Vec<String>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{cmd:?} failed ({}): {}", out.status, err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run_cmd(Command::new("ip").args(args))
}

fn del_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Moves the calling thread into the network namespace behind `fd`.
fn enter(fd: &File) -> Result<()> {
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings `lo` up. Names: <= 30 chars of `[A-Za-z0-9._-]`.
    pub fn new(name: &str) -> Result<Netns> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if name.is_empty() || name.len() > 30 || !name.chars().all(ok) {
            bail!("bad namespace name {name:?}");
        }
        ip(&["netns", "add", name])?;
        registry().push(name.to_string());
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `ip netns exec NAME program`; add arguments with `.args(..)`.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
    /// Runs `args[0] args[1..]` inside the namespace; returns stdout, fails with stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        run_cmd(self.cmd(program).args(rest))
    }
    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }
    fn open(&self) -> Result<File> {
        let path = format!("/run/netns/{}", self.name);
        File::open(&path).with_context(|| format!("opening {path}"))
    }
    /// Runs `f` on a fresh thread inside the namespace (sockets it creates belong to the
    /// namespace and keep working from any thread). A panic in `f` is propagated.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.open()?;
        thread::scope(|s| {
            let h = s.spawn(move || -> Result<T> {
                enter(&fd)?;
                Ok(f())
            });
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
    /// Like `run` without joining.
    pub fn spawn<T, F>(&self, f: F) -> JoinHandle<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let fd = self.open();
        thread::spawn(move || {
            enter(&fd?)?;
            Ok(f())
        })
    }
    /// Runs `ip -n NAME -batch -` with one `ip` command per entry (stops at the first error).
    pub fn batch(&self, cmds: &[String]) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ip -batch")?;
        let input = cmds.join("\n") + "\n";
        let stdin = child.stdin.take();
        let written = stdin.map(|mut s| s.write_all(input.as_bytes()));
        let out = child.wait_with_output().context("waiting for ip -batch")?;
        if !out.status.success() || !matches!(written, Some(Ok(()))) {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("ip -n {} -batch: {} (in {cmds:?})", self.name, err.trim());
        }
        Ok(())
    }
    /// Writes a sysctl of this namespace, e.g. `("net/ipv4/ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("writing {path} in {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        del_netns(&self.name);
        registry().retain(|n| n != &self.name);
    }
}

/// Deletes every namespace created by `Netns::new` in this process that still exists
/// (for Ctrl-C handlers; call from a normal thread, not an async-signal context).
pub fn delete_registered() {
    let names = std::mem::take(&mut *registry());
    for name in names {
        del_netns(&name);
    }
}

fn list_netns() -> Vec<String> {
    let out = ip(&["netns", "list"]).unwrap_or_default();
    let first = |l: &str| l.split_whitespace().next().map(String::from);
    out.lines().filter_map(first).collect()
}

/// Deletes namespaces whose names start with `prefix` (leftovers of killed runs), except
/// those registered by this process. An empty prefix does nothing. Returns the count.
pub fn cleanup_stale(prefix: &str) -> usize {
    if prefix.is_empty() {
        return 0;
    }
    let ours = registry().clone();
    let stale = list_netns().into_iter().filter(|n| n.starts_with(prefix));
    let stale: Vec<String> = stale.filter(|n| !ours.contains(n)).collect();
    stale.iter().for_each(|n| del_netns(n));
    stale.len()
}

/// Deletes `lbt-{pid}-…` topology namespaces whose creating process no longer exists.
pub fn cleanup_stale_topologies() -> usize {
    let dead = |n: &String| match n.split('-').nth(1).map(str::parse::<u32>) {
        Some(Ok(pid)) => {
            n.starts_with("lbt-") && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    };
    let stale: Vec<String> = list_netns().into_iter().filter(dead).collect();
    stale.iter().for_each(|n| del_netns(n));
    stale.len()
}

pub use crate::process::ChildGuard;
pub use crate::topology::{Topology, TopologyOpts, PEER_IFACE};
pub use crate::xdp::{attach_xdp, XdpAttachment};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{IpAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// TCP echo of 4 bytes from client 0 to a listener on `ip` in the backend namespace.
    pub(crate) fn tcp_roundtrip(topo: &Topology, ip: IpAddr) {
        let listener = topo.backend.run(move || TcpListener::bind((ip, 0)));
        let listener = listener.unwrap().unwrap();
        let (addr, t) = (listener.local_addr().unwrap(), Duration::from_secs(5));
        let c = topo.clients[0].run(move || TcpStream::connect_timeout(&addr, t));
        let mut c = c.unwrap().unwrap();
        c.set_read_timeout(Some(t)).unwrap();
        c.write_all(b"ping").unwrap();
        listener.set_nonblocking(true).unwrap(); // the handshake is already done
        let (mut s, peer) = listener.accept().unwrap();
        let client: IpAddr = match ip {
            IpAddr::V4(_) => topo.client_addr_v4(0).into(),
            IpAddr::V6(_) => topo.client_addr_v6(0).into(),
        };
        assert_eq!(peer.ip(), client, "routed, not NATed");
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(t)).unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    #[test]
    fn topology_tcp_v4_v6_and_teardown() {
        crate::require_root();
        let topo = Topology::new(TopologyOpts::default()).unwrap();
        assert_eq!(topo.clients.len(), 2);
        let fwd = topo.node.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
        assert_eq!(fwd.unwrap().trim(), "1");
        let addrs = topo.clients[1]
            .ip(&["addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(addrs.contains("10.77.2.2/24") && addrs.contains("fd00:77:2::2/64"));
        tcp_roundtrip(&topo, topo.backend_addr_v4().into());
        tcp_roundtrip(&topo, topo.backend_addr_v6().into());
        let names: Vec<String> = topo.namespaces().map(|n| n.name().into()).collect();
        assert!(names.iter().all(|n| list_netns().contains(n)));
        drop(topo);
        assert!(names.iter().all(|n| !list_netns().contains(n)));
    }

    #[test]
    fn panic_unwind_cleans_up() {
        crate::require_root();
        let names = Mutex::new(Vec::new());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut topo = Topology::new(TopologyOpts { clients: 1 }).unwrap();
            let child = topo.backend.cmd("sleep").arg("30").spawn().unwrap();
            topo.adopt(child);
            let ns = topo.namespaces().map(|n| n.name().to_string());
            names.lock().unwrap().extend(ns);
            panic!("deliberate test panic");
        }));
        assert!(result.is_err());
        let names = names.into_inner().unwrap();
        assert_eq!(names.len(), 3);
        let listed = list_netns();
        assert!(names.iter().all(|n| !listed.contains(n)), "{listed:?}");
    }

    #[test]
    fn child_guard_terminates() {
        let mut guard = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
        assert!(guard.wait_timeout(Duration::from_millis(50)).is_none());
        let started = Instant::now();
        assert!(!guard.stop().unwrap().success());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn netns_registry_and_cleanup() {
        crate::require_root();
        let prefix = format!("lbt-{}-stale", std::process::id());
        let ns = Netns::new(&format!("{prefix}-x")).unwrap();
        let lo = ns.exec(&["ip", "-o", "link", "show", "lo"]).unwrap();
        assert!(lo.contains(",UP"), "{lo}");
        assert_eq!(cleanup_stale(&prefix), 0, "registered names are kept");
        ip(&["netns", "add", &format!("{prefix}-y")]).unwrap();
        assert_eq!(cleanup_stale(&prefix), 1);
        assert!(Netns::new("bad/name").is_err());
        ip(&["netns", "add", "lbt-999999999-0-n"]).unwrap(); // pid above pid_max: dead
        assert!(cleanup_stale_topologies() >= 1);
        assert!(!list_netns().contains(&"lbt-999999999-0-n".to_string()));
    }
}

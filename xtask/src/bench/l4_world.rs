//! The `l4` suite's topology, one identical copy per contender: client -> node -> 3 backend
//! namespaces over veths; backends answer short TCP exchanges, backend 0 also runs iperf3.

use anyhow::{bail, Context, Result};
use lb_tests::netns::Netns;
use lb_tests::process::ChildGuard;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const BACKENDS: usize = 3;
/// The service address every contender answers on (lb: XDP; iptables: DNAT; HAProxy: local).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Short exchanges: VIP:80 -> backend K:7000, all three backends.
pub const WEB_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 7000;
/// Bulk: VIP:5201 -> backend 0:5201 only (iperf3's control and data connections must all
/// reach the same server process).
pub const BULK_PORT: u16 = 5201;
/// Bytes of each request and each reply in the short exchanges.
pub const MESSAGE: usize = 100;
/// Blocking answerer threads per backend (as many as client threads: no server-side queueing).
pub const SERVER_THREADS: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// client eth0 10.80.0.2 - node vc 10.80.0.1 | node vbK 10.81.K.1 - backend K eth0 10.81.K.2.
pub struct World {
    pub node: Netns,
    pub client: Netns,
    pub backends: Vec<Netns>,
}

pub fn backend_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 81, k as u8, 2)
}

impl World {
    /// `tag`: one or two characters naming the copy (namespace names are `lbt-PID-TAGx`, so a
    /// killed run's leftovers go with `cargo xtask netns-clean`).
    pub fn new(tag: &str) -> Result<World> {
        let p = format!("lbt-{}-{tag}", std::process::id());
        let node = Netns::new(&format!("{p}n"))?;
        let client = Netns::new(&format!("{p}c"))?;
        let backends = (0..BACKENDS)
            .map(|k| Netns::new(&format!("{p}{k}")))
            .collect::<Result<Vec<_>>>()?;
        let mut cmds = vec![
            format!(
                "link add vc type veth peer name eth0 netns {}",
                client.name()
            ),
            "addr add 10.80.0.1/24 dev vc".into(),
            "link set vc up".into(),
        ];
        for (k, b) in backends.iter().enumerate() {
            cmds.extend([
                format!("link add vb{k} type veth peer name eth0 netns {}", b.name()),
                format!("addr add 10.81.{k}.1/24 dev vb{k}"),
                format!("link set vb{k} up"),
            ]);
        }
        node.batch(&cmds)?;
        let peer = |ns: &Netns, addr: String, gw: String| {
            ns.batch(&[
                format!("addr add {addr} dev eth0"),
                "link set eth0 up".into(),
                format!("route add default via {gw}"),
            ])
        };
        peer(&client, "10.80.0.2/24".into(), "10.80.0.1".into())?;
        for (k, b) in backends.iter().enumerate() {
            peer(b, format!("{}/24", backend_addr(k)), format!("10.81.{k}.1"))?;
        }
        // Veths leave TCP checksums to "hardware" (CHECKSUM_PARTIAL); a native XDP redirect
        // forwards raw bytes whose checksum was never completed, and the receiver drops them.
        // Hosts behind a real NIC send complete checksums and wire-sized segments: so do these
        // (for every contender: no GSO super-packets reach the node in any copy).
        for ns in std::iter::once(&client).chain(&backends) {
            ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        node.sysctl("net/ipv4/ip_forward", "1")?;
        // Short connections: the client closes first, so its TIME_WAIT ports are reused after
        // 1 s (as a busy client host would); HAProxy's node-side connects likewise.
        for ns in [&client, &node] {
            ns.sysctl("net/ipv4/tcp_tw_reuse", "1")?;
            ns.sysctl("net/ipv4/ip_local_port_range", "1024 65535")?;
        }
        Ok(World {
            node,
            client,
            backends,
        })
    }

    /// The node's interfaces (lb attaches XDP to all of them).
    pub fn node_ifaces() -> Vec<String> {
        std::iter::once("vc".to_string())
            .chain((0..BACKENDS).map(|k| format!("vb{k}")))
            .collect()
    }

    /// Every namespace's end of its veth to the node (client first), for peer XDP programs.
    pub fn peers(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.client).chain(&self.backends)
    }

    /// Packets the node received: client eth0 + backends' eth0 transmitted (skbs as the
    /// senders' stacks handed them to the veths; a GSO skb counts once).
    pub fn packets_into_node(&self) -> Result<u64> {
        self.peers().map(|ns| tx_packets(ns, "eth0")).sum()
    }

    /// Backends' answerers and backend 0's iperf3 server, stopped on drop.
    pub fn start_servers(&self, scratch: &Path) -> Result<Servers> {
        let answerers = self
            .backends
            .iter()
            .map(Answerer::start)
            .collect::<Result<Vec<_>>>()?;
        let log = std::fs::File::create(scratch.join(format!("{}-iperf3.log", self.node.name())))?;
        let iperf = self.backends[0]
            .cmd("iperf3")
            .args(["-s", "-p", &BULK_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting iperf3 -s (package iperf3)")?;
        Ok(Servers {
            _answerers: answerers,
            _iperf: ChildGuard(iperf),
        })
    }
}

/// `tx_packets` of `dev` as seen from inside `ns` (/proc/thread-self/net/dev).
fn tx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))??;
    let prefix = format!("{dev}:");
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("{dev} missing from {}'s /proc/net/dev", ns.name()))?;
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
    let fields: Vec<&str> = line[prefix.len()..].split_whitespace().collect();
    fields
        .get(9)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("tx_packets in {line:?}"))
}

pub struct Servers {
    _answerers: Vec<Answerer>,
    _iperf: ChildGuard,
}

/// A backend's short-exchange server: blocking threads sharing one listener; each reads the
/// request, writes the reply, then waits for the client's close. Stopped on drop.
struct Answerer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Answerer {
    fn start(ns: &Netns) -> Result<Answerer> {
        let addr = SocketAddr::from(([0, 0, 0, 0], BACKEND_PORT));
        let listener = Arc::new(ns.run(move || TcpListener::bind(addr))??);
        // accept() returns EAGAIN after this long, so the threads see the stop flag.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: a valid socket fd and a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..SERVER_THREADS)
            .map(|_| {
                let (l, stop) = (listener.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((s, _)) = l.accept() {
                            let _ = answer(s);
                        }
                    }
                })
            })
            .collect();
        Ok(Answerer { stop, threads })
    }
}

fn answer(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; MESSAGE];
    s.read_exact(&mut buf)?;
    s.write_all(&[b'a'; MESSAGE])?;
    // The client closes first (its TIME_WAIT, not ours); bounded by the read timeout.
    while s.read(&mut buf)? > 0 {}
    Ok(())
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

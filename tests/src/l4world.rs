//! The L4 world (tests and the demo): client, node and three backend namespaces over veths, and
//! backends that answer "who" on TCP (connections kept open) and on UDP with their name.

use crate::netns::Netns;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BACKENDS: usize = 3;

/// client (eth0 10.80.0.2, fd80::2) - node (vc 10.80.0.1, vbK 10.81.K.1) - backend K (10.81.K.2).
pub struct World {
    pub node: Netns,
    pub client: Netns,
    pub backends: Vec<Netns>,
}

impl World {
    pub fn new(tag: &str) -> World {
        let p = format!("lbl4e{tag}-{}", std::process::id());
        let node = Netns::new(&format!("{p}-n")).expect("netns");
        let client = Netns::new(&format!("{p}-c")).expect("netns");
        let backends: Vec<Netns> = (0..BACKENDS)
            .map(|k| Netns::new(&format!("{p}-b{k}")).expect("netns"))
            .collect();
        let mut cmds = vec![
            format!(
                "link add vc type veth peer name eth0 netns {}",
                client.name()
            ),
            "addr add 10.80.0.1/24 dev vc".into(),
            "addr add fd80::1/64 dev vc nodad".into(),
            "link set vc up".into(),
        ];
        for (k, b) in backends.iter().enumerate() {
            cmds.extend([
                format!("link add vb{k} type veth peer name eth0 netns {}", b.name()),
                format!("addr add 10.81.{k}.1/24 dev vb{k}"),
                format!("addr add fd81:{k}::1/64 dev vb{k} nodad"),
                format!("link set vb{k} up"),
            ]);
        }
        node.batch(&cmds).expect("node links");
        let peer = |ns: &Netns, v4: String, v6: String, gw4: String, gw6: String| {
            ns.batch(&[
                format!("addr add {v4} dev eth0"),
                format!("addr add {v6} dev eth0 nodad"),
                "link set eth0 up".into(),
                format!("route add default via {gw4}"),
                format!("route add default via {gw6}"),
            ])
            .expect("peer links")
        };
        peer(
            &client,
            "10.80.0.2/24".into(),
            "fd80::2/64".into(),
            "10.80.0.1".into(),
            "fd80::1".into(),
        );
        for (k, b) in backends.iter().enumerate() {
            peer(
                b,
                format!("10.81.{k}.2/24"),
                format!("fd81:{k}::2/64"),
                format!("10.81.{k}.1"),
                format!("fd81:{k}::1"),
            );
        }
        // Veths leave TCP/UDP checksums to "hardware" (CHECKSUM_PARTIAL). Native XDP turns a
        // frame into raw bytes and forwards it to another veth, where the receiver checks the
        // never-completed checksum and drops it; real NICs send complete checksums. So the test
        // hosts complete theirs, as a host behind a NIC does.
        for ns in std::iter::once(&client).chain(&backends) {
            ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])
                .expect("ethtool (cargo xtask setup installs it)");
        }
        node.sysctl("net/ipv4/ip_forward", "1").expect("forwarding");
        node.sysctl("net/ipv6/conf/all/forwarding", "1")
            .expect("forwarding");
        World {
            node,
            client,
            backends,
        }
    }

    pub fn ifaces(&self) -> Vec<String> {
        std::iter::once("vc".to_string())
            .chain((0..BACKENDS).map(|k| format!("vb{k}")))
            .collect()
    }
}

/// A backend's TCP and UDP answerers, stopped on drop.
pub struct Answerer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Answerer {
    /// In `ns`: TCP on `tcp` and UDP on `udp` (dual-stack wildcard), answering `name\n`.
    pub fn start(ns: &Netns, name: &str, tcp: u16, udp: u16) -> Answerer {
        let stop = Arc::new(AtomicBool::new(false));
        let t: SocketAddr = format!("[::]:{tcp}").parse().expect("addr");
        let l = ns
            .run(move || TcpListener::bind(t))
            .expect("in netns")
            .expect("listen");
        let u: SocketAddr = format!("[::]:{udp}").parse().expect("addr");
        let u = ns
            .run(move || UdpSocket::bind(u))
            .expect("in netns")
            .expect("udp");
        let (s1, n1) = (stop.clone(), name.to_string());
        let (s2, n2) = (stop.clone(), name.to_string());
        let threads = vec![
            std::thread::spawn(move || serve_tcp(l, &n1, &s1)),
            std::thread::spawn(move || serve_udp(u, &n2, &s2)),
        ];
        Answerer { stop, threads }
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One thread polls the listener and every connection; each readable chunk gets `name\n`.
fn serve_tcp(l: TcpListener, name: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    l.set_nonblocking(true)?;
    let mut conns: Vec<TcpStream> = Vec::new();
    let answer = format!("{name}\n");
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = vec![PollFd::new(l.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            conns
                .iter()
                .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)),
        );
        poll(&mut fds, PollTimeout::from(50u16))?;
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        let mut gone = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if !ready[i + 1] {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(_) => {
                    if c.write_all(answer.as_bytes()).is_err() {
                        gone.push(i);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            conns.swap_remove(i);
        }
        if ready[0] {
            while let Ok((c, _)) = l.accept() {
                c.set_nonblocking(true)?;
                conns.push(c);
            }
        }
    }
    Ok(())
}

fn serve_udp(u: UdpSocket, name: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    u.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(format!("{name}\n").as_bytes(), from);
        }
    }
    Ok(())
}

/// Asks an open connection who it is; `None` if it broke or stayed silent past `limit`.
pub fn who(c: &mut TcpStream, limit: Duration) -> Option<String> {
    c.set_read_timeout(Some(limit)).ok()?;
    c.write_all(b"who\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + limit;
    while !got.ends_with(b"\n") && Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let s = String::from_utf8(got).ok()?;
    s.strip_suffix('\n').map(str::to_string)
}

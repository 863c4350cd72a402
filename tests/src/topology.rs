//! A clients/node/backend veth topology in network namespaces, torn down on drop (panic
//! included) after the child processes it owns.
//!
//! Topology addressing (client `i` is 0-based, all IPv6 addresses `nodad`):
//! - client `i`: `eth0` 10.77.(i+1).2/24, fd00:77:(i+1)::2/64; default routes via the node.
//! - node side of client `i`: `vc{i}` 10.77.(i+1).1/24, fd00:77:(i+1)::1/64.
//! - backend: `eth0` 10.78.0.2/24, fd00:78::2/64; default routes via the node.
//! - node side of the backend: `vb0` 10.78.0.1/24, fd00:78::1/64.
//!
//! The node forwards IPv4 and IPv6. Namespaces are named `lbt-{pid}-{n}-{n|b|cI}`.

use crate::netns::{Netns, COUNTER};
use crate::process::ChildGuard;
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Child;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// Interface name of the client/backend side of each veth pair.
pub const PEER_IFACE: &str = "eth0";

/// Options for `Topology::new`.
#[derive(Clone, Debug)]
pub struct TopologyOpts {
    /// Number of client namespaces (1..=200).
    pub clients: usize,
}

impl Default for TopologyOpts {
    fn default() -> Self {
        TopologyOpts { clients: 2 }
    }
}

/// clients ⇄ node ⇄ backend over veth pairs; see the module docs for addressing.
/// Drop kills adopted children, then deletes all namespaces (also while unwinding).
#[derive(Debug)]
pub struct Topology {
    children: Vec<ChildGuard>,
    prefix: String,
    pub node: Netns,
    pub clients: Vec<Netns>,
    pub backend: Netns,
}

impl Topology {
    pub fn new(opts: TopologyOpts) -> Result<Topology> {
        if !(1..=200).contains(&opts.clients) {
            bail!("clients must be 1..=200, got {}", opts.clients);
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("lbt-{}-{n}", std::process::id());
        let node = Netns::new(&format!("{prefix}-n"))?;
        let backend = Netns::new(&format!("{prefix}-b"))?;
        let mut clients = Vec::with_capacity(opts.clients);
        for i in 0..opts.clients {
            clients.push(Netns::new(&format!("{prefix}-c{i}"))?);
        }
        let (children, name) = (Vec::new(), prefix.clone());
        let topo = Topology {
            children,
            prefix,
            node,
            clients,
            backend,
        };
        topo.setup()
            .with_context(|| format!("setting up topology {name}"))?;
        Ok(topo)
    }

    fn setup(&self) -> Result<()> {
        for ns in self.namespaces() {
            ns.sysctl("net/ipv6/conf/all/accept_dad", "0")?;
            ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
        }
        let clients = self.clients.iter().enumerate().map(|(i, c)| {
            let far = (self.client_addr_v4(i), self.client_addr_v6(i));
            (
                c,
                self.node_client_iface(i),
                (self.node_addr_v4(i), self.node_addr_v6(i)),
                far,
            )
        });
        let node = (self.node_backend_addr_v4(), self.node_backend_addr_v6());
        let far = (self.backend_addr_v4(), self.backend_addr_v6());
        let backend = (&self.backend, self.node_backend_iface(), node, far);
        let (mut node_cmds, mut peers) = (Vec::new(), Vec::new());
        for (peer, dev, (n4, n6), (p4, p6)) in clients.chain([backend]) {
            let peer_name = peer.name();
            node_cmds.extend([
                format!("link add {dev} type veth peer name {PEER_IFACE} netns {peer_name}"),
                format!("addr add {n4}/24 dev {dev}"),
                format!("addr add {n6}/64 dev {dev} nodad"),
                format!("link set {dev} up"),
            ]);
            let cmds = [
                format!("addr add {p4}/24 dev {PEER_IFACE}"),
                format!("addr add {p6}/64 dev {PEER_IFACE} nodad"),
                format!("link set {PEER_IFACE} up"),
                format!("route add default via {n4}"),
                format!("route add default via {n6}"),
            ];
            peers.push((peer, cmds));
        }
        self.node.batch(&node_cmds)?;
        for (peer, cmds) in peers {
            peer.batch(&cmds)?;
        }
        self.node.sysctl("net/ipv4/ip_forward", "1")?;
        self.node.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        self.wait_dad(Duration::from_secs(5))
    }

    fn wait_dad(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        for ns in self.namespaces() {
            loop {
                let tentative = ns.ip(&["-6", "addr", "show", "tentative"])?;
                if tentative.trim().is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("IPv6 addresses tentative in {}: {tentative}", ns.name());
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The node, the backend and every client namespace.
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        [&self.node, &self.backend].into_iter().chain(&self.clients)
    }
    /// The shared name prefix (`lbt-{pid}-{n}`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Takes ownership of a child process; it is stopped before namespaces are deleted.
    pub fn adopt(&mut self, child: Child) -> u32 {
        self.children.push(ChildGuard(child));
        self.children.last().map_or(0, ChildGuard::id)
    }
    pub fn client_addr_v4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, (i + 1) as u8, 2)
    }
    pub fn client_addr_v6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x77, (i + 1) as u16, 0, 0, 0, 0, 2)
    }
    /// Node side of client `i`'s link.
    pub fn node_addr_v4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, (i + 1) as u8, 1)
    }
    pub fn node_addr_v6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x77, (i + 1) as u16, 0, 0, 0, 0, 1)
    }
    pub fn backend_addr_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, 0, 2)
    }
    pub fn backend_addr_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 2)
    }
    /// Node side of the backend link.
    pub fn node_backend_addr_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, 0, 1)
    }
    pub fn node_backend_addr_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 1)
    }
    pub fn node_client_iface(&self, i: usize) -> String {
        format!("vc{i}")
    }
    pub fn node_backend_iface(&self) -> String {
        "vb0".to_string()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.children.clear(); // then the Netns fields delete the namespaces
    }
}

//! The L4 fixtures' world: a namespace whose FIB and neighbours are known (so bpf_fib_lookup
//! answers deterministically), frames described by address/port, and a runner in that namespace.
// Shared by two test binaries; each uses a different part.
#![allow(dead_code)]

use aya::programs::{TestRun, TestRunOptions, XdpMode};
use lb_common::{Reason, StatValue};
use lb_tests::netns::Netns;
use lb_tests::packet::Packet;
use lb_user::bpf::Dataplane;
use std::net::{IpAddr, SocketAddr};

/// Client side (ingress for client packets).
pub const LB0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa0];
/// Endpoint side.
pub const LB1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb0];

/// Neighbours: (address, interface, MAC). 10.1.0.99 deliberately has none.
pub const NEIGHBOURS: &[(&str, &str, [u8; 6])] = &[
    ("10.0.0.1", "lb0", [2, 0, 0, 0, 0x0c, 1]),
    ("10.0.0.3", "lb0", [2, 0, 0, 0, 0x0c, 3]),
    ("10.0.0.4", "lb0", [2, 0, 0, 0, 0x0c, 4]),
    ("10.0.0.20", "lb0", [2, 0, 0, 0, 0x0e, 0x20]),
    ("10.1.0.10", "lb1", [2, 0, 0, 0, 0x0e, 0x10]),
    ("10.1.0.11", "lb1", [2, 0, 0, 0, 0x0e, 0x11]),
    ("10.1.0.12", "lb1", [2, 0, 0, 0, 0x0e, 0x12]),
    ("10.1.0.13", "lb1", [2, 0, 0, 0, 0x0e, 0x13]),
    ("fd00::1", "lb0", [2, 0, 0, 0, 0x6c, 1]),
    ("fd01::10", "lb1", [2, 0, 0, 0, 0x6e, 0x10]),
    ("fd01::11", "lb1", [2, 0, 0, 0, 0x6e, 0x11]),
];

/// The MAC a neighbour answers with, and the interface it sits behind.
pub fn neighbour(addr: IpAddr) -> Option<([u8; 6], &'static str)> {
    NEIGHBOURS
        .iter()
        .find(|(a, _, _)| a.parse::<IpAddr>().ok() == Some(addr))
        .map(|(_, dev, mac)| (*mac, *dev))
}

/// One namespace, two veths in it (lb0: clients, lb1: endpoints), forwarding on.
pub struct World {
    pub ns: Netns,
    pub lb0: u32,
    pub lb1: u32,
}

impl World {
    pub fn new(tag: &str) -> World {
        let ns = Netns::new(&format!("lbl4{tag}-{}", std::process::id())).expect("netns");
        let mut cmds = vec![
            "link add lb0 type veth peer name lb1".to_string(),
            format!("link set lb0 address {}", mac(LB0_MAC)),
            format!("link set lb1 address {}", mac(LB1_MAC)),
            "link set lb0 up".into(),
            "link set lb1 up".into(),
            "addr add 10.0.0.2/24 dev lb0".into(),
            "addr add 10.1.0.2/24 dev lb1".into(),
            "addr add fd00::2/64 dev lb0 nodad".into(),
            "addr add fd01::2/64 dev lb1 nodad".into(),
            "route add blackhole 10.8.0.0/16".into(),
        ];
        for (addr, dev, m) in NEIGHBOURS {
            cmds.push(format!(
                "neigh replace {addr} lladdr {} dev {dev} nud permanent",
                mac(*m)
            ));
        }
        ns.batch(&cmds).expect("fixture topology");
        ns.sysctl("net/ipv4/ip_forward", "1").expect("ip_forward");
        ns.sysctl("net/ipv6/conf/all/forwarding", "1")
            .expect("v6 forwarding");
        let index = |dev: &str| -> u32 {
            let path = format!("/sys/class/net/{dev}/ifindex");
            let out = ns.exec(&["cat", &path]).expect("ifindex");
            out.trim().parse().expect("ifindex is a number")
        };
        let (lb0, lb1) = (index("lb0"), index("lb1"));
        World { ns, lb0, lb1 }
    }

    /// Attaches the program (SKB mode) to both veths, which also registers them as redirect
    /// targets, exactly as `lb run --iface lb0 --iface lb1` does.
    pub fn attach(&self, dp: &mut Dataplane) {
        self.ns
            .run(|| {
                dp.attach("lb0", XdpMode::Skb)?;
                dp.attach("lb1", XdpMode::Skb)
            })
            .expect("in netns")
            .expect("attach");
    }

    /// Runs one frame as if it arrived on `ifindex`; returns (action, frame out).
    pub fn run(
        &self,
        dp: &Dataplane,
        ifindex: u32,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), String> {
        let prog = dp.program().map_err(|e| e.to_string())?;
        self.ns
            .run(|| {
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue, egress.
                let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
                let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
                let mut out = vec![0u8; frame.len() + 256];
                let r = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        data_out: Some(&mut out),
                        ctx_in: Some(&ctx),
                        ..Default::default()
                    })
                    .map_err(|e| format!("test_run: {e}"))?;
                out.truncate(r.data_size_out as usize);
                Ok((r.return_value, out))
            })
            .map_err(|e| e.to_string())?
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A frame described by what NAT touches.
#[derive(Clone, Copy, Debug)]
pub struct Pkt {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub udp: bool,
    pub flags: u8,
    pub payload: &'static [u8],
    pub ttl: u8,
    pub udp_zero_csum: bool,
}

impl Pkt {
    pub fn tcp(src: &str, dst: &str, flags: u8) -> Pkt {
        Pkt {
            src: src.parse().expect("fixture address"),
            dst: dst.parse().expect("fixture address"),
            udp: false,
            flags,
            payload: b"",
            ttl: 64,
            udp_zero_csum: false,
        }
    }

    pub fn udp(src: &str, dst: &str) -> Pkt {
        Pkt {
            udp: true,
            flags: 0,
            payload: b"query",
            ..Pkt::tcp(src, dst, 0)
        }
    }

    pub fn payload(self, payload: &'static [u8]) -> Pkt {
        Pkt { payload, ..self }
    }

    pub fn ttl(self, ttl: u8) -> Pkt {
        Pkt { ttl, ..self }
    }

    pub fn zero_csum(self) -> Pkt {
        Pkt {
            udp_zero_csum: true,
            ..self
        }
    }

    /// The same packet with other addresses (what NAT should produce).
    pub fn moved(self, src: SocketAddr, dst: SocketAddr) -> Pkt {
        Pkt { src, dst, ..self }
    }

    pub fn packet(&self) -> Packet {
        let p = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Packet::ipv4(s.octets(), d.octets()),
            (IpAddr::V6(s), IpAddr::V6(d)) => Packet::ipv6(s.octets(), d.octets()),
            _ => panic!("mixed families in a fixture"),
        };
        let (sp, dp) = (self.src.port(), self.dst.port());
        let p = if self.udp {
            p.udp(sp, dp)
        } else {
            p.tcp(sp, dp).tcp_flags(self.flags)
        };
        let p = if self.udp_zero_csum { p.l4_csum(0) } else { p };
        p.payload(self.payload).ttl(self.ttl)
    }

    /// The frame as a client sends it to the node (lb0).
    pub fn frame(&self) -> Vec<u8> {
        self.packet().build()
    }
}

/// Counters that moved between two reads, except what the attached veths receive on their own
/// (ICMPv6 neighbour/router solicitations, ARP) while a fixture runs.
pub fn deltas(before: &[(Reason, StatValue)], after: &[(Reason, StatValue)]) -> Vec<(Reason, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.1 != a.1 && !matches!(b.0, Reason::Icmp | Reason::NotIp))
        .map(|(b, a)| (b.0, a.1.packets - b.1.packets))
        .collect()
}

/// Equal frames, or where they first differ.
pub fn same_frame(out: &[u8], expected: &[u8]) -> Result<(), String> {
    if out == expected {
        return Ok(());
    }
    let at = out
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(out.len().min(expected.len()));
    Err(format!(
        "frame differs at byte {at} (len {} vs {}): got {:02x?}, want {:02x?}",
        out.len(),
        expected.len(),
        &out[at..(at + 8).min(out.len())],
        &expected[at..(at + 8).min(expected.len())]
    ))
}

/// Source and destination (address, port) of an untagged IPv4/IPv6 TCP/UDP frame.
pub fn addrs(f: &[u8]) -> Result<(SocketAddr, SocketAddr), String> {
    let get = |a: usize, n: usize| {
        f.get(a..a + n)
            .ok_or_else(|| format!("frame too short at {a}"))
    };
    let port = |a: usize| get(a, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match f.get(12..14) {
        Some([0x08, 0x00]) => {
            let ihl = (get(14, 1)?[0] & 0x0f) as usize * 4;
            let s: [u8; 4] = get(26, 4)?.try_into().map_err(|_| "v4 src")?;
            let d: [u8; 4] = get(30, 4)?.try_into().map_err(|_| "v4 dst")?;
            let l4 = 14 + ihl;
            Ok((
                SocketAddr::from((s, port(l4)?)),
                SocketAddr::from((d, port(l4 + 2)?)),
            ))
        }
        Some([0x86, 0xdd]) => {
            let s: [u8; 16] = get(22, 16)?.try_into().map_err(|_| "v6 src")?;
            let d: [u8; 16] = get(38, 16)?.try_into().map_err(|_| "v6 dst")?;
            Ok((
                SocketAddr::from((s, port(54)?)),
                SocketAddr::from((d, port(56)?)),
            ))
        }
        _ => Err("not an untagged IP frame".into()),
    }
}

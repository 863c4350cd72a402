//! Helper of `cargo xtask bench xdp` (xtask cannot link lb-user: it builds the object lb-user embeds):
//! ns per packet of the XDP L4 paths through BPF_PROG_TEST_RUN, maps seeded by production code.
//!
//! `bench_xdp_l4 --runs N --reps R` prints `[{scenario, contender, samples}]` as JSON on stdout.
//! Every run is a single BPF_PROG_TEST_RUN (repeat = 1): with repeat > 1 the kernel feeds the
//! already rewritten buffer back in, so a NAT'd packet would stop being a VIP packet after run 1.

use anyhow::{bail, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::EbpfLoader;
use lb_common::{GLOBAL_LOG_LEVEL, PROG_XDP_PASS};
use lb_tests::netns::Netns;
use lb_tests::packet::{Packet, TCP_ACK, TCP_SYN};
use lb_user::bpf::{load_config_text, Dataplane, OBJECT};
use std::net::Ipv4Addr;

const CONFIG: &str = r#"
clusters:
  - {name: web, endpoints: [{address: "10.1.0.10:8080"}, {address: "10.1.0.11:8080"}, {address: "10.1.0.12:8080"}]}
l4_services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp, cluster: web}
xdp:
  l4: {snat_v4: 10.1.0.2, nat_ports: 1024-65535}
"#;
const VIP: [u8; 4] = [10, 96, 0, 10];
const CLIENT: [u8; 4] = [10, 0, 0, 1];
/// Neighbours with known MACs (permanent entries): the client side on lb0, endpoints on lb1.
const NEIGHBOURS: [(&str, &str); 4] = [
    ("10.0.0.1", "lb0"),
    ("10.1.0.10", "lb1"),
    ("10.1.0.11", "lb1"),
    ("10.1.0.12", "lb1"),
];
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
/// Runs per block: lb and the floor alternate in blocks so drift hits both alike.
const BLOCK: usize = 500;

/// A namespace with two veth ends (lb0: clients, lb1: endpoints), forwarding on and
/// permanent neighbours, so bpf_fib_lookup answers as on a node with warm ARP caches.
struct World {
    ns: Netns,
    lb0: u32,
    lb1: u32,
}

impl World {
    fn new() -> Result<World> {
        let ns = Netns::new(&format!("lbt-{}-xb", std::process::id()))?;
        let mut cmds = vec![
            "link add lb0 type veth peer name lb1".to_string(),
            "link set lb0 up".into(),
            "link set lb1 up".into(),
            "addr add 10.0.0.2/24 dev lb0".into(),
            "addr add 10.1.0.2/24 dev lb1".into(),
        ];
        for (i, (addr, dev)) in NEIGHBOURS.iter().enumerate() {
            cmds.push(format!(
                "neigh replace {addr} lladdr 02:00:00:00:0e:{i:02x} dev {dev} nud permanent"
            ));
        }
        ns.batch(&cmds)?;
        ns.sysctl("net/ipv4/ip_forward", "1")?;
        let index = |dev: &str| -> Result<u32> {
            let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/ifindex")])?;
            out.trim().parse().context("ifindex")
        };
        Ok(World {
            lb0: index("lb0")?,
            lb1: index("lb1")?,
            ns,
        })
    }

    /// What `lb run --iface lb0 --iface lb1 --xdp-mode skb` does: load, seed, attach.
    fn dataplane(&self) -> Result<Dataplane> {
        let mut dp = load_config_text(CONFIG)?;
        self.ns.run(|| -> Result<()> {
            dp.attach("lb0", XdpMode::Skb)?;
            dp.attach("lb1", XdpMode::Skb)
        })??;
        Ok(dp)
    }
}

/// One BPF_PROG_TEST_RUN (repeat 1) as if `frame` arrived on `ifindex`: (action, ns, frame out).
fn run_once(prog: &Xdp, ifindex: u32, frame: &[u8]) -> Result<(u32, f64, Vec<u8>)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, r.duration.as_nanos() as f64, out))
}

/// The NAT'd frame's source port and destination (an IPv4 TCP frame without options).
fn nat_of(frame: &[u8]) -> Result<(u16, [u8; 4], u16)> {
    let b = |a: usize, n: usize| frame.get(a..a + n).context("translated frame too short");
    let port = |a: usize| b(a, 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    let dst: [u8; 4] = b(30, 4)?.try_into()?;
    Ok((port(34)?, dst, port(36)?))
}

fn syn(src: [u8; 4], sport: u16) -> Vec<u8> {
    Packet::ipv4(src, VIP)
        .tcp(sport, 80)
        .tcp_flags(TCP_SYN)
        .build()
}

/// One path's samples: per repetition, the median of `runs` single runs (lb, then the floor).
struct Path {
    scenario: &'static str,
    lb: Vec<f64>,
    floor: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `runs` lb runs of `frame(i)` (each must end in `want`) and as many floor runs, alternating
/// in blocks; returns the two medians.
fn measure(
    prog: &Xdp,
    floor: &Xdp,
    ifindex: u32,
    runs: usize,
    want: u32,
    frame: &dyn Fn(usize) -> Vec<u8>,
) -> Result<(f64, f64)> {
    let (mut lb, mut base) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut i = 0;
    while i < runs {
        let end = (i + BLOCK).min(runs);
        for k in i..end {
            let f = frame(k);
            let (action, ns, _) = run_once(prog, ifindex, &f)?;
            if action != want {
                bail!("run {k}: action {action}, want {want} (the measured path is not the one named)");
            }
            lb.push(ns);
        }
        let f = frame(i);
        for _ in i..end {
            base.push(run_once(floor, ifindex, &f)?.1);
        }
        i = end;
    }
    Ok((median(lb), median(base)))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut runs, mut reps) = (20_000usize, 5usize);
    while let Some(a) = args.next() {
        let v: usize = args.next().context("flag without a value")?.parse()?;
        match a.as_str() {
            "--runs" => runs = v,
            "--reps" => reps = v,
            other => bail!("unknown flag {other} (flags: --runs N --reps R)"),
        }
    }
    if runs == 0 || reps == 0 || runs > 60_000 {
        bail!("--runs must be 1..=60000 (distinct SYN source ports) and --reps at least 1");
    }
    let world = World::new()?;
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_LOG_LEVEL, &0u8, false)
        .load(OBJECT)
        .context("loading the object for the pass-through floor")?;
    let floor: &mut Xdp = ebpf
        .program_mut(PROG_XDP_PASS)
        .context(PROG_XDP_PASS)?
        .try_into()?;
    floor.load()?;
    let floor: &Xdp = ebpf
        .program(PROG_XDP_PASS)
        .context(PROG_XDP_PASS)?
        .try_into()?;
    let mut paths = [
        "L4 hit: established flow's ACK, NAT'd and redirected",
        "L4 miss: new SYN (new source port each run), endpoint picked, NAT port claimed",
        "L4 reply: endpoint's ACK, reverse NAT to the client, redirected",
        "not a VIP (TCP SYN), passed: same single-run method",
    ]
    .map(|scenario| Path {
        scenario,
        lb: Vec::new(),
        floor: Vec::new(),
    });
    for rep in 0..reps {
        eprintln!("bench_xdp_l4: repetition {} of {reps}", rep + 1);
        // A fresh dataplane each repetition: the miss path sees a table at most `runs` flows full.
        let dp = world.dataplane()?;
        let prog = dp.program()?;
        let (lb0, lb1) = (world.lb0, world.lb1);
        let got = world.ns.run(|| -> Result<[(f64, f64); 4]> {
            let miss = |i: usize| {
                let src =
                    Ipv4Addr::from(u32::from_be_bytes(CLIENT) + 0x100 * (1 + i as u32 / 60_000));
                syn(src.octets(), 1024 + (i % 60_000) as u16)
            };
            let miss = measure(prog, floor, lb0, runs, XDP_REDIRECT, &miss)?;
            // The flow the hit and reply paths use, opened like a client would.
            let (action, _, out) = run_once(prog, lb0, &syn(CLIENT, 40_000))?;
            if action != XDP_REDIRECT {
                bail!("the SYN that opens the measured flow got action {action}");
            }
            let (nat_port, endpoint, ep_port) = nat_of(&out)?;
            let ack = Packet::ipv4(CLIENT, VIP)
                .tcp(40_000, 80)
                .tcp_flags(TCP_ACK)
                .build();
            let hit = measure(prog, floor, lb0, runs, XDP_REDIRECT, &|_| ack.clone())?;
            let answer = Packet::ipv4(endpoint, [10, 1, 0, 2])
                .tcp(ep_port, nat_port)
                .tcp_flags(TCP_ACK)
                .build();
            let reply = measure(prog, floor, lb1, runs, XDP_REDIRECT, &|_| answer.clone())?;
            let other = Packet::ipv4(CLIENT, [10, 0, 0, 2])
                .tcp(40_000, 22)
                .tcp_flags(TCP_SYN)
                .build();
            let pass = measure(prog, floor, lb0, runs, XDP_PASS, &|_| other.clone())?;
            Ok([hit, miss, reply, pass])
        })??;
        for (p, (lb, base)) in paths.iter_mut().zip(got) {
            p.lb.push(lb);
            p.floor.push(base);
        }
    }
    let rows: Vec<serde_json::Value> = paths
        .iter()
        .flat_map(|p| {
            [("lb_xdp", &p.lb), ("pass-through (floor)", &p.floor)].map(
                |(c, s)| serde_json::json!({"scenario": p.scenario, "contender": c, "samples": s}),
            )
        })
        .collect();
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}

//! Suite `xdp`: nanoseconds per packet for each path of the XDP program (BPF_PROG_TEST_RUN with
//! a large repeat count), against the pass-through program as the floor any XDP program pays.

use super::{Env, SuiteResult};
use anyhow::{Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::EbpfLoader;
use lb_common::{DenyValue, GLOBAL_LOG_LEVEL, MAP_DENY_V4, PROG_XDP, PROG_XDP_PASS};
use lb_tests::packet::{Packet, TCP_SYN};

pub fn run(env: &Env) -> Result<SuiteResult> {
    let object = std::fs::read(&env.object)?;
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_LOG_LEVEL, &0u8, false)
        .load(&object)
        .context("loading the XDP object")?;
    for name in [PROG_XDP, PROG_XDP_PASS] {
        let prog: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
    }
    let mut deny: LpmTrie<_, [u8; 4], DenyValue> =
        LpmTrie::try_from(ebpf.map_mut(MAP_DENY_V4).context(MAP_DENY_V4)?)?;
    deny.insert(
        &Key::new(24, [192, 0, 2, 0]),
        DenyValue { rule: 0, _pad: 0 },
        0,
    )?;

    let (c4, n4, bad4) = ([10, 0, 0, 1], [10, 0, 0, 2], [192, 0, 2, 9]);
    let (c6, n6) = ([0xfd; 16], [0xfe; 16]);
    let ext = [0u8, 60, 43, 60, 43, 60]
        .iter()
        .fold(Packet::ipv6(c6, n6), |p, k| p.ipv6_ext(*k, 8));
    let packets: Vec<(&str, Vec<u8>)> = vec![
        (
            "IPv4 TCP SYN, passed",
            Packet::ipv4(c4, n4)
                .tcp(40000, 80)
                .tcp_flags(TCP_SYN)
                .build(),
        ),
        (
            "IPv6 UDP, passed",
            Packet::ipv6(c6, n6).udp(5353, 53).build(),
        ),
        (
            "IPv6 behind 6 extension headers, passed",
            ext.tcp(1, 2).build(),
        ),
        (
            "deny-listed IPv4 source, dropped",
            Packet::ipv4(bad4, n4).tcp(1, 80).build(),
        ),
        (
            "malformed TCP (data offset 4), passed",
            Packet::ipv4(c4, n4).tcp(1, 2).tcp_doff(4).build(),
        ),
        (
            "ARP (not IP), passed",
            Packet::raw(0x0806, &[0; 28]).build(),
        ),
    ];
    let repeat: u32 = if env.quick { 10_000 } else { 2_000_000 };
    let mut result = SuiteResult::new("xdp");
    for (name, frame) in &packets {
        let mut times: [Vec<f64>; 2] = Default::default();
        for _ in 0..env.reps {
            for (i, prog_name) in [PROG_XDP, PROG_XDP_PASS].iter().enumerate() {
                let prog: &Xdp = ebpf.program(prog_name).context(*prog_name)?.try_into()?;
                let mut out = vec![0u8; frame.len() + 256];
                let r = prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat,
                    ..Default::default()
                })?;
                // The kernel reports the mean time of one run.
                times[i].push(r.duration.as_nanos() as f64);
            }
        }
        let [lb, floor] = times;
        result.push(name, "lb_xdp", "time per packet", "ns", false, lb);
        result.push(
            name,
            "pass-through (floor)",
            "time per packet",
            "ns",
            false,
            floor,
        );
    }
    result.notes = vec![
        format!("BPF_PROG_TEST_RUN, {repeat} runs per sample, {} alternating samples; the kernel reports the mean per run.", env.reps),
        "The floor is lb_xdp_pass (returns XDP_PASS): the cost of entering any XDP program through test-run.".into(),
        "Live-traffic packets-per-second and softirq CPU against iptables/IPVS belong to the `l4` suite (the L4 issue).".into(),
    ];
    Ok(result)
}

//! Suite `xdp`: nanoseconds per packet for each path of the XDP program (BPF_PROG_TEST_RUN),
//! against the pass-through program as the floor; the L4 paths come from a helper (see `l4_rows`).

use super::{Env, SuiteResult};
use anyhow::{bail, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::EbpfLoader;
use lb_common::{DenyValue, GLOBAL_LOG_LEVEL, MAP_DENY_V4, PROG_XDP, PROG_XDP_PASS};
use lb_tests::packet::{Packet, TCP_SYN};
use serde::Deserialize;
use std::process::{Command, Stdio};

/// The lb-tests example that measures the L4 paths (it links lb-user, which xtask cannot:
/// xtask builds the eBPF object lb-user embeds).
const HELPER: &str = "bench_xdp_l4";

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
    let runs = l4_rows(env, &mut result)?;
    result.notes = vec![
        format!("Stateless paths: BPF_PROG_TEST_RUN, {repeat} runs per sample, {} alternating samples; the kernel reports the mean per run.", env.reps),
        format!(
            "L4 paths (`{HELPER}`, an lb-tests example: maps seeded by `lb_user::bpf::load_config_text`, the code `lb run` uses; \
             one service, 3 endpoints, Maglev 65537, attached in SKB mode to two veths of a namespace with permanent \
             neighbours, ctx_in ingress_ifindex set so bpf_fib_lookup answers): every run is a single test run (repeat = 1), \
             because with repeat > 1 the kernel feeds the already NAT'd buffer back in. A sample is the median of {runs} \
             kernel-reported single-run durations; lb and the floor alternate in blocks of 500 runs; {} samples, each on a \
             fresh dataplane (the miss path sees a connection table at most {runs} flows full).",
            env.reps
        ),
        "A single run pays what a repeat loop amortises (the kernel's two clock reads, caches and branch predictors \
         cold after the syscall): the `not a VIP` row and `IPv4 TCP SYN, passed` above are the same path measured both \
         ways. Compare the L4 rows with their own floor and with `not a VIP`, not with the repeat-averaged rows."
            .into(),
        "The floor is lb_xdp_pass (returns XDP_PASS): the cost of entering any XDP program through test-run.".into(),
        "Forwarding through a node namespace against iptables DNAT and HAProxy is the `l4` suite.".into(),
    ];
    Ok(result)
}

#[derive(Deserialize)]
struct HelperRow {
    scenario: String,
    contender: String,
    samples: Vec<f64>,
}

/// Builds and runs the helper; adds its rows. Returns the runs per sample.
fn l4_rows(env: &Env, result: &mut SuiteResult) -> Result<usize> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Debug profile: the measured code is the (release) eBPF object, not the helper.
    crate::run_cmd(Command::new(cargo).current_dir(crate::root()).args([
        "build",
        "-q",
        "-p",
        "lb-tests",
        "--example",
        HELPER,
    ]))?;
    let bin = crate::target_dir().join("debug/examples").join(HELPER);
    let runs: usize = if env.quick { 2_000 } else { 20_000 };
    let out = Command::new(&bin)
        .args(["--runs", &runs.to_string(), "--reps", &env.reps.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{HELPER} failed ({})", out.status);
    }
    let rows: Vec<HelperRow> =
        serde_json::from_slice(&out.stdout).with_context(|| format!("{HELPER}'s output"))?;
    for r in rows {
        result.push(
            &r.scenario,
            &r.contender,
            "time per packet",
            "ns",
            false,
            r.samples,
        );
    }
    Ok(runs)
}

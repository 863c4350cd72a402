//! XDP fixtures (Katran-tester style): packet in -> expected verdict, reason and packet out, run
//! through BPF_PROG_TEST_RUN with the deny maps seeded by lb-user's production code. Needs root.

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{Reason, StatValue, Verdict};
use lb_tests::packet::{Packet, TCP_ACK, TCP_SYN};
use lb_user::bpf::{maps::StatsReader, Dataplane, LoadOptions};
use lb_user::{config, snapshot};

/// The deny-list every fixture runs against, seeded exactly as `lb run` seeds it.
const DENY_CONFIG: &str = r#"
xdp:
  deny: [192.0.2.0/24, 198.51.100.7, "2001:db8:bad::/48"]
"#;

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const NODE: [u8; 4] = [10, 0, 0, 2];
const DENIED: [u8; 4] = [192, 0, 2, 33];
const CLIENT6: [u8; 16] = v6(0xfd00, 1);
const NODE6: [u8; 16] = v6(0xfd00, 2);
const DENIED6: [u8; 16] = v6(0x2001_0db8_0bad, 0x1234);

const fn v6(prefix: u64, host: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    let p = if prefix > 0xffff {
        // 2001:db8:bad::/48 style: three 16-bit groups.
        prefix << 16
    } else {
        prefix << 48
    };
    let pb = p.to_be_bytes();
    let hb = host.to_be_bytes();
    let mut i = 0;
    while i < 8 {
        a[i] = pb[i];
        a[8 + i] = hb[i];
        i += 1;
    }
    a
}

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;

struct Fixture {
    name: &'static str,
    packet: Vec<u8>,
    verdict: Verdict,
    reason: Reason,
}

fn fx(name: &'static str, packet: Vec<u8>, verdict: Verdict, reason: Reason) -> Fixture {
    Fixture {
        name,
        packet,
        verdict,
        reason,
    }
}

fn tcp4() -> Packet {
    Packet::ipv4(CLIENT, NODE).tcp(40000, 80).tcp_flags(TCP_SYN)
}

fn tcp6() -> Packet {
    Packet::ipv6(CLIENT6, NODE6)
        .tcp(40000, 80)
        .tcp_flags(TCP_ACK)
}

/// Overwrites one byte of a built frame (for fields the builder has no knob for).
fn patch(mut p: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    p[at] = value;
    p
}

#[rustfmt::skip] // one fixture per line: the table is the point
fn fixtures() -> Vec<Fixture> {
    use Reason::*;
    use Verdict::{Drop, Pass};
    let mut padded = tcp4().build();
    padded.extend_from_slice(&[0u8; 12]);
    let ext = |kinds: &[u8]| {
        kinds
            .iter()
            .fold(Packet::ipv6(CLIENT6, NODE6), |p, k| p.ipv6_ext(*k, 8))
            .tcp(1, 2)
    };
    vec![
        // Well-formed IPv4.
        fx("ipv4 tcp syn", tcp4().build(), Pass, Tcp),
        fx("ipv4 udp", Packet::ipv4(CLIENT, NODE).udp(5353, 53).payload(b"q").build(), Pass, Udp),
        fx("ipv4 icmp echo", Packet::ipv4(CLIENT, NODE).icmp_echo().build(), Pass, Icmp),
        fx("ipv4 gre is other l4", Packet::ipv4(CLIENT, NODE).proto(47).payload(&[0; 8]).build(), Pass, OtherL4),
        fx("ipv4 with 8 bytes of options", tcp4().ipv4_options(&[1; 8]).build(), Pass, Tcp),
        fx("ipv4 with 40 bytes of options (ihl 15)", Packet::ipv4(CLIENT, NODE).ipv4_options(&[1; 40]).udp(1, 2).build(), Pass, Udp),
        fx("tcp with options (doff 8)", tcp4().tcp_doff(8).payload(&[1; 12]).build(), Pass, Tcp),
        fx("ethernet padding after the datagram", padded, Pass, Tcp),
        fx("ipv4 first fragment", tcp4().ipv4_fragment(true, 0).build(), Pass, Fragment),
        fx("ipv4 later fragment", Packet::ipv4(CLIENT, NODE).udp(1, 2).ipv4_fragment(false, 100).build(), Pass, Fragment),
        // Malformed IPv4 and below: counted and passed, never dropped for that alone.
        fx("frame of only an ethernet header", Packet::raw(0x0800, &[]).build(), Pass, MalformedIpv4),
        fx("vlan tag cut short", Packet::raw(0x8100, &[0, 5]).build(), Pass, MalformedVlan),
        fx("ipv4 header cut at 10 bytes", tcp4().truncate(ETH + 10).build(), Pass, MalformedIpv4),
        fx("ipv4 ihl 4", tcp4().ipv4_ihl(4).build(), Pass, MalformedIpv4Ihl),
        fx("ipv4 ihl 0", tcp4().ipv4_ihl(0).build(), Pass, MalformedIpv4Ihl),
        fx("ipv4 ihl 15 beyond the frame", Packet::ipv4(CLIENT, NODE).udp(1, 2).ipv4_ihl(15).build(), Pass, MalformedIpv4Ihl),
        fx("ipv4 total length beyond the frame", tcp4().ipv4_total_len(1400).build(), Pass, MalformedIpv4Len),
        fx("ipv4 total length below the header", tcp4().ipv4_total_len(12).build(), Pass, MalformedIpv4Len),
        fx("version 5 behind the ipv4 ethertype", tcp4().ip_version(5).build(), Pass, MalformedIpVersion),
        fx("tcp header cut at 10 bytes", tcp4().ipv4_total_len((IP4 + 10) as u16).truncate(ETH + IP4 + 10).build(), Pass, MalformedTcp),
        fx("tcp data offset 4", tcp4().tcp_doff(4).build(), Pass, MalformedTcpDoff),
        fx("tcp data offset 15 beyond the datagram", tcp4().tcp_doff(15).build(), Pass, MalformedTcp),
        fx("udp header cut at 4 bytes", Packet::ipv4(CLIENT, NODE).udp(1, 2).ipv4_total_len((IP4 + 4) as u16).truncate(ETH + IP4 + 4).build(), Pass, MalformedUdp),
        fx("udp length 4", Packet::ipv4(CLIENT, NODE).udp(1, 2).udp_len(4).build(), Pass, MalformedUdp),
        fx("udp length beyond the datagram", Packet::ipv4(CLIENT, NODE).udp(1, 2).udp_len(200).build(), Pass, MalformedUdp),
        fx("icmp cut at 4 bytes", Packet::ipv4(CLIENT, NODE).icmp_echo().ipv4_total_len((IP4 + 4) as u16).truncate(ETH + IP4 + 4).build(), Pass, MalformedIcmp),
        // VLANs.
        fx("802.1q ipv4 tcp", tcp4().vlan(100).build(), Pass, Tcp),
        fx("q-in-q ipv6 udp", Packet::ipv6(CLIENT6, NODE6).udp(1, 2).vlan(100).vlan(200).build(), Pass, Udp),
        fx("three vlan tags: beyond the bound, passed", tcp4().vlan(1).vlan(2).vlan(3).build(), Pass, NotIp),
        fx("802.1q from a denied source", Packet::ipv4(DENIED, NODE).tcp(1, 80).vlan(7).build(), Drop, DenyV4),
        // Not IP.
        fx("arp", Packet::raw(0x0806, &[0; 28]).build(), Pass, NotIp),
        fx("lldp", Packet::raw(0x88cc, &[0; 32]).build(), Pass, NotIp),
        // IPv6.
        fx("ipv6 tcp", tcp6().build(), Pass, Tcp),
        fx("ipv6 udp", Packet::ipv6(CLIENT6, NODE6).udp(1, 2).build(), Pass, Udp),
        fx("icmpv6 echo", Packet::ipv6(CLIENT6, NODE6).icmpv6_echo().build(), Pass, Icmp),
        fx("icmp (v4 number) inside ipv6 is other l4", Packet::ipv6(CLIENT6, NODE6).proto(1).payload(&[0; 8]).build(), Pass, OtherL4),
        fx("ipv6 no next header", Packet::ipv6(CLIENT6, NODE6).proto(59).build(), Pass, OtherL4),
        fx("ipv6 hop-by-hop + dest opts + tcp", ext(&[0, 60]).build(), Pass, Tcp),
        fx("ipv6 routing header + udp", Packet::ipv6(CLIENT6, NODE6).ipv6_ext(43, 24).udp(1, 2).build(), Pass, Udp),
        fx("ipv6 authentication header + tcp", Packet::ipv6(CLIENT6, NODE6).ipv6_ext(51, 12).tcp(1, 2).build(), Pass, Tcp),
        fx("ipv6 fragment header", Packet::ipv6(CLIENT6, NODE6).ipv6_ext(44, 8).udp(1, 2).build(), Pass, Fragment),
        fx("ipv6 six extension headers (the bound) + tcp", ext(&[0, 60, 43, 60, 43, 60]).build(), Pass, Tcp),
        fx("ipv6 seven extension headers: beyond the bound", ext(&[0, 60, 43, 60, 43, 60, 60]).build(), Pass, Ipv6ExtLimit),
        fx("ipv6 header cut at 30 bytes", tcp6().truncate(ETH + 30).build(), Pass, MalformedIpv6),
        fx("ipv6 payload length beyond the frame", tcp6().ipv6_payload_len(900).build(), Pass, MalformedIpv6),
        fx("ipv6 extension header longer than the datagram", patch(ext(&[0]).build(), ETH + IP6 + 1, 9), Pass, MalformedIpv6Ext),
        fx("ipv6 extension header cut short", Packet::ipv6(CLIENT6, NODE6).ipv6_ext(0, 8).ipv6_payload_len(4).truncate(ETH + IP6 + 4).build(), Pass, MalformedIpv6Ext),
        fx("version 4 behind the ipv6 ethertype", tcp6().ip_version(4).build(), Pass, MalformedIpVersion),
        fx("ipv6 tcp cut at 12 bytes", tcp6().ipv6_payload_len(12).truncate(ETH + IP6 + 12).build(), Pass, MalformedTcp),
        // Deny-list: sources only, longest prefix, both families, before any L4 parsing.
        fx("v4 source in a denied /24", Packet::ipv4(DENIED, NODE).tcp(1, 80).build(), Drop, DenyV4),
        fx("v4 source denied as a single host", Packet::ipv4([198, 51, 100, 7], NODE).udp(1, 53).build(), Drop, DenyV4),
        fx("v4 neighbour of a denied host passes", Packet::ipv4([198, 51, 100, 8], NODE).udp(1, 53).build(), Pass, Udp),
        fx("v4 denied destination is not a denied source", Packet::ipv4(CLIENT, DENIED).tcp(1, 80).build(), Pass, Tcp),
        fx("v4 denied source, fragment", Packet::ipv4(DENIED, NODE).udp(1, 2).ipv4_fragment(false, 8).build(), Drop, DenyV4),
        fx("v4 denied source, malformed tcp", Packet::ipv4(DENIED, NODE).tcp(1, 2).tcp_doff(2).build(), Drop, DenyV4),
        fx("v6 source in a denied /48", Packet::ipv6(DENIED6, NODE6).tcp(1, 443).build(), Drop, DenyV6),
        fx("v6 source just outside the /48 passes", Packet::ipv6(v6(0x2001_0db8_0bae, 1), NODE6).tcp(1, 443).build(), Pass, Tcp),
        fx("v6 denied source behind extension headers", Packet::ipv6(DENIED6, NODE6).ipv6_ext(0, 8).udp(1, 2).build(), Drop, DenyV6),
        fx("v6 denied source, truncated udp", Packet::ipv6(DENIED6, NODE6).udp(1, 2).ipv6_payload_len(3).truncate(ETH + IP6 + 3).build(), Drop, DenyV6),
        fx("v4 denied source with a bad ihl: header untrusted, passed", Packet::ipv4(DENIED, NODE).tcp(1, 2).ipv4_ihl(3).build(), Pass, MalformedIpv4Ihl),
    ]
}

fn load() -> Dataplane {
    let mut dp =
        Dataplane::load(LoadOptions::default()).expect("load the XDP object (root needed)");
    let cfg = config::parse(DENY_CONFIG).expect("fixture config");
    let snap = snapshot::build(&cfg, Default::default(), 1);
    dp.deny.apply(&snap.deny).expect("seed deny maps");
    dp
}

/// Runs one frame; returns (action, frame out).
fn run(dp: &Dataplane, frame: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let mut out = vec![0u8; frame.len() + 256];
    let result = dp
        .program()
        .map_err(|e| e.to_string())?
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .map_err(|e| format!("test_run: {e}"))?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

fn deltas(
    before: &[(Reason, StatValue)],
    after: &[(Reason, StatValue)],
) -> Vec<(Reason, u64, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, a)| (b.0, a.1.packets - b.1.packets, a.1.bytes - b.1.bytes))
        .collect()
}

fn check(dp: &Dataplane, stats: &StatsReader, f: &Fixture) -> Result<(), String> {
    let before = stats.read().map_err(|e| e.to_string())?;
    let (action, out) = run(dp, &f.packet)?;
    let after = stats.read().map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    if action != f.verdict.action() {
        problems.push(format!(
            "action {action}, want {} ({})",
            f.verdict.action(),
            f.verdict.name()
        ));
    }
    if f.reason.verdict() != f.verdict {
        problems.push(format!(
            "fixture is inconsistent: {} implies {}",
            f.reason.name(),
            f.reason.verdict().name()
        ));
    }
    if f.verdict == Verdict::Pass && out != f.packet {
        problems.push(format!(
            "packet changed: {} bytes in, {} out",
            f.packet.len(),
            out.len()
        ));
    }
    let want = vec![(f.reason, 1, f.packet.len() as u64)];
    let got = deltas(&before, &after);
    if got != want {
        let show = |v: &[(Reason, u64, u64)]| {
            v.iter()
                .map(|(r, p, b)| format!("{}+{p}pkt/{b}B", r.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        problems.push(format!(
            "counters moved [{}], want [{}]",
            show(&got),
            show(&want)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn xdp_fixture_table() {
    let dp = load();
    let stats = dp.stats();
    let table = fixtures();
    assert!(table.len() >= 30, "the issue asks for at least 30 fixtures");
    let mut failed = Vec::new();
    for f in &table {
        match check(&dp, &stats, f) {
            Ok(()) => println!(
                "ok    {:<58} {:>4} {}",
                f.name,
                f.verdict.name(),
                f.reason.name()
            ),
            Err(e) => {
                println!("FAIL  {:<58} {e}", f.name);
                failed.push(f.name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} fixtures failed: {failed:?}",
        failed.len(),
        table.len()
    );
    // Every reason the program can produce from a frame of at least 14 bytes is covered (the
    // L4 dataplane's reasons, from `l4_tx` on, by xdp_l4_fixtures.rs).
    for reason in Reason::ALL {
        let covered = table.iter().any(|f| f.reason == *reason);
        let l4 = reason.index() >= Reason::L4Tx.index();
        assert!(
            covered || l4 || *reason == Reason::MalformedEth,
            "no fixture for {}",
            reason.name()
        );
    }
}

#[test]
fn frames_shorter_than_ethernet_never_reach_xdp() {
    // The kernel refuses to run XDP on less than an Ethernet header (so `malformed_eth` is a
    // guard that real traffic cannot hit); nothing may be counted for the attempt.
    let dp = load();
    let stats = dp.stats();
    let before = stats.read().unwrap();
    for len in [0usize, 1, 10, 13] {
        assert!(
            run(&dp, &vec![0xab; len]).is_err(),
            "{len}-byte frame was run"
        );
    }
    assert_eq!(deltas(&before, &stats.read().unwrap()), vec![]);
}

#[test]
fn deny_list_updates_apply_as_diffs() {
    let mut dp = load();
    let denied = Packet::ipv4(DENIED, NODE).tcp(1, 80).build();
    let newly = Packet::ipv4([203, 0, 113, 9], NODE).tcp(1, 80).build();
    assert_eq!(run(&dp, &denied).unwrap().0, Verdict::Drop.action());
    assert_eq!(run(&dp, &newly).unwrap().0, Verdict::Pass.action());

    // Reload: 192.0.2.0/24 leaves, 203.0.113.0/24 arrives, the rest stays.
    let cfg =
        config::parse("xdp: {deny: [198.51.100.7, '2001:db8:bad::/48', 203.0.113.0/24]}").unwrap();
    let report = dp
        .deny
        .apply(&snapshot::build(&cfg, Default::default(), 2).deny)
        .unwrap();
    assert_eq!((report.added, report.updated, report.removed), (1, 2, 1));
    assert_eq!(run(&dp, &denied).unwrap().0, Verdict::Pass.action());
    assert_eq!(run(&dp, &newly).unwrap().0, Verdict::Drop.action());

    // Applying the same list again changes nothing.
    let report = dp
        .deny
        .apply(&snapshot::build(&cfg, Default::default(), 3).deny)
        .unwrap();
    assert_eq!((report.added, report.updated, report.removed), (0, 0, 0));
    assert_eq!(dp.deny.len(), 3);
}

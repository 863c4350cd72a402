//! L4 dataplane fixtures (Katran-tester style, stateful): each step is a frame in and the
//! expected reason and frame out; maps seeded from config text by lb-user's production code and
//! run through BPF_PROG_TEST_RUN in a namespace whose routes and neighbours are known. Needs root.

mod l4fix;

use l4fix::{addrs, deltas, neighbour, same_frame, Pkt, World, LB0_MAC, LB1_MAC};
use lb_common::Reason;
use lb_tests::packet::{verify_checksums, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use lb_user::bpf::{load_config_text, Dataplane};
use std::collections::HashMap;
use std::net::SocketAddr;

const CONFIG: &str = r#"
clusters:
  - {name: web, endpoints: [{address: "10.1.0.10:8080"}, {address: "10.1.0.11:8080"}, {address: "10.1.0.12:8080"}]}
  - {name: dns, endpoints: [{address: "10.1.0.10:5353"}]}
  - {name: local, endpoints: [{address: "10.0.0.20:80"}]}
  - {name: unresolved, endpoints: [{address: "10.1.0.99:80"}]}
  - {name: blackholed, endpoints: [{address: "10.8.0.1:80"}]}
  - {name: drained, endpoints: [{address: "10.1.0.12:80", weight: 0}]}
  - {name: guarded, endpoints: [{address: "10.1.0.11:80"}]}
  - {name: web6, endpoints: [{address: "[fd01::10]:8080"}, {address: "[fd01::11]:8080"}]}
  - {name: dns6, endpoints: [{address: "[fd01::10]:5353"}]}
l4_services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp, cluster: web, maglev_size: 251}
  - {name: dns, vip: 10.96.0.10, port: 53, protocol: udp, cluster: dns, maglev_size: 251}
  - {name: local, vip: 10.96.0.11, port: 80, protocol: tcp, cluster: local, maglev_size: 251}
  - {name: unresolved, vip: 10.96.0.12, port: 80, protocol: tcp, cluster: unresolved, maglev_size: 251}
  - {name: blackholed, vip: 10.96.0.13, port: 80, protocol: tcp, cluster: blackholed, maglev_size: 251}
  - {name: drained, vip: 10.96.0.14, port: 80, protocol: tcp, cluster: drained, maglev_size: 251}
  - {name: guarded, vip: 10.96.0.15, port: 80, protocol: tcp, cluster: guarded, maglev_size: 251}
  - {name: web6, vip: "fd96::10", port: 80, protocol: tcp, cluster: web6, maglev_size: 251}
  - {name: dns6, vip: "fd96::10", port: 53, protocol: udp, cluster: dns6, maglev_size: 251}
xdp:
  deny: [192.0.2.0/24]
  l4:
    snat_v4: 10.1.0.2
    snat_v6: "fd01::2"
    nat_ports: 20000-29999
    flows: 4096
    ring_slots: 8192
  rate_limit: {new_flows_per_second: 1, burst: 2, protect: ["10.96.0.15:80/tcp"]}
"#;

const WEB: &[&str] = &["10.1.0.10:8080", "10.1.0.11:8080", "10.1.0.12:8080"];
const WEB6: &[&str] = &["[fd01::10]:8080", "[fd01::11]:8080"];
const NAT_PORTS: std::ops::RangeInclusive<u16> = 20000..=29999;

/// What a step expects.
#[derive(Clone, Copy)]
enum Want {
    /// Verdict from the reason; a passed frame leaves unchanged, a dropped one is gone.
    Same(Reason),
    /// Translated toward one of `to` (SNAT from the node); `flow` names the connection:
    /// a later step with the same name must get the same endpoint and port unless `fresh`.
    Nat {
        reason: Reason,
        flow: &'static str,
        to: &'static [&'static str],
        fresh: bool,
    },
    /// Translated but handed to the stack (no TTL decrement, MACs untouched).
    NatPass {
        reason: Reason,
        flow: &'static str,
        to: &'static [&'static str],
    },
}

enum Input {
    /// From the client side (lb0).
    Client(Pkt),
    /// The endpoint of `flow` answers its NAT'd packet (arrives on that endpoint's side).
    Reply { flow: &'static str, flags: u8 },
}

struct Step {
    name: &'static str,
    input: Input,
    want: Want,
}

fn step(name: &'static str, p: Pkt, want: Want) -> Step {
    Step {
        name,
        input: Input::Client(p),
        want,
    }
}

fn reply(name: &'static str, flow: &'static str, flags: u8, reason: Reason) -> Step {
    Step {
        name,
        input: Input::Reply { flow, flags },
        want: Want::Same(reason),
    }
}

const fn nat(reason: Reason, flow: &'static str, to: &'static [&'static str]) -> Want {
    Want::Nat {
        reason,
        flow,
        to,
        fresh: false,
    }
}

const fn fresh(reason: Reason, flow: &'static str, to: &'static [&'static str]) -> Want {
    Want::Nat {
        reason,
        flow,
        to,
        fresh: true,
    }
}

/// A flow as the dataplane translated it: the client's packet, the endpoint and node port.
#[derive(Clone, Copy)]
struct Seen {
    client: Pkt,
    endpoint: SocketAddr,
    nat: SocketAddr,
}

#[rustfmt::skip] // one step per line: the table is the point
fn steps() -> Vec<Step> {
    use Reason::*;
    let syn = |sport: u16| Pkt::tcp(&format!("10.0.0.1:{sport}"), "10.96.0.10:80", TCP_SYN);
    let ack = |sport: u16| Pkt::tcp(&format!("10.0.0.1:{sport}"), "10.96.0.10:80", TCP_ACK);
    let web6 = |flags| Pkt::tcp("[fd00::1]:41000", "[fd96::10]:80", flags);
    vec![
        step("SYN to a VIP: new flow, NAT'd, redirected to the endpoint side", syn(40001), fresh(L4Redirect, "a", WEB)),
        step("ACK of the same flow: same endpoint, same node port", ack(40001), nat(L4Redirect, "a", WEB)),
        step("data of the same flow", ack(40001).payload(b"GET / HTTP/1.1\r\n\r\n"), nat(L4Redirect, "a", WEB)),
        step("retransmitted SYN keeps its endpoint", syn(40001), nat(L4Redirect, "a", WEB)),
        reply("SYN-ACK from the endpoint: back to the client from the VIP", "a", TCP_SYN | TCP_ACK, L4ReplyRedirect),
        reply("reply data from the endpoint", "a", TCP_ACK | TCP_PSH, L4ReplyRedirect),
        step("second client port: a new flow", syn(40002), fresh(L4Redirect, "b", WEB)),
        step("third client port", syn(40003), fresh(L4Redirect, "c", WEB)),
        step("fourth client port", syn(40004), fresh(L4Redirect, "d", WEB)),
        step("fifth client port", syn(40005), fresh(L4Redirect, "e", WEB)),
        step("sixth client port", syn(40006), fresh(L4Redirect, "f", WEB)),
        step("another client address", Pkt::tcp("10.0.0.3:40001", "10.96.0.10:80", TCP_SYN), fresh(L4Redirect, "g", WEB)),
        step("ACK of flow b", ack(40002), nat(L4Redirect, "b", WEB)),
        reply("reply on flow g", "g", TCP_SYN | TCP_ACK, L4ReplyRedirect),
        step("ACK without a flow: not ours to open, passed", ack(40999), Want::Same(L4NoFlow)),
        step("RST without a flow: passed", Pkt::tcp("10.0.0.1:40998", "10.96.0.10:80", TCP_RST), Want::Same(L4NoFlow)),
        step("SYN to the VIP on a port with no service", Pkt::tcp("10.0.0.1:40001", "10.96.0.10:81", TCP_SYN), Want::Same(Tcp)),
        step("SYN to an address that is no VIP", Pkt::tcp("10.0.0.1:40001", "10.96.0.99:80", TCP_SYN), Want::Same(Tcp)),
        step("TCP to the UDP service's port: no such service", Pkt::tcp("10.0.0.1:40001", "10.96.0.10:53", TCP_SYN), Want::Same(Tcp)),
        step("UDP datagram to a UDP service: a new flow", Pkt::udp("10.0.0.1:5000", "10.96.0.10:53"), fresh(L4Redirect, "u", &["10.1.0.10:5353"])),
        step("UDP again: same flow", Pkt::udp("10.0.0.1:5000", "10.96.0.10:53"), nat(L4Redirect, "u", &["10.1.0.10:5353"])),
        reply("UDP answer from the endpoint", "u", 0, L4ReplyRedirect),
        step("UDP without a checksum keeps none", Pkt::udp("10.0.0.1:5001", "10.96.0.10:53").zero_csum(), fresh(L4Redirect, "u0", &["10.1.0.10:5353"])),
        reply("UDP answer without a checksum", "u0", 0, L4ReplyRedirect),
        step("UDP from another port: another flow", Pkt::udp("10.0.0.1:5002", "10.96.0.10:53"), fresh(L4Redirect, "u2", &["10.1.0.10:5353"])),
        step("endpoint on the ingress side: XDP_TX", Pkt::tcp("10.0.0.1:40010", "10.96.0.11:80", TCP_SYN), fresh(L4Tx, "tx", &["10.0.0.20:80"])),
        reply("its reply goes back out the same side: XDP_TX", "tx", TCP_SYN | TCP_ACK, L4ReplyTx),
        step("endpoint without a resolved neighbour: translated, stack resolves", Pkt::tcp("10.0.0.1:40011", "10.96.0.12:80", TCP_SYN), Want::NatPass { reason: L4NoNeigh, flow: "nn", to: &["10.1.0.99:80"] }),
        step("endpoint behind a blackhole route: translated, stack decides", Pkt::tcp("10.0.0.1:40012", "10.96.0.13:80", TCP_SYN), Want::NatPass { reason: L4FibFail, flow: "bh", to: &["10.8.0.1:80"] }),
        step("service whose only endpoint has weight 0: no new flow", Pkt::tcp("10.0.0.1:40013", "10.96.0.14:80", TCP_SYN), Want::Same(L4NoEndpoint)),
        step("TTL 1: left to the stack (ICMP time exceeded)", syn(40020).ttl(1), Want::Same(L4TtlExceeded)),
        step("IPv6 SYN to a v6 VIP", web6(TCP_SYN), fresh(L4Redirect, "v6", WEB6)),
        step("IPv6 ACK: same endpoint", web6(TCP_ACK), nat(L4Redirect, "v6", WEB6)),
        step("IPv6 data", web6(TCP_ACK | TCP_PSH).payload(b"hello over v6"), nat(L4Redirect, "v6", WEB6)),
        reply("IPv6 reply", "v6", TCP_SYN | TCP_ACK, L4ReplyRedirect),
        step("IPv6 UDP", Pkt::udp("[fd00::1]:5353", "[fd96::10]:53"), fresh(L4Redirect, "u6", &["[fd01::10]:5353"])),
        reply("IPv6 UDP answer", "u6", 0, L4ReplyRedirect),
        step("IPv6 hop limit 1: left to the stack", web6(TCP_SYN).ttl(1), Want::Same(L4TtlExceeded)),
        step("FIN on flow b: forwarded, entry starts closing", Pkt::tcp("10.0.0.1:40002", "10.96.0.10:80", TCP_FIN | TCP_ACK), nat(L4Redirect, "b", WEB)),
        reply("FIN-ACK back on the closing flow b", "b", TCP_FIN | TCP_ACK, L4ReplyRedirect),
        step("a new SYN on the closed 4-tuple opens a fresh flow", syn(40002), fresh(L4Redirect, "b", WEB)),
        step("RST on flow c: forwarded", Pkt::tcp("10.0.0.1:40003", "10.96.0.10:80", TCP_RST), nat(L4Redirect, "c", WEB)),
        step("late ACK on c within the closing time: still forwarded", ack(40003), nat(L4Redirect, "c", WEB)),
        step("denied source: dropped before any lookup", Pkt::tcp("192.0.2.7:40001", "10.96.0.10:80", TCP_SYN), Want::Same(DenyV4)),
        step("protected VIP: first SYN from 10.0.0.4", Pkt::tcp("10.0.0.4:1", "10.96.0.15:80", TCP_SYN), fresh(L4Redirect, "r1", &["10.1.0.11:80"])),
        step("protected VIP: second SYN (burst 2)", Pkt::tcp("10.0.0.4:2", "10.96.0.15:80", TCP_SYN), fresh(L4Redirect, "r2", &["10.1.0.11:80"])),
        step("protected VIP: third SYN over the rate: dropped", Pkt::tcp("10.0.0.4:3", "10.96.0.15:80", TCP_SYN), Want::Same(RateLimited)),
        step("protected VIP: established flow r1 is not limited", Pkt::tcp("10.0.0.4:1", "10.96.0.15:80", TCP_ACK), nat(L4Redirect, "r1", &["10.1.0.11:80"])),
        step("protected VIP: another source has its own bucket", Pkt::tcp("10.0.0.3:3", "10.96.0.15:80", TCP_SYN), fresh(L4Redirect, "r3", &["10.1.0.11:80"])),
        step("unprotected VIP: the limited source still connects", Pkt::tcp("10.0.0.4:4", "10.96.0.10:80", TCP_SYN), fresh(L4Redirect, "r4", WEB)),
        step("VLAN-tagged frame to a VIP: left to the stack", Pkt::tcp("10.0.0.1:40030", "10.96.0.10:80", TCP_SYN), Want::Same(Tcp)),
    ]
}

fn load(world: &World) -> Dataplane {
    let mut dp = load_config_text(CONFIG).expect("load + seed from config (root needed)");
    world.attach(&mut dp);
    dp
}

#[test]
fn l4_fixture_table() {
    lb_tests::require_root();
    let world = World::new("fx");
    let dp = load(&world);
    let table = steps();
    assert!(
        table.len() >= 40,
        "the issue asks for at least 40 L4 fixtures"
    );
    let mut flows: HashMap<&str, Seen> = HashMap::new();
    let mut failed = Vec::new();
    for (i, s) in table.iter().enumerate() {
        let vlan = s.name.starts_with("VLAN");
        match check(&world, &dp, s, vlan, &mut flows) {
            Ok(()) => println!("ok    {i:>2} {}", s.name),
            Err(e) => {
                println!("FAIL  {i:>2} {}: {e}", s.name);
                failed.push(s.name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} steps failed: {failed:?}",
        failed.len(),
        table.len()
    );
    // Every L4 reason a valid config can produce is covered (`l4_no_port` by its own test;
    // `l4_no_snat` needs a service without a source address, which validation refuses).
    for reason in Reason::ALL
        .iter()
        .filter(|r| r.index() >= Reason::L4Tx.index())
    {
        let covered = table.iter().any(|s| s.want_reason() == *reason);
        let elsewhere = matches!(reason, Reason::L4NoPort | Reason::L4NoSnat);
        assert!(covered || elsewhere, "no L4 fixture for {}", reason.name());
    }
}

impl Step {
    fn want_reason(&self) -> Reason {
        match self.want {
            Want::Same(r) | Want::Nat { reason: r, .. } | Want::NatPass { reason: r, .. } => r,
        }
    }
}

fn check(
    world: &World,
    dp: &Dataplane,
    s: &Step,
    vlan: bool,
    flows: &mut HashMap<&'static str, Seen>,
) -> Result<(), String> {
    let (frame, ingress, expect_out) = match &s.input {
        Input::Client(p) => {
            let packet = if vlan { p.packet().vlan(7) } else { p.packet() };
            (packet.build(), world.lb0, None)
        }
        Input::Reply { flow, flags } => {
            let seen = flows.get(flow).ok_or("reply to a flow never seen")?;
            let answer = Pkt {
                flags: *flags,
                payload: b"answer",
                ..seen.client
            }
            .moved(seen.endpoint, seen.nat);
            let (_, dev) = neighbour(seen.endpoint.ip()).ok_or("endpoint has no neighbour")?;
            let ingress = if dev == "lb0" { world.lb0 } else { world.lb1 };
            // Back to the client, from the VIP, one hop less, out of the client side.
            let back = answer.moved(seen.client.dst, seen.client.src).ttl(63);
            let (cmac, _) = neighbour(seen.client.src.ip()).ok_or("client has no neighbour")?;
            let out = back.packet().src_mac(LB0_MAC).dst_mac(cmac).build();
            (answer.packet().build(), ingress, Some(out))
        }
    };
    let stats = dp.stats();
    let before = stats.read().map_err(|e| e.to_string())?;
    let (action, out) = world.run(dp, ingress, &frame)?;
    let after = stats.read().map_err(|e| e.to_string())?;
    let reason = s.want_reason();
    if action != reason.verdict().action() {
        return Err(format!(
            "action {action}, want {} ({})",
            reason.verdict().action(),
            reason.name()
        ));
    }
    let moved = deltas(&before, &after);
    if moved != vec![(reason, 1)] {
        return Err(format!("counted {moved:?}, want one {}", reason.name()));
    }
    if let Some(expected) = expect_out {
        verify_checksums(&out)?;
        return same_frame(&out, &expected);
    }
    let Input::Client(p) = &s.input else {
        unreachable!("replies returned above")
    };
    match s.want {
        Want::Same(_) => {
            if reason.verdict() == lb_common::Verdict::Pass && out != frame {
                return Err("a passed frame was modified".into());
            }
            Ok(())
        }
        Want::Nat {
            flow, to, fresh, ..
        } => nat_out(flows, flow, to, fresh, *p, &out, true),
        Want::NatPass { flow, to, .. } => nat_out(flows, flow, to, true, *p, &out, false),
    }
}

/// Checks a translated client packet: endpoint allowed, node source port in range, sticky per
/// flow, and byte-for-byte the frame a correct NAT produces (checksums recomputed from scratch).
fn nat_out(
    flows: &mut HashMap<&'static str, Seen>,
    flow: &'static str,
    to: &[&str],
    fresh: bool,
    p: Pkt,
    out: &[u8],
    forwarded: bool,
) -> Result<(), String> {
    verify_checksums(out)?;
    let (src, dst) = addrs(out)?;
    if !to.iter().any(|t| t.parse::<SocketAddr>().ok() == Some(dst)) {
        return Err(format!("sent to {dst}, want one of {to:?}"));
    }
    let snat: std::net::IpAddr = if dst.is_ipv4() {
        "10.1.0.2".parse().unwrap()
    } else {
        "fd01::2".parse().unwrap()
    };
    if src.ip() != snat || !NAT_PORTS.contains(&src.port()) {
        return Err(format!(
            "source {src}, want {snat} with a port in {NAT_PORTS:?}"
        ));
    }
    match flows.get(flow) {
        Some(seen) if !fresh && (seen.endpoint, seen.nat) != (dst, src) => {
            return Err(format!(
                "flow moved from {} via {} to {dst} via {src}",
                seen.endpoint, seen.nat
            ))
        }
        Some(seen) if fresh && seen.nat == src => {
            return Err(format!(
                "a fresh flow reused node port {src} of the closing one"
            ))
        }
        _ => {}
    }
    flows.insert(
        flow,
        Seen {
            client: p,
            endpoint: dst,
            nat: src,
        },
    );
    let translated = p.moved(src, dst);
    let expected = if forwarded {
        let (mac, dev) = neighbour(dst.ip()).ok_or("endpoint has no neighbour")?;
        let smac = if dev == "lb0" { LB0_MAC } else { LB1_MAC };
        translated
            .ttl(p.ttl - 1)
            .packet()
            .src_mac(smac)
            .dst_mac(mac)
            .build()
    } else {
        translated.packet().build()
    };
    same_frame(out, &expected)
}

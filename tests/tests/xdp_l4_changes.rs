//! L4 dataplane over time: ring changes keep old flows (gone endpoints re-picked, weight 0
//! drains), NAT ports run out, entries expire, the all-sources rate limit, and the counters.

mod l4fix;

use l4fix::{deltas, Pkt, World};
use lb_common::Reason;
use lb_tests::packet::{TCP_ACK, TCP_RST, TCP_SYN};
use lb_user::bpf::{load_config_text, Dataplane};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

fn config(endpoints: &[(&str, u32)], extra: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(a, w)| format!("{{address: \"{a}\", weight: {w}}}"))
        .collect();
    format!(
        r#"
clusters:
  - {{name: web, endpoints: [{}]}}
  - {{name: dns, endpoints: [{{address: "10.1.0.10:5353"}}]}}
l4_services:
  - {{name: web, vip: 10.96.0.10, port: 80, protocol: tcp, cluster: web, maglev_size: 1009}}
  - {{name: dns, vip: 10.96.0.10, port: 53, protocol: udp, cluster: dns, maglev_size: 251}}
xdp:
  l4:
    snat_v4: 10.1.0.2
    flows: 4096
    ring_slots: 8192
{extra}"#,
        eps.join(", ")
    )
}

const NAT: &str = "    nat_ports: 20000-29999\n";

/// Sends a client frame; returns the reason counted and, when translated, (node port, endpoint).
fn send(world: &World, dp: &Dataplane, p: Pkt) -> (Reason, Option<(SocketAddr, SocketAddr)>) {
    let stats = dp.stats();
    let before = stats.read().expect("stats");
    let (_, out) = world.run(dp, world.lb0, &p.frame()).expect("test_run");
    let moved = deltas(&before, &stats.read().expect("stats"));
    assert_eq!(moved.len(), 1, "one reason per packet: {moved:?}");
    let reason = moved[0].0;
    let translated = matches!(reason, Reason::L4Redirect | Reason::L4Tx);
    (reason, translated.then(|| addrs4(&out)))
}

fn addrs4(f: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = |a: usize| [f[a], f[a + 1], f[a + 2], f[a + 3]];
    let port = |a: usize| u16::from_be_bytes([f[a], f[a + 1]]);
    let src = SocketAddr::from((ip(26), port(34)));
    let dst = SocketAddr::from((ip(30), port(36)));
    (src, dst)
}

fn tcp(sport: u16, flags: u8) -> Pkt {
    Pkt::tcp(&format!("10.0.0.1:{sport}"), "10.96.0.10:80", flags)
}

fn ep(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn ring_changes_keep_old_flows_and_move_only_the_gone_endpoints() {
    lb_tests::require_root();
    let world = World::new("rc");
    let three = [
        ("10.1.0.10:8080", 1),
        ("10.1.0.11:8080", 1),
        ("10.1.0.12:8080", 1),
    ];
    let mut dp = load_config_text(&config(&three, NAT)).expect("load");
    world.attach(&mut dp);
    let ports = 41000..41090u16;
    let mut at: HashMap<u16, SocketAddr> = HashMap::new();
    for sp in ports.clone() {
        let (r, out) = send(&world, &dp, tcp(sp, TCP_SYN));
        assert_eq!(r, Reason::L4Redirect, "SYN {sp}");
        at.insert(sp, out.expect("translated").1);
    }
    for e in three {
        let n = at.values().filter(|a| **a == ep(e.0)).count();
        assert!(
            n >= 15,
            "{} got {n} of 90 flows: the ring should spread them",
            e.0
        );
    }

    // A fourth endpoint: every existing flow stays where it is.
    let four = [three[0], three[1], three[2], ("10.1.0.13:8080", 1)];
    dp.apply_config_text(&config(&four, NAT))
        .expect("add endpoint");
    for sp in ports.clone() {
        let (_, out) = send(&world, &dp, tcp(sp, TCP_ACK));
        assert_eq!(
            out.map(|o| o.1),
            Some(at[&sp]),
            "flow {sp} moved when an endpoint was added"
        );
    }
    let new_on_13 = (42000..42060u16)
        .filter(|sp| {
            send(&world, &dp, tcp(*sp, TCP_SYN)).1.map(|o| o.1) == Some(ep("10.1.0.13:8080"))
        })
        .count();
    assert!(new_on_13 > 0, "the added endpoint takes new flows");

    // 10.1.0.11 leaves: its flows are re-picked, every other flow stays.
    let without_11 = [three[0], three[2], four[3]];
    dp.apply_config_text(&config(&without_11, NAT))
        .expect("remove endpoint");
    let mut repicked = 0;
    for sp in ports.clone() {
        let (r, out) = send(&world, &dp, tcp(sp, TCP_ACK));
        assert_eq!(r, Reason::L4Redirect, "flow {sp}");
        let now = out.expect("translated").1;
        if at[&sp] == ep("10.1.0.11:8080") {
            assert_ne!(now, at[&sp], "flow {sp} still sent to the removed endpoint");
            repicked += 1;
        } else {
            assert_eq!(now, at[&sp], "flow {sp} moved although its endpoint stayed");
        }
    }
    assert!(
        repicked >= 15,
        "only {repicked} flows were on the removed endpoint"
    );
    for sp in 43000..43060u16 {
        let out = send(&world, &dp, tcp(sp, TCP_SYN)).1.expect("translated");
        assert_ne!(
            out.1,
            ep("10.1.0.11:8080"),
            "new flow {sp} sent to the removed endpoint"
        );
    }

    // Weight 0 drains 10.1.0.12: its flows stay, new flows never go there.
    let drained = [three[0], ("10.1.0.12:8080", 0), four[3]];
    dp.apply_config_text(&config(&drained, NAT))
        .expect("drain endpoint");
    for sp in ports.clone().filter(|sp| at[sp] == ep("10.1.0.12:8080")) {
        let out = send(&world, &dp, tcp(sp, TCP_ACK)).1.expect("translated");
        assert_eq!(out.1, ep("10.1.0.12:8080"), "draining flow {sp} moved");
    }
    for sp in 44000..44060u16 {
        let out = send(&world, &dp, tcp(sp, TCP_SYN)).1.expect("translated");
        assert_ne!(
            out.1,
            ep("10.1.0.12:8080"),
            "new flow {sp} sent to a drained endpoint"
        );
    }
}

#[test]
fn nat_ports_run_out_cleanly() {
    lb_tests::require_root();
    let world = World::new("np");
    let one = [("10.1.0.10:8080", 1)];
    let mut dp = load_config_text(&config(&one, "    nat_ports: 20000-20001\n")).expect("load");
    world.attach(&mut dp);
    let mut used = Vec::new();
    let mut refused = 0;
    for sp in 45000..45010u16 {
        match send(&world, &dp, tcp(sp, TCP_SYN)) {
            (Reason::L4Redirect, Some((nat, _))) => used.push(nat.port()),
            (Reason::L4NoPort, None) => refused += 1,
            other => panic!("SYN {sp}: {other:?}"),
        }
    }
    used.sort_unstable();
    used.dedup();
    assert!(used.iter().all(|p| (20000..=20001).contains(p)), "{used:?}");
    assert!(
        refused >= 8,
        "two node ports serve at most two flows to one endpoint; refused {refused}"
    );
    let (r, _) = send(&world, &dp, tcp(45000, TCP_ACK));
    assert_eq!(
        r,
        Reason::L4Redirect,
        "established flows keep working while ports are exhausted"
    );
}

#[test]
fn entries_expire_and_closing_flows_end() {
    lb_tests::require_root();
    let world = World::new("ex");
    // Timeouts long enough that two packets sent back to back on a loaded machine stay within
    // them, short enough to wait out.
    let timeouts = format!("{NAT}    udp_timeout: 1s\n    tcp_closing_timeout: 1s\n");
    let mut dp = load_config_text(&config(&[("10.1.0.10:8080", 1)], &timeouts)).expect("load");
    world.attach(&mut dp);
    let reader = dp.l4_reader();
    let dns = reader
        .labels()
        .services
        .iter()
        .find(|s| &*s.1 == "dns")
        .expect("dns id")
        .0;
    let udp = Pkt::udp("10.0.0.1:5000", "10.96.0.10:53");
    assert_eq!(send(&world, &dp, udp).0, Reason::L4Redirect);
    assert_eq!(send(&world, &dp, udp).0, Reason::L4Redirect);
    assert_eq!(
        reader.service(dns).expect("stats").flows,
        1,
        "a datagram in time joins its flow"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(send(&world, &dp, udp).0, Reason::L4Redirect);
    assert_eq!(
        reader.service(dns).expect("stats").flows,
        2,
        "after the UDP timeout it is a new flow"
    );

    assert_eq!(send(&world, &dp, tcp(46000, TCP_SYN)).0, Reason::L4Redirect);
    assert_eq!(send(&world, &dp, tcp(46000, TCP_RST)).0, Reason::L4Redirect);
    assert_eq!(
        send(&world, &dp, tcp(46000, TCP_ACK)).0,
        Reason::L4Redirect,
        "within closing time"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        send(&world, &dp, tcp(46000, TCP_ACK)).0,
        Reason::L4NoFlow,
        "a reset flow ends"
    );
}

#[test]
fn rate_limit_for_all_sources_and_per_service_counters() {
    lb_tests::require_root();
    let world = World::new("rl");
    let limit = format!("{NAT}  rate_limit: {{new_flows_per_second: 1, burst: 3}}\n");
    let mut dp = load_config_text(&config(&[("10.1.0.10:8080", 1)], &limit)).expect("load");
    world.attach(&mut dp);
    // SYNs until the first drop (bounded): the burst of 3 passes, then new flows are dropped;
    // at 1 flow/s, the time the loop took may have earned one more per second.
    let start = std::time::Instant::now();
    let mut passed = 0u64;
    for sp in 47000..47050u16 {
        match send(&world, &dp, tcp(sp, TCP_SYN)).0 {
            Reason::L4Redirect => passed += 1,
            Reason::RateLimited => break,
            other => panic!("SYN {sp}: {other:?}"),
        }
    }
    let earned = start.elapsed().as_secs() + 1;
    assert!(
        (3..=3 + earned).contains(&passed),
        "{passed} new flows passed a burst of 3"
    );
    // Not a service: a SYN from the same source is limited too (unless a second went by and
    // earned a token); another source is not.
    let other = Pkt::tcp("10.0.0.1:47100", "10.0.0.2:22", TCP_SYN);
    let at = std::time::Instant::now();
    let r = send(&world, &dp, other).0;
    assert!(
        r == Reason::RateLimited || at.elapsed() >= Duration::from_secs(1),
        "{r:?}"
    );
    let fresh = Pkt::tcp("10.0.0.3:47100", "10.0.0.2:22", TCP_SYN);
    assert_eq!(send(&world, &dp, fresh).0, Reason::Tcp);
    // An established flow is never limited.
    assert_eq!(send(&world, &dp, tcp(47000, TCP_ACK)).0, Reason::L4Redirect);

    let reader = dp.l4_reader();
    let labels = reader.labels();
    let web = labels
        .services
        .iter()
        .find(|s| &*s.1 == "web")
        .expect("web id")
        .0;
    let s = reader.service(web).expect("service stats");
    let sent = passed + 1;
    assert_eq!(
        (s.packets, s.flows),
        (sent, passed),
        "SYNs and 1 ACK forwarded: {s:?}"
    );
    assert_eq!(s.bytes, sent * 54, "bytes of 54-byte frames");
    let e = labels
        .endpoints
        .iter()
        .find(|e| &*e.service == "web")
        .expect("endpoint id");
    assert_eq!(
        reader.endpoint(e.id).expect("endpoint stats"),
        s,
        "one endpoint carries it all"
    );
}

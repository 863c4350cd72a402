//! L4 view tests: keys and settings as the XDP program reads them, who is in the ring, and rings
//! reused (same allocation) unless their service's (endpoint, weight) list changed.

use super::*;
use crate::config::parse;
use crate::health::{EpHealth, HealthView};
use crate::runtime::{Override, Overrides, WeightSetting};
use crate::snapshot::{build, view::SCALE, Snapshot};
use std::time::Instant;

const CFG: &str = r#"
l4_services:
  - {name: dns, vip: 10.96.0.10, port: 53, protocol: udp, cluster: dns, maglev_size: 1009}
  - {name: web, vip: "fd00::80", port: 443, protocol: tcp, cluster: web, maglev_size: 101}
clusters:
  - name: dns
    endpoints:
      - {address: "10.1.0.1:53", name: a}
      - {address: "10.1.0.2:53", weight: 3}
      - {address: "10.1.0.3:53", weight: 0}
  - name: web
    endpoints: [{address: "[fd00::1]:8443"}, {address: "[fd00::2]:8443"}]
xdp:
  l4: {snat_v4: 10.0.0.2, snat_v6: "fd00::2", nat_ports: 20000-20999, udp_timeout: 5s}
  rate_limit: {new_flows_per_second: 1000, burst: 5, protect: ["[fd00::80]:443/tcp", "10.96.0.10:53/udp"]}
"#;

fn snap(yaml: &str) -> Snapshot {
    build(&parse(yaml).unwrap(), Default::default(), 1)
}

fn counts(s: &L4ServiceView) -> Vec<usize> {
    let mut c = vec![0; s.endpoints.len()];
    for &i in s.ring.iter() {
        c[i as usize] += 1;
    }
    c
}

#[test]
fn keys_endpoints_and_rings() {
    let s = snap(CFG);
    let dns = &s.l4.services[0];
    assert_eq!(&*dns.name, "dns");
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 96, 0, 10]);
    assert_eq!(
        dns.key,
        ServiceKey {
            addr,
            port: 53u16.to_be(),
            proto: lb_common::PROTO_UDP,
            family: FAMILY_V4
        }
    );
    assert_eq!(dns.maglev_size, 1009);
    assert_eq!(dns.ring.len(), 1009);
    assert_eq!(&*dns.endpoints[0].name, "a");
    assert_eq!(&*dns.endpoints[1].name, "10.1.0.2:53");
    let eff: Vec<u32> = dns.endpoints.iter().map(|e| e.effective / SCALE).collect();
    assert_eq!(eff, [1, 3, 0]);
    // Weight 3 gets about three times the slots; weight 0 none (but stays listed: live).
    let c = counts(dns);
    assert_eq!(c[2], 0);
    assert!((c[1] as f64 / c[0] as f64 - 3.0).abs() < 0.1, "{c:?}");
    let web = &s.l4.services[1];
    assert_eq!(web.key.family, FAMILY_V6);
    assert_eq!(
        web.key.addr,
        "fd00::80".parse::<std::net::Ipv6Addr>().unwrap().octets()
    );
    assert_eq!(web.key.proto, lb_common::PROTO_TCP);
}

#[test]
fn settings_for_the_xdp_program() {
    let s = snap(CFG);
    let c = &s.l4.settings;
    assert_eq!(c.snat_v4, [10, 0, 0, 2]);
    assert_eq!(c.snat_v6[0..2], [0xfd, 0]);
    assert_eq!((c.port_min, c.port_max), (20000, 20999));
    assert_eq!(c.udp_timeout_ns, 5_000_000_000);
    assert_eq!(c.tcp_timeout_ns, 3_600_000_000_000);
    assert_eq!(c.tcp_closing_ns, 10_000_000_000);
    assert_eq!(c.rate_interval_ns, 1_000_000);
    assert_eq!(c.rate_tolerance_ns, 4_000_000, "interval x (burst - 1)");
    assert_eq!(c.flags, CFG_SNAT_V4 | CFG_SNAT_V6 | CFG_RATE_PROTECTED);
    // Sorted by family first: the IPv4 destination, then the IPv6 one.
    assert_eq!(s.l4.protect.len(), 2);
    assert_eq!(s.l4.protect[0].family, FAMILY_V4);
    assert_eq!(s.l4.protect[1].port, 443u16.to_be());

    let plain = snap("xdp: {rate_limit: {new_flows_per_second: 3}}\n");
    assert_eq!(
        plain.l4.settings.flags, CFG_RATE_ALL,
        "no snat, no protect list"
    );
    assert_eq!(plain.l4.settings.rate_interval_ns, 333_333_333);
    assert_eq!(plain.l4.settings.rate_tolerance_ns, 666_666_666);
    assert!(plain.l4.protect.is_empty() && plain.l4.services.is_empty());
    assert_eq!(snap("").l4.settings.flags, 0, "no rate limit: interval 0");
}

fn ep_key(s: &Snapshot, cluster: usize, ep: usize) -> crate::health::EpKey {
    let c = &s.config.clusters[cluster];
    (c.name.as_str().into(), c.endpoints[ep].address)
}

#[test]
fn down_and_drained_endpoints_leave_the_ring_but_stay_listed() {
    let s = snap(CFG);
    let mut h = HealthView::default();
    let down = EpHealth {
        ejected: Some("test".into()),
        ..Default::default()
    };
    h.endpoints.insert(ep_key(&s, 0, 1), down);
    let d = s.derive(s.overrides.clone(), Arc::new(h), Instant::now(), 2);
    let dns = &d.l4.services[0];
    assert_eq!(dns.endpoints.len(), 3);
    assert_eq!(dns.endpoints[1].state, EpState::Down);
    assert_eq!(counts(dns), [1009, 0, 0]);
    // Everything out: an empty ring (the service takes no new flows).
    let mut o = Overrides::default();
    o.0.insert(
        ep_key(&s, 0, 0),
        Override {
            weight: Some(WeightSetting::Absolute(0)),
            state: None,
        },
    );
    let d2 = d.derive(Arc::new(o), d.health.clone(), Instant::now(), 3);
    assert!(d2.l4.services[0].ring.is_empty());
    assert_eq!(d2.l4.services[0].endpoints.len(), 3);
}

#[test]
fn rings_are_rebuilt_only_when_their_list_changes() {
    let s = snap(CFG);
    // Nothing changed: the very same view.
    let same = s.derive(s.overrides.clone(), s.health.clone(), Instant::now(), 2);
    assert!(Arc::ptr_eq(&s.l4, &same.l4));
    // One web endpoint's weight changes: web's ring is new, dns's is the same allocation.
    let mut o = Overrides::default();
    o.0.insert(
        ep_key(&s, 1, 0),
        Override {
            weight: Some(WeightSetting::Absolute(5)),
            state: None,
        },
    );
    let d = s.derive(Arc::new(o), s.health.clone(), Instant::now(), 3);
    assert!(!Arc::ptr_eq(&s.l4, &d.l4));
    assert!(Arc::ptr_eq(&s.l4.services[0].ring, &d.l4.services[0].ring));
    assert!(!Arc::ptr_eq(&s.l4.services[1].ring, &d.l4.services[1].ring));
    assert_ne!(s.l4.services[1].ring, d.l4.services[1].ring);
    // A reload of the same file (a fresh build) finds the live rings again.
    let reloaded = snap(CFG);
    assert!(Arc::ptr_eq(
        &s.l4.services[0].ring,
        &reloaded.l4.services[0].ring
    ));
    assert!(Arc::ptr_eq(
        &s.l4.services[1].ring,
        &reloaded.l4.services[1].ring
    ));
    // Another size is another ring.
    let bigger = snap(&CFG.replace("maglev_size: 1009", "maglev_size: 1013"));
    assert_eq!(bigger.l4.services[0].ring.len(), 1013);
    assert!(Arc::ptr_eq(
        &s.l4.services[1].ring,
        &bigger.l4.services[1].ring
    ));
}

#[test]
fn every_node_builds_the_same_ring_whatever_the_endpoint_order() {
    let a = snap(CFG);
    let b = snap(&CFG.replace(
        "[{address: \"[fd00::1]:8443\"}, {address: \"[fd00::2]:8443\"}]",
        "[{address: \"[fd00::2]:8443\"}, {address: \"[fd00::1]:8443\"}]",
    ));
    let (ra, rb) = (&a.l4.services[1], &b.l4.services[1]);
    assert_ne!(ra.endpoints[0].addr, rb.endpoints[0].addr, "order differs");
    let owners = |s: &L4ServiceView| -> Vec<std::net::SocketAddr> {
        s.ring
            .iter()
            .map(|&i| s.endpoints[i as usize].addr)
            .collect()
    };
    assert_eq!(owners(ra), owners(rb));
}

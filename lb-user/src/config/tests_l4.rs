//! L4 config tests: the operator's example parses with its defaults, and every rule of
//! validate_l4.rs rejects at the field the operator wrote.

use super::tests::{errors, has};
use super::*;
use std::time::Duration;

const GOOD: &str = r#"
l4_services:
  - {name: dns, vip: 10.96.0.10, port: 53, protocol: udp, cluster: dns-pods, maglev_size: 65537}
  - {name: web6, vip: "fd00::80", port: 443, protocol: tcp, cluster: web6}
clusters:
  - name: dns-pods
    endpoints: [{address: "10.1.0.1:53"}, {address: "10.1.0.2:53", weight: 3}]
  - name: web6
    endpoints: [{address: "[fd00::1]:8443"}]
xdp:
  deny: [192.0.2.0/24]
  l4:
    snat_v4: 10.0.0.2
    snat_v6: fd00::2
    nat_ports: 20000-29999
    flows: 262144
    ring_slots: 2097152
    tcp_timeout: 1h
    tcp_closing_timeout: 10s
    udp_timeout: 30s
  rate_limit:
    new_flows_per_second: 100
    burst: 200
    protect: ["10.96.0.10:53/udp", "[fd00::80]:443/tcp"]
"#;

/// `GOOD` with `from` replaced by `to` (which must occur).
fn good_with(from: &str, to: &str) -> Vec<String> {
    assert!(GOOD.contains(from), "{from}");
    errors(&GOOD.replacen(from, to, 1))
}

#[test]
fn operator_example_parses() {
    let cfg = parse(GOOD).unwrap();
    let dns = &cfg.l4_services[0];
    assert_eq!(dns.protocol, L4Protocol::Udp);
    assert_eq!(dns.target().to_string(), "10.96.0.10:53/udp");
    assert_eq!(dns.table_size(2), 65537);
    assert_eq!(
        cfg.l4_services[1].target().to_string(),
        "[fd00::80]:443/tcp"
    );
    let l4 = &cfg.xdp.l4;
    assert_eq!(l4.snat_v4, Some("10.0.0.2".parse().unwrap()));
    assert_eq!(
        l4.nat_ports,
        PortRange {
            min: 20000,
            max: 29999
        }
    );
    assert_eq!(l4.tcp_timeout.0, Duration::from_secs(3600));
    let rl = cfg.xdp.rate_limit.as_ref().unwrap();
    assert_eq!((rl.new_flows_per_second, rl.burst()), (100, 200));
    assert_eq!(rl.protect[1].protocol, L4Protocol::Tcp);
}

#[test]
fn defaults() {
    let cfg = parse(
        "l4_services: [{name: s, vip: 10.0.0.1, port: 80, protocol: tcp, cluster: c}]\nclusters: [{name: c, endpoints: [{address: \"10.1.0.1:80\"}]}]\nxdp: {l4: {snat_v4: 10.0.0.2}, rate_limit: {new_flows_per_second: 7}}\n",
    )
    .unwrap();
    let l4 = &cfg.xdp.l4;
    assert_eq!(l4.flows, lb_common::L4_FLOW_CAPACITY);
    assert_eq!(l4.ring_slots, lb_common::L4_RING_SLOTS);
    assert_eq!(l4.nat_ports.to_string(), "20000-29999");
    assert_eq!(l4.udp_timeout.0, Duration::from_secs(30));
    assert_eq!(l4.tcp_closing_timeout.0, Duration::from_secs(10));
    assert_eq!(
        cfg.xdp.rate_limit.unwrap().burst(),
        7,
        "burst defaults to the rate"
    );
    assert_eq!(cfg.l4_services[0].maglev_size, None);
    // The default table: 65537, or the next prime at or above 100 x endpoints.
    assert_eq!(default_table_size(1), 65537);
    assert_eq!(default_table_size(655), 65537);
    assert_eq!(default_table_size(1000), 100_003);
    assert!(crate::maglev::is_prime(default_table_size(5000) as usize));
    assert!(default_table_size(5000) >= 500_000);
}

#[test]
fn maglev_size_must_be_prime_large_enough_and_bounded() {
    let e = good_with("maglev_size: 65537", "maglev_size: 65536");
    assert_eq!(
        e,
        ["l4_services[0].maglev_size: 65536 is not prime (65537 and 131071 are)"]
    );
    let e = good_with("maglev_size: 65537", "maglev_size: 2");
    assert!(
        has(
            &e,
            "l4_services[0].maglev_size",
            "greater than the cluster's 2"
        ),
        "{e:?}"
    );
    let e = good_with("maglev_size: 65537", "maglev_size: 16777259");
    assert!(
        has(&e, "l4_services[0].maglev_size", "above the maximum"),
        "{e:?}"
    );
}

#[test]
fn duplicate_destination_unknown_cluster_and_bad_port() {
    let e = good_with(
        "vip: \"fd00::80\", port: 443, protocol: tcp, cluster: web6",
        "vip: 10.96.0.10, port: 53, protocol: udp, cluster: nope",
    );
    assert!(
        has(
            &e,
            "l4_services[1].vip",
            "10.96.0.10:53/udp is already l4_services[0]"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "l4_services[1].cluster", "unknown cluster \"nope\""),
        "{e:?}"
    );
    // Same VIP and port, other protocol: a different service.
    let e = good_with(
        "vip: \"fd00::80\", port: 443, protocol: tcp, cluster: web6",
        "vip: 10.96.0.10, port: 53, protocol: tcp, cluster: dns-pods",
    );
    assert!(e.is_empty(), "{e:?}");
    let e = good_with("port: 53,", "port: 0,");
    assert_eq!(e, ["l4_services[0].port: must not be 0"]);
    let e = good_with("port: 53,", "port: 70000,");
    assert!(has(&e, "l4_services[0].port", "70000"), "{e:?}");
    let e = good_with("protocol: udp", "protocol: sctp");
    assert!(has(&e, "l4_services[0].protocol", "sctp"), "{e:?}");
    let e = good_with("name: dns,", "name: web6,");
    assert!(
        has(
            &e,
            "l4_services[1].name",
            "duplicate L4 service name \"web6\""
        ),
        "{e:?}"
    );
}

#[test]
fn a_cluster_that_failed_to_parse_is_not_reported_again() {
    let e = good_with(
        "- name: web6\n",
        "- name: web6\n    connect_timeout: soon\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("clusters[1].connect_timeout"), "{e:?}");
}

#[test]
fn family_mismatch_between_vip_and_endpoints() {
    let e = good_with(
        "{address: \"10.1.0.2:53\", weight: 3}",
        "{address: \"[fd00::9]:53\"}",
    );
    assert_eq!(
        e,
        ["l4_services[0].cluster: endpoint [fd00::9]:53 (clusters[0].endpoints[1]) is IPv6 but the vip 10.96.0.10 is IPv4"]
    );
}

#[test]
fn snat_required_for_each_family_in_use() {
    let e = good_with("    snat_v4: 10.0.0.2\n", "");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        has(
            &e,
            "xdp.l4.snat_v4",
            "required: l4_services[0] (dns) has an IPv4 vip"
        ),
        "{e:?}"
    );
    let e = good_with("    snat_v6: fd00::2\n", "");
    assert!(
        has(
            &e,
            "xdp.l4.snat_v6",
            "l4_services[1] (web6) has an IPv6 vip"
        ),
        "{e:?}"
    );
    // No service of a family: its address is not needed.
    let v4_only = "l4_services: [{name: s, vip: 10.0.0.1, port: 80, protocol: tcp, cluster: c}]\nclusters: [{name: c}]\nxdp: {l4: {snat_v4: 10.0.0.2}}\n";
    assert!(errors(v4_only).is_empty());
    let e = good_with("snat_v4: 10.0.0.2", "snat_v4: fd00::3");
    assert!(has(&e, "xdp.l4.snat_v4", "invalid"), "{e:?}");
}

#[test]
fn bad_port_ranges_name_the_field() {
    for (range, needle) in [
        ("30000-20000", "the first port is above the last"),
        ("0-100", "ports start at 1"),
        ("20000", "expected first-last"),
        ("20000-70000", "expected first-last"),
    ] {
        let e = good_with("nat_ports: 20000-29999", &format!("nat_ports: \"{range}\""));
        assert!(has(&e, "xdp.l4.nat_ports", needle), "{range}: {e:?}");
    }
    assert!(good_with("nat_ports: 20000-29999", "nat_ports: 40000-40000").is_empty());
}

#[test]
fn table_sizes_are_bounded() {
    let e = good_with("flows: 262144", "flows: 10");
    assert!(has(&e, "xdp.l4.flows", "10 is not between 1024"), "{e:?}");
    let e = good_with("ring_slots: 2097152", "ring_slots: 0");
    assert!(has(&e, "xdp.l4.ring_slots", "not between 1"), "{e:?}");
    // Two services of 65537: 4 x 65537 slots needed.
    let e = good_with("ring_slots: 2097152", "ring_slots: 262147");
    assert_eq!(
        e,
        ["xdp.l4.ring_slots: 262147 slots cannot hold the services' rings: they need 2 x their maglev sizes = 262148 (a new ring is written before the old one is freed)"]
    );
    assert!(good_with("ring_slots: 2097152", "ring_slots: 262148").is_empty());
}

#[test]
fn capacities_of_services_and_endpoints() {
    let n = lb_common::L4_SERVICE_CAPACITY as usize + 1;
    let mut y = String::from("clusters: [{name: c}]\nxdp: {l4: {snat_v4: 10.0.0.2, ring_slots: 67108864}}\nl4_services:\n");
    for i in 0..n {
        y += &format!("  - {{name: s{i}, vip: 10.0.{}.{}, port: 80, protocol: tcp, cluster: c, maglev_size: 13}}\n", i / 250, i % 250);
    }
    assert_eq!(
        errors(&y),
        [format!(
            "l4_services: {n} services exceed the capacity of 1024"
        )]
    );

    let per = 2000;
    let mut y = String::from("xdp: {l4: {snat_v4: 10.0.0.2, ring_slots: 67108864}}\nclusters:\n  - name: big\n    endpoints:\n");
    for i in 0..per {
        y += &format!("      - {{address: \"10.2.{}.{}:80\"}}\n", i / 250, i % 250);
    }
    y += "l4_services:\n";
    for i in 0..9 {
        y += &format!(
            "  - {{name: s{i}, vip: 10.0.0.{i}, port: 80, protocol: tcp, cluster: big}}\n"
        );
    }
    let e = errors(&y);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(has(&e, "l4_services", "18000 endpoints in all"), "{e:?}");
}

#[test]
fn vip_taken_by_a_listener_is_rejected() {
    let y = GOOD.replacen(
        "l4_services:",
        "listeners: [{name: h, address: \"[fd00::80]:443\"}]\nl4_services:",
        1,
    );
    let e = errors(&y);
    assert!(
        has(&e, "l4_services[1].vip", "also listeners[0]'s address"),
        "{e:?}"
    );
}

#[test]
fn rate_limit_rules() {
    let e = good_with("new_flows_per_second: 100", "new_flows_per_second: 0");
    assert!(
        has(
            &e,
            "xdp.rate_limit.new_flows_per_second",
            "0 is not between 1"
        ),
        "{e:?}"
    );
    let e = good_with("burst: 200", "burst: 0");
    assert_eq!(e, ["xdp.rate_limit.burst: must be at least 1"]);
    let e = good_with("[fd00::80]:443/tcp", "10.96.0.10:53/udp");
    assert_eq!(
        e,
        ["xdp.rate_limit.protect[1]: 10.96.0.10:53/udp is already protect[0]"]
    );
    for bad in [
        "10.96.0.10:53",
        "10.96.0.10/udp",
        "10.96.0.10:53/icmp",
        "fd00::1:53/tcp",
    ] {
        let e = good_with("\"[fd00::80]:443/tcp\"", &format!("{bad:?}"));
        assert!(
            has(
                &e,
                "xdp.rate_limit.protect[1]",
                "expected address:port/protocol"
            ),
            "{bad}: {e:?}"
        );
    }
    let e = good_with("new_flows_per_second: 100", "requests: 5");
    assert!(has(&e, "xdp.rate_limit", "requests"), "{e:?}");
}

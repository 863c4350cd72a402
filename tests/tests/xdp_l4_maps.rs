//! The L4 maps of the real eBPF object, seeded by lb-user's production path (config text ->
//! snapshot -> Dataplane::apply, as `lb run` does): services, rings, endpoint slots, settings,
//! map sizes, the redirect devmap and the L4 metrics. Needs root; no packet is sent.

use aya::programs::XdpMode;
use lb_common::{EndpointValue, ServiceKey, CFG_RATE_PROTECTED, CFG_SNAT_V4, CFG_SNAT_V6};
use lb_tests::netns::Netns;
use lb_user::bpf::{load_config_text, Dataplane};
use lb_user::{config, snapshot};
use std::collections::HashMap;
use std::time::Instant;

const CFG: &str = r#"
l4_services:
  - {name: dns, vip: 10.96.0.10, port: 53, protocol: udp, cluster: dns, maglev_size: 1009}
  - {name: web, vip: "fd00::80", port: 443, protocol: tcp, cluster: web}
clusters:
  - name: dns
    endpoints:
      - {address: "10.1.0.1:53", name: dns-a}
      - {address: "10.1.0.2:53", name: dns-b, weight: 2}
      - {address: "10.1.0.3:53", name: dns-c, weight: 0}
  - name: web
    endpoints: [{address: "[fd00::1]:8443"}, {address: "[fd00::2]:8443"}]
xdp:
  l4: {snat_v4: 10.0.0.2, snat_v6: "fd00::2", flows: 4096, ring_slots: 262144}
  rate_limit: {new_flows_per_second: 50, protect: ["10.96.0.10:53/udp"]}
"#;

fn view(yaml: &str) -> snapshot::l4::L4View {
    let cfg = config::parse(yaml).expect("test config");
    (*snapshot::build(&cfg, Default::default(), 1).l4).clone()
}

/// The endpoint slots a service's ring names, with how many slots each has.
fn ring_owners(dp: &Dataplane, key: &ServiceKey) -> HashMap<u32, (EndpointValue, usize)> {
    let ops = dp.l4.ops();
    let v = ops.service(key).unwrap().expect("service in LB_L4_SVC");
    let mut out: HashMap<u32, (EndpointValue, usize)> = HashMap::new();
    for id in ops.ring(v.ring_off, v.ring_size).unwrap() {
        let ep = ops.endpoint(id).unwrap();
        out.entry(id).or_insert((ep, 0)).1 += 1;
    }
    out
}

fn port(ep: &EndpointValue) -> u16 {
    u16::from_be(ep.port)
}

#[test]
fn config_text_seeds_services_rings_endpoints_and_settings() {
    let started = Instant::now();
    let dp = load_config_text(CFG).expect("load and seed (root needed)");
    println!(
        "load + first apply (rings of 1009 and 65537 slots): {:?}",
        started.elapsed()
    );
    let want = view(CFG);
    let ops = dp.l4.ops();
    assert_eq!(
        ops.ring_slots(),
        262144,
        "ring array sized by xdp.l4.ring_slots"
    );
    assert_eq!(
        dp.l4_reader().flow_capacity().unwrap(),
        4096,
        "xdp.l4.flows"
    );
    assert_eq!(dp.l4_reader().count_flows(), 0);

    let dns = ring_owners(&dp, &want.services[0].key);
    assert_eq!(dns.len(), 2, "weight 0 is not in the ring");
    let by_addr: HashMap<[u8; 4], usize> = dns
        .values()
        .map(|(e, n)| ([e.addr[0], e.addr[1], e.addr[2], e.addr[3]], *n))
        .collect();
    let (a, b) = (by_addr[&[10, 1, 0, 1]], by_addr[&[10, 1, 0, 2]]);
    assert_eq!(a + b, 1009);
    assert!(
        (b as f64 / a as f64 - 2.0).abs() < 0.05,
        "weights 1:2, slots {a}:{b}"
    );
    for (e, _) in dns.values() {
        assert_eq!((e.live, e.family, port(e)), (1, 4, 53));
        assert!(e.gen > 0);
    }
    let web = ring_owners(&dp, &want.services[1].key);
    let v = ops.service(&want.services[1].key).unwrap().unwrap();
    assert_eq!(v.ring_size, 65537, "default Maglev size");
    assert_eq!(web.len(), 2);
    assert!(web
        .values()
        .all(|(e, _)| e.family == 6 && port(e) == 8443 && e.live == 1));

    let c = ops.config().unwrap();
    assert_eq!(c, want.settings);
    assert_eq!(c.flags, CFG_SNAT_V4 | CFG_SNAT_V6 | CFG_RATE_PROTECTED);
    assert_eq!(ops.protected(), [want.services[0].key]);
    assert!(dp.tx_ports().is_empty(), "nothing attached");

    let labels = dp.l4_reader().labels();
    let names: Vec<&str> = labels.services.iter().map(|s| &*s.1).collect();
    assert_eq!(names, ["dns", "web"]);
    assert_eq!(
        labels.endpoints.len(),
        5,
        "weight-0 endpoints are live and labelled"
    );
    assert_eq!(labels.ring_slots_used, 1009 + 65537);

    // What one default ring costs to write (slots past every allocated region; read back).
    let mut dp = dp;
    let ids: Vec<u32> = (0..65537u32).map(|i| i % 7).collect();
    let started = Instant::now();
    lb_user::bpf::l4::L4Ops::write_ring(dp.l4.ops_mut(), 150_000, &ids).unwrap();
    println!("writing a 65537-slot ring: {:?}", started.elapsed());
    assert_eq!(dp.l4.ops().ring(150_000, 65537).unwrap(), ids);
}

#[test]
fn a_reload_writes_new_rings_and_kills_removed_endpoints_last() {
    let mut dp = load_config_text(CFG).expect("load and seed (root needed)");
    let key = view(CFG).services[0].key;
    let before = dp.l4.ops().service(&key).unwrap().unwrap();
    let gone = dp
        .l4_reader()
        .labels()
        .endpoints
        .iter()
        .find(|e| &*e.endpoint == "dns-a")
        .map(|e| e.id)
        .unwrap();
    let gone_before = dp.l4.ops().endpoint(gone).unwrap();
    let next = CFG.replace("      - {address: \"10.1.0.1:53\", name: dns-a}\n", "");
    let started = Instant::now();
    let r = dp.apply_config_text(&next).unwrap();
    println!("reload (one 1009-slot ring): {:?}", started.elapsed());
    let l4 = r.l4.expect("L4 part applied");
    assert_eq!(
        (l4.rings_written, l4.services_updated, l4.endpoints_removed),
        (1, 1, 1)
    );
    assert!(r.deny.is_none() || r.deny == Some(Default::default()));
    let after = dp.l4.ops().service(&key).unwrap().unwrap();
    assert_eq!(after.id, before.id, "stable service id");
    assert_ne!(after.ring_off, before.ring_off, "new ring in a new region");
    let owners = ring_owners(&dp, &key);
    assert_eq!(owners.len(), 1);
    assert!(owners.values().all(|(e, n)| e.addr[3] == 2 && *n == 1009));
    let dead = dp.l4.ops().endpoint(gone).unwrap();
    assert_eq!(dead.live, 0, "removed endpoint's slot is dead");
    assert_eq!(
        dead.gen, gone_before.gen,
        "same generation until the slot is reused"
    );
    assert_eq!(dp.l4_reader().labels().ring_slots_used, 1009 + 65537);
    // The same config again: nothing to write.
    let r = dp.apply_config_text(&next).unwrap();
    assert_eq!(r.l4.unwrap(), Default::default());
    // A weight change in web: one 65537-slot ring rewritten, no endpoint slot touched.
    let heavier = next.replace(
        "{address: \"[fd00::1]:8443\"}",
        "{address: \"[fd00::1]:8443\", weight: 3}",
    );
    let started = Instant::now();
    let l4 = dp.apply_config_text(&heavier).unwrap().l4.unwrap();
    println!("reload (one 65537-slot ring): {:?}", started.elapsed());
    assert_eq!(
        (l4.rings_written, l4.endpoints_added, l4.endpoints_removed),
        (1, 0, 0)
    );
}

#[test]
fn l4_series_in_metrics_follow_the_endpoint_switch() {
    let dp = load_config_text(CFG).expect("load and seed (root needed)");
    let text = lb_user::metrics::Metrics::new(Some(&dp)).encode();
    let l4: Vec<&str> = text.lines().filter(|l| l.starts_with("lb_l4_")).collect();
    // 2 services x 5 + 5 endpoints x 6 + lb_l4_flows + lb_l4_ring_slots_used.
    assert_eq!(l4.len(), 2 * 5 + 5 * 6 + 2, "{l4:#?}");
    for want in [
        "lb_l4_service_packets_total{service=\"dns\",direction=\"to_endpoint\"} 0",
        "lb_l4_service_bytes_total{service=\"web\",direction=\"reply\"} 0",
        "lb_l4_endpoint_weight{service=\"dns\",endpoint=\"dns-b\"} 2.0",
        "lb_l4_endpoint_weight{service=\"dns\",endpoint=\"dns-c\"} 0.0",
        "lb_l4_endpoint_flows_total{service=\"web\",endpoint=\"[fd00::1]:8443\"} 0",
        "lb_l4_ring_slots_used 66546.0",
        "lb_l4_flows 0.0",
    ] {
        assert!(l4.contains(&want), "missing {want}:\n{}", l4.join("\n"));
    }
    let mut dp = dp;
    dp.apply_config_text(&format!("{CFG}metrics: {{endpoint_labels: false}}\n"))
        .unwrap();
    let text = lb_user::metrics::Metrics::new(Some(&dp)).encode();
    let n = text.lines().filter(|l| l.starts_with("lb_l4_")).count();
    assert_eq!(n, 2 * 5 + 2);
}

#[test]
fn attach_adds_the_interface_to_the_redirect_devmap() {
    let ns = Netns::new(&format!("lbl4tx{}", std::process::id())).unwrap();
    ns.ip(&["link", "add", "l4a", "type", "veth", "peer", "name", "l4b"])
        .unwrap();
    ns.ip(&["link", "set", "l4a", "up"]).unwrap();
    ns.ip(&["link", "set", "l4b", "up"]).unwrap();
    // `ip -o link show` starts with "INDEX: NAME@PEER: ...".
    let shown = ns.ip(&["-o", "link", "show", "l4a"]).unwrap();
    let index: u32 = shown.split(':').next().unwrap().trim().parse().unwrap();
    let mut dp = load_config_text(CFG).expect("load and seed (root needed)");
    let ports = ns
        .run(|| {
            dp.attach("l4a", XdpMode::Skb).expect("attach in skb mode");
            dp.tx_ports()
        })
        .unwrap();
    assert_eq!(ports, [index]);
    ns.run(move || drop(dp)).unwrap();
}

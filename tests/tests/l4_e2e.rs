//! L4 services end to end through a node namespace running `lb` with XDP (native and SKB mode):
//! 1050 TCP connections and 300 UDP flows to a VIP spread by weight over three backend
//! namespaces; removing one endpoint keeps every other connection alive and moves only its flows.

use aya::programs::XdpMode;
use lb_common::PROG_XDP_PASS;
use lb_tests::l4world::{who, Answerer, World, BACKENDS};
use lb_tests::lb::Lb;
use lb_tests::netns::attach_xdp;
use lb_tests::{lb_bin, require_root};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 1050;
const UDP_FLOWS: usize = 300;
const T: Duration = Duration::from_secs(3);

/// `tcp`: (backend, weight) of the TCP service; UDP and IPv6 go to all three.
fn config(tcp: &[(usize, u32)]) -> String {
    let eps = |port: u16, v6: bool, set: &[(usize, u32)]| -> String {
        set.iter()
            .map(|(k, w)| {
                let a = if v6 {
                    format!("[fd81:{k}::2]:{port}")
                } else {
                    format!("10.81.{k}.2:{port}")
                };
                format!("{{address: \"{a}\", weight: {w}}}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<(usize, u32)> = (0..BACKENDS).map(|k| (k, 1)).collect();
    format!(
        r#"clusters:
  - {{name: tcp, endpoints: [{}]}}
  - {{name: udp, endpoints: [{}]}}
  - {{name: tcp6, endpoints: [{}]}}
l4_services:
  - {{name: tcp, vip: 10.96.0.1, port: 80, protocol: tcp, cluster: tcp}}
  - {{name: udp, vip: 10.96.0.1, port: 53, protocol: udp, cluster: udp}}
  - {{name: tcp6, vip: "fd96::1", port: 80, protocol: tcp, cluster: tcp6}}
xdp:
  l4: {{snat_v4: 10.81.0.1, snat_v6: "fd81:0::1", nat_ports: 20000-29999}}
"#,
        eps(7000, false, tcp),
        eps(7001, false, &all),
        eps(7000, true, &all)
    )
}

fn connect_many(world: &World, vip: SocketAddr, n: usize) -> Vec<(TcpStream, String)> {
    world
        .client
        .run(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            (0..n)
                .map(|i| {
                    assert!(
                        Instant::now() < deadline,
                        "connections took too long ({i} of {n})"
                    );
                    let mut c = TcpStream::connect_timeout(&vip, T)
                        .unwrap_or_else(|e| panic!("connection {i} to {vip}: {e}"));
                    let name =
                        who(&mut c, T).unwrap_or_else(|| panic!("connection {i}: no answer"));
                    (c, name)
                })
                .collect()
        })
        .expect("in client netns")
}

fn udp_flows(world: &World, n: usize) -> HashMap<String, usize> {
    world
        .client
        .run(move || {
            let mut got = HashMap::new();
            for i in 0..n {
                let s = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .expect("timeout");
                let mut answered = None;
                for _ in 0..3 {
                    s.send_to(b"who\n", "10.96.0.1:53").expect("send");
                    let mut buf = [0u8; 64];
                    if let Ok((len, from)) = s.recv_from(&mut buf) {
                        assert_eq!(
                            from,
                            "10.96.0.1:53".parse().unwrap(),
                            "answer not from the VIP"
                        );
                        answered = Some(String::from_utf8_lossy(&buf[..len]).trim().to_string());
                        break;
                    }
                }
                let name = answered.unwrap_or_else(|| panic!("UDP flow {i}: no answer"));
                *got.entry(name).or_insert(0) += 1;
            }
            got
        })
        .expect("in client netns")
}

fn shares(names: impl Iterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

fn applied(lb: &Lb) -> f64 {
    lb.metric("lb_snapshot_applied_version", &[("consumer", "xdp")])
        .unwrap_or(0.0)
}

fn run(mode: XdpMode, tag: &str) {
    require_root();
    let world = World::new(tag);
    let _answerers: Vec<Answerer> = world
        .backends
        .iter()
        .enumerate()
        .map(|(k, ns)| Answerer::start(ns, &format!("b{k}"), 7000, 7001))
        .collect();
    // Native XDP_REDIRECT into a veth delivers only where the peer runs an XDP program.
    let _peers: Vec<_> = if mode == XdpMode::Driver {
        std::iter::once(&world.client)
            .chain(&world.backends)
            .map(|ns| {
                attach_xdp(ns, "eth0", lb_user::bpf::OBJECT, PROG_XDP_PASS, mode).expect("peer XDP")
            })
            .collect()
    } else {
        Vec::new()
    };
    let ifaces = world.ifaces();
    let mode_arg = if mode == XdpMode::Driver {
        "native"
    } else {
        "skb"
    };
    let mut args: Vec<&str> = ifaces
        .iter()
        .flat_map(|i| ["--iface", i.as_str()])
        .collect();
    args.extend(["--xdp-mode", mode_arg]);
    let weights = [(0, 3), (1, 2), (2, 1)];
    let lb = Lb::start(
        &lb_bin(),
        Some(&world.node),
        &config(&weights),
        "127.0.0.1:9900".parse().unwrap(),
        &args,
    )
    .expect("lb starts");

    let vip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let mut conns = connect_many(&world, vip, CONNECTIONS);
    let got = shares(conns.iter().map(|c| c.1.clone()));
    for (k, w) in weights {
        let share = *got.get(&format!("b{k}")).unwrap_or(&0) as f64 / CONNECTIONS as f64;
        let want = w as f64 / 6.0;
        assert!(
            (share - want).abs() < 0.05,
            "b{k}: {share:.3} of connections, weight share {want:.3}: {got:?}"
        );
    }
    let udp = udp_flows(&world, UDP_FLOWS);
    for k in 0..BACKENDS {
        let n = *udp.get(&format!("b{k}")).unwrap_or(&0);
        assert!(
            n * 5 >= UDP_FLOWS,
            "b{k} got {n} of {UDP_FLOWS} UDP flows: {udp:?}"
        );
    }
    let v6 = connect_many(&world, "[fd96::1]:80".parse().unwrap(), 30);
    assert_eq!(v6.len(), 30, "IPv6 connections answered");

    // The XDP counters saw it: flows created, and nothing fell back to the stack after warm-up.
    let m = lb.metrics().expect("metrics");
    let flows = lb_tests::lb::metric_sum(&m, "lb_l4_service_flows_total", &[("service", "tcp")]);
    assert!(
        flows >= CONNECTIONS as f64,
        "lb_l4_service_flows_total{{service=tcp}} = {flows}"
    );

    // b1 leaves the TCP service.
    let before = applied(&lb);
    lb.reload(&config(&[(0, 3), (2, 1)])).expect("reload");
    let deadline = Instant::now() + Duration::from_secs(10);
    while applied(&lb) <= before {
        assert!(
            Instant::now() < deadline,
            "reload not applied to XDP; log:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut kept, mut moved) = (0, 0);
    for (i, (c, name)) in conns.iter_mut().enumerate() {
        let now = who(c, Duration::from_secs(2));
        if name == "b1" {
            assert_ne!(
                now.as_deref(),
                Some("b1"),
                "connection {i} still reaches the removed b1"
            );
            moved += 1;
        } else {
            assert_eq!(
                now.as_deref(),
                Some(name.as_str()),
                "connection {i} to {name} broke or moved"
            );
            kept += 1;
        }
    }
    assert!(
        moved > 0 && kept + moved == CONNECTIONS,
        "kept {kept}, moved {moved}"
    );
    let fresh = connect_many(&world, vip, 200);
    assert!(
        fresh.iter().all(|c| c.1 != "b1"),
        "a new connection reached the removed b1"
    );
    drop(conns);
    drop(fresh);
    lb.stop(Duration::from_secs(10)).expect("lb stops");
}

#[test]
fn l4_services_native_mode() {
    run(XdpMode::Driver, "nat");
}

#[test]
fn l4_services_skb_mode() {
    run(XdpMode::Skb, "skb");
}

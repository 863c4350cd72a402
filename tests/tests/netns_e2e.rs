//! Real traffic through the node namespace with lb's XDP program attached (native and SKB mode):
//! clients are served by weight over IPv4 and IPv6; a deny-listed client gets no answer and
//! the deny counters rise; a reload lifts the deny live; SIGTERM detaches XDP. Needs root.

use aya::programs::XdpMode;
use lb_common::PROG_XDP_PASS;
use lb_tests::http::{self, Backend, KeepAliveClient};
use lb_tests::lb::Lb;
use lb_tests::netns::{attach_xdp, Topology, TopologyOpts, PEER_IFACE};
use lb_tests::{lb_bin, require_root};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);
const PORT: u16 = 8080;

fn config(backends: &[Backend], deny: &[String]) -> String {
    let eps: Vec<String> = backends
        .iter()
        .zip([3, 2, 1])
        .map(|(b, w)| format!("      - {{address: \"{}\", weight: {w}}}", b.addr()))
        .collect();
    let deny: Vec<String> = deny.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "listeners: [{{name: http, address: \"[::]:{PORT}\"}}]\nroutes: [{{hosts: [web.test], cluster: web}}]\nclusters:\n  - name: web\n    endpoints:\n{}\nxdp:\n  deny: [{}]\n",
        eps.join("\n"),
        deny.join(", ")
    )
}

/// From inside client `i`: `n` requests on one keep-alive connection to the node, by backend.
fn tally(
    topo: &Topology,
    i: usize,
    node: IpAddr,
    n: usize,
) -> anyhow::Result<HashMap<String, usize>> {
    topo.clients[i].run(move || {
        let mut c = KeepAliveClient::connect(SocketAddr::new(node, PORT), T)?;
        let mut counts = HashMap::new();
        for _ in 0..n {
            let r = c.get("web.test", "/")?;
            anyhow::ensure!(r.status == 200, "status {}", r.status);
            *counts
                .entry(r.header("x-backend").unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
        Ok(counts)
    })?
}

fn gets_no_answer(topo: &Topology, i: usize, node: IpAddr) -> bool {
    topo.clients[i]
        .run(move || {
            http::get(
                SocketAddr::new(node, PORT),
                "web.test",
                "/",
                Duration::from_secs(1),
            )
            .is_err()
        })
        .unwrap()
}

fn xdp_shown(topo: &Topology, iface: &str) -> bool {
    let link = topo.node.ip(&["link", "show", "dev", iface]).unwrap();
    link.contains("prog/xdp") || link.contains(" xdp")
}

/// `mode`: native or skb. `debug`: run with --xdp-debug and expect the XDP program's log lines.
fn run(mode: &str, debug: bool) {
    require_root();
    let topo = Topology::new(TopologyOpts { clients: 2 }).unwrap();
    let backends: Vec<Backend> = ["b1", "b2", "b3"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let addr = SocketAddr::new(topo.backend_addr_v4().into(), 8081 + i as u16);
            Backend::start(Some(&topo.backend), addr, name).unwrap()
        })
        .collect();
    // Native XDP on veth: the peers get a pass-through program, as production veths would.
    let _peers: Vec<_> = if mode == "native" {
        topo.clients
            .iter()
            .map(|c| {
                attach_xdp(
                    c,
                    PEER_IFACE,
                    lb_user::bpf::OBJECT,
                    PROG_XDP_PASS,
                    XdpMode::Driver,
                )
                .unwrap()
            })
            .collect()
    } else {
        Vec::new()
    };
    let deny = vec![
        format!("{}/32", topo.client_addr_v4(1)),
        "fd00:77:2::/64".to_string(),
    ];
    let ifaces = [topo.node_client_iface(0), topo.node_client_iface(1)];
    let mut args = vec![
        "--iface",
        &ifaces[0],
        "--iface",
        &ifaces[1],
        "--xdp-mode",
        mode,
    ];
    if debug {
        args.push("--xdp-debug");
    }
    let lb = Lb::start(
        &lb_bin(),
        Some(&topo.node),
        &config(&backends, &deny),
        "127.0.0.1:9900".parse().unwrap(),
        &args,
    )
    .unwrap();
    assert!(
        ifaces.iter().all(|i| xdp_shown(&topo, i)),
        "XDP not attached"
    );

    // Client 0 is served by weight, over IPv4 and IPv6.
    let v4 = tally(&topo, 0, topo.node_addr_v4(0).into(), 12).unwrap();
    assert_eq!((v4["b1"], v4["b2"], v4["b3"]), (6, 4, 2), "{v4:?}");
    let v6 = tally(&topo, 0, topo.node_addr_v6(0).into(), 6).unwrap();
    assert_eq!(v6.values().sum::<usize>(), 6, "{v6:?}");

    // Client 1 is deny-listed: no answer at all, on either family; the counters say why.
    assert!(
        gets_no_answer(&topo, 1, topo.node_addr_v4(1).into()),
        "denied v4 client was served"
    );
    assert!(
        gets_no_answer(&topo, 1, topo.node_addr_v6(1).into()),
        "denied v6 client was served"
    );
    let m = lb.metrics().unwrap();
    let xdp = |verdict: &str, reason: &str| {
        lb_tests::lb::metric_sum(
            &m,
            "lb_xdp_packets_total",
            &[("verdict", verdict), ("reason", reason)],
        )
    };
    assert!(xdp("drop", "deny_v4") >= 1.0, "{m}");
    assert!(xdp("drop", "deny_v6") >= 1.0, "{m}");
    assert!(xdp("pass", "tcp") >= 10.0, "{m}");
    // aya-log lines from the XDP program: only with --xdp-debug (pruned by the verifier otherwise).
    let drop_line = "drop: reason 19"; // Reason::DenyV4
    if debug {
        lb.wait_log(drop_line, T).unwrap();
    } else {
        assert!(
            !lb.log().contains(drop_line),
            "debug lines without --xdp-debug"
        );
    }
    let served = backends.iter().map(Backend::requests).sum::<u64>();
    assert_eq!(served, 18, "only client 0's requests reach backends");

    // Lifting the deny-list is a live diff to the maps: client 1 is served right away.
    lb.reload(&config(&backends, &[])).unwrap();
    let deadline = Instant::now() + T;
    while lb
        .metric("lb_snapshot_applied_version", &[("consumer", "xdp")])
        .unwrap()
        < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "xdp never applied version 2:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let v4 = tally(&topo, 1, topo.node_addr_v4(1).into(), 3).unwrap();
    assert_eq!(v4.values().sum::<usize>(), 3);

    // SIGTERM: clean exit, XDP detached.
    let status = lb.stop(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status}");
    assert!(
        ifaces.iter().all(|i| !xdp_shown(&topo, i)),
        "XDP still attached after exit"
    );
}

#[test]
fn native_mode_serves_by_weight_and_drops_denied_clients() {
    run("native", false);
}

#[test]
fn skb_mode_with_xdp_debug_logs_serves_by_weight_and_drops_denied_clients() {
    run("skb", true);
}

//! The `l4` suite's contenders, each in its own copy of the topology: lb's XDP L4 service
//! (native, SKB), iptables DNAT as kube-proxy writes it, HAProxy `mode tcp`, and plain routing.

use super::l4::WORLD_CPU;
use super::l4_load::one_exchange;
use super::l4_world::{backend_addr, World, BACKENDS, BACKEND_PORT, BULK_PORT, VIP, WEB_PORT};
use super::proc::cpu_seconds;
use super::{live_config, Env};
use anyhow::{bail, Context, Result};
use aya::programs::XdpMode;
use lb_common::PROG_XDP_PASS;
use lb_tests::lb::{metric_sum, Lb};
use lb_tests::netns::{attach_xdp, XdpAttachment};
use lb_tests::process::ChildGuard;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    LbNative,
    LbSkb,
    Iptables,
    Haproxy,
    Direct,
}

pub const KINDS: [Kind; 5] = [
    Kind::LbNative,
    Kind::LbSkb,
    Kind::Iptables,
    Kind::Haproxy,
    Kind::Direct,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::LbNative => "lb (XDP native)",
            Kind::LbSkb => "lb (XDP skb)",
            Kind::Iptables => "iptables DNAT",
            Kind::Haproxy => "haproxy tcp",
            // The report leaves `direct` out of the ratio columns.
            Kind::Direct => "direct",
        }
    }
    pub fn tag(self) -> &'static str {
        ["ln", "ls", "ip", "ha", "di"][self as usize]
    }
}

/// A running contender in its own copy of the topology; stopped (and detached) on drop.
pub struct Contender<'w> {
    pub kind: Kind,
    pub world: &'w World,
    /// Where the short exchanges go (the VIP, or the three backends for `direct`).
    pub web: Vec<SocketAddr>,
    pub bulk: SocketAddr,
    pub lb: Option<Lb<'w>>,
    pub haproxy: Option<ChildGuard>,
    _peer_xdp: Vec<XdpAttachment>,
}

impl Contender<'_> {
    /// CPU seconds used so far by the contender's own process (lb's daemon, HAProxy); `None`
    /// for the kernel-only contenders.
    pub fn process_cpu(&self) -> Option<f64> {
        let pid = match (&self.lb, &self.haproxy) {
            (Some(lb), _) => lb.pid()?,
            (_, Some(h)) => h.id(),
            _ => return None,
        };
        Some(cpu_seconds(pid))
    }
}

/// Starts what `kind` needs in `w`'s node namespace and waits until a short exchange works.
pub fn start<'w>(env: &Env, kind: Kind, w: &'w World, object: &[u8]) -> Result<Contender<'w>> {
    let vip = |port| SocketAddr::from((VIP, port));
    let mut c = Contender {
        kind,
        world: w,
        web: vec![vip(WEB_PORT)],
        bulk: vip(BULK_PORT),
        lb: None,
        haproxy: None,
        _peer_xdp: Vec::new(),
    };
    match kind {
        Kind::LbNative | Kind::LbSkb => {
            let native = kind == Kind::LbNative;
            if native {
                // Native XDP_REDIRECT into a veth delivers only where the peer runs XDP.
                c._peer_xdp = w
                    .peers()
                    .map(|ns| attach_xdp(ns, "eth0", object, PROG_XDP_PASS, XdpMode::Driver))
                    .collect::<Result<_>>()?;
            }
            let yaml = lb_config();
            live_config(env, "l4-lb.yaml", &yaml)?;
            let ifaces = World::node_ifaces();
            let mut args: Vec<&str> = ifaces
                .iter()
                .flat_map(|i| ["--iface", i.as_str()])
                .collect();
            args.extend(["--xdp-mode", if native { "native" } else { "skb" }]);
            args.extend(["--workers", "1"]);
            let admin = "127.0.0.1:9900".parse()?;
            c.lb = Some(Lb::start(&env.lb, Some(&w.node), &yaml, admin, &args)?);
        }
        Kind::Iptables => {
            let rules = live_config(env, "l4-iptables.rules", &iptables_rules())?;
            w.node.exec(&["iptables-restore", &rules])?;
        }
        Kind::Haproxy => {
            w.node
                .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            let conf = live_config(env, "l4-haproxy.cfg", &haproxy_config())?;
            let log = std::fs::File::create(env.scratch.join("l4-haproxy.log"))?;
            let child = Command::new("taskset")
                .args(["-c", &WORLD_CPU.to_string(), "ip", "netns", "exec"])
                .args([w.node.name(), "/usr/sbin/haproxy", "-db", "-f", &conf])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting haproxy")?;
            c.haproxy = Some(ChildGuard(child));
        }
        Kind::Direct => {
            c.web = (0..BACKENDS)
                .map(|k| SocketAddr::from((backend_addr(k), BACKEND_PORT)))
                .collect();
            c.bulk = SocketAddr::from((backend_addr(0), BULK_PORT));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !one_exchange(&w.client, c.web[0])? {
        if Instant::now() > deadline {
            let log = match &c.lb {
                Some(lb) => format!(
                    "{}\n{}",
                    xdp_counters(&c).unwrap_or_else(|e| e.to_string()),
                    lb.log()
                ),
                None => String::new(),
            };
            bail!(
                "{}: no exchange through {} within 10 s{}{log}",
                kind.name(),
                c.web[0],
                if log.is_empty() { "" } else { "; lb's log:\n" }
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(c)
}

/// What lb's XDP program did with the packets over the whole suite (from its /metrics).
pub fn xdp_counters(c: &Contender) -> Result<String> {
    let lb = c.lb.as_ref().context("not an lb contender")?;
    let text = lb.metrics()?;
    let mut s = format!("{}: XDP packets by reason over the suite:", c.kind.name());
    let mut any = false;
    for reason in lb_common::Reason::ALL {
        let n = metric_sum(&text, "lb_xdp_packets_total", &[("reason", reason.name())]);
        if n > 0.0 {
            any = true;
            let _ = write!(s, " {} {n:.0},", reason.name());
        }
    }
    if !any {
        bail!("{}: lb's /metrics shows no XDP packets", c.kind.name());
    }
    Ok(s.trim_end_matches(',').to_string() + ".")
}

fn lb_config() -> String {
    let web: Vec<String> = (0..BACKENDS)
        .map(|k| format!("{{address: \"{}:{BACKEND_PORT}\"}}", backend_addr(k)))
        .collect();
    format!(
        "clusters:\n  - {{name: web, endpoints: [{}]}}\n  - {{name: bulk, endpoints: [{{address: \"{}:{BULK_PORT}\"}}]}}\n\
         l4_services:\n  - {{name: web, vip: {VIP}, port: {WEB_PORT}, protocol: tcp, cluster: web}}\n  \
         - {{name: bulk, vip: {VIP}, port: {BULK_PORT}, protocol: tcp, cluster: bulk}}\n\
         xdp:\n  l4: {{snat_v4: 10.81.0.1, nat_ports: 1024-65535}}\n",
        web.join(", "),
        backend_addr(0)
    )
}

/// kube-proxy's iptables mode for two ClusterIP services (chains as it names them, random
/// spread with the statistic match, masquerade of service traffic to the node's address).
fn iptables_rules() -> String {
    let mut r = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SVC-WEB - [0:0]\n:KUBE-SVC-BULK - [0:0]\n",
    );
    for k in 0..=BACKENDS {
        let _ = writeln!(r, ":KUBE-SEP-{k} - [0:0]");
    }
    r.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    let _ = writeln!(
        r,
        "-A KUBE-SERVICES -d {VIP}/32 -p tcp -m tcp --dport {WEB_PORT} -j KUBE-SVC-WEB"
    );
    let _ = writeln!(
        r,
        "-A KUBE-SERVICES -d {VIP}/32 -p tcp -m tcp --dport {BULK_PORT} -j KUBE-SVC-BULK"
    );
    r.push_str("-A KUBE-SVC-WEB -j KUBE-MARK-MASQ\n-A KUBE-SVC-BULK -j KUBE-MARK-MASQ\n");
    for k in 0..BACKENDS {
        let left = BACKENDS - k;
        let stat = if left > 1 {
            format!(
                "-m statistic --mode random --probability {:.11} ",
                1.0 / left as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(r, "-A KUBE-SVC-WEB {stat}-j KUBE-SEP-{k}");
        let _ = writeln!(
            r,
            "-A KUBE-SEP-{k} -p tcp -m tcp -j DNAT --to-destination {}:{BACKEND_PORT}",
            backend_addr(k)
        );
    }
    let _ = writeln!(r, "-A KUBE-SVC-BULK -j KUBE-SEP-{BACKENDS}");
    let _ = writeln!(
        r,
        "-A KUBE-SEP-{BACKENDS} -p tcp -m tcp -j DNAT --to-destination {}:{BULK_PORT}",
        backend_addr(0)
    );
    r + "COMMIT\n"
}

fn haproxy_config() -> String {
    let mut c = format!(
        "global\n  nbthread 1\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
         timeout server 30s\n\nfrontend web\n  bind {VIP}:{WEB_PORT}\n  default_backend web\n\n\
         frontend bulk\n  bind {VIP}:{BULK_PORT}\n  default_backend bulk\n\nbackend web\n  balance roundrobin\n"
    );
    for k in 0..BACKENDS {
        let _ = writeln!(c, "  server b{k} {}:{BACKEND_PORT}", backend_addr(k));
    }
    let _ = writeln!(
        c,
        "\nbackend bulk\n  server b0 {}:{BULK_PORT}",
        backend_addr(0)
    );
    c
}

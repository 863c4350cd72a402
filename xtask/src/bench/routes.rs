//! Suite `routes`: throughput and p99 with 10, 1k and 10k hosts configured and requests rotating
//! over all of them (wrk Lua), `lb` against HAProxy with the equivalent host map. Regex paths
//! join this suite with the L7 issue.

use super::proc::{spawn_pinned, wait_http};
use super::wrk::{self, Load};
use super::{haproxy_head, l7, save_config, Env, SuiteResult};
use anyhow::{bail, Result};
use lb_tests::process::ChildGuard;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const LB: &str = "127.0.0.1:19021";
const HAPROXY: &str = "127.0.0.1:19022";
/// Hosts map onto this many clusters: the table grows, upstream connection count does not.
const CLUSTERS: usize = 10;

pub fn run(env: &Env) -> Result<SuiteResult> {
    let _origin = super::origin::start_origin(env)?;
    let sizes: &[usize] = if env.quick {
        &[10]
    } else {
        &[10, 1_000, 10_000]
    };
    let mut result = SuiteResult::new("routes");
    for &n in sizes {
        let scenario = format!("{n} hosts, requests rotating over all");
        eprintln!("bench routes: {scenario}");
        let script = env.scratch.join(format!("rotate-{n}.lua"));
        std::fs::write(&script, lua_rotating_hosts(n))?;
        let lb_cfg = env.scratch.join("routes-lb.yaml");
        std::fs::write(&lb_cfg, lb_config(n))?;
        let (ha_cfg, ha_map) = (
            env.scratch.join("routes-haproxy.cfg"),
            env.scratch.join("routes-hosts.map"),
        );
        std::fs::write(&ha_cfg, haproxy_config(&ha_map))?;
        std::fs::write(&ha_map, haproxy_map(n))?;
        if n == 10 {
            save_config(env, "routes-lb-10.yaml", &lb_config(n))?;
            save_config(
                env,
                "routes-haproxy.cfg",
                &haproxy_config(Path::new("$SCRATCH/routes-hosts.map")),
            )?;
            save_config(env, "routes-hosts-10.map", &haproxy_map(n))?;
            save_config(env, "rotate-10.lua", &lua_rotating_hosts(n))?;
        }
        let lb_cfg_s = lb_cfg.display().to_string();
        let ha_cfg_s = ha_cfg.display().to_string();
        let contenders: Vec<(&str, SocketAddr, ChildGuard)> = vec![
            (
                "lb",
                LB.parse()?,
                spawn_pinned(
                    0,
                    &env.lb,
                    &[
                        "run",
                        "--config",
                        &lb_cfg_s,
                        "--workers",
                        "1",
                        "--admin",
                        "127.0.0.1:19921",
                    ],
                    &env.scratch.join("routes-lb.log"),
                )?,
            ),
            (
                "haproxy",
                HAPROXY.parse()?,
                spawn_pinned(
                    0,
                    Path::new("/usr/sbin/haproxy"),
                    &["-db", "-f", &ha_cfg_s],
                    &env.scratch.join("routes-haproxy.log"),
                )?,
            ),
        ];
        for (name, addr, _) in &contenders {
            wait_http(*addr, "h0.bench", "/small", Duration::from_secs(60))
                .map_err(|e| e.context(name.to_string()))?;
        }
        let load = |addr| Load {
            addr,
            path: "/small",
            host: "",
            connections: 32,
            new_connection: false,
            script: Some(&script),
        };
        for (_, addr, _) in &contenders {
            wrk::run(&load(*addr), Duration::from_secs(1))?;
        }
        let mut rate = vec![Vec::new(); contenders.len()];
        let mut p99 = vec![Vec::new(); contenders.len()];
        for _ in 0..env.reps {
            for (i, (name, addr, _)) in contenders.iter().enumerate() {
                let w = wrk::run(&load(*addr), env.run)?;
                if w.failures > 0.0 {
                    bail!("{name}: {} failed requests with {n} hosts", w.failures);
                }
                rate[i].push(w.rate);
                p99[i].push(w.p99_ms);
            }
        }
        for (i, (name, _, _)) in contenders.iter().enumerate() {
            result.push(
                &scenario,
                name,
                "throughput",
                "req/s",
                true,
                rate[i].clone(),
            );
            result.push(
                &scenario,
                name,
                "p99 latency at saturation",
                "ms",
                false,
                p99[i].clone(),
            );
        }
    }
    result.notes = vec![
        format!("N hosts `hI.bench` route to {CLUSTERS} clusters (host I -> cluster I mod {CLUSTERS}), each one endpoint: the origin."),
        "wrk (1 thread, 32 keep-alive connections) rotates the Host header over all N hosts with a Lua script.".into(),
        "HAProxy: `use_backend %[req.hdr(host),lower,map(FILE)]` with the same N hosts; both pinned to CPU 0, one thread.".into(),
        "Regex path routes (HAProxy map_reg) join this suite with the L7 issue.".into(),
    ];
    Ok(result)
}

fn lua_rotating_hosts(n: usize) -> String {
    format!(
        "local i = 0\nrequest = function()\n  i = (i + 1) % {n}\n  return wrk.format(\"GET\", \"/small\", {{[\"Host\"] = \"h\" .. i .. \".bench\"}})\nend\n"
    )
}

fn lb_config(n: usize) -> String {
    let mut s = format!(
        "access_log: {{format: off}}\nlisteners: [{{name: http, address: \"{LB}\"}}]\nroutes:\n"
    );
    for i in 0..n {
        let _ = writeln!(s, "  - {{hosts: [h{i}.bench], cluster: c{}}}", i % CLUSTERS);
    }
    s.push_str("clusters:\n");
    for c in 0..CLUSTERS {
        let _ = writeln!(
            s,
            "  - {{name: c{c}, endpoints: [{{address: \"{}\"}}]}}",
            l7::ORIGIN
        );
    }
    s
}

fn haproxy_config(map: &Path) -> String {
    let route = format!("use_backend %[req.hdr(host),lower,map({})]", map.display());
    let mut s = haproxy_head(HAPROXY, &route, "");
    for c in 0..CLUSTERS {
        let _ = writeln!(s, "backend c{c}\n  server s1 {}\n", l7::ORIGIN);
    }
    s
}

fn haproxy_map(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = writeln!(s, "h{i}.bench c{}", i % CLUSTERS);
    }
    s
}

//! Suite `reload`, second scenario: 100 weight changes a second through each contender's
//! runtime API under keep-alive load: lb's HTTP API against HAProxy's stats socket `set weight`.

use super::proc::{spawn_pinned, wait_http};
use super::wrk::{self, Load};
use super::{haproxy_head, l7, save_config, Env, SuiteResult};
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const LB: &str = "127.0.0.1:19033";
const LB_ADMIN: &str = "127.0.0.1:19933";
const HAPROXY: &str = "127.0.0.1:19034";
const CHANGES_PER_SEC: u32 = 100;

pub fn run(env: &Env, result: &mut SuiteResult) -> Result<()> {
    let scenario = format!("{CHANGES_PER_SEC} runtime API weight changes/s under keep-alive load");
    let sock = env.scratch.join("haproxy-admin.sock");
    save_config(env, "runtime-lb.yaml", &lb_config())?;
    save_config(
        env,
        "runtime-haproxy.cfg",
        &super::portable(&haproxy_config(&sock), &env.scratch),
    )?;
    let dur = env.run * 2;
    let names = ["lb", "haproxy"];
    let mut rows: Vec<[Vec<f64>; 5]> = vec![Default::default(), Default::default()];
    for _ in 0..env.reps {
        for (i, name) in names.iter().enumerate() {
            eprintln!("bench reload (runtime API): {name}");
            let m = measure(env, *name == "lb", dur, &sock)?;
            for (k, v) in m.into_iter().enumerate() {
                rows[i][k].push(v);
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        let [failed, p99, rate, applied, call_p99] = rows[i].clone();
        result.push(&scenario, name, "failed requests", "count", false, failed);
        result.push(
            &scenario,
            name,
            "p99 latency during changes",
            "ms",
            false,
            p99,
        );
        result.push(
            &scenario,
            name,
            "throughput during changes",
            "req/s",
            true,
            rate,
        );
        result.push(&scenario, name, "changes applied", "count", true, applied);
        result.push(
            &scenario,
            name,
            "p99 change call (sent to applied)",
            "ms",
            false,
            call_p99,
        );
    }
    result.notes.push(format!(
        "Runtime API scenario: the harness sets endpoint o2's weight alternately to 0 and 1 \
         {CHANGES_PER_SEC} times a second. lb: PUT /api/v1/clusters/origin/endpoints/o2 (answers \
         once the proxy serves the change); HAProxy: `set weight origin/o2 N` on its admin stats \
         socket. applied = calls answered with success; call p99 = time from sending to that answer."
    ));
    Ok(())
}

/// One run: [failed requests, p99 ms, req/s, changes applied, change call p99 ms].
fn measure(env: &Env, lb: bool, dur: Duration, sock: &Path) -> Result<[f64; 5]> {
    let (addr, log): (SocketAddr, _) = if lb {
        (LB.parse()?, env.scratch.join("runtime-lb.log"))
    } else {
        (HAPROXY.parse()?, env.scratch.join("runtime-haproxy.log"))
    };
    let process = if lb {
        let cfg = env.scratch.join("runtime-lb.yaml");
        std::fs::write(&cfg, lb_config())?;
        let cfg = cfg.display().to_string();
        let args = [
            "run",
            "--config",
            &cfg,
            "--workers",
            "1",
            "--admin",
            LB_ADMIN,
        ];
        spawn_pinned(0, &env.lb, &args, &log)?
    } else {
        let _ = std::fs::remove_file(sock);
        let cfg = env.scratch.join("runtime-haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(sock))?;
        let cfg = cfg.display().to_string();
        spawn_pinned(
            0,
            Path::new("/usr/sbin/haproxy"),
            &["-db", "-f", &cfg],
            &log,
        )?
    };
    wait_http(addr, l7::HOST, "/small", Duration::from_secs(30))?;
    let load = Load {
        addr,
        path: "/small",
        host: l7::HOST,
        connections: 32,
        new_connection: false,
        script: None,
    };
    let (w, calls) = std::thread::scope(|s| -> Result<(wrk::Wrk, Vec<Option<f64>>)> {
        let wrk = s.spawn(|| wrk::run(&load, dur));
        let start = Instant::now();
        let interval = Duration::from_secs(1) / CHANGES_PER_SEC;
        let mut calls = Vec::new();
        let mut k = 1u64;
        while !wrk.is_finished() && start.elapsed() < dur + Duration::from_secs(5) {
            let weight = k % 2;
            let t = Instant::now();
            let ok = if lb {
                lb_call(weight)
            } else {
                haproxy_call(sock, weight)
            };
            calls.push(ok.then(|| t.elapsed().as_secs_f64() * 1000.0));
            k += 1;
            if let Some(wait) = (start + interval * k as u32).checked_duration_since(Instant::now())
            {
                std::thread::sleep(wait);
            }
        }
        let w = wrk
            .join()
            .map_err(|_| anyhow::anyhow!("wrk thread panicked"))??;
        Ok((w, calls))
    })?;
    drop(process);
    let mut times: Vec<f64> = calls.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get(((times.len() as f64) * 0.99) as usize)
        .or(times.last())
        .copied()
        .unwrap_or(f64::NAN);
    Ok([w.failures, w.p99_ms, w.rate, times.len() as f64, p99])
}

fn lb_call(weight: u64) -> bool {
    let body = format!("{{\"weight\": {weight}}}");
    let req = format!(
        "PUT /api/v1/clusters/origin/endpoints/o2 HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(addr) = LB_ADMIN.parse() else {
        return false;
    };
    lb_tests::http::raw(addr, req.as_bytes(), Duration::from_secs(5))
        .is_ok_and(|r| r.starts_with(b"HTTP/1.1 200"))
}

fn haproxy_call(sock: &Path, weight: u64) -> bool {
    let work = || -> Result<String> {
        let mut s = UnixStream::connect(sock).context("connecting to the stats socket")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("set weight origin/o2 {weight}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    work().is_ok_and(|out| out.trim().is_empty())
}

fn lb_config() -> String {
    format!(
        "access_log: {{format: off}}\nlisteners: [{{name: http, address: \"{LB}\"}}]\nroutes: [{{hosts: [\"*\"], cluster: origin}}]\nclusters:\n  - name: origin\n    endpoints:\n      - {{address: \"{}\", name: o1, weight: 1}}\n      - {{address: \"{}\", name: o2, weight: 1}}\n",
        l7::ORIGIN,
        l7::ORIGIN_2
    )
}

fn haproxy_config(sock: &Path) -> String {
    let global = format!("  stats socket {} level admin\n", sock.display());
    haproxy_head(HAPROXY, "default_backend origin", &global)
        + &format!(
            "backend origin\n  server o1 {} weight 1\n  server o2 {} weight 1\n",
            l7::ORIGIN,
            l7::ORIGIN_2
        )
}

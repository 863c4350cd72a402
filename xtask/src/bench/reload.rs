//! Suite `reload`: steady keep-alive load while the config changes 100 times a second: `lb`
//! (file + SIGHUP) against HAProxy (master-worker seamless reload, SIGUSR2): failed requests,
//! p99, throughput, and how many of the changes were actually applied.

use super::proc::{spawn_pinned, wait_http, write_atomic};
use super::wrk::{self, Load};
use super::{haproxy_head, l7, save_config, Env, SuiteResult};
use anyhow::{Context, Result};
use lb_tests::process::ChildGuard;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LB: &str = "127.0.0.1:19031";
const LB_ADMIN: &str = "127.0.0.1:19931";
const HAPROXY: &str = "127.0.0.1:19032";
/// Config changes per second during the run.
const CHANGES_PER_SEC: u32 = 100;

pub fn run(env: &Env) -> Result<SuiteResult> {
    let _origin = super::origin::start_origin(env)?;
    let mut result = SuiteResult::new("reload");
    let scenario = format!("{CHANGES_PER_SEC} config changes/s under keep-alive load");
    save_config(env, "reload-lb.yaml", &lb_config(0))?;
    save_config(env, "reload-haproxy.cfg", &haproxy_config(0))?;
    let dur = env.run * 2;
    let names = ["lb", "haproxy"];
    let mut rows: Vec<[Vec<f64>; 4]> = vec![Default::default(), Default::default()];
    for _ in 0..env.reps {
        for (i, name) in names.iter().enumerate() {
            eprintln!("bench reload: {name}");
            let m = measure(env, *name == "lb", dur)?;
            for (k, v) in m.into_iter().enumerate() {
                rows[i][k].push(v);
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        let [failed, p99, rate, applied] = rows[i].clone();
        result.push(&scenario, name, "failed requests", "count", false, failed);
        result.push(
            &scenario,
            name,
            "p99 latency during reloads",
            "ms",
            false,
            p99,
        );
        result.push(
            &scenario,
            name,
            "throughput during reloads",
            "req/s",
            true,
            rate,
        );
        result.push(&scenario, name, "changes applied", "count", true, applied);
    }
    result.notes = vec![
        format!(
            "wrk (1 thread, 32 keep-alive connections) for {dur:?} while the harness flips one cluster's weights \
             between its two endpoints {CHANGES_PER_SEC} times a second ({} changes sent per run).",
            CHANGES_PER_SEC as u64 * dur.as_secs()
        ),
        "lb: the file is rewritten and lb gets SIGHUP; applied = lb_snapshot_applied_version{consumer=\"proxy\"} - 1.".into(),
        "HAProxy: master-worker (-W), SIGUSR2 after each change (seamless: listeners passed to the new worker), \
         hard-stop-after 5s so old workers do not accumulate; applied = \"Reloading HAProxy\" lines."
            .into(),
    ];
    super::runtime::run(env, &mut result)?;
    Ok(result)
}

/// One run: [failed requests, p99 ms, req/s, changes applied].
fn measure(env: &Env, lb: bool, dur: Duration) -> Result<[f64; 4]> {
    let (config, addr, log): (PathBuf, SocketAddr, PathBuf) = if lb {
        (
            env.scratch.join("reload-lb.yaml"),
            LB.parse()?,
            env.scratch.join("reload-lb.log"),
        )
    } else {
        (
            env.scratch.join("reload-haproxy.cfg"),
            HAPROXY.parse()?,
            env.scratch.join("reload-haproxy.log"),
        )
    };
    let write = |k: u64| -> Result<()> {
        let text = if lb { lb_config(k) } else { haproxy_config(k) };
        write_atomic(&config, &text).context("writing the config")
    };
    write(0)?;
    let cfg = config.display().to_string();
    let process: ChildGuard = if lb {
        spawn_pinned(
            0,
            &env.lb,
            &[
                "run",
                "--config",
                &cfg,
                "--workers",
                "1",
                "--admin",
                LB_ADMIN,
            ],
            &log,
        )?
    } else {
        spawn_pinned(
            0,
            Path::new("/usr/sbin/haproxy"),
            &["-W", "-db", "-f", &cfg],
            &log,
        )?
    };
    wait_http(addr, l7::HOST, "/small", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(500)); // HAProxy's master ignores signals right after start
    let pid = Pid::from_raw(process.id() as i32);
    let signal = if lb { Signal::SIGHUP } else { Signal::SIGUSR2 };
    let load = Load {
        addr,
        path: "/small",
        host: l7::HOST,
        connections: 32,
        new_connection: false,
        script: None,
    };
    let w = std::thread::scope(|s| -> Result<wrk::Wrk> {
        let wrk = s.spawn(|| wrk::run(&load, dur));
        let start = Instant::now();
        let interval = Duration::from_secs(1) / CHANGES_PER_SEC;
        let mut k = 1u64;
        while !wrk.is_finished() && start.elapsed() < dur + Duration::from_secs(5) {
            write(k)?;
            kill(pid, signal)?;
            k += 1;
            if let Some(wait) = (start + interval * k as u32).checked_duration_since(Instant::now())
            {
                std::thread::sleep(wait);
            }
        }
        wrk.join()
            .map_err(|_| anyhow::anyhow!("wrk thread panicked"))?
    })?;
    let applied = if lb {
        let m = lb_tests::http::get(
            LB_ADMIN.parse()?,
            "admin",
            "/metrics",
            Duration::from_secs(5),
        )?
        .text();
        lb_tests::lb::metric_sum(&m, "lb_snapshot_applied_version", &[("consumer", "proxy")]) - 1.0
    } else {
        std::fs::read_to_string(&log)?
            .matches("Reloading HAProxy")
            .count() as f64
    };
    drop(process);
    Ok([w.failures, w.p99_ms, w.rate, applied])
}

/// Change `k` flips which of the two endpoints takes the traffic.
fn weights(k: u64) -> (u8, u8) {
    if k.is_multiple_of(2) {
        (1, 0)
    } else {
        (0, 1)
    }
}

fn lb_config(k: u64) -> String {
    let (a, b) = weights(k);
    format!(
        "access_log: {{format: off}}\nlisteners: [{{name: http, address: \"{LB}\"}}]\nroutes: [{{hosts: [\"*\"], cluster: origin}}]\nclusters:\n  - name: origin\n    endpoints:\n      - {{address: \"{}\", weight: {a}}}\n      - {{address: \"{}\", weight: {b}}}\n",
        l7::ORIGIN,
        l7::ORIGIN_2
    )
}

fn haproxy_config(k: u64) -> String {
    let (a, b) = weights(k);
    haproxy_head(HAPROXY, "default_backend origin", "  hard-stop-after 5s\n")
        + &format!(
            "backend origin\n  server o1 {} weight {a}\n  server o2 {} weight {b}\n",
            l7::ORIGIN,
            l7::ORIGIN_2
        )
}

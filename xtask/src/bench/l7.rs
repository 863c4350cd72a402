//! Suite `l7`: HTTP/1.1 through `lb`, HAProxy 2.6 and nginx (each pinned to CPU 0, one worker)
//! to one nginx origin (CPU 1), plus a direct client->origin reference: throughput, CPU per
//! request, memory, and latency at fixed rates (open-loop probe, measured from the scheduled send).

use super::origin::{nginx_common, start_nginx, start_origin};
use super::proc::{cpu_seconds, rss_kib, spawn_pinned, wait_http};
use super::wrk::{self, Load, Wrk};
use super::{haproxy_head, live_config, median, paired, paired_order, Env, SuiteResult};
use anyhow::{bail, Context, Result};
use lb_tests::http::KeepAliveClient;
use lb_tests::process::ChildGuard;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The origin every contender forwards to (nginx, CPU 1).
pub(super) const ORIGIN: &str = "127.0.0.1:19000";
/// The same origin on a second address (clusters need distinct endpoints).
pub(super) const ORIGIN_2: &str = "127.0.0.1:19005";
pub(super) const HOST: &str = "bench.test";
pub(super) const CONNECTIONS: usize = 32;
pub(super) const PROBE_CONNECTIONS: usize = 8;

pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) path: &'static str,
    pub(super) new_connection: bool,
}

pub(super) const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "h1 keep-alive, 3 B body",
        path: "/small",
        new_connection: false,
    },
    Scenario {
        name: "h1 new connection per request, 3 B body",
        path: "/small",
        new_connection: true,
    },
    Scenario {
        name: "h1 keep-alive, 1 KiB body",
        path: "/1k",
        new_connection: false,
    },
    Scenario {
        name: "h1 keep-alive, 100 KiB body",
        path: "/100k",
        new_connection: false,
    },
];

/// The peers lb's paired ratios are taken against.
const PEERS: [&str; 2] = ["haproxy", "nginx"];

struct Contender {
    name: &'static str,
    addr: SocketAddr,
    /// None for the direct reference (nothing in between).
    process: Option<ChildGuard>,
}

pub fn run(env: &Env) -> Result<SuiteResult> {
    let mut result = SuiteResult::new("l7");
    let _origin = start_origin(env)?;
    let origin: SocketAddr = ORIGIN.parse()?;
    let mut contenders = vec![
        Contender {
            name: "direct",
            addr: origin,
            process: None,
        },
        start_lb(env, false)?,
        start_haproxy(env)?,
        start_lb(env, true)?,
        Contender {
            name: "nginx",
            addr: "127.0.0.1:19003".parse()?,
            process: Some(start_nginx(env, "nginx-proxy", 0, &nginx_proxy_conf(env))?),
        },
    ];
    for c in &contenders {
        wait_http(c.addr, HOST, "/small", Duration::from_secs(10)).with_context(|| c.name)?;
    }
    let scenarios: &[Scenario] = if env.quick {
        &SCENARIOS[..1]
    } else {
        &SCENARIOS
    };
    // lb and HAProxy are listed next to each other, so they run back to back (paired_order).
    let place = |name: &str| {
        contenders
            .iter()
            .position(|c| c.name == name)
            .with_context(|| format!("no contender {name}"))
    };
    let pair = (place("lb")?, place("haproxy")?);
    let mut max_rate = f64::INFINITY;
    // Two passes of the rotation: lb and HAProxy each run first in half the repetitions.
    let reps = if env.quick {
        env.reps
    } else {
        2 * contenders.len()
    };
    for sc in scenarios {
        eprintln!("bench l7: {}", sc.name);
        for c in &contenders {
            measure(c.addr, sc, Duration::from_secs(1))?; // warm-up
        }
        let mut per: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
            vec![Default::default(); contenders.len()];
        for rep in 0..reps {
            for i in paired_order(contenders.len(), rep, pair) {
                let c = &contenders[i];
                let cpu0 = c.process.as_ref().map(|p| cpu_seconds(p.id()));
                let w = measure(c.addr, sc, env.run)?;
                if let (Some(p), Some(cpu0)) = (&c.process, cpu0) {
                    per[i]
                        .1
                        .push(w.requests / (cpu_seconds(p.id()) - cpu0).max(1e-3));
                }
                per[i].0.push(w.rate);
                per[i].2.push(w.p99_ms);
            }
        }
        for (c, (rate, per_cpu, p99)) in contenders.iter().zip(per.iter().cloned()) {
            if sc.path == "/small" && !sc.new_connection && c.process.is_some() {
                max_rate = max_rate.min(median(&rate));
            }
            result.push(sc.name, c.name, "throughput", "req/s", true, rate);
            if !per_cpu.is_empty() {
                result.push(
                    sc.name,
                    c.name,
                    "requests per proxy CPU-second",
                    "req/CPU-s",
                    true,
                    per_cpu,
                );
            }
            result.push(
                sc.name,
                c.name,
                "p99 latency at saturation",
                "ms",
                false,
                p99,
            );
        }
        push_paired(&mut result, sc.name, &contenders, &per);
    }
    for c in contenders.iter().filter(|c| c.process.is_some()) {
        let kib = c.process.as_ref().map(|p| rss_kib(p.id())).unwrap_or(0);
        result.push(
            "memory after the runs",
            c.name,
            "resident memory",
            "MiB",
            false,
            vec![kib as f64 / 1024.0],
        );
    }
    fixed_rate_latency(env, &contenders, max_rate, &mut result)?;
    for c in &mut contenders {
        drop(c.process.take());
    }
    result.notes = vec![
        format!(
            "Contenders pinned to CPU 0 with one worker each (lb --workers 1, HAProxy nbthread 1, nginx worker_processes 1); \
             the origin (nginx, 1 worker), wrk (1 thread, {CONNECTIONS} connections) and the latency probe on CPU 1."
        ),
        format!(
            "{reps} repetitions of {:?} per contender and saturated scenario after a 1 s warm-up, each repetition \
             starting at the next contender (a drifting host favours no one); lb and HAProxy run back to back (except at the rotation's wrap), each \
             first in half the repetitions; medians shown. `paired ratio vs X` rows: per repetition, lb's value over \
             X's value in that repetition, median over repetitions (trust these over ratios of medians). \
             Fixed-rate latency: {} repetitions.",
            env.run, env.reps
        ),
        "Latency at fixed rates: an open-loop probe on 8 keep-alive connections sends at 25/50/75% of the weakest \
         proxy's saturated throughput and times each request from its scheduled send (no coordinated omission)."
            .into(),
        "HTTP/2 (h2load) joins this suite when lb speaks HTTP/2 (the L7 issue).".into(),
        "lb is configured to do what HAProxy (`option forwardfor`) and nginx do: add one X-Forwarded-For \
         (configs/lb.yaml). lb+defaults is lb unconfigured (configs/lb-defaults.yaml): it also sets \
         X-Forwarded-Proto, X-Forwarded-Host and Forwarded, generates X-Request-Id and starts a W3C trace \
         (traceparent) per request; its column against lb is the price of those."
            .into(),
        "lb is the release build with profile-guided optimisation and a BOLT-rewritten layout \
         (`cargo xtask build-release`, as deploy/Dockerfile builds it); its training load is described \
         in xtask/src/bench/pgo.rs."
            .into(),
        "Every contender accepts a connection only once its request has arrived (TCP_DEFER_ACCEPT): lb by \
         default (listener `defer_accept`), HAProxy with `bind ... defer-accept`, nginx with `listen ... deferred`."
            .into(),
        "Configs of every contender: bench/results/configs/.".into(),
    ];
    Ok(result)
}

/// Rows `paired ratio vs PEER: METRIC` on lb and lb+defaults: per repetition, their value over
/// the peer's in the same repetition, median over repetitions (robust to a drifting host).
fn push_paired(
    result: &mut SuiteResult,
    scenario: &str,
    contenders: &[Contender],
    per: &[(Vec<f64>, Vec<f64>, Vec<f64>)],
) {
    let place = |name: &str| contenders.iter().position(|c| c.name == name);
    let lbs = contenders
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.starts_with("lb"));
    for (i, lb) in lbs {
        for (peer, name) in PEERS.iter().filter_map(|p| Some((place(p)?, *p))) {
            for (metric, a, b) in [
                ("throughput", &per[i].0, &per[peer].0),
                ("requests per proxy CPU-second", &per[i].1, &per[peer].1),
            ] {
                let m = format!("paired ratio vs {name}: {metric}");
                result.push(scenario, lb.name, &m, "×", true, paired(a, b));
            }
        }
    }
}

fn fixed_rate_latency(
    env: &Env,
    contenders: &[Contender],
    max_rate: f64,
    result: &mut SuiteResult,
) -> Result<()> {
    if !max_rate.is_finite() {
        bail!("no proxy throughput measured");
    }
    let fractions: &[u32] = if env.quick { &[50] } else { &[25, 50, 75] };
    for pct in fractions {
        let rate = (max_rate * f64::from(*pct) / 100.0).round();
        let scenario = format!("fixed rate {pct}% ({rate:.0} req/s), 3 B body");
        eprintln!("bench l7: {scenario}");
        let mut per: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); contenders.len()];
        for rep in 0..env.reps {
            for (i, c) in super::rotated(contenders, rep) {
                let mut lat = probe(c.addr, rate, env.run)?;
                lat.sort_by(|a, b| a.total_cmp(b));
                per[i].0.push(percentile(&lat, 50.0));
                per[i].1.push(percentile(&lat, 99.0));
            }
        }
        let direct = per[0].clone();
        for (c, (p50, p99)) in contenders.iter().zip(&per) {
            result.push(&scenario, c.name, "p50 latency", "ms", false, p50.clone());
            result.push(&scenario, c.name, "p99 latency", "ms", false, p99.clone());
            if c.process.is_some() {
                let added: Vec<f64> = p99.iter().zip(&direct.1).map(|(a, d)| a - d).collect();
                result.push(&scenario, c.name, "p99 added latency", "ms", false, added);
            }
        }
    }
    Ok(())
}

/// wrk at saturation; any failed request means a broken setup, not a result.
pub(super) fn measure(addr: SocketAddr, sc: &Scenario, dur: Duration) -> Result<Wrk> {
    let load = Load {
        addr,
        path: sc.path,
        host: HOST,
        connections: CONNECTIONS,
        new_connection: sc.new_connection,
        script: None,
    };
    let w = wrk::run(&load, dur)?;
    if w.failures > 0.0 {
        bail!(
            "{addr}{}: {} failed requests during {}",
            sc.path,
            w.failures,
            sc.name
        );
    }
    Ok(w)
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Sends `rate` req/s for `dur` on keep-alive connections; latencies in ms from the scheduled send.
pub(super) fn probe(addr: SocketAddr, rate: f64, dur: Duration) -> Result<Vec<f64>> {
    let per_conn = rate / PROBE_CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let n = (per_conn * dur.as_secs_f64()).max(1.0) as u32;
    let start = Instant::now() + Duration::from_millis(50);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..PROBE_CONNECTIONS)
            .map(|c| {
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut client = KeepAliveClient::connect(addr, Duration::from_secs(5))?;
                    let offset = interval.mul_f64(c as f64 / PROBE_CONNECTIONS as f64);
                    let mut lat = Vec::with_capacity(n as usize);
                    for i in 0..n {
                        let at = start + offset + interval * i;
                        if let Some(wait) = at.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let r = client.get(HOST, "/small")?;
                        if r.status != 200 {
                            bail!("status {} from {addr}", r.status);
                        }
                        lat.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("probe thread panicked"))??,
            );
        }
        Ok(all)
    })
}

fn nginx_proxy_conf(env: &Env) -> String {
    nginx_common(env, "nginx-proxy")
        + &format!(
            "  upstream origin {{ server {ORIGIN}; keepalive 64; keepalive_requests 1000000; }}\n  server {{\n    listen 127.0.0.1:19003 deferred;\n    location / {{\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
        )
}

fn start_haproxy(env: &Env) -> Result<Contender> {
    // `defer-accept`: lb's default (listener `defer_accept`), so a new connection costs both
    // the same kernel work.
    let conf = haproxy_head("127.0.0.1:19002 defer-accept", "default_backend origin", "")
        + &format!("backend origin\n  server o1 {ORIGIN}\n");
    let live_s = live_config(env, "haproxy.cfg", &conf)?;
    let process = spawn_pinned(
        0,
        Path::new("/usr/sbin/haproxy"),
        &["-db", "-f", &live_s],
        &env.scratch.join("haproxy.log"),
    )?;
    Ok(Contender {
        name: "haproxy",
        addr: "127.0.0.1:19002".parse()?,
        process: Some(process),
    })
}

/// `lb` does what the peers are configured to do (one X-Forwarded-For, HAProxy's `option
/// forwardfor`); `lb+defaults` adds what lb does unconfigured: X-Forwarded-Proto/-Host,
/// Forwarded, a generated X-Request-Id and a W3C traceparent.
fn start_lb(env: &Env, defaults: bool) -> Result<Contender> {
    let (name, port, admin) = match defaults {
        false => ("lb", 19001, 19901),
        true => ("lb+defaults", 19004, 19904),
    };
    let (tracing, listener) = match defaults {
        false => (
            "tracing: {propagate: false}\n",
            ", forwarded: {headers: [x-forwarded-for]}, generate_request_id: false",
        ),
        true => ("", ""),
    };
    let conf = format!(
        "access_log: {{format: off}}\n{tracing}listeners: [{{name: http, address: \"127.0.0.1:{port}\"{listener}}}]\nroutes: [{{hosts: [\"*\"], cluster: origin}}]\nclusters:\n  - name: origin\n    endpoints: [{{address: \"{ORIGIN}\"}}]\n"
    );
    let file = if defaults {
        "lb-defaults.yaml"
    } else {
        "lb.yaml"
    };
    let live_s = live_config(env, file, &conf)?;
    let admin = format!("127.0.0.1:{admin}");
    let process = spawn_pinned(
        0,
        &env.lb,
        &[
            "run",
            "--config",
            &live_s,
            "--workers",
            "1",
            "--admin",
            &admin,
        ],
        &env.scratch
            .join(format!("{}.log", file.trim_end_matches(".yaml"))),
    )?;
    Ok(Contender {
        name,
        addr: format!("127.0.0.1:{port}").parse()?,
        process: Some(process),
    })
}

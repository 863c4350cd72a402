//! Suite `reuseport`: two proxy threads on both CPUs: lb's shared work-stealing runtime (one
//! listener socket), lb's SO_REUSEPORT thread-per-core workers, HAProxy nbthread 2; paired runs.

use super::l7::{self, Scenario, ORIGIN};
use super::proc::{cpu_seconds, wait_http};
use super::{haproxy_head, live_config, median, Env, SuiteResult};
use anyhow::{Context, Result};
use lb_tests::process::ChildGuard;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// CPUs every contender may run on (the origin, wrk and the harness stay on CPU 1).
const CPUS: &str = "0,1";

struct Contender {
    name: &'static str,
    addr: SocketAddr,
    process: ChildGuard,
}

pub fn run(env: &Env) -> Result<SuiteResult> {
    let mut result = SuiteResult::new("reuseport");
    let _origin = super::origin::start_origin(env)?;
    let contenders = [
        start_lb(env, "lb", "127.0.0.1:19051", 1)?,
        start_lb(env, "lb+reuseport", "127.0.0.1:19052", 2)?,
        start_haproxy(env, "127.0.0.1:19053")?,
    ];
    for c in &contenders {
        wait_http(c.addr, l7::HOST, "/small", Duration::from_secs(10)).with_context(|| c.name)?;
    }
    let scenarios: &[&Scenario] = if env.quick {
        &[&l7::SCENARIOS[0]]
    } else {
        &[&l7::SCENARIOS[0], &l7::SCENARIOS[1]]
    };
    // Pairs are what count on this machine (its speed drifts between runs): twice the reps.
    let reps = if env.quick { env.reps } else { env.reps * 2 };
    for sc in scenarios {
        eprintln!("bench reuseport: {}", sc.name);
        for c in &contenders {
            l7::measure(c.addr, sc, Duration::from_secs(1))?; // warm-up
        }
        let n = contenders.len();
        let (mut rate, mut p99, mut per_cpu) = (vec![vec![]; n], vec![vec![]; n], vec![vec![]; n]);
        for r in 0..reps {
            // Rotate who goes first so no contender always follows the same one.
            for i in (0..n).map(|i| (i + r) % n) {
                let c = &contenders[i];
                let cpu0 = cpu_seconds(c.process.id());
                let w = l7::measure(c.addr, sc, env.run)?;
                let cpu = (cpu_seconds(c.process.id()) - cpu0).max(1e-3);
                rate[i].push(w.rate);
                p99[i].push(w.p99_ms);
                per_cpu[i].push(w.requests / cpu);
            }
        }
        for (i, c) in contenders.iter().enumerate() {
            result.push(
                sc.name,
                c.name,
                "throughput",
                "req/s",
                true,
                rate[i].clone(),
            );
            let p = p99[i].clone();
            result.push(sc.name, c.name, "p99 latency at saturation", "ms", false, p);
            let cpu = per_cpu[i].clone();
            result.push(
                sc.name,
                c.name,
                "requests per proxy CPU-second",
                "req/CPU-s",
                true,
                cpu,
            );
        }
        // Per-repetition ratios (same repetition, back to back): the drift cancels.
        for (a, b) in [(1, 0), (0, 2), (1, 2)] {
            let to = contenders[b].name;
            for (metric, values, higher) in [
                ("throughput", &rate, true),
                ("p99 latency at saturation", &p99, false),
            ] {
                let ratios = super::paired(&values[a], &values[b]);
                let m = format!("paired ratio to {to}: {metric}");
                result.push(sc.name, contenders[a].name, &m, "×", higher, ratios);
            }
        }
        let med = |i: usize| median(&rate[i]);
        eprintln!(
            "bench reuseport: {}: lb {:.0}, lb+reuseport {:.0}, haproxy {:.0} req/s",
            sc.name,
            med(0),
            med(1),
            med(2)
        );
    }
    result.notes = vec![
        format!(
            "Every contender may run on CPUs {CPUS} with two proxy threads: `lb` = one listener socket, connections \
             spread by tokio's work-stealing runtime (`--workers 2`, listener `workers: 1`, today's model); \
             `lb+reuseport` = listener `workers: 2`: two threads, each a single-threaded runtime accepting on its own \
             SO_REUSEPORT socket, steered by the SK_REUSEPORT program (flow_hash), control runtime `--workers 1`; \
             `haproxy` = HAProxy 2.6 `nbthread 2`, bound with `defer-accept` (lb's listeners defer accepts by default)."
        ),
        format!(
            "The origin (nginx, 1 worker), wrk (1 thread, {} connections) and the harness share CPU 1, so no \
             contender has two whole cores; all three get the same share.",
            l7::CONNECTIONS
        ),
        format!(
            "{reps} repetitions of {:?} after a 1 s warm-up; each repetition runs the three back to back, the first \
             one rotating. `paired ratio to X` rows: per repetition, the contender's value over X's value in that \
             repetition, median over repetitions (trust these over ratios of medians).",
            env.run
        ),
        "Processes instead of threads were not built: each process would own a copy of the table, upstream pools, \
         health checkers and counters, and reload, the runtime API and /metrics would need a fan-out; the threads \
         already share them (see bench/findings.md)."
            .into(),
        "Configs: bench/results/configs/reuseport-*.".into(),
    ];
    Ok(result)
}

fn start_lb(env: &Env, name: &'static str, listen: &str, workers: u32) -> Result<Contender> {
    let conf = format!(
        "access_log: {{format: off}}\nlisteners: [{{name: http, address: \"{listen}\", workers: {workers}}}]\nroutes: [{{hosts: [\"*\"], cluster: origin}}]\nclusters:\n  - name: origin\n    endpoints: [{{address: \"{ORIGIN}\"}}]\n"
    );
    let file = format!("reuseport-{}.yaml", name.replace('+', "-"));
    let live = live_config(env, &file, &conf)?;
    // Two threads either way: the shared runtime's, or the listener's workers.
    let runtime = if workers > 1 { "1" } else { "2" };
    let admin = if workers > 1 {
        "127.0.0.1:19952"
    } else {
        "127.0.0.1:19951"
    };
    let args = [
        "run",
        "--config",
        &live,
        "--workers",
        runtime,
        "--admin",
        admin,
    ];
    let log = env.scratch.join(file.replace(".yaml", ".log"));
    Ok(Contender {
        name,
        addr: listen.parse()?,
        process: spawn(&env.lb, &args, &log)?,
    })
}

fn start_haproxy(env: &Env, listen: &str) -> Result<Contender> {
    // `defer-accept` as lb's listeners do by default (see the l7 suite).
    let bind = format!("{listen} defer-accept");
    let conf = haproxy_head(&bind, "default_backend origin", "")
        .replace("nbthread 1", "nbthread 2")
        + &format!("backend origin\n  server o1 {ORIGIN}\n");
    let live = live_config(env, "reuseport-haproxy.cfg", &conf)?;
    let log = env.scratch.join("reuseport-haproxy.log");
    Ok(Contender {
        name: "haproxy",
        addr: listen.parse()?,
        process: spawn(Path::new("/usr/sbin/haproxy"), &["-db", "-f", &live], &log)?,
    })
}

/// Starts `program` allowed on [`CPUS`] (taskset execs it: the pid is the program's).
fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<ChildGuard> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("taskset")
        .args(["-c", CPUS])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(ChildGuard(child))
}

//! Suite `scrape`: does scraping /metrics once a second move proxied latency? The l7 keep-alive
//! scenario through one lb (and one HAProxy) process, measured alternately without and with a scraper.

use super::l7::{self, HOST};
use super::proc::{spawn_pinned, wait_http};
use super::scraper::{push_scrapes, scrape_once, with_scraper, Pool, INTERVAL, SCRAPE_TIMEOUT};
use super::{haproxy_head, live_config, median, portable, save_config, Env, SuiteResult};
use anyhow::{bail, Context, Result};
use lb_tests::process::ChildGuard;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const LB: &str = "127.0.0.1:19041";
const LB_ADMIN: &str = "127.0.0.1:19941";
const HAPROXY: &str = "127.0.0.1:19042";
const HAPROXY_METRICS: &str = "127.0.0.1:19943";
/// Routes in both configs: one used by the load (Host bench.test), the rest on hosts hI.bench.
const ROUTES: usize = 1000;
const CLUSTERS: usize = 3;

/// One proxy process, measured as two contenders: without and with the scraper.
struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    metrics: SocketAddr,
    _process: ChildGuard,
}

pub fn run(env: &Env) -> Result<SuiteResult> {
    let mut result = SuiteResult::new("scrape");
    let _origin = super::origin::start_origin(env)?;
    let proxies = [start_lb(env)?, start_haproxy(env)?];
    for p in &proxies {
        wait_http(p.addr, HOST, "/small", Duration::from_secs(60)).with_context(|| p.name)?;
        let first = scrape_once(p.metrics, true).with_context(|| format!("{} /metrics", p.name))?;
        eprintln!(
            "bench scrape: {} /metrics: {} bytes, {} series",
            p.name, first.1, first.2
        );
    }
    // Contenders in alternation order: (proxy, scraping?).
    let contenders: Vec<(usize, bool)> = vec![(0, false), (0, true), (1, false), (1, true)];
    let label = |(i, s): (usize, bool)| -> String {
        format!("{}{}", proxies[i].name, if s { "+scrape" } else { "" })
    };
    let sc = &l7::SCENARIOS[0];
    let saturated = format!("{}, saturated", sc.name);
    eprintln!("bench scrape: {saturated}");
    for &(i, s) in &contenders {
        with_scraper(s.then_some(proxies[i].metrics), || {
            l7::measure(proxies[i].addr, sc, Duration::from_secs(1)) // warm-up
        })?;
    }
    let mut rate = vec![Vec::new(); contenders.len()];
    let mut p99 = vec![Vec::new(); contenders.len()];
    let mut pools: Vec<Pool> = (0..contenders.len()).map(|_| Vec::new()).collect();
    let reps = paired_reps(env);
    for r in 0..reps {
        for k in order(r) {
            let (i, s) = contenders[k];
            let (w, scrapes) = with_scraper(s.then_some(proxies[i].metrics), || {
                l7::measure(proxies[i].addr, sc, env.run)
            })?;
            rate[k].push(w.rate);
            p99[k].push(w.p99_ms);
            pools[k].extend(scrapes);
        }
    }
    let lb_rate = median(&rate[0]);
    for (k, &c) in contenders.iter().enumerate() {
        let name = label(c);
        result.push(
            &saturated,
            &name,
            "throughput",
            "req/s",
            true,
            rate[k].clone(),
        );
        let p = p99[k].clone();
        result.push(
            &saturated,
            &name,
            "p99 latency at saturation",
            "ms",
            false,
            p,
        );
    }
    paired(&mut result, &saturated, &label, "throughput", true, &rate);
    paired(
        &mut result,
        &saturated,
        &label,
        "p99 latency at saturation",
        false,
        &p99,
    );
    push_scrapes(
        &mut result,
        "scrapes during the saturated runs",
        &contenders,
        &label,
        pools,
    )?;

    if !lb_rate.is_finite() {
        bail!("no lb throughput measured");
    }
    let probe_rate = (lb_rate * 0.5).round();
    let fixed = format!("fixed rate 50% of lb ({probe_rate:.0} req/s), 3 B body");
    eprintln!("bench scrape: {fixed}");
    let mut p50 = vec![Vec::new(); contenders.len()];
    let mut p99 = vec![Vec::new(); contenders.len()];
    let mut pools: Vec<Pool> = (0..contenders.len()).map(|_| Vec::new()).collect();
    for r in 0..reps {
        for k in order(r) {
            let (i, s) = contenders[k];
            let (mut lat, scrapes) = with_scraper(s.then_some(proxies[i].metrics), || {
                l7::probe(proxies[i].addr, probe_rate, env.run)
            })?;
            lat.sort_by(|a, b| a.total_cmp(b));
            p50[k].push(l7::percentile(&lat, 50.0));
            p99[k].push(l7::percentile(&lat, 99.0));
            pools[k].extend(scrapes);
        }
    }
    for (k, &c) in contenders.iter().enumerate() {
        let name = label(c);
        result.push(&fixed, &name, "p50 latency", "ms", false, p50[k].clone());
        result.push(&fixed, &name, "p99 latency", "ms", false, p99[k].clone());
    }
    paired(&mut result, &fixed, &label, "p50 latency", false, &p50);
    paired(&mut result, &fixed, &label, "p99 latency", false, &p99);
    push_scrapes(
        &mut result,
        "scrapes during the fixed-rate runs",
        &contenders,
        &label,
        pools,
    )?;

    result.notes = vec![
        format!(
            "One lb process (`--workers 1`, pinned to CPU 0) and one HAProxy process (`nbthread 1`, CPU 0), each measured \
             as two contenders in alternation: without a scraper (`lb`, `haproxy`) and with one (`lb+scrape`, \
             `haproxy+scrape`). Ratio columns compare `X+scrape` with `X` from the same run (1.00× = no effect)."
        ),
        format!(
            "Both configs carry {ROUTES} routes: Host bench.test (the load) plus {} routes on hosts hI.bench, spread over \
             {CLUSTERS} clusters that all point at the origin; HAProxy routes through a {ROUTES}-entry host map and serves \
             its Prometheus exporter (`http-request use-service prometheus-exporter`) on a separate frontend.",
            ROUTES - 1
        ),
        format!(
            "The scraper is a thread on CPU 1 (with the origin, wrk and the probe) that GETs /metrics (lb: the admin \
             endpoint; HAProxy: the exporter frontend) every {INTERVAL:?} from the start to the end of each measured run, \
             on a new connection with a {SCRAPE_TIMEOUT:?} timeout; scrapes done, bytes and series per scrape are reported."
        ),
        format!(
            "The l7 keep-alive scenario: wrk (1 thread, {} connections, 3 B body) at saturation, then an open-loop probe \
             ({} keep-alive connections) at 50% of lb's saturated rate for all four contenders, timed from the scheduled \
             send. {} alternating repetitions of {:?} after a 1 s warm-up per contender (the scraper runs in warm-ups too).",
            l7::CONNECTIONS,
            l7::PROBE_CONNECTIONS,
            reps,
            env.run
        ),
        "This machine's speed drifts a lot between runs (other tenants), so each repetition measures both contenders of a \
         proxy back to back, in alternating order (A B then B A), and the `paired ratio` rows give the median over \
         repetitions of (with scraper / without) from the same repetition: the drift cancels within a pair. Trust \
         those rows over the ratio of medians."
            .into(),
        "Scrape duration is measured by the scraper (connect to last byte); p50 over every scrape of the scenario, p99 \
         likewise (with few scrapes per run it is close to their maximum)."
            .into(),
        "Configs: bench/results/configs/scrape-*.".into(),
    ];
    Ok(result)
}

/// Twice the usual repetitions (pairs are cheap to add and their ratios are what count).
fn paired_reps(env: &Env) -> usize {
    if env.quick {
        env.reps
    } else {
        env.reps * 2
    }
}

/// Contender indices for repetition `r`: each proxy's pair back to back, order flipped every
/// other repetition so neither side always runs first.
fn order(r: usize) -> [usize; 4] {
    if r.is_multiple_of(2) {
        [0, 1, 2, 3]
    } else {
        [1, 0, 3, 2]
    }
}

/// Rows `paired ratio: METRIC` on each +scrape contender: per repetition, its value divided by
/// the same proxy's value without scraper in that repetition.
fn paired(
    result: &mut SuiteResult,
    scenario: &str,
    label: &dyn Fn((usize, bool)) -> String,
    metric: &str,
    higher_is_better: bool,
    values: &[Vec<f64>],
) {
    for proxy in 0..2 {
        let (without, with) = (&values[2 * proxy], &values[2 * proxy + 1]);
        let ratios = super::paired(with, without);
        result.push(
            scenario,
            &label((proxy, true)),
            &format!("paired ratio: {metric}"),
            "×",
            higher_is_better,
            ratios,
        );
    }
}

fn lb_config() -> String {
    let mut s = format!(
        "access_log: {{format: off}}\nlisteners: [{{name: http, address: \"{LB}\"}}]\nroutes:\n  - {{name: load, hosts: [{HOST}], cluster: c0}}\n"
    );
    for i in 1..ROUTES {
        let _ = writeln!(
            s,
            "  - {{name: r{i}, hosts: [h{i}.bench], cluster: c{}}}",
            i % CLUSTERS
        );
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

fn start_lb(env: &Env) -> Result<Proxy> {
    let live = live_config(env, "scrape-lb.yaml", &lb_config())?;
    let process = spawn_pinned(
        0,
        &env.lb,
        &[
            "run",
            "--config",
            &live,
            "--workers",
            "1",
            "--admin",
            LB_ADMIN,
        ],
        &env.scratch.join("scrape-lb.log"),
    )?;
    Ok(Proxy {
        name: "lb",
        addr: LB.parse()?,
        metrics: LB_ADMIN.parse()?,
        _process: process,
    })
}

fn haproxy_config(map: &Path) -> String {
    let route = format!(
        "use_backend %[req.hdr(host),lower,map({})]\n  default_backend c0",
        map.display()
    );
    let mut s = haproxy_head(HAPROXY, &route, "");
    let _ = writeln!(
        s,
        "frontend prometheus\n  bind {HAPROXY_METRICS}\n  http-request use-service prometheus-exporter if {{ path /metrics }}\n  no log\n"
    );
    for c in 0..CLUSTERS {
        let _ = writeln!(s, "backend c{c}\n  server s1 {}\n", l7::ORIGIN);
    }
    s
}

fn start_haproxy(env: &Env) -> Result<Proxy> {
    let mut map = format!("{HOST} c0\n");
    for i in 1..ROUTES {
        let _ = writeln!(map, "h{i}.bench c{}", i % CLUSTERS);
    }
    let map_path = env.scratch.join("scrape-hosts.map");
    save_config(env, "scrape-hosts.map", &map)?;
    std::fs::write(&map_path, &map)?;
    let conf = haproxy_config(&map_path);
    save_config(env, "scrape-haproxy.cfg", &portable(&conf, &env.scratch))?;
    let live = env.scratch.join("scrape-haproxy.cfg");
    std::fs::write(&live, &conf)?;
    let live_s = live.display().to_string();
    let process = spawn_pinned(
        0,
        Path::new("/usr/sbin/haproxy"),
        &["-db", "-f", &live_s],
        &env.scratch.join("scrape-haproxy.log"),
    )?;
    Ok(Proxy {
        name: "haproxy",
        addr: HAPROXY.parse()?,
        metrics: HAPROXY_METRICS.parse()?,
        _process: process,
    })
}

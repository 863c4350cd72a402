//! The scraper of the `scrape` suite: a low-priority thread that GETs /metrics once a second
//! for exactly as long as a measured run lasts, and the rows that report what it saw.

use super::l7;
use super::SuiteResult;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

pub(super) const INTERVAL: Duration = Duration::from_secs(1);
pub(super) const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one scraper saw during one measured run.
#[derive(Default)]
pub(super) struct Scrapes {
    failed: usize,
    /// Per successful scrape: duration (ms), body bytes, series (non-comment lines).
    done: Vec<(f64, usize, usize)>,
}

/// Scrapes pooled per contender over all repetitions of one load scenario.
pub(super) type Pool = Vec<Scrapes>;

/// Runs `work` with a scraper of `metrics` (if any) going for exactly as long as `work` runs.
pub(super) fn with_scraper<T>(
    metrics: Option<SocketAddr>,
    work: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<Scrapes>)> {
    let Some(addr) = metrics else {
        return Ok((work()?, None));
    };
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let scraper = s.spawn(move || {
            // Prometheus runs elsewhere; here the scraper shares CPU 1 with the origin, wrk and
            // the probe. At nice +10 it takes their idle time, so what the run measures is the
            // proxy serving scrapes, not the scraper reading them.
            lower_priority();
            let mut out = Scrapes::default();
            let start = Instant::now();
            for n in 1u32.. {
                // Series are counted once per run (same config, same count every time).
                let count = out.done.is_empty();
                match scrape_once(addr, count) {
                    Ok(x) => out.done.push(x),
                    Err(_) => out.failed += 1,
                }
                let next = start + INTERVAL * n;
                let wait = next.saturating_duration_since(Instant::now());
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            out
        });
        let r = work();
        let _ = stop.send(());
        let scrapes = scraper
            .join()
            .map_err(|_| anyhow::anyhow!("scraper thread panicked"))?;
        Ok((r?, Some(scrapes)))
    })
}

/// nice +10 for the calling thread (a thread id is a valid PRIO_PROCESS target on Linux).
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// One GET /metrics over HTTP/1.0 on a new connection, read whole (a plain read loop: the
/// scraper must cost little next to the proxy it measures). Returns (duration ms, body bytes,
/// series when `count`, else 0).
pub(super) fn scrape_once(addr: SocketAddr, count: bool) -> Result<(f64, usize, usize)> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")?;
    let mut raw = Vec::with_capacity(4 << 20);
    s.read_to_end(&mut raw)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the /metrics answer")?;
    if !(raw.starts_with(b"HTTP/1.0 200") || raw.starts_with(b"HTTP/1.1 200")) {
        bail!(
            "{addr}/metrics: {}",
            String::from_utf8_lossy(&raw[..head_end.min(80)])
        );
    }
    let body = &raw[head_end + 4..];
    let series = if count {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
            .count()
    } else {
        0
    };
    Ok((ms, body.len(), series))
}

pub(super) fn push_scrapes(
    result: &mut SuiteResult,
    scenario: &str,
    contenders: &[(usize, bool)],
    label: &dyn Fn((usize, bool)) -> String,
    pools: Vec<Pool>,
) -> Result<()> {
    for (&c, pool) in contenders.iter().zip(pools) {
        if !c.1 {
            continue;
        }
        let name = label(c);
        let done: Vec<&(f64, usize, usize)> = pool.iter().flat_map(|s| &s.done).collect();
        if done.is_empty() {
            bail!("{name}: no successful scrape during {scenario}");
        }
        let per_run = |f: &dyn Fn(&Scrapes) -> usize| -> Vec<f64> {
            pool.iter().map(|s| f(s) as f64).collect()
        };
        let mut ms: Vec<f64> = done.iter().map(|d| d.0).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let kib = done.iter().map(|d| d.1 as f64 / 1024.0).collect();
        // Counted on the first scrape of each run only.
        let series = pool
            .iter()
            .filter_map(|s| s.done.first())
            .map(|d| d.2 as f64)
            .collect();
        let p99 = vec![l7::percentile(&ms, 99.0)];
        result.push(
            scenario,
            &name,
            "scrapes per run",
            "count",
            true,
            per_run(&|s| s.done.len()),
        );
        result.push(
            scenario,
            &name,
            "failed scrapes per run",
            "count",
            false,
            per_run(&|s| s.failed),
        );
        result.push(scenario, &name, "scrape size", "KiB", false, kib);
        result.push(scenario, &name, "series per scrape", "count", false, series);
        result.push(scenario, &name, "scrape duration p50", "ms", false, ms);
        result.push(scenario, &name, "scrape duration p99", "ms", false, p99);
    }
    Ok(())
}

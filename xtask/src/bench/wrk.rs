//! Runs wrk (1 thread, on the harness's CPU) and reads its report: rate, request count, p99
//! latency and every kind of failure (non-2xx/3xx answers, connect/read/write/timeout errors).

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct Wrk {
    pub rate: f64,
    pub requests: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub failures: f64,
}

pub struct Load<'a> {
    pub addr: SocketAddr,
    pub path: &'a str,
    pub host: &'a str,
    pub connections: usize,
    pub new_connection: bool,
    /// A wrk Lua script (e.g. rotating Host headers); overrides `host`.
    pub script: Option<&'a Path>,
}

pub fn run(load: &Load, dur: Duration) -> Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{}", load.connections),
        &format!("-d{}s", dur.as_secs().max(1)),
        "--latency",
    ]);
    match load.script {
        Some(s) => cmd.arg("-s").arg(s),
        None => cmd.args(["-H", &format!("Host: {}", load.host)]),
    };
    if load.new_connection {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd
        .arg(format!("http://{}{}", load.addr, load.path))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&text)
}

fn parse(text: &str) -> Result<Wrk> {
    let after = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| {
                v.split_whitespace()
                    .next()?
                    .trim_end_matches(',')
                    .parse()
                    .ok()
            })
    };
    let rate = after("Requests/sec:").context("no Requests/sec in wrk output")?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no request count in wrk output")?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()))
        .context("no 99% latency in wrk output")?;
    let non2xx = after("Non-2xx or 3xx responses:").unwrap_or(0.0);
    // "Socket errors: connect 0, read 12, write 0, timeout 0"
    let socket: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|l| {
            l.split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    Ok(Wrk {
        rate,
        requests,
        p99_ms,
        failures: non2xx + socket,
    })
}

/// wrk's `1.23ms` / `456.00us` / `1.20s`.
fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 5s test @ http://127.0.0.1:19001/small\n  1 threads and 32 connections\n  Latency Distribution\n     50%  420.00us\n     75%  600.00us\n     90%    1.20ms\n     99%    2.50ms\n  180000 requests in 5.00s, 20.00MB read\n  Socket errors: connect 0, read 12, write 1, timeout 2\n  Non-2xx or 3xx responses: 7\nRequests/sec:  36000.50\nTransfer/sec:      4.00MB\n";

    #[test]
    fn reads_rate_latency_and_failures() {
        let w = parse(OUT).unwrap();
        assert_eq!(w.rate, 36000.50);
        assert_eq!(w.requests, 180000.0);
        assert_eq!(w.p99_ms, 2.5);
        assert_eq!(w.failures, 22.0);
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
        assert!(parse("garbage").is_err());
    }
}

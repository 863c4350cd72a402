//! Node-level series read at scrape time: build info, the process (CPU, memory, fds, threads,
//! start time from /proc/self) and the top-level HTTP counters (responses by exact code).

use super::stats::HttpStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// /proc reports CPU times in USER_HZ ticks, fixed at 100 by the kernel's user ABI.
const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub struct NodeCollector {
    http: Arc<HttpStats>,
}

impl NodeCollector {
    pub fn new(http: Arc<HttpStats>) -> Self {
        NodeCollector { http }
    }
}

/// What /proc says about this process; fields it could not read are None.
#[derive(Debug, Default, PartialEq)]
pub struct ProcStats {
    pub cpu_seconds: Option<f64>,
    pub start_time: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub vm_bytes: Option<f64>,
    pub threads: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

impl ProcStats {
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut s = parse(&stat, &status, &limits, &boot);
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        s
    }
}

/// Parses /proc/self/stat, /proc/self/status, /proc/self/limits and /proc/stat.
pub fn parse(stat: &str, status: &str, limits: &str, boot: &str) -> ProcStats {
    // Fields after the command name, which may itself hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu_seconds = field(14).zip(field(15)).map(|(u, s)| (u + s) / USER_HZ);
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let start_time = field(22).zip(btime).map(|(t, b)| b + t / USER_HZ);
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    ProcStats {
        cpu_seconds,
        start_time,
        rss_bytes: kb("VmRSS:").map(|k| k * 1024.0),
        vm_bytes: kb("VmSize:").map(|k| k * 1024.0),
        threads: kb("Threads:"),
        open_fds: None,
        max_fds,
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<f64>,
) -> Result<(), std::fmt::Error> {
    if let Some(v) = value {
        let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(v).encode(m)?;
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "lb_build_info",
            "1, labelled with the version of the running lb",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;

        let p = ProcStats::read();
        if let Some(cpu) = p.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the lb process",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(m)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory",
            p.rss_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory",
            p.vm_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            p.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Limit on open file descriptors",
            p.max_fds,
        )?;
        gauge(&mut encoder, "process_threads", "OS threads", p.threads)?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Unix time at which the process started",
            p.start_time,
        )?;

        let mut m = encoder.encode_descriptor(
            "lb_http_responses",
            "Responses sent to clients, by exact status code (only codes sent at least once)",
            None,
            MetricType::Counter,
        )?;
        for (code, n) in self.http.codes() {
            let code = code.to_string();
            ConstCounter::new(n).encode(m.encode_family(&[("code", code.as_str())])?)?;
        }
        let m = encoder.encode_descriptor(
            "lb_http_unrouted_requests",
            "Requests answered without a route (no route matched, or refused before routing)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.http.unrouted.load(Relaxed)).encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (l b) (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 1000 123456 789";
        let status = "Name:\tlb\nVmSize:\t  2048 kB\nVmRSS:\t   1024 kB\nThreads:\t7\n";
        let limits = "Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n";
        let boot = "cpu 1 2 3\nbtime 1700000000\n";
        let p = parse(stat, status, limits, boot);
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.start_time, Some(1_700_000_010.0));
        assert_eq!(p.rss_bytes, Some(1024.0 * 1024.0));
        assert_eq!(p.vm_bytes, Some(2048.0 * 1024.0));
        assert_eq!(p.threads, Some(7.0));
        assert_eq!(p.max_fds, Some(1024.0));
        assert_eq!(parse("", "", "", ""), ProcStats::default());
    }

    #[test]
    fn reads_this_process() {
        let p = ProcStats::read();
        assert!(p.rss_bytes.is_some_and(|v| v > 0.0), "{p:?}");
        assert!(p.threads.is_some_and(|v| v >= 1.0), "{p:?}");
        assert!(p.open_fds.is_some_and(|v| v >= 3.0), "{p:?}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
    }
}

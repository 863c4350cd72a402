//! Prometheus metrics (prometheus-client, OpenMetrics text): node-level families in one
//! registry, and collectors that read the live L7 table, /proc and the XDP maps at scrape time.

mod collect;
mod endpoints;
mod l4;
mod process;
pub mod stats;
mod workers;
mod xdp;

use crate::bpf::Dataplane;
use crate::proxy::table::Table;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub use stats::{HttpStats, MirrorCounters, MIRROR_RESULTS};

/// Where the table collector finds the table the proxy serves now.
pub type TableSource = Box<dyn Fn() -> Option<Arc<Table>> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Reload results, created up front so the series exist before the first reload.
const RELOAD_RESULTS: [&str; 3] = ["ok", "invalid", "failed"];

pub struct Metrics {
    registry: Registry,
    /// Responses by exact code and unrouted requests (bumped by the request path).
    pub http: Arc<HttpStats>,
    applied: Family<ConsumerLabels, Gauge>,
    applied_at: Family<ConsumerLabels, Gauge<f64, AtomicU64>>,
    published: Gauge,
    reloads: Family<ResultLabels, Counter>,
    table: Arc<OnceLock<TableSource>>,
    /// The L7 workers of listeners with workers > 1 (counters, drain flags, steering).
    pub workers: Arc<crate::proxy::workers::Workers>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `xdp` adds the XDP per-CPU counters (summed) and the L4 series to every scrape.
    pub fn new(xdp: Option<&Dataplane>) -> Self {
        let mut registry = Registry::default();
        let published = Gauge::default();
        registry.register(
            "lb_snapshot_published_version",
            "Version of the newest configuration snapshot (config, runtime API and health inputs)",
            published.clone(),
        );
        let applied = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "lb_snapshot_applied_version",
            "Version of the snapshot each consumer (proxy, xdp) has applied",
            applied.clone(),
        );
        let applied_at = Family::<ConsumerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lb_snapshot_applied_timestamp_seconds",
            "Unix time at which each consumer (proxy, xdp) last applied a snapshot",
            applied_at.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "lb_config_reloads",
            "Configuration reloads, by result: ok, invalid (rejected, old config kept), failed (valid but not fully applied: a listener could not bind, XDP refused a map update)",
            reloads.clone(),
        );
        for result in RELOAD_RESULTS {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        let http = Arc::new(HttpStats::default());
        registry.register_collector(Box::new(process::NodeCollector::new(http.clone())));
        let table = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(collect::TableCollector(table.clone())));
        if let Some(dp) = xdp {
            registry.register_collector(Box::new(xdp::XdpCollector::new(dp)));
        }
        let workers = Arc::default();
        registry.register_collector(Box::new(workers::WorkerCollector(Arc::clone(&workers))));
        Metrics {
            registry,
            http,
            applied,
            applied_at,
            published,
            reloads,
            table,
            workers,
        }
    }

    /// Lets scrapes read the table the proxy serves (set once, by the daemon).
    pub fn attach_table(&self, source: TableSource) {
        if self.table.set(source).is_err() {
            tracing::warn!("metrics: a table source was already attached");
        }
    }

    pub fn set_published(&self, version: u64) {
        self.published.set(version as i64);
    }

    pub fn set_applied(&self, consumer: &'static str, version: u64) {
        self.applied
            .get_or_create(&ConsumerLabels { consumer })
            .set(version as i64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.applied_at
            .get_or_create(&ConsumerLabels { consumer })
            .set(now);
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

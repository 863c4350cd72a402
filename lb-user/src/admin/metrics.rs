//! The Prometheus registry: proxy request counters (handles created at table build, so the
//! request path only does atomic adds), snapshot convergence, reloads, and XDP stats at scrape.

use crate::bpf::maps::StatsReader;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    cluster: String,
    endpoint: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counters of one (cluster, endpoint) pair by status class.
#[derive(Clone, Debug, Default)]
pub struct RequestCounters([Counter; 5]);

impl RequestCounters {
    pub fn record(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.0[class].inc();
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    applied: Family<ConsumerLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    retries: Family<ClusterLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `xdp` adds the XDP per-CPU counters (summed) to every scrape.
    pub fn new(xdp: Option<Arc<StatsReader>>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "lb_http_requests",
            "HTTP requests answered, by cluster, endpoint and status class (empty labels: no route / no endpoint)",
            requests.clone(),
        );
        let applied = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "lb_snapshot_applied_version",
            "Version of the configuration snapshot each consumer (proxy, xdp) has applied",
            applied.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "lb_config_reloads",
            "Configuration reloads, by result (ok, invalid, failed)",
            reloads.clone(),
        );
        let retries = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "lb_http_retries",
            "Upstream retries (and redispatches), by cluster",
            retries.clone(),
        );
        if let Some(stats) = xdp {
            registry.register_collector(Box::new(XdpCollector(stats)));
        }
        Metrics {
            registry,
            requests,
            applied,
            reloads,
            retries,
        }
    }

    /// Counter handles for one cluster/endpoint; the same series across reloads.
    pub fn request_counters(&self, cluster: &str, endpoint: &str) -> RequestCounters {
        RequestCounters(CLASSES.map(|class| {
            self.requests
                .get_or_create(&RequestLabels {
                    cluster: cluster.to_string(),
                    endpoint: endpoint.to_string(),
                    class,
                })
                .clone()
        }))
    }

    pub fn retries(&self, cluster: &str) -> Counter {
        self.retries
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .clone()
    }

    pub fn set_applied(&self, consumer: &'static str, version: u64) {
        self.applied
            .get_or_create(&ConsumerLabels { consumer })
            .set(version as i64);
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Reads the XDP stats map at scrape time.
#[derive(Debug)]
struct XdpCollector(Arc<StatsReader>);

impl std::fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsReader")
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = match self.0.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading XDP stats");
                return Ok(());
            }
        };
        for (name, help, pick) in [
            (
                "lb_xdp_packets",
                "Packets seen by the XDP program, by verdict and reason (summed over CPUs)",
                (|v: &lb_common::StatValue| v.packets) as fn(&lb_common::StatValue) -> u64,
            ),
            (
                "lb_xdp_bytes",
                "Bytes seen by the XDP program, by verdict and reason (summed over CPUs)",
                |v: &lb_common::StatValue| v.bytes,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (reason, value) in &stats {
                let labels = [
                    ("verdict", reason.verdict().name()),
                    ("reason", reason.name()),
                ];
                ConstCounter::new(pick(value)).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

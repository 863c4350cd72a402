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

    /// Counts by class, 1xx..5xx.
    pub fn get(&self) -> [u64; 5] {
        [0, 1, 2, 3, 4].map(|i| self.0[i].get())
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    applied: Family<ConsumerLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    retries: Family<ClusterLabels, Counter>,
    health: HealthMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    cluster: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    cluster: String,
    endpoint: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    cluster: String,
    endpoint: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    route: String,
    cluster: String,
    result: &'static str,
}

/// Endpoint states, in the order of the state-set gauge.
pub const STATES: [&str; 4] = ["up", "down", "drain", "maint"];

/// Mirror outcomes: a response class, failed (no response), dropped (too many in flight),
/// skipped (body not copyable).
pub const MIRROR_RESULTS: [&str; 8] = [
    "1xx", "2xx", "3xx", "4xx", "5xx", "failed", "dropped", "skipped",
];

#[derive(Default)]
struct HealthMetrics {
    state: Family<StateLabels, Gauge>,
    weight: Family<EndpointLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    ejections: Family<EndpointLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
    transitions: Family<StateLabels, Counter>,
    mirror: Family<MirrorLabels, Counter>,
}

/// Mirror counters of one route, by result (see [`MIRROR_RESULTS`]).
#[derive(Clone, Debug, Default)]
pub struct MirrorCounters(pub [Counter; 8]);

impl MirrorCounters {
    pub fn inc(&self, result: &str) {
        if let Some(i) = MIRROR_RESULTS.iter().position(|r| *r == result) {
            self.0[i].inc();
        }
    }

    pub fn get(&self, result: &str) -> u64 {
        MIRROR_RESULTS
            .iter()
            .position(|r| *r == result)
            .map_or(0, |i| self.0[i].get())
    }
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
        let health = HealthMetrics::default();
        registry.register(
            "lb_endpoint_state",
            "1 for the endpoint's current state (up, down, drain, maint), 0 for the others",
            health.state.clone(),
        );
        registry.register(
            "lb_endpoint_weight",
            "Weight the balancer uses now (after overrides, health, backups and slow start)",
            health.weight.clone(),
        );
        registry.register(
            "lb_endpoint_ejections",
            "Passive health ejections of the endpoint",
            health.ejections.clone(),
        );
        registry.register(
            "lb_health_checks",
            "Active health checks, by result (ok, failed)",
            health.checks.clone(),
        );
        registry.register(
            "lb_endpoint_transitions",
            "Health state changes of the endpoint, by new state (up, down)",
            health.transitions.clone(),
        );
        registry.register(
            "lb_mirror_requests",
            "Mirrored requests by route, mirror cluster and result (status class, failed, dropped, skipped)",
            health.mirror.clone(),
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
            health,
        }
    }

    /// Publishes an endpoint's state and effective weight (set at every table build).
    pub fn endpoint_state(&self, cluster: &str, endpoint: &str, state: &str, weight: f64) {
        for s in STATES {
            self.health
                .state
                .get_or_create(&StateLabels {
                    cluster: cluster.to_string(),
                    endpoint: endpoint.to_string(),
                    state: s,
                })
                .set(i64::from(s == state));
        }
        self.health
            .weight
            .get_or_create(&EndpointLabels {
                cluster: cluster.to_string(),
                endpoint: endpoint.to_string(),
            })
            .set(weight);
    }

    pub fn ejection(&self, cluster: &str, endpoint: &str) {
        self.health
            .ejections
            .get_or_create(&EndpointLabels {
                cluster: cluster.to_string(),
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    pub fn health_check(&self, cluster: &str, endpoint: &str, result: &'static str) {
        self.health
            .checks
            .get_or_create(&CheckLabels {
                cluster: cluster.to_string(),
                endpoint: endpoint.to_string(),
                result,
            })
            .inc();
    }

    pub fn health_transition(&self, cluster: &str, endpoint: &str, to: &'static str) {
        self.health
            .transitions
            .get_or_create(&StateLabels {
                cluster: cluster.to_string(),
                endpoint: endpoint.to_string(),
                state: to,
            })
            .inc();
    }

    pub fn mirror_counters(&self, route: &str, cluster: &str) -> MirrorCounters {
        MirrorCounters(MIRROR_RESULTS.map(|result| {
            self.health
                .mirror
                .get_or_create(&MirrorLabels {
                    route: route.to_string(),
                    cluster: cluster.to_string(),
                    result,
                })
                .clone()
        }))
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

//! The `metrics` section: how much detail /metrics carries. The series count is a formula of
//! routes, clusters and endpoints (docs/metrics.md); these switches shrink its terms.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Per-endpoint series (requests, state, weight, health, in flight). Off: only the
    /// cluster-level aggregates remain (lb_cluster_endpoints counts endpoints by state).
    #[serde(default = "yes")]
    pub endpoint_labels: bool,
    /// Per-route series (requests by status and method class, duration histogram, bytes).
    /// Off: routes are counted only in the cluster and top-level series (mirror results keep
    /// their route label: one set per mirrored route).
    #[serde(default = "yes")]
    pub route_labels: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            endpoint_labels: true,
            route_labels: true,
        }
    }
}

fn yes() -> bool {
    true
}

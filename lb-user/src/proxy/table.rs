//! The L7 table: what the request path reads through one ArcSwap. Derived from a snapshot;
//! keeps the previous table's upstream pools when a cluster's connection settings are unchanged.

use super::balancer::Wrr;
use crate::admin::metrics::{Metrics, RequestCounters};
use crate::snapshot::Snapshot;
use http::uri::Authority;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamClient = Client<HttpConnector, Incoming>;

pub struct Table {
    pub snapshot: Arc<Snapshot>,
    pub clusters: Vec<ClusterState>,
    /// Counts requests that matched no route (or had a bad host).
    pub unrouted: RequestCounters,
}

pub struct ClusterState {
    pub name: String,
    pub endpoints: Vec<EndpointState>,
    pub wrr: Wrr,
    pub client: UpstreamClient,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Counts requests the cluster could not place on any endpoint.
    pub unplaced: RequestCounters,
}

pub struct EndpointState {
    pub address: SocketAddr,
    pub authority: Authority,
    pub counters: RequestCounters,
}

impl Table {
    pub fn build(snapshot: Arc<Snapshot>, prev: Option<&Table>, metrics: &Metrics) -> Table {
        let clusters = snapshot
            .clusters
            .iter()
            .map(|spec| {
                let reuse = prev.and_then(|p| {
                    p.clusters
                        .iter()
                        .find(|c| c.name == spec.name && c.connect_timeout == spec.connect_timeout)
                });
                let client = match reuse {
                    Some(c) => c.client.clone(),
                    None => new_client(spec.connect_timeout),
                };
                let endpoints = spec
                    .endpoints
                    .iter()
                    .map(|e| EndpointState {
                        address: e.address,
                        authority: authority(e.address),
                        counters: metrics.request_counters(&spec.name, &e.address.to_string()),
                    })
                    .collect();
                let weights: Vec<u16> = spec.endpoints.iter().map(|e| e.weight).collect();
                ClusterState {
                    name: spec.name.clone(),
                    endpoints,
                    wrr: Wrr::new(&weights),
                    client,
                    connect_timeout: spec.connect_timeout,
                    response_timeout: spec.response_timeout,
                    unplaced: metrics.request_counters(&spec.name, ""),
                }
            })
            .collect();
        Table {
            snapshot,
            clusters,
            unrouted: metrics.request_counters("", ""),
        }
    }
}

fn authority(addr: SocketAddr) -> Authority {
    // A SocketAddr always renders as a valid authority (`1.2.3.4:80`, `[::1]:80`).
    Authority::try_from(addr.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("invalid"))
}

fn new_client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(http)
}

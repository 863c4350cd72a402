//! The L7 workers: listeners accept HTTP/1.1 and HTTP/2 (TLS, PROXY protocol), the handler routes
//! and balances over pooled upstream connections; state comes from one ArcSwap'd [`table::Table`].

pub mod acks;
pub mod balancer;
pub mod body;
pub mod clusters;
pub mod conn;
pub mod exchange;
pub mod forward;
pub mod h1body;
pub mod h1client;
pub mod h1guard;
pub mod h1server;
pub mod h1write;
pub mod handler;
pub mod headers;
pub mod lazy_tcp;
pub mod listen_opts;
pub mod listeners;
pub mod mirror;
pub mod prepared;
pub mod route;
pub mod router;
pub mod stats;
pub mod table;
pub mod tunnel;
pub mod upstream;
pub mod worker_pool;
pub mod workers;

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// What every connection shares: the current table and the metrics.
pub struct ProxyCtx {
    pub table: ArcSwap<table::Table>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<crate::health::monitor::Handles>,
    /// The snapshot version the table serves, for whoever must wait until a change is live.
    pub applied: tokio::sync::watch::Sender<u64>,
}

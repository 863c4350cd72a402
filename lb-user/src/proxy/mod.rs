//! The L7 workers: listeners accept HTTP/1.1, the handler routes by host and balances by
//! weight over pooled upstream connections; state comes from one ArcSwap'd [`table::Table`].

pub mod balancer;
pub mod handler;
pub mod listeners;
pub mod router;
pub mod table;

use crate::admin::metrics::Metrics;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// What every connection shares: the current table and the metrics.
pub struct ProxyCtx {
    pub table: ArcSwap<table::Table>,
    pub metrics: Arc<Metrics>,
}

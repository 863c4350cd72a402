//! Per-worker series of listeners with workers > 1, read at scrape time from the worker
//! registry: open connections and accepted connections by (listener, worker).

use super::collect::{counter, family, gauge};
use crate::proxy::workers::Workers;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use std::fmt::Error;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(Debug)]
pub struct WorkerCollector(pub Arc<Workers>);

impl Collector for WorkerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        let groups = self.0.groups();
        if groups.is_empty() {
            return Ok(());
        }
        let label = |k: usize| k.to_string();
        family(
            &mut e,
            "lb_worker_connections",
            "Client connections open now on each worker of a listener (workers > 1)",
            MetricType::Gauge,
            |m| {
                for g in &groups {
                    for (k, s) in g.slots.iter().enumerate() {
                        let labels = [("listener", &*g.listener), ("worker", &label(k))];
                        gauge(m, &labels, s.open.load(Relaxed) as f64)?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut e,
            "lb_worker_accepted",
            "Client connections accepted by each worker of a listener (workers > 1)",
            MetricType::Counter,
            |m| {
                for g in &groups {
                    for (k, s) in g.slots.iter().enumerate() {
                        let labels = [("listener", &*g.listener), ("worker", &label(k))];
                        counter(m, &labels, s.accepted.load(Relaxed))?;
                    }
                }
                Ok(())
            },
        )
    }
}

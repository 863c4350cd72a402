//! XDP counters at scrape time: the per-CPU stats map summed over CPUs, one series per
//! verdict and reason (no timer, no copy kept in user space), then the L4 series (l4.rs).

use crate::bpf::l4_aya::L4Reader;
use crate::bpf::maps::StatsReader;
use crate::bpf::Dataplane;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

pub struct XdpCollector {
    stats: Arc<StatsReader>,
    l4: Arc<L4Reader>,
}

impl XdpCollector {
    pub fn new(dp: &Dataplane) -> Self {
        XdpCollector {
            stats: dp.stats(),
            l4: dp.l4_reader(),
        }
    }
}

impl std::fmt::Debug for XdpCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XdpCollector")
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = match self.stats.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading XDP stats");
                return Ok(());
            }
        };
        type Pick = fn(&lb_common::StatValue) -> u64;
        let families: [(&str, &str, Pick); 2] = [
            (
                "lb_xdp_packets",
                "Packets seen by the XDP program, by verdict and reason (summed over CPUs)",
                |v| v.packets,
            ),
            (
                "lb_xdp_bytes",
                "Bytes seen by the XDP program, by verdict and reason (summed over CPUs)",
                |v| v.bytes,
            ),
        ];
        for (name, help, pick) in families {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (reason, value) in &stats {
                let labels = [
                    ("verdict", reason.verdict().name()),
                    ("reason", reason.name()),
                ];
                ConstCounter::new(pick(value)).encode(metric.encode_family(&labels)?)?;
            }
        }
        super::l4::encode(&mut encoder, &self.l4)
    }
}

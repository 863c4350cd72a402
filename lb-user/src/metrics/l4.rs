//! L4 series at scrape time: per-service and per-endpoint packet/byte/flow counters (per-CPU
//! maps summed over CPUs), endpoint weights, connection-table entries and ring slots in use.

use super::collect::{counter, family, gauge};
use crate::bpf::l4_aya::L4Reader;
use crate::snapshot::view::SCALE;
use lb_common::L4Stat;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use std::fmt::Error;

/// Writes the counters of one slot under `labels`, plus its direction label.
type Each<'a> = dyn Fn(&mut MetricEncoder, &[(&str, &str)], &L4Stat) -> Result<(), Error> + 'a;

fn packets(m: &mut MetricEncoder, l: &[(&str, &str)], s: &L4Stat) -> Result<(), Error> {
    directions(m, l, s.packets, s.reply_packets)
}

fn bytes(m: &mut MetricEncoder, l: &[(&str, &str)], s: &L4Stat) -> Result<(), Error> {
    directions(m, l, s.bytes, s.reply_bytes)
}

fn flows(m: &mut MetricEncoder, l: &[(&str, &str)], s: &L4Stat) -> Result<(), Error> {
    counter(m, l, s.flows)
}

fn directions(m: &mut MetricEncoder, l: &[(&str, &str)], to: u64, reply: u64) -> Result<(), Error> {
    let mut labels = l.to_vec();
    labels.push(("direction", "to_endpoint"));
    counter(m, &labels, to)?;
    if let Some(last) = labels.last_mut() {
        *last = ("direction", "reply");
    }
    counter(m, &labels, reply)
}

pub fn encode(e: &mut DescriptorEncoder, r: &L4Reader) -> Result<(), Error> {
    let labels = r.labels();
    let read = |what: &str, id: u32, v: anyhow::Result<L4Stat>| {
        v.unwrap_or_else(|err| {
            tracing::warn!(error = %err, what, id, "reading L4 counters");
            L4Stat::default()
        })
    };
    let services: Vec<(&str, L4Stat)> = labels
        .services
        .iter()
        .map(|(id, name)| (&**name, read("service", *id, r.service(*id))))
        .collect();
    let each_service = |m: &mut MetricEncoder, f: &Each| -> Result<(), Error> {
        for (name, s) in &services {
            f(m, &[("service", name)], s)?;
        }
        Ok(())
    };
    family(
        e,
        "lb_l4_service_packets",
        "Packets of the L4 service, by direction (to_endpoint: client to endpoint; reply)",
        MetricType::Counter,
        |m| each_service(m, &packets),
    )?;
    family(
        e,
        "lb_l4_service_bytes",
        "Bytes of the L4 service's packets, by direction",
        MetricType::Counter,
        |m| each_service(m, &bytes),
    )?;
    family(
        e,
        "lb_l4_service_flows",
        "Flows created for the L4 service (new connections and UDP flows given an endpoint)",
        MetricType::Counter,
        |m| each_service(m, &flows),
    )?;
    if labels.endpoint_labels {
        let endpoints: Vec<(&str, &str, f64, L4Stat)> = labels
            .endpoints
            .iter()
            .map(|ep| {
                let weight = f64::from(ep.effective) / f64::from(SCALE);
                let stat = read("endpoint", ep.id, r.endpoint(ep.id));
                (&*ep.service, &*ep.endpoint, weight, stat)
            })
            .collect();
        let each = |m: &mut MetricEncoder, f: &Each| -> Result<(), Error> {
            for (service, endpoint, _, s) in &endpoints {
                f(m, &[("service", service), ("endpoint", endpoint)], s)?;
            }
            Ok(())
        };
        family(
            e,
            "lb_l4_endpoint_packets",
            "Packets between the L4 service and this endpoint, by direction",
            MetricType::Counter,
            |m| each(m, &packets),
        )?;
        family(
            e,
            "lb_l4_endpoint_bytes",
            "Bytes between the L4 service and this endpoint, by direction",
            MetricType::Counter,
            |m| each(m, &bytes),
        )?;
        family(
            e,
            "lb_l4_endpoint_flows",
            "Flows of the L4 service given to this endpoint",
            MetricType::Counter,
            |m| each(m, &flows),
        )?;
        family(
            e,
            "lb_l4_endpoint_weight",
            "Weight of the endpoint in the service's Maglev ring (0: no new flows, its flows stay)",
            MetricType::Gauge,
            |m| {
                for (service, endpoint, w, _) in &endpoints {
                    gauge(m, &[("service", service), ("endpoint", endpoint)], *w)?;
                }
                Ok(())
            },
        )?;
    }
    family(
        e,
        "lb_l4_flows",
        "Connection-table entries (counted every few seconds in the background)",
        MetricType::Gauge,
        |m| m.encode_gauge(&(r.flows() as f64)),
    )?;
    family(
        e,
        "lb_l4_ring_slots_used",
        "Slots of the ring array holding the services' Maglev rings",
        MetricType::Gauge,
        |m| m.encode_gauge(&f64::from(labels.ring_slots_used)),
    )
}

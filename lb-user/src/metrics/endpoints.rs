//! Endpoint series (requests, errors, in flight, state, weight, health events), encoded at
//! scrape time from the live table; present only while `metrics.endpoint_labels` is on.

use super::collect::{counter, family, gauge, STATES};
use super::stats::{CLASSES, SOURCES};
use crate::proxy::table::Table;
use crate::snapshot::view::SCALE;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use std::fmt::Error;
use std::sync::atomic::Ordering::Relaxed;

/// (state, effective weight) of endpoint `j` of cluster `i`, from the snapshot's views.
pub fn endpoint_state(t: &Table, i: usize, j: usize) -> (&'static str, f64) {
    match t.snapshot.clusters.get(i).and_then(|v| v.endpoints.get(j)) {
        Some(v) => (v.state.as_str(), f64::from(v.effective) / f64::from(SCALE)),
        None => (
            "up",
            t.clusters[i]
                .weights
                .get(j)
                .map_or(0.0, |w| f64::from(*w) / f64::from(SCALE)),
        ),
    }
}

/// Writes the series of endpoint `j` of cluster `i`, given its (cluster, endpoint) labels.
type EachEndpoint<'a> =
    dyn Fn(&mut MetricEncoder, usize, usize, [(&str, &str); 2]) -> Result<(), Error> + 'a;

pub fn endpoints(e: &mut DescriptorEncoder, t: &Table) -> Result<(), Error> {
    let each = |m: &mut MetricEncoder, f: &EachEndpoint| -> Result<(), Error> {
        for (i, c) in t.clusters.iter().enumerate() {
            for (j, ep) in c.endpoints.iter().enumerate() {
                f(m, i, j, [("cluster", &c.name), ("endpoint", &ep.name)])?;
            }
        }
        Ok(())
    };
    let ep = |i: usize, j: usize| &t.clusters[i].endpoints[j];
    family(
        e,
        "lb_endpoint_requests",
        "Requests answered by the endpoint, by status class",
        MetricType::Counter,
        |m| {
            each(m, &|m, i, j, [c, n]| {
                for (class, v) in CLASSES.iter().zip(ep(i, j).stats.requests()) {
                    counter(m, &[c, n, ("class", class)], v)?;
                }
                Ok(())
            })
        },
    )?;
    family(
        e,
        "lb_endpoint_errors",
        "Requests sent to the endpoint that ended in an error, by source",
        MetricType::Counter,
        |m| {
            each(m, &|m, i, j, [c, n]| {
                for (source, v) in SOURCES.iter().zip(ep(i, j).stats.errors()) {
                    counter(m, &[c, n, ("source", source)], v)?;
                }
                Ok(())
            })
        },
    )?;
    family(
        e,
        "lb_endpoint_requests_active",
        "Requests in flight to the endpoint",
        MetricType::Gauge,
        |m| each(m, &|m, i, j, l| gauge(m, &l, f64::from(ep(i, j).load()))),
    )?;
    family(
        e,
        "lb_endpoint_state",
        "1 for the endpoint's current state (up, down, drain, maint), 0 for the others",
        MetricType::Gauge,
        |m| {
            each(m, &|m, i, j, [c, n]| {
                let (now, _) = endpoint_state(t, i, j);
                for s in STATES {
                    gauge(m, &[c, n, ("state", s)], f64::from(u8::from(s == now)))?;
                }
                Ok(())
            })
        },
    )?;
    family(
        e,
        "lb_endpoint_weight",
        "Weight the balancer uses now (after overrides, health, backups and slow start)",
        MetricType::Gauge,
        |m| each(m, &|m, i, j, l| gauge(m, &l, endpoint_state(t, i, j).1)),
    )?;
    family(
        e,
        "lb_endpoint_ejections",
        "Passive health ejections of the endpoint",
        MetricType::Counter,
        |m| {
            each(m, &|m, i, j, l| {
                counter(m, &l, ep(i, j).observer.events.ejections.load(Relaxed))
            })
        },
    )?;
    family(
        e,
        "lb_endpoint_transitions",
        "Health state changes of the endpoint, by new state (up, down)",
        MetricType::Counter,
        |m| {
            each(m, &|m, i, j, [c, n]| {
                let ev = &ep(i, j).observer.events;
                counter(m, &[c, n, ("state", "up")], ev.went_up.load(Relaxed))?;
                counter(m, &[c, n, ("state", "down")], ev.went_down.load(Relaxed))
            })
        },
    )?;
    family(
        e,
        "lb_health_checks",
        "Active health checks, by result (ok, failed); endpoints of clusters with active checks",
        MetricType::Counter,
        |m| {
            each(m, &|m, i, j, [c, n]| {
                if t.clusters[i].cfg.health.active.is_none() {
                    return Ok(());
                }
                let ev = &ep(i, j).observer.events;
                counter(m, &[c, n, ("result", "ok")], ev.checks_ok.load(Relaxed))?;
                counter(
                    m,
                    &[c, n, ("result", "failed")],
                    ev.checks_failed.load(Relaxed),
                )
            })
        },
    )
}

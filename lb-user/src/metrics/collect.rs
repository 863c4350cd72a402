//! Route, cluster, endpoint and listener series, encoded at scrape time from the table the
//! proxy serves now: exactly the live objects, so removed routes and endpoints leave no series.

use super::stats::{CLASSES, METHOD_CLASSES, MIRROR_RESULTS, SOURCES, TLS_FAILURES};
use super::TableSource;
use crate::proxy::table::Table;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::fmt::Error;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

/// Endpoint states in the order of the state-set gauges.
pub const STATES: [&str; 4] = ["up", "down", "drain", "maint"];

pub struct TableCollector(pub Arc<OnceLock<TableSource>>);

impl std::fmt::Debug for TableCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableCollector")
    }
}

pub(super) fn counter(m: &mut MetricEncoder, labels: &[(&str, &str)], v: u64) -> Result<(), Error> {
    ConstCounter::new(v).encode(m.encode_family(&labels)?)
}

pub(super) fn gauge(m: &mut MetricEncoder, labels: &[(&str, &str)], v: f64) -> Result<(), Error> {
    ConstGauge::new(v).encode(m.encode_family(&labels)?)
}

/// One family: its descriptor, then `each` writes its series.
pub(super) fn family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    each: impl FnOnce(&mut MetricEncoder) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    each(&mut m)
}

impl Collector for TableCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        let Some(table) = self.0.get().and_then(|f| f()) else {
            return Ok(());
        };
        listeners(&mut e, &table)?;
        if table.snapshot.config.metrics.route_labels {
            routes(&mut e, &table)?;
        }
        mirrors(&mut e, &table)?;
        spans(&mut e, &table)?;
        clusters(&mut e, &table)?;
        if table.snapshot.config.metrics.endpoint_labels {
            super::endpoints::endpoints(&mut e, &table)?;
        }
        Ok(())
    }
}

fn listeners(e: &mut DescriptorEncoder, t: &Table) -> Result<(), Error> {
    let mut ls: Vec<_> = t.listeners.values().collect();
    ls.sort_by(|a, b| a.name.cmp(&b.name));
    let tls: Vec<_> = ls.iter().filter(|l| l.tls.is_some()).collect();
    family(
        e,
        "lb_listener_connections",
        "Client connections accepted",
        MetricType::Counter,
        |m| {
            ls.iter().try_for_each(|l| {
                counter(m, &[("listener", &l.name)], l.stats.accepted.load(Relaxed))
            })
        },
    )?;
    family(
        e,
        "lb_listener_connections_active",
        "Client connections open now",
        MetricType::Gauge,
        |m| {
            ls.iter().try_for_each(|l| {
                gauge(
                    m,
                    &[("listener", &l.name)],
                    l.stats.active.load(Relaxed) as f64,
                )
            })
        },
    )?;
    family(
        e,
        "lb_listener_tls_handshakes",
        "TLS handshakes completed (TLS listeners)",
        MetricType::Counter,
        |m| {
            tls.iter().try_for_each(|l| {
                counter(
                    m,
                    &[("listener", &l.name)],
                    l.stats.handshakes.load(Relaxed),
                )
            })
        },
    )?;
    family(
        e,
        "lb_listener_tls_handshake_failures",
        "TLS handshakes that failed, by reason (timeout, unknown_sni, protocol, bad_message, closed)",
        MetricType::Counter,
        |m| {
            for l in &tls {
                for (reason, n) in TLS_FAILURES.iter().zip(l.stats.handshake_failures()) {
                    counter(m, &[("listener", &l.name), ("reason", reason)], n)?;
                }
            }
            Ok(())
        },
    )
}

fn routes(e: &mut DescriptorEncoder, t: &Table) -> Result<(), Error> {
    family(
        e,
        "lb_route_requests",
        "Requests answered on the route, by method class (read, write, other) and status class",
        MetricType::Counter,
        |m| {
            for r in t.routes.iter() {
                for (method, row) in METHOD_CLASSES.iter().zip(r.stats.requests()) {
                    for (class, n) in CLASSES.iter().zip(row) {
                        let labels = [("route", &*r.name), ("method", method), ("class", class)];
                        counter(m, &labels, n)?;
                    }
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "lb_route_request_duration_seconds",
        "Time from the request's arrival to the response's last byte",
        MetricType::Histogram,
        |m| {
            for r in t.routes.iter() {
                let (sum, count, buckets) = r.stats.duration.read();
                let labels = [("route", &*r.name)];
                m.encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "lb_route_request_bytes",
        "Request body bytes received",
        MetricType::Counter,
        |m| {
            t.routes
                .iter()
                .try_for_each(|r| counter(m, &[("route", &r.name)], r.stats.bytes_in.load(Relaxed)))
        },
    )?;
    family(
        e,
        "lb_route_response_bytes",
        "Response body bytes sent",
        MetricType::Counter,
        |m| {
            t.routes.iter().try_for_each(|r| {
                counter(m, &[("route", &r.name)], r.stats.bytes_out.load(Relaxed))
            })
        },
    )
}

fn mirrors(e: &mut DescriptorEncoder, t: &Table) -> Result<(), Error> {
    family(
        e,
        "lb_mirror_requests",
        "Mirrored requests by route, mirror cluster and result (status class, failed, dropped, skipped)",
        MetricType::Counter,
        |m| {
            for r in t.routes.iter() {
                let Some(mirror) = &r.mirror else { continue };
                for result in MIRROR_RESULTS {
                    let labels = [
                        ("route", &*r.name),
                        ("cluster", &*mirror.cluster_name),
                        ("result", result),
                    ];
                    counter(m, &labels, mirror.counters.get(result))?;
                }
            }
            Ok(())
        },
    )
}

fn spans(e: &mut DescriptorEncoder, t: &Table) -> Result<(), Error> {
    let tr = &t.tracer;
    if !tr.exporting() {
        return Ok(());
    }
    family(
        e,
        "lb_trace_spans",
        "Spans handed to the OTLP exporter, by result (exported, dropped: queue full or stopped, failed: the collector refused or did not answer)",
        MetricType::Counter,
        |m| {
            let n = [("exported", tr.exported()), ("dropped", tr.dropped()), ("failed", tr.failed())];
            n.iter().try_for_each(|(r, v)| counter(m, &[("result", r)], *v))
        },
    )
}

fn clusters(e: &mut DescriptorEncoder, t: &Table) -> Result<(), Error> {
    let cs = &t.clusters;
    family(
        e,
        "lb_cluster_requests",
        "Requests answered for the cluster, by status class",
        MetricType::Counter,
        |m| {
            for c in cs {
                for (class, n) in CLASSES.iter().zip(c.runtime.stats.outcomes.requests()) {
                    counter(m, &[("cluster", &c.name), ("class", class)], n)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "lb_cluster_errors",
        "Requests of the cluster that ended in an error, by source (downstream, upstream, internal)",
        MetricType::Counter,
        |m| {
            for c in cs {
                for (source, n) in SOURCES.iter().zip(c.runtime.stats.outcomes.errors()) {
                    counter(m, &[("cluster", &c.name), ("source", source)], n)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "lb_cluster_retries",
        "Upstream retries and redispatches",
        MetricType::Counter,
        |m| {
            cs.iter().try_for_each(|c| {
                counter(
                    m,
                    &[("cluster", &c.name)],
                    c.runtime.stats.retries.load(Relaxed),
                )
            })
        },
    )?;
    family(
        e,
        "lb_cluster_requests_active",
        "Requests of the cluster in flight",
        MetricType::Gauge,
        |m| {
            cs.iter().try_for_each(|c| {
                gauge(
                    m,
                    &[("cluster", &c.name)],
                    f64::from(c.runtime.active.load(Relaxed)),
                )
            })
        },
    )?;
    family(
        e,
        "lb_cluster_requests_queued",
        "Requests waiting for an endpoint slot (max_connections_per_endpoint)",
        MetricType::Gauge,
        |m| {
            for c in cs {
                let queued: u32 = c
                    .endpoints
                    .iter()
                    .filter_map(|ep| ep.limit.load().as_ref().map(|l| l.queued.load(Relaxed)))
                    .sum();
                gauge(m, &[("cluster", &c.name)], f64::from(queued))?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "lb_cluster_queue_waits",
        "Requests that passed an endpoint connection limit (max_connections_per_endpoint) and got a slot, queued or not",
        MetricType::Counter,
        |m| {
            cs.iter().try_for_each(|c| {
                counter(
                    m,
                    &[("cluster", &c.name)],
                    c.runtime.stats.queue_waits.load(Relaxed),
                )
            })
        },
    )?;
    family(
        e,
        "lb_cluster_queue_wait_seconds",
        "Time requests spent waiting for an endpoint slot",
        MetricType::Counter,
        |m| {
            for c in cs {
                let s = c.runtime.stats.queue_us.load(Relaxed) as f64 / 1e6;
                ConstCounter::new(s).encode(m.encode_family(&[("cluster", &*c.name)])?)?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "lb_cluster_endpoints",
        "Endpoints of the cluster in each state",
        MetricType::Gauge,
        |m| {
            for (i, c) in cs.iter().enumerate() {
                let mut n = [0u32; 4];
                for j in 0..c.endpoints.len() {
                    let (state, _) = super::endpoints::endpoint_state(t, i, j);
                    if let Some(k) = STATES.iter().position(|s| *s == state) {
                        n[k] += 1;
                    }
                }
                for (state, n) in STATES.iter().zip(n) {
                    gauge(m, &[("cluster", &c.name), ("state", state)], f64::from(n))?;
                }
            }
            Ok(())
        },
    )
}

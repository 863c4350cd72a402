//! The status document (JSON) behind `/stats.json`, `/api/v1/status` and `lb ctl`: every
//! route, cluster and endpoint with state, weights, health, overrides and live counters.

use crate::config::{Backups, Balance};
use crate::proxy::stats::{classes_json, mean_ms};
use crate::proxy::table::{Action, ClusterState, Table};
use crate::snapshot::{view::SCALE, EndpointView};
use serde_json::{json, Value};

pub fn document(t: &Table) -> Value {
    let snap = &t.snapshot;
    let generated_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let routes: Vec<Value> = t
        .routes
        .iter()
        .zip(snap.config.routes.iter())
        .map(|(r, cfg)| {
            let clusters: Vec<&str> = match &r.action {
                Action::Cluster(c) => vec![name(t, *c)],
                Action::Split { clusters, .. } => clusters.iter().map(|c| name(t, *c)).collect(),
                Action::Redirect(_) => vec![],
            };
            let mirror = r.mirror.as_ref().map(|m| {
                let c = &m.counters;
                let ok: u64 = ["1xx", "2xx", "3xx", "4xx"].iter().map(|k| c.get(k)).sum();
                json!({
                    "cluster": &*m.cluster_name,
                    "percent": m.percent,
                    "sent": ok + c.get("5xx") + c.get("failed"),
                    "ok": ok,
                    "failed": c.get("5xx") + c.get("failed"),
                    "dropped": c.get("dropped"),
                    "skipped": c.get("skipped"),
                })
            });
            json!({
                "name": &*r.name,
                "hosts": cfg.hosts,
                "clusters": clusters,
                "requests": classes_json(route_classes(&r.stats)),
                "latency_ms_avg": mean_ms(r.tally.timing()),
                "mirror": mirror,
            })
        })
        .collect();
    let clusters: Vec<Value> = t
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| cluster(c, snap.clusters.get(i).map(|v| &v.endpoints[..])))
        .collect();
    json!({
        "version": snap.version,
        "generated_ms": generated_ms,
        "keep_runtime_overrides": snap.config.admin.keep_runtime_overrides,
        "routes": routes,
        "clusters": clusters,
    })
}

/// A route's responses by status class (its counters are by method class too).
fn route_classes(s: &crate::metrics::stats::RouteStats) -> [u64; 5] {
    let rows = s.requests();
    std::array::from_fn(|c| rows.iter().map(|row| row[c]).sum())
}

fn name(t: &Table, i: usize) -> &str {
    t.clusters.get(i).map_or("", |c| &*c.name)
}

pub fn cluster(c: &ClusterState, views: Option<&[EndpointView]>) -> Value {
    let mut classes = [0u64; 5];
    let (mut sum, mut n) = (0u64, 0u64);
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .zip(&c.cfg.endpoints)
        .enumerate()
        .map(|(j, (ep, cfg))| {
            let k = ep.stats.requests();
            for (a, b) in classes.iter_mut().zip(k) {
                *a += b;
            }
            let (s, m) = ep.tally.timing();
            sum += s;
            n += m;
            let v = views.and_then(|v| v.get(j));
            let mut e = json!({
                "name": &*ep.name,
                "address": ep.address.to_string(),
                "backup": cfg.backup,
                "configured_weight": cfg.weight.0,
                "active_connections": ep.load(),
                "requests": classes_json(k),
                "latency_ms_avg": mean_ms((s, m)),
            });
            if let (Some(v), Value::Object(map)) = (v, &mut e) {
                for (key, mut val) in view_json(v) {
                    // Check counts live in the endpoint's observer (the snapshot is republished
                    // on state changes only, not on every check).
                    if key == "health" {
                        let ev = &ep.observer.events;
                        val["checks_ok"] = ev
                            .checks_ok
                            .load(std::sync::atomic::Ordering::Relaxed)
                            .into();
                        val["checks_failed"] = ev
                            .checks_failed
                            .load(std::sync::atomic::Ordering::Relaxed)
                            .into();
                    }
                    map.insert(key.to_string(), val);
                }
            }
            e
        })
        .collect();
    json!({
        "name": &*c.name,
        "balance": match c.cfg.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConnections => "least_connections",
            Balance::Random => "random",
            Balance::Hash => "hash",
        },
        "backups": match c.cfg.backups {
            Backups::First => "first",
            Backups::All => "all",
        },
        "active": c.runtime.active.load(std::sync::atomic::Ordering::Relaxed),
        "requests": classes_json(classes),
        "latency_ms_avg": mean_ms((sum, n)),
        "endpoints": endpoints,
    })
}

fn view_json(v: &EndpointView) -> Vec<(&'static str, Value)> {
    let h = &v.health;
    let over = (v.over != Default::default()).then(|| {
        json!({
            "weight": v.over.weight.map(|w| w.to_json()),
            "state": v.over.state.map(|s| s.as_str()),
        })
    });
    vec![
        ("state", v.state.as_str().into()),
        ("in_use", (v.effective > 0).into()),
        ("weight", v.weight.into()),
        (
            "effective_weight",
            json!(f64::from(v.effective) / f64::from(SCALE)),
        ),
        ("slow_start", json!(v.slow_start)),
        (
            "health",
            json!({
                "active": h.active.as_str(),
                "passive": if h.ejected.is_some() { "ejected" } else { "ok" },
                "reason": h.reason(),
                "ejections": h.ejections,
            }),
        ),
        ("override", json!(over)),
    ]
}

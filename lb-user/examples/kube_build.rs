//! Times the Kubernetes control-plane path in-process (for `cargo xtask bench kube`): objects →
//! mapping (to_config) → merge + config::check → snapshot::build, repeated; then an
//! EndpointSlice change through the endpoint fast path (patch → snapshot rebase → L7 table
//! build against the previous table); prints one JSON line.
//!
//! Usage: kube_build OBJECTS.json BASE.yaml REPS   (OBJECTS.json: an array of API objects)

use anyhow::{bail, Context, Result};
use lb_user::accesslog::AccessLog;
use lb_user::health::monitor::Handles;
use lb_user::kube::fastpath::Served;
use lb_user::kube::source::merge;
use lb_user::kube::{to_config, Objects, Options};
use lb_user::metrics::Metrics;
use lb_user::proxy::table::Table;
use lb_user::{config, snapshot};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn objects(items: Vec<Value>) -> Result<Objects> {
    let mut o = Objects::default();
    for v in items {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "IngressClass" => o.ingress_classes.push(serde_json::from_value(v)?),
            "Ingress" => o.ingresses.push(serde_json::from_value(v)?),
            "Service" => o.services.push(serde_json::from_value(v)?),
            "EndpointSlice" => o.endpoint_slices.push(serde_json::from_value(v)?),
            "Secret" => o.secrets.push(serde_json::from_value(v)?),
            other => bail!("unexpected kind {other:?}"),
        }
    }
    // In (namespace, name) order, as the watch keeps them.
    fn by_name<K: kube::Resource>(v: &mut [Arc<K>]) {
        v.sort_by(|a, b| {
            let (a, b) = (a.meta(), b.meta());
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        });
    }
    by_name(&mut o.ingress_classes);
    by_name(&mut o.ingresses);
    by_name(&mut o.services);
    by_name(&mut o.endpoint_slices);
    by_name(&mut o.secrets);
    Ok(o)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, objs_path, base_path, reps] = args.as_slice() else {
        bail!("usage: kube_build OBJECTS.json BASE.yaml REPS");
    };
    let reps: usize = reps.parse().context("REPS")?;
    let mut items: Vec<Value> = serde_json::from_slice(&std::fs::read(objs_path)?)?;
    // As the API server gives them: every object has a resourceVersion.
    for (i, v) in items.iter_mut().enumerate() {
        v["metadata"]["resourceVersion"] = json!(i.to_string());
    }
    let objs = objects(items)?;
    let base_path = Path::new(base_path);
    let base = config::load_file(base_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = Options::default();
    let (mut mapping, mut merged, mut snap, mut total) = (vec![], vec![], vec![], vec![]);
    let mut sizes = (0, 0, 0);
    let mut last = None;
    for version in 1..=reps as u64 {
        let t0 = Instant::now();
        let mapped = to_config(&objs, &opts);
        mapping.push(t0.elapsed().as_secs_f64() * 1e3);
        sizes = (
            mapped.routes.len(),
            mapped.clusters.len(),
            mapped.rejected.len(),
        );
        drop(mapped);
        let t1 = Instant::now();
        let m = merge(&base, base_path, &objs, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t2 = Instant::now();
        let s = snapshot::build(&m.config, m.tls, version);
        let t3 = Instant::now();
        last = Some((s, m.config, m.sources));
        merged.push((t2 - t1).as_secs_f64() * 1e3);
        snap.push((t3 - t2).as_secs_f64() * 1e3);
        total.push((t3 - t1).as_secs_f64() * 1e3);
    }
    let Some((first, cfg, sources)) = last else {
        bail!("REPS must be at least 1");
    };
    let fast = endpoint_changes(objs, first, cfg, sources, reps)?;
    println!(
        "{}",
        json!({"mapping_ms": mapping, "merge_check_ms": merged, "snapshot_ms": snap,
               "total_ms": total, "routes": sizes.0, "clusters": sizes.1, "rejected": sizes.2,
               "patch_ms": fast.0, "rebase_ms": fast.1, "table_ms": fast.2, "fast_total_ms": fast.3})
    );
    Ok(())
}

type Samples = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// `reps` EndpointSlice changes (one slice's first endpoint toggles readiness, a different
/// Service each time) through the fast path, each timed by stage: patch, snapshot rebase, and
/// the L7 table built against the previous one (as `lb` does on every snapshot).
fn endpoint_changes(
    objs: Objects,
    first: snapshot::Snapshot,
    cfg: config::Config,
    sources: lb_user::kube::fastpath::Sources,
    reps: usize,
) -> Result<Samples> {
    let objs = Arc::new(objs);
    let mut served = Served::new(objs.clone(), Arc::new(cfg), sources);
    let metrics = Arc::new(Metrics::new(None));
    let log = Arc::new(AccessLog::stdout(first.config.access_log.format, 1024));
    let (handles, _streaks) = Handles::new();
    let mut snap = Arc::new(first);
    let mut table = Table::build(snap.clone(), None, &metrics, log.clone(), &handles);
    let mut cur = objs;
    let mut out: Samples = Default::default();
    let n = cur.endpoint_slices.len();
    for k in 0..reps {
        let mut next = Objects::clone(&cur);
        let slice = Arc::make_mut(&mut next.endpoint_slices[(k * 7919) % n.max(1)]);
        slice.metadata.resource_version = Some(format!("change-{k}"));
        if let Some(c) = slice
            .endpoints
            .first_mut()
            .map(|e| e.conditions.get_or_insert_with(Default::default))
        {
            c.ready = Some(!c.ready.unwrap_or(true));
        }
        let next = Arc::new(next);
        let t0 = Instant::now();
        let Some(patched) = served.patch(&next) else {
            bail!("change {k}: the fast path refused a readiness change");
        };
        let t1 = Instant::now();
        let version = snap.version + 1;
        let rebased = snap.rebase(
            patched,
            snap.overrides.clone(),
            snap.health.clone(),
            t1,
            version,
        );
        let t2 = Instant::now();
        snap = Arc::new(rebased);
        table = Table::build(snap.clone(), Some(&table), &metrics, log.clone(), &handles);
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        out.0.push(ms(t0, t1));
        out.1.push(ms(t1, t2));
        out.2.push(ms(t2, t3));
        out.3.push(ms(t0, t3));
        cur = next;
    }
    drop(table);
    Ok(out)
}

//! Times the Kubernetes control-plane path in-process (for `cargo xtask bench kube`): objects →
//! mapping (to_config) → merge + config::check → snapshot::build, repeated; prints one JSON line.
//!
//! Usage: kube_build OBJECTS.json BASE.yaml REPS   (OBJECTS.json: an array of API objects)

use anyhow::{bail, Context, Result};
use lb_user::kube::source::merge;
use lb_user::kube::{to_config, Objects, Options};
use lb_user::{config, snapshot};
use serde_json::{json, Value};
use std::path::Path;
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
    Ok(o)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, objs_path, base_path, reps] = args.as_slice() else {
        bail!("usage: kube_build OBJECTS.json BASE.yaml REPS");
    };
    let reps: usize = reps.parse().context("REPS")?;
    let items: Vec<Value> = serde_json::from_slice(&std::fs::read(objs_path)?)?;
    let objs = objects(items)?;
    let base_path = Path::new(base_path);
    let base = config::load_file(base_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = Options::default();
    let (mut mapping, mut merged, mut snap, mut total) = (vec![], vec![], vec![], vec![]);
    let mut sizes = (0, 0, 0);
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
        drop(s);
        merged.push((t2 - t1).as_secs_f64() * 1e3);
        snap.push((t3 - t2).as_secs_f64() * 1e3);
        total.push((t3 - t1).as_secs_f64() * 1e3);
    }
    println!(
        "{}",
        json!({"mapping_ms": mapping, "merge_check_ms": merged, "snapshot_ms": snap,
               "total_ms": total, "routes": sizes.0, "clusters": sizes.1, "rejected": sizes.2})
    );
    Ok(())
}

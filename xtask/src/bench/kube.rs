//! Suite `kube`: the Kubernetes control plane at 10k Ingresses (3 endpoints each, with their
//! Services and EndpointSlices): in-process build time, and `lb --kube` against the mock API server.
//!
//! (a) objects → mapping → merge + check → snapshot, timed in-process (lb-user's example
//! `kube_build`, release); start-to-ready and RSS of `lb --kube` after its first full list.
//! (b) EndpointSlice change → served: the mock writes a slice that gives a Service its first ready
//! endpoint (the origin); measured from that write until its host answers 200 (1 ms polling).
//! No peer: ingress-nginx and other controllers are not Debian packages.

use super::proc::{rss_kib, spawn_pinned, wait_http};
use super::{l7, save_config, Env, SuiteResult};
use anyhow::{bail, Context, Result};
use lb_tests::kubeapi::MockApi;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const LISTEN: &str = "127.0.0.1:19021";
const ADMIN: &str = "127.0.0.1:19921";
const TIMEOUT: Duration = Duration::from_secs(90);
/// Services whose slices the changes rewrite (one change each, in turn).
const PROBES: usize = 200;

pub fn run(env: &Env) -> Result<SuiteResult> {
    let _origin = super::origin::start_origin(env)?;
    let n = if env.quick { 1_000 } else { 10_000 };
    let changes = if env.quick { 20 } else { PROBES };
    let scenario = format!("{n} Ingresses x 3 endpoints");
    let mut result = SuiteResult::new("kube");
    eprintln!("bench kube: {scenario}, in-process build");
    let build = build_in_process(env, n)?;
    for key in [
        "mapping_ms",
        "merge_check_ms",
        "snapshot_ms",
        "total_ms",
        "patch_ms",
        "rebase_ms",
        "table_ms",
        "fast_total_ms",
    ] {
        let samples: Vec<f64> = build[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let metric = match key {
            "mapping_ms" => "mapping (to_config)",
            "merge_check_ms" => "merge + config::check (mapping included)",
            "snapshot_ms" => "snapshot::build",
            "total_ms" => "merge + check + snapshot",
            "patch_ms" => "EndpointSlice change: fast-path patch",
            "rebase_ms" => "EndpointSlice change: snapshot rebase",
            "table_ms" => "EndpointSlice change: L7 table build",
            _ => "EndpointSlice change: patch + rebase + table",
        };
        result.push(&scenario, "lb", metric, "ms", false, samples);
    }
    eprintln!("bench kube: {scenario}, lb --kube against the mock API server");
    let live = live(env, n, changes)?;
    result.push(
        &scenario,
        "lb",
        "start to ready (/readyz 200)",
        "ms",
        false,
        vec![live.ready_ms],
    );
    result.push(
        &scenario,
        "lb",
        "resident memory after the first sync",
        "MiB",
        false,
        vec![live.rss_mib],
    );
    let mut lat = live.latencies.clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    result.push(
        &scenario,
        "lb",
        "EndpointSlice change to served, all",
        "ms",
        false,
        live.latencies.clone(),
    );
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        result.push(
            &scenario,
            "lb",
            &format!("EndpointSlice change to served, {name}"),
            "ms",
            false,
            vec![pct(p)],
        );
    }
    result.notes = vec![
        format!("{n} Ingresses (class lb, one host, path / Prefix), each with its Service and an EndpointSlice of 3 endpoints; the objects are in bench/results/configs/kube-objects-sample.json (first 3 of each kind)."),
        format!("Build: lb-user's example kube_build (release) on the same objects, {} repetitions in one process; then as many EndpointSlice changes (one endpoint's readiness, a different Service each time) through the endpoint fast path: patch the last config (only the clusters fed by the changed Service), rebase the snapshot (compiled routes kept), build the L7 table against the previous one.", build_reps(env)),
        "lb --kube: pinned to CPU 0; the mock API server (lb_tests::kubeapi::MockApi, real list/watch over loopback HTTP) and the prober on CPU 1. Ready: process start until /readyz answers 200 (first full list of every kind, mapping, snapshot, listeners).".into(),
        format!("Change to served: {changes} changes, one at a time; each rewrites a probe Service's EndpointSlice from 3 not-ready endpoints to one ready endpoint (the origin) + 2 not-ready, and is timed from the mock's write until that host answers 200 (polling every 1 ms). Changes are 210 ms apart after the previous revert was served, so the recompute rate limit (200 ms) never holds one; a change of EndpointSlices only takes the endpoint fast path (kube/fastpath.rs: the clusters fed by the changed Service get new endpoints, nothing is remapped); any other change recomputes the whole mapping and snapshot."),
        "Target: p99 <= 50 ms. Peers: none in Debian (ingress-nginx, Contour, Traefik are not packaged), so absolute numbers only.".into(),
    ];
    Ok(result)
}

fn build_reps(env: &Env) -> usize {
    if env.quick {
        2
    } else {
        10
    }
}

/// The generated objects: an IngressClass, then per i an Ingress, a Service and a slice. The
/// first `probes` Services start without a ready endpoint.
fn objects(n: usize, probes: usize) -> Vec<Value> {
    let mut v = vec![
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "lb"}, "spec": {"controller": "lb.example.com/ingress-controller"}}),
    ];
    for i in 0..n {
        let ns = format!("ns-{}", i % 100);
        v.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"namespace": ns, "name": format!("app-{i}")},
            "spec": {"ingressClassName": "lb", "rules": [{"host": format!("app-{i}.bench"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": format!("svc-{i}"), "port": {"number": 80}}}}]}}]}}));
        v.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": ns, "name": format!("svc-{i}")},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
        v.push(slice(i, i < probes));
    }
    v
}

/// Service i's slice: 3 endpoints on 10.(i/250).(i%250).{1,2,3}:8080 (never contacted), ready
/// unless `waiting`; with `origin`, the first is the benchmark origin instead, ready.
fn slice_with(i: usize, waiting: bool, origin: Option<SocketAddr>) -> Value {
    let mut eps: Vec<Value> = (1..=3)
        .map(|k| {
            json!({"addresses": [format!("10.{}.{}.{k}", 100 + i / 250, i % 250)],
                   "conditions": {"ready": !waiting, "serving": !waiting, "terminating": false},
                   "targetRef": {"kind": "Pod", "name": format!("svc-{i}-{k}")}})
        })
        .collect();
    let mut port = 8080;
    if let Some(o) = origin {
        port = o.port();
        eps[0]["addresses"] = json!([o.ip().to_string()]);
        eps[0]["conditions"] = json!({"ready": true, "serving": true, "terminating": false});
    }
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": format!("ns-{}", i % 100), "name": format!("svc-{i}-x1"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": eps})
}

/// Polls until `host` no longer answers 200 (its endpoints are gone).
fn wait_not_200(addr: SocketAddr, host: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        let r = lb_tests::http::get(addr, host, "/small", Duration::from_millis(500));
        if r.is_ok_and(|r| r.status != 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("{host} still answers 200 after {TIMEOUT:?}")
}

fn slice(i: usize, waiting: bool) -> Value {
    slice_with(i, waiting, None)
}

fn base_config() -> String {
    format!("listeners: [{{name: http, address: \"{LISTEN}\"}}]\naccess_log: {{format: off}}\n")
}

/// (a) in-process: builds and runs the example on the same objects.
fn build_in_process(env: &Env, n: usize) -> Result<Value> {
    let objs = objects(n, PROBES.min(n));
    let path = env.scratch.join("kube-objects.json");
    std::fs::write(&path, serde_json::to_vec(&objs)?)?;
    let sample: Vec<&Value> = (0..4)
        .flat_map(|k| objs.iter().skip(k).step_by(3).take(3))
        .collect();
    save_config(
        env,
        "kube-objects-sample.json",
        &serde_json::to_string_pretty(&sample)?,
    )?;
    let base = env.scratch.join("kube-base.yaml");
    std::fs::write(&base, base_config())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::root())
        .args(["run", "-q", "-p", "lb-user", "--example", "kube_build"]);
    // Quick mode only proves the harness (debug build, like the rest of the quick run).
    if !env.quick {
        cmd.arg("--release");
    }
    let out = cmd
        .arg("--")
        .arg(&path)
        .arg(&base)
        .arg(build_reps(env).to_string())
        .output()
        .context("running the kube_build example")?;
    if !out.status.success() {
        bail!(
            "kube_build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).context("kube_build output")
}

struct Live {
    ready_ms: f64,
    rss_mib: f64,
    latencies: Vec<f64>,
}

/// (b) `lb --kube` against the mock: ready time, RSS, then `changes` slice changes.
fn live(env: &Env, n: usize, changes: usize) -> Result<Live> {
    let api = MockApi::start_for(Duration::from_secs(900))?;
    for o in objects(n, PROBES.min(n)) {
        api.apply(o);
    }
    let kubeconfig = env.scratch.join("kube-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: mock, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: none, user: {{}}}}]\ncontexts: [{{name: mock, context: {{cluster: mock, user: none}}}}]\n\
             current-context: mock\n",
            api.url()
        ),
    )?;
    let config = env.scratch.join("kube-lb.yaml");
    std::fs::write(&config, base_config())?;
    save_config(env, "kube-lb.yaml", &base_config())?;
    let (cfg, kc) = (
        config.display().to_string(),
        kubeconfig.display().to_string(),
    );
    let args = [
        "run",
        "--config",
        &cfg,
        "--workers",
        "1",
        "--admin",
        ADMIN,
        "--kube",
        "--kubeconfig",
        &kc,
    ];
    let started = Instant::now();
    let lb = spawn_pinned(0, &env.lb, &args, &env.scratch.join("kube-lb.log"))?;
    wait_http(ADMIN.parse()?, "admin", "/readyz", TIMEOUT)?;
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_mib = rss_kib(lb.id()) as f64 / 1024.0;
    let listen: SocketAddr = LISTEN.parse()?;
    let origin: SocketAddr = l7::ORIGIN.parse()?;
    let mut latencies = Vec::new();
    for k in 0..changes {
        let i = k % PROBES.min(n);
        // Let the rate limit's window (200 ms from the revert's recompute) pass: each change is
        // measured alone.
        std::thread::sleep(Duration::from_millis(210));
        let t = Instant::now();
        api.apply(slice_with(i, true, Some(origin)));
        wait_http(listen, &format!("app-{i}.bench"), "/small", TIMEOUT)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        // Back to no ready endpoint (not timed), served before the next change.
        api.apply(slice(i, true));
        wait_not_200(listen, &format!("app-{i}.bench"))?;
    }
    drop(lb);
    Ok(Live {
        ready_ms,
        rss_mib,
        latencies,
    })
}

//! `lb run`: load the config, load/attach XDP, then one direction of data: the sources (the file
//! on SIGHUP/change, Kubernetes objects) -> snapshot on a watch -> proxy table, listeners, XDP maps.

use crate::accesslog::AccessLog;
use crate::admin;
use crate::bpf::{l4_aya, Dataplane, LoadOptions, XdpReport};
use crate::config::{self, Config, ConfigErrors};
use crate::health::monitor::{self, Handles};
use crate::kube::events::Events as KubeEvents;
use crate::kube::source::{self as kube_source, KubeRun};
use crate::kube::watch as kube_watch;
use crate::kube::{fastpath::Served, Objects};
use crate::metrics::Metrics;
use crate::proxy::{listeners::ListenerSet, table::Table, ProxyCtx};
use crate::publisher::{self, Input, InputTx};
use crate::snapshot::{self, Snapshot};
use crate::source::{self, TlsMaterials};
use anyhow::{anyhow, bail, Result};
use arc_swap::ArcSwap;
use aya::programs::XdpMode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub xdp_debug: bool,
    pub admin: SocketAddr,
    /// How long open connections get to finish after SIGTERM.
    pub grace: Duration,
    /// Poll the config and certificate files this often and reload on change (None: SIGHUP only).
    pub watch: Option<Duration>,
    /// Also take routes, clusters and certificates from Kubernetes (`--kube`).
    pub kube: Option<KubeRun>,
}

/// Kubernetes store changes closer together than this make one config change.
const KUBE_DEBOUNCE: Duration = Duration::from_millis(200);

/// Access-log lines that may wait for the writer thread before new ones are dropped (counted).
const ACCESS_LOG_QUEUE: usize = 65536;

/// How often the connection table's entries are counted (`lb_l4_flows`).
const FLOW_COUNT_EVERY: Duration = Duration::from_secs(5);

pub async fn run(opts: RunOptions) -> Result<()> {
    let invalid = |e: ConfigErrors| anyhow!("{}: invalid config:\n{e}", opts.config.display());
    let base = config::load_file(&opts.config).map_err(invalid)?;
    // Kubernetes mode: nothing is served before every store has listed once.
    let (_kube_watch, mut objects, events) = match &opts.kube {
        Some(k) => {
            // Probes get answers meanwhile: 503, not ready (/readyz, /healthz).
            let presync = admin::presync::serve(opts.admin).await?;
            let client = kube_source::client(k.kubeconfig.as_deref()).await?;
            let events = KubeEvents::start(client.clone(), &k.options.controller);
            let mut w = kube_watch::start(client.clone(), &k.options, KUBE_DEBOUNCE);
            // Status is written only by the holder of the status-writer Lease.
            let lease = crate::kube::lease::LeaseConfig::from_env();
            let addrs = crate::kube::status::addresses_from_env();
            let opts = k.options.clone();
            let objs = w.objects();
            let tasks = crate::kube::status::start(client, &k.status, objs, opts, lease, addrs);
            w.adopt(tasks);
            let mut rx = w.objects();
            tracing::info!("waiting for the first full list from the Kubernetes API");
            rx.wait_for(Option::is_some)
                .await
                .map_err(|_| anyhow!("the Kubernetes watch stopped before its first sync"))?;
            tracing::info!("Kubernetes objects synced");
            presync.stop().await;
            (Some(w), Some(rx), Some(events))
        }
        None => (None, None, None),
    };
    let events = events.as_ref();
    let now = current(&objects);
    let (cfg, tls, mut served) =
        load_sources(&base, &opts, now.as_ref(), events).map_err(invalid)?;
    let token = source::load_token(&cfg, &opts.config).map_err(invalid)?;
    let mut watched = source::fingerprint(&opts.config, Some(&cfg));
    let mut dataplane = if opts.ifaces.is_empty() {
        if !cfg.xdp.deny.is_empty() {
            tracing::warn!(
                "xdp.deny is set but no --iface was given: the deny-list is not enforced"
            );
        }
        if !cfg.l4_services.is_empty() {
            tracing::warn!(
                services = cfg.l4_services.len(),
                "l4_services are set but no --iface was given: they are not served"
            );
        }
        None
    } else {
        let mut dp = Dataplane::load(LoadOptions::for_config(&cfg, opts.xdp_debug))?;
        for iface in &opts.ifaces {
            dp.attach(iface, opts.xdp_mode)?;
            tracing::info!(iface, mode = ?opts.xdp_mode, "XDP attached");
        }
        l4_aya::spawn_flow_counter(&dp.l4_reader(), FLOW_COUNT_EVERY)?;
        Some(dp)
    };
    let metrics = Arc::new(Metrics::new(dataplane.as_ref()));

    let mut first = snapshot::build(&cfg, tls, 1);
    first.admin_token = token;
    let first = Arc::new(first);
    let log = Arc::new(AccessLog::stdout(cfg.access_log.format, ACCESS_LOG_QUEUE));
    if let Some(dp) = dataplane.as_mut() {
        let report = dp.apply(&first)?;
        log_xdp(dp, first.version, &report, true);
        metrics.set_applied("xdp", first.version);
    }
    let (handles, streaks) = Handles::new();
    let ctx = Arc::new(ProxyCtx {
        table: ArcSwap::from_pointee(Table::build(first.clone(), None, &metrics, log, &handles)),
        metrics: metrics.clone(),
        health: handles.clone(),
        applied: watch::Sender::new(first.version),
    });
    let serving = Arc::downgrade(&ctx);
    metrics.attach_table(Box::new(move || {
        serving.upgrade().map(|c| c.table.load_full())
    }));
    metrics.set_published(first.version);
    let mut listeners = ListenerSet::new(ctx.clone());
    let errors = listeners.apply(first.listeners()).await;
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    metrics.set_applied("proxy", first.version);
    let (tx, rx) = watch::channel(first);
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let stop_admin = CancellationToken::new();
    let admin = admin::Admin {
        metrics: metrics.clone(),
        ctx: ctx.clone(),
        inputs: inputs.clone(),
    };
    admin::serve(opts.admin, Arc::new(admin), stop_admin.clone()).await?;
    let stop_publisher = CancellationToken::new();
    let publisher = tokio::spawn(publisher::run(
        inputs_rx,
        tx,
        metrics.clone(),
        stop_publisher.clone(),
    ));
    let health_inputs = inputs.clone();
    tokio::spawn(monitor::run(rx.clone(), handles, streaks, move |view| {
        let _ = health_inputs.send(Input::Health(view));
    }));
    let proxy = tokio::spawn(apply_to_proxy(rx.clone(), ctx, listeners));
    let xdp = dataplane.map(|dp| tokio::spawn(apply_to_xdp(rx.clone(), dp, metrics.clone())));
    tracing::info!(config = %opts.config.display(), "lb ready");

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut poll = tokio::time::interval(opts.watch.unwrap_or(Duration::from_secs(3600)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let objs = current(&objects);
                reload(&opts, objs.as_ref(), &inputs, &metrics, &mut watched, events, &mut served)
            }
            _ = poll.tick(), if opts.watch.is_some() => {
                let now = source::fingerprint(&opts.config, Some(&rx.borrow().config));
                if now != watched {
                    tracing::info!("config or certificate files changed");
                    let objs = current(&objects);
                    reload(&opts, objs.as_ref(), &inputs, &metrics, &mut watched, events, &mut served);
                    watched = now;
                }
            }
            Some(objs) = next_objects(&mut objects) => {
                if !endpoints_only(&mut served, &objs, &inputs) {
                    reload(&opts, Some(&objs), &inputs, &metrics, &mut watched, events, &mut served)
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    stop_publisher.cancel();
    publisher.await?;
    drop(rx);
    let listeners = proxy.await?;
    listeners.shutdown(opts.grace).await;
    if let Some(xdp) = xdp {
        drop(xdp.await?);
        tracing::info!("XDP detached");
    }
    stop_admin.cancel();
    Ok(())
}

/// The latest Kubernetes objects (None without `--kube`).
fn current(objects: &Option<watch::Receiver<Option<Arc<Objects>>>>) -> Option<Arc<Objects>> {
    objects.as_ref().and_then(|rx| rx.borrow().clone())
}

/// The next Kubernetes objects; pending forever without `--kube` (or once the watch stopped).
async fn next_objects(
    objects: &mut Option<watch::Receiver<Option<Arc<Objects>>>>,
) -> Option<Arc<Objects>> {
    let Some(rx) = objects else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        return std::future::pending().await;
    }
    rx.borrow_and_update().clone()
}

/// A change of EndpointSlices only, patched onto the last config served from Kubernetes and
/// handed to the publisher; false when it is not one (or not exactly patchable): merge in full.
fn endpoints_only(served: &mut Option<Served>, objs: &Arc<Objects>, inputs: &InputTx) -> bool {
    let Some(s) = served.as_mut() else {
        return false;
    };
    let before = s.config().clone();
    match s.patch(objs) {
        None => false,
        Some(cfg) => {
            if !Arc::ptr_eq(&cfg, &before) {
                let _ = inputs.send(Input::Endpoints(cfg));
            }
            true
        }
    }
}

/// The config to serve and its TLS material: the base file alone, or merged with the
/// Kubernetes objects (what the mapping rejected is logged and posted as Events, the rest is
/// served), then with what the endpoint fast path patches.
fn load_sources(
    base: &Config,
    opts: &RunOptions,
    objs: Option<&Arc<Objects>>,
    events: Option<&KubeEvents>,
) -> Result<(Config, TlsMaterials, Option<Served>), ConfigErrors> {
    match (objs, &opts.kube) {
        (Some(o), Some(k)) => {
            let m = kube_source::merge_with(&k.settings, base, &opts.config, o, &k.options)?;
            for r in &m.rejected {
                tracing::warn!(kind = %r.kind, namespace = %r.namespace, name = %r.name, "not served: {}", r.message);
            }
            if let Some(ev) = events {
                ev.report(o, &m.rejected);
            }
            k.status.publish(&m.status);
            let served = Served::new(o.clone(), Arc::new(m.config.clone()), m.sources);
            Ok((m.config, m.tls, Some(served)))
        }
        _ => Ok((base.clone(), source::load_tls(base, &opts.config)?, None)),
    }
}

/// The sources again (the base file re-read, merged with `objs` in Kubernetes mode): validate,
/// load TLS material and the admin token, and hand the result to the publisher, or keep the old
/// config.
fn reload(
    opts: &RunOptions,
    objs: Option<&Arc<Objects>>,
    inputs: &InputTx,
    metrics: &Metrics,
    watched: &mut Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)>,
    events: Option<&KubeEvents>,
    served: &mut Option<Served>,
) {
    let path = opts.config.as_path();
    let loaded = config::load_file_for_reload(path).and_then(|base| {
        let (cfg, tls, fast) = load_sources(&base, opts, objs, events)?;
        let token = source::load_token(&cfg, path)?;
        Ok((cfg, tls, token, fast))
    });
    match loaded {
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(field = %e.path, "{}", e.message);
            }
            tracing::error!("config reload rejected; still serving the previous config");
            metrics.reload("invalid");
        }
        Ok((cfg, tls, token, fast)) => {
            *watched = source::fingerprint(path, Some(&cfg));
            *served = fast;
            let _ = inputs.send(Input::Config(Box::new((cfg, tls, token))));
        }
    }
}

async fn apply_to_proxy(
    mut rx: watch::Receiver<Arc<Snapshot>>,
    ctx: Arc<ProxyCtx>,
    mut listeners: ListenerSet,
) -> ListenerSet {
    while rx.changed().await.is_ok() {
        let snap = rx.borrow_and_update().clone();
        let prev = ctx.table.load_full();
        let log = if prev.log.format() == snap.config.access_log.format {
            prev.log.clone()
        } else {
            Arc::new(AccessLog::stdout(
                snap.config.access_log.format,
                ACCESS_LOG_QUEUE,
            ))
        };
        let table = Table::build(snap.clone(), Some(&prev), &ctx.metrics, log, &ctx.health);
        drop(prev);
        ctx.table.store(Arc::new(table));
        let errors = listeners.apply(snap.listeners()).await;
        for e in &errors {
            tracing::error!("{e}");
        }
        if !errors.is_empty() {
            ctx.metrics.reload("failed");
        }
        ctx.metrics.set_applied("proxy", snap.version);
        ctx.applied.send_replace(snap.version);
    }
    listeners
}

/// Diff-applies each snapshot to the XDP maps (deny-list, L4 settings and services; parts that
/// did not change are skipped) on a blocking thread: a ring is tens of thousands of writes.
async fn apply_to_xdp(
    mut rx: watch::Receiver<Arc<Snapshot>>,
    mut dp: Dataplane,
    metrics: Arc<Metrics>,
) -> Option<Dataplane> {
    while rx.changed().await.is_ok() {
        let snap = rx.borrow_and_update().clone();
        let job = tokio::task::spawn_blocking(move || {
            let result = dp.apply(&snap);
            (dp, snap, result)
        });
        let (back, snap, result) = match job.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the XDP apply panicked: XDP detached");
                metrics.reload("failed");
                return None;
            }
        };
        dp = back;
        match result {
            Ok(r) => {
                log_xdp(&dp, snap.version, &r, false);
                metrics.set_applied("xdp", snap.version);
            }
            Err(e) => {
                tracing::error!(version = snap.version, error = %e, "applying to the XDP maps; the rest of the snapshot is served");
                metrics.reload("failed");
            }
        }
    }
    Some(dp)
}

/// Logs what changed (`first`: the initial load, logged even when empty).
fn log_xdp(dp: &Dataplane, version: u64, r: &XdpReport, first: bool) {
    if let Some(d) = r.deny.filter(|d| first || *d != Default::default()) {
        tracing::info!(
            version,
            prefixes = dp.deny.len(),
            added = d.added,
            updated = d.updated,
            removed = d.removed,
            "XDP deny-list applied"
        );
    }
    if let Some(l) = r.l4.filter(|l| *l != Default::default()) {
        tracing::info!(
            version,
            services_added = l.services_added,
            services_updated = l.services_updated,
            services_removed = l.services_removed,
            endpoints_added = l.endpoints_added,
            endpoints_removed = l.endpoints_removed,
            rings_written = l.rings_written,
            ring_slots_used = dp.l4.ring_slots_used(),
            settings_changed = l.settings_changed,
            "XDP L4 services applied"
        );
    }
}

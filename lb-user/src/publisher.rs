//! The one recompute task: config reloads, runtime commands and health views come in; each
//! change becomes a new versioned snapshot on the watch (and slow start re-derives on time).

use crate::config::Config;
use crate::health::HealthView;
use crate::metrics::Metrics;
use crate::runtime::{self, Command, Refused};
use crate::snapshot::{self, Snapshot};
use crate::source::TlsMaterials;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

pub enum Input {
    /// A validated config with its TLS material and admin token.
    Config(Box<(Config, TlsMaterials, Option<Arc<str>>)>),
    /// A runtime API change; the reply carries the snapshot version that includes it.
    Runtime(Command, oneshot::Sender<Result<u64, Refused>>),
    Health(Arc<HealthView>),
    /// A validated config that differs from the current one in cluster endpoints only (the
    /// Kubernetes endpoint fast path): compiled routes and TLS material are kept.
    Endpoints(Arc<Config>),
}

pub type InputTx = mpsc::UnboundedSender<Input>;

pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Input>,
    tx: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let ramp = tx.borrow().next_ramp();
        let input = tokio::select! {
            i = rx.recv() => match i {
                Some(i) => Some(i),
                None => return,
            },
            _ = sleep_until(ramp) => None,
            _ = stop.cancelled() => return,
        };
        let cur = tx.borrow().clone();
        let version = cur.version + 1;
        let now = Instant::now();
        let next = match input {
            None => cur.derive(cur.overrides.clone(), cur.health.clone(), now, version),
            Some(Input::Health(h)) => cur.derive(cur.overrides.clone(), h, now, version),
            Some(Input::Runtime(cmd, reply)) => {
                let mut o = (*cur.overrides).clone();
                match cmd.apply(&cur, &mut o) {
                    Ok(_) => {
                        tracing::info!(
                            cluster = %cmd.cluster,
                            endpoint = %cmd.endpoint,
                            weight = ?cmd.weight,
                            state = ?cmd.state,
                            reset = cmd.reset,
                            version,
                            "runtime override applied"
                        );
                        let _ = reply.send(Ok(version));
                        cur.derive(Arc::new(o), cur.health.clone(), now, version)
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                }
            }
            Some(Input::Config(b)) => {
                let (cfg, tls, token) = *b;
                let mut base = snapshot::build(&cfg, tls, version);
                base.admin_token = token;
                let keep = cfg.admin.keep_runtime_overrides;
                let (o, dropped) = runtime::carry_over(&cur.overrides, &base.config, keep);
                tracing::info!(
                    version,
                    runtime_overrides_kept = o.0.len(),
                    runtime_overrides_discarded = dropped,
                    "config reloaded (admin.keep_runtime_overrides: {keep})"
                );
                metrics.reload("ok");
                base.derive(Arc::new(o), cur.health.clone(), now, version)
            }
            Some(Input::Endpoints(cfg)) => {
                let keep = cfg.admin.keep_runtime_overrides;
                let (o, dropped) = runtime::carry_over(&cur.overrides, &cfg, keep);
                tracing::debug!(
                    version,
                    runtime_overrides_discarded = dropped,
                    "endpoints changed"
                );
                metrics.reload("ok");
                cur.rebase(cfg, Arc::new(o), cur.health.clone(), now, version)
            }
        };
        metrics.set_published(next.version);
        tx.send_replace(Arc::new(next));
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

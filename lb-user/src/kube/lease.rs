//! Leader election on a coordination.k8s.io/v1 Lease (kube 5 has no elector): one of a DaemonSet's
//! pods holds it and is the only one writing status; the others take over when it expires.
//!
//! As client-go's elector: the holder renews every `renew` with an update checked against the
//! Lease's resourceVersion (409 Conflict = someone else wrote it: we are not the holder). Another
//! pod's lease counts as expired when its record (resourceVersion) has not changed for `duration`
//! by our own clock (no cross-node clock comparison). A holder that cannot renew for
//! `duration - renew` stops acting as holder before anyone else may take over.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are in `holderIdentity` (pod name, else host name and pid).
    pub identity: String,
    pub duration: Duration,
    /// The holder renews this often.
    pub renew: Duration,
    /// Others try this often.
    pub retry: Duration,
}

impl LeaseConfig {
    /// `lb-status-writer` in `$POD_NAMESPACE` (default `default`), identity `$POD_NAME` or
    /// `HOSTNAME-PID`; 15 s duration, renewed every 5 s, others retrying every 2 s.
    pub fn from_env() -> LeaseConfig {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = env("HOSTNAME").unwrap_or_else(|| "lb".into());
        LeaseConfig {
            namespace: env("POD_NAMESPACE").unwrap_or_else(|| "default".into()),
            name: "lb-status-writer".into(),
            identity: env("POD_NAME").unwrap_or_else(|| format!("{host}-{}", std::process::id())),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            retry: Duration::from_secs(2),
        }
    }
}

/// The election state of one participant.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The other holder's record as last seen, and since when (our clock).
    seen: Option<(String, Instant)>,
    /// Our last successful create/renew.
    renewed: Option<Instant>,
}

fn now() -> Option<MicroTime> {
    Some(MicroTime(Timestamp::now()))
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            seen: None,
            renewed: None,
        }
    }

    /// One round: create, renew or take over the Lease as allowed. Ok(true) when we hold it.
    pub async fn round(&mut self) -> Result<bool, kube::Error> {
        let pp = PostParams::default();
        let secs = i32::try_from(self.cfg.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: now(),
                    renew_time: now(),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return self.write(self.api.create(&pp, &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.cfg.identity {
            self.renewed = None;
            let rv = lease.metadata.resource_version.clone().unwrap_or_default();
            let since = match &self.seen {
                Some((seen, at)) if *seen == rv => *at,
                _ => {
                    self.seen = Some((rv, Instant::now()));
                    return Ok(false);
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.cfg.duration, Duration::from_secs);
            if !holder.is_empty() && since.elapsed() < duration {
                return Ok(false);
            }
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = now();
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            tracing::info!(previous = %holder, "status writer Lease expired; taking it over");
        }
        spec.renew_time = now();
        spec.lease_duration_seconds = Some(secs);
        // `lease` carries the resourceVersion we read: a concurrent writer makes this a 409.
        let r = self.api.replace(&self.cfg.name, &pp, &lease).await;
        self.write(r)
    }

    fn write(&mut self, r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match r {
            Ok(_) => {
                self.renewed = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.renewed = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether we may act as holder now: a successful renew less than `duration - renew` ago.
    pub fn holding(&self) -> bool {
        let margin = self.cfg.duration.saturating_sub(self.cfg.renew);
        self.renewed.is_some_and(|t| t.elapsed() < margin)
    }
}

/// Runs an [`Elector`] until the task is aborted; the receiver says whether we hold the Lease.
pub fn spawn(client: Client, cfg: LeaseConfig) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let (renew, retry, identity) = (cfg.renew, cfg.retry, cfg.identity.clone());
        let mut e = Elector::new(client, cfg);
        loop {
            if let Err(err) = e.round().await {
                tracing::debug!(error = %err, "status writer Lease: round failed");
            }
            let held = e.holding();
            if tx.send_replace(held) != held {
                if held {
                    tracing::info!(identity, "holding the status writer Lease: writing status");
                } else {
                    tracing::info!(identity, "not holding the status writer Lease");
                }
            }
            tokio::time::sleep(if held { renew } else { retry }).await;
        }
    });
    (rx, task)
}

//! The API server side of the Kubernetes mode: one kube-runtime reflector store per kind (and per
//! watched namespace), and one debounced task that turns store changes into a sorted [`Objects`].
//!
//! Resilience comes from kube-runtime's watcher: it resumes watches from the last resourceVersion,
//! re-lists from scratch on 410 Gone, and retries with its default backoff (0.8 s doubling to
//! 30 s, jittered) while the API server is unreachable. Stores keep their content through an
//! outage, so the last [`Objects`] stays in force; one warning is logged per outage.

mod stores;

use super::{Objects, Options};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stores::{kind_bit, Changes, Stores, ENDPOINT_SLICE};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The kube crate this module is built on, for callers that build the [`Client`] (tests, `lb run`).
pub use ::kube;

/// The only Secret type the mapping reads; other Secrets never enter a store.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Annotation `kubectl apply` leaves on objects: a second copy of the object, never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Running reflectors plus the recompute task; dropping it stops them all.
pub struct Watch {
    objects: watch::Receiver<Option<Arc<Objects>>>,
    synced: Vec<Arc<AtomicBool>>,
    recomputes: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the reflectors and the recompute task on the current tokio runtime (panics outside
/// one). Namespaced kinds are watched in `opts.namespaces` (one store each), or in all
/// namespaces when that is empty; IngressClasses are cluster-scoped.
pub fn start(client: Client, opts: &Options, debounce: Duration) -> Watch {
    let (changed_tx, changed_rx) = watch::channel(());
    let mut w = Watchers {
        client,
        namespaces: opts.namespaces.clone(),
        changed: changed_tx,
        changes: Arc::new(Changes::default()),
        failing: Arc::new(AtomicUsize::new(0)),
        synced: Vec::new(),
        tasks: Vec::new(),
    };
    let stores = Stores {
        ingress_classes: vec![w.spawn(Api::all(w.client.clone()), |_| true)],
        ingresses: w.namespaced(|_| true),
        services: w.namespaced(|_| true),
        endpoint_slices: w.namespaced(|_| true),
        secrets: w.namespaced_with(
            watcher::Config::default().fields(&format!("type={TLS_SECRET_TYPE}")),
            |s: &Secret| s.type_.as_deref() == Some(TLS_SECRET_TYPE),
        ),
        config_maps: {
            let (ns, name) = &opts.config_map;
            let api = Api::namespaced(w.client.clone(), ns);
            let fields = watcher::Config::default().fields(&format!("metadata.name={name}"));
            vec![w.spawn_with(api, fields, |_| true)]
        },
        opts: opts.clone(),
        gateway_classes: vec![w.spawn(Api::all(w.client.clone()), |_| true)],
        gateways: w.namespaced(|_| true),
        http_routes: w.namespaced(|_| true),
        reference_grants: w.namespaced(|_| true),
    };
    let (objects_tx, objects_rx) = watch::channel(None);
    let recomputes = Arc::new(AtomicU64::new(0));
    let task = recompute(
        changed_rx,
        stores,
        w.synced.clone(),
        debounce,
        objects_tx,
        recomputes.clone(),
        w.changes.clone(),
    );
    w.tasks.push(tokio::spawn(task));
    Watch {
        objects: objects_rx,
        synced: w.synced,
        recomputes,
        tasks: w.tasks,
    }
}

impl Watch {
    /// The latest [`Objects`]: `None` until every store has completed its first full list, then
    /// a new value after each (debounced) change that altered what the stores hold.
    pub fn objects(&self) -> watch::Receiver<Option<Arc<Objects>>> {
        self.objects.clone()
    }

    /// Ties `tasks` (e.g. the status writer) to this watch: they stop when it is dropped.
    pub fn adopt(&mut self, tasks: Vec<JoinHandle<()>>) {
        self.tasks.extend(tasks);
    }

    /// Every store has completed a full list at least once (readiness). Stays true through
    /// later outages: the stores keep their last content.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// How many times [`Objects`] were built from the stores (sent or, when equal to the last
    /// value, not sent): the debounce's effect, for tests and metrics.
    pub fn recomputes(&self) -> u64 {
        self.recomputes.load(Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("synced", &self.synced())
            .field("recomputes", &self.recomputes())
            .finish_non_exhaustive()
    }
}

/// The single recompute task: waits for a change, then (once every store has synced) builds
/// [`Objects`] and sends it unless nothing changed. A change after a quiet `debounce` is taken at
/// once; changes coming faster coalesce into at most one recompute per `debounce`.
async fn recompute(
    mut changed: watch::Receiver<()>,
    stores: Stores,
    synced: Vec<Arc<AtomicBool>>,
    debounce: Duration,
    out: watch::Sender<Option<Arc<Objects>>>,
    recomputes: Arc<AtomicU64>,
    changes: Arc<Changes>,
) {
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        if changed.changed().await.is_err() {
            return; // every reflector task is gone
        }
        if let Some(at) = last {
            tokio::time::sleep_until(at + debounce).await;
        }
        changed.borrow_and_update(); // what came during the wait is included now
        if !synced.iter().all(|s| s.load(Ordering::Acquire)) {
            continue;
        }
        // Equal content (resourceVersions included) is not sent again: a re-list after 410
        // Gone or a reconnect that changed nothing causes no new config.
        let prev = out.borrow().clone();
        let dirty = changes.kinds.swap(0, Ordering::AcqRel);
        let objs = stores.objects(prev.as_deref(), dirty, changes.slices.take());
        last = Some(tokio::time::Instant::now());
        recomputes.fetch_add(1, Ordering::Relaxed);
        let unchanged = prev.as_deref().is_some_and(|prev| prev.same(&objs));
        if unchanged {
            tracing::debug!("kube: recomputed, nothing changed");
            continue;
        }
        tracing::debug!(
            ingresses = objs.ingresses.len(),
            services = objs.services.len(),
            endpoint_slices = objs.endpoint_slices.len(),
            secrets = objs.secrets.len(),
            "kube: objects changed"
        );
        out.send_replace(Some(Arc::new(objs)));
    }
}

/// What every reflector task shares while [`start`] builds them.
struct Watchers {
    client: Client,
    namespaces: Vec<String>,
    changed: watch::Sender<()>,
    /// Kinds whose store changed since the recompute task last read them.
    changes: Arc<Changes>,
    /// Reflectors currently failing; 0 → 1 logs the outage, back to 0 logs the recovery.
    failing: Arc<AtomicUsize>,
    synced: Vec<Arc<AtomicBool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Watchers {
    /// One store per watched namespace, or one over all namespaces.
    fn namespaced<K>(&mut self, keep: fn(&K) -> bool) -> Vec<Store<K>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
        K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.namespaced_with(watcher::Config::default(), keep)
    }

    /// [`Self::namespaced`] with a watcher config (a field selector).
    fn namespaced_with<K>(&mut self, cfg: watcher::Config, keep: fn(&K) -> bool) -> Vec<Store<K>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
        K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        if self.namespaces.is_empty() {
            return vec![self.spawn_with(Api::all(self.client.clone()), cfg, keep)];
        }
        let apis: Vec<Api<K>> = self
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(self.client.clone(), ns))
            .collect();
        (apis.into_iter())
            .map(|api| self.spawn_with(api, cfg.clone(), keep))
            .collect()
    }

    /// Spawns a watcher (default backoff) feeding a new store; objects for which `keep` is false
    /// never enter it, and managed fields are stripped before storing.
    fn spawn<K>(&mut self, api: Api<K>, keep: fn(&K) -> bool) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.spawn_with(api, watcher::Config::default(), keep)
    }

    /// [`Self::spawn`] with a watcher config (a field selector).
    fn spawn_with<K>(&mut self, api: Api<K>, cfg: watcher::Config, keep: fn(&K) -> bool) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (reader, mut writer) = reflector::store::<K>();
        let synced = Arc::new(AtomicBool::new(false));
        self.synced.push(synced.clone());
        let changed = self.changed.clone();
        let failing = self.failing.clone();
        let kind = K::kind(&()).to_string();
        let (bit, changes) = (kind_bit(&kind), self.changes.clone());
        let slices = bit == ENDPOINT_SLICE;
        let mut stream = watch_stream(api, cfg).default_backoff().boxed();
        self.tasks.push(tokio::spawn(async move {
            let mut failed = false;
            while let Some(item) = stream.next().await {
                let mut event = match item {
                    Ok(event) => event,
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                        // The kind is not served (e.g. the Gateway API CRDs are not installed):
                        // none of it exists, which must not hold back the first sync. The
                        // watcher keeps retrying and fills the store once the kind appears.
                        if !synced.swap(true, Ordering::AcqRel) {
                            changes.mark(bit, slices, None::<&K>);
                            tracing::warn!(kind, "kube: the API server does not serve this kind (CRD not installed?): treated as none until it does");
                            changed.send_replace(());
                        }
                        continue;
                    }
                    Err(e) => {
                        outage(&kind, &e, &mut failed, &failing);
                        continue;
                    }
                };
                if std::mem::take(&mut failed) && failing.fetch_sub(1, Ordering::AcqRel) == 1 {
                    tracing::info!(kind, "kube: API server reachable again");
                }
                if let Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) = &mut event {
                    if !keep(o) {
                        continue; // e.g. a Secret of another type (type is immutable)
                    }
                    strip(o);
                }
                writer.apply_watcher_event(&event);
                match event {
                    Event::InitDone => {
                        synced.store(true, Ordering::Release);
                        changes.mark(bit, slices, None::<&K>);
                        changed.send_replace(());
                    }
                    Event::Apply(o) | Event::Delete(o) => {
                        changes.mark(bit, slices, Some(&o));
                        changed.send_replace(());
                    }
                    // The store swaps in the new list at InitDone only.
                    Event::Init | Event::InitApply(_) => {}
                }
            }
        }));
        reader
    }
}

/// kube-runtime's watcher with bookmarks on (its default: they move the resume point without
/// an event, so they never cause a recompute).
fn watch_stream<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl futures_util::Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, cfg)
}

/// Logs a watch failure: 410 Gone (the watcher re-lists) at debug; anything else once per
/// outage across all reflectors, then quietly until every reflector works again.
fn outage(kind: &str, e: &watcher::Error, failed: &mut bool, failing: &AtomicUsize) {
    if let watcher::Error::WatchError(status) = e {
        if status.code == 410 {
            tracing::debug!(kind, "kube: resourceVersion expired, re-listing");
            return;
        }
    }
    if *failed {
        tracing::debug!(kind, error = %e, "kube: still failing");
        return;
    }
    *failed = true;
    if failing.fetch_add(1, Ordering::AcqRel) == 0 {
        tracing::warn!(
            kind,
            error = %e,
            "kube: API server unreachable; keeping the last objects, retrying with backoff"
        );
    } else {
        tracing::debug!(kind, error = %e, "kube: watch failing");
    }
}

/// Memory: managed fields and kubectl's copy of the whole object are never read.
fn strip<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            o.meta_mut().annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::Ingress;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::ResourceExt;

    #[test]
    fn strip_drops_managed_fields_and_last_applied_only() {
        let mut ing = Ingress::default();
        ing.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        ing.annotations_mut()
            .insert(LAST_APPLIED.into(), "{\"big\":1}".into());
        ing.annotations_mut()
            .insert("kubernetes.io/ingress.class".into(), "lb".into());
        strip(&mut ing);
        assert_eq!(ing.metadata.managed_fields, None);
        assert_eq!(ing.annotations().len(), 1);
        assert_eq!(ing.annotations()["kubernetes.io/ingress.class"], "lb");
        let mut bare = Service::default();
        bare.annotations_mut()
            .insert(LAST_APPLIED.into(), "{}".into());
        strip(&mut bare);
        assert_eq!(bare.metadata.annotations, None);
    }
}

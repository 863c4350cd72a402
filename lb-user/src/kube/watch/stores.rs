//! The reflector stores, one per kind (and watched namespace), and how their content becomes
//! [`Objects`]: sorted, with kinds that did not change shared from the previous value.

use crate::kube::gateway::types::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::kube::{Objects, Options, Shared};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One store per kind and watched namespace (IngressClass: one).
pub(super) struct Stores {
    pub(super) ingress_classes: Vec<Store<IngressClass>>,
    pub(super) ingresses: Vec<Store<Ingress>>,
    pub(super) services: Vec<Store<Service>>,
    pub(super) endpoint_slices: Vec<Store<EndpointSlice>>,
    pub(super) secrets: Vec<Store<Secret>>,
    pub(super) config_maps: Vec<Store<ConfigMap>>,
    pub(super) opts: Options,
    pub(super) gateway_classes: Vec<Store<GatewayClass>>,
    pub(super) gateways: Vec<Store<Gateway>>,
    pub(super) http_routes: Vec<Store<HTTPRoute>>,
    pub(super) reference_grants: Vec<Store<ReferenceGrant>>,
}

impl Stores {
    /// The stores' content; kinds not in `dirty` (and not depending on one that is) are taken
    /// from `prev` as they are, shared, not copied or sorted again.
    /// EndpointSlices: `slices` names the ones written or deleted since `prev` (None: read them
    /// all, e.g. after a re-list).
    pub(super) fn objects(
        &self,
        prev: Option<&Objects>,
        dirty: u32,
        slices: Option<Vec<Key>>,
    ) -> Objects {
        fn kind<K: Resource<DynamicType = ()> + Clone>(
            prev: Option<&Shared<K>>,
            stale: bool,
            stores: &[Store<K>],
        ) -> Shared<K> {
            match prev {
                Some(p) if !stale => p.clone(),
                _ => Shared::from_arcs(sorted(stores)),
            }
        }
        let is = |bits: u32| dirty & bits != 0;
        // Which Secrets are kept depends on the Ingresses, Gateways and their classes.
        let refs = SECRET | INGRESS_CLASS | INGRESS | GATEWAY_CLASS | GATEWAY;
        let (cm_ns, cm_name) = &self.opts.config_map;
        let p = prev;
        let mut o = Objects {
            ingress_classes: kind(
                p.map(|p| &p.ingress_classes),
                is(INGRESS_CLASS),
                &self.ingress_classes,
            ),
            ingresses: kind(p.map(|p| &p.ingresses), is(INGRESS), &self.ingresses),
            services: kind(p.map(|p| &p.services), is(SERVICE), &self.services),
            endpoint_slices: match (p, slices) {
                (Some(p), Some(keys)) if is(ENDPOINT_SLICE) => {
                    updated(&p.endpoint_slices, keys, &self.endpoint_slices)
                }
                _ => kind(
                    p.map(|p| &p.endpoint_slices),
                    is(ENDPOINT_SLICE),
                    &self.endpoint_slices,
                ),
            },
            secrets: kind(p.map(|p| &p.secrets), is(refs), &self.secrets),
            config_map: (sorted(&self.config_maps).into_iter())
                .find(|c| {
                    c.metadata.namespace.as_ref() == Some(cm_ns)
                        && c.metadata.name.as_ref() == Some(cm_name)
                })
                .map(Arc::unwrap_or_clone),
            gateway_classes: kind(
                p.map(|p| &p.gateway_classes),
                is(GATEWAY_CLASS),
                &self.gateway_classes,
            ),
            gateways: kind(p.map(|p| &p.gateways), is(GATEWAY), &self.gateways),
            http_routes: kind(p.map(|p| &p.http_routes), is(HTTP_ROUTE), &self.http_routes),
            reference_grants: kind(
                p.map(|p| &p.reference_grants),
                is(REFERENCE_GRANT),
                &self.reference_grants,
            ),
        };
        if prev.is_none() || is(refs) {
            crate::kube::secrets::keep_referenced(&mut o, &self.opts);
        }
        o
    }
}

/// Kinds as bits of the dirty mask: which stores changed since the last recompute.
const INGRESS_CLASS: u32 = 1;
const INGRESS: u32 = 1 << 1;
const SERVICE: u32 = 1 << 2;
pub(super) const ENDPOINT_SLICE: u32 = 1 << 3;
const SECRET: u32 = 1 << 4;
const GATEWAY_CLASS: u32 = 1 << 5;
const GATEWAY: u32 = 1 << 6;
const HTTP_ROUTE: u32 = 1 << 7;
const REFERENCE_GRANT: u32 = 1 << 8;

/// The bit of a kind (by its API name); unknown kinds mark everything.
pub(super) fn kind_bit(kind: &str) -> u32 {
    match kind {
        "IngressClass" => INGRESS_CLASS,
        "Ingress" => INGRESS,
        "Service" => SERVICE,
        "EndpointSlice" => ENDPOINT_SLICE,
        "Secret" => SECRET,
        "GatewayClass" => GATEWAY_CLASS,
        "Gateway" => GATEWAY,
        "HTTPRoute" => HTTP_ROUTE,
        "ReferenceGrant" => REFERENCE_GRANT,
        _ => u32::MAX,
    }
}

/// The stores' objects sorted by (namespace, name): the order objects arrived in never shows.
fn sorted<K: Resource<DynamicType = ()> + Clone>(stores: &[Store<K>]) -> Vec<Arc<K>> {
    let mut all: Vec<Arc<K>> = stores.iter().flat_map(|s| s.state()).collect();
    all.sort_by(|a, b| {
        let (a, b) = (a.meta(), b.meta());
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
    all
}

/// What changed since the recompute task last read the stores: kinds (bits), and which
/// EndpointSlices.
#[derive(Default)]
pub(super) struct Changes {
    pub(super) kinds: AtomicU32,
    pub(super) slices: Touched,
}

impl Changes {
    /// Kind `bit` changed: object `o` (None: a re-list, everything may have). The object is
    /// recorded before the bit is set, so a recompute that sees the bit sees the object.
    pub(super) fn mark<K: Resource>(&self, bit: u32, slices: bool, o: Option<&K>) {
        if slices {
            match o {
                Some(o) => self.slices.record(o),
                None => self.slices.relisted(),
            }
        }
        self.kinds.fetch_or(bit, Ordering::AcqRel);
    }
}

/// (namespace, name) of an object.
pub(super) type Key = (Option<String>, Option<String>);

/// The objects of one kind written or deleted since the recompute task last looked, so its
/// sorted list is updated in place: a scale event must not re-sort 10k EndpointSlices.
#[derive(Default)]
pub(super) struct Touched {
    keys: Mutex<Vec<Key>>,
    /// A re-list (or a kind that is not served): read the whole store next time.
    full: AtomicBool,
}

impl Touched {
    pub(super) fn record<K: Resource>(&self, o: &K) {
        let m = o.meta();
        let key = (m.namespace.clone(), m.name.clone());
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
    }

    pub(super) fn relisted(&self) {
        self.full.store(true, Ordering::Release);
    }

    /// What changed since the last call, or None: everything may have.
    pub(super) fn take(&self) -> Option<Vec<Key>> {
        let keys = std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()));
        (!self.full.swap(false, Ordering::AcqRel)).then_some(keys)
    }
}

/// `prev` with the objects named by `keys` as the stores hold them now (replaced, inserted in
/// order, or removed when gone).
fn updated<K: Resource<DynamicType = ()> + Clone>(
    prev: &Shared<K>,
    mut keys: Vec<Key>,
    stores: &[Store<K>],
) -> Shared<K> {
    keys.sort();
    keys.dedup();
    let mut list: Vec<Arc<K>> = prev.to_vec();
    for (ns, name) in keys {
        let Some(n) = name.as_deref() else {
            continue;
        };
        let r = match ns.as_deref() {
            Some(ns) => ObjectRef::<K>::new(n).within(ns),
            None => ObjectRef::<K>::new(n),
        };
        let now = stores.iter().find_map(|s| s.get(&r));
        let at = list.binary_search_by(|o| {
            let m = o.meta();
            (&m.namespace, &m.name).cmp(&(&ns, &name))
        });
        match (at, now) {
            (Ok(i), Some(o)) => list[i] = o,
            (Err(i), Some(o)) => list.insert(i, o),
            (Ok(i), None) => {
                list.remove(i);
            }
            (Err(_), None) => {}
        }
    }
    Shared::from_arcs(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn slice(ns: &str, name: &str, rv: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name, "resourceVersion": rv},
            "addressType": "IPv4", "endpoints": []}))
        .expect("slice")
    }

    fn names(v: &Shared<EndpointSlice>) -> Vec<String> {
        v.items()
            .map(|s| {
                let m = &s.metadata;
                let (ns, name) = (m.namespace.clone(), m.name.clone());
                format!(
                    "{}/{}@{}",
                    ns.unwrap_or_default(),
                    name.unwrap_or_default(),
                    m.resource_version.clone().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn touched_slices_are_updated_in_place_like_a_full_read() {
        let (reader, mut writer) = kube::runtime::reflector::store::<EndpointSlice>();
        for (ns, n) in [("a", "x"), ("b", "m"), ("b", "p"), ("c", "y")] {
            writer.apply_watcher_event(&Event::Apply(slice(ns, n, "1")));
        }
        let stores = [reader];
        let prev = Shared::from_arcs(sorted(&stores));
        let touched = Touched::default();
        // Changed, deleted, added in the middle, and one named twice.
        for ev in [
            Event::Apply(slice("b", "m", "2")),
            Event::Delete(slice("b", "p", "1")),
            Event::Apply(slice("b", "n", "1")),
            Event::Apply(slice("b", "m", "3")),
        ] {
            writer.apply_watcher_event(&ev);
            if let Event::Apply(o) | Event::Delete(o) = &ev {
                touched.record(o);
            }
        }
        let keys = touched.take().expect("no re-list");
        let got = updated(&prev, keys, &stores);
        assert_eq!(names(&got), names(&Shared::from_arcs(sorted(&stores))));
        assert_eq!(names(&got), ["a/x@1", "b/m@3", "b/n@1", "c/y@1"]);
        assert!(
            Arc::ptr_eq(&got[0], &prev[0]),
            "untouched objects are shared"
        );
        touched.relisted();
        assert_eq!(touched.take(), None, "after a re-list everything is read");
    }
}

//! The reflector stores, one per kind (and watched namespace), and how their content becomes
//! [`Objects`]: sorted, with kinds that did not change shared from the previous value.

use crate::kube::gateway::types::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::kube::{Objects, Options, Shared};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::Store;
use kube::Resource;
use std::sync::Arc;

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
    pub(super) fn objects(&self, prev: Option<&Objects>, dirty: u32) -> Objects {
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
            endpoint_slices: kind(
                p.map(|p| &p.endpoint_slices),
                is(ENDPOINT_SLICE),
                &self.endpoint_slices,
            ),
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
const ENDPOINT_SLICE: u32 = 1 << 3;
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

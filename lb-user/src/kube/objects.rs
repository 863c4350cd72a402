//! What the mapping reads: one sorted list per kind, each shared (`Arc`) between successive
//! [`Objects`] so a change to one kind neither copies nor compares the others; the objects
//! themselves are the reflector stores' own (`Arc`), never copied.

use super::gateway::types::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Resource;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// Everything the mapping reads: the current content of one store per kind.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub ingress_classes: Shared<IngressClass>,
    pub ingresses: Shared<Ingress>,
    pub services: Shared<Service>,
    pub endpoint_slices: Shared<EndpointSlice>,
    pub secrets: Shared<Secret>,
    pub gateway_classes: Shared<GatewayClass>,
    pub gateways: Shared<Gateway>,
    pub http_routes: Shared<HTTPRoute>,
    pub reference_grants: Shared<ReferenceGrant>,
    /// The settings ConfigMap (settings.rs), if it exists.
    pub config_map: Option<ConfigMap>,
}

impl Objects {
    /// Equal content, kind by kind (a list shared with `other` is equal without a look).
    pub fn same(&self, other: &Objects) -> bool {
        self.same_except_slices(other) && same_kind(&self.endpoint_slices, &other.endpoint_slices)
    }

    /// Equal in every kind but EndpointSlices: a change the endpoint fast path may take.
    pub fn same_except_slices(&self, b: &Objects) -> bool {
        same_kind(&self.ingress_classes, &b.ingress_classes)
            && same_kind(&self.ingresses, &b.ingresses)
            && same_kind(&self.services, &b.services)
            && same_kind(&self.secrets, &b.secrets)
            && self.config_map == b.config_map
            && same_kind(&self.gateway_classes, &b.gateway_classes)
            && same_kind(&self.gateways, &b.gateways)
            && same_kind(&self.http_routes, &b.http_routes)
            && same_kind(&self.reference_grants, &b.reference_grants)
    }
}

/// Equal lists: the same list, or pairwise the same object by namespace, name and
/// resourceVersion (the API server changes it with every write), or by content without one.
fn same_kind<K: Resource + PartialEq>(a: &Shared<K>, b: &Shared<K>) -> bool {
    a.ptr_eq(b)
        || a.len() == b.len()
            && a.iter().zip(b.iter()).all(|(x, y)| {
                let (m, n) = (x.meta(), y.meta());
                match (&m.resource_version, &n.resource_version) {
                    (Some(r), Some(s)) => r == s && m.namespace == n.namespace && m.name == n.name,
                    _ => x == y,
                }
            })
}

/// One kind's objects, shared by reference between snapshots of the stores; reads go through
/// `Deref` to the `Vec`, writes (tests, filters) copy the list (not the objects) if shared.
#[derive(Debug)]
pub struct Shared<K>(Arc<Vec<Arc<K>>>);

impl<K> Shared<K> {
    /// The same list (not just equal content) as `other`.
    pub fn ptr_eq(&self, other: &Shared<K>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A list of objects shared with their owner (the reflector stores).
    pub fn from_arcs(v: Vec<Arc<K>>) -> Self {
        Shared(Arc::new(v))
    }

    /// The objects (not their `Arc`s).
    pub fn items(&self) -> impl DoubleEndedIterator<Item = &K> + Clone {
        self.0.iter().map(|k| &**k)
    }
}

impl<K> Clone for Shared<K> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<K> Default for Shared<K> {
    fn default() -> Self {
        Shared(Arc::new(Vec::new()))
    }
}

impl<K> From<Vec<K>> for Shared<K> {
    fn from(v: Vec<K>) -> Self {
        v.into_iter().collect()
    }
}

impl<K> FromIterator<K> for Shared<K> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        Shared(Arc::new(iter.into_iter().map(Arc::new).collect()))
    }
}

impl<K: PartialEq> PartialEq for Shared<K> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || self.0 == other.0
    }
}

impl<K> Deref for Shared<K> {
    type Target = Vec<Arc<K>>;
    fn deref(&self) -> &Vec<Arc<K>> {
        &self.0
    }
}

impl<K> DerefMut for Shared<K> {
    fn deref_mut(&mut self) -> &mut Vec<Arc<K>> {
        Arc::make_mut(&mut self.0)
    }
}

impl<'a, K> IntoIterator for &'a Shared<K> {
    type Item = &'a K;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, Arc<K>>, fn(&'a Arc<K>) -> &'a K>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|k| &**k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_lists_are_copied_on_write_and_equal_by_pointer_or_content() {
        let a: Shared<u32> = vec![1, 2].into();
        let mut b = a.clone();
        assert!(a.ptr_eq(&b) && a == b);
        b.push(Arc::new(3));
        assert!(!a.ptr_eq(&b));
        assert_eq!((a.len(), b.len()), (2, 3));
        let c: Shared<u32> = vec![1, 2].into();
        assert!(!a.ptr_eq(&c) && a == c);
    }

    #[test]
    fn same_except_slices_ignores_only_slices() {
        let a = Objects::default();
        let mut b = a.clone();
        b.endpoint_slices.push(Default::default());
        assert!(a.same_except_slices(&b) && !a.same(&b));
        b.services.push(Default::default());
        assert!(!a.same_except_slices(&b));
    }
}

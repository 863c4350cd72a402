//! Kubernetes as a config source: reflectors keep the objects (watch.rs), a pure mapping turns them
//! into routes, clusters and TLS (ingress.rs, endpoints.rs), merged with the base file (source.rs).

mod annotations;
mod endpoints;
pub mod events;
pub mod fastpath;
pub mod gateway;
mod ingress;
pub mod lease;
mod objects;
mod secrets;
pub mod services;
pub mod settings;
pub mod source;
pub mod status;
pub mod watch;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_annotations;
#[cfg(test)]
mod tests_fastpath;
#[cfg(test)]
mod tests_gateway;
#[cfg(test)]
mod tests_services;

use crate::config::{Cluster, Route};
use k8s_openapi::api::networking::v1::Ingress;
pub use objects::{Objects, Shared};

/// Our IngressClass controller name when none is configured.
pub const DEFAULT_CONTROLLER: &str = "lb.example.com/ingress-controller";

/// Our annotations on Ingresses and Services (docs/kubernetes.md): `lb.example.com/NAME`.
pub const ANNOTATION_PREFIX: &str = "lb.example.com/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// IngressClasses whose `spec.controller` equals this are ours.
    pub controller: String,
    /// Only this class (of ours) counts; it also names the class for the legacy annotation when
    /// no IngressClass object exists. Default: every class of our controller.
    pub ingress_class: Option<String>,
    /// Only Ingresses in these namespaces; empty = all.
    pub namespaces: Vec<String>,
    /// (namespace, name) of the settings ConfigMap (`--configmap`).
    pub config_map: (String, String),
}

impl Default for Options {
    fn default() -> Self {
        let (ns, name) = settings::DEFAULT_CONFIG_MAP;
        Options {
            controller: DEFAULT_CONTROLLER.to_string(),
            ingress_class: None,
            namespaces: Vec::new(),
            config_map: (ns.to_string(), name.to_string()),
        }
    }
}

/// A certificate for SNI, from a `kubernetes.io/tls` Secret named in an Ingress's `spec.tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    /// `spec.tls[].hosts` (may be empty: the certificate's SANs then decide).
    pub hosts: Vec<String>,
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// PEM chain (`tls.crt`) and key (`tls.key`) as stored in the Secret.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// One object (or one part of it, named by `message`'s field path) that could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

/// The mapping's result: config parts plus what was rejected (and why).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
    pub tls: Vec<TlsCert>,
    pub rejected: Vec<ObjectError>,
    /// Where each cluster's endpoints come from (the endpoint fast path).
    pub sources: fastpath::Sources,
}

/// Maps every Ingress of ours (sorted by namespace/name, so the result does not depend on the
/// order objects arrived in) to routes, clusters and certificates. Never fails as a whole: a bad
/// part of an object is left out and listed in `rejected`. No listener is known to be plain
/// HTTP, so `ssl-redirect` adds nothing (see [`to_config_with`]).
pub fn to_config(objs: &Objects, opts: &Options) -> Mapped {
    to_config_with(objs, opts, &[])
}

/// [`to_config`] for a config file whose listeners without TLS are `plain_listeners`: the
/// `ssl-redirect` annotation redirects requests that arrive on them to HTTPS. Canary Ingresses
/// are mapped after all others (they split the others' routes).
pub fn to_config_with(objs: &Objects, opts: &Options, plain_listeners: &[String]) -> Mapped {
    let classes = ingress::Classes::new(&objs.ingress_classes, opts);
    let mut ours: Vec<&Ingress> = (objs.ingresses.items())
        .filter(|i| {
            let ns = i.metadata.namespace.as_deref().unwrap_or("default");
            opts.namespaces.is_empty() || opts.namespaces.iter().any(|n| n == ns)
        })
        .filter(|i| classes.is_ours(i))
        .collect();
    ours.sort_by_cached_key(|i| {
        let canary = annotations::is_canary(i.metadata.annotations.as_ref());
        (
            canary,
            i.metadata.namespace.clone(),
            i.metadata.name.clone(),
        )
    });
    let mut out = ingress::Mapper::new(objs, plain_listeners);
    for ing in ours {
        out.ingress(ing);
    }
    out.finish()
}

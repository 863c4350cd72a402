//! References out of Gateway API objects: ReferenceGrants (a reference into another namespace is
//! allowed only when one in the target namespace grants it), certificateRefs, Service backendRefs.

use super::types::{Listener, ObjectRef, ReferenceGrant, GROUP};
use crate::kube::ingress::Index;
use crate::kube::{Objects, TlsCert};
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use std::sync::Arc;

/// The ReferenceGrants of the cluster.
pub(super) struct Grants<'a>(&'a [Arc<ReferenceGrant>]);

impl<'a> Grants<'a> {
    pub(super) fn new(g: &'a [Arc<ReferenceGrant>]) -> Grants<'a> {
        Grants(g)
    }

    /// A `from_kind` (of our API group) in `from_ns` may refer to core `to_kind` `to_ns/to_name`.
    pub(super) fn allows(
        &self,
        from_kind: &str,
        from_ns: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        self.0.iter().any(|g| {
            g.metadata.namespace.as_deref().unwrap_or("default") == to_ns
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
    }
}

/// Why a reference does not resolve: the ResolvedRefs reason and a message naming the field.
pub(super) type RefError = (&'static str, String);

fn core_kind(r: &ObjectRef, default: &str) -> bool {
    r.group.as_deref().unwrap_or("").is_empty() && r.kind.as_deref().unwrap_or(default) == default
}

/// An HTTPS listener's certificates: `tls.certificateRefs`, each a kubernetes.io/tls Secret
/// (another namespace: only with a ReferenceGrant to the Gateway's namespace).
pub(super) fn listener_certs(
    objs: &Objects,
    grants: &Grants,
    gw_ns: &str,
    l: &Listener,
    field: &str,
) -> Result<Vec<TlsCert>, RefError> {
    let Some(tls) = &l.tls else {
        return Err((
            "InvalidCertificateRef",
            format!("{field}.tls: HTTPS needs tls.certificateRefs"),
        ));
    };
    if tls.mode.as_deref().unwrap_or("Terminate") != "Terminate" {
        let m = format!("{field}.tls.mode: only Terminate is supported");
        return Err(("InvalidCertificateRef", m));
    }
    if tls.certificate_refs.is_empty() {
        let m = format!("{field}.tls.certificateRefs: at least one is needed");
        return Err(("InvalidCertificateRef", m));
    }
    let mut certs = Vec::new();
    for (k, r) in tls.certificate_refs.iter().enumerate() {
        let at = format!("{field}.tls.certificateRefs[{k}]");
        if !core_kind(r, "Secret") {
            return Err((
                "InvalidCertificateRef",
                format!("{at}: only core Secrets are supported"),
            ));
        }
        let ns = r.namespace.clone().unwrap_or_else(|| gw_ns.to_string());
        if ns != gw_ns && !grants.allows("Gateway", gw_ns, "Secret", &ns, &r.name) {
            let m = format!(
                "{at}: Secret {ns}/{} needs a ReferenceGrant in {ns}",
                r.name
            );
            return Err(("RefNotPermitted", m));
        }
        let secret: Option<&Secret> = objs.secrets.items().find(|s| {
            s.metadata.namespace.as_deref() == Some(&ns)
                && s.metadata.name.as_deref() == Some(&r.name)
        });
        let Some(s) = secret.filter(|s| s.type_.as_deref() == Some("kubernetes.io/tls")) else {
            let m = format!(
                "{at}: Secret {ns}/{} of type kubernetes.io/tls not found",
                r.name
            );
            return Err(("InvalidCertificateRef", m));
        };
        let get = |k: &str| {
            (s.data.as_ref())
                .and_then(|d| d.get(k))
                .map(|b| b.0.clone())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    let m = format!("{at}: Secret {ns}/{} has no {k}", r.name);
                    ("InvalidCertificateRef", m)
                })
        };
        certs.push(TlsCert {
            hosts: l.hostname.iter().cloned().collect(),
            secret: format!("{ns}/{}", r.name),
            cert_pem: get("tls.crt")?,
            key_pem: get("tls.key")?,
        });
    }
    Ok(certs)
}

/// A backendRef (or mirror target) of an HTTPRoute in `route_ns`: the namespace, Service and
/// Service port it names.
pub(super) fn service_port<'o>(
    index: &Index<'o>,
    grants: &Grants,
    route_ns: &str,
    r: &ObjectRef,
    field: &str,
) -> Result<(String, &'o Service, &'o ServicePort), RefError> {
    if !core_kind(r, "Service") {
        let m = format!("{field}: only core Services are supported as backends");
        return Err(("InvalidKind", m));
    }
    let ns = r.namespace.clone().unwrap_or_else(|| route_ns.to_string());
    if ns != route_ns && !grants.allows("HTTPRoute", route_ns, "Service", &ns, &r.name) {
        let m = format!(
            "{field}.namespace: Service {ns}/{} needs a ReferenceGrant in {ns}",
            r.name
        );
        return Err(("RefNotPermitted", m));
    }
    let Some(svc) = index.service(&ns, &r.name) else {
        return Err((
            "BackendNotFound",
            format!("{field}.name: Service {ns}/{} not found", r.name),
        ));
    };
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        let m = format!(
            "{field}.name: Service {ns}/{} is ExternalName (not supported)",
            r.name
        );
        return Err(("BackendNotFound", m));
    }
    let Some(port) = r.port else {
        return Err((
            "BackendNotFound",
            format!("{field}.port: required for a Service"),
        ));
    };
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    match ports.iter().find(|p| p.port == port) {
        Some(sp) => Ok((ns, svc, sp)),
        None => {
            let m = format!("{field}.port: Service {ns}/{} has no port {port}", r.name);
            Err(("BackendNotFound", m))
        }
    }
}

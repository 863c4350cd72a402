//! Ingress backends → clusters: the Service and its port, endpoints from its EndpointSlices, the
//! Service's cluster annotations with the Ingress's laid over them, a backup Service's endpoints.
//! One cluster per Service port (`ns/svc:port`), or per Service port and Ingress
//! (`ns/svc:port@ingress`) when the Ingress has cluster settings of its own.

use super::{Mapper, Origin};
use crate::config::{Cluster, Endpoint};
use crate::kube::annotations::{self, On, Parsed, PortRef, ServiceRef};
use crate::kube::endpoints::{endpoints, EndpointSource, SERVICE_NAME_LABEL};
use crate::kube::{Objects, ANNOTATION_PREFIX};
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressBackend;
use std::collections::BTreeMap;

/// By namespace, then name (lookups with borrowed names).
type ByName<'a, T> = BTreeMap<&'a str, BTreeMap<&'a str, T>>;

/// The Services and Secrets, and the EndpointSlices of each Service, by namespace and name: with
/// 10k of each a linear search per backend costs seconds per mapping (the Gateway API mapping
/// uses it too).
pub(in crate::kube) struct Index<'a> {
    services: ByName<'a, &'a Service>,
    secrets: ByName<'a, &'a Secret>,
    slices: ByName<'a, Vec<&'a EndpointSlice>>,
}

impl<'a> Index<'a> {
    pub(in crate::kube) fn new(objs: &'a Objects) -> Index<'a> {
        let ns = |m: &'a Option<String>| m.as_deref().unwrap_or("default");
        let mut services: ByName<&Service> = BTreeMap::new();
        for s in &objs.services {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            let in_ns = services.entry(ns(&s.metadata.namespace)).or_default();
            // Two with one key cannot come from an API server; the first wins, as before.
            in_ns.entry(name).or_insert(s);
        }
        let mut secrets: ByName<&Secret> = BTreeMap::new();
        for s in &objs.secrets {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            let in_ns = secrets.entry(ns(&s.metadata.namespace)).or_default();
            in_ns.entry(name).or_insert(s);
        }
        let mut slices: ByName<Vec<&EndpointSlice>> = BTreeMap::new();
        for sl in &objs.endpoint_slices {
            let labels = sl.metadata.labels.as_ref();
            if let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                let in_ns = slices.entry(ns(&sl.metadata.namespace)).or_default();
                in_ns.entry(svc.as_str()).or_default().push(sl);
            }
        }
        Index {
            services,
            secrets,
            slices,
        }
    }
}

impl<'a> Index<'a> {
    pub(in crate::kube) fn service(&self, ns: &str, name: &str) -> Option<&'a Service> {
        self.services.get(ns)?.get(name).copied()
    }

    /// The EndpointSlices labelled with Service `ns/name`.
    pub(in crate::kube) fn slices(&self, ns: &str, name: &str) -> &[&'a EndpointSlice] {
        let found = self.slices.get(ns).and_then(|m| m.get(name));
        found.map_or(&[], Vec::as_slice)
    }
}

impl<'a> Mapper<'a> {
    fn service(&self, ns: &str, name: &str) -> Option<&'a Service> {
        self.index.service(ns, name)
    }

    pub(super) fn secret(&self, ns: &str, name: &str) -> Option<&'a Secret> {
        self.index.secrets.get(ns)?.get(name).copied()
    }

    /// The EndpointSlices labelled with Service `ns/name`.
    fn slices(&self, ns: &str, name: &str) -> &[&'a EndpointSlice] {
        self.index.slices(ns, name)
    }

    /// The cluster for a backend (created on first use), or why there is none.
    pub(super) fn backend(
        &mut self,
        o: &Origin,
        b: &IngressBackend,
        field: &str,
    ) -> Result<String, String> {
        let Some(sb) = &b.service else {
            return Err(format!(
                "{field}: only service backends are supported (resource backends are not)"
            ));
        };
        let want = sb.port.as_ref();
        let port = match (
            want.and_then(|p| p.number),
            want.and_then(|p| p.name.clone()),
        ) {
            (Some(n), _) => PortRef::Number(n),
            (None, Some(n)) => PortRef::Name(n),
            (None, None) => {
                return Err(format!("{field}.service.port: needs a number or a name"));
            }
        };
        let r = ServiceRef {
            name: sb.name.clone(),
            port,
        };
        let at = |sub: &str| format!("{field}.service.{sub}");
        self.cluster_for(o.ns, &r, &at, Some((o.name, o.ann)))
    }

    /// The cluster for Service port `r` of namespace `ns` as Ingress `ing` uses it (None: with
    /// the Service's settings only); `at` names the field for a sub-field (`name`, `port.name`).
    pub(super) fn cluster_for(
        &mut self,
        ns: &str,
        r: &ServiceRef,
        at: &dyn Fn(&str) -> String,
        ing: Option<(&str, &Parsed)>,
    ) -> Result<String, String> {
        let (svc, sp) = self.service_port(ns, r, at)?;
        let Some(svc_ann) = self.service_annotations(ns, svc) else {
            return Err(format!(
                "{}: Service {ns}/{} has invalid {ANNOTATION_PREFIX} annotations (see its rejection)",
                at("name"),
                r.name
            ));
        };
        let base = format!("{ns}/{}:{}", r.name, sp.port);
        let ing = ing.filter(|(_, a)| a.has_cluster_settings());
        let name = match ing {
            Some((iname, _)) => format!("{base}@{iname}"),
            None => base,
        };
        if self.clusters.contains_key(&name) {
            return Ok(name);
        }
        if let Some(m) = self.bad_clusters.get(&name) {
            return Err(m.clone());
        }
        let built = self.build(ns, r, sp, &svc_ann, ing.map(|(_, a)| a), name.clone());
        let (built, sources) = (built.0, built.1);
        self.sources.clusters.insert(name.clone(), sources);
        match built {
            Ok(c) => {
                self.clusters.insert(name.clone(), c);
                Ok(name)
            }
            Err(m) => {
                let m = format!("{}: {m}", at("name"));
                self.bad_clusters.insert(name, m.clone());
                Err(m)
            }
        }
    }

    fn build(
        &self,
        ns: &str,
        r: &ServiceRef,
        sp: &ServicePort,
        svc_ann: &Parsed,
        ing_ann: Option<&Parsed>,
        name: String,
    ) -> (Result<Cluster, String>, Vec<EndpointSource>) {
        let mut sources = vec![EndpointSource::new(ns, &r.name, sp, false)];
        let found = self.slices(ns, &r.name).iter().copied();
        let mut eps = endpoints(ns, &r.name, sp, found);
        let backup = match ing_ann.and_then(|a| a.backup.as_ref()) {
            Some(b) => Some((b, String::new())),
            None => (svc_ann.backup.as_ref()).map(|b| (b, format!("Service {ns}/{}: ", r.name))),
        };
        if let Some((b, whose)) = backup {
            let field = annotations::field("backup-service");
            let bsp = match self.service_port(ns, b, &|_| field.clone()) {
                Ok((_, bsp)) => bsp,
                Err(m) => return (Err(format!("{whose}{m}")), sources),
            };
            sources.push(EndpointSource::new(ns, &b.name, bsp, true));
            let found = self.slices(ns, &b.name).iter().copied();
            let backups = endpoints(ns, &b.name, bsp, found).into_iter();
            eps.extend(backups.map(|e| Endpoint { backup: true, ..e }));
        }
        (annotations::cluster(name, svc_ann, ing_ann, eps), sources)
    }

    /// Service `r.name` in `ns` and its port `r.port`, or why not.
    fn service_port(
        &self,
        ns: &str,
        r: &ServiceRef,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(&'a Service, &'a ServicePort), String> {
        let Some(svc) = self.service(ns, &r.name) else {
            return Err(format!("{}: Service {ns}/{} not found", at("name"), r.name));
        };
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(format!(
                "{}: Service {ns}/{} is ExternalName (not supported)",
                at("name"),
                r.name
            ));
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let (sp, sub, what) = match &r.port {
            PortRef::Number(n) => (
                ports.iter().find(|p| p.port == *n),
                "port.number",
                format!("number {n}"),
            ),
            PortRef::Name(n) => (
                ports.iter().find(|p| p.name.as_ref() == Some(n)),
                "port.name",
                format!("name {n:?}"),
            ),
        };
        let sp = sp.ok_or_else(|| {
            format!(
                "{}: Service {ns}/{} has no port with {what}",
                at(sub),
                r.name
            )
        })?;
        Ok((svc, sp))
    }

    /// A Service's annotations, parsed once per mapping; invalid ones are rejected once, naming
    /// the Service (None then).
    fn service_annotations(&mut self, ns: &str, svc: &Service) -> Option<Parsed> {
        let key = (
            ns.to_string(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        if let Some(p) = self.services.get(&key) {
            return p.clone();
        }
        let parsed = match annotations::parse(svc.metadata.annotations.as_ref(), On::Service) {
            Ok(p) => Some(p),
            Err(msgs) => {
                for m in msgs {
                    let m = format!("{m}; routes to this Service are not served");
                    self.reject_kind("Service", &key.0, &key.1, m);
                }
                None
            }
        };
        self.services.insert(key, parsed.clone());
        parsed
    }
}

//! `lb.example.com/` annotations on Ingresses and Services → route and cluster settings of the
//! config model, written in the YAML file's syntax and judged by its validators (spec.rs: table).
//!
//! Rule: an Ingress's annotations apply to every route it produces, so one bad annotation value
//! (or an unknown name under the prefix) leaves all of that Ingress's routes out; other objects
//! are unaffected. A Service's bad annotation leaves out the routes that use that Service.

pub(crate) mod canary;
mod check;
pub(crate) mod spec;
mod values;

pub(crate) use check::{blame, check_route};
pub(crate) use values::{PortRef, ServiceRef};

use super::ANNOTATION_PREFIX;
use crate::config::{Cluster, Endpoint, NameValue, Route};
use serde_yaml::{Mapping, Value};
use spec::{Kind, Level, Spec};
use std::collections::BTreeMap;

/// The kind of object that carries the annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    Ingress,
    Service,
}

/// The canary settings of an Ingress with `canary: "true"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CanaryAnn {
    /// Share of the main routes' requests (0..=100).
    pub weight: Option<u32>,
    pub header: Option<NameValue>,
    pub cookie: Option<NameValue>,
}

/// One object's annotations, parsed and checked on their own.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parsed {
    /// Route fields, in the shape of a config route.
    route: Mapping,
    /// Cluster fields, in the shape of a config cluster.
    cluster: Mapping,
    /// The route settings as a checked config route (None without route settings).
    route_tpl: Option<Route>,
    pub ssl_redirect: bool,
    pub canary: Option<CanaryAnn>,
    pub mirror: Option<ServiceRef>,
    pub backup: Option<ServiceRef>,
    /// Every annotation of ours, with its value (to name it in errors).
    present: Vec<(&'static Spec, String)>,
}

/// `metadata.annotations[lb.example.com/NAME]`
pub(crate) fn field(name: &str) -> String {
    format!("metadata.annotations[{ANNOTATION_PREFIX}{name}]")
}

/// Whether an Ingress is a canary (`canary: "true"`): it splits other Ingresses' routes.
pub(crate) fn is_canary(annotations: Option<&BTreeMap<String, String>>) -> bool {
    let key = format!("{ANNOTATION_PREFIX}canary");
    annotations.and_then(|a| a.get(&key)).map(|v| v.trim()) == Some("true")
}

impl Parsed {
    /// Cluster settings (or a backup Service) that make an Ingress's clusters its own.
    pub(crate) fn has_cluster_settings(&self) -> bool {
        !self.cluster.is_empty() || self.backup.is_some()
    }

    /// Copies the route settings onto `r`; the mirror goes to `mirror_cluster`.
    pub(crate) fn apply_route(&self, r: &mut Route, mirror_cluster: Option<&str>) {
        let Some(t) = &self.route_tpl else { return };
        r.allow.clone_from(&t.allow);
        r.deny.clone_from(&t.deny);
        r.request_headers.clone_from(&t.request_headers);
        r.response_headers.clone_from(&t.response_headers);
        r.hsts = t.hsts;
        r.rewrite.clone_from(&t.rewrite);
        r.rate_limit = t.rate_limit;
        r.mirror = t.mirror.clone().zip(mirror_cluster).map(|(mut m, c)| {
            m.cluster = c.to_string();
            m
        });
    }

    /// An error about config field `path` of a route (`Level::Route`) or cluster, naming the
    /// annotations that set it.
    pub(crate) fn blame(&self, level: Level, path: &str, msg: &str) -> String {
        blame(self.present.iter(), level, path, msg)
    }

    /// Whether some annotation of this object set config field `path` (or one related).
    pub(crate) fn sets(&self, level: Level, path: &str) -> bool {
        !check::hits(self.present.iter(), level, path).is_empty()
    }
}

/// Parses the annotations under our prefix of an object of kind `on` and checks them with the
/// config validators. Err: one message per problem, each naming its annotation.
pub(crate) fn parse(
    annotations: Option<&BTreeMap<String, String>>,
    on: On,
) -> Result<Parsed, Vec<String>> {
    let mut p = Parsed::default();
    let mut errs = Vec::new();
    let mut canary = false;
    let mut ca = CanaryAnn::default();
    let mut header_value = None;
    for (key, raw) in annotations.into_iter().flatten() {
        let Some(name) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        let at = field(name);
        let Some(spec) = spec::find(name) else {
            let hint = spec::suggest(name)
                .map(|s| format!(" (did you mean {ANNOTATION_PREFIX}{s}?)"))
                .unwrap_or_default();
            errs.push(format!(
                "{at}: unknown annotation{hint}; see docs/kubernetes.md"
            ));
            continue;
        };
        if matches!(spec.kind, Kind::Elsewhere(_)) && on == On::Ingress {
            errs.push(format!("{at}: only read on a Service"));
            continue;
        }
        if spec.level == Level::Route && on == On::Service {
            errs.push(format!(
                "{at}: a route setting, only read on an Ingress (a Service takes cluster settings)"
            ));
            continue;
        }
        p.present.push((spec, raw.clone()));
        let text = || raw.trim().to_string();
        let res = match (spec.kind, spec.name) {
            (Kind::Elsewhere(_), _) => Ok(()),
            (Kind::Flag, "ssl-redirect") => values::flag(raw).map(|v| p.ssl_redirect = v),
            (Kind::Flag, _) => values::flag(raw).map(|v| canary = v),
            (Kind::Weight, _) => values::weight(raw).map(|w| ca.weight = Some(w)),
            (Kind::Text, "canary-by-header-value") => {
                header_value = Some(text());
                Ok(())
            }
            (Kind::Text, "canary-by-header") => {
                ca.header = Some(nv(text(), "always"));
                Ok(())
            }
            (Kind::Text, _) => {
                ca.cookie = Some(nv(text(), "always"));
                Ok(())
            }
            (Kind::Service, "mirror-target") => values::service_ref(raw).map(|s| {
                p.mirror = Some(s);
                values::insert(&mut p.route, "mirror.cluster", check::PLACEHOLDER.into());
            }),
            (Kind::Service, _) => values::service_ref(raw).map(|s| p.backup = Some(s)),
            (kind, _) => values::to_yaml(kind, raw).map(|v| {
                let target = match spec.level {
                    Level::Route => &mut p.route,
                    Level::Cluster => &mut p.cluster,
                };
                if let Some(v) = v {
                    values::insert(target, spec.paths.first().unwrap_or(&""), v);
                }
            }),
        };
        if let Err(e) = res {
            errs.push(format!("{at} = {raw:?}: {e}"));
        }
    }
    combinations(&mut p, &mut errs, canary, ca, header_value);
    check::alone(&mut p, &mut errs);
    if errs.is_empty() {
        Ok(p)
    } else {
        Err(errs)
    }
}

fn nv(name: String, value: &str) -> NameValue {
    NameValue {
        name,
        value: value.to_string(),
    }
}

/// Rules between annotations: what needs what, what conflicts.
fn combinations(
    p: &mut Parsed,
    errs: &mut Vec<String>,
    canary: bool,
    mut ca: CanaryAnn,
    header_value: Option<String>,
) {
    let has = |n: &str| p.present.iter().any(|(s, _)| s.name == n);
    let need = |errs: &mut Vec<String>, n: &str, what: &str| {
        errs.push(format!("{}: needs {ANNOTATION_PREFIX}{what}", field(n)));
    };
    for (s, raw) in &p.present {
        let off = s.kind == Kind::Enable && values::flag(raw) == Ok(false);
        let prefix = format!("{}.", s.paths.first().unwrap_or(&""));
        let inside = |o: &Spec| o.paths.first().is_some_and(|p| p.starts_with(&prefix));
        if let Some((o, _)) = p.present.iter().find(|(o, _)| off && inside(o)) {
            errs.push(format!(
                "{} = \"false\": conflicts with {ANNOTATION_PREFIX}{}",
                field(s.name),
                o.name
            ));
        }
    }
    if has("rate-limit-burst") && !has("rate-limit") {
        need(errs, "rate-limit-burst", "rate-limit");
        // Said above: the route check would only repeat it as a missing field.
        p.route.remove("rate_limit");
    }
    if has("mirror-percent") && p.mirror.is_none() {
        need(errs, "mirror-percent", "mirror-target");
    }
    if p.mirror.is_some() && !has("mirror-percent") {
        values::insert(&mut p.route, "mirror.percent", Value::from(100));
    }
    if p.cluster.contains_key("hash") && !p.cluster.contains_key("balance") {
        p.cluster.insert("balance".into(), "hash".into());
    }
    if let (Some(v), Some(h)) = (&header_value, ca.header.as_mut()) {
        h.value.clone_from(v);
    } else if header_value.is_some() {
        need(errs, "canary-by-header-value", "canary-by-header");
    }
    let canary_keys: Vec<&str> = p
        .present
        .iter()
        .map(|(s, _)| s.name)
        .filter(|n| n.starts_with("canary-"))
        .collect();
    if !canary {
        for n in canary_keys {
            need(errs, n, "canary: \"true\"");
        }
        return;
    }
    if ca.weight.is_none() && ca.header.is_none() && ca.cookie.is_none() {
        errs.push(format!(
            "{}: needs {ANNOTATION_PREFIX}canary-weight, canary-by-header or canary-by-cookie",
            field("canary")
        ));
    }
    for (s, _) in &p.present {
        if s.level == Level::Route && !s.name.starts_with("canary") {
            errs.push(format!(
                "{}: no effect on a canary Ingress (it only lends its backends to the main \
                 Ingress's routes): set it on the main Ingress",
                field(s.name)
            ));
        }
    }
    p.canary = Some(ca);
}

/// The cluster `name`: the Service's settings (`svc`) with the Ingress's (`ing`) laid over them,
/// and these endpoints; checked by the config validators. Err names the annotations at fault.
pub(crate) fn cluster(
    name: String,
    svc: &Parsed,
    ing: Option<&Parsed>,
    endpoints: Vec<Endpoint>,
) -> Result<Cluster, String> {
    if svc.present.is_empty() && ing.is_none_or(|i| i.present.is_empty()) {
        return Ok(check::plain(name, endpoints));
    }
    let mut fields = svc.cluster.clone();
    if let Some(i) = ing {
        values::merge(&mut fields, &i.cluster);
    }
    let present = svc
        .present
        .iter()
        .chain(ing.into_iter().flat_map(|i| i.present.iter()));
    check::cluster(name, fields, endpoints, present)
}

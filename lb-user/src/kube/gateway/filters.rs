//! HTTPRoute rule filters → route actions: RequestHeaderModifier / ResponseHeaderModifier → header
//! edits; RequestRedirect → `redirect`; URLRewrite → `rewrite` + a Host header; RequestMirror →
//! `mirror` (`percent`, or `fraction` as a percentage; neither: 100).
//!
//! What the config cannot express is rejected with the rule (named field), never served
//! differently: URLRewrite ReplaceFullPath, ReplacePrefixMatch on a non-prefix match,
//! RequestRedirect ReplaceFullPath on a PathPrefix match, a second mirror, ExtensionRef, unknown types.

use super::route::Mapper;
use super::types::{HeaderModifier, PathModifier, RequestRedirect, Rule};
use crate::config::{HeaderEdits, Mirror, PathMatch, Redirect, Rewrite, Route, WeightedCluster};

/// What a rule's filters do to each of its routes.
#[derive(Default)]
pub(super) struct Actions {
    request_headers: HeaderEdits,
    response_headers: HeaderEdits,
    redirect: Option<(RequestRedirect, String)>,
    rewrite: Option<(PathModifier, String)>,
    host: Option<String>,
    mirror: Option<Mirror>,
}

fn edits(into: &mut HeaderEdits, m: &HeaderModifier) {
    for h in &m.set {
        into.set
            .insert(h.name.to_ascii_lowercase(), h.value.clone());
    }
    for h in &m.add {
        into.add
            .insert(h.name.to_ascii_lowercase(), h.value.clone());
    }
    into.remove
        .extend(m.remove.iter().map(|h| h.to_ascii_lowercase()));
}

/// The rule's filters, with mirror targets resolved to clusters.
pub(super) fn actions(
    m: &mut Mapper,
    ns: &str,
    rule: &Rule,
    field: &str,
    refs_problem: &mut Option<(&'static str, String)>,
) -> Result<Actions, String> {
    let mut a = Actions::default();
    for (k, f) in rule.filters.iter().enumerate() {
        let at = format!("{field}.filters[{k}]");
        let missing = |sub: &str| format!("{at}.{sub}: required for type {:?}", f.type_);
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                let h = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                edits(&mut a.request_headers, h);
            }
            "ResponseHeaderModifier" => {
                let h = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                edits(&mut a.response_headers, h);
            }
            "RequestRedirect" => {
                let r = f
                    .request_redirect
                    .clone()
                    .ok_or_else(|| missing("requestRedirect"))?;
                a.redirect = Some((r, format!("{at}.requestRedirect")));
            }
            "URLRewrite" => {
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                if let Some(p) = &r.path {
                    a.rewrite = Some((p.clone(), format!("{at}.urlRewrite.path")));
                }
                a.host.clone_from(&r.hostname);
            }
            "RequestMirror" => {
                let r = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                if a.mirror.is_some() {
                    return Err(format!(
                        "{at}: only one RequestMirror per rule is supported"
                    ));
                }
                let percent = match (&r.percent, &r.fraction) {
                    (Some(p), _) if (0..=100).contains(p) => f64::from(*p),
                    (Some(p), _) => {
                        return Err(format!("{at}.requestMirror.percent: {p} is not 0-100"))
                    }
                    (None, Some(fr)) => {
                        let d = fr.denominator.unwrap_or(100);
                        if d <= 0 || fr.numerator < 0 || fr.numerator > d {
                            return Err(format!("{at}.requestMirror.fraction: needs 0 <= numerator <= denominator, denominator > 0"));
                        }
                        f64::from(fr.numerator) * 100.0 / f64::from(d)
                    }
                    (None, None) => 100.0,
                };
                let target = format!("{at}.requestMirror.backendRef");
                let cluster = match m.cluster(ns, &r.backend_ref, &target, (None, None)) {
                    Ok(c) => c,
                    Err((reason, msg)) => {
                        refs_problem.get_or_insert((reason, msg.clone()));
                        return Err(msg);
                    }
                };
                let v = serde_json::json!({"cluster": cluster, "percent": percent});
                a.mirror = Some(serde_json::from_value(v).map_err(|e| format!("{at}: {e}"))?);
            }
            t => return Err(format!("{at}.type: {t:?} is not supported")),
        }
    }
    if a.redirect.is_some() && (a.rewrite.is_some() || a.host.is_some()) {
        return Err(format!(
            "{field}.filters: RequestRedirect and URLRewrite cannot be combined"
        ));
    }
    Ok(a)
}

impl Actions {
    /// Sets `r`'s action (redirect, or the backends), header edits, rewrite and mirror.
    pub(super) fn has_redirect(&self) -> bool {
        self.redirect.is_some()
    }

    pub(super) fn apply(&self, r: &mut Route, backends: &[WeightedCluster]) -> Result<(), String> {
        let prefix = matches!(r.path, Some(PathMatch::Prefix(_)));
        let regex = matches!(r.path, Some(PathMatch::Regex(_)));
        if let Some((rd, at)) = &self.redirect {
            let path_prefix = match &rd.path {
                None => None,
                Some(p) => Some(match p.type_.as_str() {
                    "ReplacePrefixMatch" if !regex => {
                        p.replace_prefix_match.clone().unwrap_or_else(|| "/".into())
                    }
                    "ReplaceFullPath" if !prefix => {
                        p.replace_full_path.clone().unwrap_or_else(|| "/".into())
                    }
                    t => {
                        return Err(format!(
                            "{at}.path.type: {t:?} is not supported with this path match"
                        ))
                    }
                }),
            };
            let port = match rd.port {
                None => None,
                Some(p) => {
                    Some(u16::try_from(p).map_err(|_| format!("{at}.port: {p} is not a port"))?)
                }
            };
            let status = u16::try_from(rd.status_code.unwrap_or(302)).unwrap_or(0);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(format!(
                    "{at}.statusCode: {status} is not 301, 302, 303, 307 or 308"
                ));
            }
            r.redirect = Some(Redirect {
                scheme: rd.scheme.clone(),
                host: rd.hostname.clone(),
                port,
                path_prefix,
                status,
            });
        } else if let [one] = backends {
            r.cluster = Some(one.name.clone());
        } else {
            r.clusters = backends.to_vec();
        }
        if let Some((p, at)) = &self.rewrite {
            match (p.type_.as_str(), prefix) {
                ("ReplacePrefixMatch", true) => {
                    let to = p.replace_prefix_match.clone().unwrap_or_else(|| "/".into());
                    r.rewrite = Some(Rewrite { prefix: to });
                }
                (t, _) => return Err(format!("{at}.type: {t:?} is supported only as ReplacePrefixMatch on a PathPrefix match")),
            }
        }
        r.request_headers = self.request_headers.clone();
        if let Some(h) = &self.host {
            r.request_headers.set.insert("host".into(), h.clone());
        }
        r.response_headers = self.response_headers.clone();
        r.mirror = self.mirror.clone();
        Ok(())
    }
}

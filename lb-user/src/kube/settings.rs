//! Global settings from a ConfigMap (`--configmap NS/NAME`, default `lb-system/lb-config`): its
//! `lb.yaml` key is the base config (listeners, xdp, metrics, admin...) in place of `--config`.
//!
//! While the ConfigMap exists with that key, the file is not used; without it (or once it is
//! deleted) the file is. A ConfigMap whose `lb.yaml` does not parse or validate keeps the last
//! good base (the file before any good one) and is listed in `rejected` with the field named.

use super::ObjectError;
use crate::config::{self, Config};
use k8s_openapi::api::core::v1::ConfigMap;
use std::sync::{Mutex, MutexGuard};

/// The ConfigMap key holding the config document (as deploy/30-configmap.yaml writes it).
pub const CONFIG_KEY: &str = "lb.yaml";

/// Where the settings ConfigMap is when `--configmap` is not given.
pub const DEFAULT_CONFIG_MAP: (&str, &str) = ("lb-system", "lb-config");

/// `NS/NAME` → (namespace, name); both parts non-empty.
pub fn parse_ref(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// The last good base config taken from the ConfigMap (its text, to skip re-parsing it).
#[derive(Debug, Default)]
pub struct Settings {
    last: Mutex<Option<(String, Config)>>,
}

impl Settings {
    fn last(&self) -> MutexGuard<'_, Option<(String, Config)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base to merge Kubernetes objects into: `cm`'s `lb.yaml` when it is valid; the last
    /// good one when it is not (with a rejection naming the field, `file` if there was none);
    /// `file` when there is no ConfigMap or it has no `lb.yaml`.
    pub fn base(
        &self,
        file: &Config,
        cm: Option<&ConfigMap>,
        rejected: &mut Vec<ObjectError>,
    ) -> Config {
        let text = cm.and_then(|c| c.data.as_ref()?.get(CONFIG_KEY));
        let (Some(cm), Some(text)) = (cm, text) else {
            *self.last() = None;
            return file.clone();
        };
        let mut last = self.last();
        if let Some((t, cfg)) = last.as_ref() {
            if t == text {
                return cfg.clone();
            }
        }
        match config::parse(text) {
            Ok(cfg) => {
                *last = Some((text.clone(), cfg.clone()));
                cfg
            }
            Err(errs) => {
                let fields: Vec<String> = errs
                    .0
                    .iter()
                    .map(|e| format!("{CONFIG_KEY} {}: {}", field(&e.path), e.message))
                    .collect();
                let kept = if last.is_some() {
                    "keeping its last good version"
                } else {
                    "using the --config file"
                };
                rejected.push(ObjectError {
                    kind: "ConfigMap".into(),
                    namespace: cm.metadata.namespace.clone().unwrap_or_default(),
                    name: cm.metadata.name.clone().unwrap_or_default(),
                    message: format!("{} ({kept})", fields.join("; ")),
                });
                last.as_ref()
                    .map_or_else(|| file.clone(), |(_, c)| c.clone())
            }
        }
    }
}

fn field(path: &str) -> &str {
    if path.is_empty() {
        "(document)"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(text: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("lb-system".into()),
                name: Some("lb-config".into()),
                ..Default::default()
            },
            data: text.map(|t| [(CONFIG_KEY.to_string(), t.to_string())].into()),
            ..Default::default()
        }
    }

    fn listener(c: &Config) -> String {
        c.listeners[0].address.to_string()
    }

    #[test]
    fn configmap_replaces_the_file_and_a_bad_one_keeps_the_last_good() {
        let file = config::parse("listeners: [{name: http, address: \"127.0.0.1:1\"}]\n").unwrap();
        let s = Settings::default();
        let mut rejected = Vec::new();
        assert_eq!(listener(&s.base(&file, None, &mut rejected)), "127.0.0.1:1");
        assert_eq!(
            listener(&s.base(&file, Some(&cm(None)), &mut rejected)),
            "127.0.0.1:1",
            "a ConfigMap without lb.yaml leaves the file in force"
        );
        let good = cm(Some("listeners: [{name: web, address: \"127.0.0.1:2\"}]\n"));
        assert_eq!(
            listener(&s.base(&file, Some(&good), &mut rejected)),
            "127.0.0.1:2"
        );
        assert!(rejected.is_empty(), "{rejected:?}");

        let bad = cm(Some("listeners: [{name: web, address: \"nowhere\"}]\n"));
        assert_eq!(
            listener(&s.base(&file, Some(&bad), &mut rejected)),
            "127.0.0.1:2"
        );
        assert_eq!(rejected.len(), 1);
        let r = &rejected[0];
        assert_eq!(
            (r.kind.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("ConfigMap", "lb-system", "lb-config")
        );
        assert!(
            r.message.starts_with("lb.yaml listeners[0].address: "),
            "{}",
            r.message
        );
        assert!(
            r.message.ends_with("(keeping its last good version)"),
            "{}",
            r.message
        );

        // Deleted: the file again, and nothing to keep for a later bad one.
        assert_eq!(listener(&s.base(&file, None, &mut rejected)), "127.0.0.1:1");
        rejected.clear();
        assert_eq!(
            listener(&s.base(&file, Some(&bad), &mut rejected)),
            "127.0.0.1:1"
        );
        assert!(
            rejected[0].message.ends_with("(using the --config file)"),
            "{rejected:?}"
        );
    }

    #[test]
    fn configmap_references_parse() {
        assert_eq!(
            parse_ref("lb-system/lb-config"),
            Ok(("lb-system".into(), "lb-config".into()))
        );
        for bad in ["lb-config", "/x", "x/", "a/b/c"] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }
}

//! The Kubernetes source for `lb run --kube`: the API client, and the config to serve = the base
//! file (listeners, admin, defaults, routes of its own) plus what the Ingress mapping gives.

use super::settings::Settings;
use super::{ObjectError, Objects, Options};
use crate::config::{self, Config, ConfigErrors};
use crate::source::{self, TlsMaterials};
use crate::tls;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How `lb run` reaches Kubernetes and what it takes from it.
#[derive(Debug, Clone, Default)]
pub struct KubeRun {
    /// A kubeconfig file; default: in-cluster config (or `$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    pub options: Options,
    /// Where merges hand the Gateway API status to the status writer.
    pub status: super::status::Publisher,
    /// The settings ConfigMap's last good base config.
    pub settings: std::sync::Arc<Settings>,
}

/// A client for the API server `kubeconfig` names, or the inferred one.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// What one merge produced.
pub struct Merged {
    pub config: Config,
    pub tls: TlsMaterials,
    /// Objects (or parts) the mapping left out, and Secrets whose certificate did not load.
    pub rejected: Vec<ObjectError>,
    /// The Gateway API status this config implies (for the status writer).
    pub status: super::gateway::status::Status,
    /// Where the mapped clusters' endpoints come from (the endpoint fast path).
    pub sources: super::fastpath::Sources,
}

/// `base` (read from `base_path`) plus the routes and clusters mapped from `objs`, after the base
/// file's own (on equal rank a base route wins: it comes first). Certificates from TLS Secrets
/// are served on every TLS listener after the file's. The whole is validated like a file.
pub fn merge(
    base: &Config,
    base_path: &Path,
    objs: &Objects,
    opts: &Options,
) -> Result<Merged, ConfigErrors> {
    merge_with(&Settings::default(), base, base_path, objs, opts)
}

/// [`merge`] with the settings ConfigMap in force: its `lb.yaml` (when valid, else the last good
/// one `settings` keeps) replaces `base`. L4 services from Services are added after the file's.
pub fn merge_with(
    settings: &Settings,
    base: &Config,
    base_path: &Path,
    objs: &Objects,
    opts: &Options,
) -> Result<Merged, ConfigErrors> {
    let mut cm_rejected = Vec::new();
    let base = &settings.base(base, objs.config_map.as_ref(), &mut cm_rejected);
    let plain: Vec<String> = (base.listeners.iter())
        .filter(|l| l.tls.is_none())
        .map(|l| l.name.clone())
        .collect();
    let mapped = super::to_config_with(objs, opts, &plain);
    let mut rejected = cm_rejected;
    rejected.extend(mapped.rejected);
    let mut sources = mapped.sources;
    let mut cfg = base.clone();
    cfg.routes.extend(mapped.routes.into_iter().map(Arc::new));
    cfg.clusters
        .extend(mapped.clusters.into_iter().map(Arc::new));
    // Gateway API routes after the Ingress ones; a Service port both use shares one cluster.
    let gw = super::gateway::map(objs, opts, &base.listeners);
    rejected.extend(gw.rejected);
    sources.extend(gw.sources);
    cfg.routes.extend(gw.routes.into_iter().map(Arc::new));
    for c in gw.clusters {
        if !cfg.clusters.iter().any(|x| x.name == c.name) {
            cfg.clusters.push(Arc::new(c));
        }
    }
    let l4 = super::services::to_l4(objs, opts, base);
    rejected.extend(l4.rejected);
    sources.opaque.extend(l4.services_read);
    cfg.l4_services.extend(l4.services);
    cfg.clusters.extend(l4.clusters.into_iter().map(Arc::new));
    config::check(&cfg)?;
    let mut certs = Vec::new();
    for t in mapped.tls.iter().chain(&gw.tls) {
        match tls::load_cert_pem(&format!("secret {}", t.secret), &t.cert_pem, &t.key_pem) {
            Ok(c) => certs.push(c),
            Err(e) => {
                let (namespace, name) = t.secret.split_once('/').unwrap_or(("", &t.secret));
                rejected.push(ObjectError {
                    kind: "Secret".into(),
                    namespace: namespace.into(),
                    name: name.into(),
                    message: e.to_string(),
                });
            }
        }
    }
    let tls = source::load_tls_with(&cfg, base_path, &certs)?;
    Ok(Merged {
        config: cfg,
        tls,
        rejected,
        status: gw.status,
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(name: &str, cert: &[u8], key: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    ("tls.crt".to_string(), ByteString(cert.to_vec())),
                    ("tls.key".to_string(), ByteString(key.to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        }
    }

    fn objects(secrets: Vec<Secret>) -> Objects {
        let class = json!({"metadata": {"name": "lb"}, "spec": {"controller": super::super::DEFAULT_CONTROLLER}});
        let ingress = json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {"ingressClassName": "lb",
                     "tls": [{"hosts": ["shop.test"], "secretName": "good"},
                             {"hosts": ["bad.test"], "secretName": "garbage"}],
                     "rules": [{"host": "shop.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        });
        let service = json!({"metadata": {"namespace": "shop", "name": "web"},
                             "spec": {"ports": [{"port": 80}]}});
        Objects {
            ingress_classes: vec![serde_json::from_value(class).unwrap()].into(),
            ingresses: vec![serde_json::from_value(ingress).unwrap()].into(),
            services: vec![serde_json::from_value(service).unwrap()].into(),
            endpoint_slices: Default::default(),
            secrets: secrets.into(),
            ..Objects::default()
        }
    }

    #[test]
    fn secrets_become_certificates_and_bad_ones_are_rejected_alone() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["shop.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let loaded =
            tls::load_cert_pem("secret shop/good", cert_pem.as_bytes(), key_pem.as_bytes())
                .unwrap();
        assert_eq!(loaded.names, ["shop.test"]);
        let err = tls::load_cert_pem("secret shop/garbage", b"not pem", key_pem.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret shop/garbage tls.crt"), "{err}");

        let base = config::parse("listeners: [{name: http, address: \"127.0.0.1:1\"}]\n").unwrap();
        let objs = objects(vec![
            secret("good", cert_pem.as_bytes(), key_pem.as_bytes()),
            secret("garbage", b"not pem", b"nor this"),
        ]);
        let m = merge(&base, Path::new("lb.yaml"), &objs, &Options::default()).unwrap();
        assert_eq!(m.config.routes.len(), 1);
        assert_eq!(m.config.clusters.len(), 1);
        let rejected: Vec<(&str, &str)> = m
            .rejected
            .iter()
            .map(|r| (r.kind.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(rejected, [("Secret", "garbage")], "{:?}", m.rejected);
    }

    #[test]
    fn a_merge_that_does_not_validate_keeps_nothing() {
        // The base file already has a cluster with the mapped cluster's name.
        let base = config::parse(
            "clusters: [{name: \"shop/web:80\", endpoints: [{address: \"127.0.0.1:1\"}]}]\n",
        )
        .unwrap();
        let errs = merge(
            &base,
            Path::new("lb.yaml"),
            &objects(Vec::new()),
            &Options::default(),
        )
        .err()
        .expect("duplicate cluster names are refused");
        assert!(errs.to_string().contains("shop/web:80"), "{errs}");
    }
}

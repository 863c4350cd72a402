//! The Kubernetes source for `lb run --kube`: the API client, and the config to serve = the base
//! file (listeners, admin, defaults, routes of its own) plus what the Ingress mapping gives.

use super::{ObjectError, Objects, Options};
use crate::config::{self, Config, ConfigErrors};
use crate::source::{self, TlsMaterials};
use crate::tls;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// How `lb run` reaches Kubernetes and what it takes from it.
#[derive(Debug, Clone, Default)]
pub struct KubeRun {
    /// A kubeconfig file; default: in-cluster config (or `$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    pub options: Options,
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
    let mapped = super::to_config(objs, opts);
    let mut rejected = mapped.rejected;
    let mut cfg = base.clone();
    cfg.routes.extend(mapped.routes);
    cfg.clusters.extend(mapped.clusters);
    config::check(&cfg)?;
    let mut certs = Vec::new();
    for t in &mapped.tls {
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
    })
}

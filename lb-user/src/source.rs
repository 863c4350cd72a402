//! The file source's side inputs: TLS certificates and keys named by the config, loaded and
//! checked (errors name the config field), and the list of files whose change means a reload.

use crate::config::{Config, ConfigError, ConfigErrors, DefaultCert};
use crate::tls::{self, CertFiles};
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::TlsConnector;

/// TLS material for one config: listener name -> server config, cluster name -> connector.
#[derive(Clone, Default)]
pub struct TlsMaterials {
    pub listeners: HashMap<String, Arc<rustls::ServerConfig>>,
    /// The connector and the configured server name (None: each endpoint's address).
    pub clusters: HashMap<String, (TlsConnector, Option<ServerName<'static>>)>,
}

impl std::fmt::Debug for TlsMaterials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterials")
            .field("listeners", &self.listeners.keys().collect::<Vec<_>>())
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A path from the config: relative paths are relative to the config file's directory.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads every certificate, key and CA the config (read from `config_path`) names.
pub fn load_tls(cfg: &Config, config_path: &Path) -> Result<TlsMaterials, ConfigErrors> {
    load_tls_with(cfg, config_path, &[])
}

/// [`load_tls`], and every TLS listener also serves `extra` (certificates from another source,
/// e.g. Kubernetes Secrets) after its own: on a name both claim, the file's certificate wins,
/// and the default certificate stays the file's.
pub fn load_tls_with(
    cfg: &Config,
    config_path: &Path,
    extra: &[tls::LoadedCert],
) -> Result<TlsMaterials, ConfigErrors> {
    let at = |p: &PathBuf| resolve(config_path, p);
    let mut out = TlsMaterials::default();
    let mut errs = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let Some(t) = &l.tls else { continue };
        let mut certs = Vec::new();
        for (j, c) in t.certificates.iter().enumerate() {
            match tls::load_cert(&CertFiles {
                cert: at(&c.cert),
                key: at(&c.key),
            }) {
                Ok(loaded) => certs.push(loaded),
                Err(e) => errs.push(ConfigError::new(
                    format!("listeners[{i}].tls.certificates[{j}]"),
                    e.to_string(),
                )),
            }
        }
        if certs.len() != t.certificates.len() {
            continue;
        }
        certs.extend(extra.iter().cloned());
        let default = match t.default_certificate {
            DefaultCert::First => Some(0),
            DefaultCert::Index(k) => Some(k),
            DefaultCert::None => None,
        };
        let alpn: &[&[u8]] = if l.http2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        match tls::server_config(certs, default, alpn) {
            Ok(sc) => {
                out.listeners.insert(l.name.clone(), sc);
            }
            Err(e) => errs.push(ConfigError::new(
                format!("listeners[{i}].tls"),
                e.to_string(),
            )),
        }
    }
    for (i, c) in cfg.clusters.iter().enumerate() {
        let Some(t) = &c.tls else { continue };
        let backend = tls::BackendTls {
            ca: t.ca.as_ref().map(at),
            client_cert: match (&t.client_cert, &t.client_key) {
                (Some(cert), Some(key)) => Some(CertFiles {
                    cert: at(cert),
                    key: at(key),
                }),
                _ => None,
            },
            server_name: t.server_name.clone(),
            insecure_skip_verify: t.insecure_skip_verify,
        };
        let alpn: &[&[u8]] = match c.protocol {
            crate::config::Protocol::Http2 => &[b"h2"],
            crate::config::Protocol::Http1 => &[b"http/1.1"],
        };
        let name = match t.server_name.as_deref().map(tls::server_name).transpose() {
            Ok(n) => n,
            Err(e) => {
                errs.push(ConfigError::new(
                    format!("clusters[{i}].tls.server_name"),
                    e.to_string(),
                ));
                continue;
            }
        };
        match tls::client_config(&backend, alpn) {
            Ok(cc) => {
                out.clusters
                    .insert(c.name.clone(), (TlsConnector::from(cc), name));
            }
            Err(e) => errs.push(ConfigError::new(
                format!("clusters[{i}].tls"),
                e.to_string(),
            )),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// The runtime API token from `admin.token_file` (surrounding whitespace trimmed).
pub fn load_token(cfg: &Config, config_path: &Path) -> Result<Option<Arc<str>>, ConfigErrors> {
    let Some(p) = &cfg.admin.token_file else {
        return Ok(None);
    };
    let err = |m: String| ConfigErrors(vec![ConfigError::new("admin.token_file", m)]);
    let path = resolve(config_path, p);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(err(format!(
            "{}: the token must be at least 16 printable characters without spaces",
            path.display()
        )));
    }
    Ok(Some(token.into()))
}

/// The config file and every file it names, with what they looked like (a reload is due when
/// any of them changes; `stat` follows symlinks, so ConfigMap swaps are seen too).
pub fn fingerprint(
    config: &Path,
    cfg: Option<&Config>,
) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    let mut files = vec![PathBuf::from(config.file_name().unwrap_or_default())];
    if let Some(cfg) = cfg {
        for l in &cfg.listeners {
            for c in l.tls.iter().flat_map(|t| &t.certificates) {
                files.push(c.cert.clone());
                files.push(c.key.clone());
            }
        }
        files.extend(cfg.admin.token_file.iter().cloned());
        for c in &cfg.clusters {
            if let Some(t) = &c.tls {
                files.extend(
                    t.ca.iter()
                        .chain(&t.client_cert)
                        .chain(&t.client_key)
                        .cloned(),
                );
            }
        }
    }
    files
        .into_iter()
        .map(|p| resolve(config, &p))
        .map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

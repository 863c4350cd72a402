//! TLS for listeners and backends — load PEM certificates, choose one by SNI
//! (exact, then wildcard, then default), build rustls server and client configs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

mod backend;
pub use backend::{client_config, server_name, BackendTls};

/// Everything that can go wrong loading certificates or building configs.
/// Messages always name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate {}: {source}", path.display())]
    ReadCert { path: PathBuf, source: pem::Error },
    #[error("no certificate in {}", .0.display())]
    NoCert(PathBuf),
    #[error("parsing certificate {}: {msg}", path.display())]
    ParseCert { path: PathBuf, msg: String },
    #[error("reading private key {}: {source}", path.display())]
    ReadKey { path: PathBuf, source: pem::Error },
    #[error("no private key in {}", .0.display())]
    NoKey(PathBuf),
    #[error("unusable private key {}: {source}", path.display())]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("bad CA file {}: {msg}", path.display())]
    BadCa { path: PathBuf, msg: String },
    #[error("backend TLS needs a ca file or insecure_skip_verify")]
    NoCa,
    #[error("invalid TLS server name {name:?}: {msg}")]
    ServerName { name: String, msg: String },
    #[error("no certificates configured for TLS listener")]
    NoCerts,
    #[error("default certificate index {index} out of range ({len} certificates)")]
    BadDefault { index: usize, len: usize },
    #[error("building TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Paths of a PEM certificate chain (leaf first) and its private key.
/// Both may be the same file (HAProxy-style combined PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One loaded certificate: the rustls CertifiedKey plus the DNS names it serves
/// (lowercase; "*.example.com" for wildcards).
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
    /// Expiry of the leaf certificate, unix seconds.
    pub not_after: Option<i64>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Lowercase and drop one trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |source| TlsError::ReadCert {
        path: path.to_path_buf(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(path.to_path_buf()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        source => TlsError::ReadKey {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// DNS names (SAN dNSName entries, else subject CNs) and notAfter of a leaf.
fn cert_names(path: &Path, der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), TlsError> {
    let bad = |msg: String| TlsError::ParseCert {
        path: path.to_path_buf(),
        msg,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?;
    if let Some(san) = san {
        for gn in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = gn {
                names.push(normalize(n));
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(n) = cn.as_str() {
                names.push(normalize(n));
            }
        }
    }
    names.dedup();
    Ok((names, cert.validity().not_after.timestamp()))
}

/// Load a PEM chain (order preserved, leaf first) and its key, checking that
/// the key belongs to the leaf certificate.
pub fn load_cert(files: &CertFiles) -> Result<LoadedCert, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key_der = read_key(&files.key)?;
    certified(files, chain, key_der)
}

/// Like [`load_cert`], from PEM bytes held in memory (a Kubernetes TLS Secret); `origin` names
/// them in errors (e.g. `secret shop/web-tls`).
pub fn load_cert_pem(
    origin: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<LoadedCert, TlsError> {
    let files = CertFiles {
        cert: PathBuf::from(format!("{origin} tls.crt")),
        key: PathBuf::from(format!("{origin} tls.key")),
    };
    let err = |source| TlsError::ReadCert {
        path: files.cert.clone(),
        source,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(files.cert.clone()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey(files.key.clone()),
        source => TlsError::ReadKey {
            path: files.key.clone(),
            source,
        },
    })?;
    certified(&files, chain, key_der)
}

fn certified(
    files: &CertFiles,
    chain: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
) -> Result<LoadedCert, TlsError> {
    let (names, not_after) = cert_names(&files.cert, &chain[0])?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadKey {
            path: files.key.clone(),
            source,
        })?;
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            tracing::warn!(key = %files.key.display(), "cannot check key against certificate");
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::ParseCert {
                path: files.cert.clone(),
                msg: e.to_string(),
            })
        }
    }
    if names.is_empty() {
        tracing::warn!(cert = %files.cert.display(), "certificate has no DNS names; usable only as default");
    }
    Ok(LoadedCert {
        key: Arc::new(key),
        names,
        not_after: Some(not_after),
    })
}

/// SNI certificate selection: exact name → wildcard → default.
///
/// A wildcard "*.b.example.com" matches exactly one extra label
/// ("a.b.example.com", not "x.a.b.example.com" nor "b.example.com").
/// Matching is case-insensitive and ignores a trailing dot. If two
/// certificates claim the same name, the first one in the list wins.
/// A client without SNI gets the default; no match and no default → no
/// certificate, so the handshake fails.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// Keyed by the suffix after "*.".
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

impl SniResolver {
    /// `default` is an index into `certs`; an out-of-range index means no default.
    pub fn new(certs: Vec<LoadedCert>, default: Option<usize>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for name in &c.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix),
                    None => (&mut exact, name.as_str()),
                };
                if key.is_empty() || key.contains('*') {
                    tracing::warn!(name = %name, "ignoring unsupported certificate name");
                    continue;
                }
                if let Some(&first) = map.get(key) {
                    tracing::debug!(name = %name, first, ignored = i, "duplicate certificate name; first wins");
                    continue;
                }
                map.insert(key.to_string(), i);
            }
        }
        let default = default.filter(|&d| d < certs.len());
        let certs = certs.into_iter().map(|c| c.key).collect();
        SniResolver {
            certs,
            exact,
            wildcard,
            default,
        }
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Index of the certificate chosen for `sni` (None = missing SNI).
    pub fn select(&self, sni: Option<&str>) -> Option<usize> {
        let Some(sni) = sni else { return self.default };
        let name = normalize(sni);
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        if let Some((_, suffix)) = name.split_once('.') {
            if let Some(&i) = self.wildcard.get(suffix) {
                return Some(i);
            }
        }
        self.default
    }

    /// The certificate chosen for `sni`.
    pub fn resolve_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.select(sni).map(|i| self.certs[i].clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.resolve_name(hello.server_name());
        if picked.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "no certificate for SNI");
        }
        picked
    }
}

/// Listener config: TLS 1.2/1.3, SNI selection over `certs`, ALPN in server preference order.
pub fn server_config(
    certs: Vec<LoadedCert>,
    default: Option<usize>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::NoCerts);
    }
    if let Some(index) = default.filter(|&d| d >= certs.len()) {
        return Err(TlsError::BadDefault {
            index,
            len: certs.len(),
        });
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certs, default)));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests;

//! Throwaway PKI for TLS tests: a CA and leaf certificates (PEM files in a temp dir) for any
//! set of DNS names, plus client certificates for mutual TLS.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    /// PEM of the CA certificate (also written to `ca.pem`).
    pub pem_path: PathBuf,
}

/// A leaf certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA writing its files into `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem())?;
        Ok(Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            pem_path,
        })
    }

    /// A leaf for `names` (DNS names or IPs; `*.x` wildcards allowed) saved as `<file>.pem/.key`.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Result<Leaf> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem())?;
        std::fs::write(&leaf.key, key.serialize_pem())?;
        Ok(leaf)
    }
}

/// A rustls client config trusting `ca` (PEM file), offering `alpn`, optionally with a client cert.
pub fn client_config(
    ca: &Path,
    alpn: &[&[u8]],
    client: Option<&Leaf>,
) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    let tls = lb_user::tls::BackendTls {
        ca: Some(ca.to_path_buf()),
        client_cert: client.map(|l| lb_user::tls::CertFiles {
            cert: l.cert.clone(),
            key: l.key.clone(),
        }),
        server_name: None,
        insecure_skip_verify: false,
    };
    Ok(lb_user::tls::client_config(&tls, alpn)?)
}

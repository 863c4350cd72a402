//! TLS to backends (the client side): trusted CAs or skip-verify (signatures still checked), an
//! optional client certificate, and the name used for SNI and verification.

use super::{load_cert, provider, read_chain, CertFiles, TlsError, VERSIONS};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings for connecting to a backend server.
#[derive(Debug, Clone, Default)]
pub struct BackendTls {
    /// PEM file of trusted CA certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate presented to the backend.
    pub client_cert: Option<CertFiles>,
    /// SNI / verified name; callers fall back to the backend host.
    pub server_name: Option<String>,
    /// Accept any server certificate (signatures are still checked).
    pub insecure_skip_verify: bool,
}

/// Backend (client side) config: TLS 1.2/1.3, CA-file or skip-verify, optional client cert.
pub fn client_config(
    cfg: &BackendTls,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let builder = if cfg.insecure_skip_verify {
        if let Some(ca) = &cfg.ca {
            tracing::warn!(ca = %ca.display(), "insecure_skip_verify set; ca file ignored");
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
    } else {
        let ca = cfg.ca.as_deref().ok_or(TlsError::NoCa)?;
        builder.with_root_certificates(load_roots(ca)?)
    };
    let mut out = match &cfg.client_cert {
        Some(files) => {
            let cert = load_cert(files)?;
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(cert.key)))
        }
        None => builder.with_no_client_auth(),
    };
    out.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(out))
}

pub(super) fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let bad = |msg: String| TlsError::BadCa {
        path: path.to_path_buf(),
        msg,
    };
    let certs = read_chain(path).map_err(|e| match e {
        TlsError::ReadCert { source, .. } => bad(source.to_string()),
        _ => bad("no certificate found".into()),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| bad(format!("certificate #{}: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// Parse a backend name (DNS name or IP address) for SNI and verification.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|e| TlsError::ServerName {
        name: name.to_string(),
        msg: e.to_string(),
    })
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate but still verifies handshake signatures.
struct AcceptAnyCert(Arc<CryptoProvider>);

impl fmt::Debug for AcceptAnyCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptAnyCert")
    }
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! The OTLP exporter's client for `https://` collectors: one TLS connection per export request
//! (rustls with the ring provider, as the rest of lb), trusting the system CA bundle.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Where the trusted CAs come from: `$SSL_CERT_FILE`, else Debian's bundle (the image installs
/// `ca-certificates`).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Collector answers are small; this bounds a misbehaving one.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub(super) struct HttpsClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    pub fn new(timeout: Duration) -> anyhow::Result<HttpsClient> {
        let ca = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SYSTEM_BUNDLE));
        HttpsClient::with_ca(ca, timeout)
    }

    pub fn with_ca(ca: PathBuf, timeout: Duration) -> anyhow::Result<HttpsClient> {
        let cfg = crate::tls::client_config(
            &crate::tls::BackendTls {
                ca: Some(ca.clone()),
                ..Default::default()
            },
            &[b"http/1.1"],
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "tracing.otlp.endpoint: https needs trusted CAs from {}: {e}",
                ca.display()
            )
        })?;
        Ok(HttpsClient {
            tls: tokio_rustls::TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&cfg)),
            timeout,
        })
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (mut parts, body) = request.into_parts();
        // An IPv6 literal comes bracketed; connect and SNI take it bare.
        let host = parts.uri.host().ok_or("the URL has no host")?.to_string();
        let port = parts.uri.port_u16().unwrap_or(443);
        let authority = parts.uri.authority().ok_or("the URL has no host")?.clone();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        let tls = self.tls.connect(name, tcp).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        let conn = tokio::spawn(conn);
        // Origin-form request line plus Host, as a client connection (not a proxy) sends it.
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?;
        parts
            .headers
            .insert(http::header::HOST, authority.as_str().parse()?);
        let result = async {
            let response = sender
                .send_request(Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?;
            Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
        }
        .await;
        conn.abort();
        result
    }
}

// `HttpClient` is declared with `async_trait`; this is the signature it expands to.
impl HttpClient for HttpsClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.send(request))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
        })
    }
}

//! One error type for the request path that says whose fault it was (downstream client,
//! upstream endpoint, or us) and which status the client gets, as HAProxy would answer.

use hyper::StatusCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route for this host")]
    NoRoute,
    #[error("no endpoint available in cluster {0}")]
    NoEndpoint(String),
    #[error("cannot connect to {endpoint}: {source}")]
    UpstreamConnect {
        endpoint: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{endpoint} sent no response headers within {timeout:?}")]
    UpstreamTimeout { endpoint: String, timeout: Duration },
    #[error("{endpoint} failed: {source}")]
    Upstream {
        endpoint: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint(_) | ProxyError::UpstreamConnect { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_) | ProxyError::NoRoute => Side::Downstream,
            ProxyError::NoEndpoint(_)
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::Upstream { .. } => Side::Upstream,
            ProxyError::Internal(_) => Side::Internal,
        }
    }
}

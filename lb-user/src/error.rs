//! One error type for the request path that says whose fault it was (downstream client,
//! upstream endpoint, or us), which status the client gets, and HAProxy's termination state.

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
    #[error("request body: {0}")]
    BadBody(String),
    #[error("client {0} is not allowed on this route")]
    Forbidden(std::net::IpAddr),
    #[error("no route for this request")]
    NoRoute,
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("rate limit exceeded")]
    RateLimited,
    #[error("no endpoint available in cluster {0}")]
    NoEndpoint(String),
    #[error("queue for {0} is full")]
    QueueFull(String),
    #[error("waited {1:?} in the queue for {0}")]
    QueueTimeout(String, Duration),
    #[error("cannot connect to {endpoint}: {message}")]
    UpstreamConnect { endpoint: String, message: String },
    #[error("{endpoint} sent no response headers within {timeout:?}")]
    UpstreamTimeout { endpoint: String, timeout: Duration },
    #[error("request not answered within {0:?}")]
    RequestTimeout(Duration),
    #[error("{endpoint} failed: {message}")]
    Upstream { endpoint: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoEndpoint(_)
            | ProxyError::QueueFull(_)
            | ProxyError::QueueTimeout(..)
            | ProxyError::UpstreamConnect { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamTimeout { .. } | ProxyError::RequestTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BadBody(_)
            | ProxyError::Forbidden(_)
            | ProxyError::NoRoute
            | ProxyError::TooLarge(_)
            | ProxyError::RateLimited => Side::Downstream,
            ProxyError::NoEndpoint(_)
            | ProxyError::QueueFull(_)
            | ProxyError::QueueTimeout(..)
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::RequestTimeout(_)
            | ProxyError::Upstream { .. } => Side::Upstream,
            ProxyError::Internal(_) => Side::Internal,
        }
    }

    /// HAProxy-style termination state: who ended the exchange, and at which stage.
    pub fn termination(&self) -> [u8; 2] {
        match self {
            ProxyError::BadRequest(_) | ProxyError::NoRoute => *b"PR",
            ProxyError::BadBody(_) => *b"CD",
            ProxyError::Forbidden(_) | ProxyError::RateLimited | ProxyError::TooLarge(_) => *b"PR",
            ProxyError::NoEndpoint(_) => *b"SC",
            ProxyError::QueueFull(_) => *b"RQ",
            ProxyError::QueueTimeout(..) => *b"sQ",
            ProxyError::UpstreamConnect { .. } => *b"SC",
            ProxyError::UpstreamTimeout { .. } | ProxyError::RequestTimeout(_) => *b"sH",
            ProxyError::Upstream { .. } => *b"SH",
            ProxyError::Internal(_) => *b"IR",
        }
    }
}

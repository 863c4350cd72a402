//! Bodies in both directions, streamed: the request body to the upstream (with a size limit and
//! byte count) and the response body to the client, which releases the request's resources at its end.

use super::exchange::Exchange;
use super::h1body::H1Body;
use super::upstream::Conn;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What happened to a streamed request body, seen from the handler after the upstream failed.
#[derive(Debug, Default)]
pub struct ReqStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
    pub client_failed: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// A request body as the listener hands it over: hyper's, or none (a request our own HTTP/1.1
/// server read without a body).
pub enum ReqBody {
    Hyper(Incoming),
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pub enum UpBody {
    /// Replayable (retries): empty or fully buffered.
    Full(Option<Bytes>),
    Stream {
        inner: ReqBody,
        stats: Arc<ReqStats>,
        /// 0 = no limit.
        limit: u64,
    },
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Stream {
                inner,
                stats,
                limit,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        let total = stats.bytes.fetch_add(d.len() as u64, Ordering::Relaxed)
                            + d.len() as u64;
                        if *limit > 0 && total > *limit {
                            stats.too_large.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(TooLarge(*limit)))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    stats.client_failed.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                other => other.map_err(|e| Box::new(e) as BoxError),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Full(b) => b.is_none(),
            UpBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// A response body from upstream: hyper's client (TLS, HTTP/2, upgrades) or our own HTTP/1.1.
pub enum RespBody {
    Hyper(Incoming),
    Own(H1Body),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RespBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            RespBody::Own(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Hyper(b) => b.is_end_stream(),
            RespBody::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Hyper(b) => b.size_hint(),
            RespBody::Own(b) => b.size_hint(),
        }
    }
}

/// Released when the response has been sent (or abandoned): in-flight counts, the endpoint
/// slot, the pooled connection (only after a complete response), and the access log line.
pub struct Finish {
    pub exchange: Exchange,
    pub conn: Option<(Conn, Arc<super::table::Endpoint>)>,
}

pub enum DownBody {
    Local(Option<Bytes>),
    Proxied {
        inner: RespBody,
        finish: Option<Box<Finish>>,
        bytes: u64,
    },
}

impl DownBody {
    pub fn local(b: impl Into<Bytes>) -> Self {
        DownBody::Local(Some(b.into()))
    }

    pub fn empty() -> Self {
        DownBody::Local(None)
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            DownBody::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            DownBody::Proxied {
                inner,
                finish,
                bytes,
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            *bytes += d.len() as u64;
                        }
                        if inner.is_end_stream() {
                            complete(finish, *bytes, None);
                        }
                    }
                    Poll::Ready(None) => complete(finish, *bytes, None),
                    Poll::Ready(Some(Err(e))) => {
                        if let Some(f) = finish.as_mut() {
                            f.exchange.set_error(
                                crate::error::Side::Upstream,
                                format!("response body: {e}"),
                            );
                        }
                        complete(finish, *bytes, Some(*b"SD"));
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Local(b) => b.is_none(),
            DownBody::Proxied { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            DownBody::Proxied { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for DownBody {
    fn drop(&mut self) {
        if let DownBody::Proxied {
            inner,
            finish,
            bytes,
        } = self
        {
            // A body with nothing to send (HEAD, 204, 304, length 0) is never polled: that is
            // a normal end, and the connection goes back to the pool. Anything else dropped
            // early: the client went away.
            let termination = (!inner.is_end_stream()).then_some(*b"CD");
            complete(finish, *bytes, termination);
        }
    }
}

/// `termination` None = the body ended normally: the connection may be pooled again.
fn complete(finish: &mut Option<Box<Finish>>, bytes: u64, termination: Option<[u8; 2]>) {
    let Some(f) = finish.take() else { return };
    let Finish { exchange, conn } = *f;
    if let (Some((conn, endpoint)), None) = (conn, termination) {
        endpoint.pool.checkin(conn);
    }
    exchange.finish(bytes, termination.unwrap_or(*b"--"));
}

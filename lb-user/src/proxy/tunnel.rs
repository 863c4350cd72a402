//! Upgraded connections (WebSocket and other HTTP/1.1 Upgrades): once the endpoint answers 101,
//! bytes are copied both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

pub fn spawn(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_up, to_down)) => tracing::debug!(to_up, to_down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended"),
        }
    });
}

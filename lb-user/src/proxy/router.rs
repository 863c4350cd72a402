//! Finds the host a request is for (absolute-form authority, else the Host header), lowercased
//! and without port; a malformed or ambiguous Host is a 400, never a guess.

use hyper::header::HOST;
use hyper::{Request, Version};
use std::borrow::Cow;

/// Why a request's host could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum HostError {
    Missing,
    Multiple,
    Invalid,
}

/// The host to route on; `Ok(None)` for HTTP/1.0 requests without one (default route only).
pub fn request_host<B>(req: &Request<B>) -> Result<Option<Cow<'_, str>>, HostError> {
    if let Some(auth) = req.uri().authority() {
        return normalize(auth.as_str()).map(Some);
    }
    let mut values = req.headers().get_all(HOST).iter();
    let Some(value) = values.next() else {
        return match req.version() {
            Version::HTTP_10 | Version::HTTP_09 => Ok(None),
            _ => Err(HostError::Missing),
        };
    };
    if values.next().is_some() {
        return Err(HostError::Multiple);
    }
    let raw = value.to_str().map_err(|_| HostError::Invalid)?;
    normalize(raw).map(Some)
}

/// The explicit port of the request's authority (absolute URI, else Host), if any.
pub fn request_port<B>(req: &Request<B>) -> Option<u16> {
    if let Some(auth) = req.uri().authority() {
        return auth.port_u16();
    }
    let host = req.headers().get(HOST)?.to_str().ok()?;
    let after = match host.rfind(']') {
        Some(end) => &host[end + 1..],
        None => host,
    };
    after.rsplit_once(':')?.1.parse().ok()
}

/// `Example.COM:8080` -> `example.com`, `[::1]:80` -> `[::1]`.
fn normalize(raw: &str) -> Result<Cow<'_, str>, HostError> {
    let host = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::Invalid)?;
        let rest = &raw[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(port_ok)) {
            return Err(HostError::Invalid);
        }
        &raw[..=end]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port_ok(port) => h,
            Some(_) => return Err(HostError::Invalid),
            None => raw,
        }
    };
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    if !valid {
        return Err(HostError::Invalid);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

fn port_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, hosts: &[&str], uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn host(r: &Request<()>) -> Result<Option<String>, HostError> {
        request_host(r).map(|h| h.map(|h| h.into_owned()))
    }

    #[test]
    fn normalizes() {
        let h = |v: &str| host(&req(Version::HTTP_11, &[v], "/"));
        assert_eq!(h("Example.COM:8080"), Ok(Some("example.com".into())));
        assert_eq!(h("a.example."), Ok(Some("a.example".into())));
        assert_eq!(h("[::1]:80"), Ok(Some("[::1]".into())));
        assert_eq!(h("10.0.0.1"), Ok(Some("10.0.0.1".into())));
    }

    #[test]
    fn rejects_bad_hosts() {
        let h = |v: &str| host(&req(Version::HTTP_11, &[v], "/"));
        for bad in [
            "",
            "a b",
            "a/b",
            "a.example:80x",
            "a.example:",
            "[::1",
            "[::1]x",
            "a@b",
            "a:1:2",
        ] {
            assert_eq!(h(bad), Err(HostError::Invalid), "{bad:?}");
        }
        assert_eq!(
            host(&req(Version::HTTP_11, &[], "/")),
            Err(HostError::Missing)
        );
        assert_eq!(host(&req(Version::HTTP_10, &[], "/")), Ok(None));
        assert_eq!(
            host(&req(Version::HTTP_11, &["a", "b"], "/")),
            Err(HostError::Multiple)
        );
    }

    #[test]
    fn ports() {
        let p = |h: &str| request_port(&req(Version::HTTP_11, &[h], "/"));
        assert_eq!(p("a.example:8080"), Some(8080));
        assert_eq!(p("a.example"), None);
        assert_eq!(p("[::1]:81"), Some(81));
        assert_eq!(p("[::1]"), None);
        assert_eq!(
            request_port(&req(Version::HTTP_11, &["x"], "http://h:82/")),
            Some(82)
        );
    }

    #[test]
    fn absolute_form_wins() {
        let r = req(
            Version::HTTP_11,
            &["ignored.example"],
            "http://Abs.Example:81/x",
        );
        assert_eq!(host(&r), Ok(Some("abs.example".into())));
    }
}

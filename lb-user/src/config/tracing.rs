//! The `tracing` section: W3C trace context on every proxied request (propagated, or created
//! when absent) and optional OTLP/HTTP span export (default off).

use super::scalars::Interval;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Set and continue `traceparent` on proxied requests. `false`: trace headers pass through
    /// untouched and no span is made (nothing to export, so `otlp` must then be unset).
    #[serde(default = "yes")]
    pub propagate: bool,
    /// Share (0-100) of traces we start that are marked sampled; an incoming traceparent's
    /// sampled flag is kept as it is.
    #[serde(default = "hundred")]
    pub sample_percent: f64,
    /// Export one span per sampled request over OTLP/HTTP. Default: no export.
    #[serde(default)]
    pub otlp: Option<Otlp>,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            propagate: true,
            sample_percent: 100.0,
            otlp: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// `service.name` resource attribute.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// Per export request.
    #[serde(default = "export_timeout")]
    pub timeout: Interval,
}

fn yes() -> bool {
    true
}
fn hundred() -> f64 {
    100.0
}
fn service_name() -> String {
    "lb".into()
}
fn export_timeout() -> Interval {
    Interval(Duration::from_secs(5))
}

/// Semantic checks of the section; each error names its field.
pub(super) fn validate(t: &Tracing) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    if !t.propagate && t.otlp.is_some() {
        errs.push(ConfigError::new(
            "tracing.propagate",
            "false makes no spans, so tracing.otlp would export nothing: remove one of them",
        ));
    }
    if !(0.0..=100.0).contains(&t.sample_percent) {
        errs.push(ConfigError::new(
            "tracing.sample_percent",
            format!("{} is not between 0 and 100", t.sample_percent),
        ));
    }
    if let Some(o) = &t.otlp {
        if let Err(e) = endpoint_ok(&o.endpoint) {
            errs.push(ConfigError::new(
                "tracing.otlp.endpoint",
                format!("{:?}: {e}", o.endpoint),
            ));
        }
        if o.service_name.trim().is_empty() {
            errs.push(ConfigError::new(
                "tracing.otlp.service_name",
                "must not be empty",
            ));
        }
    }
    errs
}

/// An absolute http:// or https:// URL with a host (the collector's full traces URL).
fn endpoint_ok(endpoint: &str) -> Result<(), &'static str> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| "not a URL (expected e.g. http://127.0.0.1:4318/v1/traces)")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must start with http:// or https://"),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("the URL has no host"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, has};

    fn with(section: &str) -> Vec<String> {
        errors(&format!("tracing:\n{section}"))
    }

    #[test]
    fn defaults_and_valid_sections() {
        let cfg = super::super::parse("{}").expect("empty config");
        assert_eq!(cfg.tracing, super::Tracing::default());
        assert!(cfg.tracing.otlp.is_none());
        for ok in [
            "  sample_percent: 0",
            "  sample_percent: 12.5",
            "  otlp: {endpoint: \"http://127.0.0.1:4318/v1/traces\"}",
            "  otlp: {endpoint: \"https://collector.example/v1/traces\", service_name: edge, timeout: 250ms}",
        ] {
            assert_eq!(with(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad = |section: &str, field: &str, needle: &str| {
            let errs = with(section);
            assert!(has(&errs, field, needle), "{section}: {errs:?}");
        };
        let range = "between 0 and 100";
        bad("  sample_percent: 101", "tracing.sample_percent", range);
        bad("  sample_percent: -1", "tracing.sample_percent", range);
        bad("  sample_percent: .nan", "tracing.sample_percent", range);
        bad("  sampled: 5", "tracing", "sampled");
        let endpoint = "tracing.otlp.endpoint";
        bad("  otlp: {endpoint: '127.0.0.1:4318'}", endpoint, "http://");
        bad(
            "  otlp: {endpoint: 'ftp://c.example/v1/traces'}",
            endpoint,
            "http://",
        );
        bad("  otlp: {endpoint: '/v1/traces'}", endpoint, "http://");
        bad("  otlp: {endpoint: 'http://'}", endpoint, "");
        bad("  otlp: {endpoint: 'http:// bad'}", endpoint, "not a URL");
        bad("  otlp: {}", "tracing.otlp", "endpoint");
        bad(
            "  otlp: {endpoint: 'http://c', headers: {}}",
            "tracing.otlp",
            "headers",
        );
        let at = "tracing.otlp.service_name";
        bad(
            "  otlp: {endpoint: 'http://c', service_name: ' '}",
            at,
            "empty",
        );
        let at = "tracing.otlp.timeout";
        bad(
            "  otlp: {endpoint: 'http://c', timeout: 0s}",
            at,
            "greater than zero",
        );
        bad(
            "  otlp: {endpoint: 'http://c', timeout: soon}",
            at,
            "duration",
        );
    }
}

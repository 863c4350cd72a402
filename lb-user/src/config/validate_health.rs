//! Semantic checks for health, backups, endpoint names and mirroring: each error names its
//! field, like the rest of validation.

use super::validate_route::token_ok;
use super::{status_range, Cluster, Config, ConfigError};

pub(super) fn endpoints_and_health(errs: &mut Vec<ConfigError>, at: &str, c: &Cluster) {
    let mut names = std::collections::HashMap::new();
    for (j, e) in c.endpoints.iter().enumerate() {
        if let Some(n) = &e.name {
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                errs.push(ConfigError::new(
                    format!("{at}.endpoints[{j}].name"),
                    format!("invalid name {n:?}: use letters, digits, '.', '_' and '-'"),
                ));
            }
        }
        // Two unnamed endpoints with one address are reported as a duplicate address.
        if let Some(prev) = names
            .insert(e.label(), j)
            .filter(|p| e.name.is_some() || c.endpoints[*p].name.is_some())
        {
            errs.push(ConfigError::new(
                format!("{at}.endpoints[{j}].name"),
                format!("name {:?} is already used by endpoints[{prev}]", e.label()),
            ));
        }
    }
    let mut err = |field: &str, msg: String| {
        errs.push(ConfigError::new(format!("{at}.health.{field}"), msg));
    };
    if let Some(a) = &c.health.active {
        if a.rise == 0 || a.rise > 100 {
            err("active.rise", "must be between 1 and 100".into());
        }
        if a.fall == 0 || a.fall > 100 {
            err("active.fall", "must be between 1 and 100".into());
        }
        if a.timeout.0 > a.interval.0 {
            err("active.timeout", "must not exceed the interval".into());
        }
        if a.jitter_percent > 50 {
            err("active.jitter_percent", "must be between 0 and 50".into());
        }
        if !a.path.starts_with('/') || a.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            err(
                "active.path",
                format!(
                    "invalid path {:?}: must start with / and have no spaces",
                    a.path
                ),
            );
        }
        if !token_ok(&a.method) {
            err("active.method", format!("invalid method {:?}", a.method));
        }
        if let Some(h) = &a.host {
            if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f) {
                err("active.host", format!("invalid host {h:?}"));
            }
        }
        if a.expect_status.is_empty() {
            err(
                "active.expect_status",
                "must list at least one status or range".into(),
            );
        }
        for (k, s) in a.expect_status.iter().enumerate() {
            if status_range(s).is_none() {
                err(
                    &format!("active.expect_status[{k}]"),
                    format!("invalid status range {s:?}: expected like 200 or 200-399"),
                );
            }
        }
    }
    if let Some(p) = &c.health.passive {
        if p.consecutive_errors == 0 && p.error_percent.is_none() {
            err(
                "passive",
                "needs consecutive_errors > 0 or error_percent (or remove passive)".into(),
            );
        }
        if p.error_percent.is_some_and(|e| e == 0 || e > 100) {
            err("passive.error_percent", "must be between 1 and 100".into());
        }
        if p.min_requests == 0 {
            err("passive.min_requests", "must be at least 1".into());
        }
        if p.max_ejection_percent > 100 {
            err(
                "passive.max_ejection_percent",
                "must be between 0 and 100".into(),
            );
        }
        if p.cooldown.0 > p.max_cooldown.0 {
            err("passive.cooldown", "must not exceed max_cooldown".into());
        }
    }
}

pub(super) fn mirrors(cfg: &Config, known: &dyn Fn(&str) -> bool, errs: &mut Vec<ConfigError>) {
    for (i, r) in cfg.routes.iter().enumerate() {
        let Some(m) = &r.mirror else { continue };
        let at = format!("routes[{i}].mirror");
        if !known(&m.cluster) {
            errs.push(ConfigError::new(
                format!("{at}.cluster"),
                format!("unknown cluster {:?}", m.cluster),
            ));
        }
        if !(m.percent.is_finite() && (0.0..=100.0).contains(&m.percent)) {
            errs.push(ConfigError::new(
                format!("{at}.percent"),
                format!("must be between 0 and 100, got {}", m.percent),
            ));
        }
        if m.max_in_flight == 0 {
            errs.push(ConfigError::new(
                format!("{at}.max_in_flight"),
                "must be at least 1",
            ));
        }
        if m.max_body_bytes > 16 << 20 {
            errs.push(ConfigError::new(
                format!("{at}.max_body_bytes"),
                "must be at most 16777216 (bodies are held in memory)",
            ));
        }
    }
}

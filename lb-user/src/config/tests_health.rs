//! Config tests for health, backups, endpoint names, mirroring and the admin section: a full
//! example parses with its defaults, and each bad field is named.

use super::*;

use super::tests::{errors, has};

const FULL: &str = r#"
routes:
  - {name: r, hosts: ['*'], cluster: app, mirror: {cluster: shadow, percent: 0.5}}
clusters:
  - name: app
    backups: all
    health:
      active: {type: http, path: /healthz, expect_status: ["200", "300-399"], body_contains: ok, interval: 1s, timeout: 500ms, rise: 1, fall: 2}
      passive: {consecutive_errors: 3, error_percent: 40, window: 5s, min_requests: 5, cooldown: 1s, max_cooldown: 8s, max_ejection_percent: 100}
      slow_start: 20s
    endpoints:
      - {address: 127.0.0.1:1, name: onprem}
      - {address: 127.0.0.1:2, name: cloud, backup: true}
  - name: shadow
    endpoints: [{address: 127.0.0.1:3}]
admin: {allow: [10.0.0.0/8], token_file: t.txt, keep_runtime_overrides: true}
"#;

#[test]
fn full_example_parses_with_defaults() {
    let cfg = parse(FULL).unwrap();
    let c = &cfg.clusters[0];
    assert_eq!(c.backups, Backups::All);
    let a = c.health.active.as_ref().unwrap();
    assert_eq!((a.rise, a.fall, a.jitter_percent), (1, 2, 10));
    assert_eq!(c.endpoints[1].label(), "cloud");
    assert!(c.endpoints[1].backup);
    assert_eq!(cfg.clusters[1].endpoints[0].label(), "127.0.0.1:3");
    let m = cfg.routes[0].mirror.as_ref().unwrap();
    assert_eq!((m.percent, m.body, m.max_body_bytes), (0.5, true, 65536));
    assert!(cfg.admin.keep_runtime_overrides);
    let d = parse("").unwrap().admin;
    assert_eq!(d.allow.len(), 2, "loopback by default");
    assert!(!d.keep_runtime_overrides);
}

#[test]
fn bad_health_fields_are_named() {
    let errs = errors(
        r#"
clusters:
  - name: app
    health:
      active: {type: icmp}
    endpoints: [{address: 127.0.0.1:1}]
  - name: b
    health:
      active: {path: "no-slash", method: "GE T", expect_status: ["99", "300-200"], timeout: 5s, interval: 1s, rise: 0, jitter_percent: 80}
      passive: {consecutive_errors: 0, max_ejection_percent: 101, cooldown: 10m}
    endpoints:
      - {address: 127.0.0.1:1, name: "bad name"}
      - {address: 127.0.0.1:2, name: x}
      - {address: 127.0.0.1:3, name: x}
"#,
    );
    for (prefix, needle) in [
        ("clusters[0].health.active.type", "unknown variant"),
        ("clusters[1].health.active.path", "must start with /"),
        ("clusters[1].health.active.method", "invalid method"),
        (
            "clusters[1].health.active.expect_status[0]",
            "invalid status range",
        ),
        (
            "clusters[1].health.active.expect_status[1]",
            "invalid status range",
        ),
        (
            "clusters[1].health.active.timeout",
            "must not exceed the interval",
        ),
        ("clusters[1].health.active.rise", "between 1 and 100"),
        (
            "clusters[1].health.active.jitter_percent",
            "between 0 and 50",
        ),
        ("clusters[1].health.passive", "needs consecutive_errors"),
        (
            "clusters[1].health.passive.max_ejection_percent",
            "between 0 and 100",
        ),
        (
            "clusters[1].health.passive.cooldown",
            "must not exceed max_cooldown",
        ),
        ("clusters[1].endpoints[0].name", "invalid name"),
        (
            "clusters[1].endpoints[2].name",
            "already used by endpoints[1]",
        ),
    ] {
        assert!(
            has(&errs, prefix, needle),
            "missing {prefix}: {needle} in {errs:#?}"
        );
    }
}

#[test]
fn bad_mirror_and_admin_fields_are_named() {
    let errs = errors(
        r#"
routes:
  - {hosts: ['*'], cluster: a, mirror: {cluster: nope, percent: 150, max_in_flight: 0}}
  - {hosts: [x], cluster: a, mirror: {percent: 5}}
clusters: [{name: a}]
admin: {allow: [not-a-cidr], keep: true}
"#,
    );
    for (prefix, needle) in [
        ("routes[0].mirror.cluster", "unknown cluster \"nope\""),
        ("routes[0].mirror.percent", "between 0 and 100"),
        ("routes[0].mirror.max_in_flight", "at least 1"),
        ("routes[1].mirror", "cluster"),
        ("admin", ""),
    ] {
        assert!(
            has(&errs, prefix, needle),
            "missing {prefix}: {needle} in {errs:#?}"
        );
    }
}

#[test]
fn status_ranges() {
    assert_eq!(status_range("200-399"), Some((200, 399)));
    assert_eq!(status_range(" 204 "), Some((204, 204)));
    for bad in ["", "2xx", "399-200", "99", "600", "200-"] {
        assert_eq!(status_range(bad), None, "{bad}");
    }
}

//! Health and migration config: active checks (HTTP or TCP), passive checks ("observe
//! layer7"), slow start, mirroring, and the admin section (runtime API access and overrides).

use super::scalars::{Cidr, Interval};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Per-cluster health settings. Without `active` and `passive`, every endpoint counts as up.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub active: Option<ActiveCheck>,
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
    /// A recovered or new endpoint ramps its weight from 1/20 to full over this time.
    #[serde(default)]
    pub slow_start: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheck {
    /// `http` (default) or `tcp` (connect only).
    #[serde(default, rename = "type")]
    pub kind: CheckKind,
    #[serde(default = "default_check_path")]
    pub path: String,
    #[serde(default = "default_check_method")]
    pub method: String,
    /// Host header sent with HTTP checks; default: the endpoint address.
    #[serde(default)]
    pub host: Option<String>,
    /// Status ranges that pass, like `200-399` or `204`. Default: 200-399.
    #[serde(default = "default_expect")]
    pub expect_status: Vec<String>,
    /// The response body must contain this text (first 64 KiB are read).
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default = "default_interval")]
    pub interval: Interval,
    #[serde(default = "default_check_timeout")]
    pub timeout: Interval,
    /// Consecutive passes that bring a down endpoint up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up endpoint down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Each wait is the interval ± this percentage, so checks do not beat in step.
    #[serde(default = "default_jitter")]
    pub jitter_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    #[default]
    Http,
    Tcp,
}

/// Passive checks watch real traffic: 5xx responses (except 501 and 505), connect failures,
/// timeouts and resets are errors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveCheck {
    /// This many errors in a row eject the endpoint (0 = off).
    #[serde(default = "default_consecutive")]
    pub consecutive_errors: u32,
    /// Eject when errors exceed this share of requests over `window` (off when absent).
    #[serde(default)]
    pub error_percent: Option<u32>,
    #[serde(default = "default_window")]
    pub window: Interval,
    /// The error ratio is judged only with at least this many requests in the window.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Without an active check, an ejected endpoint returns after this time, doubled for each
    /// ejection in a row up to `max_cooldown`. With one, it returns after `rise` passes.
    #[serde(default = "default_cooldown")]
    pub cooldown: Interval,
    #[serde(default = "default_max_cooldown")]
    pub max_cooldown: Interval,
    /// Never eject more than this share of a cluster's endpoints (at least one may go).
    #[serde(default = "default_max_ejection")]
    pub max_ejection_percent: u32,
}

/// Which backup endpoints serve when no primary can: the first usable one, or all by weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backups {
    #[default]
    First,
    All,
}

/// Copy a share of a route's requests to another cluster; responses are discarded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests copied, 0-100 (fractions allowed: 0.5).
    pub percent: f64,
    /// Copy request bodies whose length is known and at most `max_body_bytes`; larger or
    /// streamed bodies are not mirrored (counted as skipped).
    #[serde(default = "yes")]
    pub body: bool,
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: u64,
    /// Mirror requests in flight at most; beyond this they are dropped (counted).
    #[serde(default = "default_mirror_inflight")]
    pub max_in_flight: u32,
}

/// The admin listener's runtime API (`/api/v1`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Client addresses allowed to use the runtime API. Default: loopback only.
    #[serde(default = "loopback")]
    pub allow: Vec<Cidr>,
    /// File holding a bearer token the API requires (`Authorization: Bearer ...`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Keep weights and states set through the API when the config is reloaded (default: a
    /// reload discards them, as a HAProxy reload does).
    #[serde(default)]
    pub keep_runtime_overrides: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            allow: loopback(),
            token_file: None,
            keep_runtime_overrides: false,
        }
    }
}

fn loopback() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn yes() -> bool {
    true
}
fn default_check_path() -> String {
    "/".into()
}
fn default_check_method() -> String {
    "GET".into()
}
fn default_expect() -> Vec<String> {
    vec!["200-399".into()]
}
fn default_interval() -> Interval {
    Interval(Duration::from_secs(2))
}
fn default_check_timeout() -> Interval {
    Interval(Duration::from_secs(1))
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_jitter() -> u32 {
    10
}
fn default_consecutive() -> u32 {
    5
}
fn default_window() -> Interval {
    Interval(Duration::from_secs(10))
}
fn default_min_requests() -> u32 {
    20
}
fn default_cooldown() -> Interval {
    Interval(Duration::from_secs(10))
}
fn default_max_cooldown() -> Interval {
    Interval(Duration::from_secs(300))
}
fn default_max_ejection() -> u32 {
    50
}
fn default_mirror_body() -> u64 {
    64 * 1024
}
fn default_mirror_inflight() -> u32 {
    100
}

/// `200-399` or `204` → inclusive range; None when malformed.
pub fn status_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.trim().split_once('-').unwrap_or((s.trim(), s.trim()));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    ((100..=599).contains(&a) && (100..=599).contains(&b) && a <= b).then_some((a, b))
}

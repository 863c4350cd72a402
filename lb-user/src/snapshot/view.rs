//! Endpoint views: config weight × runtime override × health × backups × slow start, computed
//! once per snapshot so the L7 balancer (and the XDP rings) read one agreed answer.

use crate::config::{Backups, Cluster};
use crate::health::{EpHealth, EpKey, HealthView};
use crate::runtime::{AdminState, Override, Overrides};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Effective weights are configured weights times this, so slow start can ramp in 5% steps
/// even for weight 1 (the balancer divides by the gcd, so the scale costs nothing at rest).
pub const SCALE: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpState {
    Up,
    Down,
    Drain,
    Maint,
}

impl EpState {
    pub fn as_str(self) -> &'static str {
        match self {
            EpState::Up => "up",
            EpState::Down => "down",
            EpState::Drain => "drain",
            EpState::Maint => "maint",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    pub state: EpState,
    /// After runtime overrides (0-256).
    pub weight: u16,
    /// What the balancer uses now, in units of 1/SCALE of a weight.
    pub effective: u32,
    /// Fraction of the weight while slow start ramps.
    pub slow_start: Option<f64>,
    pub health: EpHealth,
    pub over: Override,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub endpoints: Vec<EndpointView>,
    /// When the next slow-start step is due (the snapshot should be derived again then).
    pub next_ramp: Option<Instant>,
}

pub fn cluster(
    c: &Cluster,
    overrides: &Overrides,
    health: &HealthView,
    now: Instant,
) -> ClusterView {
    let name: Arc<str> = c.name.as_str().into();
    let slow = c.health.slow_start.map(|s| s.0);
    let mut next_ramp = None;
    let mut endpoints: Vec<EndpointView> = c
        .endpoints
        .iter()
        .map(|e| {
            let key: EpKey = (name.clone(), e.address);
            let over = overrides.0.get(&key).copied().unwrap_or_default();
            let h = health.get(&key).cloned().unwrap_or_default();
            let weight = over.weight.map_or(e.weight.0, |w| w.resolve(e.weight.0));
            let state = match over.state {
                Some(AdminState::Maint) => EpState::Maint,
                _ if !h.is_up() => EpState::Down,
                Some(AdminState::Drain) => EpState::Drain,
                _ if weight == 0 => EpState::Drain,
                _ => EpState::Up,
            };
            let ramp = match (slow, h.usable_since) {
                (Some(total), Some(since)) if state == EpState::Up => {
                    ramp(now.saturating_duration_since(since), total)
                }
                _ => None,
            };
            if let (Some(f), Some(total), Some(since)) = (ramp, slow, h.usable_since) {
                let step = total / SCALE;
                let due = since + step.mul_f64((f * f64::from(SCALE)).round());
                next_ramp = Some(next_ramp.map_or(due, |n: Instant| n.min(due)));
            }
            let full = u32::from(weight) * SCALE;
            let effective = match (state, ramp) {
                (EpState::Up, Some(f)) => ((f64::from(full) * f).ceil() as u32).clamp(1, full),
                (EpState::Up, None) => full,
                _ => 0,
            };
            EndpointView {
                state,
                weight,
                effective,
                slow_start: ramp,
                health: h,
                over,
            }
        })
        .collect();
    // Backups serve only when no primary can.
    let primary_usable = c
        .endpoints
        .iter()
        .zip(&endpoints)
        .any(|(e, v)| !e.backup && v.effective > 0);
    let mut first_taken = false;
    for (e, v) in c.endpoints.iter().zip(endpoints.iter_mut()) {
        if !e.backup {
            continue;
        }
        let serve =
            !primary_usable && v.effective > 0 && (c.backups == Backups::All || !first_taken);
        if serve {
            first_taken = true;
        } else {
            v.effective = 0;
        }
    }
    ClusterView {
        endpoints,
        next_ramp,
    }
}

/// The weight fraction `elapsed` into a slow start of `total` (None once complete), at least
/// one step so a recovering endpoint gets some traffic at once.
fn ramp(elapsed: Duration, total: Duration) -> Option<f64> {
    if elapsed >= total || total.is_zero() {
        return None;
    }
    let steps = (elapsed.as_secs_f64() / total.as_secs_f64() * f64::from(SCALE)).floor() + 1.0;
    Some((steps / f64::from(SCALE)).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Active;
    use crate::runtime::WeightSetting;

    fn cluster_cfg(yaml: &str) -> Cluster {
        let cfg = crate::config::parse(yaml).unwrap();
        Cluster::clone(&cfg.clusters[0])
    }

    fn key(c: &Cluster, i: usize) -> EpKey {
        (c.name.as_str().into(), c.endpoints[i].address)
    }

    const TWO: &str = "clusters:\n  - name: app\n    health: {slow_start: 10s}\n    endpoints:\n      - {address: 127.0.0.1:1, name: onprem, weight: 100}\n      - {address: 127.0.0.1:2, name: cloud, weight: 100}\n      - {address: 127.0.0.1:3, name: spare, backup: true}\n      - {address: 127.0.0.1:4, name: spare2, backup: true, weight: 3}\n";

    fn eff(v: &ClusterView) -> Vec<u32> {
        v.endpoints.iter().map(|e| e.effective / SCALE).collect()
    }

    #[test]
    fn overrides_health_and_backups() {
        let c = cluster_cfg(TWO);
        let now = Instant::now();
        let mut o = Overrides::default();
        let mut h = HealthView::default();
        assert_eq!(eff(&cluster(&c, &o, &h, now)), [100, 100, 0, 0]);
        o.0.insert(
            key(&c, 1),
            Override {
                weight: Some(WeightSetting::Percent(5)),
                state: None,
            },
        );
        assert_eq!(eff(&cluster(&c, &o, &h, now)), [100, 5, 0, 0]);
        let down = EpHealth {
            ejected: Some("5 consecutive errors".into()),
            ..Default::default()
        };
        h.endpoints.insert(key(&c, 1), down.clone());
        let v = cluster(&c, &o, &h, now);
        assert_eq!(v.endpoints[1].state, EpState::Down);
        assert_eq!(eff(&v), [100, 0, 0, 0]);
        // Every primary gone: the first backup alone, then all backups.
        h.endpoints.insert(
            key(&c, 0),
            EpHealth {
                active: Active::Down,
                ..Default::default()
            },
        );
        assert_eq!(eff(&cluster(&c, &o, &h, now)), [0, 0, 1, 0]);
        let mut all = c.clone();
        all.backups = Backups::All;
        assert_eq!(eff(&cluster(&all, &o, &h, now)), [0, 0, 1, 3]);
        // A primary drained to weight 0 counts as unusable; maint shows as maint.
        h.endpoints.clear();
        o.0.insert(
            key(&c, 0),
            Override {
                weight: None,
                state: Some(AdminState::Maint),
            },
        );
        o.0.insert(
            key(&c, 1),
            Override {
                weight: Some(WeightSetting::Absolute(0)),
                state: None,
            },
        );
        let v = cluster(&c, &o, &h, now);
        assert_eq!(v.endpoints[0].state, EpState::Maint);
        assert_eq!(v.endpoints[1].state, EpState::Drain);
        assert_eq!(eff(&v), [0, 0, 1, 0]);
    }

    #[test]
    fn slow_start_ramps_in_steps() {
        let c = cluster_cfg(TWO);
        let now = Instant::now();
        let mut h = HealthView::default();
        h.endpoints.insert(
            key(&c, 1),
            EpHealth {
                usable_since: Some(now),
                ..Default::default()
            },
        );
        let o = Overrides::default();
        let v = cluster(&c, &o, &h, now);
        assert_eq!(v.endpoints[1].effective, 100 * SCALE / 20, "first step: 5%");
        assert_eq!(v.next_ramp, Some(now + Duration::from_millis(500)));
        let v = cluster(&c, &o, &h, now + Duration::from_millis(5000));
        assert_eq!(v.endpoints[1].slow_start, Some(0.55));
        let v = cluster(&c, &o, &h, now + Duration::from_secs(10));
        assert_eq!(
            (v.endpoints[1].effective, v.endpoints[1].slow_start),
            (100 * SCALE, None)
        );
        assert_eq!(v.next_ramp, None);
    }
}

//! Endpoint health: active checkers and passive observation of real traffic produce a
//! [`HealthView`], which the snapshot build combines with config and runtime overrides.

pub mod active;
pub mod monitor;
pub mod observer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// An endpoint across snapshots: its cluster's name and its address.
pub type EpKey = (Arc<str>, SocketAddr);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    /// No active check configured.
    Unchecked,
    Up,
    Down,
}

impl Active {
    pub fn as_str(self) -> &'static str {
        match self {
            Active::Unchecked => "unchecked",
            Active::Up => "up",
            Active::Down => "down",
        }
    }
}

/// What health checking knows about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EpHealth {
    pub active: Active,
    /// Ejected by passive checks, with the reason.
    pub ejected: Option<String>,
    /// When the endpoint last became usable after being down or new (slow start runs from here).
    pub usable_since: Option<Instant>,
    pub ejections: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// Why the last active check failed.
    pub last_failure: Option<String>,
}

impl Default for EpHealth {
    fn default() -> Self {
        EpHealth {
            active: Active::Unchecked,
            ejected: None,
            usable_since: None,
            ejections: 0,
            checks_ok: 0,
            checks_failed: 0,
            last_failure: None,
        }
    }
}

impl EpHealth {
    pub fn is_up(&self) -> bool {
        self.active != Active::Down && self.ejected.is_none()
    }

    pub fn reason(&self) -> Option<String> {
        if let Some(r) = &self.ejected {
            return Some(r.clone());
        }
        (self.active == Active::Down).then(|| {
            self.last_failure
                .clone()
                .unwrap_or_else(|| "check failed".into())
        })
    }
}

/// Health of every known endpoint; endpoints not listed are up (never checked yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthView {
    pub endpoints: HashMap<EpKey, EpHealth>,
}

impl HealthView {
    pub fn get(&self, key: &EpKey) -> Option<&EpHealth> {
        self.endpoints.get(key)
    }

    /// True when both views lead to the same endpoint states and weights: they differ at most
    /// in check counts and failure texts (an absent endpoint is an unchecked, healthy one).
    pub fn same_decisions(&self, other: &HealthView) -> bool {
        let decision = |v: &HealthView, k: &EpKey| {
            v.endpoints
                .get(k)
                .map(|h| (h.active, h.ejected.clone(), h.usable_since, h.ejections))
                .unwrap_or((Active::Unchecked, None, None, 0))
        };
        self.endpoints
            .keys()
            .chain(other.endpoints.keys())
            .all(|k| decision(self, k) == decision(other, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_ignore_check_counts() {
        let key: EpKey = ("app".into(), "127.0.0.1:1".parse().unwrap());
        let view = |h: EpHealth| HealthView {
            endpoints: [(key.clone(), h)].into(),
        };
        let up = EpHealth {
            active: Active::Up,
            checks_ok: 3,
            ..Default::default()
        };
        let more = EpHealth {
            checks_ok: 9,
            checks_failed: 1,
            last_failure: Some("timeout".into()),
            ..up.clone()
        };
        assert!(view(up.clone()).same_decisions(&view(more)));
        let down = EpHealth {
            active: Active::Down,
            ..up.clone()
        };
        assert!(!view(up).same_decisions(&view(down)));
        // Counted but never judged is the same as absent.
        let counted = EpHealth {
            checks_failed: 2,
            ..Default::default()
        };
        assert!(view(counted).same_decisions(&HealthView::default()));
        let ejected = EpHealth {
            ejected: Some("5 errors".into()),
            ..Default::default()
        };
        assert!(!view(ejected).same_decisions(&HealthView::default()));
    }
}

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
}

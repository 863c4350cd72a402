//! The worker registry: per listener with workers > 1, each worker's counters and drained flag
//! and the group's steering program. The runtime API drains through it; /metrics reads it.

use crate::bpf::reuseport::Steering as Program;
use crate::config::Steering;
use lb_common::reuseport::SteerPolicy;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One worker of one listener. Kept across reloads by (listener, index), so counters stay
/// monotonic and a drain survives a reload.
#[derive(Debug, Default)]
pub struct Slot {
    pub accepted: AtomicU64,
    /// Connections open now (also what `least_loaded` compares).
    pub open: AtomicU64,
    pub drained: AtomicBool,
}

/// The SO_REUSEPORT group of one listener: its workers and its steering program.
#[derive(Debug)]
pub struct Group {
    pub listener: Arc<str>,
    pub address: SocketAddr,
    pub slots: Vec<Arc<Slot>>,
    /// Whether workers must write their load into the program's map on every change.
    pub least_loaded: AtomicBool,
    steer: Mutex<Steer>,
}

#[derive(Debug)]
struct Steer {
    mode: Steering,
    /// None when the program could not be loaded or attached: the kernel hashes on its own.
    program: Option<Program>,
    error: Option<String>,
}

/// A runtime API request that cannot be carried out: (HTTP status, message).
#[derive(Debug)]
pub struct Refused(pub u16, pub String);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Group {
    pub fn new(
        listener: Arc<str>,
        address: SocketAddr,
        slots: Vec<Arc<Slot>>,
        mode: Steering,
        program: Result<Program, String>,
    ) -> Group {
        let (program, error) = match program {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        };
        Group {
            listener,
            address,
            slots,
            least_loaded: AtomicBool::new(mode == Steering::LeastLoaded),
            steer: Mutex::new(Steer {
                mode,
                program,
                error,
            }),
        }
    }

    /// The policy the program should hold now (mode, worker count, drained set).
    pub fn policy(&self) -> SteerPolicy {
        super::worker_pool::policy(&self.slots, self.mode())
    }

    pub fn mode(&self) -> Steering {
        lock(&self.steer).mode
    }

    /// Writes [`Group::policy`] into the program's map.
    pub fn sync(&self) -> Result<(), String> {
        let policy = self.policy();
        let mut steer = lock(&self.steer);
        match steer.program.as_mut() {
            Some(p) => p.set_policy(policy).map_err(|e| format!("{e:#}")),
            None => Err(self.unsteered(&steer)),
        }
    }

    pub fn set_mode(&self, mode: Steering) {
        lock(&self.steer).mode = mode;
        self.least_loaded
            .store(mode == Steering::LeastLoaded, Relaxed);
        if let Err(e) = self.sync() {
            tracing::warn!(listener = %self.listener, "steering policy not updated: {e}");
        }
    }

    /// Runs `f` with the program, if it is loaded.
    pub fn with_program<R>(&self, f: impl FnOnce(&mut Program) -> R) -> Option<R> {
        lock(&self.steer).program.as_mut().map(f)
    }

    fn unsteered(&self, steer: &Steer) -> String {
        format!(
            "listener {}: the steering program is not loaded ({})",
            self.listener,
            steer.error.as_deref().unwrap_or("unknown reason")
        )
    }

    fn status(&self) -> Value {
        let steer = lock(&self.steer);
        let workers: Vec<Value> = self
            .slots
            .iter()
            .enumerate()
            .map(|(k, s)| {
                json!({
                    "worker": k,
                    "state": if s.drained.load(Relaxed) { "drain" } else { "ready" },
                    "connections": s.open.load(Relaxed),
                    "accepted": s.accepted.load(Relaxed),
                })
            })
            .collect();
        json!({
            "listener": &*self.listener,
            "address": self.address.to_string(),
            "steering": match steer.mode {
                Steering::FlowHash => "flow_hash",
                Steering::LeastLoaded => "least_loaded",
            },
            "program": if steer.program.is_some() { "attached" } else { "not loaded" },
            "program_error": steer.error,
            "workers": workers,
        })
    }
}

/// Every running group, and the worker slots by listener name (kept while the listener exists).
#[derive(Debug, Default)]
pub struct Workers {
    groups: Mutex<Vec<Arc<Group>>>,
    slots: Mutex<HashMap<String, Vec<Arc<Slot>>>>,
}

impl Workers {
    /// `n` slots for `listener`: the ones it had (counters, drain flags), then new ones.
    pub fn slots(&self, listener: &str, n: usize) -> Vec<Arc<Slot>> {
        let mut all = lock(&self.slots);
        let slots = all.entry(listener.to_string()).or_default();
        slots.resize_with(n, Default::default);
        slots.clone()
    }

    pub fn register(&self, group: Arc<Group>) {
        lock(&self.groups).push(group);
    }

    /// Removes the group; `forget` also drops the listener's slots (the listener is gone).
    pub fn unregister(&self, group: &Arc<Group>, forget: bool) {
        lock(&self.groups).retain(|g| !Arc::ptr_eq(g, group));
        if forget {
            lock(&self.slots).remove(&*group.listener);
        }
    }

    pub fn groups(&self) -> Vec<Arc<Group>> {
        let mut gs = lock(&self.groups).clone();
        gs.sort_by(|a, b| a.listener.cmp(&b.listener));
        gs
    }

    /// `GET /api/v1/workers`.
    pub fn status(&self) -> Value {
        let groups: Vec<Value> = self.groups().iter().map(|g| g.status()).collect();
        json!({ "listeners": groups })
    }

    /// `PUT /api/v1/workers/{k}` with `{"state": "drain" | "ready", "listener": NAME?}`.
    pub fn put(&self, worker: &str, body: &[u8]) -> Result<Value, Refused> {
        let bad = |m: String| Refused(400, m);
        let k: usize = worker.parse().map_err(|_| {
            bad(format!(
                "invalid worker {worker:?}: expected its index (0, 1, ...)"
            ))
        })?;
        let v: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        if let Some(key) = obj.keys().find(|k| *k != "state" && *k != "listener") {
            return Err(bad(format!(
                "unknown field {key:?}: expected state, listener"
            )));
        }
        let drained = match obj.get("state").and_then(Value::as_str) {
            Some("drain") => true,
            Some("ready") => false,
            _ => return Err(bad("state must be \"drain\" or \"ready\"".into())),
        };
        let only = match obj.get("listener") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(bad("listener must be a listener name".into())),
        };
        self.set_drained(k, drained, only)
    }

    /// Drains (or readies) worker `k` on every listener that has it (or on `only`). Refused,
    /// with nothing changed, when no listener has worker `k` or one of them has no program.
    pub fn set_drained(
        &self,
        k: usize,
        drained: bool,
        only: Option<&str>,
    ) -> Result<Value, Refused> {
        let groups: Vec<Arc<Group>> = self
            .groups()
            .into_iter()
            .filter(|g| only.is_none_or(|name| *g.listener == *name))
            .filter(|g| k < g.slots.len())
            .collect();
        if groups.is_empty() {
            let scope = only.map_or("any listener".to_string(), |l| format!("listener {l:?}"));
            return Err(Refused(
                404,
                format!("worker {k} does not exist on {scope}"),
            ));
        }
        for g in &groups {
            let steer = lock(&g.steer);
            if steer.program.is_none() {
                return Err(Refused(409, g.unsteered(&steer)));
            }
        }
        let mut done = Vec::new();
        for g in &groups {
            let was = g.slots[k].drained.swap(drained, Relaxed);
            if let Err(e) = g.sync() {
                g.slots[k].drained.store(was, Relaxed);
                return Err(Refused(500, format!("listener {}: {e}", g.listener)));
            }
            tracing::info!(listener = %g.listener, worker = k, drained, "worker state changed");
            done.push(g.status());
        }
        Ok(json!({
            "worker": k,
            "state": if drained { "drain" } else { "ready" },
            "listeners": done,
        }))
    }
}

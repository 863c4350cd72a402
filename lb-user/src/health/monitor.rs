//! The health monitor task: runs active checkers, judges passive reports (streaks, error
//! ratios, max ejection share, cool-down with backoff) and publishes a HealthView on change.

use super::active::{self, CheckResult};
use super::observer::{Observer, Outcome, Streak};
use super::{Active, EpHealth, EpKey, HealthView};
use crate::config::{ActiveCheck, Cluster};
use crate::snapshot::Snapshot;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const TICK: Duration = Duration::from_millis(250);

/// What tables need from health: one observer per endpoint, kept across reloads.
/// The mutex is taken at table build and by the monitor's tick, never per request.
pub struct Handles {
    observers: Mutex<HashMap<EpKey, Arc<Observer>>>,
    tx: mpsc::Sender<Streak>,
}

impl Handles {
    pub fn new() -> (Arc<Handles>, mpsc::Receiver<Streak>) {
        let (tx, rx) = mpsc::channel(1024);
        let h = Handles {
            observers: Mutex::new(HashMap::new()),
            tx,
        };
        (Arc::new(h), rx)
    }

    /// The endpoint's observer, its consecutive-error limit set from `cluster`.
    pub fn observer(&self, key: EpKey, cluster: &Cluster) -> Arc<Observer> {
        let limit = cluster
            .health
            .passive
            .as_ref()
            .map_or(0, |p| p.consecutive_errors);
        let mut map = self.observers.lock().unwrap_or_else(|e| e.into_inner());
        let o = map
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Observer::new(key, self.tx.clone())))
            .clone();
        o.limit.store(limit, Ordering::Relaxed);
        o
    }

    fn get(&self, key: &EpKey) -> Option<Arc<Observer>> {
        let map = self.observers.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    fn retain(&self, keep: &dyn Fn(&EpKey) -> bool) {
        let mut map = self.observers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| keep(k));
    }
}

#[derive(Default)]
struct Ep {
    h: EpHealth,
    label: String,
    rises: u32,
    falls: u32,
    until: Option<Instant>,
    in_row: u32,
    returned: Option<Instant>,
    samples: VecDeque<(Instant, u64, u64)>,
    generation: u64,
    checker: Option<(ActiveCheck, JoinHandle<()>)>,
}

pub struct Monitor {
    eps: HashMap<EpKey, Ep>,
    clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// The last snapshot's clusters in order: one at the same index and `Arc` is unchanged.
    order: Vec<Arc<Cluster>>,
    handles: Arc<Handles>,
    results_tx: mpsc::Sender<CheckResult>,
    published: Arc<HealthView>,
    started: bool,
}

/// Runs until the snapshot channel closes; `publish` receives each changed view.
pub async fn run(
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    handles: Arc<Handles>,
    mut streaks: mpsc::Receiver<Streak>,
    publish: impl Fn(Arc<HealthView>),
) {
    let (results_tx, mut results) = mpsc::channel(1024);
    let mut m = Monitor {
        eps: HashMap::new(),
        clusters: HashMap::new(),
        order: Vec::new(),
        handles,
        results_tx,
        published: Arc::new(HealthView::default()),
        started: false,
    };
    let first = snaps.borrow_and_update().clone();
    m.reconcile(&first);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = snaps.changed() => {
                if changed.is_err() {
                    break;
                }
                let snap = snaps.borrow_and_update().clone();
                m.reconcile(&snap);
            }
            Some(r) = results.recv() => m.check_result(r),
            Some(s) = streaks.recv() => {
                let why = format!("{} consecutive errors (last: {})", s.count, Outcome::describe(s.last));
                m.eject(&s.key, why);
            }
            _ = tick.tick() => m.tick(),
        }
        let view = m.view();
        // Check counts and the last failure text change on every check; a new snapshot (and
        // proxy table) is only worth it when a decision changed.
        if !view.same_decisions(&m.published) {
            m.published = view.clone();
            publish(view);
        }
    }
    for ep in m.eps.values_mut() {
        if let Some((_, task)) = ep.checker.take() {
            task.abort();
        }
    }
}

impl Monitor {
    fn view(&self) -> Arc<HealthView> {
        Arc::new(HealthView {
            // Endpoints never checked nor judged are left out (absent means up).
            endpoints: self
                .eps
                .iter()
                .filter(|(_, e)| e.h != EpHealth::default())
                .map(|(k, e)| (k.clone(), e.h.clone()))
                .collect(),
        })
    }

    /// Follows the config: new endpoints (slow start after the first snapshot), gone ones,
    /// checkers started, restarted on a changed check, stopped.
    ///
    /// Clusters the snapshot shares with the last one (the same `Arc`) are skipped: with 10k
    /// clusters an endpoint change must not walk every endpoint.
    fn reconcile(&mut self, snap: &Snapshot) {
        let now = Instant::now();
        let mut gone: HashSet<EpKey> = HashSet::new();
        for (i, c) in snap.config.clusters.iter().enumerate() {
            if self.order.get(i).is_some_and(|o| Arc::ptr_eq(o, c)) {
                continue;
            }
            let name: Arc<str> = match self.clusters.get_key_value(c.name.as_str()) {
                Some((_, old)) if Arc::ptr_eq(old, c) => continue,
                Some((name, old)) => {
                    let name = name.clone();
                    let left = (old.endpoints.iter())
                        .filter(|e| !c.endpoints.iter().any(|n| n.address == e.address));
                    gone.extend(left.map(|e| (name.clone(), e.address)));
                    name
                }
                None => c.name.as_str().into(),
            };
            self.clusters.insert(name.clone(), c.clone());
            for e in &c.endpoints {
                let key: EpKey = (name.clone(), e.address);
                gone.remove(&key);
                let started = self.started;
                let ep = self.eps.entry(key.clone()).or_insert_with(|| Ep {
                    h: EpHealth {
                        usable_since: (started && c.health.slow_start.is_some()).then_some(now),
                        ..Default::default()
                    },
                    ..Default::default()
                });
                ep.label = e.label();
                let want = c.health.active.clone();
                let same = match (&ep.checker, &want) {
                    (Some((have, _)), Some(w)) => have == w,
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    continue;
                }
                if let Some((_, task)) = ep.checker.take() {
                    task.abort();
                }
                ep.generation += 1;
                match want {
                    Some(check) => {
                        if ep.h.active == Active::Unchecked {
                            ep.h.active = Active::Up;
                        }
                        let task = tokio::spawn(active::run(
                            key.clone(),
                            ep.generation,
                            check.clone(),
                            self.results_tx.clone(),
                        ));
                        ep.checker = Some((check, task));
                    }
                    None => {
                        ep.h.active = Active::Unchecked;
                        ep.rises = 0;
                        ep.falls = 0;
                    }
                }
            }
        }
        if self.clusters.len() != snap.config.clusters.len() {
            let names: HashSet<&str> = (snap.config.clusters.iter())
                .map(|c| c.name.as_str())
                .collect();
            let removed: Vec<Arc<str>> = (self.clusters.keys())
                .filter(|n| !names.contains(&***n))
                .cloned()
                .collect();
            for n in removed {
                if let Some(old) = self.clusters.remove(&n) {
                    gone.extend(old.endpoints.iter().map(|e| (n.clone(), e.address)));
                }
            }
        }
        if !gone.is_empty() {
            for k in &gone {
                if let Some(mut ep) = self.eps.remove(k) {
                    if let Some((_, task)) = ep.checker.take() {
                        task.abort();
                    }
                }
            }
            self.handles.retain(&|k| !gone.contains(k));
        }
        self.order = snap.config.clusters.clone();
        self.started = true;
    }

    fn check_result(&mut self, r: CheckResult) {
        let Some(ep) = self.eps.get_mut(&r.key) else {
            return;
        };
        if r.generation != ep.generation {
            return;
        }
        let Some(check) = ep.checker.as_ref().map(|(c, _)| c.clone()) else {
            return;
        };
        if let Some(o) = self.handles.get(&r.key) {
            let n = match r.result {
                Ok(()) => &o.events.checks_ok,
                Err(_) => &o.events.checks_failed,
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
        match r.result {
            Ok(()) => {
                ep.h.checks_ok += 1;
                ep.falls = 0;
                if ep.h.active == Active::Down {
                    ep.rises += 1;
                    if ep.rises >= check.rise {
                        ep.h.active = Active::Up;
                        ep.h.ejected = None;
                        ep.h.usable_since = Some(Instant::now());
                        ep.returned = Some(Instant::now());
                        let label = ep.label.clone();
                        self.transition(&r.key, &label, "up", "active check passed");
                    }
                }
            }
            Err(why) => {
                ep.h.checks_failed += 1;
                ep.rises = 0;
                ep.h.last_failure = Some(why.clone());
                if ep.h.active == Active::Up {
                    ep.falls += 1;
                    if ep.falls >= check.fall {
                        ep.h.active = Active::Down;
                        ep.h.usable_since = None;
                        let label = ep.label.clone();
                        self.transition(&r.key, &label, "down", &why);
                    }
                }
            }
        }
    }

    /// Passive ejection, unless the cluster already has its maximum share ejected.
    fn eject(&mut self, key: &EpKey, why: String) {
        let Some(c) = self.clusters.get(&key.0) else {
            return;
        };
        let Some(p) = c.health.passive.clone() else {
            return;
        };
        let has_active = c.health.active.is_some();
        let total = c.endpoints.len();
        let ejected = self
            .eps
            .iter()
            .filter(|(k, e)| k.0 == key.0 && e.h.ejected.is_some())
            .count();
        let Some(ep) = self.eps.get(key) else { return };
        if ep.h.ejected.is_some() {
            return;
        }
        let pct = p.max_ejection_percent as usize;
        let allowed = if pct == 0 {
            0
        } else {
            (total * pct / 100).max(1)
        };
        if ejected >= allowed {
            tracing::warn!(cluster = %key.0, endpoint = %ep.label, reason = %why,
                "not ejecting: max_ejection_percent of the cluster is already ejected");
            return;
        }
        let now = Instant::now();
        let Some(ep) = self.eps.get_mut(key) else {
            return;
        };
        if ep
            .returned
            .is_some_and(|t| now.duration_since(t) > p.max_cooldown.0)
        {
            ep.in_row = 0;
        }
        ep.in_row = ep.in_row.saturating_add(1);
        ep.h.ejections += 1;
        ep.h.ejected = Some(why.clone());
        ep.h.usable_since = None;
        ep.samples.clear();
        if has_active {
            // Back after `rise` passing checks.
            ep.h.active = Active::Down;
            ep.rises = 0;
            ep.until = None;
        } else {
            let factor = 2u32.saturating_pow(ep.in_row.saturating_sub(1).min(16));
            ep.until = Some(now + p.cooldown.0.saturating_mul(factor).min(p.max_cooldown.0));
        }
        let label = ep.label.clone();
        if let Some(o) = self.handles.get(key) {
            o.consecutive.store(0, Ordering::Relaxed);
            o.events.ejections.fetch_add(1, Ordering::Relaxed);
        }
        self.transition(key, &label, "down", &why);
    }

    /// Cool-downs that ended, and error ratios over each cluster's window.
    fn tick(&mut self) {
        let now = Instant::now();
        let mut returned = Vec::new();
        let mut ratio_ejects = Vec::new();
        for (key, ep) in self.eps.iter_mut() {
            if ep.until.is_some_and(|u| now >= u) {
                ep.until = None;
                ep.h.ejected = None;
                ep.h.usable_since = Some(now);
                ep.returned = Some(now);
                returned.push((key.clone(), ep.label.clone()));
                continue;
            }
            let Some(p) = self
                .clusters
                .get(&key.0)
                .and_then(|c| c.health.passive.as_ref())
            else {
                continue;
            };
            let (Some(pct), None) = (p.error_percent, &ep.h.ejected) else {
                continue;
            };
            let Some(o) = self.handles.get(key) else {
                continue;
            };
            let (total, errors) = (
                o.total.load(Ordering::Relaxed),
                o.errors.load(Ordering::Relaxed),
            );
            ep.samples.push_back((now, total, errors));
            while ep
                .samples
                .front()
                .is_some_and(|s| now.duration_since(s.0) > p.window.0)
            {
                ep.samples.pop_front();
            }
            let Some(&(_, t0, e0)) = ep.samples.front() else {
                continue;
            };
            let (dt, de) = (total - t0, errors - e0);
            if dt >= u64::from(p.min_requests) && de * 100 >= u64::from(pct) * dt {
                let why = format!(
                    "{}% errors ({de} of {dt} requests) over {:?}",
                    de * 100 / dt,
                    p.window.0
                );
                ratio_ejects.push((key.clone(), why));
            }
        }
        for (key, label) in returned {
            if let Some(o) = self.handles.get(&key) {
                o.consecutive.store(0, Ordering::Relaxed);
            }
            self.transition(&key, &label, "up", "cool-down ended");
        }
        for (key, why) in ratio_ejects {
            self.eject(&key, why);
        }
    }

    fn transition(&self, key: &EpKey, label: &str, to: &'static str, why: &str) {
        if to == "up" {
            tracing::info!(cluster = %key.0, endpoint = %label, reason = %why, "endpoint is up");
        } else {
            tracing::warn!(cluster = %key.0, endpoint = %label, reason = %why, "endpoint is down");
        }
        if let Some(o) = self.handles.get(key) {
            let n = match to {
                "up" => &o.events.went_up,
                _ => &o.events.went_down,
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;

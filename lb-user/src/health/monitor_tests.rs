//! Monitor decisions without the network: ejection limits, cool-down backoff, returns, and
//! new endpoints entering slow start after the first snapshot.

use super::*;

fn snapshot(yaml: &str) -> Snapshot {
    let cfg = crate::config::parse(yaml).unwrap();
    crate::snapshot::build(&cfg, Default::default(), 1)
}

fn monitor() -> Monitor {
    let (handles, _rx) = Handles::new();
    let (results_tx, _results) = mpsc::channel(8);
    Monitor {
        eps: HashMap::new(),
        clusters: HashMap::new(),
        order: Vec::new(),
        handles,
        results_tx,
        published: Arc::new(HealthView::default()),
        started: false,
    }
}

const THREE: &str = "clusters:\n  - name: app\n    health:\n      passive: {consecutive_errors: 2, cooldown: 1s, max_cooldown: 3s, max_ejection_percent: 50}\n      slow_start: 10s\n    endpoints:\n      - {address: 127.0.0.1:1}\n      - {address: 127.0.0.1:2}\n      - {address: 127.0.0.1:3}\n      - {address: 127.0.0.1:4}\n";

fn key(port: u16) -> EpKey {
    ("app".into(), format!("127.0.0.1:{port}").parse().unwrap())
}

#[tokio::test]
async fn ejections_are_capped_and_back_off() {
    let mut m = monitor();
    m.reconcile(&snapshot(THREE));
    assert!(m.view().endpoints.is_empty(), "all healthy: nothing to say");
    m.eject(&key(1), "streak".into());
    m.eject(&key(2), "streak".into());
    m.eject(&key(3), "streak".into());
    let ejected = |m: &Monitor| {
        let mut v: Vec<u16> = m
            .eps
            .iter()
            .filter(|(_, e)| e.h.ejected.is_some())
            .map(|(k, _)| k.1.port())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ejected(&m), [1, 2], "50% of 4: the third is refused");
    let first = m.eps[&key(1)].until.unwrap().duration_since(Instant::now());
    assert!(
        first <= Duration::from_secs(1),
        "first cool-down: {first:?}"
    );
    // Force the cool-down to end, then eject again: twice as long.
    for p in [1, 2] {
        m.eps.get_mut(&key(p)).unwrap().until = Some(Instant::now());
    }
    m.tick();
    assert!(ejected(&m).is_empty());
    assert!(
        m.eps[&key(1)].h.usable_since.is_some(),
        "slow start after a return"
    );
    let before = Instant::now();
    m.eject(&key(1), "again".into());
    let wait = m.eps[&key(1)].until.unwrap().duration_since(before);
    assert!(
        wait >= Duration::from_secs(2) && wait < Duration::from_millis(2500),
        "{wait:?}"
    );
    assert_eq!(m.eps[&key(1)].h.ejections, 2);
    // A third in a row is capped at max_cooldown (4 s > 3 s).
    m.eps.get_mut(&key(1)).unwrap().until = Some(Instant::now());
    m.tick();
    let before = Instant::now();
    m.eject(&key(1), "third".into());
    let wait = m.eps[&key(1)].until.unwrap().duration_since(before);
    assert!(
        wait >= Duration::from_secs(3) && wait < Duration::from_millis(3500),
        "{wait:?}"
    );
}

#[tokio::test]
async fn new_endpoints_ramp_and_gone_ones_are_forgotten() {
    let mut m = monitor();
    m.reconcile(&snapshot(THREE));
    assert!(
        m.eps.values().all(|e| e.h.usable_since.is_none()),
        "no ramp at start"
    );
    let more = THREE.replace(
        "127.0.0.1:4}",
        "127.0.0.1:4}\n      - {address: 127.0.0.1:5}",
    );
    m.reconcile(&snapshot(&more));
    assert!(
        m.eps[&key(5)].h.usable_since.is_some(),
        "added by a reload: slow start"
    );
    assert!(m.eps[&key(4)].h.usable_since.is_none());
    m.reconcile(&snapshot(THREE));
    assert!(!m.eps.contains_key(&key(5)));
}

#[tokio::test]
async fn active_results_rise_and_fall() {
    let mut m = monitor();
    let yaml = THREE.replace(
        "    health:\n",
        "    health:\n      active: {type: tcp, interval: 1h, timeout: 1s, rise: 2, fall: 2}\n",
    );
    m.reconcile(&snapshot(&yaml));
    let k = key(1);
    let generation = m.eps[&k].generation;
    let send = |m: &mut Monitor, ok: bool| {
        m.check_result(active::CheckResult {
            key: k.clone(),
            generation,
            result: if ok {
                Ok(())
            } else {
                Err("connect: refused".into())
            },
        })
    };
    assert_eq!(m.eps[&k].h.active, Active::Up, "endpoints start up");
    send(&mut m, false);
    assert_eq!(m.eps[&k].h.active, Active::Up, "one failure of fall 2");
    send(&mut m, false);
    assert_eq!(m.eps[&k].h.active, Active::Down);
    assert_eq!(m.eps[&k].h.reason().as_deref(), Some("connect: refused"));
    send(&mut m, true);
    assert_eq!(m.eps[&k].h.active, Active::Down, "one pass of rise 2");
    send(&mut m, true);
    assert_eq!(m.eps[&k].h.active, Active::Up);
    // A stale generation (an aborted checker) is ignored.
    m.check_result(active::CheckResult {
        key: k.clone(),
        generation: generation + 7,
        result: Err("old".into()),
    });
    assert_eq!(m.eps[&k].h.checks_failed, 2);
    // Passive ejection with an active check: back only after `rise` passes.
    m.eject(&k, "streak".into());
    assert_eq!(m.eps[&k].h.active, Active::Down);
    assert!(m.eps[&k].until.is_none());
    send(&mut m, true);
    send(&mut m, true);
    assert!(m.eps[&k].h.is_up());
}

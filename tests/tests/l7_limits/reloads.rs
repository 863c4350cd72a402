//! 1000 reloads under keep-alive load without a failed request, and the last weights applied;
//! metrics read over one keep-alive admin connection.

use crate::{get, start, wait_until, T};
use lb_tests::http::{self, Backend, KeepAliveClient, Response};
use lb_tests::lb::{free_local_addr, metric_sum};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Metrics over one keep-alive admin connection (reconnects if it drops).
struct Admin {
    addr: SocketAddr,
    client: Option<KeepAliveClient>,
}

impl Admin {
    fn metric(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        for _ in 0..3 {
            if self.client.is_none() {
                self.client = KeepAliveClient::connect(self.addr, T).ok();
            }
            if let Some(c) = self.client.as_mut() {
                match c.get("admin", "/metrics") {
                    Ok(r) if r.status == 200 => return metric_sum(&r.text(), name, labels),
                    _ => self.client = None,
                }
            }
        }
        panic!("admin endpoint {} not answering", self.addr);
    }
}

#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl LoadStats {
    fn record(&self, what: &str, r: anyhow::Result<Response>) {
        match r {
            Ok(r) if r.status == 200 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut e) = self.errors.lock() {
                    if e.len() < 20 {
                        e.push(match other {
                            Ok(r) => format!("{what}: {} {}", r.status, r.text()),
                            Err(err) => format!("{what}: {err:#}"),
                        });
                    }
                }
            }
        }
    }
}

#[test]
fn thousand_reloads_under_load_fail_no_request() {
    const RELOADS: usize = 1000;
    let a = Backend::start(None, "127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let b = Backend::start(None, "127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let listen = free_local_addr();
    let config = |i: usize| {
        let (wa, wb) = if i.is_multiple_of(2) { (1, 2) } else { (2, 1) };
        let extra = if (i / 100) % 2 == 1 {
            "\n  - {hosts: [extra.test], cluster: web}"
        } else {
            ""
        };
        format!(
            r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{hosts: [web.test], cluster: web}}{extra}
clusters:
  - name: web
    endpoints:
      - {{address: "{a}", weight: {wa}}}
      - {{address: "{b}", weight: {wb}}}
"#,
            a = a.addr(),
            b = b.addr()
        )
    };
    let lb = start(&config(0));
    let mut admin = Admin {
        addr: lb.admin,
        client: None,
    };
    assert_eq!(
        admin.metric("lb_snapshot_applied_version", &[("consumer", "proxy")]),
        1.0
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let load = {
        let (stop, stats) = (stop.clone(), stats.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut ka: Option<KeepAliveClient> = None;
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if i.is_multiple_of(2) {
                    let r = match ka.as_mut() {
                        Some(c) => c.get("web.test", "/ka"),
                        None => KeepAliveClient::connect(listen, T).and_then(|mut c| {
                            let r = c.get("web.test", "/ka");
                            ka = Some(c);
                            r
                        }),
                    };
                    stats.record("keep-alive", r);
                    if i.is_multiple_of(500) {
                        ka = None;
                    }
                } else {
                    stats.record("new connection", http::get(listen, "web.test", "/new", T));
                }
            }
        })
    };

    let started = Instant::now();
    let budget = Duration::from_secs(50);
    let mut applied = 1.0;
    for i in 1..=RELOADS {
        if started.elapsed() > budget {
            break;
        }
        lb.reload(&config(i)).unwrap();
        let want = (i + 1) as f64;
        let deadline = Instant::now() + T;
        loop {
            applied = admin.metric("lb_snapshot_applied_version", &[("consumer", "proxy")]);
            if applied >= want || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(applied, want, "reload {i} not applied within {T:?}");
        if i == 100 || i == 200 {
            let status = get(listen, "extra.test", "/").status;
            let want = if i == 100 { 200 } else { 404 };
            assert_eq!(status, want, "route added/removed by reload {i}");
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (
        stats.ok.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
    );
    let errors = stats.errors.lock().unwrap().clone();
    assert_eq!(
        applied,
        (RELOADS + 1) as f64,
        "only {applied} versions applied in {took:?}"
    );
    // The reload counter is bumped after the snapshot is published, so it may trail the
    // applied version by a moment.
    let mut reloads = 0.0;
    wait_until(
        "lb_config_reloads_total{result=ok} to reach 1000",
        T,
        || {
            reloads = admin.metric("lb_config_reloads_total", &[("result", "ok")]);
            reloads >= RELOADS as f64
        },
    );
    assert_eq!(reloads, RELOADS as f64);
    assert_eq!(
        admin.metric("lb_config_reloads_total", &[("result", "invalid")]),
        0.0
    );
    assert_eq!(
        failed,
        0,
        "{failed} failed requests of {}: {errors:#?}",
        ok + failed
    );
    assert!(
        ok >= 300,
        "only {ok} requests completed during the reloads ({took:?})"
    );
    // The last config (weights a:1 b:2) is the one serving.
    let before = (a.requests(), b.requests());
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    for _ in 0..30 {
        assert_eq!(c.get("web.test", "/after").unwrap().status, 200);
    }
    let (da, db) = (a.requests() - before.0, b.requests() - before.1);
    assert!(
        (8..=12).contains(&da) && (18..=22).contains(&db),
        "weights 1:2 after the last reload, got a={da} b={db}"
    );
    eprintln!("{RELOADS} reloads in {took:?} with {ok} requests served, 0 failed");
}

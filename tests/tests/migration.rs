//! The real `lb` on loopback, issue 4: the on-prem → cloud migration driven by the runtime API
//! (1% → 100%, passive ejection, cool-down, slow start, backup), a /v2 path split, and backups.

mod support;

use lb_tests::lb::{free_local_addr, Lb};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::admin::{
    count, endpoint, endpoint_state, log_lines, metric, plain_log, put_endpoint, status_doc,
    wait_endpoint, wait_log, wait_state, wait_until, Client,
};
use support::switch::Switch;

const T: Duration = Duration::from_secs(5);

fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, &[])
}

/// Sets an endpoint's weight through the API; returns the endpoint object of the 200 reply.
fn set_weight(lb: &Lb, cluster: &str, name: &str, weight: Value) -> Value {
    put_endpoint(lb.admin, cluster, name, json!({ "weight": weight }))["endpoint"].clone()
}

/// Sets an endpoint's state through the API; returns the endpoint object of the 200 reply.
fn set_state(lb: &Lb, cluster: &str, name: &str, state: &str) -> Value {
    put_endpoint(lb.admin, cluster, name, json!({ "state": state }))["endpoint"].clone()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Sends requests (10 ms apart) until `victim` is down, at most `max` requests. Every
/// non-200 must be a 503 from `victim`. Returns how many requests failed.
fn fail_until_down(lb: &Lb, c: &mut Client, cluster: &str, victim: &str, max: usize) -> usize {
    let mut failed = 0;
    for _ in 0..max {
        let (who, status) = c.hit("/");
        if status != 200 {
            assert_eq!((who.as_str(), status), (victim, 503));
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
        if endpoint_state(lb, cluster, victim) == "down" {
            return failed;
        }
    }
    panic!(
        "{cluster}/{victim} not down after {max} requests ({failed} failed)\nlog:\n{}",
        plain_log(lb)
    )
}

// ---------------------------------------------------------------------------------------------
// 1. The migration (the issue's headline acceptance)
// ---------------------------------------------------------------------------------------------

fn migration_config(listen: SocketAddr, onprem: &Switch, cloud: &Switch, backup: bool) -> String {
    format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    health:
      passive: {{consecutive_errors: 3, cooldown: 1s, max_cooldown: 2s}}
      slow_start: 2s
    endpoints:
      - {{name: onprem, address: "{o}", weight: 100, backup: {backup}}}
      - {{name: cloud, address: "{c}", weight: 100}}
"#,
        o = onprem.addr(),
        c = cloud.addr(),
    )
}

#[test]
fn migration_scenario() {
    let onprem = Switch::start("onprem");
    let cloud = Switch::start("cloud");
    let listen = free_local_addr();
    let lb = start(&migration_config(listen, &onprem, &cloud, false));
    let mut c = Client::new(listen);
    let labels = |state: &'static str| -> [(&'static str, &'static str); 3] {
        [("cluster", "app"), ("endpoint", "cloud"), ("state", state)]
    };

    // Day 0: everything on-prem.
    let e = set_weight(&lb, "app", "cloud", json!(0));
    assert_eq!(e["weight"].as_f64(), Some(0.0), "{e}");
    assert_eq!(e["in_use"], false, "{e}");
    c.all_to("/", 200, "onprem");

    // 1% → 100%: smooth weighted round robin is exact over each full cycle of
    // (100 + w) / gcd(100, w) picks, w = cloud's weight (percent of 100, rounded up).
    for pct in [1usize, 2, 5, 25, 100] {
        let e = set_weight(&lb, "app", "cloud", json!(format!("{pct}%")));
        assert_eq!(e["weight"].as_f64(), Some(pct as f64), "{pct}%: {e}");
        assert_eq!(e["state"], "up", "{pct}%: {e}");
        let g = gcd(100, pct);
        let cycle = (100 + pct) / g;
        let cycles = 400usize.div_ceil(cycle);
        let n = cycle * cycles;
        let m = c.tally("/", n);
        let got = count(&m, "cloud");
        assert_eq!(got, cycles * pct / g, "{pct}%: {n} requests: {m:?}");
        assert_eq!(count(&m, "onprem") + got, n, "{m:?}");
        let share = got as f64 / n as f64;
        let want = pct as f64 / (100 + pct) as f64;
        assert!(
            (share - want).abs() < 0.015,
            "{pct}%: share {share} vs {want}"
        );
    }

    // Cloud breaks: ejected after 3 consecutive errors (plus what was in flight).
    cloud.set_status(503);
    let failed = fail_until_down(&lb, &mut c, "app", "cloud", 60);
    assert!(
        (3..=6).contains(&failed),
        "{failed} failed requests before cloud was ejected"
    );
    let d = status_doc(&lb);
    let e = endpoint(&d, "app", "cloud");
    assert_eq!(e["state"], "down", "{e}");
    assert_eq!(e["in_use"], false, "{e}");
    let h = &e["health"];
    assert_eq!(h["passive"], "ejected", "{e}");
    let reason = h["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("3 consecutive errors") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(h["ejections"].as_f64(), Some(1.0), "{e}");
    let down_lines = log_lines(&lb, "endpoint is down", Some("cloud"));
    assert_eq!(down_lines.len(), 1, "{down_lines:?}");
    assert_eq!(metric(&lb, "lb_endpoint_state", &labels("down")), 1.0);
    assert_eq!(metric(&lb, "lb_endpoint_state", &labels("up")), 0.0);
    let ejections = [("cluster", "app"), ("endpoint", "cloud")];
    assert_eq!(metric(&lb, "lb_endpoint_ejections_total", &ejections), 1.0);
    let cloud_before = cloud.requests();
    c.all_to("/", 200, "onprem"); // all on-prem while cloud is out
    assert_eq!(cloud.requests(), cloud_before, "no request reached cloud");

    // Cloud heals: back after the 1 s cool-down, ramping up (slow start 2 s).
    cloud.set_status(200);
    let e = wait_state(&lb, "app", "cloud", "up", Duration::from_secs(5));
    let ramp = e["slow_start"].as_f64();
    assert!(ramp.is_some_and(|f| f > 0.0 && f < 1.0), "{e}");
    let eff = e["effective_weight"].as_f64().unwrap();
    assert!(
        eff > 0.0 && eff < 100.0,
        "effective weight in slow start: {e}"
    );
    let m = c.tally("/", 200);
    assert!(
        count(&m, "cloud") < 80,
        "cloud's share during slow start below its full 50%: {m:?}"
    );
    assert!(!log_lines(&lb, "endpoint is up", Some("cloud")).is_empty());
    assert_eq!(metric(&lb, "lb_endpoint_state", &labels("up")), 1.0);
    assert_eq!(
        metric(&lb, "lb_endpoint_transitions_total", &labels("up")),
        1.0
    );
    let six = Duration::from_secs(6);
    wait_endpoint(&lb, "app", "cloud", six, "end of slow start", |e| {
        e["slow_start"].is_null() && e["effective_weight"].as_f64() == Some(100.0)
    });
    let m = c.tally("/", 400);
    let got = count(&m, "cloud");
    assert!((194..=206).contains(&got), "50/50 after slow start: {m:?}");

    // Reload: on-prem becomes the backup; everything goes to cloud.
    lb.reload(&migration_config(listen, &onprem, &cloud, true))
        .unwrap();
    wait_endpoint(&lb, "app", "onprem", T, "backup after reload", |e| {
        e["backup"] == true
    });
    c.all_to("/", 100, "cloud");

    // Cloud breaks again: the backup takes over.
    cloud.set_status(503);
    let failed = fail_until_down(&lb, &mut c, "app", "cloud", 60);
    assert!((3..=6).contains(&failed), "{failed} failed requests");
    c.all_to("/", 100, "onprem"); // the backup serves
    assert_eq!(metric(&lb, "lb_endpoint_ejections_total", &ejections), 2.0);

    // Cloud heals: traffic returns to cloud only (the backup is idle again).
    cloud.set_status(200);
    wait_state(&lb, "app", "cloud", "up", six);
    c.all_to("/", 100, "cloud");
    let d = status_doc(&lb);
    let onprem_weight = endpoint(&d, "app", "onprem")["effective_weight"].as_f64();
    assert_eq!(onprem_weight, Some(0.0));
}

// ---------------------------------------------------------------------------------------------
// 2. Path split: /v2 migrates, the rest stays
// ---------------------------------------------------------------------------------------------

#[test]
fn path_split_v2_migrates_rest_stays() {
    let onprem = Switch::start("onprem");
    let cloud = Switch::start("cloud");
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{name: v2, hosts: ["*"], path: {{prefix: /v2}}, cluster: migrating}}
  - {{name: rest, hosts: ["*"], cluster: onprem_only}}
clusters:
  - name: onprem_only
    endpoints: [{{name: onprem, address: "{o}", weight: 4}}]
  - name: migrating
    endpoints:
      - {{name: onprem, address: "{o}", weight: 4}}
      - {{name: cloud, address: "{c}", weight: 1}}
"#,
        o = onprem.addr(),
        c = cloud.addr(),
    ));
    let mut c = Client::new(listen);
    let split = |c: &mut Client, path: &str, n: usize| {
        let m = c.tally(path, n);
        (count(&m, "onprem"), count(&m, "cloud"))
    };
    // 4:1 → cycle of 5, cloud once per cycle.
    assert_eq!(split(&mut c, "/v2/items", 500), (400, 100));
    let cloud_before = cloud.requests();
    c.all_to("/other/thing", 200, "onprem");
    assert_eq!(cloud.requests(), cloud_before, "/other never reaches cloud");

    // The API moves /v2 further (cloud at 4 = 50%); the rest still stays on-prem.
    set_weight(&lb, "migrating", "cloud", json!(4));
    assert_eq!(split(&mut c, "/v2/", 200), (100, 100));
    c.all_to("/", 100, "onprem");
    assert_eq!(cloud.requests(), cloud_before + 100);
    let served = |ep: &str| {
        let labels = [("cluster", "onprem_only"), ("endpoint", ep)];
        metric(&lb, "lb_endpoint_requests_total", &labels)
    };
    assert_eq!((served("onprem"), served("cloud")), (300.0, 0.0));
}

// ---------------------------------------------------------------------------------------------
// 3. Backups: first versus all
// ---------------------------------------------------------------------------------------------

fn backups_config(listen: SocketAddr, s: &[Switch], mode: &str) -> String {
    format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
admin: {{keep_runtime_overrides: true}}
routes:
  - {{hosts: ["*"], cluster: app}}
clusters:
  - name: app
    backups: {mode}
    endpoints:
      - {{name: p1, address: "{}", weight: 2}}
      - {{name: p2, address: "{}", weight: 1}}
      - {{name: b1, address: "{}", weight: 1, backup: true}}
      - {{name: b2, address: "{}", weight: 3, backup: true}}
"#,
        s[0].addr(),
        s[1].addr(),
        s[2].addr(),
        s[3].addr(),
    )
}

#[test]
fn backups_first_versus_all() {
    let s: Vec<Switch> = ["p1", "p2", "b1", "b2"].map(Switch::start).into();
    let listen = free_local_addr();
    let lb = start(&backups_config(listen, &s, "first"));
    let mut c = Client::new(listen);
    let m = c.tally("/", 300);
    assert_eq!((count(&m, "p1"), count(&m, "p2")), (200, 100), "{m:?}");

    // Both primaries in maintenance: only the first backup serves.
    for p in ["p1", "p2"] {
        let e = set_state(&lb, "app", p, "maint");
        assert_eq!(e["state"], "maint", "{e}");
    }
    let d = status_doc(&lb);
    for (name, weight) in [("b1", 1.0), ("b2", 0.0)] {
        let e = endpoint(&d, "app", name);
        assert_eq!(e["effective_weight"].as_f64(), Some(weight), "{e}");
    }
    c.all_to("/", 100, "b1"); // backups: first

    // backups: all (the overrides are kept across the reload): both backups by weight 1:3.
    lb.reload(&backups_config(listen, &s, "all")).unwrap();
    wait_log(&lb, "runtime_overrides_kept=2", T);
    let applied = wait_until(T, || status_doc(&lb)["clusters"][0]["backups"] == "all");
    assert!(applied, "reload not applied:\n{}", plain_log(&lb));
    assert_eq!(endpoint_state(&lb, "app", "p1"), "maint");
    let m = c.tally("/", 400);
    assert_eq!(
        (count(&m, "b1"), count(&m, "b2")),
        (100, 300),
        "backups: all: {m:?}"
    );

    // A primary back: backups get nothing.
    let e = set_state(&lb, "app", "p2", "ready");
    assert_eq!(e["state"], "up", "{e}");
    let (b1, b2) = (s[2].requests(), s[3].requests());
    c.all_to("/", 100, "p2");
    assert_eq!((s[2].requests(), s[3].requests()), (b1, b2));
}

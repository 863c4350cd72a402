//! The real `lb` on loopback, issue 4: active HTTP/TCP checks (rise, fall, body), the ejection
//! cap, error-ratio ejection, and drain/maint/ready through `lb ctl` and the runtime API.

mod support;

use lb_tests::lb::{free_local_addr, Lb};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::admin::{
    api_put, count, ctl, endpoint, endpoint_state, json_of, log_lines, metric, plain_log,
    status_doc, wait_endpoint, wait_state, Client,
};
use support::switch::Switch;

const T: Duration = Duration::from_secs(5);

fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, &[])
}

/// A config routing every host to cluster `app` of the named switches, with `health` (the
/// inside of a YAML flow mapping; none when empty) as the cluster's health section.
fn app_config(listen: SocketAddr, health: &str, eps: &[(&str, &Switch)]) -> String {
    let mut yaml = format!(
        "listeners: [{{name: web, address: \"{listen}\"}}]\nroutes:\n  - {{hosts: [\"*\"], cluster: app}}\n\
         clusters:\n  - name: app\n"
    );
    if !health.is_empty() {
        yaml.push_str(&format!("    health: {{{health}}}\n"));
    }
    yaml.push_str("    endpoints:\n");
    for (name, s) in eps {
        yaml.push_str(&format!(
            "      - {{name: {name}, address: \"{}\"}}\n",
            s.addr()
        ));
    }
    yaml
}

// ---------------------------------------------------------------------------------------------
// 1. Active checks: HTTP rise/fall, body_contains, TCP
// ---------------------------------------------------------------------------------------------

#[test]
fn active_http_check_rise_fall() {
    let alpha = Switch::start("alpha");
    let beta = Switch::start("beta");
    let gamma = Switch::start("gamma");
    let delta = Switch::start("delta");
    let ghost = free_local_addr(); // nothing listens there
    let listen = free_local_addr();
    let lb = start(&format!(
        r#"
listeners: [{{name: web, address: "{listen}"}}]
routes:
  - {{hosts: [app.test], cluster: app}}
  - {{hosts: [strict.test], cluster: strict}}
  - {{hosts: [tcp.test], cluster: tcp}}
clusters:
  - name: app
    health:
      active: {{path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2, expect_status: ["200"]}}
    endpoints:
      - {{name: alpha, address: "{a}"}}
      - {{name: beta, address: "{b}"}}
  - name: strict
    health:
      active: {{path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2, body_contains: healthy}}
    endpoints:
      - {{name: gamma, address: "{g}"}}
  - name: tcp
    health:
      active: {{type: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}}
    endpoints:
      - {{name: ghost, address: "{ghost}"}}
      - {{name: delta, address: "{d}"}}
"#,
        a = alpha.addr(),
        b = beta.addr(),
        g = gamma.addr(),
        d = delta.addr(),
    ));
    let three = Duration::from_secs(3);
    // Checks run: both app endpoints pass; a 200 without the text fails; TCP to no listener fails.
    for name in ["alpha", "beta"] {
        wait_endpoint(&lb, "app", name, three, "passing checks", |e| {
            e["health"]["checks_ok"].as_f64() >= Some(2.0) && e["state"] == "up"
        });
    }
    assert!(alpha.checks() >= 2 && beta.checks() >= 2);
    let g = wait_state(&lb, "strict", "gamma", "down", three);
    let why = g["health"]["reason"].as_str().unwrap_or("");
    assert!(why.contains("body does not contain"), "{g}");
    let gh = wait_state(&lb, "tcp", "ghost", "down", three);
    assert_eq!(gh["health"]["active"], "down", "{gh}");
    let why = gh["health"]["reason"].as_str().unwrap_or("");
    assert!(why.starts_with("connect"), "{gh}");
    assert_eq!(endpoint_state(&lb, "tcp", "delta"), "up");

    // alpha fails its checks: down after `fall` failures, traffic avoids it.
    alpha.set_status(503);
    let since = Instant::now();
    let e = wait_state(&lb, "app", "alpha", "down", three);
    assert!(since.elapsed() < three);
    assert_eq!(e["health"]["active"], "down", "{e}");
    assert_eq!(e["health"]["reason"], "status 503", "{e}");
    let mut c = Client::new(listen);
    c.all_to("/", 100, "beta");
    assert!(!log_lines(&lb, "endpoint is down", Some("alpha")).is_empty());

    // alpha heals: up after `rise` passes, and gets traffic again.
    alpha.set_status(200);
    wait_state(&lb, "app", "alpha", "up", three);
    let m = c.tally("/", 100);
    assert!(count(&m, "alpha") >= 40, "{m:?}");
    assert!(!log_lines(&lb, "endpoint is up", Some("alpha")).is_empty());

    let a = |k: &'static str, v: &'static str| -> [(&'static str, &'static str); 3] {
        [("cluster", "app"), ("endpoint", "alpha"), (k, v)]
    };
    assert!(metric(&lb, "lb_health_checks_total", &a("result", "failed")) >= 2.0);
    assert!(metric(&lb, "lb_health_checks_total", &a("result", "ok")) >= 4.0);
    assert!(metric(&lb, "lb_endpoint_transitions_total", &a("state", "down")) >= 1.0);
    assert!(metric(&lb, "lb_endpoint_transitions_total", &a("state", "up")) >= 1.0);
    let ghost_labels = [("cluster", "tcp"), ("endpoint", "ghost")];
    let down = [ghost_labels[0], ghost_labels[1], ("state", "down")];
    assert_eq!(metric(&lb, "lb_endpoint_transitions_total", &down), 1.0);
    assert_eq!(metric(&lb, "lb_endpoint_state", &down), 1.0);
    let failed = [ghost_labels[0], ghost_labels[1], ("result", "failed")];
    assert!(metric(&lb, "lb_health_checks_total", &failed) >= 2.0);
}

// ---------------------------------------------------------------------------------------------
// 2. max_ejection_percent
// ---------------------------------------------------------------------------------------------

#[test]
fn max_ejection_percent_protects_the_cluster() {
    let x = Switch::start("x");
    let y = Switch::start("y");
    x.set_status(503);
    y.set_status(503);
    let listen = free_local_addr();
    let health = "passive: {consecutive_errors: 3, cooldown: 30s, max_cooldown: 60s, max_ejection_percent: 50}";
    let lb = start(&app_config(listen, health, &[("x", &x), ("y", &y)]));
    let mut c = Client::new(listen);
    let mut served = BTreeMap::new();
    let deadline = Instant::now() + T;
    for _ in 0..60 {
        let (who, status) = c.hit("/");
        assert_eq!(status, 503);
        *served.entry(who).or_insert(0usize) += 1;
        std::thread::sleep(Duration::from_millis(10));
        if !log_lines(&lb, "not ejecting", None).is_empty() || Instant::now() > deadline {
            break;
        }
    }
    let lines = log_lines(&lb, "not ejecting", None);
    assert!(!lines.is_empty(), "{served:?}\nlog:\n{}", plain_log(&lb));
    let d = status_doc(&lb);
    let states: Vec<&str> = ["x", "y"]
        .iter()
        .map(|n| endpoint(&d, "app", n)["state"].as_str().unwrap_or("?"))
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, ["down", "up"], "exactly one ejected: {states:?}");
    let survivor = if states[0] == "up" { "x" } else { "y" };
    assert_eq!(
        log_lines(&lb, "not ejecting", Some(survivor)).len(),
        lines.len(),
        "only the survivor is refused: {lines:?}"
    );
    assert_eq!(
        metric(&lb, "lb_endpoint_ejections_total", &[("cluster", "app")]),
        1.0
    );
    assert_eq!(log_lines(&lb, "endpoint is down", None).len(), 1);
    // The survivor keeps serving (its 503s go to the client).
    for _ in 0..10 {
        assert_eq!(c.hit("/"), (survivor.to_string(), 503));
    }
    assert_eq!(endpoint_state(&lb, "app", survivor), "up");
}

// ---------------------------------------------------------------------------------------------
// 3. Error-ratio ejection
// ---------------------------------------------------------------------------------------------

#[test]
fn error_ratio_ejects() {
    let good = Switch::start("good");
    let flaky = Switch::start("flaky");
    flaky.set_alternate(true);
    let listen = free_local_addr();
    let health = "passive: {consecutive_errors: 1000, error_percent: 50, window: 2s, min_requests: 10, cooldown: 30s, max_cooldown: 60s}";
    let lb = start(&app_config(
        listen,
        health,
        &[("good", &good), ("flaky", &flaky)],
    ));
    let mut c = Client::new(listen);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut sent = 0;
    let mut ejected = false;
    while sent < 2000 && Instant::now() < deadline {
        let (who, status) = c.hit("/");
        assert!(
            status == 200 || (who == "flaky" && status == 503),
            "{who} {status}"
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
        if sent % 10 == 0 && endpoint_state(&lb, "app", "flaky") == "down" {
            ejected = true;
            break;
        }
    }
    assert!(
        ejected,
        "flaky not ejected after {sent} requests\nlog:\n{}",
        plain_log(&lb)
    );
    let d = status_doc(&lb);
    let e = endpoint(&d, "app", "flaky");
    let reason = e["health"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("errors") && !reason.contains("consecutive"),
        "{e}"
    );
    assert_eq!(e["health"]["ejections"].as_f64(), Some(1.0), "{e}");
    assert_eq!(endpoint(&d, "app", "good")["state"], "up");
    assert_eq!(
        metric(
            &lb,
            "lb_endpoint_ejections_total",
            &[("cluster", "app"), ("endpoint", "flaky")]
        ),
        1.0
    );
    let lines = log_lines(&lb, "endpoint is down", Some("flaky"));
    assert!(lines.iter().any(|l| l.contains("errors")), "{lines:?}");
    c.all_to("/", 50, "good");
}

// ---------------------------------------------------------------------------------------------
// 4. Drain / maint / ready through lb ctl
// ---------------------------------------------------------------------------------------------

#[test]
fn drain_and_maint_via_api_and_ctl() {
    let onprem = Switch::start("onprem");
    let cloud = Switch::start("cloud");
    let listen = free_local_addr();
    let lb = start(&app_config(
        listen,
        "",
        &[("onprem", &onprem), ("cloud", &cloud)],
    ));
    let admin = lb.admin;
    let mut c = Client::new(listen);
    let even = |c: &mut Client| {
        let m = c.tally("/", 10);
        assert_eq!((count(&m, "onprem"), count(&m, "cloud")), (5, 5), "{m:?}");
    };
    // `lb ctl ACTION app cloud` succeeds and reports the new state.
    let ctl_state = |action: &str, want: &str| {
        let o = ctl(admin, &[action, "app", "cloud"]);
        let line = format!("app/cloud: state {want}");
        assert!(o.ok() && o.stdout.contains(&line), "{}", o.all());
    };
    even(&mut c);

    ctl_state("drain", "drain");
    let before = cloud.requests();
    c.all_to("/", 50, "onprem");
    assert_eq!(cloud.requests(), before);
    let d = status_doc(&lb);
    let e = endpoint(&d, "app", "cloud");
    assert_eq!(e["override"]["state"], "drain", "{e}");

    ctl_state("ready", "up");
    assert!(endpoint(&status_doc(&lb), "app", "cloud")["override"].is_null());
    even(&mut c);

    ctl_state("maint", "maint");
    assert_eq!(endpoint_state(&lb, "app", "cloud"), "maint");
    let maint = [
        ("cluster", "app"),
        ("endpoint", "cloud"),
        ("state", "maint"),
    ];
    assert_eq!(metric(&lb, "lb_endpoint_state", &maint), 1.0);
    c.all_to("/", 20, "onprem");

    let o = ctl(admin, &["status"]);
    assert!(o.ok(), "{}", o.stderr);
    let out = o.stdout;
    let row = |name: &str, addr: SocketAddr| {
        out.lines()
            .any(|l| l.contains(name) && l.contains(&addr.to_string()))
    };
    assert!(
        out.contains("cluster app") && row("onprem", onprem.addr()) && row("cloud", cloud.addr()),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("cloud") && l.contains("maint")),
        "{out}"
    );

    let o = ctl(admin, &["set-weight", "app", "nope", "5"]);
    assert!(!o.ok(), "{}", o.stdout);
    assert!(
        o.stderr.contains("404") && o.stderr.contains("nope"),
        "{}",
        o.stderr
    );
    // And the API itself: the same refusal as JSON, nothing changed.
    let r = api_put(admin, "app", "nope", b"{\"weight\": 5}");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(json_of(&r)["error"].is_string());
    assert_eq!(endpoint_state(&lb, "app", "cloud"), "maint");
}

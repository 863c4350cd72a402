//! Per-route rate limits (`routes[].rate_limit`) on the real `lb` process over loopback: the
//! listener limit's 429 on the limited route only, listener first, and buckets across reloads.

mod support;

use lb_tests::http::{KeepAliveClient, Response};
use lb_tests::lb::{free_local_addr, Lb};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::origin::Origin;

const T: Duration = Duration::from_secs(5);

/// `lb run` with file watching off (reloads only by SIGHUP).
fn start(yaml: &str) -> Lb<'static> {
    support::start_lb(yaml, &["--watch-secs", "0"])
}

/// A listener with `listener_limit`, route `limited` (limited.test) with `route_limit` if any,
/// route `free` (free.test) answering with `x-gen: GEN`, both to `origin`.
fn config(
    listen: SocketAddr,
    origin: SocketAddr,
    listener_limit: &str,
    route_limit: Option<&str>,
    gen: u32,
) -> String {
    let limit = route_limit
        .map(|l| format!(", rate_limit: {l}"))
        .unwrap_or_default();
    format!(
        r#"
listeners: [{{name: http, address: "{listen}", rate_limit: {listener_limit}}}]
routes:
  - {{name: limited, hosts: [limited.test], cluster: c{limit}}}
  - {{name: free, hosts: [free.test], cluster: c, response_headers: {{set: {{x-gen: "{gen}"}}}}}}
clusters: [{{name: c, endpoints: [{{address: "{origin}"}}]}}]
"#
    )
}

const GENEROUS: &str = "{requests_per_second: 1000, burst: 1000}";

/// `n` requests to `host` on one keep-alive connection: their statuses and the time they took.
/// Every 429 must be the listener limit's answer.
fn burst(c: &mut KeepAliveClient, host: &str, n: usize) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let statuses = (0..n)
        .map(|_| {
            let r = c.get(host, "/").unwrap();
            if r.status == 429 {
                limited_answer(&r);
            }
            r.status
        })
        .collect();
    (statuses, started.elapsed())
}

/// What the listener limit answers: 429, `Retry-After: 1`, its text, the connection kept.
fn limited_answer(r: &Response) {
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert_eq!(r.text(), "429 Too Many Requests\nrate limit exceeded\n");
    assert_eq!(r.header("connection"), None, "{:?}", r.headers);
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Tokens a bucket refilling `rate` per second gains in `d` (whole ones, plus one for a
/// fraction left over from before).
fn refill(rate: u32, d: Duration) -> usize {
    (d.as_millis() * u128::from(rate) / 1000) as usize + 1
}

/// Polls free.test until it answers with `x-gen: gen` (the reloaded table is live).
fn wait_generation(c: &mut KeepAliveClient, gen: u32) {
    let deadline = Instant::now() + T;
    let want = gen.to_string();
    while Instant::now() < deadline {
        let r = c.get("free.test", "/").unwrap();
        if r.status == 200 && r.header("x-gen") == Some(want.as_str()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the reload to generation {gen} did not take effect within {T:?}");
}

/// The access log record (JSON) of a request on `route` answered with `status`.
fn log_record(lb: &Lb<'_>, route: &str, status: u64) -> serde_json::Value {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let found = lb.log().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["route"] == route && v["status"] == status).then_some(v)
        });
        if let Some(v) = found {
            return v;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "no access log record for route {route} with {status}:\n{}",
        lb.log()
    );
}

#[test]
fn route_limit_answers_429_on_its_route_only() {
    let o = Origin::plain("o").unwrap();
    let listen = free_local_addr();
    let rl = "{requests_per_second: 5, burst: 5}";
    let lb = start(&config(listen, o.addr(), GENEROUS, Some(rl), 1));
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    // Requests on another route, and requests matching no route, count against no route limit.
    let (free, _) = burst(&mut c, "free.test", 30);
    assert_eq!(count(&free, 200), 30, "{free:?}");
    let (none, _) = burst(&mut c, "nowhere.test", 10);
    assert_eq!(count(&none, 404), 10, "{none:?}");

    let (statuses, took) = burst(&mut c, "limited.test", 20);
    let (ok, limited) = (count(&statuses, 200), count(&statuses, 429));
    assert_eq!(ok + limited, 20, "{statuses:?}");
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        ok <= 5 + refill(5, took) && limited > 0,
        "burst 5 at 5/s over {took:?}: {statuses:?}"
    );

    // The other route is unaffected while the limited one is over its limit.
    let (free, _) = burst(&mut c, "free.test", 30);
    assert_eq!(count(&free, 200), 30, "{free:?}");
    assert_eq!(o.requests(), (60 + ok) as u64, "a 429 reached the origin");

    // Counted on the route as the listener limit's 429s are, and logged with PR.
    let route_4xx = |route: &str| {
        lb.metric(
            "lb_route_requests_total",
            &[("route", route), ("class", "4xx")],
        )
        .unwrap()
    };
    assert_eq!(route_4xx("limited"), limited as f64);
    assert_eq!(route_4xx("free"), 0.0);
    let code_429 = lb
        .metric("lb_http_responses_total", &[("code", "429")])
        .unwrap();
    assert_eq!(code_429, limited as f64);
    let rec = log_record(&lb, "limited", 429);
    assert_eq!(rec["termination"], "PR", "{rec}");
    assert_eq!(rec["cluster"], serde_json::Value::Null, "{rec}");
}

#[test]
fn the_listener_limit_is_checked_first() {
    let o = Origin::plain("o").unwrap();
    let listen = free_local_addr();
    let listener = "{requests_per_second: 1, burst: 10}";
    let route = "{requests_per_second: 1, burst: 3}";
    let _lb = start(&config(listen, o.addr(), listener, Some(route), 1));
    let mut c = KeepAliveClient::connect(listen, T).unwrap();
    let started = Instant::now();
    let (statuses, _) = burst(&mut c, "limited.test", 10);
    assert!(statuses[..3].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(count(&statuses, 429) > 0, "{statuses:?}");
    // The route's refusals took the listener's tokens too (it checked them first): what the
    // listener has left for another route is only what it refilled meanwhile. Checked the
    // other way round, 7 of the listener's 10 would be left.
    let (free, _) = burst(&mut c, "free.test", 7);
    let refilled = refill(1, started.elapsed()) - 1;
    assert!(
        count(&free, 200) <= refilled,
        "listener bucket after 10 requests (+{refilled} refilled): {free:?}"
    );
}

#[test]
fn reloads_keep_an_unchanged_route_limit_and_apply_a_changed_one() {
    let o = Origin::plain("o").unwrap();
    let listen = free_local_addr();
    let cfg = |route: Option<&str>, gen| config(listen, o.addr(), GENEROUS, route, gen);
    let slow = "{requests_per_second: 1, burst: 20}";
    let lb = start(&cfg(Some(slow), 1));
    let mut c = KeepAliveClient::connect(listen, T).unwrap();

    let (statuses, _) = burst(&mut c, "limited.test", 25);
    assert!(statuses[..20].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(count(&statuses, 429) > 0, "{statuses:?}");
    let exhausted = Instant::now();

    // Same limit, another change: the bucket is kept, not refilled by the reload.
    lb.reload(&cfg(Some(slow), 2)).unwrap();
    wait_generation(&mut c, 2);
    let (statuses, _) = burst(&mut c, "limited.test", 10);
    let refilled = refill(1, exhausted.elapsed());
    assert!(
        count(&statuses, 200) <= refilled,
        "reload kept the limit {:?} after the bucket emptied (a new one gives 10): {statuses:?}",
        exhausted.elapsed()
    );

    // A changed limit takes effect with full buckets of its own.
    let more = "{requests_per_second: 1, burst: 30}";
    lb.reload(&cfg(Some(more), 3)).unwrap();
    wait_generation(&mut c, 3);
    let (statuses, took) = burst(&mut c, "limited.test", 40);
    let ok = count(&statuses, 200);
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(ok <= 30 + refill(1, took), "{statuses:?}");
    assert!(count(&statuses, 429) > 0, "{statuses:?}");
    assert_eq!(ok + count(&statuses, 429), 40, "{statuses:?}");

    // No limit: nothing is refused.
    lb.reload(&cfg(None, 4)).unwrap();
    wait_generation(&mut c, 4);
    let (statuses, _) = burst(&mut c, "limited.test", 50);
    assert_eq!(count(&statuses, 200), 50, "{statuses:?}");
}

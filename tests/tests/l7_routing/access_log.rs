//! The access log: a flat-JSON record parser, the JSON records for successes and each error
//! kind, and the HAProxy-like text format.

use crate::{backend, get, raw_status, served_by, start, values, T};
use lb_tests::lb::{free_local_addr, Lb};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
enum J {
    Str(String),
    /// Numbers, true/false, null: the raw token.
    Raw(String),
}

impl J {
    fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            J::Raw(_) => None,
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            J::Raw(r) => r.parse().ok(),
            J::Str(_) => None,
        }
    }
    fn is_null(&self) -> bool {
        *self == J::Raw("null".into())
    }
}

/// Parses one flat JSON object (string/number/bool/null values), as the access log writes.
fn parse_flat_json(line: &str) -> Option<HashMap<String, J>> {
    let b: Vec<char> = line.trim().chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Option<String> {
        if b.get(*i) != Some(&'"') {
            return None;
        }
        *i += 1;
        let mut s = String::new();
        while *i < b.len() {
            let c = b[*i];
            *i += 1;
            match c {
                '"' => return Some(s),
                '\\' => {
                    let e = *b.get(*i)?;
                    *i += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'u' => {
                            let hex: String = b.get(*i..*i + 4)?.iter().collect();
                            *i += 4;
                            s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        other => s.push(other),
                    }
                }
                c => s.push(c),
            }
        }
        None
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&'{') {
        return None;
    }
    i += 1;
    let mut out = HashMap::new();
    loop {
        skip_ws(&mut i);
        if b.get(i) == Some(&'}') {
            return Some(out);
        }
        let key = string(&mut i)?;
        skip_ws(&mut i);
        if b.get(i) != Some(&':') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let value = if b.get(i) == Some(&'"') {
            J::Str(string(&mut i)?)
        } else {
            let start = i;
            while i < b.len() && !matches!(b[i], ',' | '}') && !b[i].is_whitespace() {
                i += 1;
            }
            J::Raw(b[start..i].iter().collect())
        };
        out.insert(key, value);
        skip_ws(&mut i);
        match b.get(i) {
            Some(',') => i += 1,
            Some('}') => return Some(out),
            _ => return None,
        }
    }
}

/// Access-log JSON records in lb's output.
fn json_records(lb: &Lb) -> Vec<HashMap<String, J>> {
    lb.log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(parse_flat_json)
        .collect()
}

/// Waits (bounded) for the JSON record whose `path` is `path`.
fn wait_record(lb: &Lb, path: &str) -> HashMap<String, J> {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if let Some(r) = json_records(lb)
            .into_iter()
            .find(|r| r.get("path").and_then(J::str) == Some(path))
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no access-log record for {path}; log:\n{}", lb.log());
}

fn field<'a>(rec: &'a HashMap<String, J>, name: &str) -> &'a J {
    rec.get(name)
        .unwrap_or_else(|| panic!("record has no {name:?}: {rec:?}"))
}

fn sfield<'a>(rec: &'a HashMap<String, J>, name: &str) -> &'a str {
    field(rec, name)
        .str()
        .unwrap_or_else(|| panic!("{name} is not a string: {rec:?}"))
}

#[test]
fn access_log_json_records_success_and_errors() {
    let b = backend("b");
    let (listen, refused) = (free_local_addr(), free_local_addr());
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - {{name: api, hosts: [log.test], cluster: web}}
  - {{name: broken, hosts: [refused.test], cluster: refused}}
  - {{name: nothing, hosts: [empty.test], cluster: empty}}
clusters:
  - {{name: web, endpoints: [{{address: "{}"}}]}}
  - {{name: refused, connect_timeout: 1s, endpoints: [{{address: "{refused}"}}]}}
  - {{name: empty}}
"#,
        b.addr()
    );
    let lb = start(&yaml);
    served_by(&get(listen, "log.test", "/log/ok?x=1"));
    let backend_id = values(&b.last_request_headers(), "x-request-id")[0].clone();
    let rec = wait_record(&lb, "/log/ok?x=1");
    assert_eq!(field(&rec, "status").num(), Some(200.0), "{rec:?}");
    assert_eq!(sfield(&rec, "route"), "api");
    assert_eq!(sfield(&rec, "cluster"), "web");
    assert_eq!(sfield(&rec, "endpoint"), b.addr().to_string());
    assert_eq!(sfield(&rec, "method"), "GET");
    assert_eq!(sfield(&rec, "host"), "log.test");
    assert_eq!(sfield(&rec, "listener"), "http");
    assert_eq!(sfield(&rec, "protocol"), "HTTP/1.1");
    assert_eq!(field(&rec, "retries").num(), Some(0.0));
    assert_eq!(sfield(&rec, "termination"), "--");
    assert_eq!(
        sfield(&rec, "request_id"),
        backend_id,
        "log and backend ids differ"
    );
    assert!(sfield(&rec, "client").starts_with("127.0.0.1:"), "{rec:?}");
    let total = field(&rec, "t_total_ms")
        .num()
        .expect("t_total_ms is a number");
    let resp = field(&rec, "t_response_ms")
        .num()
        .expect("t_response_ms is a number");
    assert!(total >= 0.0 && resp >= 0.0 && resp <= total, "{rec:?}");
    assert!(
        field(&rec, "t_connect_ms").num().is_some(),
        "first request connects: {rec:?}"
    );
    assert!(
        field(&rec, "error").is_null() && field(&rec, "error_source").is_null(),
        "{rec:?}"
    );
    assert!(
        field(&rec, "bytes_out").num().is_some_and(|n| n > 0.0),
        "{rec:?}"
    );
    rfc3339_like(sfield(&rec, "time"));

    // Connection refused: 503, upstream, the endpoint that refused.
    assert_eq!(get(listen, "refused.test", "/log/refused").status, 503);
    let rec = wait_record(&lb, "/log/refused");
    assert_eq!(field(&rec, "status").num(), Some(503.0));
    assert_eq!(sfield(&rec, "error_source"), "upstream", "{rec:?}");
    assert_eq!(sfield(&rec, "termination"), "SC");
    assert_eq!(sfield(&rec, "route"), "broken");
    assert_eq!(sfield(&rec, "cluster"), "refused");
    assert_eq!(sfield(&rec, "endpoint"), refused.to_string());
    assert!(!sfield(&rec, "error").is_empty());

    // No endpoint at all: 503, upstream.
    assert_eq!(get(listen, "empty.test", "/log/empty").status, 503);
    let rec = wait_record(&lb, "/log/empty");
    assert_eq!(field(&rec, "status").num(), Some(503.0));
    assert_eq!(sfield(&rec, "error_source"), "upstream", "{rec:?}");
    assert_eq!(sfield(&rec, "cluster"), "empty");

    // Bad Host: 400, downstream.
    let bad = "GET /log/badhost HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(listen, bad), 400);
    let rec = wait_record(&lb, "/log/badhost");
    assert_eq!(field(&rec, "status").num(), Some(400.0));
    assert_eq!(sfield(&rec, "error_source"), "downstream", "{rec:?}");
    assert_eq!(sfield(&rec, "termination"), "PR");
    assert!(field(&rec, "route").is_null(), "{rec:?}");

    // No route: 404, downstream.
    assert_eq!(get(listen, "nowhere.test", "/log/noroute").status, 404);
    let rec = wait_record(&lb, "/log/noroute");
    assert_eq!(field(&rec, "status").num(), Some(404.0));
    assert_eq!(sfield(&rec, "error_source"), "downstream", "{rec:?}");
}

fn rfc3339_like(t: &str) {
    let b = t.as_bytes();
    assert!(
        b.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "time {t:?}"
    );
}

#[test]
fn access_log_text_format_is_haproxy_like() {
    let b = backend("b");
    let listen = free_local_addr();
    let yaml = format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
access_log: {{format: text}}
routes:
  - {{name: txt, hosts: [text.test], cluster: web}}
clusters:
  - {{name: web, endpoints: [{{address: "{}"}}]}}
"#,
        b.addr()
    );
    let lb = start(&yaml);
    served_by(&get(listen, "text.test", "/text/path"));
    lb.wait_log("/text/path", T).unwrap();
    let log = lb.log();
    let line = log
        .lines()
        .find(|l| l.contains("/text/path"))
        .unwrap()
        .to_string();
    assert!(
        !line.starts_with('{'),
        "text format requested, got JSON: {line}"
    );
    assert!(line.starts_with("127.0.0.1:"), "client first: {line}");
    assert!(line.contains(" 200 "), "status: {line}");
    let triple = format!(" txt/web/{} ", b.addr());
    assert!(
        line.contains(&triple),
        "route/cluster/endpoint {triple:?}: {line}"
    );
    assert!(line.contains(" -- "), "termination: {line}");
    assert!(
        line.contains("\"GET /text/path HTTP/1.1\""),
        "HAProxy-style request field \"GET /text/path HTTP/1.1\": {line}"
    );
}

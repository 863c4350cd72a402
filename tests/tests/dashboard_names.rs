//! The Grafana dashboard, docs/metrics.md and the metrics code agree on metric names (no root,
//! no lb process):
//!
//! - every metric a dashboard query (or template variable) uses is documented in
//!   docs/metrics.md, under its exact exposed name, and the JSON is a usable dashboard;
//! - every name docs/metrics.md's tables list is one the code exposes, and every family the code
//!   registers is documented. The code's names come from the string literals passed as family
//!   names in lb-user/src/metrics/*.rs, mapped to exposed names by type: a counter `x` is
//!   `x_total`, a histogram `x` is `x_bucket`, `x_sum` and `x_count`, a gauge `x` is `x`;
//! - that mapping matches what the real encoder writes for the node-level families.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DASHBOARD: &str = "deploy/grafana/lb-dashboard.json";
const DOC: &str = "docs/metrics.md";
const METRICS_SRC: &str = "lb-user/src/metrics";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn is_metric_name(s: &str) -> bool {
    (s.starts_with("lb_") || s.starts_with("process_"))
        && s.len() > 4
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// The code: family names in lb-user/src/metrics/*.rs and their types.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn exposed(self, family: &str) -> Vec<String> {
        match self {
            Kind::Counter => vec![format!("{family}_total")],
            Kind::Gauge => vec![family.to_string()],
            Kind::Histogram => ["bucket", "sum", "count"]
                .iter()
                .map(|s| format!("{family}_{s}"))
                .collect(),
        }
    }
}

/// A string literal in Rust source: byte range of the whole literal (quotes included) and its
/// content (escapes left as written; family names have none).
struct Literal {
    start: usize,
    end: usize,
    text: String,
}

/// The string literals of `src`, skipping comments and char literals (lifetimes are not
/// mistaken for char literals). Raw strings (`r"…"`, `r#"…"#`) are handled.
fn string_literals(src: &str) -> Vec<Literal> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let close = src[i + 2..].find("*/").map_or(b.len(), |k| i + 2 + k + 2);
                i = close;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                let open = i + 1 + hashes;
                if b.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let closing = format!("\"{}", "#".repeat(hashes));
                let close = src[open + 1..]
                    .find(&closing)
                    .map_or(b.len(), |k| open + 1 + k);
                out.push(Literal {
                    start: i,
                    end: (close + closing.len()).min(b.len()),
                    text: src[open + 1..close.min(b.len())].to_string(),
                });
                i = close + closing.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let j = j.min(b.len());
                out.push(Literal {
                    start: i,
                    end: (j + 1).min(b.len()),
                    text: src[i + 1..j].to_string(),
                });
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\''), or else a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let mut j = i + 2;
                    while j < b.len() && b[j] != b'\'' {
                        j += 1;
                    }
                    i = j + 1;
                } else if let Some(c) = src[i + 1..].chars().next() {
                    let after = i + 1 + c.len_utf8();
                    i = if b.get(after) == Some(&b'\'') {
                        after + 1
                    } else {
                        i + 1
                    };
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The identifiers in `s`.
fn identifiers(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

fn kind_named(word: &str) -> Option<Kind> {
    match word {
        "Counter" => Some(Kind::Counter),
        "Gauge" => Some(Kind::Gauge),
        "Histogram" => Some(Kind::Histogram),
        _ => None,
    }
}

/// The type of the family named by `lits[k]` in `src`:
/// - `registry.register(NAME, HELP, var.clone())`: the type in `let var = …;`;
/// - `gauge(&mut encoder, NAME, …)` (process.rs's helper): a gauge;
/// - otherwise (`encode_descriptor` / `family` calls, the XDP name table): the first
///   `MetricType::…` after the name.
fn family_kind(file: &str, src: &str, lits: &[Literal], k: usize) -> Kind {
    let name = &lits[k].text;
    let before: String = src[..lits[k].start]
        .chars()
        .rev()
        .filter(|c| !c.is_whitespace())
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if before.ends_with("register(") {
        let help = lits
            .get(k + 1)
            .unwrap_or_else(|| panic!("{file}: register({name:?}, …) without a help string"));
        let var: String = src[help.end..]
            .trim_start_matches(|c: char| c.is_whitespace() || c == ',')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let decl = [format!("let {var} ="), format!("let {var}:")]
            .iter()
            .find_map(|d| src.find(d.as_str()))
            .unwrap_or_else(|| {
                panic!("{file}: register({name:?}, …, {var}): no `let {var}` to read its type")
            });
        let stmt = &src[decl..decl + src[decl..].find(';').unwrap_or(src.len() - decl)];
        let kinds: BTreeSet<Kind> = identifiers(stmt).filter_map(kind_named).collect();
        assert_eq!(
            kinds.len(),
            1,
            "{file}: cannot tell the type of {name:?} from `{stmt}`"
        );
        return kinds.into_iter().next().unwrap();
    }
    if before.ends_with("gauge(&mutencoder,") {
        return Kind::Gauge;
    }
    let after = &src[lits[k].end..];
    let at = after.find("MetricType::").unwrap_or_else(|| {
        panic!("{file}: no MetricType after the family name {name:?}: the scanner needs updating")
    });
    let word = identifiers(&after[at + "MetricType::".len()..])
        .next()
        .unwrap_or("");
    kind_named(word)
        .unwrap_or_else(|| panic!("{file}: {name:?} has MetricType::{word}, not handled here"))
}

/// Every family the code registers: name → (type, file).
fn code_families() -> BTreeMap<String, (Kind, String)> {
    let dir = repo().join(METRICS_SRC);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .rs files in {}", dir.display());
    let mut out = BTreeMap::new();
    for path in files {
        let file = format!(
            "{METRICS_SRC}/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let full = std::fs::read_to_string(&path).expect("metrics source");
        // Unit tests at the end of a file name no families.
        let src = full.split("#[cfg(test)]").next().unwrap_or_default();
        let lits = string_literals(src);
        for k in 0..lits.len() {
            if !is_metric_name(&lits[k].text) {
                continue;
            }
            let kind = family_kind(&file, src, &lits, k);
            let name = lits[k].text.clone();
            if let Some((prev, prev_file)) = out.insert(name.clone(), (kind, file.clone())) {
                assert_eq!(
                    prev, kind,
                    "{name} is registered as {prev:?} in {prev_file} and {kind:?} in {file}"
                );
            }
        }
    }
    out
}

/// Exposed sample name → the family it belongs to.
fn code_exposed() -> BTreeMap<String, String> {
    code_families()
        .iter()
        .flat_map(|(family, (kind, _))| {
            kind.exposed(family)
                .into_iter()
                .map(move |n| (n, family.clone()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// docs/metrics.md: the tables whose first column is `metric`.

/// Documented exposed name → line number in docs/metrics.md.
fn documented() -> BTreeMap<String, usize> {
    let doc = read(DOC);
    let mut out = BTreeMap::new();
    let mut in_table = false;
    for (i, line) in doc.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let first = line
            .trim_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if !in_table {
            in_table = first == "metric";
            continue;
        }
        if first.chars().all(|c| c == '-' || c == ':') {
            continue; // the separator row
        }
        let names: Vec<&str> = first
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| is_metric_name(s))
            .collect();
        assert!(
            !names.is_empty(),
            "{DOC}:{line_no}: a metric table row without a `lb_…`/`process_…` name in its first cell: {line}"
        );
        for n in names {
            if let Some(prev) = out.insert(n.to_string(), line_no) {
                panic!("{DOC}:{line_no}: {n} is documented twice (also line {prev})");
            }
        }
    }
    assert!(
        out.len() > 20,
        "{DOC}: found only {} metric names in its `| metric |` tables: {:?}",
        out.len(),
        out.keys().collect::<Vec<_>>()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// The dashboard.

/// Metric names in a PromQL expression: identifiers starting `lb_` or `process_`, outside
/// string literals (label values) and not part of a longer identifier or a `$variable`.
fn promql_metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let variable = start > 0 && chars[start - 1] == '$';
            if !variable && (word.starts_with("lb_") || word.starts_with("process_")) {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn load_dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows and the panels inside collapsed rows included.
fn all_panels(panels: &Value, out: &mut Vec<Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        if let Some(inner) = p.get("panels") {
            all_panels(inner, out);
        }
    }
}

fn uses_datasource_variable(ds: &Value) -> bool {
    let uid = ds.get("uid").and_then(Value::as_str).unwrap_or("");
    uid == "${datasource}" || uid == "$datasource"
}

/// (where, query) for every target expression and every query-variable definition.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut panels = Vec::new();
    all_panels(&d["panels"], &mut panels);
    let mut out = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t.get("expr").and_then(Value::as_str) {
                let r = t["refId"].as_str().unwrap_or("?");
                out.push((format!("panel {title:?} target {r}"), expr.to_string()));
            }
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = match &v["query"] {
            Value::String(s) => s.clone(),
            q => q["query"].as_str().unwrap_or("").to_string(),
        };
        out.push((
            format!("variable ${}", v["name"].as_str().unwrap_or("?")),
            q,
        ));
    }
    out
}

#[test]
fn dashboard_is_a_grafana_dashboard_on_the_datasource_variable() {
    let d = load_dashboard();
    for key in ["uid", "title"] {
        assert!(
            d[key].as_str().is_some_and(|s| !s.is_empty()),
            "{DASHBOARD}: no {key}"
        );
    }
    assert_eq!(d["schemaVersion"], 39, "{DASHBOARD}: schemaVersion");
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{DASHBOARD}: no templating.list"))
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or(""), v))
        .collect();
    let ds = vars
        .get("datasource")
        .unwrap_or_else(|| panic!("{DASHBOARD}: no `datasource` variable"));
    assert_eq!(ds["type"], "datasource", "the datasource variable's type");
    assert_eq!(
        ds["query"], "prometheus",
        "the datasource variable's plugin"
    );
    for name in ["instance", "route", "cluster"] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("{DASHBOARD}: no `{name}` variable"));
        assert!(
            uses_datasource_variable(&v["datasource"]),
            "variable `{name}` does not query ${{datasource}}"
        );
    }

    let mut panels = Vec::new();
    all_panels(&d["panels"], &mut panels);
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Node",
        "Listeners",
        "Routes",
        "Clusters",
        "Endpoints",
        "Mirror",
        "XDP",
    ] {
        assert!(
            rows.contains(&want),
            "{DASHBOARD}: no row {want:?} (rows: {rows:?})"
        );
    }
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?}: no numeric id"));
        assert!(ids.insert(id), "panel {title:?}: id {id} used twice");
        for k in ["h", "w", "x", "y"] {
            assert!(
                p["gridPos"][k].is_u64(),
                "panel {title:?}: gridPos.{k} missing"
            );
        }
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert!(
            uses_datasource_variable(&p["datasource"]),
            "panel {title:?}: datasource {} does not use ${{datasource}}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title:?}: no targets"));
        for t in targets {
            assert!(
                t.get("datasource").is_none_or(uses_datasource_variable),
                "panel {title:?}: a target's datasource does not use ${{datasource}}"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {title:?}: a target without expr"
            );
        }
    }
    assert!(graphs >= 20, "{DASHBOARD}: only {graphs} panels");
}

#[test]
fn every_metric_the_dashboard_uses_is_documented() {
    let doc = documented();
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (place, query) in dashboard_queries(&load_dashboard()) {
        for name in promql_metric_names(&query) {
            if doc.contains_key(&name) {
                used.insert(name);
                continue;
            }
            // Name the documented series of the same family, if the suffix is what is wrong.
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            let near: Vec<&String> = doc
                .keys()
                .filter(|d| *d == base || d.starts_with(&format!("{base}_")))
                .collect();
            missing.push(format!(
                "{name} ({place}) is not in {DOC}{}",
                if near.is_empty() {
                    String::new()
                } else {
                    format!("; documented: {near:?}")
                }
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{DASHBOARD} uses undocumented metric names:\n  {}",
        missing.join("\n  ")
    );
    assert!(
        used.len() >= 30,
        "the dashboard uses only {} metric names: {used:?}",
        used.len()
    );
}

#[test]
fn documented_names_are_exactly_the_names_the_code_exposes() {
    let families = code_families();
    // The scanner must see the types right, or the mapping below means nothing.
    for (name, kind) in [
        ("lb_route_request_duration_seconds", Kind::Histogram),
        ("lb_config_reloads", Kind::Counter),
        ("lb_snapshot_published_version", Kind::Gauge),
        ("lb_snapshot_applied_timestamp_seconds", Kind::Gauge),
        ("process_cpu_seconds", Kind::Counter),
        ("process_open_fds", Kind::Gauge),
        ("lb_http_responses", Kind::Counter),
        ("lb_endpoint_state", Kind::Gauge),
        ("lb_xdp_packets", Kind::Counter),
        ("lb_xdp_bytes", Kind::Counter),
    ] {
        let found = families.get(name).map(|f| f.0);
        assert_eq!(found, Some(kind), "{METRICS_SRC}: family {name}");
    }
    let exposed = code_exposed();
    let doc = documented();

    let unknown: Vec<String> = doc
        .iter()
        .filter(|(n, _)| !exposed.contains_key(*n))
        .map(|(n, line)| format!("{DOC}:{line}: {n} is not a name the code exposes"))
        .collect();
    assert!(
        unknown.is_empty(),
        "{}\n(code exposes: {:?})",
        unknown.join("\n"),
        exposed.keys().collect::<Vec<_>>()
    );

    let undocumented: Vec<String> = exposed
        .iter()
        .filter(|(n, _)| !doc.contains_key(*n))
        .map(|(n, family)| {
            let (kind, file) = &families[family];
            format!("{n} ({kind:?} {family:?} in {file}) is not documented in {DOC}")
        })
        .collect();
    assert!(undocumented.is_empty(), "{}", undocumented.join("\n"));
}

#[test]
fn the_type_mapping_matches_the_real_encoder() {
    let m = lb_user::metrics::Metrics::new(None);
    m.http.count(503);
    m.set_applied("proxy", 1);
    let text = m.encode();
    let samples: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
        .collect();
    assert!(
        samples.contains("lb_http_responses_total") && samples.contains("lb_build_info"),
        "unexpected encoding:\n{text}"
    );
    let exposed = code_exposed();
    let doc = documented();
    for s in samples {
        assert!(
            exposed.contains_key(s),
            "the encoder writes {s}, which the source scan does not derive:\n{text}"
        );
        assert!(doc.contains_key(s), "{s} is not documented in {DOC}");
    }
}

//! `helm template` for the subset of Go templates deploy/helm/lb uses (helm is not installed here),
//! so tests can compare the chart's objects with the plain manifests.
//!
//! Supported, with Helm's semantics: `{{ }}` actions with `{{-`/`-}}` trimming and `/* */`
//! comments; fields `.Values.a.b`, `.Release.Name`, `.Release.Namespace`, `.Chart.Name`,
//! `.Chart.Version`, `.Chart.AppVersion`, `.` and `$`; string and integer literals; pipelines;
//! `if`/`else if`/`else`, `range` (lists; maps in key order), `define`; the functions `include`,
//! `toYaml`, `nindent`, `indent`, `quote` and `default`. Values from values.yaml merged under
//! overrides (maps merged key by key, as `--set`/`-f` do). Anything else (variables, `with`,
//! parentheses, other functions) is an error, never a guess; so is a missing value (Helm would
//! print nothing: stricter catches typos). Numbers print like Helm's float64 values for integers.

mod parse;

use anyhow::{bail, Context, Result};
use parse::{Node, Operand, Pipeline};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// A chart read from disk: metadata, default values and templates by file name.
pub struct Chart {
    meta: Value,
    values: Value,
    templates: BTreeMap<String, parse::Parsed>,
}

impl Chart {
    /// Reads `Chart.yaml`, `values.yaml` and every `templates/*.yaml` / `*.tpl`.
    pub fn load(dir: &Path) -> Result<Chart> {
        let yaml = |name: &str| -> Result<Value> {
            let p = dir.join(name);
            let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
            serde_yaml::from_str(&text).with_context(|| p.display().to_string())
        };
        let chart = yaml("Chart.yaml")?;
        let field = |k: &str| chart.get(k).cloned().unwrap_or(Value::Null);
        let meta = json!({"Name": field("name"), "Version": field("version"),
                          "AppVersion": field("appVersion")});
        let mut templates = BTreeMap::new();
        let tdir = dir.join("templates");
        for entry in std::fs::read_dir(&tdir).with_context(|| tdir.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".yaml") || name.ends_with(".tpl") {
                let src = std::fs::read_to_string(&path)?;
                let parsed = parse::parse(&src).with_context(|| format!("parsing {name}"))?;
                templates.insert(name.to_string(), parsed);
            }
        }
        Ok(Chart {
            meta,
            values: yaml("values.yaml")?,
            templates,
        })
    }

    /// Renders every template that does not start with `_`; returns each non-empty YAML
    /// document (split on `---` lines) with its file name.
    pub fn render(
        &self,
        release: &str,
        namespace: &str,
        overrides: &Value,
    ) -> Result<Vec<(String, String)>> {
        let mut values = self.values.clone();
        merge(&mut values, overrides);
        let data = json!({"Values": values, "Chart": self.meta,
                          "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"}});
        let defines: BTreeMap<&str, &Vec<Node>> = self
            .templates
            .values()
            .flat_map(|t| t.defines.iter().map(|(k, v)| (k.as_str(), v)))
            .collect();
        let ctx = Ctx { defines };
        let mut docs = Vec::new();
        for (name, t) in self.templates.iter().filter(|(n, _)| !n.starts_with('_')) {
            let mut out = String::new();
            ctx.nodes(&t.nodes, &data, &data, &mut out)
                .with_context(|| format!("rendering {name}"))?;
            for doc in split_documents(&out) {
                docs.push((name.clone(), doc));
            }
        }
        Ok(docs)
    }
}

/// YAML documents of `text` that hold more than comments and blank lines.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Helm's values coalescing: maps merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

struct Ctx<'a> {
    defines: BTreeMap<&'a str, &'a Vec<Node>>,
}

/// Go template truth: false, 0, null and empty strings, lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What `{{ v }}` prints. Helm holds numbers as float64: integers print without a fraction.
fn print(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => bail!("number {n} prints differently in Go; quote it in values.yaml"),
        },
        Value::Null => bail!("printing a null value"),
        other => bail!("printing a list or map ({other}) needs toYaml"),
    })
}

fn int_arg(v: &Value) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .with_context(|| format!("expected a non-negative integer, got {v}"))
}

fn indent(n: usize, s: &str) -> String {
    let pad = " ".repeat(n);
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

impl Ctx<'_> {
    fn nodes(&self, nodes: &[Node], dot: &Value, root: &Value, out: &mut String) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Output(p) => out.push_str(&print(&self.pipeline(p, dot, root)?)?),
                Node::If(branches, otherwise) => {
                    let mut chosen = otherwise;
                    for (cond, body) in branches {
                        if truthy(&self.pipeline(cond, dot, root)?) {
                            chosen = body;
                            break;
                        }
                    }
                    self.nodes(chosen, dot, root, out)?;
                }
                Node::Range(p, body) => match self.pipeline(p, dot, root)? {
                    Value::Array(items) => {
                        for item in &items {
                            self.nodes(body, item, root, out)?;
                        }
                    }
                    Value::Object(map) => {
                        for item in map.values() {
                            self.nodes(body, item, root, out)?;
                        }
                    }
                    Value::Null => {}
                    other => bail!("range over {other}"),
                },
            }
        }
        Ok(())
    }

    fn pipeline(&self, p: &Pipeline, dot: &Value, root: &Value) -> Result<Value> {
        let mut piped: Option<Value> = None;
        for cmd in p {
            let (head, rest) = cmd.split_first().context("empty command")?;
            let mut args = rest
                .iter()
                .map(|o| self.operand(o, dot, root))
                .collect::<Result<Vec<_>>>()?;
            args.extend(piped.take());
            piped = Some(match head {
                Operand::Func(f) => self.call(f, &args).with_context(|| format!("in {f}"))?,
                _ if args.is_empty() => self.operand(head, dot, root)?,
                _ => bail!("{head:?} is not a function but has arguments"),
            });
        }
        piped.context("empty pipeline")
    }

    fn operand(&self, o: &Operand, dot: &Value, root: &Value) -> Result<Value> {
        match o {
            Operand::Str(s) => Ok(Value::String(s.clone())),
            Operand::Int(i) => Ok(Value::from(*i)),
            Operand::Func(f) => self.call(f, &[]),
            Operand::Field { from_root, path } => {
                let mut v = if *from_root { root } else { dot };
                for (i, key) in path.iter().enumerate() {
                    v = v.get(key.as_str()).with_context(|| {
                        format!(
                            "no value at .{} (missing key {key:?})",
                            path[..=i].join(".")
                        )
                    })?;
                }
                Ok(v.clone())
            }
        }
    }

    fn call(&self, f: &str, args: &[Value]) -> Result<Value> {
        let text = |v: &Value| v.as_str().map(String::from).context("expected a string");
        Ok(match (f, args) {
            ("include", [name, data]) => {
                let name = text(name)?;
                let body = self.defines.get(name.as_str());
                let body = body.with_context(|| format!("no template {name:?}"))?;
                let mut out = String::new();
                self.nodes(body, data, data, &mut out)?;
                Value::String(out)
            }
            ("toYaml", [v]) => {
                let y = serde_yaml::to_string(v)?;
                Value::String(y.strip_suffix('\n').unwrap_or(&y).to_string())
            }
            ("nindent", [n, s]) => Value::String(format!("\n{}", indent(int_arg(n)?, &text(s)?))),
            ("indent", [n, s]) => Value::String(indent(int_arg(n)?, &text(s)?)),
            ("quote", [v]) => {
                let s = print(v)?;
                if !s.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
                    bail!("quote of {s:?}: Go's %q escapes differ outside printable ASCII");
                }
                Value::String(serde_json::to_string(&s)?)
            }
            ("default", [d, v]) => {
                if truthy(v) {
                    v.clone()
                } else {
                    d.clone()
                }
            }
            _ => bail!(
                "{f} with {} argument(s) is outside the supported subset",
                args.len()
            ),
        })
    }
}

/// Parses rendered YAML documents into JSON values (what the API server would receive).
pub fn documents_to_json(docs: &[(String, String)]) -> Result<Vec<Value>> {
    docs.iter()
        .map(|(file, d)| serde_yaml::from_str(d).with_context(|| format!("{file}: {d}")))
        .collect()
}

/// `{"a": {"b": v}}` from `"a.b"` and `v`, for overrides like `--set a.b=v`.
pub fn set(path: &str, v: Value) -> Value {
    path.rsplit('.').fold(v, |acc, key| {
        let mut m = Map::new();
        m.insert(key.to_string(), acc);
        Value::Object(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(template: &str) -> Result<Vec<(String, String)>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("templates"))?;
        let write = |p: &str, s: &str| std::fs::write(dir.path().join(p), s);
        write(
            "Chart.yaml",
            "name: c\nversion: 1.0.0\nappVersion: \"2.0\"\n",
        )?;
        write(
            "values.yaml",
            "n: 9900\nempty: \"\"\nm: {b: 2, a: 1}\nl: [x, y]\n",
        )?;
        write(
            "templates/_h.tpl",
            "{{- define \"t\" -}}\nk: {{ .Chart.Name }}\n{{- end }}",
        )?;
        write("templates/t.yaml", template)?;
        Chart::load(dir.path())?.render("r", "ns", &json!({}))
    }

    fn one(template: &str) -> String {
        chart(template).unwrap().remove(0).1
    }

    #[test]
    fn functions_follow_helm() {
        assert_eq!(one("p: {{ .Values.n | quote }}"), "p: \"9900\"\n");
        assert_eq!(
            one("v: {{ .Values.empty | default .Chart.AppVersion }}"),
            "v: 2.0\n"
        );
        assert_eq!(
            one("a:\n  {{- include \"t\" . | nindent 2 }}"),
            "a:\n  k: c\n"
        );
        assert_eq!(
            one("m:\n  {{- toYaml .Values.m | nindent 2 }}"),
            "m:\n  a: 1\n  b: 2\n"
        );
        let range =
            "r:{{ range .Values.m }} {{ . }}{{ end }}{{ range .Values.l }} {{ . }}{{ end }}";
        assert_eq!(one(range), "r: 1 2 x y\n");
        let cond = "{{ if .Values.empty }}a{{ else if .Values.l }}b{{ else }}c{{ end }}: 1";
        assert_eq!(one(cond), "b: 1\n");
        assert_eq!(chart("x: 1\n---\n# c\n---\ny: 2").unwrap().len(), 2);
    }

    #[test]
    fn missing_values_and_unknown_functions_are_errors() {
        assert!(chart("{{ .Values.nope }}").is_err());
        assert!(chart("{{ .Values.l | upper }}").is_err());
        assert!(chart("{{ .Values.m }}").is_err(), "a map needs toYaml");
    }
}

//! Turns YAML text into a [`Config`], collecting every error with its field path: deserialize,
//! and on an error record it, prune the offending node, retry (bounded); then validate().

use super::{validate, Config};
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::{fmt, path::Path};

/// One problem in a config, located by its field path (`clusters[0].endpoints[1].weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one config; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Upper bound on reported errors (and on deserialize retries).
const MAX_ERRORS: usize = 100;

pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    parse(&read(path)?)
}

/// Like [`load_file`], but an empty document is an error: on a reload it is far more likely a
/// file caught mid-write or wiped than a wish to stop serving everything.
pub fn load_file_for_reload(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    if serde_yaml::from_str::<Value>(&text).is_ok_and(|v| v.is_null()) {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            format!(
                "{} is empty (caught mid-write? write a temp file and rename it over)",
                path.display()
            ),
        )]));
    }
    parse(&text)
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )])
    })
}

/// Validates a config built in code (e.g. a file merged with Kubernetes objects) as
/// [`parse`] validates a file.
pub fn check(cfg: &Config) -> Result<(), ConfigErrors> {
    let errors = validate::validate(cfg, &HashSet::new());
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let root: Value = serde_yaml::from_str(text)
        .map_err(|e| ConfigErrors(vec![ConfigError::new("", format!("invalid YAML: {e}"))]))?;
    let root = match root {
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    };
    let mut doc = Doc {
        value: root,
        removed: HashMap::new(),
        pruned_names: HashSet::new(),
    };
    let mut errors = Vec::new();
    let mut parsed = None;
    while errors.len() < MAX_ERRORS {
        match serde_path_to_error::deserialize::<_, Config>(doc.value.clone()) {
            Ok(cfg) => {
                parsed = Some(cfg);
                break;
            }
            Err(e) => {
                let segs: Vec<Seg> = e.path().iter().filter_map(Seg::from_segment).collect();
                let message = e.into_inner().to_string();
                let path = doc.original_path(&segs);
                let pruned = doc.prune(&segs, &message);
                errors.push(ConfigError::new(path, message));
                if !pruned {
                    break;
                }
            }
        }
    }
    if let Some(cfg) = &parsed {
        // Semantic errors index the pruned document: name the operator's positions.
        errors.extend(
            validate::validate(cfg, &doc.pruned_names)
                .into_iter()
                .map(|mut e| {
                    e.path = doc.original_path(&parse_path(&e.path));
                    e
                }),
        );
    }
    match parsed {
        Some(cfg) if errors.is_empty() => Ok(cfg),
        _ => Err(ConfigErrors(errors)),
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    fn from_segment(s: &Segment) -> Option<Seg> {
        match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        }
    }
}

/// The document being pruned, and enough memory to name nodes by their original positions.
struct Doc {
    value: Value,
    /// Original indices removed from each sequence, keyed by the sequence's original path.
    removed: HashMap<String, BTreeSet<usize>>,
    /// `name`s of pruned list items: references to them are not reported a second time.
    pruned_names: HashSet<String>,
}

impl Doc {
    /// Path in the operator's file for a path in the pruned document.
    fn original_path(&self, segs: &[Seg]) -> String {
        let mut out = String::new();
        for seg in segs {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    let idx = original_index(*i, self.removed.get(&out));
                    out.push_str(&format!("[{idx}]"));
                }
            }
        }
        out
    }

    /// Remove the smallest node that explains the error; false when nothing can be removed.
    fn prune(&mut self, segs: &[Seg], message: &str) -> bool {
        if let Some(field) = unknown_field(message) {
            // The path may end at the unknown key or at the mapping holding it.
            let at = match segs.last() {
                Some(Seg::Key(k)) if k == field => &segs[..segs.len() - 1],
                _ => segs,
            };
            if let Some(Value::Mapping(m)) = node_mut(&mut self.value, at) {
                return m.remove(field).is_some();
            }
            return false;
        }
        if let Some(pos) = segs.iter().rposition(|s| matches!(s, Seg::Index(_))) {
            let Seg::Index(index) = segs[pos] else {
                return false;
            };
            let seq_path = self.original_path(&segs[..pos]);
            let orig = original_index(index, self.removed.get(&seq_path));
            let Some(Value::Sequence(seq)) = node_mut(&mut self.value, &segs[..pos]) else {
                return false;
            };
            if index >= seq.len() {
                return false;
            }
            let item = seq.remove(index);
            if let Some(Value::String(name)) = item.get("name") {
                self.pruned_names.insert(name.clone());
            }
            self.removed.entry(seq_path).or_default().insert(orig);
            return true;
        }
        if let Some((Seg::Key(k), parent)) = segs.split_last() {
            if let Some(Value::Mapping(m)) = node_mut(&mut self.value, parent) {
                return m.remove(k.as_str()).is_some();
            }
        }
        false
    }
}

/// `clusters[1].endpoints[0].name` → segments.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segs.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                match rest[1..end].parse() {
                    Ok(n) => segs.push(Seg::Index(n)),
                    Err(_) => segs.push(Seg::Key(rest[..=end].to_string())),
                }
                rest = &rest[end + 1..];
            }
        } else {
            segs.push(Seg::Key(rest.to_string()));
        }
    }
    segs
}

/// The `i`-th surviving element's index in the original sequence.
fn original_index(i: usize, removed: Option<&BTreeSet<usize>>) -> usize {
    let mut idx = i;
    for r in removed.into_iter().flatten() {
        if *r <= idx {
            idx += 1;
        } else {
            break;
        }
    }
    idx
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn node_mut<'a>(mut v: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    for seg in segs {
        v = match (seg, v) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str())?,
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

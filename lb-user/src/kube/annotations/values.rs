//! Annotation strings → YAML values in the config's own syntax (so the config's Deserialize and
//! validators judge them), Service references, and nested-mapping helpers.

use super::spec::Kind;
use serde_yaml::{Mapping, Value};

/// A Service of the annotated object's namespace and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceRef {
    pub name: String,
    pub port: PortRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortRef {
    Number(i32),
    Name(String),
}

/// `NAME:PORT` with PORT a number (1..=65535) or a port name.
pub(crate) fn service_ref(raw: &str) -> Result<ServiceRef, String> {
    let bad =
        || format!("expected SERVICE:PORT (a port number or name), like web-next:80, got {raw:?}");
    let (name, port) = raw.trim().split_once(':').ok_or_else(bad)?;
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !dns_label(name) {
        return Err(bad());
    }
    let port = match port.parse::<i32>() {
        Ok(n) if (1..=65535).contains(&n) => PortRef::Number(n),
        Ok(_) => return Err(bad()),
        Err(_) if dns_label(port) => PortRef::Name(port.to_string()),
        Err(_) => return Err(bad()),
    };
    Ok(ServiceRef {
        name: name.to_string(),
        port,
    })
}

/// `true` or `false`.
pub(crate) fn flag(raw: &str) -> Result<bool, String> {
    match raw.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got {raw:?}")),
    }
}

/// A whole percentage 0..=100, `%` optional.
pub(crate) fn weight(raw: &str) -> Result<u32, String> {
    let t = raw.trim();
    t.strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| {
            format!("expected a whole percentage 0 to 100 (like 10 or 10%), got {raw:?}")
        })
}

/// The YAML value a writing kind puts at its config path. `Enable` with `false` gives None
/// (nothing is written).
pub(crate) fn to_yaml(kind: Kind, raw: &str) -> Result<Option<Value>, String> {
    let t = raw.trim();
    Ok(Some(match kind {
        Kind::Str => Value::String(t.to_string()),
        Kind::Scalar => scalar(t)?,
        Kind::Percent => scalar(t.strip_suffix('%').unwrap_or(t).trim())?,
        Kind::List => Value::Sequence(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Map => Value::Mapping(string_map(raw)?),
        Kind::Enable => {
            if !flag(t)? {
                return Ok(None);
            }
            Value::Mapping(Mapping::new())
        }
        Kind::HashKey => hash_key(t)?,
        Kind::Flag | Kind::Weight | Kind::Text | Kind::Service | Kind::Elsewhere(_) => {
            return Err("not a config field".into());
        }
    }))
}

/// One YAML scalar (number, bool, string); `{`, `[` or a mapping are not scalars.
fn scalar(t: &str) -> Result<Value, String> {
    match serde_yaml::from_str::<Value>(t) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v),
        _ => Ok(Value::String(t.to_string())),
    }
}

/// `{A: x, B: y}` or block lines `A: x`; values that YAML reads as numbers or booleans are kept
/// as the text they were written as.
fn string_map(raw: &str) -> Result<Mapping, String> {
    let bad = || {
        format!("expected a mapping like {{X-Name: value}} or one \"Name: value\" per line, got {raw:?}")
    };
    let Ok(Value::Mapping(m)) = serde_yaml::from_str::<Value>(raw) else {
        return Err(bad());
    };
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Mapping::new();
    for (k, v) in &m {
        let (Some(k), Some(v)) = (text(k), text(v)) else {
            return Err(bad());
        };
        out.insert(Value::String(k), Value::String(v));
    }
    Ok(out)
}

fn hash_key(t: &str) -> Result<Value, String> {
    let mut m = Mapping::new();
    let (on, name) = match t.split_once(':') {
        None if t == "source_ip" || t == "uri" => (t, None),
        Some((on @ ("header" | "cookie"), name)) if !name.trim().is_empty() => {
            (on, Some(name.trim()))
        }
        _ => {
            return Err(format!(
                "expected source_ip, uri, header:NAME or cookie:NAME, got {t:?}"
            ))
        }
    };
    m.insert("on".into(), on.into());
    if let Some(n) = name {
        m.insert("name".into(), n.into());
    }
    Ok(Value::Mapping(m))
}

/// Puts `v` at the dotted `path` of `m`, creating mappings on the way (an existing mapping at
/// the end is kept and merged into, so `hsts: true` and `hsts-max-age` combine).
pub(crate) fn insert(m: &mut Mapping, path: &str, v: Value) {
    let (head, rest) = path
        .split_once('.')
        .map_or((path, None), |(h, r)| (h, Some(r)));
    let key = Value::String(head.to_string());
    match rest {
        None => match (m.get_mut(&key), v) {
            (Some(Value::Mapping(old)), Value::Mapping(new)) => merge(old, &new),
            (_, v) => {
                m.insert(key, v);
            }
        },
        Some(rest) => {
            let slot = m
                .entry(key)
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !slot.is_mapping() {
                *slot = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(inner) = slot {
                insert(inner, rest, v);
            }
        }
    }
}

/// `over` laid onto `base` leaf by leaf (a Service's settings under an Ingress's).
pub(crate) fn merge(base: &mut Mapping, over: &Mapping) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_config_syntax() {
        let y = |k, s| to_yaml(k, s).unwrap().unwrap();
        assert_eq!(y(Kind::Scalar, "3"), Value::from(3));
        assert_eq!(y(Kind::Scalar, "true"), Value::from(true));
        assert_eq!(y(Kind::Scalar, "three"), Value::from("three"));
        assert_eq!(y(Kind::Percent, "0.5%"), Value::from(0.5));
        assert_eq!(
            y(Kind::List, " a, b ,,c"),
            serde_yaml::from_str::<Value>("[a, b, c]").unwrap()
        );
        assert_eq!(
            y(Kind::Map, "X-A: 1\nX-B: yes please\n"),
            serde_yaml::from_str::<Value>("{X-A: '1', X-B: yes please}").unwrap()
        );
        assert!(to_yaml(Kind::Map, "just text").is_err());
        assert_eq!(to_yaml(Kind::Enable, "false").unwrap(), None);
        assert!(to_yaml(Kind::Enable, "yes").is_err());
        assert_eq!(
            y(Kind::HashKey, "header:X-User"),
            serde_yaml::from_str::<Value>("{on: header, name: X-User}").unwrap()
        );
        assert!(to_yaml(Kind::HashKey, "header:").is_err());
        assert_eq!(weight("10%"), Ok(10));
        assert!(weight("101").is_err());
        assert_eq!(
            service_ref("web-next:http").unwrap().port,
            PortRef::Name("http".into())
        );
        for bad in ["web", "web:0", "Web:80", ":80", "web:80:1"] {
            assert!(service_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn insert_and_merge_nest() {
        let mut m = Mapping::new();
        insert(&mut m, "hsts", Value::Mapping(Mapping::new()));
        insert(&mut m, "hsts.max_age", Value::from(60));
        insert(&mut m, "hsts", Value::Mapping(Mapping::new()));
        let want: Mapping = serde_yaml::from_str("{hsts: {max_age: 60}}").unwrap();
        assert_eq!(m, want);
        let mut base: Mapping =
            serde_yaml::from_str("{retries: {attempts: 1, budget_min: 2}, balance: random}")
                .unwrap();
        let over: Mapping = serde_yaml::from_str("{retries: {attempts: 3}}").unwrap();
        merge(&mut base, &over);
        let want: Mapping =
            serde_yaml::from_str("{retries: {attempts: 3, budget_min: 2}, balance: random}")
                .unwrap();
        assert_eq!(base, want);
    }
}

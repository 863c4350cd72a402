//! Runtime overrides set through the admin API (weight, drain, maint, ready): validated
//! commands, kept by endpoint until a config reload discards them (or keeps them, if configured).

use crate::config::Config;
use crate::health::EpKey;
use crate::snapshot::Snapshot;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSetting {
    Absolute(u16),
    /// Percent of the configured weight, as HAProxy's `set weight ... N%`.
    Percent(u8),
}

impl WeightSetting {
    /// `5`, `"5"`, or `"5%"`; weights 0-256, percents 0-100.
    pub fn parse(v: &serde_json::Value) -> Result<WeightSetting, String> {
        let text = match v {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.trim().to_string(),
            _ => return Err("weight must be a number (0-256) or a percentage like \"5%\"".into()),
        };
        if let Some(p) = text.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(n) if n <= 100 => Ok(WeightSetting::Percent(n as u8)),
                Ok(n) => Err(format!(
                    "weight {n}% is out of range: percent must be 0-100%"
                )),
                Err(_) => Err(format!("invalid weight {text:?}")),
            };
        }
        match text.parse::<u32>() {
            Ok(n) if n <= 256 => Ok(WeightSetting::Absolute(n as u16)),
            Ok(n) => Err(format!("weight {n} is out of range: must be 0-256")),
            Err(_) => Err(format!("invalid weight {text:?}: expected 0-256 or 0-100%")),
        }
    }

    pub fn resolve(self, configured: u16) -> u16 {
        match self {
            WeightSetting::Absolute(w) => w,
            WeightSetting::Percent(p) => {
                // Round up so a non-zero percent of a non-zero weight never drains.
                ((u32::from(configured) * u32::from(p)).div_ceil(100)) as u16
            }
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        match self {
            WeightSetting::Absolute(w) => w.into(),
            WeightSetting::Percent(p) => format!("{p}%").into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    /// No new requests; in-flight ones finish (weight 0).
    Drain,
    /// Out of service: no requests, shown as maint.
    Maint,
}

impl AdminState {
    pub fn parse(s: &str) -> Result<AdminState, String> {
        match s {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maint" => Ok(AdminState::Maint),
            _ => Err(format!(
                "invalid state {s:?}: expected ready, drain or maint"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Override {
    pub weight: Option<WeightSetting>,
    pub state: Option<AdminState>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(pub HashMap<EpKey, Override>);

/// A validated change for one endpoint.
#[derive(Debug, Clone)]
pub struct Command {
    pub cluster: String,
    pub endpoint: String,
    pub weight: Option<WeightSetting>,
    pub state: Option<AdminState>,
    /// Clear this endpoint's overrides first.
    pub reset: bool,
}

/// Why a command was refused: the HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub u16, pub String);

impl Command {
    /// From a JSON body: `{"weight": 5 | "5%", "state": "drain", "reset": true}`.
    pub fn from_json(cluster: &str, endpoint: &str, body: &[u8]) -> Result<Command, Refused> {
        let bad = |m: String| Refused(400, m);
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the body must be a JSON object".into()))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["weight", "state", "reset"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown field {k:?}: expected weight, state or reset"
            )));
        }
        let weight = obj
            .get("weight")
            .map(WeightSetting::parse)
            .transpose()
            .map_err(bad)?;
        let state = match obj.get("state") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(AdminState::parse(s).map_err(bad)?),
            Some(_) => return Err(bad("state must be a string: ready, drain or maint".into())),
        };
        let reset = match obj.get("reset") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(bad("reset must be true or false".into())),
        };
        if weight.is_none() && state.is_none() && !reset {
            return Err(bad("nothing to change: give weight, state or reset".into()));
        }
        Ok(Command {
            cluster: cluster.to_string(),
            endpoint: endpoint.to_string(),
            weight,
            state,
            reset,
        })
    }

    /// Applies to `overrides` if the cluster and endpoint (by name or address) exist.
    pub fn apply(&self, snap: &Snapshot, overrides: &mut Overrides) -> Result<EpKey, Refused> {
        let c = snap
            .config
            .clusters
            .iter()
            .find(|c| c.name == self.cluster)
            .ok_or_else(|| Refused(404, format!("unknown cluster {:?}", self.cluster)))?;
        let e = c
            .endpoints
            .iter()
            .find(|e| e.label() == self.endpoint || e.address.to_string() == self.endpoint)
            .ok_or_else(|| {
                Refused(
                    404,
                    format!(
                        "unknown endpoint {:?} in cluster {:?}",
                        self.endpoint, self.cluster
                    ),
                )
            })?;
        let key: EpKey = (c.name.as_str().into(), e.address);
        let o = overrides.0.entry(key.clone()).or_default();
        if self.reset {
            *o = Override::default();
        }
        if let Some(w) = self.weight {
            // 100% of the configured weight is no override at all.
            o.weight = (w != WeightSetting::Percent(100)).then_some(w);
        }
        if let Some(s) = self.state {
            o.state = (s != AdminState::Ready).then_some(s);
        }
        if *o == Override::default() {
            overrides.0.remove(&key);
        }
        Ok(key)
    }
}

/// On reload: keep overrides of endpoints that still exist (when configured), or drop all.
/// Returns the overrides to use and how many were dropped.
pub fn carry_over(old: &Overrides, cfg: &Config, keep: bool) -> (Overrides, usize) {
    if !keep {
        return (Overrides::default(), old.0.len());
    }
    let exists = |k: &EpKey| {
        cfg.clusters
            .iter()
            .any(|c| *c.name == *k.0 && c.endpoints.iter().any(|e| e.address == k.1))
    };
    let kept: HashMap<EpKey, Override> = old
        .0
        .iter()
        .filter(|(k, _)| exists(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let dropped = old.0.len() - kept.len();
    (Overrides(kept), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn weights_parse_and_resolve() {
        assert_eq!(
            WeightSetting::parse(&json!(5)),
            Ok(WeightSetting::Absolute(5))
        );
        assert_eq!(
            WeightSetting::parse(&json!("5%")),
            Ok(WeightSetting::Percent(5))
        );
        assert_eq!(
            WeightSetting::parse(&json!(" 7 ")),
            Ok(WeightSetting::Absolute(7))
        );
        for bad in [
            json!("300%"),
            json!(257),
            json!(-1),
            json!("x"),
            json!(true),
            json!("1.5"),
        ] {
            assert!(WeightSetting::parse(&bad).is_err(), "{bad}");
        }
        assert!(WeightSetting::parse(&json!("300%"))
            .unwrap_err()
            .contains("0-100%"));
        assert_eq!(WeightSetting::Percent(1).resolve(100), 1);
        assert_eq!(WeightSetting::Percent(1).resolve(10), 1, "rounds up");
        assert_eq!(WeightSetting::Percent(0).resolve(10), 0);
        assert_eq!(WeightSetting::Percent(25).resolve(100), 25);
    }

    #[test]
    fn commands_from_json() {
        let c = Command::from_json("a", "b", br#"{"weight":"5%","state":"drain"}"#).unwrap();
        assert_eq!(
            (c.weight, c.state),
            (Some(WeightSetting::Percent(5)), Some(AdminState::Drain))
        );
        for (body, msg) in [
            (&b"{"[..], "invalid JSON"),
            (b"[]", "JSON object"),
            (b"{}", "nothing to change"),
            (br#"{"weight":"300%"}"#, "0-100%"),
            (br#"{"state":"sleep"}"#, "invalid state"),
            (br#"{"wieght":1}"#, "unknown field"),
        ] {
            let e = Command::from_json("a", "b", body).unwrap_err();
            assert_eq!(e.0, 400);
            assert!(
                e.1.contains(msg),
                "{} -> {}",
                String::from_utf8_lossy(body),
                e.1
            );
        }
    }

    #[test]
    fn apply_finds_endpoints_by_name_or_address() {
        let cfg = crate::config::parse(
            "clusters:\n  - name: app\n    endpoints:\n      - {address: 127.0.0.1:1, name: onprem}\n      - {address: 127.0.0.1:2}\n",
        )
        .unwrap();
        let snap = crate::snapshot::build(&cfg, Default::default(), 1);
        let mut o = Overrides::default();
        let cmd = |e: &str, body: &[u8]| Command::from_json("app", e, body).unwrap();
        cmd("onprem", br#"{"weight":0}"#)
            .apply(&snap, &mut o)
            .unwrap();
        cmd("127.0.0.1:2", br#"{"state":"maint"}"#)
            .apply(&snap, &mut o)
            .unwrap();
        assert_eq!(o.0.len(), 2);
        let e = cmd("cloud", br#"{"weight":1}"#)
            .apply(&snap, &mut o)
            .unwrap_err();
        assert_eq!(e.0, 404);
        let e = Command::from_json("nope", "onprem", br#"{"weight":1}"#)
            .unwrap()
            .apply(&snap, &mut o)
            .unwrap_err();
        assert!(e.1.contains("unknown cluster"));
        // Back to ready and 100%: the override disappears.
        cmd("127.0.0.1:2", br#"{"state":"ready"}"#)
            .apply(&snap, &mut o)
            .unwrap();
        cmd("onprem", br#"{"weight":"100%"}"#)
            .apply(&snap, &mut o)
            .unwrap();
        assert!(o.0.is_empty());
        cmd("onprem", br#"{"weight":3}"#)
            .apply(&snap, &mut o)
            .unwrap();
        assert_eq!(carry_over(&o, &snap.config, true).0 .0.len(), 1);
        assert_eq!(
            carry_over(&o, &snap.config, false),
            (Overrides::default(), 1)
        );
    }
}

//! The Kubernetes manifests in deploy/ as JSON values (what `kubectl apply -f deploy/` sends), with
//! lookups the deploy tests share: objects by kind and name, the lb container, its flags.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The repository root (the tests crate lives in `tests/`).
pub fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `dir/*.yaml` and `*.yml` in name order (kubectl's order for `-f DIR`), not recursive.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every non-empty document of `files`, parsed, with the file it came from.
pub fn load(files: &[PathBuf]) -> Result<Vec<(PathBuf, Value)>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
        for doc in crate::helm::split_documents(&text) {
            let v: Value = serde_yaml::from_str(&doc).with_context(|| f.display().to_string())?;
            out.push((f.clone(), v));
        }
    }
    Ok(out)
}

/// `kind namespace/name` of an object (namespace empty for cluster-scoped ones).
pub fn key(v: &Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!(
        "{} {}/{}",
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name")
    )
}

/// The only object of `kind` among `objs`.
pub fn one<'a>(objs: &'a [Value], kind: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => bail!("expected one {kind}, found {}", found.len()),
    }
}

/// The DaemonSet's container named `lb`.
pub fn lb_container(ds: &Value) -> Result<&Value> {
    let containers = ds
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .context("DaemonSet without containers")?;
    containers
        .iter()
        .find(|c| c["name"] == "lb")
        .context("no container named lb")
}

/// The container's args with `$(VAR)` expanded from its `env` values, as kubelet does.
pub fn args(container: &Value) -> Result<Vec<String>> {
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| Some((v["name"].as_str()?.into(), v["value"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default();
    let args = container["args"]
        .as_array()
        .context("container without args")?;
    args.iter()
        .map(|a| {
            let mut s = a.as_str().context("non-string arg")?.to_string();
            for (k, v) in &env {
                s = s.replace(&format!("$({k})"), v);
            }
            Ok(s)
        })
        .collect()
}

/// Values of `--name=value` flags named `name`, in order.
pub fn flag<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    let prefix = format!("--{name}=");
    args.iter()
        .filter_map(|a| a.strip_prefix(prefix.as_str()))
        .collect()
}

/// `data["lb.yaml"]` of the ConfigMap.
pub fn lb_config(configmap: &Value) -> Result<&str> {
    configmap
        .pointer("/data/lb.yaml")
        .and_then(Value::as_str)
        .context("ConfigMap without data.lb.yaml")
}

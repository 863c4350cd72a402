//! `lb check`: the acceptance case (four errors, each naming its field, exit 1), a good config,
//! an unreadable file, and every file in examples/ and deploy/'s ConfigMap passing.

use lb_tests::lb_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(path: &Path) -> Output {
    Command::new(lb_bin())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("run lb check")
}

fn write(dir: &tempfile::TempDir, name: &str, yaml: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn four_errors_each_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.yaml",
        r#"
listeners:
  - name: http
    address: "0.0.0.0:8080"
    bogus_field: true
routes:
  - hosts: [app.example]
    cluster: missing-cluster
clusters:
  - name: app
    endpoints:
      - address: "10.0.0.1:80"
        weight: -1
xdp:
  deny: [192.0.2.0/24, 300.1.2.3/8]
"#,
    );
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 4, "{stderr}");
    for (field, what) in [
        ("listeners[0]", "unknown field `bogus_field`"),
        ("clusters[0].endpoints[0].weight", "got -1"),
        ("routes[0].cluster", "unknown cluster \"missing-cluster\""),
        ("xdp.deny[1]", "invalid CIDR \"300.1.2.3/8\""),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("error: {field}")) && e.contains(what)),
            "no error for {field} ({what}) in:\n{stderr}"
        );
    }
    assert!(stderr.contains("4 error(s)"), "{stderr}");
}

#[test]
fn good_config_exits_zero_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ok.yaml",
        "listeners: [{name: h, address: '127.0.0.1:1'}]\nclusters: [{name: c, endpoints: [{address: '127.0.0.1:2'}]}]\nroutes: [{hosts: ['*'], cluster: c}]\n",
    );
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK (1 listeners, 1 routes, 1 clusters, 1 endpoints, 0 deny prefixes)"),
        "{stdout}"
    );
}

#[test]
fn unreadable_and_non_yaml_files_are_clear_errors() {
    let out = check(Path::new("/nonexistent/lb.yaml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/lb.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "junk.yaml", "listeners: [\n\t{");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid YAML"));
}

#[test]
fn every_example_passes_lb_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = check(&path);
            assert!(
                out.status.success(),
                "{}:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the examples/ files, found {checked}"
    );
}

#[test]
fn deploy_configmap_passes_lb_check() {
    // The ConfigMap embeds lb.yaml as a block scalar: extract it and check it.
    let text = std::fs::read_to_string(repo().join("deploy/30-configmap.yaml")).unwrap();
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("lb.yaml: |"))
        .skip(1)
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    assert!(!body.is_empty(), "no lb.yaml in deploy/30-configmap.yaml");
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "lb.yaml", &body.join("\n"));
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_run_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "lb.yaml", "listeners: []\n");
    let out = Command::new(lb_bin())
        .args(["run", "--xdp-mode", "fast", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("unknown XDP mode \"fast\": expected native or skb"));
}

#[test]
fn attaching_to_a_missing_interface_fails_cleanly() {
    lb_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "lb.yaml", "listeners: []\n");
    let out = Command::new(lb_bin())
        .args([
            "run",
            "--admin",
            "127.0.0.1:0",
            "--iface",
            "nosuchif0",
            "--xdp-mode",
            "skb",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("attaching XDP to nosuchif0"), "{text}");
}

#[test]
fn workers_must_be_at_least_one() {
    let out = Command::new(lb_bin())
        .args(["run", "--workers", "0", "--config", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}

//! Config loading tests: every error reported once, at the field path the operator wrote.

use super::*;

/// Every error of `yaml` as `path: message` lines (none when it is valid).
pub(super) fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// Is there an error at `prefix` mentioning `needle`?
pub(super) fn has(errs: &[String], prefix: &str, needle: &str) -> bool {
    errs.iter()
        .any(|e| e.starts_with(prefix) && e.contains(needle))
}

const GOOD: &str = r#"
listeners:
  - {name: http, address: "0.0.0.0:8080"}
routes:
  - {hosts: [app.example, WWW.example], cluster: app}
  - {hosts: ["*"], cluster: fallback}
clusters:
  - name: app
    connect_timeout: 2s
    response_timeout: 500ms
    endpoints:
      - {address: "10.0.0.1:80", weight: 3}
      - {address: "[fd00::1]:80", weight: 0}
  - name: fallback
    endpoints: [{address: "10.0.0.9:80"}]
xdp:
  deny: [192.0.2.0/24, "2001:db8::/32", 198.51.100.7]
"#;

#[test]
fn good_config_parses_with_defaults() {
    let cfg = parse(GOOD).unwrap();
    assert_eq!(cfg.listeners[0].address.port(), 8080);
    let app = &cfg.clusters[0];
    assert_eq!(app.endpoints[0].weight, Weight(3));
    assert_eq!(app.endpoints[1].weight, Weight(0));
    assert_eq!(
        app.response_timeout.0,
        std::time::Duration::from_millis(500)
    );
    let fb = &cfg.clusters[1];
    assert_eq!(fb.endpoints[0].weight, Weight(1), "default weight");
    assert_eq!(fb.connect_timeout.0, std::time::Duration::from_secs(5));
    assert_eq!(cfg.xdp.deny.len(), 3);
}

#[test]
fn empty_document_is_an_empty_config() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("# nothing\n").unwrap(), Config::default());
}

#[test]
fn the_four_errors_of_the_acceptance_case() {
    let yaml = r#"
listeners:
  - {name: http, address: "0.0.0.0:8080", bogus: 1}
routes:
  - {hosts: [app.example], cluster: nowhere}
clusters:
  - name: app
    endpoints: [{address: "10.0.0.1:80", weight: -1}]
xdp:
  deny: [10.0.0.0/8, 10.0.0.300/24]
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    let has = |prefix: &str, needle: &str| {
        errs.iter()
            .any(|e| e.starts_with(prefix) && e.contains(needle))
    };
    assert!(has("listeners[0]", "unknown field `bogus`"), "{errs:#?}");
    assert!(
        has(
            "clusters[0].endpoints[0].weight:",
            "between 0 and 256, got -1"
        ),
        "{errs:#?}"
    );
    assert!(
        has("routes[0].cluster:", "unknown cluster \"nowhere\""),
        "{errs:#?}"
    );
    assert!(
        has("xdp.deny[1]:", "invalid CIDR \"10.0.0.300/24\""),
        "{errs:#?}"
    );
}

#[test]
fn indices_name_the_operators_items_after_pruning() {
    let yaml = r#"
clusters:
  - {name: a, endpoints: [{address: "10.0.0.1:80", weight: 999}]}
  - {name: b}
  - {name: c, endpoints: [{address: "10.0.0.1:80"}, {address: nope}]}
  - {name: d, nonsense: true}
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("clusters[0].endpoints[0].weight: "),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("clusters[2].endpoints[1].address: "),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("clusters[3]") && errs[2].contains("nonsense"),
        "{errs:#?}"
    );
}

#[test]
fn a_pruned_cluster_is_not_reported_again_by_its_routes() {
    let yaml = r#"
routes: [{hosts: [a.example], cluster: a}]
clusters: [{name: a, connect_timeout: soon}]
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("clusters[0].connect_timeout: invalid duration"),
        "{errs:#?}"
    );
}

#[test]
fn missing_and_mistyped_fields() {
    let errs = errors("listeners: [{name: x}]\nroutes: [{hosts: a.example, cluster: c}]\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("listeners[0]") && errs[0].contains("missing field `address`"));
    assert!(errs[1].starts_with("routes[0].hosts") && errs[1].contains("invalid type"));
    let errs = errors("xdp: [1, 2]\n");
    assert!(errs[0].starts_with("xdp:"), "{errs:#?}");
    let errs = errors("- just\n- a list\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn yaml_syntax_error_has_a_location() {
    let errs = errors("listeners:\n  - name: [unclosed\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("invalid YAML:") && errs[0].contains("line"),
        "{errs:#?}"
    );
}

#[test]
fn semantic_errors_name_their_fields() {
    let yaml = r#"
listeners:
  - {name: a, address: "0.0.0.0:80"}
  - {name: a, address: "0.0.0.0:80"}
routes:
  - {hosts: [], cluster: c}
  - {hosts: [x.example, "bad host", "x.example:80"], cluster: c}
  - {hosts: [X.EXAMPLE], cluster: c}
clusters:
  - {name: c, endpoints: [{address: "10.0.0.1:0"}, {address: "10.0.0.2:80"}, {address: "10.0.0.2:80"}]}
  - {name: "", endpoints: []}
"#;
    let errs = errors(yaml);
    let expect = [
        "listeners[1].name: duplicate listener name \"a\"",
        "listeners[1].address: address 0.0.0.0:80 is already used by listeners[0]",
        "routes[0].hosts: must list at least one host",
        "routes[1].hosts[1]: invalid host \"bad host\"",
        "routes[1].hosts[2]: invalid host \"x.example:80\"",
        "clusters[0].endpoints[0].address: port must not be 0",
        "clusters[0].endpoints[2].address: endpoint 10.0.0.2:80 is already listed",
        "clusters[1].name: must not be empty",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn bad_scalars_say_what_is_expected() {
    let errs =
        errors("clusters: [{name: c, endpoints: [{address: '10.0.0.1:80', weight: heavy}]}]\n");
    assert!(
        errs[0].contains("weight must be an integer between 0 and 256"),
        "{errs:#?}"
    );
    let errs = errors("xdp: {deny: [42]}\n");
    assert!(errs[0].starts_with("xdp.deny[0]:"), "{errs:#?}");
    let errs = errors("clusters: [{name: c, response_timeout: 0s}]\n");
    assert!(errs[0].contains("greater than zero"), "{errs:#?}");
}

#[test]
fn too_many_errors_are_bounded() {
    let mut yaml = String::from("xdp:\n  deny:\n");
    for i in 0..500 {
        yaml.push_str(&format!("    - bad{i}\n"));
    }
    let errs = errors(&yaml);
    assert!(!errs.is_empty() && errs.len() <= 100, "{}", errs.len());
}

#[test]
fn metrics_switches_name_a_bad_value() {
    let errs = errors("metrics: {route_labels: maybe}\n");
    assert!(has(&errs, "metrics.route_labels", "bool"), "{errs:?}");
    let errs = errors("metrics: {per_pod: true}\n");
    assert!(has(&errs, "metrics", "per_pod"), "{errs:?}");
    let cfg = parse("metrics: {endpoint_labels: false}\n").unwrap();
    assert!(!cfg.metrics.endpoint_labels && cfg.metrics.route_labels);
}

//! Writes BENCHMARKS.md from every bench/results/<suite>.json: method, machine, one table per
//! scenario with lb's ratio to each peer, SVG plots, and the hand-written findings.

use super::{Env, Row, SuiteResult, SUITES};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Hand-written analysis (where lb loses, the profile, the fix), included verbatim.
const FINDINGS: &str = "bench/findings.md";

pub fn write(env: &Env, md: &Path) -> Result<()> {
    let suites: Vec<SuiteResult> = SUITES
        .iter()
        .filter_map(|s| std::fs::read_to_string(env.out.join(format!("{s}.json"))).ok())
        .map(|t| serde_json::from_str(&t))
        .collect::<Result<_, _>>()
        .context("reading results")?;
    let rel = if md.parent() == Some(env.out.as_path()) {
        String::new()
    } else {
        "bench/results/".into()
    };
    let mut out = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench` (all suites; `cargo xtask bench SUITE` reruns one). Numbers are medians of \
         alternating repetitions, compared with peers measured in the same run; absolute numbers on a shared 2-core \
         machine are noise, ratios are the result.\n"
    );
    if env.quick {
        out.push_str("**Quick run: one short repetition against a debug build of lb. It proves the harness works; its numbers mean nothing.**\n\n");
    }
    let _ = writeln!(out, "## Machine\n\n{}\n", machine(&env.lb));
    if let Ok(f) = std::fs::read_to_string(crate::root().join(FINDINGS)) {
        out.push_str(&f);
        out.push('\n');
    }
    out.push_str(METHOD);
    for suite in &suites {
        let _ = writeln!(
            out,
            "## Suite `{}`\n\nRerun: `{}`\n",
            suite.suite, suite.command
        );
        for n in &suite.notes {
            let _ = writeln!(out, "- {n}");
        }
        out.push('\n');
        for scenario in ordered(suite.rows.iter().map(|r| r.scenario.as_str())) {
            let rows: Vec<&Row> = suite
                .rows
                .iter()
                .filter(|r| r.scenario == scenario)
                .collect();
            table(&mut out, scenario, &rows);
        }
        for metric in PLOTTED
            .iter()
            .filter(|m| suite.rows.iter().any(|r| r.metric == **m))
        {
            let file = format!("{}-{}.svg", suite.suite, metric.replace([' ', ','], "-"));
            plot(&env.out.join(&file), suite, metric)?;
            let _ = writeln!(
                out,
                "![{} {metric}]({rel}{file})\n\n_Rerun: `{}`_\n",
                suite.suite, suite.command
            );
        }
    }
    std::fs::write(md, out)?;
    Ok(())
}

const PLOTTED: [&str; 6] = [
    "throughput",
    "p99 latency",
    "time per packet",
    "start to serving",
    "change to applied, p50",
    "failed requests",
];

const METHOD: &str = "## Method (enforced by the harness)\n\n\
- Same origin for every contender (nginx, one worker, CPU 1); each contender pinned to CPU 0 with one worker \
  (lb `--workers 1`, HAProxy `nbthread 1`, nginx `worker_processes 1`); load generator and probe on CPU 1.\n\
- A warm-up before measuring; repetitions alternate contenders (A B C A B C ...), each starting at the next one; \
  medians reported with the ratio of `lb` to each peer measured in the same run, and where a suite says \
  `paired ratio`, the median over repetitions of lb's value over the peer's in that same repetition.\n\
- A direct client->origin run is the reference for added latency.\n\
- Latency is measured at fixed rates (25/50/75% of the weakest proxy's saturated throughput), not at saturation.\n\
- Every contender's exact config is saved in `bench/results/configs/`.\n\n";

fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    items.filter(|s| seen.insert(*s)).collect()
}

fn table(out: &mut String, scenario: &str, rows: &[&Row]) {
    let contenders = ordered(rows.iter().map(|r| r.contender.as_str()));
    // Ratio columns: lb against every peer, then each variant `X+Y` against its base `X` when
    // the table has both (lb+defaults vs lb, lb+scrape vs lb).
    let variants: Vec<(&str, &str)> = contenders
        .iter()
        .filter_map(|c| {
            let base = c.split_once('+')?.0;
            contenders.contains(&base).then_some((*c, base))
        })
        .collect();
    let is_variant = |c: &str| variants.iter().any(|(v, _)| *v == c);
    let lb = contenders
        .iter()
        .find(|c| c.starts_with("lb") && !is_variant(c))
        .copied();
    let peers = contenders
        .iter()
        .filter(|c| Some(**c) != lb && **c != "direct" && !is_variant(c) && !c.starts_with("lb"));
    let mut pairs: Vec<(&str, &str)> = lb
        .map(|lb| peers.map(|p| (lb, *p)).collect())
        .unwrap_or_default();
    pairs.extend(variants.iter().copied());
    let _ = write!(out, "**{scenario}**\n\n| metric |");
    for c in &contenders {
        let _ = write!(out, " {c} |");
    }
    for (a, b) in &pairs {
        let _ = write!(out, " {a} vs {b} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(contenders.len() + pairs.len()));
    out.push('\n');
    for metric in ordered(rows.iter().map(|r| r.metric.as_str())) {
        let get = |c: &str| rows.iter().find(|r| r.metric == metric && r.contender == c);
        let Some(any) = rows.iter().find(|r| r.metric == metric) else {
            continue;
        };
        let _ = write!(out, "| {metric} ({}) |", any.unit);
        for c in &contenders {
            let _ = write!(
                out,
                " {} |",
                get(c).map(|r| fmt(r.median)).unwrap_or_else(|| "–".into())
            );
        }
        for (a, b) in &pairs {
            let who = a;
            let cell = match (get(a), get(b)) {
                (Some(a), Some(b)) if b.median.abs() > f64::EPSILON && a.median.is_finite() => {
                    let ratio = a.median / b.median;
                    let better = if a.higher_is_better {
                        ratio >= 1.0
                    } else {
                        ratio <= 1.0
                    };
                    format!(
                        "{ratio:.2}× ({who} {})",
                        if better { "better" } else { "worse" }
                    )
                }
                _ => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Grouped bars: one group per scenario, one bar per contender.
fn plot(path: &Path, suite: &SuiteResult, metric: &str) -> Result<()> {
    let rows: Vec<&Row> = suite
        .rows
        .iter()
        .filter(|r| r.metric == metric && r.median.is_finite())
        .collect();
    let groups = ordered(rows.iter().map(|r| r.scenario.as_str()));
    let contenders = ordered(rows.iter().map(|r| r.contender.as_str()));
    let unit = rows.first().map(|r| r.unit.clone()).unwrap_or_default();
    let max = rows.iter().map(|r| r.median).fold(0.0, f64::max).max(1e-9);
    let root = SVGBackend::new(path, (960, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} — {metric} ({unit}), median", suite.suite),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(groups.len() as f64 - 0.5), 0f64..max * 1.2)?;
    let short = |s: &str| {
        if s.len() > 34 {
            format!("{}…", &s[..33])
        } else {
            s.to_string()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(2))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.05 && i >= 0.0 {
                groups.get(i as usize).map(|g| short(g)).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit.as_str())
        .draw()?;
    let width = 0.8 / contenders.len().max(1) as f64;
    for (j, c) in contenders.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let bars = groups.iter().enumerate().filter_map(|(i, g)| {
            let r = rows
                .iter()
                .find(|r| r.scenario == *g && r.contender == *c)?;
            let x0 = i as f64 - 0.4 + j as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, r.median)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(*c)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn machine(lb: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let first = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                let t = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&t)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    format!(
        "- CPU: {cpu}, {} online CPUs; kernel {}\n- Peers: {}; {}; {}\n- {} ({})",
        first("nproc", &["--all"]),
        first("uname", &["-r"]),
        first("haproxy", &["-v"]),
        first("nginx", &["-v"]),
        first("wrk", &["-v"]),
        first(&lb.display().to_string(), &["--version"]),
        if lb.components().any(|c| c.as_os_str() == "release") {
            "release build"
        } else {
            "debug build"
        },
    )
}

//! The operator's examples shipped in `/usr/share/doc/cryptobot/examples/` (from `packaging/examples/`):
//! the Prometheus alerting rules and the Grafana dashboard say only what the bot's `/metrics` serves,
//! and the rules pass `promtool check rules` and their own unit tests (`promtool test rules`), which make
//! each alert fire on the series that mean trouble and stay quiet on a healthy bot.
//!
//! promtool comes from Debian's `prometheus` package: tests/run-all.sh unpacks it (only it: the package
//! would start a Prometheus server) and names it in `PROMTOOL`; else `promtool` on the `PATH`. Without
//! either the promtool test is SKIPPED outside CI and fails in CI.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use cryptobot::metrics::Metrics;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples")
}

fn read(name: &str) -> String {
    let path = examples().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every metric `/metrics` serves, with the sample names it can have: each `# TYPE` line with the
/// suffixes of its type (a counter's `_total`, a histogram's `_bucket`, `_sum`, `_count`). A labelled
/// family is served from its first label set on: each is given one here, as the bot does when the
/// event happens.
fn served_metrics() -> BTreeMap<String, Vec<String>> {
    let metrics = Metrics::new("single");
    metrics.conflict("other_poller");
    metrics.api_error("rate_limited");
    metrics.message_dropped("expired");
    metrics.price_request("coingecko", "ok");
    let text = metrics.encode();
    let mut served = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("a # TYPE line without a name and a type: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        let samples = suffixes
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect();
        served.insert(name.to_owned(), samples);
    }
    assert!(
        served.len() > 10,
        "too few metrics found in the exposition; did its format change?\n{text}"
    );
    served
}

/// Every sample name `/metrics` can serve.
fn served_names() -> BTreeSet<String> {
    served_metrics().into_values().flatten().collect()
}

/// The `cryptobot_*` metric names a text mentions.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("cryptobot_") {
        let start = at + found;
        let word_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if !word_before {
            names.insert(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

#[test]
fn the_alerting_rules_name_only_metrics_the_bot_serves() {
    let served = served_names();
    let used = metric_names_in(&read("prometheus-rules.yml"));
    assert!(used.len() >= 6, "the rules use too few metrics: {used:?}");
    let unknown: Vec<&String> = used.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "prometheus-rules.yml names metrics /metrics does not serve: {unknown:?}; served: {served:?}"
    );
}

#[test]
fn the_dashboard_is_grafana_json_whose_panels_query_metrics_the_bot_serves() {
    let served = served_names();
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana-dashboard.json"))
        .unwrap_or_else(|e| panic!("grafana-dashboard.json is not JSON: {e}"));
    for key in ["title", "uid", "schemaVersion", "panels", "templating"] {
        assert!(dashboard.get(key).is_some(), "the dashboard has no {key:?}");
    }
    let panels = dashboard["panels"].as_array().expect("panels is a list");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    let mut graphs = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has no numeric id"));
        assert!(ids.insert(id), "two panels with id {id}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        let (Some(x), Some(w)) = (x, w) else {
            panic!("panel {title:?} has no gridPos x and w");
        };
        assert!(
            x + w <= 24 && w > 0,
            "panel {title:?} does not fit Grafana's 24 columns (x {x}, w {w})"
        );
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {title:?} has no description (what it shows and what to do about it)"
        );
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            let names = metric_names_in(expr);
            assert!(
                !names.is_empty(),
                "panel {title:?} queries no cryptobot metric: {expr}"
            );
            let unknown: Vec<&String> = names.difference(&served).collect();
            assert!(
                unknown.is_empty(),
                "panel {title:?} queries metrics /metrics does not serve: {unknown:?} in {expr}"
            );
            queried.extend(names);
        }
    }
    assert!(graphs >= 8, "only {graphs} panels");
    // Every metric the bot serves is on the dashboard (through any of its samples).
    let missing: Vec<String> = served_metrics()
        .into_iter()
        .filter(|(_, samples)| !samples.iter().any(|sample| queried.contains(sample)))
        .map(|(name, _)| name)
        .collect();
    assert!(
        missing.is_empty(),
        "metrics /metrics serves that no panel shows: {missing:?}"
    );
}

fn promtool() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file())
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else {
        support::skip(
            "promtool_accepts_the_rules_and_their_unit_tests_pass",
            "no promtool (Debian package prometheus; tests/run-all.sh unpacks it as root): set PROMTOOL",
        );
        return;
    };
    for args in [
        ["check", "rules", "prometheus-rules.yml"],
        ["test", "rules", "prometheus-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(examples())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        assert!(
            out.status.success(),
            "promtool {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

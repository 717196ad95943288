//! Replays, without libFuzzer, every committed input of every target through its checks: the seed
//! corpus (`corpus/<target>/`) and the crashes fuzzing found (`regressions/<target>/`, one file per
//! crash, named after what it caught). A crash that was fixed stays fixed.
//!
//!     cargo test --manifest-path fuzz/Cargo.toml

use std::path::Path;

/// Every input of `target` through `check`; the inputs that fail it (all of them, not just the first).
fn replay(target: &str, check: fn(&[u8])) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    let mut failed = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(format!(
                    "{dir}/{target}/{}",
                    path.file_name().unwrap().display()
                ));
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "{target}: no corpus");
    failed
}

fn assert_none_failed(target: &str, failed: &[String]) {
    assert!(
        failed.is_empty(),
        "{target}: {} input(s) fail the checks (panics above):\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
}

#[test]
fn config_toml() {
    let failed = replay("config_toml", cryptobot_fuzz::config_toml);
    cryptobot_fuzz::config_cleanup();
    assert_none_failed("config_toml", &failed);
}

#[test]
fn command_parse() {
    assert_none_failed(
        "command_parse",
        &replay("command_parse", cryptobot_fuzz::command_parse),
    );
}

#[test]
fn update_decode() {
    assert_none_failed(
        "update_decode",
        &replay("update_decode", cryptobot_fuzz::update_decode),
    );
}

#[test]
fn webhook_request() {
    assert_none_failed(
        "webhook_request",
        &replay("webhook_request", cryptobot_fuzz::webhook_request),
    );
}

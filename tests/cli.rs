//! The command line as a user meets it: usage errors exit 64, bad configuration exits 78 with one line
//! naming the key and the file, check-config prints the effective configuration without the token.

mod support;

use std::time::Duration;

use support::{Host, assert_no_token, random_token};

const T: Duration = Duration::from_secs(20);

#[test]
fn usage_error_exits_64_and_version_exits_0() {
    let host = Host::new(&random_token(), "http://127.0.0.1:9");
    let (status, _, stderr) = host.run_to_end(&["frobnicate"], T);
    assert_eq!(status.code(), Some(64), "{stderr}");
    let (status, stdout, _) = host.run_to_end(&["--version"], T);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.starts_with("cryptobot "), "{stdout}");
}

/// `stop --timeout 18446744073709551615` panicked (exit 101) after sending SIGTERM: the deadline
/// overflowed. A timeout out of range is a usage error before anything is done.
#[test]
fn stop_with_a_timeout_out_of_range_is_a_usage_error() {
    let host = Host::new(&random_token(), "http://127.0.0.1:9");
    for timeout in ["18446744073709551615", "86401", "ten"] {
        let (status, _, stderr) = host.run_to_end(&["stop", "--timeout", timeout], T);
        assert_eq!(status.code(), Some(64), "--timeout {timeout}: {stderr}");
        assert!(stderr.contains("--timeout"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn check_config_prints_the_effective_values_with_the_token_redacted() {
    let token = random_token();
    let host = Host::new(&token, "http://127.0.0.1:9");
    let (status, stdout, stderr) = host.run_to_end(&["check-config"], T);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("api_url = \"http://127.0.0.1:9/\""),
        "{stdout}"
    );
    assert!(stdout.contains(":<redacted>"), "{stdout}");
    assert_no_token(&token, &[&stdout, &stderr]);
}

#[test]
fn bad_config_values_exit_78_naming_key_and_file() {
    let token = random_token();
    let host = Host::new(&token, "http://127.0.0.1:9");
    let file = host.dir.path().join("bad.toml");
    for (text, key) in [
        ("poll_timeout = \"soon\"\n", "poll_timeout"),
        ("pol_timeout = 3\n", "pol_timeout"),
        ("this is not toml\n", "bad.toml"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (status, _, stderr) = host.run_to_end(&["--config", file.to_str().unwrap(), "run"], T);
        assert_eq!(status.code(), Some(78), "{text:?}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("bad.toml"),
            "{text:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{text:?}: {stderr}");
    }
}

#[test]
fn missing_token_exits_78_with_what_to_do() {
    let host = Host::new(&random_token(), "http://127.0.0.1:9");
    let mut cmd = host.command(&["run"]);
    cmd.env_remove("CRYPTOBOT_TOKEN_FILE");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // (On a host with /etc/cryptobot/token the bot would use it: the documented last fallback.)
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("no bot token"), "{stderr}");
}

//! The `fake-bot-api` binary: ready line, tokens from flags and files, stops cleanly on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::json;
use support::{TOKEN, result};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_fake-bot-api");

/// Waits for the child to exit, at most `WAIT`.
fn wait_bounded(mut child: Child) -> ExitStatus {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(WAIT) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("fake-bot-api (pid {pid}) did not exit within {WAIT:?}");
        }
    }
}

#[test]
fn binary_prints_its_url_serves_the_tokens_and_stops_on_sigterm() {
    let token_file = format!(
        "{}/fake-bot-api-token-{}",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    std::fs::write(&token_file, "777:fromafile_secret\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--token-file",
            &token_file,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).expect("no ready line on stdout");
    let url = line
        .trim_end()
        .strip_prefix("fake-bot-api listening on http://")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    let addr: SocketAddr = url.parse().unwrap();

    assert_eq!(result(addr, TOKEN, "getMe", &json!({}))["id"], 123_456);
    assert_eq!(
        result(addr, "777:fromafile_secret", "getMe", &json!({}))["username"],
        "fake777_bot"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_bounded(child);
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let _ = std::fs::remove_file(token_file);
}

#[test]
fn binary_refuses_bad_arguments_with_64() {
    for args in [
        &["--listen", "nowhere"][..],
        &["--token", "not-a-token", "--listen", "127.0.0.1:0"],
        &["--what"],
    ] {
        let child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(wait_bounded(child).code(), Some(64), "{args:?}");
    }
}

//! G1 across processes: the second `cryptobot run` on one token is refused with the holder's PID, the
//! lock is free the moment the holder dies, and bad runtime directories are clear errors.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, assert_no_token, random_token};

const T: Duration = Duration::from_secs(20);

#[test]
fn second_instance_is_refused_with_holder_pid() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "guard_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let first = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    let id = support::bot_id(&token);
    // The first instance only polls from now on: every other call counted so far is its own.
    let not_polls = |stats: fake_bot_api::Stats| {
        let mut calls = stats.calls;
        calls.remove("getUpdates");
        calls
    };
    let before = not_polls(api.stats(id));
    assert_eq!(before.get("getMe"), Some(&1), "{before:?}");

    let (status, _, stderr) = host.run_to_end(&["run"], T);
    assert_eq!(status.code(), Some(75), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("PID {}", first.pid())),
        "holder PID missing: {stderr}"
    );
    assert!(
        stderr.contains("stop it with: "),
        "no stop command: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert_no_token(&token, &[&stderr]);
    // The refused instance never talked to Telegram: no getMe (nor anything else but the first's
    // polls), and no poll of its own ended the first one's.
    assert_eq!(not_polls(api.stats(id)), before, "a call before the lock");
    assert_eq!(api.stats(id).conflicts_409, 0);
}

#[test]
fn lock_is_free_at_once_after_the_holder_is_killed() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "guard_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut first = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    first.signal(Signal::SIGKILL);
    first.wait_exit(T);

    let notify2 = NotifySocket::new();
    let mut second = host.spawn_run(Some(&notify2), &[]);
    notify2.wait_for("READY=1", T);
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(T).code(), Some(0), "{}", second.stderr());
}

#[test]
fn garbage_or_empty_lock_file_does_not_block_a_start() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "guard_bot");
    let host = Host::new(&token, &api.url());
    for content in [&b""[..], b"\xff\xfe\x00garbage{{{"] {
        std::fs::write(host.lock_path(), content).unwrap();
        let notify = NotifySocket::new();
        let mut bot = host.spawn_run(Some(&notify), &[]);
        notify.wait_for("READY=1", T);
        let written = std::fs::read_to_string(host.lock_path()).unwrap();
        assert!(
            written.contains(&format!("\"pid\":{}", bot.pid())),
            "diagnostics not rewritten: {written}"
        );
        bot.signal(Signal::SIGTERM);
        assert_eq!(bot.wait_exit(T).code(), Some(0));
    }
}

#[test]
fn unwritable_runtime_dir_is_a_clear_config_error() {
    let token = random_token();
    let host = Host::new(&token, "http://127.0.0.1:9");
    // A regular file where the runtime directory should be: unusable for root and non-root alike.
    let not_a_dir = host.dir.path().join("not-a-dir");
    std::fs::write(&not_a_dir, "").unwrap();
    let mut cmd = host.command(&["run"]);
    cmd.env("CRYPTOBOT_RUNTIME_DIR", &not_a_dir);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("runtime directory") && stderr.contains("CRYPTOBOT_RUNTIME_DIR"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn status_and_stop_see_the_holder_without_disturbing_it() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "guard_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);

    let (status, stdout, stderr) = host.run_to_end(&["status"], T);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("PID {}", bot.pid())), "{stdout}");
    assert!(stdout.contains("version 0.1.0"), "{stdout}");

    let (status, stdout, stderr) = host.run_to_end(&["stop", "--timeout", "15"], T);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("lock is free"), "{stdout}");
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());

    let (status, stdout, _) = host.run_to_end(&["status"], T);
    assert_eq!(status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("not running"), "{stdout}");
}

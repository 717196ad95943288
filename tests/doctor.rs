//! `cryptobot doctor` in the situations an operator meets: healthy, a lock held, a bad token, a webhook
//! set, and conflicts with an instance elsewhere. Exit 0 healthy, 1 with problems.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, assert_no_token, http_post_json, random_token};

const T: Duration = Duration::from_secs(30);

#[test]
fn doctor_on_a_healthy_setup_names_the_running_instance_and_exits_0() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "doctor_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);

    let (status, stdout, stderr) = host.run_to_end(&["doctor"], T);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("token accepted by Telegram: @doctor_bot"),
        "{stdout}"
    );
    assert!(stdout.contains("no webhook set"), "{stdout}");
    assert!(
        stdout.contains(&format!("PID {}", bot.pid())),
        "the lock holder is not named: {stdout}"
    );
    assert!(stdout.trim_end().ends_with("healthy"), "{stdout}");
    assert_no_token(&token, &[&stdout, &stderr]);
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}

#[test]
fn doctor_with_a_rejected_token_reports_it_and_exits_1() {
    let api = FakeBotApi::start();
    let token = random_token(); // not registered: 401
    let host = Host::new(&token, &api.url());
    let (status, stdout, stderr) = host.run_to_end(&["doctor"], T);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("PROBLEM  Telegram rejected the token"),
        "{stdout}"
    );
    assert!(stdout.contains("@BotFather"), "{stdout}");
    assert_no_token(&token, &[&stdout, &stderr]);
}

#[test]
fn doctor_with_a_webhook_set_names_delete_webhook_and_exits_1() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "doctor_bot");
    let (code, body) = http_post_json(
        &api.url(),
        &format!("/bot{token}/setWebhook"),
        r#"{"url":"http://127.0.0.1:9/hook"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let host = Host::new(&token, &api.url());
    let (status, stdout, _) = host.run_to_end(&["doctor"], T);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("a webhook is set (http://127.0.0.1:9/hook)")
            && stdout.contains("deleteWebhook"),
        "{stdout}"
    );
}

#[test]
fn doctor_names_external_conflicts_with_the_checklist() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "doctor_bot");
    let fast = [
        ("CRYPTOBOT_CONFLICT_BACKOFF_INITIAL", "0.5"),
        ("CRYPTOBOT_CONFLICT_BACKOFF_MAX", "1"),
    ];
    let (here, elsewhere) = (Host::new(&token, &api.url()), Host::new(&token, &api.url()));
    let notify = NotifySocket::new();
    let mut local = here.spawn_run(Some(&notify), &fast);
    notify.wait_for("READY=1", T);
    let mut other = elsewhere.spawn_run(None, &fast);
    // Wait until this host's instance itself was answered 409 (its STATUS says so).
    notify.wait_for("STATUS=conflict", T);
    api.wait_until(id, |s| s.conflicts_409 >= 1, T).unwrap();

    let (status, stdout, _) = here.run_to_end(&["doctor"], T);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("conflicts (409) with another poller"),
        "{stdout}"
    );
    assert!(
        stdout.contains("@BotFather") && stdout.contains("containers"),
        "{stdout}"
    );
    for bot in [&mut local, &mut other] {
        bot.signal(Signal::SIGTERM);
        assert_eq!(bot.wait_exit(T).code(), Some(0));
    }
}

//! Update ids are not increasing forever (telegram.md): after a week without updates Telegram picks
//! the next id at random, and another Bot API server has its own sequence. The bot must answer an
//! update whose id is below (or equal to) one it handled long ago, in polling and webhook mode and
//! across a restart, and its offset must follow the ids Telegram hands out, so that everything it
//! handled is confirmed (an offset "in the future" would confirm nothing).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, PassedListener, random_token};

const T: Duration = Duration::from_secs(20);

fn stop(bot: &mut support::BotProcess) {
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
}

#[test]
fn ids_that_jump_down_after_a_quiet_week_are_answered_across_a_restart() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "reset_bot");
    let host = Host::new(&token, &api.url());

    api.set_next_update_id(id, 1000);
    let notify = NotifySocket::new();
    let mut first = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    assert_eq!(api.inject_message(id, 1, "/ping"), 1000);
    api.wait_for_sent(id, |m| m.chat_id == 1, T).unwrap();
    stop(&mut first);

    // A week later: Telegram chose a lower id for the next update.
    api.set_next_update_id(id, 5);
    assert_eq!(api.inject_message(id, 2, "/ping"), 5);
    assert_eq!(api.inject_message(id, 3, "/ping"), 6);
    let notify = NotifySocket::new();
    let mut second = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    for chat in [2, 3] {
        api.wait_for_sent(id, |m| m.chat_id == chat, T)
            .unwrap_or_else(|e| {
                panic!(
                    "update from chat {chat} not answered: {e}\n{}",
                    second.stderr()
                )
            });
    }
    api.wait_until(id, |s| s.pending_updates == 0, T)
        .expect("the offset followed the new ids and confirmed them");
    stop(&mut second);
    assert_eq!(api.sent(id).len(), 3, "{:?}", api.sent(id));
    assert!(api.stats(id).deliveries.values().all(|n| *n == 1));
}

#[test]
fn ids_that_jump_down_while_running_are_answered_and_confirmed() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "jump_bot");
    let host = Host::new(&token, &api.url());
    api.set_next_update_id(id, 100_000);
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 1, "/ping");
    api.wait_for_sent(id, |m| m.chat_id == 1, T).unwrap();

    // The poll in progress carries offset 100001, "in the future" for the new ids: Telegram answers
    // from the head of its queue and confirms nothing until the bot's offset follows.
    api.set_next_update_id(id, 7);
    api.inject_message(id, 2, "/ping");
    api.inject_message(id, 3, "/ping");
    for chat in [2, 3] {
        api.wait_for_sent(id, |m| m.chat_id == chat, T)
            .unwrap_or_else(|e| {
                panic!(
                    "update from chat {chat} not answered: {e}\n{}",
                    bot.stderr()
                )
            });
    }
    api.wait_until(id, |s| s.pending_updates == 0, T)
        .expect("the offset followed the new ids and confirmed them");
    stop(&mut bot);
    assert_eq!(api.sent(id).len(), 3, "{:?}", api.sent(id));
    assert!(api.stats(id).deliveries.values().all(|n| *n == 1));
}

/// After a reset, an update may even get the very id of one handled before. It is another update (its
/// content differs) and is answered; a redelivery of the same update is still skipped.
#[test]
fn a_reused_id_with_other_content_is_a_new_update() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "reuse_bot");
    let host = Host::new(&token, &api.url());
    api.set_next_update_id(id, 42);
    let notify = NotifySocket::new();
    let mut first = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 1, "/ping");
    api.wait_for_sent(id, |m| m.chat_id == 1, T).unwrap();
    stop(&mut first);

    api.set_next_update_id(id, 42);
    assert_eq!(api.inject_message(id, 2, "/help"), 42);
    let notify = NotifySocket::new();
    let mut second = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    api.wait_for_sent(id, |m| m.chat_id == 2, T)
        .unwrap_or_else(|e| {
            panic!(
                "the update reusing id 42 was not answered: {e}\n{}",
                second.stderr()
            )
        });
    stop(&mut second);
    assert_eq!(api.sent(id).len(), 2, "{:?}", api.sent(id));
}

#[test]
fn webhook_mode_answers_ids_that_jump_down() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "reset_webhook_bot");
    let host = Host::new(&token, &api.url());
    let listener = PassedListener::new();
    let addr = listener.addr.clone();
    let secret_file = host.dir.path().join("webhook_secret");
    std::fs::write(&secret_file, "reset-secret_0123456789\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("http://{addr}");
    let secret_path = secret_file.display().to_string();
    let env = [
        ("CRYPTOBOT_MODE", "webhook"),
        ("CRYPTOBOT_WEBHOOK_URL", url.as_str()),
        ("CRYPTOBOT_WEBHOOK_SECRET_FILE", secret_path.as_str()),
    ];
    api.set_next_update_id(id, 5000);
    let notify = NotifySocket::new();
    let mut first = host.spawn_run_on(&listener, Some(&notify), &env);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 1, "/ping");
    api.wait_for_sent(id, |m| m.chat_id == 1, T).unwrap();
    stop(&mut first);

    api.set_next_update_id(id, 3);
    api.inject_message(id, 2, "/ping");
    let notify = NotifySocket::new();
    let mut second = host.spawn_run_on(&listener, Some(&notify), &env);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 3, "/ping");
    for chat in [2, 3] {
        api.wait_for_sent(id, |m| m.chat_id == chat, T)
            .unwrap_or_else(|e| {
                panic!(
                    "update from chat {chat} not answered: {e}\n{}",
                    second.stderr()
                )
            });
    }
    stop(&mut second);
    assert_eq!(api.sent(id).len(), 3, "{:?}", api.sent(id));
}

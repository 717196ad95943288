//! Unit tests for configuration loading: precedence, validation, one-line errors.

use super::*;

const TOKEN: &str = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1";

fn base_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), dir.display().to_string()),
        (
            "CRYPTOBOT_RUNTIME_DIR".into(),
            dir.join("run").display().to_string(),
        ),
        (
            "CRYPTOBOT_STATE_DIR".into(),
            dir.join("state").display().to_string(),
        ),
    ]
}

fn env_of(pairs: &[(String, String)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_apply_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::load(None, &env_of(&base_env(dir.path()))).unwrap();
    assert_eq!(s.api_url.as_str(), "https://api.telegram.org/");
    assert_eq!(s.poll_timeout, Duration::from_secs(30));
    assert_eq!(s.log, "info");
    assert!(s.file.is_none());
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.toml",
        "api_url = \"http://127.0.0.1:1\"\npoll_timeout = 10\n",
    );
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_API_URL".into(), "http://127.0.0.1:2".into()));
    let s = Settings::load(Some(&file), &env_of(&env)).unwrap();
    assert_eq!(s.api_url.as_str(), "http://127.0.0.1:2/");
    assert_eq!(s.poll_timeout, Duration::from_secs(10));
}

#[test]
fn unknown_key_is_one_line_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "log = \"info\"\napi_ulr = \"x\"\n");
    let err = Settings::load(Some(&file), &env_of(&base_env(dir.path()))).unwrap_err();
    assert_eq!(err.code, crate::exit::Code::Config);
    assert!(!err.message.contains('\n'), "{}", err.message);
    assert!(err.message.contains("c.toml: line 2:"), "{}", err.message);
    assert!(err.message.contains("api_ulr"), "{}", err.message);
}

#[test]
fn wrong_type_and_malformed_toml_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "poll_timeout = \"ten\"\n",
        "log = \n",
        "[[[\n",
        "poll_timeout = 0\n",
        "api_url = \"ftp://x\"\n",
    ] {
        let file = write(dir.path(), "c.toml", text);
        let err = Settings::load(Some(&file), &env_of(&base_env(dir.path()))).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config, "{text:?}");
        assert!(!err.message.contains('\n'), "{text:?}: {}", err.message);
    }
}

#[test]
fn the_pipeline_settings_default_and_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = Settings::load(None, &env_of(&base_env(dir.path()))).unwrap();
    assert_eq!(defaults.pipeline.concurrent_chats, 64);
    assert_eq!(defaults.pipeline.sends_in_flight, 32);
    let file = write(
        dir.path(),
        "p.toml",
        "concurrent_chats = 8\nsends_in_flight = 4\n",
    );
    let set = Settings::load(Some(&file), &env_of(&base_env(dir.path()))).unwrap();
    assert_eq!(
        (set.pipeline.concurrent_chats, set.pipeline.sends_in_flight),
        (8, 4)
    );
    for text in ["concurrent_chats = 0\n", "sends_in_flight = 257\n"] {
        let file = write(dir.path(), "bad.toml", text);
        let err = Settings::load(Some(&file), &env_of(&base_env(dir.path()))).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config, "{text:?}");
        assert!(
            err.message.contains("out of range; use 1 to"),
            "{}",
            err.message
        );
    }
}

#[test]
fn bad_environment_value_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_POLL_TIMEOUT".into(), "soon".into()));
    let err = Settings::load(None, &env_of(&env)).unwrap_err();
    assert!(
        err.message.starts_with("CRYPTOBOT_POLL_TIMEOUT"),
        "{}",
        err.message
    );
}

#[test]
fn missing_config_argument_is_a_config_error() {
    let err = Settings::load(Some(Path::new("/nonexistent/c.toml")), &Env::default()).unwrap_err();
    assert_eq!(err.code, crate::exit::Code::Config);
}

#[test]
fn credential_beats_token_file_beats_environment() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    write(&creds, "token", "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    let file = write(
        dir.path(),
        "token",
        "2:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n",
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_TOKEN".into(), TOKEN.into()));
    assert_eq!(
        Config::load(None, &env_of(&env)).unwrap().token.bot_id(),
        123456
    );
    env.push(("CRYPTOBOT_TOKEN_FILE".into(), file.display().to_string()));
    assert_eq!(Config::load(None, &env_of(&env)).unwrap().token.bot_id(), 2);
    env.push(("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()));
    let c = Config::load(None, &env_of(&env)).unwrap();
    assert_eq!(c.token.bot_id(), 1);
    assert_eq!(c.token_source, TokenSource::Credential(creds.join("token")));
}

#[test]
fn token_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "token", TOKEN);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_TOKEN_FILE".into(), file.display().to_string()));
    let err = Config::load(None, &env_of(&env)).unwrap_err();
    assert_eq!(err.code, crate::exit::Code::Config);
    assert!(err.message.contains("chmod 600"), "{}", err.message);
    assert!(!err.message.contains("AAHdq"));
}

#[test]
fn empty_token_file_and_bad_shape_are_config_errors() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "\n", "not-a-token"] {
        let file = write(dir.path(), "token", text);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut env = base_env(dir.path());
        env.push(("CRYPTOBOT_TOKEN_FILE".into(), file.display().to_string()));
        let err = Config::load(None, &env_of(&env)).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config, "{text:?}");
        assert!(!err.message.contains("not-a-token"), "{}", err.message);
    }
}

#[test]
fn render_redacts_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_TOKEN".into(), TOKEN.into()));
    let out = Config::load(None, &env_of(&env)).unwrap().render();
    assert!(out.contains("token = \"123456:<redacted>\""), "{out}");
    assert!(!out.contains("AAHdq"), "{out}");
}

#[test]
fn the_shipped_config_file_documents_valid_keys_with_their_defaults() {
    let shipped = include_str!("../../packaging/cryptobot.toml");
    // Uncomment every `#key = value` line: the result must load and equal the built-in defaults.
    let uncommented: String = shipped
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.lines().count() >= 10, "{uncommented}");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "shipped.toml", &uncommented);
    let mut env = base_env(dir.path());
    env.retain(|(k, _)| k == "HOME");
    let from_file = Settings::load(Some(&file), &env_of(&env)).unwrap();
    let defaults = Settings::load(None, &env_of(&env)).unwrap();
    assert_eq!(from_file.api_url, defaults.api_url);
    assert_eq!(from_file.poll_timeout, defaults.poll_timeout);
    assert_eq!(from_file.conflict, defaults.conflict);
    assert_eq!(from_file.delete_webhook, defaults.delete_webhook);
    assert_eq!(from_file.log, defaults.log);
    let (mut file_bot, default_bot) = (from_file.bot.clone(), defaults.bot.clone());
    // The shipped file names the key file as an example; without it the defaults have none.
    assert_eq!(
        file_bot.price_api_key_file.take().unwrap(),
        PathBuf::from("/etc/cryptobot/price_api_key")
    );
    assert_eq!(file_bot, default_bot);
    assert_eq!(
        from_file.listen,
        Some("127.0.0.1:8080".parse().unwrap()),
        "the example listen address"
    );
    assert_eq!(defaults.listen, None);
}

/// Found while fuzzing the config: a NaN passed the range check and Duration::from_secs_f64 panicked
/// (exit 101, and a reload with it panicked too); a log directive with leading blanks before a
/// multi-byte character panicked inside tracing-subscriber.
#[test]
fn nan_backoffs_and_odd_log_filters_are_config_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "conflict_backoff_initial = nan\n",
        "conflict_backoff_max = nan\n",
        "log = \" \u{e9}=info\"\n",
    ] {
        let file = write(dir.path(), "c.toml", text);
        let outcome = std::panic::catch_unwind(|| {
            Settings::load(Some(&file), &env_of(&base_env(dir.path())))
        });
        let result = outcome.unwrap_or_else(|_| panic!("{text:?} panicked"));
        if let Err(e) = &result {
            assert_eq!(e.code, crate::exit::Code::Config, "{text:?}: {}", e.message);
            assert_eq!(e.message.lines().count(), 1, "{}", e.message);
        }
    }
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_CONFLICT_BACKOFF_INITIAL".into(), "NaN".into()));
    let err = Settings::load(None, &env_of(&env)).unwrap_err();
    assert_eq!(err.code, crate::exit::Code::Config);
    // Blanks around directives are accepted and trimmed.
    let file = write(dir.path(), "c.toml", "log = \"info, cryptobot=debug\"\n");
    let s = Settings::load(Some(&file), &env_of(&base_env(dir.path()))).unwrap();
    assert_eq!(s.log, "info,cryptobot=debug");
}

#[test]
fn price_api_key_from_credential_or_file_under_the_secret_file_rules() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key_file = write(dir.path(), "price_api_key", "  k3y-from-file \n");
    let config = write(
        dir.path(),
        "c.toml",
        &format!(
            "price_api_key_file = {:?}\n",
            key_file.display().to_string()
        ),
    );
    let mut env = base_env(dir.path());
    env.push(("CRYPTOBOT_TOKEN".into(), TOKEN.into()));
    assert_eq!(
        Config::load(None, &env_of(&env)).unwrap().price_api_key,
        None
    );

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load(Some(&config), &env_of(&env)).unwrap_err();
    assert_eq!(err.code, crate::exit::Code::Config);
    assert!(err.message.contains("chmod 600"), "{}", err.message);
    assert!(!err.message.contains("k3y"), "{}", err.message);

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::load(Some(&config), &env_of(&env)).unwrap();
    assert_eq!(c.price_api_key.as_deref(), Some("k3y-from-file"));

    std::fs::write(&key_file, "two words\n").unwrap();
    let err = Config::load(Some(&config), &env_of(&env)).unwrap_err();
    assert!(err.message.ends_with("is not one word"), "{}", err.message);
    assert!(!err.message.contains("two"), "{}", err.message);

    // The credential wins, whatever its mode.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let credential = write(&creds, "price_api_key", "k3y-from-credential\n");
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.push(("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()));
    let c = Config::load(Some(&config), &env_of(&env)).unwrap();
    assert_eq!(c.price_api_key.as_deref(), Some("k3y-from-credential"));
}

//! `fake-bot-api`: the fake Telegram Bot API as a standalone process, for the systemd end-to-end
//! tests and for trying the bot offline. Parses the command line, starts the library's server,
//! prints one ready line and runs until SIGTERM or SIGINT.
//!
//! Exit codes: 0 stopped by a signal, 64 bad command line, 66 a token file cannot be read,
//! 71 cannot listen or set up signal handling.

use std::net::SocketAddr;
use std::process::ExitCode;

use fake_bot_api::FakeBotApi;

const USAGE: &str = "\
usage: fake-bot-api [--listen ADDR] [--token TOKEN]... [--token-file PATH]...

A fake Telegram Bot API for tests. Never point a real bot token at it.

  --listen ADDR      address to listen on (default 127.0.0.1:8081; port 0 picks a free one)
  --token TOKEN      accept this bot token (<bot id>:<secret>); repeatable
  --token-file PATH  accept the token(s) in this file, one per line; repeatable
  -h, --help         show this help

Prints `fake-bot-api listening on http://ADDR` when ready; stops on SIGTERM or SIGINT.
The control API (CONTRACT.md) is served on the same address under /control/.";

struct Args {
    listen: SocketAddr,
    tokens: Vec<String>,
    token_files: Vec<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        tokens: Vec::new(),
        token_files: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let text = value()?;
                parsed.listen = text
                    .parse()
                    .map_err(|_| format!("--listen: not an IP:PORT address: {text:?}"))?;
            }
            "--token" => parsed.tokens.push(value()?),
            "--token-file" => parsed.token_files.push(value()?),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("fake-bot-api: {error}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let mut tokens = args.tokens;
    for path in &args.token_files {
        match std::fs::read_to_string(path) {
            Ok(text) => tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            ),
            Err(error) => {
                eprintln!("fake-bot-api: cannot read token file {path}: {error}");
                return ExitCode::from(66);
            }
        }
    }
    let api = match FakeBotApi::start_on(args.listen) {
        Ok(api) => api,
        Err(error) => {
            eprintln!("fake-bot-api: cannot listen on {}: {error}", args.listen);
            return ExitCode::from(71);
        }
    };
    for token in &tokens {
        // Validate first: add_bot panics on a malformed token.
        if fake_bot_api::is_valid_token(token) {
            api.add_bot(token, "");
        } else {
            eprintln!(
                "fake-bot-api: a --token/--token-file entry is not <bot id>:<[A-Za-z0-9_-]+>"
            );
            return ExitCode::from(64);
        }
    }
    let ready = || {
        println!("fake-bot-api listening on {}", api.url());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    match wait_for_signal(ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fake-bot-api: cannot wait for signals: {error}");
            ExitCode::from(71)
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers, then calls `ready` (so a signal sent as soon as the ready
/// line is seen is handled), then waits for one of them.
fn wait_for_signal(ready: impl FnOnce()) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        ready();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_repeat_and_accept_equals_form() {
        let args = parse(&[
            "--listen=127.0.0.1:0",
            "--token",
            "1:a",
            "--token",
            "2:b",
            "--token-file",
            "/t",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.tokens, vec!["1:a", "2:b"]);
        assert_eq!(args.token_files, vec!["/t"]);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--listen", "nowhere"]).is_err());
        assert!(parse(&["--token"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}

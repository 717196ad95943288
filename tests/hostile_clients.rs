//! The HTTP listener against hostile clients (issue 13, item 6), on the real binary with its
//! production limits (`http::Limits::default()`, `webhook::BODY_READ_TIMEOUT`): a stranger's stalled
//! bodies are refused from the head and cost no memory, half-sent heads are cut by the header
//! timeout, idle connections beyond the cap leave the bot its file descriptors, and a stalled body
//! with the right secret is cut by the body timeout. Every wait is bounded; only loopback is used.
//! Each test prints the bot's peak RSS (VmHWM) under its load: the figure behind `MemoryMax=` in
//! the units.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cryptobot::http::Limits;
use cryptobot::webhook::{BODY_READ_TIMEOUT, MAX_BODY};
use support::fake_prices::FakePrices;
use support::{BotProcess, FakeBotApi, Host, NotifySocket, PassedListener, http_get, random_token};

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "hostile-clients-secret_0123456789";

/// A bot in webhook mode on a free loopback port, READY.
struct WebhookBot {
    api: FakeBotApi,
    id: i64,
    addr: String,
    bot: BotProcess,
    _host: Host,
}

impl WebhookBot {
    fn start() -> Self {
        let api = FakeBotApi::start();
        let token = random_token();
        let id = api.add_bot(&token, "hostile_bot");
        let host = Host::new(&token, &api.url());
        let listener = PassedListener::new();
        let addr = listener.addr.clone();
        let secret_file = host.dir.path().join("webhook_secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret_file = secret_file.display().to_string();
        let public_url = format!("http://{addr}");
        let notify = NotifySocket::new();
        let bot = host.spawn_run_on(
            &listener,
            Some(&notify),
            &[
                ("CRYPTOBOT_MODE", "webhook"),
                ("CRYPTOBOT_WEBHOOK_URL", &public_url),
                ("CRYPTOBOT_WEBHOOK_SECRET_FILE", &secret_file),
            ],
        );
        notify.wait_for("READY=1", T);
        Self {
            api,
            id,
            addr,
            bot,
            _host: host,
        }
    }

    /// The webhook's path, derived from the secret.
    fn path(&self) -> String {
        let secret = cryptobot::config::WebhookSecret::parse(SECRET).unwrap();
        format!(
            "{}{}",
            cryptobot::webhook::PATH_PREFIX,
            cryptobot::webhook::path_secret(&secret)
        )
    }

    /// Telegram delivers `/ping` from `chat`; the bot's answer arrives within `bound`.
    fn ping_is_answered(&self, chat: i64, bound: Duration) {
        self.api.inject_message(self.id, chat, "/ping");
        self.api
            .wait_for_sent(self.id, |m| m.chat_id == chat, bound)
            .unwrap_or_else(|e| panic!("no answer to /ping from chat {chat}: {e}"));
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The status code at the start of an HTTP answer, if there is one.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Reads until the server closes the connection (end of file or reset), within `bound`: what it
/// sent, or `None` if it still held the connection open then.
fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + bound;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(received), // reset: closed
        }
    }
}

#[test]
fn stalled_large_posts_without_the_secret_are_refused_at_once_and_cost_no_memory() {
    let wb = WebhookBot::start();
    let pid = wb.bot.pid();
    let before = memory_kib(pid, "VmRSS");
    const CLIENTS: usize = 300;
    // Each announces a 1 MiB update (the most a body may be), sends all of it but the last byte,
    // and stalls: a body the bot would wait for, and hold, if it read bodies before the secret.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, path) = (wb.addr.clone(), wb.path());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).expect("connect to the bot");
                let secret = if i % 2 == 0 {
                    ""
                } else {
                    "X-Telegram-Bot-Api-Secret-Token: guess\r\n"
                };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                     Content-Length: {MAX_BODY}\r\n{secret}\r\n"
                );
                stream
                    .set_write_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let sent = Instant::now();
                // Refused from the head, the connection is closed under the writes: errors expected.
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&vec![b' '; MAX_BODY - 1]));
                let answer = read_until_closed(&mut stream, BODY_READ_TIMEOUT / 2);
                (
                    answer.as_deref().and_then(status_of),
                    sent.elapsed(),
                    stream,
                )
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let peak = memory_kib(pid, "VmHWM");
    let after = memory_kib(pid, "VmRSS");
    eprintln!(
        "{CLIENTS} stalled 1 MiB POSTs without the secret: VmRSS {before} kB before, {after} kB \
         after, peak (VmHWM) {peak} kB"
    );
    for (i, (status, elapsed, _stream)) in answers.iter().enumerate() {
        assert_eq!(
            *status,
            Some(401),
            "client {i}: no 401 within {:?} (after {elapsed:?}); stderr:\n{}",
            BODY_READ_TIMEOUT / 2,
            wb.bot.stderr()
        );
    }
    // Reading the bodies would take 300 MiB; the heads alone take a few buffers at a time.
    assert!(
        peak < before + 48 * 1024,
        "the bot's peak RSS went from {before} to {peak} kB under {CLIENTS} stalled bodies"
    );
    drop(answers);
    wb.ping_is_answered(7, T);
    let stderr = wb.bot.stderr();
    assert!(!stderr.contains(SECRET), "the secret leaked:\n{stderr}");
}

#[test]
fn half_sent_heads_are_closed_after_the_header_timeout() {
    let wb = WebhookBot::start();
    let timeout = Limits::default().header_read_timeout;
    let path = wb.path();
    let heads = [
        String::new(),                       // connects and says nothing
        format!("POST {path} HTTP/1.1\r\n"), // a request line, no headers
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 10\r\n",
            wb.addr
        ), // no blank line
    ];
    let mut clients: Vec<TcpStream> = (0..150)
        .map(|i| {
            let mut stream = TcpStream::connect(&wb.addr).expect("connect to the bot");
            stream.write_all(heads[i % heads.len()].as_bytes()).unwrap();
            stream
        })
        .collect();
    let opened = Instant::now();
    for (i, stream) in clients.iter_mut().enumerate() {
        let left = (timeout + T).saturating_sub(opened.elapsed());
        let answer = read_until_closed(stream, left).unwrap_or_else(|| {
            panic!(
                "connection {i} ({:?}) still open {:?} after it was opened (header timeout {timeout:?})",
                heads[i % heads.len()],
                opened.elapsed()
            )
        });
        assert_ne!(status_of(&answer), Some(200), "connection {i}");
    }
    assert!(
        opened.elapsed() >= timeout / 2,
        "closed after {:?}, before the header timeout of {timeout:?}",
        opened.elapsed()
    );
    eprintln!(
        "150 half-sent heads: peak (VmHWM) {} kB",
        memory_kib(wb.bot.pid(), "VmHWM")
    );
    let (status, body) = http_get(&wb.addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    wb.ping_is_answered(8, T);
}

#[test]
fn idle_connections_beyond_the_cap_leave_the_bot_its_file_descriptors() {
    let limits = Limits::default();
    // Fewer descriptors than cap + 100 connections need, more than the cap and the bot's own.
    let fd_limit = limits.max_connections + 64;
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "fd_bot");
    let prices = FakePrices::start();
    prices.set("bitcoin", "usd", "67187.12");
    let host = Host::new(&token, &api.url());
    let listener = PassedListener::new();
    let addr = listener.addr.clone();
    let notify = NotifySocket::new();
    let mut cmd = host.shell_command(
        &format!("ulimit -n {fd_limit} && LISTEN_PID=$$ exec \"$0\" \"$@\""),
        &["run"],
    );
    listener.pass_to(&mut cmd);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("CRYPTOBOT_PRICE_API_URL", &prices.url)
        .env("CRYPTOBOT_PRICE_CACHE_TTL", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let bot = BotProcess::adopt(cmd.spawn().expect("spawn cryptobot run under sh"));
    notify.wait_for("READY=1", T);
    let proc_limits = std::fs::read_to_string(format!("/proc/{}/limits", bot.pid())).unwrap();
    assert!(
        proc_limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {fd_limit} "))),
        "the descriptor limit was not set:\n{proc_limits}"
    );

    // cap + 100 clients connect and send nothing: the cap is served (until the header timeout),
    // the rest wait in the listener's backlog.
    let flood_started = Instant::now();
    let idle: Vec<TcpStream> = (0..limits.max_connections + 100)
        .map(|_| TcpStream::connect(&addr).expect("connect to the bot"))
        .collect();
    // The bot's own work needs new descriptors: the price API (a connection per request here) and
    // a sendMessage beside the long poll. Both must go through while the flood holds the cap.
    let before = api.sent(id).len();
    api.inject_message(id, 9, "/price btc");
    api.wait_until(id, |_| api.sent(id).len() > before, T)
        .unwrap_or_else(|e| panic!("no answer to /price: {e}\n{}", bot.stderr()));
    let answered_after = flood_started.elapsed();
    let answer = api.sent(id)[before].text.clone();
    assert!(answer.contains("67187.12"), "{answer}\n{}", bot.stderr());
    assert!(
        answered_after < limits.header_read_timeout,
        "/price was answered only after {answered_after:?}, once the header timeout had freed \
         descriptors:\n{answer}"
    );
    // A monitoring probe on a fresh connection waits in the backlog, at most until the header
    // timeout frees the cap's slots.
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(
        flood_started.elapsed() < limits.header_read_timeout + T,
        "/healthz took {:?}",
        flood_started.elapsed()
    );
    eprintln!(
        "{} idle connections: peak (VmHWM) {} kB",
        idle.len(),
        memory_kib(bot.pid(), "VmHWM")
    );
    drop(idle);
}

#[test]
fn a_stalled_body_with_the_right_secret_is_cut_and_the_bot_serves_on() {
    let wb = WebhookBot::start();
    let mut stalled = TcpStream::connect(&wb.addr).expect("connect to the bot");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\
         X-Telegram-Bot-Api-Secret-Token: {SECRET}\r\n\r\n{{\"update_id\":",
        wb.path(),
        wb.addr
    );
    stalled.write_all(head.as_bytes()).unwrap();
    let sent = Instant::now();
    // Telegram's deliveries go through meanwhile.
    wb.ping_is_answered(10, T);
    let answer = read_until_closed(&mut stalled, BODY_READ_TIMEOUT + T).unwrap_or_else(|| {
        panic!(
            "a stalled body was still held {:?} after its head (body timeout {BODY_READ_TIMEOUT:?})",
            sent.elapsed()
        )
    });
    let waited = sent.elapsed();
    assert!(
        waited >= BODY_READ_TIMEOUT / 2,
        "cut after {waited:?}, before the body timeout: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    wb.ping_is_answered(11, T);
    let (status, body) = http_get(&wb.addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "a stalled body: peak (VmHWM) {} kB",
        memory_kib(wb.bot.pid(), "VmHWM")
    );
}

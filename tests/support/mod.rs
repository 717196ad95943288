//! Test support: a temporary "host" (runtime and state dirs, token file), the cryptobot binary run as a
//! child process against the fake Bot API, and a `NOTIFY_SOCKET` the test owns.
//!
//! Every wait is bounded and fails with a message saying what was awaited and what was seen. Children
//! are killed when their handle drops, so a failing test leaves no process behind.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod fake_prices;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test binary talks to the fake API
pub use fake_bot_api::FakeBotApi;

/// "In CI": `CI` is `true` or `1`. The one definition, shared with tests/run-all.sh: in CI no test
/// may skip for lack of a tool (run-all.sh installs them as root), it fails instead.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test that cannot run on this machine: in CI a failure saying why; otherwise prints
/// `SKIPPED: <test>: <why>` and appends that line to the file `$CRYPTOBOT_SKIP_LOG` names, from which
/// tests/run-all.sh counts and lists the skips in its closing lines (nextest hides what a passing
/// test prints). The caller returns at once after it.
pub fn skip(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: {why}; in CI nothing may be skipped");
    let line = format!("SKIPPED: {test}: {why}");
    println!("{line}");
    if let Some(log) = std::env::var_os("CRYPTOBOT_SKIP_LOG") {
        use std::io::Write;
        // One short write with O_APPEND: lines of tests running at once do not mix.
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            panic!("{test}: cannot record the skip in CRYPTOBOT_SKIP_LOG: {e}");
        }
    }
}

/// The seed of a randomised test: `$variable` if set, else the clock. Printed, with the way to run the
/// test again with it.
pub fn seed(variable: &str) -> u64 {
    let seed = std::env::var(variable)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed: {seed} (rerun with {variable}={seed})");
    seed
}

/// A fresh, valid-looking token with a random bot id, so tests never share a lock or a fake bot.
pub fn random_token() -> String {
    let id = 100_000 + u64::from(std::process::id()) * 1000 + fastrand_u64() % 1000;
    let secret: String = (0..35)
        .map(|_| {
            let chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
            chars[(fastrand_u64() % chars.len() as u64) as usize] as char
        })
        .collect();
    format!("{id}:{secret}")
}

fn fastrand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn bot_id(token: &str) -> i64 {
    token.split(':').next().unwrap().parse().unwrap()
}

/// One simulated host: its own runtime dir (lock), state dir and token file.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub api_url: String,
}

impl Host {
    pub fn new(token: &str, api_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("run")).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            dir,
            token: token.to_owned(),
            api_url: api_url.to_owned(),
        }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.runtime_dir()
            .join(format!("bot-{}.lock", bot_id(&self.token)))
    }

    /// A `cryptobot` command with a clean environment pointing at this host and the fake API.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cryptobot"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("CRYPTOBOT_RUNTIME_DIR", self.runtime_dir())
            .env("CRYPTOBOT_STATE_DIR", self.dir.path().join("state"))
            .env("CRYPTOBOT_TOKEN_FILE", self.dir.path().join("token"))
            .env("CRYPTOBOT_API_URL", &self.api_url)
            .env("CRYPTOBOT_LOG", "info,cryptobot=debug")
            // Never the real CoinGecko: tests that need prices point this at their fake.
            .env("CRYPTOBOT_PRICE_API_URL", "http://127.0.0.1:9")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a short command to completion (bounded) and returns (status, stdout, stderr).
    pub fn run_to_end(&self, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
        run_command_to_end(self.command(args), timeout)
    }

    /// `cryptobot ARGS` started through `/bin/sh -c SCRIPT` with this host's environment, for what
    /// only the shell can set up: the script ends with `exec "$0" "$@"`, and `exec` keeps the
    /// shell's PID, so `LISTEN_PID=$$` names the bot; redirections on it (`3</dev/null`, `4<&-`)
    /// decide which descriptors the bot inherits.
    pub fn shell_command(&self, script: &str, args: &[&str]) -> Command {
        let bot = self.command(args);
        let mut cmd = Command::new("/bin/sh");
        cmd.env_clear()
            .arg("-c")
            .arg(script)
            .arg(bot.get_program())
            .args(bot.get_args())
            .stdin(Stdio::null());
        for (key, value) in bot.get_envs() {
            if let Some(value) = value {
                cmd.env(key, value);
            }
        }
        cmd
    }

    /// Starts `cryptobot run` with `listener` passed as systemd's socket activation passes
    /// `cryptobot.socket` (fd 3 named `http`, `LISTEN_PID` the bot's own PID through
    /// [`Self::shell_command`]), optionally with a notify socket.
    pub fn spawn_run_on(
        &self,
        listener: &PassedListener,
        notify: Option<&NotifySocket>,
        extra_env: &[(&str, &str)],
    ) -> BotProcess {
        let mut cmd = self.shell_command(r#"LISTEN_PID=$$ exec "$0" "$@""#, &["run"]);
        listener.pass_to(&mut cmd);
        spawn_run_command(cmd, notify, extra_env)
    }

    /// Starts `cryptobot run`, optionally with a notify socket.
    pub fn spawn_run(
        &self,
        notify: Option<&NotifySocket>,
        extra_env: &[(&str, &str)],
    ) -> BotProcess {
        spawn_run_command(self.command(&["run"]), notify, extra_env)
    }
}

/// Starts `cmd` (a `cryptobot run`) with the notify socket and the extra environment, its output read.
fn spawn_run_command(
    mut cmd: Command,
    notify: Option<&NotifySocket>,
    extra_env: &[(&str, &str)],
) -> BotProcess {
    if let Some(sock) = notify {
        cmd.env("NOTIFY_SOCKET", &sock.path);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cryptobot run");
    BotProcess::adopt(child)
}

/// Runs `cmd` to completion (bounded: killed and reported after `timeout`) and returns
/// (status, stdout, stderr).
pub fn run_command_to_end(mut cmd: Command, timeout: Duration) -> (ExitStatus, String, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cryptobot");
    let mut proc = BotProcess::adopt(child);
    let status = proc.wait_exit(timeout);
    (status, proc.stdout(), proc.stderr())
}

/// Collected output lines of a child, with a condition variable to wait on.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    /// Set once the pipe reached end of file: every line the child wrote is in `lines`.
    eof: std::sync::atomic::AtomicBool,
    changed: Condvar,
}

impl Output {
    /// Waits (bounded) until the pump saw end of file; false when `deadline` passed first.
    fn wait_eof(&self, deadline: Instant) -> bool {
        let mut lines = self.lines.lock().unwrap();
        while !self.eof.load(std::sync::atomic::Ordering::Acquire) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
        true
    }
}

/// Reads `stream` line by line into `out` until end of file or a read error. Bytes that are not UTF-8
/// are kept (lossily), so one bad byte never hides the lines after it.
fn pump(stream: impl std::io::Read + Send + 'static, out: Arc<Output>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { break };
            out.lines
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&line).into_owned());
            out.changed.notify_all();
        }
        // Under the lock, so a waiter cannot miss the wake-up between its check and its wait.
        let _guard = out.lines.lock().unwrap();
        out.eof.store(true, std::sync::atomic::Ordering::Release);
        out.changed.notify_all();
    });
}

/// A running cryptobot child process; killed on drop.
pub struct BotProcess {
    pub child: Child,
    stdout: Arc<Output>,
    stderr: Arc<Output>,
    status: Option<ExitStatus>,
}

impl BotProcess {
    pub fn adopt(mut child: Child) -> Self {
        let stdout = Arc::new(Output::default());
        let stderr = Arc::new(Output::default());
        // A stream that is not piped has nothing to read: it is at end of file from the start.
        match child.stdout.take() {
            Some(s) => pump(s, Arc::clone(&stdout)),
            None => stdout.eof.store(true, std::sync::atomic::Ordering::Release),
        }
        match child.stderr.take() {
            Some(s) => pump(s, Arc::clone(&stderr)),
            None => stderr.eof.store(true, std::sync::atomic::Ordering::Release),
        }
        Self {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lines.lock().unwrap().join("\n")
    }

    pub fn stdout(&self) -> String {
        self.stdout.lines.lock().unwrap().join("\n")
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        self.wait_for_stderr_where(
            &format!("{needle:?}"),
            |lines| lines.iter().any(|l| l.contains(needle)).then_some(()),
            timeout,
        );
    }

    /// Waits until `check` finds what it looks for in the stderr lines so far, and returns it;
    /// `what` names it in the timeout message.
    pub fn wait_for_stderr_where<R>(
        &self,
        what: &str,
        check: impl Fn(&[String]) -> Option<R>,
        timeout: Duration,
    ) -> R {
        let deadline = Instant::now() + timeout;
        let mut lines = self.stderr.lines.lock().unwrap();
        loop {
            if let Some(found) = check(&lines) {
                return found;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {timeout:?} waiting for {what} on stderr; got:\n{}",
                lines.join("\n")
            );
            lines = self
                .stderr
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("kill");
    }

    /// Waits for the exit (bounded), then until both output pumps read to end of file, so `stdout()`
    /// and `stderr()` hold everything the child wrote. The pipes close when the child exits (no
    /// child of ours leaves a grandchild holding them); the bound only guards against one that does.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                let drain = Instant::now() + Duration::from_secs(30);
                for (name, out) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                    assert!(
                        out.wait_eof(drain),
                        "process {} exited ({status}) but its {name} was still open 30 s later \
                         (a grandchild holding the pipe?)",
                        self.pid()
                    );
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit within {timeout:?}; stderr:\n{}",
                self.pid(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `NOTIFY_SOCKET` owned by the test. Like systemd, it reads every datagram as it arrives (a reader
/// thread), so the child never blocks on a full socket queue while the test is busy elsewhere.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    received: Arc<(Mutex<Vec<Notification>>, Condvar)>,
    /// Index of the first notification `wait_for` has not consumed yet.
    cursor: Mutex<usize>,
}

/// One received datagram and when it arrived.
#[derive(Clone, Debug)]
pub struct Notification {
    pub at: Instant,
    pub text: String,
}

impl NotifySocket {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        let received: Arc<(Mutex<Vec<Notification>>, Condvar)> = Arc::default();
        let sink = Arc::clone(&received);
        // The reader ends when the test drops its end (the Arc is then unique) or the socket fails.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while Arc::strong_count(&sink) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.0.lock().unwrap().push(Notification {
                        at: Instant::now(),
                        text,
                    });
                    sink.1.notify_all();
                }
            }
        });
        Self {
            _dir: dir,
            path,
            received,
            cursor: Mutex::new(0),
        }
    }

    /// Waits for a datagram with a line starting with `needle` after the ones already consumed;
    /// returns the datagrams up to and including it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<Notification> {
        let deadline = Instant::now() + timeout;
        let mut cursor = self.cursor.lock().unwrap();
        let (lock, changed) = &*self.received;
        let mut all = lock.lock().unwrap();
        loop {
            if let Some(pos) = all[*cursor..]
                .iter()
                .position(|n| n.text.lines().any(|l| l.starts_with(needle)))
            {
                let end = *cursor + pos + 1;
                let seen = all[*cursor..end].to_vec();
                *cursor = end;
                return seen;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {timeout:?} waiting for {needle:?} on NOTIFY_SOCKET; got {:?}",
                &all[*cursor..]
            );
            all = changed.wait_timeout(all, deadline - now).unwrap().0;
        }
    }

    /// Every datagram that arrives in the next `duration` (after those already consumed).
    pub fn collect_for(&self, duration: Duration) -> Vec<Notification> {
        let start = *self.cursor.lock().unwrap();
        std::thread::sleep(duration); // the window itself is what is measured, not a synchronisation
        let all = self.received.0.lock().unwrap();
        let mut cursor = self.cursor.lock().unwrap();
        *cursor = all.len();
        all[start..].to_vec()
    }
}

/// Asserts that no output contains the token or its secret part (G7).
pub fn assert_no_token(token: &str, outputs: &[&str]) {
    let secret = token.split_once(':').unwrap().1;
    for out in outputs {
        assert!(
            !out.contains(secret),
            "the token leaked into output:\n{out}"
        );
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One blocking HTTP/1.1 exchange with a loopback server; returns (status, body). Enough for the fake
/// Bot API's own methods and the bot's /healthz and /metrics, without an HTTP client crate.
fn http_exchange(addr: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{head}Host: {addr}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// POST a JSON body to `path` of `base_url` (http://host:port).
pub fn http_post_json(base_url: &str, path: &str, body: &str) -> (u16, String) {
    let addr = base_url.trim_start_matches("http://").trim_end_matches('/');
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    http_exchange(addr, &head, body)
}

/// GET `path` from `addr` (host:port).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_exchange(addr, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// A loopback listener the test binds and hands to the bot processes it starts, as systemd hands them
/// `cryptobot.socket` ([`Host::spawn_run_on`]). Its address is known before the bot starts and no
/// other process can take it in between (a port found free and handed over by number can be taken:
/// the tests run in parallel), and successive processes can be given the same one, so a connection
/// made between two of them waits in its backlog.
pub struct PassedListener {
    socket: std::net::TcpListener,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl PassedListener {
    pub fn new() -> Self {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let addr = socket.local_addr().unwrap().to_string();
        Self { socket, addr }
    }

    /// Makes `cmd`'s process inherit the listener as fd 3 named `http` (`LISTEN_FDS`,
    /// `LISTEN_FDNAMES`); `cmd` must be a [`Host::shell_command`] whose script sets `LISTEN_PID=$$`.
    pub fn pass_to(&self, cmd: &mut Command) {
        cmd.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "http");
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = self.socket.as_raw_fd();
        // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe; no
        // allocation, no lock.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto 3 clears close-on-exec; when the socket already is fd 3 it does nothing,
                // so clear the flag explicitly.
                nix::unistd::dup2(fd, 3)?;
                nix::fcntl::fcntl(
                    3,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
                Ok(())
            });
        }
    }
}

/// While it lives, the connections to a [`PassedListener`] are accepted and closed at once, unanswered
/// (what a client sees of a port no process serves, without giving the port up).
pub struct Refusing {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PassedListener {
    /// Refuses every connection until the returned guard is dropped; then the listener is ready to
    /// be passed to the next process.
    pub fn refuse_connections(&self) -> Refusing {
        let socket = self.socket.try_clone().expect("clone the listener");
        socket.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                match socket.accept() {
                    Ok((stream, _)) => drop(stream),
                    // Nothing to accept: look again shortly (bounded by the guard's drop).
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The flag is on the open file, shared with the next process's copy.
            socket.set_nonblocking(false).unwrap();
        });
        Refusing {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Default for PassedListener {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback port that was free a moment ago. Only for what cannot take a [`PassedListener`]:
/// the bot's own `listen` setting (see `tests/http_endpoints.rs`, which retries when another
/// process took the port first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

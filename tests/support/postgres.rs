//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, listening on 127.0.0.1 (a free
//! port) and on a unix socket inside that directory, with a database and a password-protected role for
//! the code under test (`url()`), the superuser reachable only through the socket (for `psql`).
//!
//! Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, package `postgresql`) are used, else
//! `initdb`/`pg_ctl` from `PATH`. PostgreSQL refuses to run as root: under root, `initdb` and `pg_ctl`
//! run as the `postgres` system user (the package creates it) through `Command::uid/gid`, and the
//! temporary directory is handed to that user.
//!
//! Not installed: [`TempPostgres::start`] prints `SKIPPED: <test>: PostgreSQL not installed (apt-get
//! install postgresql)` and returns `None` (the caller returns early), or panics in CI (`CI=true` or `1`)
//! (`tests/run-all.sh` installs it). Dropping the cluster stops it (`pg_ctl stop -m immediate`, else
//! SIGKILL of the postmaster) and removes the directory, also when the test panicked. A test process
//! killed before its drop runs (a nextest timeout, SIGKILL) does not leave it running either: a guard
//! process waits on a pipe only the test process holds and stops the postmaster when that pipe ends
//! ([`Guard`]); the directory is removed by the next start ([`reap_orphans`]).
//!
//! The database at a distance: [`TempPostgres::proxy`] puts a [`LatencyProxy`] in front of the
//! cluster, a TCP proxy on 127.0.0.1 that holds every chunk for a fixed one-way delay in each
//! direction (5 ms each way: two VPSes sharing a managed database). Its [`LatencyProxy::url`] is the
//! database URL through it. Latency is added, bandwidth is not taken away: each direction is a delay
//! queue (a chunk is stamped with `now + delay` when read and written when due, while the next ones
//! are being read), so a client that pipelines still gets its bytes through at full speed, in order.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The role and database the code under test uses.
pub const ROLE: &str = "cryptobot_test";
pub const DATABASE: &str = "cryptobot_test";

/// The temporary directories' prefix, and the file in each naming the test process that owns it.
const DIR_PREFIX: &str = "cryptobot-pg-";
const OWNER_FILE: &str = "owner.pid";

/// Bounds `initdb`, `pg_ctl start/stop/restart` and `psql`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// `pg_ctl -t`: how long it waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "30";

/// The directory holding `initdb` and `pg_ctl`: the newest Debian version, else `PATH`.
fn server_bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

/// A running throwaway cluster; stopped and removed on drop.
pub struct TempPostgres {
    /// Stops the cluster if this process dies first; declared first, so dropped (disarmed) first.
    guard: Option<Guard>,
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    password: String,
    /// Under root: the `postgres` user's uid and gid, to run the server binaries as.
    run_as: Option<(u32, u32)>,
}

impl TempPostgres {
    /// Starts a fresh cluster, or returns `None` (after printing the SKIPPED line) when PostgreSQL is not
    /// installed ([`super::skip`]: in CI a panic instead). A cluster that cannot start is a panic.
    pub fn start() -> Option<TempPostgres> {
        let test = std::thread::current()
            .name()
            .unwrap_or("postgres test")
            .to_owned();
        let Some(bin) = server_bin_dir() else {
            super::skip(
                &test,
                "PostgreSQL not installed (apt-get install postgresql; tests/run-all.sh does, as root)",
            );
            return None;
        };
        match Self::start_with(bin) {
            Ok(pg) => Some(pg),
            Err(e) => panic!("{test}: cannot start a throwaway PostgreSQL: {e}"),
        }
    }

    fn start_with(bin: PathBuf) -> Result<TempPostgres, String> {
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or("running as root, and there is no `postgres` user to run the server as (apt-get install postgresql creates it)")?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        reap_orphans(&bin, run_as);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        // Who owns this cluster: a test process killed before its Drop ran (a nextest timeout) leaves
        // its cluster behind, and the next start stops and removes it.
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(|e| format!("owner file: {e}"))?;
        std::fs::create_dir(dir.path().join("sock")).map_err(|e| format!("socket dir: {e}"))?;
        if let Some((uid, gid)) = run_as {
            for p in [dir.path().to_owned(), dir.path().join("sock")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod: {e}"))?;
        let mut pg = TempPostgres {
            guard: None,
            dir: Some(dir),
            bin,
            port: 0,
            password: random_password(),
            run_as,
        };
        pg.run_server_tool(
            "initdb",
            &[
                "-D",
                &pg.data_dir(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        // Fast and small: a test cluster needs no durability.
        pg.append_config(&format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n\
             shared_buffers = 16MB\nlog_min_messages = warning\n",
            pg.socket_dir()
        ))?;
        // The port was free a moment ago; another process may take it first: retry with another.
        let mut last_error = String::new();
        for _ in 0..5 {
            pg.port = super::free_port();
            pg.append_config(&format!("port = {}\n", pg.port))?;
            match pg.pg_ctl(&["start"]) {
                Ok(()) => {
                    last_error.clear();
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        if !last_error.is_empty() {
            return Err(last_error);
        }
        pg.guard = Some(Guard::arm(&pg.dir().join("data"))?);
        pg.psql_in(
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{}'", pg.password),
        )?;
        pg.psql_in(
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
        )?;
        Ok(pg)
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the cluster's directory").path()
    }

    /// Stops and removes the clusters whose test process is gone (each start does it too).
    pub fn reap_orphans() {
        if let Some(bin) = server_bin_dir() {
            let run_as = nix::unistd::geteuid()
                .is_root()
                .then(|| nix::unistd::User::from_name("postgres").ok().flatten())
                .flatten()
                .map(|user| (user.uid.as_raw(), user.gid.as_raw()));
            reap_orphans(&bin, run_as);
        }
    }

    /// Whether PostgreSQL's server binaries are installed ([`Self::start`] skips without them).
    pub fn installed() -> bool {
        server_bin_dir().is_some()
    }

    /// The postmaster's PID, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn data_dir(&self) -> String {
        self.dir().join("data").to_string_lossy().into_owned()
    }

    fn socket_dir(&self) -> String {
        self.dir().join("sock").to_string_lossy().into_owned()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://cryptobot_test:<password>@127.0.0.1:<port>/cryptobot_test`
    pub fn url(&self) -> String {
        self.url_with_password(&self.password)
    }

    /// The same URL with another password (for authentication failures).
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://{ROLE}:{password}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// A [`LatencyProxy`] in front of this cluster, `one_way` each direction; its
    /// [`LatencyProxy::url`] is [`TempPostgres::url`] through it. Stops when dropped.
    pub fn proxy(&self, one_way: Duration) -> LatencyProxy {
        let mut proxy = LatencyProxy::start(SocketAddr::from(([127, 0, 0, 1], self.port)), one_way);
        proxy.url = format!(
            "postgres://{ROLE}:{}@{}/{DATABASE}",
            self.password, proxy.addr
        );
        proxy
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (`-m fast`: sessions are terminated) and waits until it is down.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"])
            .unwrap_or_else(|e| panic!("pg_ctl stop: {e}"));
    }

    /// Starts a stopped server again on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        self.pg_ctl(&["start"])
            .unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
    }

    /// `pg_ctl restart -m fast`: every session is terminated; back when it returns.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"])
            .unwrap_or_else(|e| panic!("pg_ctl restart: {e}"));
    }

    /// `pg_terminate_backend` for every session of the test role; returns how many there were.
    pub fn terminate_backends(&self) -> usize {
        self.terminate_where(&format!("usename = '{ROLE}'"))
    }

    /// `pg_terminate_backend` for the test role's sessions whose `application_name` is `name`.
    pub fn terminate_backends_of(&self, name: &str) -> usize {
        self.terminate_where(&format!(
            "usename = '{ROLE}' AND application_name = '{}'",
            name.replace('\'', "''")
        ))
    }

    fn terminate_where(&self, condition: &str) -> usize {
        let out = self
            .psql(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {condition} AND pid <> pg_backend_pid()"
            ))
            .unwrap_or_else(|e| panic!("pg_terminate_backend: {e}"));
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("pg_terminate_backend: unexpected answer {out:?}"))
    }

    /// Turns TLS on: a throwaway CA signs a certificate for 127.0.0.1 (rcgen), the server loads it on a
    /// reload; returns the CA certificate's path, for `sslrootcert=`. Password logins still work with
    /// or without TLS (`host` lines in pg_hba.conf), so the client's sslmode decides.
    #[allow(dead_code)] // used by some test binaries only
    pub fn enable_tls(&self) -> PathBuf {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cryptobot test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert = server
            .signed_by(&key, &Issuer::new(ca, ca_key))
            .expect("server certificate");
        let data = self.dir().join("data");
        let ca_path = self.dir().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).expect("write ca.pem");
        for (name, text) in [
            ("server.crt", cert.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text).expect("write the server's certificate");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        self.append_config("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
            .expect("postgresql.conf");
        self.pg_ctl(&["reload"])
            .unwrap_or_else(|e| panic!("pg_ctl reload: {e}"));
        // A reload is asynchronous: wait (bounded) until the server says TLS is on.
        let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            let shown = self.psql("SHOW ssl").unwrap_or_default();
            if shown.trim() == "on" {
                return ca_path;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "TLS still off after {COMMAND_TIMEOUT:?}: {}",
                self.server_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs `sql` as the superuser in the bot's database over the unix socket (psql, unaligned, tuples
    /// only); its output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_in(DATABASE, sql)
    }

    /// [`TempPostgres::psql`] in `database`.
    fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let out_file = self.dir().join("psql.out");
        let mut cmd = Command::new(self.client_tool("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d"])
            .arg(database)
            .arg("-c")
            .arg(sql);
        run_bounded(cmd, &out_file, COMMAND_TIMEOUT).map_err(|e| format!("psql {sql:?}: {e}"))?;
        Ok(std::fs::read_to_string(&out_file).unwrap_or_default())
    }

    /// A psql session of the superuser in the bot's database, kept open: for holding a lock or a
    /// transaction across the steps of a test. Killed when dropped.
    pub fn psql_session(&self) -> PsqlSession {
        let child = Command::new(self.client_tool("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                DATABASE,
            ])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start psql");
        PsqlSession { child }
    }

    /// psql lives with the server binaries on Debian, else in PATH.
    fn client_tool(&self, name: &str) -> PathBuf {
        let beside = self.bin.join(name);
        if beside.is_file() {
            beside
        } else {
            PathBuf::from(name)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir().join("server.log").to_string_lossy().into_owned();
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", PG_CTL_WAIT_SECS];
        all.extend_from_slice(args);
        self.run_server_tool("pg_ctl", &all).map_err(|e| {
            let log = self.server_log();
            let mut tail: Vec<&str> = log.lines().rev().take(10).collect();
            tail.reverse();
            format!("{e}; server log: {}", tail.join(" | "))
        })
    }

    /// Runs a server binary (as the `postgres` user under root) with a clean environment, bounded.
    fn run_server_tool(&self, name: &str, args: &[&str]) -> Result<(), String> {
        self.run_server_tool_in(self.dir(), name, args)
    }

    fn run_server_tool_in(&self, dir: &Path, name: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.args(args).current_dir(dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let out_file = dir.join(format!("{name}.out"));
        run_bounded(cmd, &out_file, COMMAND_TIMEOUT).map_err(|e| format!("{name}: {e}"))
    }

    fn append_config(&self, text: &str) -> Result<(), String> {
        use std::io::Write;
        let path = self.dir().join("data/postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Stops the server at once, without panicking: `pg_ctl stop -m immediate`, else SIGKILL.
    fn stop_now(&self) {
        self.stop_data_dir(self.dir());
    }

    /// [`Self::stop_now`] for the cluster in `dir` (this one's, or an orphan's).
    fn stop_data_dir(&self, dir: &Path) {
        let data = dir.join("data");
        if !data.join("postmaster.pid").exists() {
            return; // not running
        }
        let stopped = self
            .run_server_tool_in(
                dir,
                "pg_ctl",
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-w",
                    "-t",
                    "10",
                    "stop",
                    "-m",
                    "immediate",
                ],
            )
            .is_ok();
        if stopped {
            return;
        }
        let pid_file = data.join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A TCP proxy on 127.0.0.1 that delays every chunk by `one_way` in each direction, on a tokio
/// runtime of its own (one worker thread). Bytes keep their order; each direction is a delay queue,
/// so throughput is what it was: only latency is added. Every connection to it opens one to the
/// upstream address (a restarted server is reached again). Dropping it stops it and closes every
/// connection through it.
///
/// The delay is at least `one_way`, and at most about a millisecond more (tokio's timer rounds up to
/// whole milliseconds); [`LatencyProxy::round_trip`] measures what a client sees.
pub struct LatencyProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    one_way: Duration,
    url: String,
    chunks_to_server: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LatencyProxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `upstream`, `one_way`
    /// later in each direction. [`TempPostgres::proxy`] is the usual way; this is for any server.
    /// Panics when it cannot listen (a test bug or a broken machine).
    pub fn start(upstream: SocketAddr, one_way: Duration) -> LatencyProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latency-proxy")
            .enable_all()
            .build()
            .expect("the latency proxy's runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("latency proxy: bind");
        listener
            .set_nonblocking(true)
            .expect("latency proxy: nonblocking");
        let addr = listener.local_addr().expect("latency proxy: address");
        let chunks_to_server = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&chunks_to_server);
        runtime.spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("latency proxy: listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(relay(client, upstream, one_way, Arc::clone(&counter)));
            }
        });
        LatencyProxy {
            addr,
            upstream,
            one_way,
            url: format!("tcp://{addr}"),
            chunks_to_server,
            runtime: Some(runtime),
        }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The delay added in each direction.
    pub fn one_way(&self) -> Duration {
        self.one_way
    }

    /// From [`TempPostgres::proxy`]: the database URL through the proxy,
    /// `postgres://cryptobot_test:<password>@127.0.0.1:<proxy port>/cryptobot_test`. From
    /// [`LatencyProxy::start`]: `tcp://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Chunks the clients sent (read from them, summed over every connection): about the number of
    /// requests, since a PostgreSQL client writes each request (Parse/Bind/Execute/Sync) at once and
    /// then waits for the answer. Each is a round trip of 2 × `one_way` at least.
    pub fn chunks_to_server(&self) -> u64 {
        self.chunks_to_server.load(Ordering::Relaxed)
    }

    /// What a PostgreSQL client sees as one round trip through the proxy: the median of 5
    /// `SSLRequest`s, each on a new connection, timed from the request until the server's one-byte
    /// answer (`S` or `N`). That includes the server starting a backend for the connection (about a
    /// millisecond): [`LatencyProxy::direct_round_trip`] is the same without the proxy. For printing
    /// beside figures measured through the proxy.
    pub fn round_trip(&self) -> Duration {
        ssl_request_round_trip(self.addr)
    }

    /// [`LatencyProxy::round_trip`] straight to the upstream server: what the proxy adds is the
    /// difference.
    pub fn direct_round_trip(&self) -> Duration {
        ssl_request_round_trip(self.upstream)
    }
}

/// See [`LatencyProxy::round_trip`].
fn ssl_request_round_trip(addr: SocketAddr) -> Duration {
    use std::io::{Read, Write};
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect for an SSLRequest");
            stream.set_nodelay(true).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // Length 8, then the SSLRequest code 80877103.
            let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
            let started = Instant::now();
            stream.write_all(&request).expect("write an SSLRequest");
            let mut answer = [0u8; 1];
            stream
                .read_exact(&mut answer)
                .expect("the server's answer to an SSLRequest");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        // The tasks (listener, relays) are dropped with the runtime: every socket closes.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One proxied connection: `client` to a new connection to `upstream`, both ways delayed.
async fn relay(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    one_way: Duration,
    chunks_to_server: Arc<AtomicU64>,
) {
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return; // dropping `client` closes it, as an unreachable server would
    };
    // Small requests go out at once: no Nagle delay on top of the one added here.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        delay_pipe(client_read, server_write, one_way, Some(chunks_to_server)),
        delay_pipe(server_read, client_write, one_way, None),
    );
}

/// One direction: what is read from `from` is written to `to` `one_way` later, in order; the end of
/// the stream (or a read error) is passed on as a shutdown of `to`, `one_way` later too. The reader
/// never waits for the writer: a delay queue (an unbounded channel of chunks stamped with when they
/// are due) stands between them, so bytes flow at full speed, only later.
async fn delay_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    one_way: Duration,
    counter: Option<Arc<AtomicU64>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // `None`: the end of the stream.
    let (queue, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let chunk = match from.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    if let Some(counter) = &counter {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(buf[..n].to_vec())
                }
            };
            let end = chunk.is_none();
            // The writer is gone (its peer closed): nothing more to pass on.
            if queue.send((Instant::now() + one_way, chunk)).is_err() || end {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            if !one_way.is_zero() {
                tokio::time::sleep_until(at.into()).await;
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return; // dropping `due` stops the reader
                    }
                }
                None => break,
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// See [`TempPostgres::psql_session`].
pub struct PsqlSession {
    child: std::process::Child,
}

impl PsqlSession {
    /// Sends `sql` (statements ending in `;`) to the session; does not wait for them.
    pub fn send(&mut self, sql: &str) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("psql's stdin");
        writeln!(stdin, "{sql}").expect("write to psql");
        stdin.flush().expect("flush psql's stdin");
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that stops a cluster when the test process that started it dies without stopping it:
/// `sh` reading its stdin, a pipe whose other end only the test process holds (close-on-exec, so no
/// child inherits it); at end of file it sends SIGQUIT (immediate shutdown: the server's children
/// follow) to the postmaster named in `postmaster.pid` then. It runs in a process group of its own,
/// so a signal to the test's group cannot stop it first. Dropping the guard disarms it (SIGKILL)
/// before the cluster is stopped normally.
pub struct Guard {
    child: std::process::Child,
}

impl Guard {
    fn arm(data_dir: &Path) -> Result<Guard, String> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"cat >/dev/null; pid=$(head -n 1 "$0/postmaster.pid") && kill -QUIT "$pid""#)
            .arg(data_dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the cluster's guard (/bin/sh): {e}"))?;
        Ok(Guard { child })
    }

    /// The guard's PID (for the test that kills a test process on purpose).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.dir.is_some() {
            self.stop_now();
        }
        // TempDir's own drop removes the directory (root may remove what `postgres` owns).
        drop(self.dir.take());
    }
}

/// Stops and removes the clusters of test processes that no longer exist.
fn reap_orphans(bin: &Path, run_as: Option<(u32, u32)>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let Some(owner) = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue; // being set up, or not ours
        };
        if !named || process_alive(owner) {
            continue;
        }
        let orphan = TempPostgres {
            guard: None,
            dir: None,
            bin: bin.to_owned(),
            port: 0,
            password: String::new(),
            run_as,
        };
        orphan.stop_data_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Whether `pid` runs (a zombie does not: its parent has not reaped it yet).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) S …": the state follows the last ')'
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Runs `cmd` with a clean environment, its output in `out_file`; kills it after `timeout`.
fn run_bounded(mut cmd: Command, out_file: &Path, timeout: Duration) -> Result<(), String> {
    let out =
        std::fs::File::create(out_file).map_err(|e| format!("{}: {e}", out_file.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    if status.success() {
        Ok(())
    } else {
        let output = std::fs::read_to_string(out_file).unwrap_or_default();
        Err(format!(
            "{status}: {}",
            output.split_whitespace().collect::<Vec<_>>().join(" ")
        ))
    }
}

/// 24 random letters and digits.
fn random_password() -> String {
    (0..24).map(|_| fastrand::alphanumeric()).collect()
}

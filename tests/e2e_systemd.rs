//! End-to-end scenarios on a real, booted systemd: each test runs one script of `tests/e2e/` in a throwaway
//! `systemd-nspawn` container (`tests/e2e/container.sh`), streams its output live, and fails with its last
//! lines when it fails. The scenarios run on Debian 12 and on Debian 13: a minimal root of each release
//! (`debootstrap --variant=minbase`, built once and cached by `tests/e2e/debian-root.sh`) below the
//! container's overlay, so what the package forgets to declare fails as on a minimal VPS. The harness's
//! self-test boots this host's own root.
//!
//! They need root and `systemd-nspawn` (Debian package `systemd-container`), so they are `#[ignore]`d:
//! a plain `cargo test` / `cargo nextest run` reports them as skipped. The test command
//! (`tests/run-all.sh`) runs them as root with `--run-ignored all`. Asked to run without root or
//! systemd-nspawn, a scenario fails with one line saying why: it never passes without having run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

/// How many of the script's last output lines a failure shows.
const TAIL_LINES: usize = 60;

/// One scenario at a time: each builds with cargo and boots a container on the shared host network.
static SERIAL: Mutex<()> = Mutex::new(());

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Why the e2e cannot run on this machine, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root (systemd-nspawn, mounts, cgroups)".to_owned());
    }
    for program in ["systemd-nspawn", "nsenter", "unshare", "curl", "flock"] {
        if !in_path(program) {
            return Some(format!(
                "{program} not found (apt-get install systemd-container util-linux curl)"
            ));
        }
    }
    None
}

/// Copies `from` line by line to this process's stderr (live, not captured by the test harness) and
/// into the shared tail buffer.
fn pump(
    from: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            let mut tail = tail.lock().unwrap();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    })
}

/// The Debian releases the scenarios run on, as debootstrap names them.
const DEBIAN_12: Option<&str> = Some("bookworm");
const DEBIAN_13: Option<&str> = Some("trixie");

/// Runs `tests/e2e/<script> <args>` in a container of `release` (None: this host's root) and panics with
/// its last lines if it fails.
fn run_scenario(script: &str, args: &[&str], release: Option<&str>) {
    if let Some(why) = missing_prerequisite() {
        let ci = if under_ci() {
            " (CI=true requires it)"
        } else {
            ""
        };
        panic!(
            "e2e {script} cannot run here{ci}: {why}; run the test command as root: sudo bash tests/run-all.sh"
        );
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    // A process group of its own, and a stdin pipe whose write end only this process holds: if this
    // process is killed (a timeout), the pipe ends and the script cleans up in full (container.sh's
    // watcher), and no signal to this process's group cuts that short.
    let mut child = Command::new("bash")
        .arg(dir.join(script))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .envs(release.map(|r| ("CT_RELEASE", r)))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start bash {script}: {e}"));
    let _alive = child.stdin.take();
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let pumps = [
        pump(child.stdout.take().unwrap(), Arc::clone(&tail)),
        pump(child.stderr.take().unwrap(), Arc::clone(&tail)),
    ];
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {script}: {e}"));
    for p in pumps {
        let _ = p.join();
    }
    if !status.success() {
        let tail: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
        panic!(
            "e2e {script} {} on {} failed ({status}); its last lines:\n{}",
            args.join(" "),
            release.unwrap_or("this host's root"),
            tail.join("\n")
        );
    }
}

#[test]
#[ignore = "needs root and systemd-nspawn; run by the test command as root (see README)"]
fn container_harness_boots_and_leaves_nothing_behind() {
    run_scenario("container.sh", &["selftest", "2"], None);
}

#[test]
#[ignore = "needs root and systemd-nspawn; run by the test command as root (see README)"]
fn tracer_bullet_install_serve_restart_stop_purge_on_debian_12() {
    run_scenario("tracer-bullet.sh", &[], DEBIAN_12);
}

#[test]
#[ignore = "needs root and systemd-nspawn; run by the test command as root (see README)"]
fn tracer_bullet_install_serve_restart_stop_purge_on_debian_13() {
    run_scenario("tracer-bullet.sh", &[], DEBIAN_13);
}

#[test]
#[ignore = "needs root and systemd-nspawn; run by the test command as root (see README)"]
fn lifecycle_install_upgrade_keeps_conffile_and_state_remove_purge_reinstall_on_debian_12() {
    run_scenario("lifecycle.sh", &[], DEBIAN_12);
}

#[test]
#[ignore = "needs root and systemd-nspawn; run by the test command as root (see README)"]
fn lifecycle_install_upgrade_keeps_conffile_and_state_remove_purge_reinstall_on_debian_13() {
    run_scenario("lifecycle.sh", &[], DEBIAN_13);
}

//! What a test starts does not outlive it, even when the test process is killed before any `Drop`
//! or cleanup of its own runs (a nextest timeout ends it with SIGTERM, then SIGKILL).
//!
//! The child side of these tests is a test function too (`child_*`), run only by its parent test
//! in a process of its own (`tests/run-all.sh` filters `child_*` out of the run, and without
//! `CRYPTOBOT_HARNESS_CHILD` it refuses to run).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::postgres::TempPostgres;

const T: Duration = Duration::from_secs(60);
const CHILD: &str = "CRYPTOBOT_HARNESS_CHILD";

/// Whether `pid` is gone (or a zombie nobody reaped yet: it holds nothing any more).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_throwaway_postgres_stops_when_its_test_process_is_killed() {
    if !TempPostgres::installed() {
        support::skip(
            "a_throwaway_postgres_stops_when_its_test_process_is_killed",
            "PostgreSQL not installed (apt-get install postgresql; tests/run-all.sh does, as root)",
        );
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_postgres_until_killed",
            "--nocapture",
            "--include-ignored",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child test process");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let postmaster = loop {
        let mut line = String::new();
        let read = stdout
            .read_line(&mut line)
            .expect("read the child's output");
        assert!(read > 0, "the child ended without starting PostgreSQL");
        if let Some(pid) = line.trim().strip_prefix("POSTMASTER ") {
            break pid.parse::<i32>().unwrap();
        }
    };
    assert!(!gone(postmaster), "no postmaster at {postmaster}");
    // No Drop, no unwinding: what a timeout's SIGKILL does.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + T;
    while !gone(postmaster) {
        assert!(
            Instant::now() < deadline,
            "the postmaster {postmaster} of a killed test process still runs {T:?} later"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its directory is removed by the next start of a cluster; this may be the last one.
    TempPostgres::reap_orphans();
}

#[test]
#[ignore = "the child side of a_throwaway_postgres_stops_when_its_test_process_is_killed, run by it"]
fn child_holds_a_postgres_until_killed() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run only by a_throwaway_postgres_stops_when_its_test_process_is_killed"
    );
    let pg = TempPostgres::start().expect("PostgreSQL is installed (the parent checked)");
    println!(
        "POSTMASTER {}",
        pg.postmaster_pid().expect("postmaster.pid")
    );
    // Held until the parent kills this process: never returns on its own.
    loop {
        std::thread::park();
    }
}

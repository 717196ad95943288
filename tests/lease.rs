//! The PostgreSQL leader lease (G2, `instance::lease`) against a real, throwaway PostgreSQL
//! (`support::postgres`): one cluster per test (nextest runs each test in its own process), a distinct
//! bot id per scenario. Contenders are separate `Lease`s (separate pools, so separate connections) with
//! their own holder identity, standing for processes on different hosts.
//!
//! Every wait is bounded and says what it waited for; PostgreSQL not installed: each test prints
//! `SKIPPED: …` and returns (in CI, `CI=true` or `1`, it fails instead).

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;

use cryptobot::instance::lease::{
    Acquire, Holder, Lease, LeaseError, LeaseInfo, ReleaseListener, Wake, new_instance_id,
};
use support::postgres::TempPostgres;

/// The cluster for this test, or return early (skipped) when PostgreSQL is not installed.
macro_rules! postgres_or_skip {
    () => {
        match TempPostgres::start() {
            Some(pg) => pg,
            None => return,
        }
    };
}

const LONG_TTL: Duration = Duration::from_secs(30);
/// The bound of every wait for something that should happen at once.
const SOON: Duration = Duration::from_secs(5);

fn holder(host: &str) -> Holder {
    Holder {
        host: host.to_owned(),
        pid: 4000 + fastrand::u32(..1000),
        instance: new_instance_id(),
    }
}

async fn contender(url: &str, bot_id: u64, ttl: Duration, host: &str) -> Lease {
    Lease::connect(url, bot_id, ttl, holder(host))
        .await
        .unwrap_or_else(|e| panic!("{host}: Lease::connect: {e}"))
}

fn leader_epoch(result: &Result<Acquire, LeaseError>, who: &str) -> i64 {
    match result {
        Ok(Acquire::Leader { epoch, .. }) => *epoch,
        other => panic!("{who}: expected to lead, got {other:?}"),
    }
}

fn standby_info(result: Result<Acquire, LeaseError>, who: &str) -> LeaseInfo {
    match result {
        Ok(Acquire::Standby(info)) => info,
        other => panic!("{who}: expected standby, got {other:?}"),
    }
}

/// The error's text is one line and does not contain `password`.
fn assert_redacted(e: &LeaseError, password: &str) {
    let text = e.to_string();
    assert!(
        !text.contains(password),
        "the password appears in an error: {text}"
    );
    assert!(
        !format!("{e:?}").contains(password),
        "the password appears in an error's Debug: {e:?}"
    );
    assert!(!text.contains('\n'), "not one line: {text:?}");
}

/// Calls `probe` every 50 ms until it returns `Some`, for at most `timeout`; panics naming `what` and
/// the last thing `probe` reported.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// All contenders try at once (from separate tasks, each on its own connection); returns their answers
/// in order, after checking that exactly one leads and the others name it.
async fn race(contenders: &[Arc<Lease>]) -> Vec<Result<Acquire, LeaseError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(contenders.len()));
    let tasks: Vec<_> = contenders
        .iter()
        .map(|lease| {
            let lease = Arc::clone(lease);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                lease.try_acquire().await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(
            tokio::time::timeout(SOON, task)
                .await
                .expect("a contender did not answer within 5 s")
                .expect("a contender task panicked"),
        );
    }
    let leaders: Vec<usize> = (0..results.len())
        .filter(|&i| matches!(results[i], Ok(Acquire::Leader { .. })))
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "exactly one leader expected: {results:#?}"
    );
    let winner = &contenders[leaders[0]];
    let epoch = leader_epoch(&results[leaders[0]], "winner");
    for (i, result) in results.iter().enumerate() {
        if i != leaders[0] {
            let info = standby_info(result.clone(), &format!("contender {i}"));
            assert_eq!(info.instance, winner.holder().instance, "{info:?}");
            assert_eq!(info.host, winner.holder().host);
            assert_eq!(info.pid, winner.holder().pid);
            assert_eq!(info.epoch, epoch);
            assert!(info.expires_in().is_some(), "{info:?}");
        }
    }
    results
}

fn winner_of(results: &[Result<Acquire, LeaseError>]) -> usize {
    results
        .iter()
        .position(|r| matches!(r, Ok(Acquire::Leader { .. })))
        .expect("a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_renew_release_round_trip() {
    let pg = postgres_or_skip!();
    let url = pg.url();
    let a = contender(&url, 101, LONG_TTL, "host-a").await;
    let b = contender(&url, 101, LONG_TTL, "host-b").await;
    assert_eq!(
        a.show().await.unwrap(),
        None,
        "no lease before the first acquisition"
    );

    let acquired = a.try_acquire().await;
    let epoch = leader_epoch(&acquired, "a");
    assert_eq!(epoch, 1);
    let Ok(Acquire::Leader { expires_in, .. }) = acquired else {
        unreachable!()
    };
    assert!(
        expires_in <= LONG_TTL && expires_in > LONG_TTL - SOON,
        "{expires_in:?}"
    );

    let info = b.show().await.unwrap().expect("a lease row");
    assert_eq!(
        (info.host.as_str(), info.epoch, &info.instance),
        ("host-a", 1, &a.holder().instance)
    );
    assert!(info.expires_in().is_some() && info.expired_ago().is_none());
    assert_eq!(
        info.to_string(),
        format!("leader host-a pid {} epoch 1", a.holder().pid)
    );

    let standby = standby_info(b.try_acquire().await, "b");
    assert_eq!(standby.host, "host-a");
    assert_eq!(leader_epoch(&a.try_acquire().await, "a again"), 1);

    let left = a.renew(1).await.unwrap().expect("renewed");
    assert!(left <= LONG_TTL && left > LONG_TTL - SOON, "{left:?}");
    assert!(a.is_current(1).await.unwrap());
    assert!(!b.is_current(1).await.unwrap(), "b does not hold epoch 1");
    assert!(a.commit_offset(1, 42).await.unwrap());
    assert!(
        !b.commit_offset(1, 43).await.unwrap(),
        "b's write is fenced"
    );
    assert_eq!(a.fenced_offset().await.unwrap(), Some((1, 42)));

    assert!(!b.release(1).await.unwrap(), "b cannot release a's lease");
    assert!(a.release(1).await.unwrap());
    assert!(!a.release(1).await.unwrap(), "released twice");
    assert_eq!(a.renew(1).await.unwrap(), None, "renew after release");
    assert!(!a.is_current(1).await.unwrap());
    assert!(!a.commit_offset(1, 44).await.unwrap());
    let info = a.show().await.unwrap().unwrap();
    assert!(
        info.is_expired() && info.expired_ago().is_some(),
        "{info:?}"
    );
    assert!(info.to_string().ends_with("(expired)"), "{info}");

    assert_eq!(leader_epoch(&b.try_acquire().await, "b"), 2);
    assert!(b.commit_offset(2, 44).await.unwrap());
    assert_eq!(b.fenced_offset().await.unwrap(), Some((2, 44)));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_contenders_racing_get_exactly_one_leader() {
    let pg = postgres_or_skip!();
    let url = pg.url();
    for (n, bot_id) in [(2usize, 201u64), (3, 301)] {
        // Connected at once, too: the schema creation and the migrations race as well.
        let connects: Vec<_> = (0..n)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    contender(&url, bot_id, LONG_TTL, &format!("host-{n}-{i}")).await
                })
            })
            .collect();
        let mut contenders = Vec::new();
        for c in connects {
            contenders.push(Arc::new(c.await.expect("connect task")));
        }
        // The first acquisition (a race of INSERTs), then handovers: each round the leader releases
        // and everyone races again; the epoch goes up by one each time.
        let mut last_epoch = 0;
        for round in 0..10 {
            let results = race(&contenders).await;
            let w = winner_of(&results);
            let epoch = leader_epoch(&results[w], "winner");
            assert_eq!(epoch, last_epoch + 1, "round {round}: {results:?}");
            last_epoch = epoch;
            // A second race while the leader holds it: the same leader, the same epoch.
            let again = race(&contenders).await;
            assert_eq!(winner_of(&again), w, "round {round}: the holder keeps it");
            assert_eq!(leader_epoch(&again[w], "holder"), epoch);
            assert!(contenders[w].release(epoch).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_increase_on_every_acquisition_and_stale_ones_are_refused() {
    let pg = postgres_or_skip!();
    let url = pg.url();
    let a = contender(&url, 401, LONG_TTL, "host-a").await;
    let b = contender(&url, 401, LONG_TTL, "host-b").await;
    let mut seen = Vec::new();
    for round in 0..3 {
        for (name, lease) in [("a", &a), ("b", &b)] {
            let epoch = leader_epoch(&lease.try_acquire().await, name);
            assert_eq!(
                leader_epoch(&lease.try_acquire().await, name),
                epoch,
                "re-acquiring while holding it is a renewal"
            );
            assert_eq!(
                lease.renew(epoch - 1).await.unwrap(),
                None,
                "round {round}: renew with the previous epoch"
            );
            assert_eq!(lease.renew(epoch + 1).await.unwrap(), None);
            let other = if name == "a" { &b } else { &a };
            assert_eq!(
                other.renew(epoch).await.unwrap(),
                None,
                "the right epoch, but another holder"
            );
            assert!(!lease.commit_offset(epoch - 1, 1).await.unwrap());
            assert!(!lease.is_current(epoch - 1).await.unwrap());
            assert!(lease.renew(epoch).await.unwrap().is_some());
            seen.push(epoch);
            assert!(lease.release(epoch).await.unwrap());
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6], "strictly +1 per acquisition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_the_next_contender_and_fences_the_old_holder() {
    let pg = postgres_or_skip!();
    let url = pg.url();
    let ttl = Duration::from_secs(1);
    let a = contender(&url, 501, ttl, "host-a").await;
    let b = contender(&url, 501, ttl, "host-b").await;
    let asked = Instant::now();
    let old = leader_epoch(&a.try_acquire().await, "a");
    assert!(a.commit_offset(old, 10).await.unwrap());
    standby_info(b.try_acquire().await, "b");

    // a stops renewing (frozen); b keeps trying until the database says a's lease expired.
    let new = wait_for("b to acquire the expired lease", ttl + SOON, || async {
        match b.try_acquire().await {
            Ok(Acquire::Leader { epoch, .. }) => Ok(epoch),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let took = asked.elapsed();
    assert!(took >= ttl, "b acquired {took:?} after a, before the TTL");
    assert_eq!(new, old + 1);

    // a resumes: everything it tries with its old epoch is refused.
    assert_eq!(
        a.renew(old).await.unwrap(),
        None,
        "the old holder's renewal"
    );
    assert!(!a.is_current(old).await.unwrap());
    assert!(
        !a.commit_offset(old, 11).await.unwrap(),
        "the old holder's fenced write"
    );
    assert!(!a.release(old).await.unwrap());
    let info = standby_info(a.try_acquire().await, "a");
    assert_eq!((info.host.as_str(), info.epoch), ("host-b", new));
    assert!(b.commit_offset(new, 12).await.unwrap());
    assert_eq!(b.fenced_offset().await.unwrap(), Some((new, 12)));

    // Expired with nobody taking over: still lost for the holder, whose renewal and fenced write are
    // refused; acquiring it again is a new term (epoch + 1), not a renewal.
    let c = contender(&url, 502, ttl, "host-c").await;
    let asked = Instant::now();
    let epoch = leader_epoch(&c.try_acquire().await, "c");
    let info = wait_for("c's lease to expire", ttl + SOON, || async {
        match c.show().await {
            Ok(Some(info)) if info.is_expired() => Ok(info),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(asked.elapsed() >= ttl, "expired before its TTL: {info:?}");
    assert_eq!(
        c.renew(epoch).await.unwrap(),
        None,
        "renewal of an expired lease"
    );
    assert!(!c.commit_offset(epoch, 1).await.unwrap());
    assert!(!c.is_current(epoch).await.unwrap());
    assert_eq!(leader_epoch(&c.try_acquire().await, "c again"), epoch + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_listening_standby_which_acquires_at_once() {
    let pg = postgres_or_skip!();
    let url = pg.url();
    // A long TTL: only the release can free the lease within the test's bounds.
    let a = contender(&url, 601, LONG_TTL, "host-a").await;
    let b = contender(&url, 601, LONG_TTL, "host-b").await;
    let mut wake = b.listen().await.expect("listen");
    let epoch = leader_epoch(&a.try_acquire().await, "a");
    standby_info(b.try_acquire().await, "b");

    // A release that is refused (not the holder, or a stale epoch) announces nothing.
    assert!(!b.release(epoch).await.unwrap());
    assert!(!a.release(epoch + 1).await.unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wake.released())
            .await
            .is_err(),
        "woken by a refused release"
    );

    let released_at = Instant::now();
    assert!(a.release(epoch).await.unwrap());
    let woke = tokio::time::timeout(SOON, wake.released())
        .await
        .expect("the standby was not woken within 5 s of the release")
        .expect("listen");
    assert_eq!(woke, Wake::Released { epoch: Some(epoch) });
    let new = leader_epoch(&b.try_acquire().await, "b");
    let handover = released_at.elapsed();
    assert_eq!(new, epoch + 1);
    assert!(
        handover < Duration::from_secs(1),
        "clean handover took {handover:?}"
    );
    eprintln!("clean handover: {handover:?}");

    // A renewal is no release: nothing is announced.
    assert!(b.renew(new).await.unwrap().is_some());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wake.released())
            .await
            .is_err(),
        "woken without a release"
    );
}

/// Leader and standby keep trying until both answer and exactly one leads; returns (leader index, epoch).
async fn settled(contenders: [&Lease; 2], password: &str) -> (usize, i64) {
    wait_for(
        "exactly one leader after recovery",
        Duration::from_secs(20),
        || async {
            let mut answers = Vec::new();
            for lease in contenders {
                match lease.try_acquire().await {
                    Ok(answer) => answers.push(answer),
                    Err(e) => {
                        assert_redacted(&e, password);
                        return Err(e.to_string());
                    }
                }
            }
            let leaders: Vec<usize> = (0..2)
                .filter(|&i| matches!(answers[i], Acquire::Leader { .. }))
                .collect();
            assert_eq!(leaders.len(), 1, "{answers:?}");
            let w = leaders[0];
            let Acquire::Leader { epoch, .. } = answers[w] else {
                unreachable!()
            };
            let Acquire::Standby(info) = &answers[1 - w] else {
                unreachable!()
            };
            assert_eq!(
                (&info.instance, info.epoch),
                (&contenders[w].holder().instance, epoch)
            );
            Ok((w, epoch))
        },
    )
    .await
}

/// Keeps releasing and re-acquiring as `leader` until `wake` reports a release (so the listener did
/// LISTEN again after the outage); bounded.
async fn listener_hears_releases_again(leader: &Lease, wake: &mut ReleaseListener, password: &str) {
    let timeout = Duration::from_secs(20);
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match leader.try_acquire().await {
            Ok(Acquire::Leader { epoch, .. }) => match leader.release(epoch).await {
                Ok(_) => {
                    match tokio::time::timeout(Duration::from_millis(500), wake.released()).await {
                        Ok(Ok(Wake::Released { .. })) => return,
                        Ok(Ok(Wake::Reconnected)) => "reconnected".to_owned(),
                        Ok(Err(e)) => {
                            assert_redacted(&e, password);
                            e.to_string()
                        }
                        Err(_) => "no notification within 500 ms".to_owned(),
                    }
                }
                Err(e) => e.to_string(),
            },
            other => format!("leader: {other:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for the standby's listener to hear a release again; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_gives_errors_then_exactly_one_leader_again() {
    let pg = postgres_or_skip!();
    let url = pg.url();
    let password = pg.password().to_owned();
    let ttl = Duration::from_secs(2);
    let a = contender(&url, 701, ttl, "host-a").await;
    let b = contender(&url, 701, ttl, "host-b").await;
    let mut wake = b.listen().await.expect("listen");
    let epoch = leader_epoch(&a.try_acquire().await, "a");
    standby_info(b.try_acquire().await, "b");

    pg.stop();
    let down = [
        a.renew(epoch).await.map(|_| ()),
        a.commit_offset(epoch, 1).await.map(|_| ()),
        b.try_acquire().await.map(|_| ()),
        b.show().await.map(|_| ()),
        b.is_current(epoch).await.map(|_| ()),
        a.release(epoch).await.map(|_| ()),
    ];
    for result in down {
        let e = result.expect_err("a call while PostgreSQL is down must fail");
        assert!(e.is_connection(), "{e}");
        assert_redacted(&e, &password);
    }
    match tokio::time::timeout(Duration::from_secs(2), wake.released()).await {
        Ok(Ok(Wake::Released { .. })) => panic!("a release was heard while the server was down"),
        Ok(Err(e)) => assert_redacted(&e, &password),
        Ok(Ok(Wake::Reconnected)) | Err(_) => {}
    }
    let refused = Lease::connect(&url, 701, ttl, holder("host-c"))
        .await
        .expect_err("connect while PostgreSQL is down");
    assert!(refused.is_connection(), "{refused}");
    assert_redacted(&refused, &password);

    pg.start_again();
    let (w, _) = settled([&a, &b], &password).await;
    // (A NOTIFY reaches every listener, the releasing holder's own included.)
    listener_hears_releases_again([&a, &b][w], &mut wake, &password).await;

    // A restart while both hold pools (rather than stop + start): the same story.
    pg.restart();
    settled([&a, &b], &password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_connection_is_an_error_or_a_reconnect_and_leadership_holds() {
    let pg = postgres_or_skip!();
    let password = pg.password().to_owned();
    let ttl = Duration::from_secs(5);
    // The application name in the URL tells the connections apart in pg_stat_activity.
    let a = contender(
        &format!("{}?application_name=leader", pg.url()),
        801,
        ttl,
        "host-a",
    )
    .await;
    let b = contender(
        &format!("{}?application_name=standby", pg.url()),
        801,
        ttl,
        "host-b",
    )
    .await;
    let mut wake = b.listen().await.expect("listen");
    let epoch = leader_epoch(&a.try_acquire().await, "a");
    standby_info(b.try_acquire().await, "b");

    // A renewal in flight when its connection is killed (it waits for a row lock the test holds, so
    // it is surely in flight): an error, never a panic, and the next renewal succeeds.
    let mut blocker = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("blocker");
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("SELECT 1 FROM cryptobot_lease.lease WHERE bot_id = 801 FOR UPDATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let (in_flight, killed) = tokio::join!(a.renew(epoch), async {
        wait_for(
            "the leader's renewal to wait for the lock",
            SOON,
            || async {
                let waiting = pg
                    .psql(
                        "SELECT count(*) FROM pg_stat_activity \
                      WHERE application_name = 'leader' AND wait_event_type = 'Lock'",
                    )
                    .map_err(|e| e.to_string())?;
                if waiting.trim() == "1" {
                    Ok(())
                } else {
                    Err(format!("{} waiting", waiting.trim()))
                }
            },
        )
        .await;
        pg.terminate_backends_of("leader")
    });
    assert!(killed >= 1);
    let e = in_flight.expect_err("a renewal whose connection was killed");
    eprintln!("in-flight renewal, connection killed: {e}");
    assert!(e.is_connection(), "{e}");
    assert_redacted(&e, &password);
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert!(
        a.renew(epoch).await.unwrap().is_some(),
        "renewal after the kill"
    );

    // An idle connection killed: the pool tests connections before use, so the next call
    // reconnects; an error would be fine too (never a panic), as long as a later call succeeds.
    for round in 0..3 {
        let killed = pg.terminate_backends_of("leader");
        assert!(
            killed >= 1,
            "round {round}: no leader connection to terminate"
        );
        match a.renew(epoch).await {
            Ok(Some(_)) => eprintln!("round {round}: renewed on a new connection"),
            Ok(None) => panic!("round {round}: the lease was lost after a connection kill"),
            Err(e) => {
                eprintln!("round {round}: {e}");
                assert_redacted(&e, &password);
            }
        }
        wait_for("the leader to renew again", SOON, || async {
            match a.renew(epoch).await {
                Ok(Some(left)) => Ok(left),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let info = standby_info(b.try_acquire().await, "b");
        assert_eq!((info.epoch, &info.instance), (epoch, &a.holder().instance));
    }

    // Every session of the role, the standby's listener included: still exactly one leader, and the
    // listener hears releases again.
    assert!(pg.terminate_backends() >= 2);
    let (w, _) = settled([&a, &b], &password).await;
    listener_hears_releases_again([&a, &b][w], &mut wake, &password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_to_connect_without_showing_it() {
    let pg = postgres_or_skip!();
    let wrong = format!("Wr0ng{}", pg.password());
    let e = Lease::connect(
        &pg.url_with_password(&wrong),
        901,
        LONG_TTL,
        holder("host-a"),
    )
    .await
    .expect_err("a wrong password");
    assert_redacted(&e, &wrong);
    assert_redacted(&e, pg.password());
    assert!(e.to_string().contains("***"), "{e}");
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    // …and the right one works, and its Debug shows no password either.
    let ok = contender(&pg.url(), 901, LONG_TTL, "host-a").await;
    assert!(!format!("{ok:?}").contains(pg.password()), "{ok:?}");
}

/// No server needed: what the URL alone can make fail.
#[tokio::test]
async fn unusable_urls_fail_in_one_line_without_the_password() {
    let secret = "S3cretPassw0rd";
    // Nothing listens there: a privileged port that no test binds, never handed out by the kernel
    // to a port-0 bind (the ephemeral range starts far above it).
    let port = 9;
    for url in [
        format!("postgres://bot:{secret}@127.0.0.1:{port}/db"),
        format!("postgres://bot:{secret}@127.0.0.1:notaport/db"),
        format!("postgres://bot@127.0.0.1:{port}/db?password={secret}"),
        format!("mysql://bot:{secret}@127.0.0.1:{port}/db"),
    ] {
        let e = Lease::connect(&url, 1, LONG_TTL, holder("host-a"))
            .await
            .expect_err(&url);
        assert_redacted(&e, secret);
    }
    let e = Lease::connect(
        &format!("postgres://bot:{secret}@127.0.0.1:{port}/db"),
        1,
        Duration::ZERO,
        holder("host-a"),
    )
    .await
    .expect_err("a zero TTL");
    assert!(matches!(e, LeaseError::Config { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_configured_ca_and_a_wrong_one_fails_in_one_line() {
    let pg = postgres_or_skip!();
    let plain = pg.url();
    let bot = 91;
    // The server has no TLS yet: a URL that requires it is refused, in one line.
    let e = Lease::connect(
        &format!("{plain}?sslmode=require"),
        bot,
        LONG_TTL,
        holder("h"),
    )
    .await
    .unwrap_err();
    assert_redacted(&e, pg.password());

    let ca = pg.enable_tls();
    let url = format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display());
    let a = contender(&url, bot, LONG_TTL, "host-a").await;
    assert_eq!(leader_epoch(&a.try_acquire().await, "a"), 1);
    // The server confirms the session is encrypted.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted, "sslmode=verify-full gave an unencrypted session");
    conn.close().await.unwrap();
    a.close().await;

    // A CA that did not sign the server's certificate: the handshake fails, in one line.
    let other = tempfile::NamedTempFile::new().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(other.path(), params.self_signed(&key).unwrap().pem()).unwrap();
    let wrong = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        other.path().display()
    );
    let e = Lease::connect(&wrong, bot, LONG_TTL, holder("h"))
        .await
        .unwrap_err();
    assert!(e.is_connection(), "{e}");
    assert_redacted(&e, pg.password());
}

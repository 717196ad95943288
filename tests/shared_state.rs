//! The shared state store (`coordination = "postgres"`, `store::postgres::PgStore`) and the operator's
//! handover requests, against a real, throwaway PostgreSQL (`support::postgres`): what one leader
//! records, the next one sees; a leader whose epoch is over cannot write, and is told at once; a
//! takeover reserves the lease for the host that asked; a request reaches only the leader of its epoch.
//!
//! PostgreSQL not installed: each test prints `SKIPPED: …` and returns (in CI, `CI=true` or `1`, it fails instead).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cryptobot::instance::lease::{Acquire, ControlRequest, Holder, Lease, new_instance_id};
use cryptobot::store::{HandledUpdate, NewAlert, PgStore, Store};
use support::postgres::TempPostgres;

macro_rules! postgres_or_skip {
    () => {
        match TempPostgres::start() {
            Some(pg) => pg,
            None => return,
        }
    };
}

const BOT: u64 = 777;
const TTL: Duration = Duration::from_secs(30);
const SOON: Duration = Duration::from_secs(5);

async fn contender(url: &str, ttl: Duration, host: &str) -> Arc<Lease> {
    let me = Holder {
        host: host.to_owned(),
        pid: 5000 + fastrand::u32(..1000),
        instance: new_instance_id(),
    };
    Arc::new(
        Lease::connect(url, BOT, ttl, me)
            .await
            .unwrap_or_else(|e| panic!("{host}: Lease::connect: {e}")),
    )
}

async fn lead(lease: &Lease, who: &str) -> i64 {
    match lease.try_acquire().await {
        Ok(Acquire::Leader { epoch, .. }) => epoch,
        other => panic!("{who}: expected to lead, got {other:?}"),
    }
}

/// The store of `lease`'s leader of `epoch`, counting how often it was told the lease is lost.
fn store_of(lease: &Arc<Lease>, epoch: i64) -> (Store, Arc<AtomicUsize>) {
    let fenced = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&fenced);
    let on_fenced = Arc::new(move || {
        count.fetch_add(1, Ordering::SeqCst);
    });
    (
        Store::Postgres(PgStore::new(Arc::clone(lease), epoch, on_fenced)),
        fenced,
    )
}

fn alert<'a>() -> NewAlert<'a> {
    NewAlert {
        symbol: "BTC",
        coin_id: "bitcoin",
        currency: "usd",
        direction: "above",
        threshold: "100000",
        armed: true,
        once: false,
        expires_at_ms: None,
        source_update: None,
    }
}

fn handled(id: i64) -> HandledUpdate {
    HandledUpdate {
        id,
        fingerprint: id * 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_leader_records_the_next_one_sees() {
    let pg = postgres_or_skip!();
    let a = contender(&pg.url(), TTL, "host-a").await;
    let b = contender(&pg.url(), TTL, "host-b").await;
    let epoch_a = lead(&a, "a").await;
    let (store_a, fenced_a) = store_of(&a, epoch_a);
    assert_eq!(store_a.recent_updates(BOT, 10).await.unwrap(), vec![]);
    store_a
        .mark_handled(BOT, handled(10), &[(1, "one".into()), (2, "two".into())])
        .await
        .unwrap();
    // Lower than the one before (ids are not increasing forever): remembered as well.
    store_a.mark_handled(BOT, handled(9), &[]).await.unwrap();
    let id = store_a
        .add_alert(BOT, 1, &alert(), 5)
        .await
        .unwrap()
        .expect("under the cap");
    assert_eq!(store_a.add_alert(BOT, 1, &alert(), 1).await.unwrap(), None);
    store_a
        .save_webhook_secret(BOT, "kept-secret")
        .await
        .unwrap();
    let sent = store_a.outbox(BOT, 0, 10).await.unwrap();
    assert_eq!(
        sent.iter()
            .map(|m| (m.chat_id, m.text.as_str()))
            .collect::<Vec<_>>(),
        [(1, "one"), (2, "two")],
        "queued in order"
    );
    store_a.outbox_done(sent[0].id).await.unwrap();
    store_a.close().await;
    assert!(a.release(epoch_a).await.unwrap());

    let epoch_b = lead(&b, "b").await;
    assert_eq!(epoch_b, epoch_a + 1);
    let (store_b, fenced_b) = store_of(&b, epoch_b);
    assert_eq!(
        store_b.recent_updates(BOT, 10).await.unwrap(),
        vec![(10, Some(70)), (9, Some(63))]
    );
    let left = store_b.outbox(BOT, 0, 10).await.unwrap();
    assert_eq!(left.len(), 1, "the unsent reply waits for the new leader");
    assert_eq!(left[0].text, "two");
    assert_eq!(store_b.outbox_len(BOT).await.unwrap(), 1);
    store_b
        .mark_handled(BOT, handled(11), &[(3, "three".into()), (4, "four".into())])
        .await
        .unwrap();
    let queued = store_b.outbox(BOT, 0, 10).await.unwrap();
    let [_, three, four] = queued.as_slice() else {
        panic!("{queued:?}")
    };
    store_b
        .outbox_done_many(&[left[0].id, three.id])
        .await
        .unwrap();
    let left = store_b.outbox(BOT, 0, 10).await.unwrap();
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), [four.id]);
    let alerts = store_b.chat_alerts(BOT, 1).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].id, alerts[0].armed), (id, true));
    assert_eq!(
        store_b.webhook_secret(BOT).await.unwrap().as_deref(),
        Some("kept-secret")
    );
    // The new leader fires it once per crossing, and re-arms it.
    assert!(store_b.fire_alert(BOT, id, 1, "fired").await.unwrap());
    assert!(!store_b.fire_alert(BOT, id, 1, "fired").await.unwrap());
    store_b.rearm_alert(id).await.unwrap();
    assert_eq!(store_b.live_alerts(BOT).await.unwrap().len(), 1);
    store_b.disable_chat_alerts(BOT, 1).await.unwrap();
    assert!(store_b.live_alerts(BOT).await.unwrap().is_empty());
    assert!(store_b.delete_alert(BOT, 1, id).await.unwrap());
    assert_eq!(fenced_a.load(Ordering::SeqCst), 0);
    assert_eq!(fenced_b.load(Ordering::SeqCst), 0);
    store_b.close().await;
    a.close().await;
    b.close().await;
}

/// The alert options on the shared store: a `once` alert is deleted when it fires, a repeating one
/// keeps the time it fired (read back as Unix ms), and only an alert whose time is up is deleted by
/// `expire_alerts`, each with its note queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_expiring_alerts_on_the_shared_store() {
    let pg = postgres_or_skip!();
    let a = contender(&pg.url(), TTL, "host-a").await;
    let epoch = lead(&a, "a").await;
    let (store, fenced) = store_of(&a, epoch);
    let now = cryptobot::clock::unix_now_ms();
    let add = |chat: i64, once: bool, expires_at_ms: Option<i64>| {
        let store = store.clone();
        async move {
            let new = NewAlert {
                once,
                expires_at_ms,
                ..alert()
            };
            store.add_alert(BOT, chat, &new, 5).await.unwrap().unwrap()
        }
    };
    let repeat = add(1, false, None).await;
    let once = add(2, true, None).await;
    let due = add(3, false, Some(now - 1_000)).await;
    let later = add(4, false, Some(now + 3_600_000)).await;
    let rows = store.live_alerts(BOT).await.unwrap();
    let expiry = |id| rows.iter().find(|r| r.id == id).unwrap().expires_at_ms;
    assert_eq!(expiry(due), Some(now - 1_000));
    assert_eq!(expiry(later), Some(now + 3_600_000));
    assert!(rows.iter().find(|r| r.id == once).unwrap().once);

    assert!(store.fire_alert(BOT, repeat, 1, "fired 1").await.unwrap());
    assert!(store.fire_alert(BOT, once, 2, "fired 2").await.unwrap());
    let notices = [due, later].map(|id| cryptobot::store::Firing {
        alert_id: id,
        chat_id: if id == due { 3 } else { 4 },
        text: format!("expired {id}"),
    });
    assert_eq!(
        store.expire_alerts(BOT, &notices, now).await.unwrap(),
        [due]
    );
    let left = store.live_alerts(BOT).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.id).collect::<Vec<_>>(),
        [repeat, later]
    );
    let fired_at = left[0].last_fired_at_ms.expect("the time it fired");
    assert!(
        (fired_at - cryptobot::clock::unix_now_ms()).abs() < 60_000,
        "fired at {fired_at}, not now"
    );
    let queued: Vec<(i64, String)> = store
        .outbox(BOT, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.chat_id, m.text))
        .collect();
    assert_eq!(
        queued,
        [
            (1, "fired 1".to_owned()),
            (2, "fired 2".to_owned()),
            (3, format!("expired {due}"))
        ]
    );
    assert_eq!(fenced.load(Ordering::SeqCst), 0);
    store.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_epoch_is_over_cannot_write_and_is_told_at_once() {
    let pg = postgres_or_skip!();
    let ttl = Duration::from_millis(600);
    let a = contender(&pg.url(), ttl, "host-a").await;
    let b = contender(&pg.url(), ttl, "host-b").await;
    let old = lead(&a, "a").await;
    let (stale, fenced) = store_of(&a, old);
    stale
        .mark_handled(BOT, handled(1), &[(1, "ok".into())])
        .await
        .unwrap();
    let id = stale.add_alert(BOT, 1, &alert(), 5).await.unwrap().unwrap();
    // a pauses past its TTL (no renewal); b takes over.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let new = lead(&b, "b").await;
    assert_eq!(new, old + 1);

    let refused = stale
        .mark_handled(BOT, handled(2), &[(1, "stale reply".into())])
        .await
        .unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    assert_eq!(fenced.load(Ordering::SeqCst), 1, "told at once");
    assert!(
        refused
            .to_string()
            .contains("no longer holds the PostgreSQL lease")
    );
    for (what, result) in [
        (
            "add_alert",
            stale.add_alert(BOT, 2, &alert(), 5).await.map(drop),
        ),
        (
            "fire_alert",
            stale.fire_alert(BOT, id, 1, "x").await.map(drop),
        ),
        ("rearm_alert", stale.rearm_alert(id).await),
        (
            "delete_alert",
            stale.delete_alert(BOT, 1, id).await.map(drop),
        ),
        ("outbox_done", stale.outbox_done(1).await),
        ("outbox_done_many", stale.outbox_done_many(&[1, 2]).await),
        (
            "set_webhook_url",
            stale.set_webhook_url(BOT, Some("https://x")).await,
        ),
    ] {
        let e = result.expect_err(what);
        assert!(e.is_fenced(), "{what}: {e}");
    }
    // Nothing of the stale writes landed; reads still work.
    let (store_b, fenced_b) = store_of(&b, new);
    assert_eq!(
        store_b.recent_updates(BOT, 10).await.unwrap(),
        vec![(1, Some(7))]
    );
    let outbox = store_b.outbox(BOT, 0, 10).await.unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(store_b.chat_alerts(BOT, 2).await.unwrap().len(), 0);
    assert!(store_b.chat_alerts(BOT, 1).await.unwrap()[0].armed);
    assert_eq!(
        stale.recent_updates(BOT, 10).await.unwrap(),
        vec![(1, Some(7))]
    );
    // The new leader writes.
    store_b.mark_handled(BOT, handled(2), &[]).await.unwrap();
    assert_eq!(fenced_b.load(Ordering::SeqCst), 0);
    stale.close().await;
    store_b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_reserves_the_lease_for_the_host_that_asked_for_one_ttl() {
    let pg = postgres_or_skip!();
    let ttl = Duration::from_secs(1);
    let a = contender(&pg.url(), ttl, "host-a").await;
    let b = contender(&pg.url(), ttl, "host-b").await;
    let c = contender(&pg.url(), ttl, "host-c").await;
    let first = lead(&a, "a").await;
    assert!(a.release_to(first, Some("host-b")).await.unwrap());
    match c.try_acquire().await {
        Ok(Acquire::Standby(info)) => assert_eq!(info.host, "host-a"),
        other => panic!("c must wait while the lease is reserved for host-b: {other:?}"),
    }
    assert_eq!(lead(&b, "b").await, first + 1, "the asking host acquires");
    // A reservation for a host that never comes lapses one TTL after the release.
    let second = first + 1;
    assert!(b.release_to(second, Some("host-gone")).await.unwrap());
    assert!(matches!(c.try_acquire().await, Ok(Acquire::Standby(_))));
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(lead(&c, "c").await, second + 1);
    // A plain release reserves nothing.
    assert!(c.release(second + 1).await.unwrap());
    assert_eq!(lead(&a, "a").await, second + 2);
    for l in [a, b, c] {
        l.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_request_reaches_only_the_leader_of_its_epoch() {
    let pg = postgres_or_skip!();
    let a = contender(&pg.url(), TTL, "host-a").await;
    let operator = contender(&pg.url(), TTL, "host-b").await;
    let epoch = lead(&a, "a").await;
    let mut listener = a.listen_control().await.unwrap();
    operator
        .ask_leader(epoch + 1, &ControlRequest::Resign)
        .await
        .unwrap();
    operator
        .ask_leader(
            epoch,
            &ControlRequest::Takeover {
                host: "host-b".into(),
            },
        )
        .await
        .unwrap();
    let heard = tokio::time::timeout(SOON, listener.next(epoch))
        .await
        .expect("the leader heard no request within 5 s")
        .unwrap();
    assert_eq!(
        heard,
        ControlRequest::Takeover {
            host: "host-b".into()
        },
        "the request for another epoch was skipped"
    );
    a.close().await;
    operator.close().await;
}

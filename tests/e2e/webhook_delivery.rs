//! Webhook delivery end to end: a real sled Db, a real HTTP receiver (axum on 127.0.0.1) and the
//! real worker. Every wait is bounded, so a regression fails instead of hanging.

use crate::common::receiver::{Receiver, Reply, Request};
use crate::common::wait_for_async as wait_for;
use lienwatch::alert::outbox::{Clock, Outbox, State};
use lienwatch::alert::webhook::{self, Webhook, WebhookConfig, WorkerOptions};
use lienwatch::alert::{Alert, AlertPosition, AlertType};
use lienwatch::event::{DeviceId, Position, Timestamp};
use lienwatch::registry::{Loan, LoanStatus};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret";

fn header(r: &Request, name: &str) -> String {
    r.header(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_string()
}

// ---------------------------------------------------------------- helpers

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No proxy: the receiver is on loopback whatever the environment says.
    webhook::client_builder().no_proxy().build().unwrap()
}

/// Wall clock plus an offset the test can move forward.
fn test_clock() -> (Clock, Arc<AtomicI64>) {
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let clock: Clock = Arc::new(move || Timestamp::now().add_millis(o.load(Ordering::SeqCst)));
    (clock, offset)
}

fn fast_options() -> WorkerOptions {
    WorkerOptions {
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        poll_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_millis(200),
        sweep_budget: 64,
    }
}

fn config(name: &str, url: &str, extra: &str) -> Webhook {
    let toml = format!("name = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}");
    let cfg: WebhookConfig = toml::from_str(&toml).unwrap();
    cfg.resolve().unwrap()
}

pub(crate) fn alert(id: &str, kind: AlertType) -> Alert {
    Alert {
        id: id.to_string(),
        kind,
        vehicle_id: "V-1".into(),
        device_id: DeviceId::new("123456789012345"),
        vin: Some("LSVAU2180N2183294".into()),
        plate: Some("粤B12345".into()),
        loan: Loan {
            id: "L-2026-0001".into(),
            status: LoanStatus::Overdue,
            days_past_due: Some(37),
        },
        position: Some(AlertPosition::new(
            Position {
                time: Timestamp::from_secs(1_795_000_000),
                lat: 22.543096,
                lon: 114.057865,
                valid: true,
                ..Position::default()
            },
            Timestamp::from_secs(1_795_000_001),
        )),
        detected_at: Timestamp::from_secs(1_795_000_001),
        details: serde_json::json!({"distance_outside_m": 1830.5}),
    }
}

fn state_of(ob: &Outbox, seq: u64) -> (State, u32, Option<String>) {
    let v = ob.view(seq).unwrap().unwrap();
    (v.state, v.attempts, v.last_error)
}

async fn shutdown(cancel: CancellationToken, handles: Vec<tokio::task::JoinHandle<()>>) {
    cancel.cancel();
    for h in handles {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("worker stops on cancel")
            .unwrap();
    }
}

// ---------------------------------------------------------------- tests

/// (a) Headers, signature and body as CONTRACT.md says; delivered within 1 s of the notify.
/// An outbox with these webhooks and a worker for each (fast retry options).
fn workers(
    db: &sled::Db,
    hooks: &[Webhook],
) -> (Outbox, CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let names: Vec<String> = hooks.iter().map(|h| h.name.clone()).collect();
    let ob = Outbox::open(db, &names).unwrap();
    let cancel = CancellationToken::new();
    let handles = hooks
        .iter()
        .enumerate()
        .map(|(i, h)| {
            webhook::spawn(
                ob.clone(),
                i,
                h.clone(),
                client(),
                cancel.clone(),
                fast_options(),
            )
            .unwrap()
        })
        .collect();
    (ob, cancel, handles)
}

/// An outbox with one webhook and its worker.
fn one_worker(
    db: &sled::Db,
    hook: Webhook,
) -> (Outbox, CancellationToken, tokio::task::JoinHandle<()>) {
    let (ob, cancel, mut handles) = workers(db, &[hook]);
    let h = handles.remove(0);
    (ob, cancel, h)
}

#[tokio::test]
async fn delivers_signed_alert() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let rx = Receiver::scripted(&[], Reply::Status(204));
    let hook = config("collections", &rx.url(), "");
    let ob = Outbox::open(&db, std::slice::from_ref(&hook.name)).unwrap();
    let cancel = CancellationToken::new();
    let h = webhook::spawn(
        ob.clone(),
        0,
        hook,
        client(),
        cancel.clone(),
        WorkerOptions::default(),
    )
    .unwrap();
    // Let the worker go idle first, so the notify (not a start-up scan) is what wakes it: on
    // this single-threaded runtime one yield runs the new worker's sweep of the empty outbox up
    // to its idle wait.
    tokio::task::yield_now().await;

    let a = alert("alert-a", AlertType::GeofenceExit);
    let seq = ob.insert(&a, &[0]).unwrap();
    db.flush_async().await.unwrap();
    let t0 = Instant::now();
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(1), "delivery within 1 s", || {
        !rx.all().is_empty()
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(1));

    let r = &rx.all()[0];
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(header(r, "x-lienwatch-alert-id"), "alert-a");
    let ts: i64 = header(r, "x-lienwatch-timestamp").parse().unwrap();
    assert!(
        (ts - Timestamp::now().secs()).abs() <= 5,
        "timestamp is now"
    );
    let sig = header(r, "x-lienwatch-signature");
    assert!(sig.starts_with("v1=") && sig[3..].chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert!(webhook::verify(SECRET.as_bytes(), ts, &sig, &r.body));
    assert!(!webhook::verify(b"wrong", ts, &sig, &r.body));
    assert_eq!(&r.body[..], &serde_json::to_vec(&a).unwrap()[..]);
    let back: Alert = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(back, a);

    wait_for(Duration::from_secs(2), "state delivered", || {
        state_of(&ob, seq).0 == State::Delivered
    })
    .await;
    assert_eq!(state_of(&ob, seq), (State::Delivered, 1, None));
    assert_eq!(ob.pending_alerts(), 0);
    assert_eq!(rx.all().len(), 1, "no duplicate after success");
    shutdown(cancel, vec![h]).await;
}

/// (b) 500, 503 and a timeout, then success: same id and a valid signature every time, attempts
/// counted, state delivered.
#[tokio::test]
async fn retries_errors_and_timeouts_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let rx = Receiver::scripted(
        &[
            Reply::Status(500),
            Reply::Status(503),
            Reply::Hang(Duration::from_secs(2)),
        ],
        Reply::Status(200),
    );
    let hook = config("h", &rx.url(), "timeout = \"300ms\"");
    let (ob, cancel, h) = one_worker(&db, hook);

    let seq = ob
        .insert(&alert("alert-b", AlertType::Tamper), &[0])
        .unwrap();
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(10), "delivered after retries", || {
        state_of(&ob, seq).0 == State::Delivered
    })
    .await;
    let (_, attempts, last_error) = state_of(&ob, seq);
    assert_eq!(attempts, 4);
    assert_eq!(last_error, None);
    let got = rx.all();
    assert_eq!(got.len(), 4);
    let first_body = got[0].body.clone();
    for r in &got {
        assert_eq!(header(r, "x-lienwatch-alert-id"), "alert-b");
        assert_eq!(r.body, first_body, "same bytes on every attempt");
        let ts: i64 = header(r, "x-lienwatch-timestamp").parse().unwrap();
        assert!(webhook::verify(
            SECRET.as_bytes(),
            ts,
            &header(r, "x-lienwatch-signature"),
            &r.body
        ));
    }
    shutdown(cancel, vec![h]).await;
}

/// (b) A refused connection is retried until the receiver comes up on that port.
#[tokio::test]
async fn retries_refused_connection_until_receiver_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hook = config("h", &format!("http://{port}/hook"), "");
    let (ob, cancel, h) = one_worker(&db, hook);
    let seq = ob
        .insert(&alert("alert-c", AlertType::PowerCut), &[0])
        .unwrap();
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(10), "two refused attempts", || {
        state_of(&ob, seq).1 >= 2
    })
    .await;
    let (state, _, err) = state_of(&ob, seq);
    assert_eq!(state, State::Pending);
    let err = err.unwrap();
    assert!(
        !err.contains(&port.to_string()),
        "URL kept out of errors: {err}"
    );
    assert!(err.to_lowercase().contains("connect"), "{err}");

    let rx = Receiver::start_at(port);
    wait_for(Duration::from_secs(10), "delivered once up", || {
        state_of(&ob, seq).0 == State::Delivered
    })
    .await;
    assert_eq!(rx.ids(), vec!["alert-c".to_string()]);
    shutdown(cancel, vec![h]).await;
}

/// (c) A webhook with a `types` filter gets only those types; the other gets everything.
#[tokio::test]
async fn type_filter_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let rx_geo = Receiver::scripted(&[], Reply::Status(200));
    let rx_all = Receiver::scripted(&[], Reply::Status(200));
    let hooks = vec![
        config("geo", &rx_geo.url(), "types = [\"geofence_exit\"]"),
        config("all", &rx_all.url(), ""),
    ];
    let (ob, cancel, handles) = workers(&db, &hooks);

    let mut seqs = Vec::new();
    for (id, kind) in [
        ("g1", AlertType::GeofenceExit),
        ("t1", AlertType::Tamper),
        ("s1", AlertType::SilentOverdue),
    ] {
        seqs.push(
            ob.insert(&alert(id, kind), &webhook::targets(&hooks, kind))
                .unwrap(),
        );
    }
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(5), "all delivered", || {
        seqs.iter().all(|&s| state_of(&ob, s).0 == State::Delivered)
    })
    .await;
    assert_eq!(rx_geo.ids(), vec!["g1".to_string()]);
    let all: HashSet<String> = rx_all.ids().into_iter().collect();
    assert_eq!(all, ["g1", "t1", "s1"].map(String::from).into());
    let tamper = ob.view(seqs[1]).unwrap().unwrap();
    assert_eq!(tamper.deliveries.len(), 1);
    assert_eq!(tamper.deliveries[0].webhook, "all");
    shutdown(cancel, handles).await;
}

/// (d) Stop the worker and close the Db while an alert is backing off; after reopening, the
/// pending alert is sent at once (not after its stored backoff) with the same id.
#[tokio::test]
async fn pending_alert_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rx_down = Receiver::scripted(&[], Reply::Status(502));
    let slow_retry = WorkerOptions {
        backoff_base: Duration::from_secs(120),
        backoff_max: Duration::from_secs(600),
        ..fast_options()
    };
    let seq;
    {
        let db = sled::open(dir.path()).unwrap();
        let hook = config("collections", &rx_down.url(), "");
        let ob = Outbox::open(&db, std::slice::from_ref(&hook.name)).unwrap();
        let cancel = CancellationToken::new();
        let h = webhook::spawn(
            ob.clone(),
            0,
            hook,
            client(),
            cancel.clone(),
            slow_retry.clone(),
        )
        .unwrap();
        seq = ob
            .insert(&alert("alert-d", AlertType::SilentOverdue), &[0])
            .unwrap();
        db.flush_async().await.unwrap();
        ob.mark_durable();
        ob.notify();
        wait_for(Duration::from_secs(5), "first failed attempt", || {
            state_of(&ob, seq).1 == 1
        })
        .await;
        let rec = ob.delivery(0, seq).unwrap().unwrap();
        assert!(
            rec.next_attempt_at.since(Timestamp::now()) > 30_000,
            "long backoff stored"
        );
        shutdown(cancel, vec![h]).await;
        db.flush().unwrap();
    }
    drop(rx_down);
    // The receiver moved; the webhook keeps its name, so its backlog follows it.
    let rx_up = Receiver::scripted(&[], Reply::Status(200));
    let db = sled::open(dir.path()).unwrap();
    let hook = config("collections", &rx_up.url(), "");
    let ob = Outbox::open(&db, std::slice::from_ref(&hook.name)).unwrap();
    assert_eq!(ob.pending_alerts(), 1);
    assert_eq!(state_of(&ob, seq).0, State::Pending);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let h = webhook::spawn(ob.clone(), 0, hook, client(), cancel.clone(), slow_retry).unwrap();
    wait_for(
        Duration::from_secs(3),
        "delivered right after restart",
        || state_of(&ob, seq).0 == State::Delivered,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(rx_up.ids(), vec!["alert-d".to_string()]);
    assert_eq!(state_of(&ob, seq), (State::Delivered, 2, None));
    assert_eq!(ob.pending_alerts(), 0);
    shutdown(cancel, vec![h]).await;
}

/// (e) After `max_age` (reached by moving the injected clock) a failing alert becomes `failed`.
#[tokio::test]
async fn max_age_marks_failed() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let rx = Receiver::scripted(&[], Reply::Status(500));
    // One request at a time, in due order: the later alert below is tried only after anything
    // due before it.
    let hook = config("h", &rx.url(), "max_age = \"3d\"\nmax_in_flight = 1");
    let (clock, offset) = test_clock();
    let ob = Outbox::open_with_clock(&db, std::slice::from_ref(&hook.name), clock).unwrap();
    let cancel = CancellationToken::new();
    let opts = WorkerOptions {
        backoff_base: Duration::from_secs(60),
        ..fast_options()
    };
    let h = webhook::spawn(ob.clone(), 0, hook, client(), cancel.clone(), opts).unwrap();
    let seq = ob
        .insert(&alert("alert-e", AlertType::GeofenceExit), &[0])
        .unwrap();
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(5), "first attempt", || {
        state_of(&ob, seq).1 >= 1
    })
    .await;
    assert_eq!(state_of(&ob, seq).0, State::Pending);

    // Two days on: still retried, still pending.
    offset.store(2 * 86_400_000, Ordering::SeqCst);
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(5), "second attempt", || {
        state_of(&ob, seq).1 >= 2
    })
    .await;
    assert_eq!(state_of(&ob, seq).0, State::Pending);

    // Past three days: the next failure is final.
    offset.store(3 * 86_400_000 + 1000, Ordering::SeqCst);
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(5), "failed", || {
        state_of(&ob, seq).0 == State::Failed
    })
    .await;
    let (_, attempts, err) = state_of(&ob, seq);
    assert_eq!(attempts, 3);
    assert!(err.unwrap().contains("500"));
    assert_eq!(ob.pending_alerts(), 0);
    assert_eq!(ob.list(Some(State::Failed), 10, None).unwrap().len(), 1);
    // No more attempts once failed: with the clock past any backoff, a later alert is tried,
    // and the failed one (due first, were it still pending) was not.
    offset.store(10 * 86_400_000, Ordering::SeqCst);
    let later = ob
        .insert(&alert("alert-e-later", AlertType::GeofenceExit), &[0])
        .unwrap();
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(5), "the later alert's attempt", || {
        state_of(&ob, later).1 >= 1
    })
    .await;
    let ids = rx.ids();
    assert_eq!(ids.iter().filter(|i| *i == "alert-e").count(), 3, "{ids:?}");
    assert_eq!(state_of(&ob, seq).1, 3);
    shutdown(cancel, vec![h]).await;
}

/// (f) Listing: newest first, limit, `before` cursor, state filter, flat JSON shape.
#[tokio::test]
async fn list_pages_newest_first_with_state_filter() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let ob = Outbox::open(&db, &["h".to_string()]).unwrap();
    let mut seqs = Vec::new();
    for i in 0..25 {
        let targets: &[usize] = if i % 5 == 4 { &[] } else { &[0] };
        seqs.push(
            ob.insert(
                &alert(&format!("a{i:02}"), AlertType::GeofenceExit),
                targets,
            )
            .unwrap(),
        );
    }
    // a00, a03, a06, ... delivered; a01, a10 failed; the rest pending (a04, a09, ... no target).
    use lienwatch::alert::outbox::AttemptOutcome;
    for (i, &s) in seqs.iter().enumerate() {
        if i % 5 == 4 {
            continue;
        }
        if i == 1 || i == 10 {
            let out = AttemptOutcome::GiveUp {
                error: "HTTP 410 Gone".into(),
            };
            ob.record_attempt(0, s, ob.now(), &out).unwrap();
        } else if i % 3 == 0 {
            ob.record_attempt(0, s, ob.now(), &AttemptOutcome::Delivered)
                .unwrap();
        }
    }

    let ids = |v: &[lienwatch::alert::outbox::AlertView]| -> Vec<String> {
        v.iter().map(|a| a.alert.id.clone()).collect()
    };
    let page1 = ob.list(None, 10, None).unwrap();
    let expect1: Vec<String> = (15..25).rev().map(|i| format!("a{i:02}")).collect();
    assert_eq!(ids(&page1), expect1);
    let page2 = ob.list(None, 10, Some(page1.last().unwrap().seq)).unwrap();
    let expect2: Vec<String> = (5..15).rev().map(|i| format!("a{i:02}")).collect();
    assert_eq!(ids(&page2), expect2);
    let page3 = ob.list(None, 10, Some(page2.last().unwrap().seq)).unwrap();
    assert_eq!(page3.len(), 5);
    assert!(ob
        .list(None, 10, Some(page3.last().unwrap().seq))
        .unwrap()
        .is_empty());

    let failed = ob.list(Some(State::Failed), 10, None).unwrap();
    assert_eq!(ids(&failed), vec!["a10".to_string(), "a01".to_string()]);
    assert!(failed.iter().all(|v| v.state == State::Failed));
    let failed2 = ob
        .list(Some(State::Failed), 1, Some(failed[0].seq))
        .unwrap();
    assert_eq!(ids(&failed2), vec!["a01".to_string()]);

    let delivered = ob.list(Some(State::Delivered), 100, None).unwrap();
    let mut expect_delivered: Vec<String> = (0..25)
        .filter(|i| i % 5 == 4 || (i % 3 == 0 && *i != 1 && *i != 10))
        .map(|i| format!("a{i:02}"))
        .collect();
    expect_delivered.reverse();
    assert_eq!(ids(&delivered), expect_delivered);
    // No target: delivered with 0 attempts.
    let no_target = delivered.iter().find(|v| v.alert.id == "a24").unwrap();
    assert_eq!((no_target.attempts, no_target.deliveries.len()), (0, 0));

    let pending = ob.list(Some(State::Pending), 100, None).unwrap();
    assert_eq!(pending.len() + delivered.len() + 2, 25);
    assert_eq!(ob.pending_alerts() as usize, pending.len());

    let json = serde_json::to_value(&failed[0]).unwrap();
    let obj = json.as_object().unwrap();
    for key in [
        "id",
        "type",
        "vehicle_id",
        "device_id",
        "vin",
        "plate",
        "loan",
        "position",
        "detected_at",
        "details",
        "state",
        "attempts",
        "last_error",
    ] {
        assert!(obj.contains_key(key), "missing {key}");
    }
    assert_eq!(json["state"], "failed");
    assert_eq!(json["attempts"], 1);
    assert_eq!(json["last_error"], "HTTP 410 Gone");
    assert_eq!(json["loan"]["days_past_due"], 37);
    assert_eq!(json["position"]["lat"], 22.543096);
}

/// (g) A slow, failing receiver with a backlog: in-flight requests never exceed `max_in_flight`,
/// newer alerts still get tried while older ones back off, and another webhook is not held up.
#[tokio::test]
async fn dead_receiver_is_bounded_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let slow = Receiver::with(
        "127.0.0.1:0".parse().unwrap(),
        &[],
        Reply::Status(500),
        Duration::from_millis(100),
    );
    let good = Receiver::scripted(&[], Reply::Status(200));
    let hooks = [
        config("slow", &slow.url(), "max_in_flight = 3"),
        config("good", &good.url(), ""),
    ];
    let (ob, cancel, handles) = workers(&db, &hooks);

    const N: usize = 60;
    let started = Instant::now();
    for i in 0..N {
        ob.insert(&alert(&format!("g{i:03}"), AlertType::Tamper), &[0, 1])
            .unwrap();
        if i % 10 == 9 {
            ob.mark_durable();
            ob.notify();
        }
    }
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(10), "good webhook delivers all", || {
        ob.pending_deliveries(1).unwrap() == 0
    })
    .await;
    let good_time = started.elapsed();
    assert_eq!(good.ids().len(), N);

    wait_for(
        Duration::from_secs(20),
        "every alert tried at the slow webhook",
        || slow.ids().into_iter().collect::<HashSet<_>>().len() == N,
    )
    .await;
    let max_seen = slow.max_in_flight();
    assert!(max_seen <= 3, "in flight {max_seen} > max_in_flight 3");
    assert_eq!(max_seen, 3, "the worker does use its concurrency");
    assert!(
        good_time < Duration::from_secs(5),
        "good webhook took {good_time:?} next to a slow one"
    );
    assert_eq!(ob.pending_deliveries(0).unwrap(), N as u64);
    assert_eq!(ob.pending_alerts(), N as u64);
    // Retries go on after every alert had its first try (schedule order is by due time).
    wait_for(
        Duration::from_secs(10),
        "retries at the slow webhook",
        || slow.all().len() > N + 3,
    )
    .await;
    assert!(slow.max_in_flight() <= 3);
    shutdown(cancel, handles).await;
}

/// A redirect is not followed: a 3xx is a failed attempt, never a delivery.
#[tokio::test]
async fn redirect_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let rx = Receiver::scripted(&[], Reply::Status(302));
    let hook = config("h", &rx.url(), "");
    let (ob, cancel, h) = one_worker(&db, hook);
    let seq = ob
        .insert(&alert("alert-r", AlertType::Tamper), &[0])
        .unwrap();
    ob.mark_durable();
    ob.notify();
    wait_for(Duration::from_secs(5), "a failed attempt", || {
        state_of(&ob, seq).1 >= 1
    })
    .await;
    let (state, _, err) = state_of(&ob, seq);
    assert_eq!(state, State::Pending);
    assert!(err.unwrap().contains("302"));
    shutdown(cancel, vec![h]).await;
}

/// Retention: finished alerts older than the cutoff go; pending ones stay whatever their age.
#[tokio::test]
async fn prune_removes_old_finished_alerts_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let names = vec!["h".to_string()];
    let (clock, offset) = test_clock();
    let ob = Outbox::open_with_clock(&db, &names, clock).unwrap();
    // No worker runs: a targeted alert stays pending; an untargeted one is delivered at once.
    let old_pending = ob
        .insert(&alert("old-pending", AlertType::Tamper), &[0])
        .unwrap();
    let old_done = ob
        .insert(&alert("old-done", AlertType::PowerCut), &[])
        .unwrap();
    offset.store(40 * 86_400_000, Ordering::SeqCst);
    let young_done = ob
        .insert(&alert("young-done", AlertType::PowerCut), &[])
        .unwrap();
    let cutoff = ob.now().add_millis(-30 * 86_400_000);
    assert_eq!(ob.prune(cutoff, 100).unwrap(), 1);
    assert!(
        ob.view(old_done).unwrap().is_none(),
        "old delivered alert pruned"
    );
    assert!(
        ob.view(old_pending).unwrap().is_some(),
        "pending alerts are never pruned"
    );
    assert!(ob.view(young_done).unwrap().is_some(), "young alerts stay");
    let listed: Vec<u64> = ob
        .list(None, 10, None)
        .unwrap()
        .iter()
        .map(|v| v.seq)
        .collect();
    assert_eq!(listed, vec![young_done, old_pending]);
    assert_eq!(ob.list(Some(State::Delivered), 10, None).unwrap().len(), 1);
    assert_eq!(ob.prune(cutoff, 100).unwrap(), 0, "nothing left to prune");
}

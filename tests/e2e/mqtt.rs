//! MQTT ingestion through a real mosquitto broker and the real lienwatch binary: payload formats,
//! the persistent session, SIGKILL in the middle of a QoS 1 stream, a broker restart, and
//! malformed payloads. Every wait is bounded.

use crate::common::mosquitto::{free_ports, Mosquitto};
use crate::common::tls::make_certs;
use crate::common::wait::try_for;
use crate::common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROBE_DEVICE: &str = "999000999";

/// The `[mqtt]` section every test uses.
fn mqtt_toml(broker: &Mosquitto) -> String {
    mqtt_toml_sessions(broker, 1)
}

/// The same with the subscription spread over `sessions` shared-subscription sessions.
fn mqtt_toml_sessions(broker: &Mosquitto, sessions: u16) -> String {
    format!(
        r#"
[mqtt]
url = "{}"
client_id = "lienwatch-test"
max_inflight = 32
sessions = {sessions}

[[mqtt.subscription]]
topic = "trackers/{{device_id}}/position"
format = "json"

[[mqtt.subscription]]
topic = "fleet/positions"
format = "json"

[[mqtt.subscription]]
topic = "owntracks/+/+"
format = "owntracks"

[[mqtt.subscription]]
topic = "raw/gt06/{{device_id}}"
format = "gt06"
"#,
        broker.url()
    )
}

/// A canonical JSON position; `t` seconds after 2026-11-22T00:00:00Z.
fn position(t: u32, lat: f64, lon: f64) -> Vec<u8> {
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    format!(r#"{{"time": "2026-11-22T{h:02}:{m:02}:{s:02}Z", "lat": {lat}, "lon": {lon}, "speed_kmh": 12.5, "course": 90}}"#)
        .into_bytes()
}

fn time_of(t: u32) -> String {
    format!(
        "2026-11-22T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

fn topic(dev: &str) -> String {
    format!("trackers/{dev}/position")
}

/// Publishes every message at QoS 1 and returns once the broker acknowledged them all.
/// `pace` sleeps between chunks of 100; `progress` counts broker acks.
fn publish(port: u16, msgs: Vec<(String, Vec<u8>)>, pace: Duration, progress: Arc<AtomicUsize>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let id = format!(
            "test-pub-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(100);
        let (client, mut el) = AsyncClient::new(opts, 16);
        let n = msgs.len();
        let sender = tokio::spawn(async move {
            for (i, (t, p)) in msgs.into_iter().enumerate() {
                client
                    .publish(t, QoS::AtLeastOnce, false, p)
                    .await
                    .expect("queue publish");
                if i % 100 == 99 && !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            client
        });
        let mut acked = 0;
        let done = tokio::time::timeout(Duration::from_secs(60), async {
            while acked < n {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked += 1;
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("publisher lost the broker: {e}"),
                }
            }
        })
        .await;
        assert!(done.is_ok(), "broker acked only {acked} of {n} publishes");
        let client = sender.await.expect("sender");
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    });
}

fn publish_now(port: u16, msgs: Vec<(String, Vec<u8>)>) {
    publish(port, msgs, Duration::ZERO, Arc::new(AtomicUsize::new(0)));
}

/// The stored position of a device, if it has one.
fn stored(d: &Daemon, dev: &str) -> Option<serde_json::Value> {
    let (s, v) = d.api("GET", &format!("/v1/devices/{dev}"), None);
    if s != 200 {
        return None;
    }
    v.get("position").filter(|p| !p.is_null()).cloned()
}

fn stored_time(d: &Daemon, dev: &str) -> Option<String> {
    stored(d, dev).and_then(|p| p["time"].as_str().map(str::to_string))
}

/// Publishes probes until one is stored: the subscription is live and the session exists.
/// Every probe is newer than any before it in this process, so the one found stored is never an
/// earlier probe (of this daemon before a restart).
fn wait_subscribed(d: &Daemon, broker: &Mosquitto) {
    static PROBE: AtomicUsize = AtomicUsize::new(0);
    wait_for(Duration::from_secs(20), "the MQTT subscription", || {
        let t = PROBE.fetch_add(1, Ordering::Relaxed) as u32 + 1;
        publish_now(
            broker.port,
            vec![(topic(PROBE_DEVICE), position(t, 1.0, 1.0))],
        );
        // A probe published before the subscription existed is lost: then another one.
        try_for(Duration::from_secs(1), || {
            (stored_time(d, PROBE_DEVICE).as_deref() == Some(time_of(t).as_str())).then_some(())
        })
    });
}

/// Waits until `n` sessions are connected, each under its own client id at the broker.
fn wait_sessions(d: &Daemon, n: u16) {
    wait_for(Duration::from_secs(20), "every MQTT session", || {
        (d.metric("lienwatch_mqtt_connected", &[]) == f64::from(n)).then_some(())
    });
}

#[test]
fn json_and_owntracks_positions_are_stored() {
    let broker = Mosquitto::start();
    let d = Daemon::start(&["gt06"], &mqtt_toml(&broker));
    wait_subscribed(&d, &broker);

    let owntracks = br#"{"_type": "location", "tst": 1716201015, "lat": 22.543096,
        "lon": 114.057865, "vel": 60, "cog": 90, "acc": 10, "tid": "ph"}"#;
    let array = br#"[{"device_id": "5550001", "time": "2026-11-22T08:00:00Z", "lat": 10.5, "lon": 20.5,
            "alarms": ["power_cut"], "satellites": 7},
        {"device_id": "5550002", "time": "2026-11-22T08:00:01Z", "lat": -10.5, "lon": -20.5, "valid": false}]"#;
    publish_now(
        broker.port,
        vec![
            (
                topic("123456789012345"),
                position(30_930, 22.543096, 114.057865),
            ),
            ("owntracks/alice/868120145233604".into(), owntracks.to_vec()),
            (
                "owntracks/bob/77".into(),
                br#"{"_type": "lwt", "tst": 1716201015}"#.to_vec(),
            ),
            ("fleet/positions".into(), array.to_vec()),
        ],
    );

    let p = wait_for(Duration::from_secs(10), "the JSON position", || {
        stored(&d, "123456789012345")
    });
    assert_eq!(p["time"], "2026-11-22T08:35:30Z");
    assert_eq!(p["lat"], 22.543096);
    assert_eq!(p["lon"], 114.057865);
    assert_eq!(p["speed_kmh"], 12.5);
    assert_eq!(p["course"], 90);
    assert_eq!(p["valid"], true);

    let p = wait_for(Duration::from_secs(10), "the OwnTracks position", || {
        stored(&d, "868120145233604")
    });
    assert_eq!(p["time"], "2024-05-20T10:30:15Z");
    assert_eq!(p["lat"], 22.543096);
    assert_eq!(p["speed_kmh"], 60.0);
    assert_eq!(p["course"], 90);
    let (_, dev) = d.api("GET", "/v1/devices/868120145233604", None);
    assert_eq!(dev["protocol"], "owntracks", "{dev}");

    let a = wait_for(Duration::from_secs(10), "the array positions", || {
        Some((stored(&d, "5550001")?, stored(&d, "5550002")?))
    });
    assert_eq!(a.0["lat"], 10.5);
    assert_eq!(a.0["satellites"], 7);
    assert_eq!(a.1["valid"], false);
    // An OwnTracks lwt is acked and ignored: nothing is stored for it.
    assert_eq!(d.api("GET", "/v1/devices/77", None).0, 404);
    wait_for(Duration::from_secs(5), "the ignored counter", || {
        (d.metric("lienwatch_mqtt_messages_total", &[("outcome", "ignored")]) >= 1.0).then_some(())
    });
    assert_eq!(d.metric("lienwatch_mqtt_connected", &[]), 1.0);
}

#[test]
fn malformed_payloads_do_not_block_the_messages_after_them() {
    let broker = Mosquitto::start();
    let d = Daemon::start(&["gt06"], &mqtt_toml(&broker));
    wait_subscribed(&d, &broker);

    publish_now(
        broker.port,
        vec![
            (topic("4242"), b"{not json".to_vec()),
            (topic("not-digits"), position(10, 1.0, 2.0)),
            (
                topic("4242"),
                br#"{"time": "2026-11-22T00:00:11Z", "lat": 95, "lon": 2}"#.to_vec(),
            ),
            ("fleet/positions".into(), position(12, 1.0, 2.0)), // no device id anywhere
            ("owntracks/a/4242".into(), vec![0xff, 0x00, 0x13]),
            (topic("4242"), position(20, 3.0, 4.0)),
        ],
    );
    let t = wait_for(Duration::from_secs(10), "the good message", || {
        stored_time(&d, "4242")
    });
    assert_eq!(t, time_of(20));
    wait_for(Duration::from_secs(5), "the malformed counter", || {
        (d.metric("lienwatch_mqtt_messages_total", &[("outcome", "malformed")]) >= 5.0)
            .then_some(())
    });

    // Acked, not redelivered: after a restart the broker sends nothing old again.
    let mut d = d;
    assert_eq!(d.terminate(), Some(0), "{}", d.log());
    d.spawn();
    // A redelivery would come first: the broker resends what is unacknowledged on reconnect,
    // before the probe published after it, and a malformed message is counted on arrival,
    // before the probe is even committed.
    wait_subscribed(&d, &broker);
    assert_eq!(
        d.metric("lienwatch_mqtt_messages_total", &[("outcome", "malformed")]),
        0.0,
        "malformed messages were redelivered after they were acked"
    );
}

#[test]
fn persistent_session_gets_what_was_published_while_stopped() {
    let broker = Mosquitto::start();
    let mut d = Daemon::start(&["gt06"], &mqtt_toml(&broker));
    wait_subscribed(&d, &broker);
    assert_eq!(d.terminate(), Some(0), "{}", d.log());

    let started = Instant::now();
    let msgs: Vec<_> = (0..100u32)
        .map(|i| (topic(&format!("7000{i:03}")), position(100 + i, 1.0, 2.0)))
        .collect();
    publish_now(broker.port, msgs);
    d.spawn();
    for i in 0..100u32 {
        let dev = format!("7000{i:03}");
        let t = wait_for(Duration::from_secs(20), &format!("device {dev}"), || {
            stored_time(&d, &dev)
        });
        assert_eq!(t, time_of(100 + i), "{dev}");
    }
    eprintln!(
        "100 queued messages ingested after restart in {:?}",
        started.elapsed()
    );
}

#[test]
fn sigkill_in_the_middle_of_a_qos1_stream_loses_nothing() {
    sigkill_mid_stream(1);
}

#[test]
fn sigkill_with_several_shared_sessions_loses_nothing() {
    sigkill_mid_stream(3);
}

/// Streams 4000 QoS 1 messages, SIGKILLs lienwatch once it has acked a few hundred, restarts it
/// and checks every device's newest fix. With several sessions, one device's messages are spread
/// over them and committed in any order; the store keeps the newest.
fn sigkill_mid_stream(sessions: u16) {
    const DEVICES: u32 = 200;
    const MESSAGES: u32 = 4000;
    let broker = Mosquitto::start();
    let mut d = Daemon::configure(&["gt06"], &mqtt_toml_sessions(&broker, sessions));
    // Long group commits: a message acknowledged before its commit would have 30 ms to be lost
    // in, so such a bug shows as a missing fix instead of slipping through a sub-millisecond gap.
    let config = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        config.replacen("[storage]\n", "[storage]\ncommit_window = \"30ms\"\n", 1),
    )
    .expect("rewrite config");
    d.spawn();
    wait_subscribed(&d, &broker);
    wait_sessions(&d, sessions);
    // Each device gets a burst of 20 consecutive messages with increasing times, so the devices
    // being streamed when the kill lands have their newest fix among the messages at risk: one
    // acked before it was durable would be missing after the restart.
    let per = MESSAGES / DEVICES;
    let msgs: Vec<_> = (0..MESSAGES)
        .map(|n| {
            let dev = format!("8000{:03}", n / per);
            (topic(&dev), position(1000 + n, 10.0 + n as f64 / 1e4, 20.0))
        })
        .collect();
    let progress = Arc::new(AtomicUsize::new(0));
    let port = broker.port;
    let p2 = progress.clone();
    let publisher = std::thread::spawn(move || publish(port, msgs, Duration::ZERO, p2));

    // Kill once lienwatch has acked a few hundred: it is mid-ingest, with up to its inflight
    // window of messages received and not yet acknowledged.
    // Polled without sleeping: a slow scrape must not let the whole stream through first.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored_at_kill = loop {
        let n = d.metric("lienwatch_mqtt_messages_total", &[("outcome", "stored")]);
        if n >= 300.0 {
            break n;
        }
        assert!(Instant::now() < deadline, "ingestion did not start");
    };
    d.kill9();
    let published_at_kill = progress.load(Ordering::Relaxed);
    assert!(
        stored_at_kill < MESSAGES as f64,
        "lienwatch had already ingested everything ({stored_at_kill}) when it was killed"
    );
    publisher.join().expect("publisher");

    d.spawn();
    wait_sessions(&d, sessions);
    let started = Instant::now();
    let want: HashMap<String, String> = (0..DEVICES)
        .map(|i| (format!("8000{i:03}"), time_of(1000 + i * per + per - 1)))
        .collect();
    let mut newest = 0;
    wait_for(
        Duration::from_secs(60),
        "every device's newest position",
        || {
            newest = want
                .iter()
                .filter(|(dev, t)| stored_time(&d, dev).as_deref() == Some(t.as_str()))
                .count();
            (newest == DEVICES as usize).then_some(())
        },
    );
    assert_eq!(newest, DEVICES as usize);
    eprintln!(
        "{sessions} session(s): killed after {stored_at_kill} acked, {published_at_kill} of {MESSAGES} published; all {DEVICES} devices newest after {:?}",
        started.elapsed()
    );
}

#[test]
fn going_from_one_session_to_several_keeps_what_was_queued() {
    let broker = Mosquitto::start();
    let mut d = Daemon::start(&["gt06"], &mqtt_toml(&broker));
    wait_subscribed(&d, &broker);
    assert_eq!(d.terminate(), Some(0), "{}", d.log());

    // Queued in the single session, which becomes session 0 of the shared group.
    publish_now(
        broker.port,
        (0..60u32)
            .map(|i| (topic(&format!("72{i:02}")), position(200 + i, 1.0, 2.0)))
            .collect(),
    );
    let config = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        config.replace("sessions = 1\n", "sessions = 3\n"),
    )
    .expect("rewrite config");
    d.spawn();
    wait_sessions(&d, 3);
    for i in 0..60u32 {
        let dev = format!("72{i:02}");
        let t = wait_for(Duration::from_secs(20), &format!("queued {dev}"), || {
            stored_time(&d, &dev)
        });
        assert_eq!(t, time_of(200 + i), "{dev}");
    }
    // And the group takes new messages.
    publish_now(
        broker.port,
        (0..30u32)
            .map(|i| (topic(&format!("73{i:02}")), position(300 + i, 1.0, 2.0)))
            .collect(),
    );
    for i in 0..30u32 {
        let dev = format!("73{i:02}");
        let t = wait_for(Duration::from_secs(20), &format!("new {dev}"), || {
            stored_time(&d, &dev)
        });
        assert_eq!(t, time_of(300 + i), "{dev}");
    }
    let log = broker.log();
    for id in ["lienwatch-test-1", "lienwatch-test-2"] {
        assert!(log.contains(id), "{id} never connected:\n{log}");
    }
}

/// Fewer sessions than before: the broker still holds the ones above the new count, with their
/// share of what was published while lienwatch was away, and keeps them in the share group
/// (mosquitto shares among offline members too). They are drained into the store, then deleted,
/// so that neither what they held nor a share of what comes later is lost.
#[test]
fn going_from_three_sessions_to_two_drains_and_deletes_the_third() {
    let broker = Mosquitto::start();
    let mut d = Daemon::start(&["gt06"], &mqtt_toml_sessions(&broker, 3));
    wait_subscribed(&d, &broker);
    wait_sessions(&d, 3);
    assert_eq!(d.terminate(), Some(0), "{}", d.log());

    // Queued in the group while lienwatch is away, a share for each of the three sessions.
    publish_now(
        broker.port,
        (0..60u32)
            .map(|i| (topic(&format!("75{i:02}")), position(500 + i, 1.0, 2.0)))
            .collect(),
    );
    let config = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        config.replace("sessions = 3\n", "sessions = 2\n"),
    )
    .expect("rewrite config");
    d.spawn();
    for i in 0..60u32 {
        let dev = format!("75{i:02}");
        let t = wait_for(Duration::from_secs(30), &format!("queued {dev}"), || {
            stored_time(&d, &dev)
        });
        assert_eq!(t, time_of(500 + i), "{dev}");
    }
    wait_for(Duration::from_secs(30), "the third session deleted", || {
        d.log().contains("drained and deleted").then_some(())
    });
    wait_sessions(&d, 2);
    // The group is two now: nothing new goes to a session nobody reads.
    publish_now(
        broker.port,
        (0..60u32)
            .map(|i| (topic(&format!("76{i:02}")), position(600 + i, 1.0, 2.0)))
            .collect(),
    );
    for i in 0..60u32 {
        let dev = format!("76{i:02}");
        let t = wait_for(Duration::from_secs(30), &format!("new {dev}"), || {
            stored_time(&d, &dev)
        });
        assert_eq!(t, time_of(600 + i), "{dev}");
    }
    // A restart has nothing left to retire (the log is appended to across restarts).
    assert_eq!(d.terminate(), Some(0), "{}", d.log());
    let told = d.log().matches("draining and deleting").count();
    d.spawn();
    wait_sessions(&d, 2);
    assert_eq!(d.log().matches("draining and deleting").count(), told);
}

/// A broker that holds each session to a window of 1 (a receive maximum of 1) is met with a few
/// hundred sessions of one shared group, the setting the README gives for it: every session
/// connects, and every message is stored, whichever session the broker hands it to.
#[test]
fn a_window_of_one_over_hundreds_of_sessions_takes_every_message() {
    const SESSIONS: u16 = 256;
    let broker = Mosquitto::start();
    let config =
        mqtt_toml_sessions(&broker, SESSIONS).replace("max_inflight = 32", "max_inflight = 1");
    let d = Daemon::start(&["gt06"], &config);
    wait_subscribed(&d, &broker);
    wait_sessions(&d, SESSIONS);
    publish_now(
        broker.port,
        (0..600u32)
            .map(|i| {
                (
                    topic(&format!("74{:03}", i % 300)),
                    position(400 + i, 5.0, 6.0),
                )
            })
            .collect(),
    );
    // Each device's second message is its newest, whichever session committed first.
    for i in 0..300u32 {
        let dev = format!("74{i:03}");
        wait_for(
            Duration::from_secs(30),
            &format!("{dev} at its newest"),
            || (stored_time(&d, &dev)? == time_of(700 + i)).then_some(()),
        );
    }
    assert_eq!(
        d.metric("lienwatch_mqtt_connected", &[]),
        f64::from(SESSIONS)
    );
    // A session costs kilobytes, not the megabytes of rumqttc's default outbound window.
    let rss_kib = rss_kib(d.pid());
    assert!(rss_kib > 0, "VmRSS of the daemon unreadable");
    eprintln!("{SESSIONS} sessions: daemon RSS {} MiB", rss_kib / 1024);
    assert!(
        rss_kib < 512 * 1024,
        "RSS {rss_kib} KiB over {SESSIONS} sessions"
    );
}

#[test]
fn broker_restart_is_survived() {
    let mut broker = Mosquitto::start();
    let d = Daemon::start(&["gt06"], &mqtt_toml(&broker));
    wait_subscribed(&d, &broker);

    publish_now(broker.port, vec![(topic("6100"), position(10, 1.0, 2.0))]);
    wait_for(Duration::from_secs(10), "before the restart", || {
        (stored_time(&d, "6100")? == time_of(10)).then_some(())
    });

    broker.restart();
    // Published while lienwatch is still reconnecting: queued in its persisted session.
    publish_now(
        broker.port,
        (0..20u32)
            .map(|i| (topic(&format!("61{:02}", i)), position(100 + i, 3.0, 4.0)))
            .collect(),
    );
    for i in 0..20u32 {
        let dev = format!("61{i:02}");
        wait_for(
            Duration::from_secs(30),
            &format!("{dev} after the restart"),
            || (stored_time(&d, &dev)? == time_of(100 + i)).then_some(()),
        );
    }
    assert!(d.metric("lienwatch_mqtt_reconnects_total", &[]) >= 1.0);
    wait_for(Duration::from_secs(10), "connected gauge", || {
        (d.metric("lienwatch_mqtt_connected", &[]) == 1.0).then_some(())
    });
}

#[test]
fn raw_gt06_frames_take_the_device_id_from_the_topic() {
    let broker = Mosquitto::start();
    let d = Daemon::start(&["gt06"], &mqtt_toml(&broker));
    wait_subscribed(&d, &broker);

    // protocols.md A.6 own example 2: 0x12 location, 2024-05-20 10:30:15, Shenzhen, 60 km/h.
    let frame = lienwatch::protocol::parse_hex(
        "78 78 1F 12 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 00 03 6D E9 0D 0A",
    )
    .expect("hex");
    // A frame built by the shared helper, for a second device, an hour later.
    let frame2 = gt06_location(4, (24, 5, 20, 11, 30, 15), 22.5, 114.0);
    publish_now(
        broker.port,
        vec![
            ("raw/gt06/868120145233604".into(), frame),
            ("raw/gt06/868120145233605".into(), frame2),
        ],
    );
    let p = wait_for(Duration::from_secs(10), "the GT06 position", || {
        stored(&d, "868120145233604")
    });
    assert_eq!(p["time"], "2024-05-20T10:30:15Z");
    assert_eq!(p["lat"], 22.543096);
    assert_eq!(p["lon"], 114.057865);
    assert_eq!(p["speed_kmh"], 60.0);
    assert_eq!(p["course"], 90);
    let p = wait_for(Duration::from_secs(10), "the second GT06 position", || {
        stored(&d, "868120145233605")
    });
    assert_eq!(p["time"], "2024-05-20T11:30:15Z");
    let (_, dev) = d.api("GET", "/v1/devices/868120145233604", None);
    assert_eq!(dev["protocol"], "gt06", "{dev}");
}

#[test]
fn mqtts_with_a_private_ca_is_ingested_and_a_wrong_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path(), "good");
    let (other_ca, _, _) = make_certs(certs.path(), "other");
    let [port, tls_port] = free_ports();
    // A second listener with TLS; the tests publish on the plain one.
    let broker = Mosquitto::start_on(
        port,
        &format!(
        "max_inflight_messages 0\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let tls = |ca: &std::path::Path, id: &str| {
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nclient_id = \"{id}\"\nca_file = {:?}\n\n\
             [[mqtt.subscription]]\ntopic = \"trackers/{{device_id}}/position\"\nformat = \"json\"\n",
            ca.display().to_string()
        )
    };
    let d = Daemon::start(&["gt06"], &tls(&ca, "lienwatch-tls"));
    wait_subscribed(&d, &broker);
    publish_now(
        broker.port,
        vec![(topic("4400001"), position(5, 22.5, 114.0))],
    );
    let t = wait_for(Duration::from_secs(10), "the position over TLS", || {
        stored_time(&d, "4400001")
    });
    assert_eq!(t, time_of(5));
    assert_eq!(d.metric("lienwatch_mqtt_connected", &[]), 1.0);

    // A daemon that trusts another CA never connects, so it stores nothing.
    let wrong = Daemon::start(&["gt06"], &tls(&other_ca, "lienwatch-wrong-ca"));
    // It has tried, and failed.
    wrong.wait_metric("lienwatch_mqtt_reconnects_total", &[], |v| v >= 1.0);
    publish_now(
        broker.port,
        vec![(topic("4400002"), position(6, 22.5, 114.0))],
    );
    // Delivered to the subscribers the broker has: the daemon that trusts the right CA.
    wait_for(
        Duration::from_secs(10),
        "the second position over TLS",
        || stored_time(&d, "4400002"),
    );
    assert_eq!(wrong.metric("lienwatch_mqtt_connected", &[]), 0.0);
    assert!(stored_time(&wrong, "4400002").is_none());
}

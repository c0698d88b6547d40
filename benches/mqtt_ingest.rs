//! QoS 1 ingestion through a real mosquitto: messages per second a subscriber drains from its
//! persistent session, acknowledging each one.
//!
//! Two subscribers on the same broker in one run, same message count, same MQTT v5 receive
//! maximum (the broker's inflight window towards the subscriber):
//! - **bare**: a rumqttc v5 client that PUBACKs every message as soon as it arrives (the ceiling:
//!   broker, socket and MQTT codec only);
//! - **lienwatch**: the real MQTT source (`ingest::mqtt`) with decode, engine, sled on disk and
//!   group commit; each PUBACK only after the flush that covers it.
//!
//! The messages are queued while each subscriber is offline, then it reconnects and the clock
//! runs until it has processed them all, so the publisher's speed does not enter the figure.
//!
//! `cargo bench --bench mqtt_ingest` (env: `MESSAGES` default 20000, `DEVICES` 2000,
//! `INFLIGHT` 16, the receive maximum).

#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

use lienwatch::config::MqttConfig;
use lienwatch::engine::{Engine, EngineConfig, EngineHandle};
use lienwatch::event::Timestamp;
use lienwatch::protocol::SessionConfig;
use lienwatch::store::Store;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(n: u64) -> Vec<u8> {
    let t = 1_795_000_000 + n;
    let (h, m, s) = (t / 3600 % 24, t / 60 % 60, t % 60);
    format!(
        r#"{{"time": "2026-11-22T{h:02}:{m:02}:{s:02}Z", "lat": 22.{:06}, "lon": 114.057865, "speed_kmh": 42.0, "course": 90}}"#,
        n % 1_000_000
    )
    .into_bytes()
}

/// Publishes `n` QoS 1 messages under `prefix/<device>/position` and waits for the broker's acks.
async fn publish(port: u16, prefix: &str, n: u64, devices: u64) {
    let mut opts = rumqttc::MqttOptions::new(format!("bench-pub-{prefix}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10))
        .set_inflight(200);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 256);
    let prefix = prefix.to_string();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let topic = format!("{prefix}/{}/position", 100_000 + i % devices);
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload(i))
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match el.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    let client = sender.await.expect("sender");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
}

fn bare_options(port: u16, inflight: u16) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new("bench-bare", "127.0.0.1", port);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_receive_maximum(Some(inflight))
        .set_max_packet_size(Some(256 * 1024))
        .set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true);
    o
}

/// The baseline: drains `n` queued messages, acking each at once. Returns messages/s.
async fn bare(port: u16, n: u64, devices: u64, inflight: u16) -> f64 {
    // Create the session and its subscription, then leave.
    {
        let (client, mut el) = rumqttc::v5::AsyncClient::new(bare_options(port, inflight), 64);
        client
            .subscribe("bare/+/position", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        loop {
            if let Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                break;
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    }
    publish(port, "bare", n, devices).await;
    let (client, mut el) =
        rumqttc::v5::AsyncClient::new(bare_options(port, inflight), inflight as usize + 16);
    let start = Instant::now();
    let (mut got, mut acks_out, mut max_outstanding) = (0u64, 0u64, 0u64);
    // rumqttc's poll returns buffered packets before it drains requests, so the request channel
    // can fill; acks that do not fit wait here, in order, and go first on the next turn.
    let mut waiting: std::collections::VecDeque<rumqttc::v5::mqttbytes::v5::Publish> =
        Default::default();
    while acks_out < n {
        while let Some(p) = waiting.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            waiting.pop_front();
        }
        match el.poll().await {
            Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                got += 1;
                max_outstanding = max_outstanding.max(got - acks_out);
                if !waiting.is_empty() || client.try_ack(&p).is_err() {
                    waiting.push_back(p);
                }
            }
            Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::PubAck(_))) => acks_out += 1,
            Ok(_) => {}
            Err(e) => panic!("bare subscriber: {e}"),
        }
    }
    println!("bare: at most {max_outstanding} messages unacknowledged at once (receive maximum {inflight})");
    let secs = start.elapsed().as_secs_f64();
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    n as f64 / secs
}

async fn events(h: &EngineHandle) -> u64 {
    h.run(lienwatch::engine::control::GetStats)
        .await
        .map(|s| s.events)
        .unwrap_or(0)
}

/// lienwatch's MQTT source, in process, draining the same number of queued messages.
async fn lienwatch(port: u16, n: u64, devices: u64, inflight: u16) -> f64 {
    let cfg: MqttConfig = toml::from_str(&format!(
        "url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench-lienwatch\"\nmax_inflight = {inflight}\n\
         [[subscription]]\ntopic = \"lw/{{device_id}}/position\"\nformat = \"json\"\n"
    ))
    .expect("mqtt config");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64).expect("store");
    let ecfg = EngineConfig {
        rules: Default::default(),
        accept_unknown: true,
        max_future: Duration::from_secs(600),
        commit_window: Duration::ZERO,
        webhooks: Vec::new(),
    };
    let outbox = store
        .open_outbox(&[], Arc::new(Timestamp::now))
        .expect("outbox");
    let engine = Engine::open(store, outbox, ecfg, Timestamp::now()).expect("engine");
    let (handle, _thread) =
        lienwatch::engine::spawn(engine, Arc::new(Timestamp::now)).expect("engine thread");
    let scfg = SessionConfig {
        admit: handle.admission.clone(),
        ..SessionConfig::default()
    };

    // First run: creates the session; a probe proves the subscription is live.
    let stop = CancellationToken::new();
    let task = lienwatch::ingest::mqtt::spawn(&cfg, scfg.clone(), handle.clone(), stop.clone())
        .expect("mqtt source");
    let mut probes = 0;
    while events(&handle).await == 0 {
        probes += 1;
        publish(port, "lw", 1, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let _ = task.await;
    let base = events(&handle).await;
    let _ = probes;

    publish(port, "lw", n, devices).await;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = lienwatch::ingest::mqtt::spawn(&cfg, scfg, handle.clone(), stop.clone())
        .expect("mqtt source");
    while events(&handle).await < base + n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    let _ = task.await;
    handle.shutdown().await;
    n as f64 / secs
}

fn main() {
    // `cargo test --benches` runs this too; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("mqtt_ingest: skipped (run with cargo bench --bench mqtt_ingest)");
        return;
    }
    let n = env("MESSAGES", 20_000);
    let devices = env("DEVICES", 2_000).max(1);
    let inflight = env("INFLIGHT", 16).clamp(1, u16::MAX as u64) as u16;
    let broker = mosquitto::Mosquitto::start_with(&format!(
        "max_inflight_messages {}\n",
        env("BROKER_INFLIGHT", 0)
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let bare_rate = bare(broker.port, n, devices, inflight).await;
        println!(
            "bare rumqttc subscriber : {n} msgs, {bare_rate:>9.0} msgs/s (receive maximum {inflight})"
        );
        let lw_rate = lienwatch(broker.port, n, devices, inflight).await;
        println!(
            "lienwatch (durable acks): {n} msgs, {lw_rate:>9.0} msgs/s (receive maximum {inflight})"
        );
        println!("ratio lienwatch / bare = {:.2}", lw_rate / bare_rate);
        drop(broker);
    });
}

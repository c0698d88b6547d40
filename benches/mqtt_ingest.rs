//! QoS 1 ingestion through a real mosquitto: messages per second a subscriber drains,
//! acknowledging each one.
//!
//! Two subscribers on the same broker in one run, same message count, same MQTT v5 receive
//! maximum and the same number of sessions (one shared-subscription group when more than one):
//! - **bare**: rumqttc v5 clients that PUBACK every message as soon as it arrives (the ceiling:
//!   broker, socket and MQTT codec only);
//! - **lienwatch**: the real MQTT source (`ingest::mqtt`) with decode, engine, sled on disk and
//!   group commit; each PUBACK only after the flush that covers it. The daemon's background passes
//!   (history log drain, device log fold) run beside it, and the commit window is the daemon's
//!   default (`COMMIT_WINDOW_US` sets another).
//!
//! Two modes (`MODE`):
//! - `queued` (default): the messages are queued while the subscriber is offline, then it
//!   reconnects and the clock runs until it has processed them all, so the publisher's speed
//!   does not enter the figure. mosquitto 2.0 sends a resumed session's whole queue at once,
//!   whatever the receive maximum or `max_inflight_messages`: the window is not honoured.
//! - `live`: the subscriber is connected and the publishers start with the clock; mosquitto then
//!   holds each session to min(receive maximum, `max_inflight_messages`).
//!
//! Each run prints the most messages a bare session had unacknowledged at once (the window the
//! broker really used), and each side's CPU per message: this process's (the publishers and that
//! side's subscriber) and the broker's.
//!
//! Bare and lienwatch alternate for `ROUNDS` rounds; each round's ratio is printed, then their
//! median.
//!
//! `cargo bench --bench mqtt_ingest` (env: `MESSAGES` default 20000, `DEVICES` 2000, `INFLIGHT`
//! 4096 (the receive maximum), `SESSIONS` 1 (up to 1024, the cap on `mqtt.sessions`),
//! `BROKER_INFLIGHT` 0 (mosquitto's `max_inflight_messages`, 0 = no cap), `MODE` queued | live,
//! `PUBLISHERS` 4, `ROUNDS` 3, `COMMIT_WINDOW_US` the daemon's default).

#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;
#[path = "common/proc_cpu.rs"]
mod proc_cpu;

use lienwatch::config::MqttConfig;
use lienwatch::engine::{Engine, EngineConfig};
use lienwatch::event::Timestamp;
use lienwatch::protocol::SessionConfig;
use lienwatch::store::Store;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The daemon's allocator (`src/main.rs`), so that the ingest path is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Setup {
    port: u16,
    /// The round: client ids and topics are per round, so that no round inherits another's
    /// sessions or queues.
    round: u32,
    n: u64,
    devices: u64,
    inflight: u16,
    sessions: u16,
    publishers: u64,
    live: bool,
    /// The broker's process, whose CPU each side's figure includes.
    broker_pid: u32,
}

/// What one side's measured window cost: wall time, and CPU seconds of this process (the
/// publishers and the side's subscriber) and of the broker.
#[derive(Clone, Copy)]
struct Cost {
    secs: f64,
    own_cpu: f64,
    broker_cpu: f64,
}

/// The clock and the two CPU counters at the start of a measured window.
struct Meter {
    start: Instant,
    own: f64,
    broker: f64,
    broker_pid: u32,
}

impl Meter {
    fn start(s: Setup) -> Meter {
        Meter {
            start: Instant::now(),
            own: proc_cpu::cpu_secs("self"),
            broker: proc_cpu::cpu_secs(&s.broker_pid.to_string()),
            broker_pid: s.broker_pid,
        }
    }

    fn stop(&self) -> Cost {
        Cost {
            secs: self.start.elapsed().as_secs_f64(),
            own_cpu: proc_cpu::cpu_secs("self") - self.own,
            broker_cpu: proc_cpu::cpu_secs(&self.broker_pid.to_string()) - self.broker,
        }
    }
}

impl Cost {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }

    /// CPU microseconds per message: this process's, the broker's.
    fn per_message_us(&self, n: u64) -> (f64, f64) {
        let per = |cpu: f64| cpu * 1e6 / n as f64;
        (per(self.own_cpu), per(self.broker_cpu))
    }
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

/// One publisher: messages `from..to` under `prefix/<device>/position`, until the broker acked
/// them all.
async fn publish_range(port: u16, id: String, prefix: String, from: u64, to: u64, devices: u64) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10))
        .set_inflight(200);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 256);
    let sender = tokio::spawn(async move {
        for i in from..to {
            let topic = format!("{prefix}/{}/position", 100_000 + i % devices);
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload(i))
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = from;
    while acked < to {
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

/// Publishes `n` QoS 1 messages from `publishers` connections at once.
async fn publish(s: Setup, prefix: String, n: u64) {
    let per = n.div_ceil(s.publishers.max(1));
    let tasks: Vec<_> = (0..s.publishers.max(1))
        .map(|p| {
            let (from, to) = (p * per, ((p + 1) * per).min(n));
            tokio::spawn(publish_range(
                s.port,
                format!("bench-pub-{prefix}-{p}"),
                prefix.clone(),
                from,
                to,
                s.devices,
            ))
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher");
    }
}

fn bare_options(s: Setup, index: u16) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(
        format!("bench-bare-{}-{index}", s.round),
        "127.0.0.1",
        s.port,
    );
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_receive_maximum(Some(s.inflight))
        .set_max_packet_size(Some(256 * 1024))
        .set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true)
        // As lienwatch's sessions (`ingest::mqtt`): a subscriber's slots for outbound publishes.
        .set_outgoing_inflight_upper_limit(16);
    o
}

fn bare_filter(s: Setup) -> String {
    if s.sessions > 1 {
        format!("$share/bare/bare{}/+/position", s.round)
    } else {
        format!("bare{}/+/position", s.round)
    }
}

/// Connects bare session `index` and subscribes; returns once the broker confirmed.
async fn bare_connect(s: Setup, index: u16) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let (client, mut el) =
        rumqttc::v5::AsyncClient::new(bare_options(s, index), s.inflight as usize + 16);
    client
        .subscribe(bare_filter(s), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        match el.poll().await {
            Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("bare subscriber: {e}"),
        }
    }
    (client, el)
}

/// Drains one bare session, acking each message at once, until `stop`. Returns the most
/// messages it had unacknowledged at once.
async fn bare_drain(
    client: rumqttc::v5::AsyncClient,
    mut el: rumqttc::v5::EventLoop,
    acked: Arc<AtomicU64>,
    stop: CancellationToken,
) -> u64 {
    let (mut got, mut acks_out, mut max_outstanding) = (0u64, 0u64, 0u64);
    // rumqttc's poll returns buffered packets before it drains requests, so the request channel
    // can fill; acks that do not fit wait here, in order, and go first on the next turn.
    let mut waiting: VecDeque<Publish> = VecDeque::new();
    loop {
        while let Some(p) = waiting.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            waiting.pop_front();
        }
        let r = tokio::select! {
            _ = stop.cancelled() => break,
            r = el.poll() => r,
        };
        match r {
            Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                got += 1;
                max_outstanding = max_outstanding.max(got - acks_out);
                if !waiting.is_empty() || client.try_ack(&p).is_err() {
                    waiting.push_back(p);
                }
            }
            Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::PubAck(_))) => {
                acks_out += 1;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => panic!("bare subscriber: {e}"),
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    max_outstanding
}

/// The baseline: `sessions` bare subscribers drain `n` messages. Returns what that cost and the
/// most messages one session had unacknowledged at once.
async fn bare(s: Setup) -> (Cost, u64) {
    let mut conns = Vec::new();
    for i in 0..s.sessions {
        conns.push(bare_connect(s, i).await);
    }
    if !s.live {
        // Leave, so that the messages queue in the persistent sessions.
        for (client, mut el) in conns.drain(..) {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
        }
        publish(s, format!("bare{}", s.round), s.n).await;
        for i in 0..s.sessions {
            let o = bare_options(s, i);
            conns.push(rumqttc::v5::AsyncClient::new(o, s.inflight as usize + 16));
        }
    }
    let acked = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let meter = Meter::start(s);
    let drains: Vec<_> = conns
        .into_iter()
        .map(|(c, el)| tokio::spawn(bare_drain(c, el, acked.clone(), stop.clone())))
        .collect();
    let publisher = s
        .live
        .then(|| tokio::spawn(publish(s, format!("bare{}", s.round), s.n)));
    while acked.load(Ordering::Relaxed) < s.n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cost = meter.stop();
    stop.cancel();
    let mut max_outstanding = 0;
    for d in drains {
        max_outstanding = max_outstanding.max(d.await.expect("bare session"));
    }
    if let Some(p) = publisher {
        p.await.expect("publisher");
    }
    (cost, max_outstanding)
}

/// Counts lienwatch's acknowledged messages (`lienwatch_mqtt_messages_total{outcome="stored"}`
/// goes up as each PUBACK is queued), the same finish line as the bare side's ack count, and
/// without asking the engine anything while it is being measured.
struct AckCount(Arc<AtomicU64>);

impl metrics::Recorder for AckCount {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let stored = key.name() == "lienwatch_mqtt_messages_total"
            && key
                .labels()
                .any(|l| l.key() == "outcome" && l.value() == "stored");
        if stored {
            metrics::Counter::from_arc(self.0.clone())
        } else {
            metrics::Counter::noop()
        }
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// lienwatch's MQTT source, in process, draining the same number of messages.
async fn lienwatch(s: Setup, acked: &AtomicU64) -> Cost {
    let cfg: MqttConfig = toml::from_str(&format!(
        "url = \"mqtt://127.0.0.1:{}\"\nclient_id = \"bench-lienwatch-{}\"\nmax_inflight = {}\nsessions = {}\n\
         [[subscription]]\ntopic = \"lw{}/{{device_id}}/position\"\nformat = \"json\"\n",
        s.port, s.round, s.inflight, s.sessions, s.round
    ))
    .expect("mqtt config");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64).expect("store");
    let defaults = EngineConfig::from_config(&Default::default(), Vec::new());
    let upkeep = CancellationToken::new();
    // With the daemon's default retention.
    let retention = lienwatch::config::Config::default()
        .storage
        .history_retention;
    let passes = lienwatch::daemon::upkeep::spawn(&store, retention, upkeep.clone());
    let ecfg = EngineConfig {
        commit_window: std::env::var("COMMIT_WINDOW_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(defaults.commit_window, Duration::from_micros),
        ..defaults
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
    let lw = format!("lw{}", s.round);
    let probe = Setup {
        n: 1,
        devices: 1,
        publishers: 1,
        ..s
    };

    // Creates the sessions; probes prove subscriptions are live (one per session, roughly:
    // a shared group hands them round).
    let start = || {
        let stop = CancellationToken::new();
        let task = lienwatch::ingest::mqtt::spawn(
            &cfg,
            scfg.clone(),
            handle.clone(),
            stop.clone(),
            None,
            |_| {},
        )
        .expect("mqtt source");
        (task, stop)
    };
    let (task, stop) = start();
    let before = acked.load(Ordering::Relaxed);
    while acked.load(Ordering::Relaxed) < before + 2 * s.sessions as u64 {
        publish(probe, lw.clone(), 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (task, stop) = if s.live {
        (task, stop)
    } else {
        stop.cancel();
        let _ = task.await;
        publish(s, lw.clone(), s.n).await;
        start()
    };
    let base = acked.load(Ordering::Relaxed);
    let meter = Meter::start(s);
    let publisher = s.live.then(|| tokio::spawn(publish(s, lw.clone(), s.n)));
    while acked.load(Ordering::Relaxed) < base + s.n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cost = meter.stop();
    if let Some(p) = publisher {
        p.await.expect("publisher");
    }
    stop.cancel();
    let _ = task.await;
    let _ = handle.shutdown().await;
    // The passes end before the database's folder goes.
    upkeep.cancel();
    passes.all_stopped().await;
    cost
}

fn main() {
    // `cargo test --benches` runs this too; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("mqtt_ingest: skipped (run with cargo bench --bench mqtt_ingest)");
        return;
    }
    let broker_inflight = env("BROKER_INFLIGHT", 0);
    let broker =
        mosquitto::Mosquitto::start_with(&format!("max_inflight_messages {broker_inflight}\n"));
    let live = match std::env::var("MODE").as_deref() {
        Ok("live") => true,
        Ok("queued") | Err(_) => false,
        Ok(other) => panic!("MODE={other}: expected queued or live"),
    };
    let rounds = env("ROUNDS", 3).max(1) as u32;
    let acked = Arc::new(AtomicU64::new(0));
    if metrics::set_global_recorder(AckCount(acked.clone())).is_err() {
        panic!("a metrics recorder is already installed");
    }
    let s = Setup {
        port: broker.port,
        round: 0,
        n: env("MESSAGES", 20_000),
        devices: env("DEVICES", 2_000).max(1),
        inflight: env("INFLIGHT", 4096).clamp(1, u16::MAX as u64) as u16,
        sessions: env("SESSIONS", 1).clamp(1, 1024) as u16,
        publishers: env("PUBLISHERS", 4).max(1),
        live,
        broker_pid: broker.pid().expect("mosquitto runs"),
    };
    println!(
        "{} msgs, {} mode, receive maximum {}, broker max_inflight_messages {broker_inflight}, {} session(s), {rounds} rounds",
        s.n,
        if live { "live" } else { "queued" },
        s.inflight,
        s.sessions
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Bare and lienwatch alternate, so that a change in the machine's load hits both.
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let s = Setup { round, ..s };
            let (bare_cost, outstanding) = bare(s).await;
            let lw_cost = lienwatch(s, &acked).await;
            let (bare_rate, lw_rate) = (bare_cost.rate(s.n), lw_cost.rate(s.n));
            let ratio = lw_rate / bare_rate;
            let (bare_own, bare_broker) = bare_cost.per_message_us(s.n);
            let (lw_own, lw_broker) = lw_cost.per_message_us(s.n);
            println!(
                "round {round}: bare {bare_rate:>7.0} msgs/s (at most {outstanding} unacknowledged on one session), lienwatch {lw_rate:>7.0} msgs/s, ratio {ratio:.2}; \
                 CPU per message, bench process + broker: bare {bare_own:.1} + {bare_broker:.1} us, lienwatch {lw_own:.1} + {lw_broker:.1} us"
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "ratio lienwatch / bare: median {:.2} (min {:.2}, max {:.2}) over {rounds} rounds",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
        drop(broker);
    });
}

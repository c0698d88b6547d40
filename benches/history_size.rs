//! Bytes on disk per stored fix: a simulated fleet's history written as the daemon writes it
//! (one recent key per fix in each commit, sealed into blocks by the upkeep pass once their
//! bucket is over), then measured on disk. The same fixes kept the simple way (one sled key per
//! fix, never sealed) give the figure sled alone would cost.
//!
//! `cargo bench --bench history_size` (env: `CARS` default 10000, `DAYS` default 30, `SLED_CARS`
//! default 1000: the cars of the one-key-per-fix comparison, 0 to skip it; `TRACE` prints the
//! sizes after each simulated day).
//!
//! Each car's day: two 40-minute trips reporting every 15 s (wired units report fast while the
//! ignition is on), parked the rest of the day with a fix every 30 minutes; GPS noise of a few
//! metres, speed, course and satellites as real fixes carry them.

use lienwatch::event::DeviceId;
use lienwatch::history::HistoryFix;
use lienwatch::store::{Store, StoredPosition};
use lienwatch::time::Timestamp;
use std::time::{Duration, Instant};

const DAY_S: i64 = 86_400;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One car's fixes with `from <= time < to` (seconds), in time order.
fn car_fixes(rng: &mut fastrand::Rng, car: usize, from: i64, to: i64, out: &mut Vec<HistoryFix>) {
    let home = (
        22.3 + (car % 400) as f64 * 1e-3,
        113.8 + (car / 400) as f64 * 1e-3,
    );
    let mut t = from;
    while t < to {
        let sod = t.rem_euclid(DAY_S);
        // Trips at 08:00 and 18:00 local, 40 minutes each.
        let trip = [8 * 3600, 18 * 3600]
            .iter()
            .find(|&&s| sod >= s && sod < s + 2400)
            .copied();
        let (lat, lon, speed, step) = match trip {
            Some(s) => {
                let k = (sod - s) as f64 / 2400.0;
                let k = if s == 18 * 3600 { 1.0 - k } else { k };
                (
                    home.0 + 0.08 * k,
                    home.1 + 0.05 * k,
                    30.0 + rng.f64() * 40.0,
                    15,
                )
            }
            None => (
                home.0 + 0.08 * (sod > 9 * 3600 && sod < 18 * 3600) as u8 as f64,
                home.1,
                0.0,
                1800,
            ),
        };
        let received = t * 1000 + 800 + rng.i64(0..1500);
        out.push(HistoryFix {
            pos: StoredPosition {
                time: Timestamp::from_secs(t),
                lat: lat + rng.f64() * 4e-5,
                lon: lon + rng.f64() * 4e-5,
                valid: true,
                speed_kmh: speed,
                course: rng.u16(0..360),
                satellites: Some(rng.u8(6..14)),
                altitude_m: None,
                received_at: Timestamp::from_millis(received),
                cell: None,
                wifi: None,
            },
            suspect_future: false,
        });
        // The next trip starts on time even from a parked interval.
        let next = t + step;
        let next_trip = [8 * 3600, 18 * 3600]
            .iter()
            .map(|s| t - sod + s)
            .find(|&s| s > t && s < next);
        t = next_trip.unwrap_or(next);
    }
}

/// Bytes the files under `p` take on disk: allocated blocks, as `du` counts them (sled punches
/// holes into the segments it frees, so their apparent length overstates what they hold).
fn dir_bytes(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            n += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.blocks() * 512
            };
        }
    }
    n
}

/// What one simulated fleet left behind.
struct Sim {
    fixes: u64,
    payload: u64,
    disk: u64,
    /// Of `disk`: the day files of sealed blocks, and their index database.
    blocks: u64,
    index: u64,
    secs: f64,
}

/// Writes `cars` x `days` of fixes an hour at a time; `seal` runs the upkeep pass after each
/// hour, as the daemon's (every ten minutes) would, sealing buckets an hour after they end.
fn simulate(cars: usize, days: usize, seal: bool) -> Sim {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64).expect("store");
    let h = store.history().clone();
    let ids: Vec<DeviceId> = (0..cars)
        .map(|i| DeviceId::new(&format!("8681200{i:08}")))
        .collect();
    let start = Timestamp::now().secs() / DAY_S * DAY_S - days as i64 * DAY_S;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut fixes = Vec::new();
    let mut total = 0u64;
    let began = Instant::now();
    let window = 3600;
    let mut w = start;
    while w < start + days as i64 * DAY_S {
        let mut batch = lienwatch::history::Staged::default();
        let mut in_batch = 0;
        for (car, id) in ids.iter().enumerate() {
            fixes.clear();
            car_fixes(&mut rng, car, w, w + window, &mut fixes);
            for f in &fixes {
                h.stage(&mut batch, id, f);
                in_batch += 1;
            }
            total += fixes.len() as u64;
            // A group commit's worth.
            if in_batch >= 2_000 {
                h.apply(std::mem::take(&mut batch)).expect("apply");
                store.flush().expect("commit");
                h.drain_log(usize::MAX).expect("drain");
                in_batch = 0;
            }
        }
        h.apply(batch).expect("apply");
        store.flush().expect("commit");
        h.drain_log(usize::MAX).expect("drain");
        w += window;
        if seal {
            // The upkeep: buckets sealed an hour after they end.
            while h
                .compact(Timestamp::from_secs(w - 3600), 500_000)
                .expect("compact")
                .fixes
                > 0
            {}
        }
        if std::env::var_os("TRACE").is_some() && (w - start) % DAY_S == 0 {
            let main = dir_bytes(dir.path()) - dir_bytes(&dir.path().join("history"));
            let (recent, _) = h.payload_bytes();
            eprintln!(
                "day {}: {total} fixes, main sled {:.1} MB (recent payload {:.1} MB), day files \
                 {:.1} MB, their index {:.1} MB",
                (w - start) / DAY_S,
                main as f64 / 1e6,
                recent as f64 / 1e6,
                h.blocks_disk_bytes() as f64 / 1e6,
                dir_bytes(&dir.path().join("history").join("index")) as f64 / 1e6,
            );
        }
    }
    store.flush().expect("flush");
    let secs = began.elapsed().as_secs_f64();
    let (recent, blocks) = h.payload_bytes();
    let blocks_disk = h.blocks_disk_bytes();
    let index = dir_bytes(&dir.path().join("history").join("index"));
    drop(h);
    drop(store);
    Sim {
        fixes: total,
        payload: recent + blocks,
        disk: dir_bytes(dir.path()),
        blocks: blocks_disk,
        index,
        secs,
    }
}

/// A car reporting every 10 s for 30 days, written and sealed as the daemon would, then the
/// two reads a collections officer makes: one day's track, and 30 days of places.
fn reads() {
    use lienwatch::engine::places::PlacesJob;
    use lienwatch::history::track::{self, TrackQuery};
    use lienwatch::places::synthetic::{life, LifeConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64).expect("store");
    let h = store.history().clone();
    let id = DeviceId::new("868120000000001");
    let l = life(&LifeConfig::dense(3, 30, 10));
    for chunk in l.fixes.chunks(2_000) {
        let mut staged = lienwatch::history::Staged::default();
        for f in chunk {
            let fix = HistoryFix {
                pos: StoredPosition {
                    time: f.time,
                    lat: f.lat,
                    lon: f.lon,
                    valid: f.valid && !f.lbs,
                    speed_kmh: 30.0,
                    course: 90,
                    satellites: Some(9),
                    altitude_m: None,
                    received_at: f.time.add_millis(1_200),
                    cell: None,
                    wifi: None,
                },
                suspect_future: false,
            };
            h.stage(&mut staged, &id, &fix);
        }
        h.apply(staged).expect("apply");
        store.flush().expect("commit");
        h.drain_log(usize::MAX).expect("drain");
    }
    while h
        .compact(l.now.add_millis(-3_600_000), 500_000)
        .expect("compact")
        .fixes
        > 0
    {}
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let q =
        TrackQuery::parse(&id.to_string(), None, None, Some("100000"), None, l.now).expect("query");
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let fixes = track::read(&h, &q, Duration::from_secs(180 * 86_400), l.now).expect("track");
        let (body, _) = track::render(&q, &fixes);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        n = fixes.len();
        std::hint::black_box(body);
    }
    println!(
        "one-day track of a car reporting every 10 s: {n} positions read and written as JSON in {:.1} ms (median of 21)",
        median(times)
    );
    let job = PlacesJob {
        vehicle_id: "V-1".into(),
        days: 30,
        devices: vec![id.clone()],
        params: lienwatch::places::Params::from_rules(
            200.0,
            Duration::from_secs(1200),
            "Asia/Shanghai",
        )
        .expect("params"),
        timezone: "Asia/Shanghai".into(),
        retention: Duration::from_secs(180 * 86_400),
        last_heard: Default::default(),
        bound_since: Default::default(),
        newest_fix: Default::default(),
        fix_is_last_word: Default::default(),
    };
    let mut times = Vec::new();
    let mut places = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let r = lienwatch::history::places::run(&h, &job, l.now).expect("places");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        places = r.places.places.len();
    }
    println!(
        "places over 30 days of that car ({} fixes, {places} places): {:.1} ms (median of 7)",
        l.fixes.len(),
        median(times)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("history_size: skipped (run with cargo bench --bench history_size)");
        return;
    }
    reads();
    let cars = env("CARS", 10_000);
    let days = env("DAYS", 30);
    let sled_cars = env("SLED_CARS", 1_000);
    let a = simulate(cars, days, true);
    let per = |v: u64, s: &Sim| v as f64 / s.fixes as f64;
    println!(
        "lienwatch history, {cars} cars x {days} days: {} fixes in {:.0} s ({:.0} fixes/s); \
         payload {:.1} bytes/fix, on disk {:.1} bytes/fix ({:.2} GB: sealed-block day files {:.1}, \
         their index {:.1}, the main sled database {:.1} bytes/fix)",
        a.fixes,
        a.secs,
        a.fixes as f64 / a.secs,
        per(a.payload, &a),
        per(a.disk, &a),
        a.disk as f64 / 1e9,
        per(a.blocks, &a),
        per(a.index, &a),
        per(a.disk - a.blocks - a.index, &a),
    );
    if sled_cars == 0 {
        return;
    }
    let b = simulate(sled_cars, days, false);
    println!(
        "one sled key per fix, {sled_cars} cars x {days} days: {} fixes; payload {:.1} bytes/fix, \
         on disk {:.1} bytes/fix",
        b.fixes,
        per(b.payload, &b),
        per(b.disk, &b)
    );
    println!(
        "sealed blocks / one key per fix, on disk: {:.2}",
        per(a.disk, &a) / per(b.disk, &b)
    );
}

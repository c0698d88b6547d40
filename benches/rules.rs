//! Rules engine cost at fleet scale.
//!
//! World: 100,000 registered vehicles (50,000 circles, 49,900 ten-vertex polygons, 100
//! 5,000-vertex polygons, all loans overdue so every position also moves a silence deadline) and a
//! silence tracker holding 1,000,000 devices.
//!
//! Reports (a) the per-position cost of `Rules::on_event` for inside and outside fixes, per fence
//! kind; (b) the cost of one `SilenceTracker::set` at 1M devices; (c) the heap bytes per device
//! of the tracker, measured with a counting global allocator (printed before the benchmarks).
//!
//! Run: `cargo bench --bench rules` (medians: `target/criterion/<group>/<bench>/new/estimates.json`).

use criterion::Criterion;
use lienwatch::event::{DeviceId, Event, EventKind, Fix, Position, Protocol, Timestamp};
use lienwatch::registry::Vehicle;
use lienwatch::rules::{
    DeviceRuleState, FencePlacement, RuleConfig, Rules, SilenceTracker, VehicleContext,
};
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes so that the bench can report what a structure really costs.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const T0: i64 = 1_795_305_600_000;
const VEHICLES: usize = 100_000;
const BIG: usize = 100;
const SMALL: usize = 49_900;
const TRACKED: usize = 1_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Circle,
    Poly10,
    Poly5000,
}

struct Car {
    kind: Kind,
    center: (f64, f64),
    /// Radius in degrees of latitude (polygons) used to place test fixes.
    r: f64,
}

/// A star-shaped (hence simple) ring of `n` vertices around `c`.
fn star_ring(rng: &mut fastrand::Rng, c: (f64, f64), r: f64, n: usize) -> Vec<[f64; 2]> {
    let kx = c.1.to_radians().cos();
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            let rr = r * (0.9 + 0.08 * (7.0 * a).sin() + 0.02 * rng.f64());
            [c.0 + rr * a.cos() / kx, c.1 + rr * a.sin()]
        })
        .collect();
    ring.push(ring[0]);
    ring
}

fn device_id(i: usize) -> DeviceId {
    DeviceId::new(&(860_000_000_000_000u64 + i as u64).to_string())
}

fn body(id: &DeviceId, fence: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "loan": {"id": "L", "status": "overdue", "days_past_due": 30},
        "devices": [{"id": id.as_str(), "kind": "wired"}],
        "geofence": fence,
    }))
    .unwrap_or_default()
}

struct World {
    rules: Rules,
    vehicles: Vec<Vehicle>,
    cars: Vec<Car>,
    states: Vec<DeviceRuleState>,
    ids: Vec<DeviceId>,
}

fn build_world() -> World {
    let mut rng = fastrand::Rng::with_seed(7);
    let rules = Rules::new(RuleConfig::default(), Timestamp(T0));
    let mut vehicles = Vec::with_capacity(VEHICLES);
    let mut cars = Vec::with_capacity(VEHICLES);
    let mut ids = Vec::with_capacity(VEHICLES);
    let t = Instant::now();
    let mut big_build = Duration::ZERO;
    for i in 0..VEHICLES {
        let id = device_id(i);
        let center = (100.0 + rng.f64() * 20.0, 20.0 + rng.f64() * 20.0);
        let (kind, r, fence) = if i < BIG {
            let r = 0.3;
            (
                Kind::Poly5000,
                r,
                json!({"type": "Polygon", "coordinates": [star_ring(&mut rng, center, r, 5000)]}),
            )
        } else if i < BIG + SMALL {
            let r = 0.02;
            (
                Kind::Poly10,
                r,
                json!({"type": "Polygon", "coordinates": [star_ring(&mut rng, center, r, 10)]}),
            )
        } else {
            (
                Kind::Circle,
                2000.0 / 111_195.0,
                json!({"type": "Circle", "center": [center.0, center.1], "radius_m": 2000}),
            )
        };
        let b = body(&id, fence);
        let ts = Instant::now();
        let v = Vehicle::from_json(&format!("V-{i}"), &b).expect("generated vehicle is valid");
        if kind == Kind::Poly5000 {
            big_build += ts.elapsed();
        }
        vehicles.push(v);
        cars.push(Car { kind, center, r });
        ids.push(id);
    }
    println!(
        "setup: {VEHICLES} vehicles parsed and validated in {:.1?}; 5,000-vertex fence PUT \
         (parse + validate + index) {:.2?} each",
        t.elapsed(),
        big_build / BIG as u32
    );
    let mut states = Vec::with_capacity(VEHICLES);
    for (v, id) in vehicles.iter().zip(&ids) {
        let mut st = DeviceRuleState::default();
        if let Some(ctx) = VehicleContext::new(v, id) {
            rules.on_registered(ctx, &mut st, Timestamp(T0));
        }
        states.push(st);
    }
    World {
        rules,
        vehicles,
        cars,
        states,
        ids,
    }
}

fn fix_event(id: &DeviceId, lon: f64, lat: f64, t: i64) -> Event {
    Event {
        device_id: id.clone(),
        protocol: Protocol::Gt06,
        kind: EventKind::Position(Fix::live(Position {
            time: Timestamp(t),
            lat,
            lon,
            valid: true,
            ..Default::default()
        })),
    }
}

/// Events for random vehicles of `kind`, inside (near the centre) or outside (1.1 to 1.6 radii
/// out, random bearing: some in the bounding box, some beyond).
fn events(w: &World, rng: &mut fastrand::Rng, kind: Kind, inside: bool) -> Vec<(usize, Event)> {
    let pool: Vec<usize> = (0..VEHICLES).filter(|&i| w.cars[i].kind == kind).collect();
    (0..4096)
        .map(|n| {
            let v = pool[rng.usize(..pool.len())];
            let c = &w.cars[v];
            let kx = c.center.1.to_radians().cos();
            let a = rng.f64() * std::f64::consts::TAU;
            let d = if inside {
                c.r * 0.5 * rng.f64()
            } else {
                c.r * (1.1 + 0.5 * rng.f64())
            };
            let lon = c.center.0 + d * a.cos() / kx;
            let lat = c.center.1 + d * a.sin();
            (v, fix_event(&w.ids[v], lon, lat, T0 + 1000 + n as i64))
        })
        .collect()
}

fn bench_positions(c: &mut Criterion, w: &mut World) {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut g = c.benchmark_group("on_event");
    for (name, kind, inside, placement) in [
        ("inside/circle", Kind::Circle, true, FencePlacement::Inside),
        ("inside/poly10", Kind::Poly10, true, FencePlacement::Inside),
        (
            "inside/poly5000",
            Kind::Poly5000,
            true,
            FencePlacement::Inside,
        ),
        (
            "outside/circle",
            Kind::Circle,
            false,
            FencePlacement::Outside,
        ),
        (
            "outside/poly10",
            Kind::Poly10,
            false,
            FencePlacement::Outside,
        ),
        // Steady state of an excursion: containment only.
        (
            "outside/poly5000",
            Kind::Poly5000,
            false,
            FencePlacement::Outside,
        ),
        // The fix that decides an exit: containment + nearest boundary + alert draft.
        (
            "exit/poly5000",
            Kind::Poly5000,
            false,
            FencePlacement::Inside,
        ),
    ] {
        let evs = events(w, &mut rng, kind, inside);
        let World {
            rules,
            vehicles,
            states,
            ..
        } = &mut *w;
        for (v, _) in &evs {
            states[*v].placement = placement;
            states[*v].fence_fix_time = None;
        }
        let mut i = 0usize;
        let reset = placement == FencePlacement::Inside && !inside;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                let (v, ev) = &evs[i];
                let st = &mut states[*v];
                if reset {
                    st.placement = FencePlacement::Inside;
                }
                st.fence_fix_time = None;
                let ctx = VehicleContext::at(&vehicles[*v], 0);
                black_box(rules.on_event(ctx, st, ev, Timestamp(T0 + 2000)))
            })
        });
    }
    g.finish();
}

fn bench_locate(c: &mut Criterion, w: &World) {
    let mut rng = fastrand::Rng::with_seed(13);
    let mut g = c.benchmark_group("fence");
    for (name, inside) in [
        ("locate_measured/poly5000/inside", true),
        ("locate_measured/poly5000/outside", false),
    ] {
        let evs = events(w, &mut rng, Kind::Poly5000, inside);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                let (v, ev) = &evs[i];
                let p = ev.position().copied().unwrap_or_default();
                let f = w.vehicles[*v].geofence.as_ref().map(|f| f.index());
                black_box(f.map(|f| f.locate(p.lon, p.lat, true)))
            })
        });
    }
    g.finish();
}

fn bench_tracker(c: &mut Criterion) {
    let ids: Vec<DeviceId> = (0..TRACKED).map(device_id).collect();
    let mut rng = fastrand::Rng::with_seed(17);
    let before = live();
    let t = Instant::now();
    let mut tracker = SilenceTracker::new();
    for id in &ids {
        let d = T0 + rng.i64(0..48 * 3600 * 1000);
        tracker.set(id, Some(Timestamp(d)));
    }
    let bytes = live() - before;
    println!(
        "silence tracker: {} devices filled in {:.2?}; heap {:.1} MiB = {:.1} bytes/device \
         (device id strings are the registry's, not counted)",
        tracker.len(),
        t.elapsed(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / TRACKED as f64
    );
    println!(
        "rule state: {} bytes per device persisted (postcard)",
        DeviceRuleState {
            placement: FencePlacement::Outside,
            fence_tag: u64::MAX,
            fence_fix_time: Some(Timestamp(T0)),
            silent_alerted: true,
            last_seen: Some(Timestamp(T0)),
            registered_at: Some(Timestamp(T0)),
            ..Default::default()
        }
        .to_bytes()
        .len()
    );
    let mut g = c.benchmark_group("silence_tracker_1M");
    // What every position does: the device spoke, its deadline moves later.
    let mut n = 0i64;
    g.bench_function("set (device spoke: deadline later)", |b| {
        b.iter(|| {
            n += 1;
            let id = &ids[rng.usize(..TRACKED)];
            tracker.set(id, Some(Timestamp(T0 + 48 * 3600 * 1000 + n)));
        })
    });
    // Rarer: a threshold or loan change moves a deadline earlier.
    g.bench_function("set (deadline earlier)", |b| {
        b.iter(|| {
            n += 1;
            let id = &ids[rng.usize(..TRACKED)];
            tracker.set(id, Some(Timestamp(T0 - 3600 * 1000 - n)));
        })
    });
    g.bench_function("next_deadline", |b| {
        b.iter(|| black_box(tracker.next_deadline()))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    let before = live();
    let mut w = build_world();
    println!(
        "registry: {:.1} MiB for {VEHICLES} vehicles with compiled fences",
        (live() - before) as f64 / (1024.0 * 1024.0)
    );
    bench_positions(&mut c, &mut w);
    bench_locate(&mut c, &w);
    drop(w);
    bench_tracker(&mut c);
    c.final_summary();
}

//! Rules engine cost at fleet scale.
//!
//! World: 100,000 registered vehicles (50,000 circles, 49,900 ten-vertex polygons, 100
//! 5,000-vertex polygons, all loans overdue so every position also moves a silence deadline) and a
//! silence tracker holding 1,000,000 devices.
//!
//! Reports (a) the per-position cost of `Rules::on_event` for inside and outside fixes, per fence
//! kind; (b) the cost of one `SilenceTracker::set` at 1M devices; (c) the heap bytes per device
//! of the tracker, measured with a counting global allocator (printed before the benchmarks);
//! (d) with 100,000 risk zones (70,000 circles, 30,000 ten-vertex polygons, spread like a
//! nationwide list) on top of the 100,000 fenced vehicles: the per-position cost of the fence
//! rule plus the zone rule (`with_zones/*`), and with the `long_stay` rule's tracker and deadline
//! as well (`+long_stay`), the separation ring, and the heap bytes per zone. These go by chunks
//! of `PREFETCH_CHUNK` positions with the engine's prefetch steps, as `Engine::ingest` runs a
//! batch (the engine's own map lookups are measured with the ingest path, `e2e_tcp`); (e) the collections
//! queue (`GET /v1/vehicles`, the engine's `RiskQueue` command) over 100,000 vehicles of mixed
//! tiers: the first page, and a deep page with the tier and loan filters (`queue/*`).
//!
//! Run: `cargo bench --bench rules` (medians: `target/criterion/<group>/<bench>/new/estimates.json`).
//! `ONLY=with_zones/long_stay_only,queue` runs only those parts or cases, set-up and CPU loops
//! included (criterion's own filter skips only its timed loops), e.g. under `perf`.

#[path = "common/proc_cpu.rs"]
mod proc_cpu;

use criterion::Criterion;
use lienwatch::engine::risk::RiskQueue;
use lienwatch::engine::vehicles::PutVehicle;
use lienwatch::engine::{Command, Engine, EngineConfig, PREFETCH_CHUNK};
use lienwatch::event::{AlarmReport, Alarms};
use lienwatch::event::{DeviceId, Event, EventKind, Fix, Position, Protocol, Timestamp};
use lienwatch::prefetch;
use lienwatch::registry::{Vehicle, Zone, ZoneSet};
use lienwatch::rules::long_stay::{LongStayState, Unsaved};
use lienwatch::rules::{
    separation, zones, DeadlineQueue, DeviceRuleState, FencePlacement, RuleConfig, Rules,
    SilenceTracker, VehicleContext, VehicleRuleState,
};
use lienwatch::store::Store;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts live heap bytes so that the bench can report what a structure really costs. The
/// memory itself comes from mimalloc, the daemon's allocator (`src/main.rs`): where the engine's
/// objects lie (mimalloc asks the kernel for transparent huge pages, glibc does not) decides
/// how many of a position's cache misses are also TLB misses.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
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

const ZONES: usize = 100_000;
const ZONE_CIRCLES: usize = 70_000;

/// 100,000 zones over the same region as the vehicles: 70,000 circles of 100 to 500 m (POIs),
/// 30,000 ten-vertex polygons of about 300 m (yards, markets). Prints the heap bytes per zone.
fn build_zones() -> (ZoneSet, Vec<(f64, f64)>) {
    let mut rng = fastrand::Rng::with_seed(23);
    let mut centres = Vec::with_capacity(ZONES);
    let make = |i: usize, rng: &mut fastrand::Rng, centres: &mut Vec<(f64, f64)>| {
        let c = (100.0 + rng.f64() * 20.0, 20.0 + rng.f64() * 20.0);
        centres.push(c);
        let geometry = if i < ZONE_CIRCLES {
            json!({"type": "Circle", "center": [c.0, c.1], "radius_m": 100.0 + rng.f64() * 400.0})
        } else {
            json!({"type": "Polygon", "coordinates": [star_ring(rng, c, 0.003, 10)]})
        };
        let body = json!({"name": format!("zone {i}"), "kind": if i.is_multiple_of(3) { "pawnshop" } else { "used_car_market" }, "geometry": geometry});
        Zone::from_json(
            &format!("Z-{i:06}"),
            &serde_json::to_vec(&body).unwrap_or_default(),
        )
        .expect("generated zone is valid")
    };
    let t = Instant::now();
    let before = live();
    let circles: Vec<Zone> = (0..ZONE_CIRCLES)
        .map(|i| make(i, &mut rng, &mut centres))
        .collect();
    let circle_bytes = live() - before;
    let before = live();
    let polys: Vec<Zone> = (ZONE_CIRCLES..ZONES)
        .map(|i| make(i, &mut rng, &mut centres))
        .collect();
    let poly_bytes = live() - before;
    let built = t.elapsed();
    let before = live();
    let t = Instant::now();
    let set = ZoneSet::from_zones(circles.into_iter().chain(polys));
    let index_bytes = live() as isize - before as isize;
    println!(
        "zones: {ZONES} parsed and validated in {built:.1?}, indexed in {:.1?}; heap per zone: \
         circle {:.0} B, 10-vertex polygon {:.0} B, plus {:.0} B of index (grid cells, id map); \
         {:.1} MiB in all",
        t.elapsed(),
        circle_bytes as f64 / ZONE_CIRCLES as f64,
        poly_bytes as f64 / (ZONES - ZONE_CIRCLES) as f64,
        index_bytes as f64 / ZONES as f64,
        (circle_bytes as isize + poly_bytes as isize + index_bytes) as f64 / (1024.0 * 1024.0),
    );
    (set, centres)
}

/// The fence rule and the zone rule together, as the engine runs them per position.
fn bench_zones(c: &mut Criterion, w: &mut World) {
    let (set, centres) = build_zones();
    let cfg = RuleConfig::default();
    let mut rng = fastrand::Rng::with_seed(29);
    // Fixes inside vehicles' fences (hardly ever inside a zone), and fixes at zone centres.
    let mut evs = events(w, &mut rng, Kind::Circle, true);
    evs.extend(events(w, &mut rng, Kind::Poly10, true));
    let in_zone: Vec<(usize, Event)> = (0..4096)
        .map(|n| {
            let v = rng.usize(..VEHICLES);
            let (lon, lat) = centres[rng.usize(..ZONES)];
            (v, fix_event(&w.ids[v], lon, lat, T0 + 1000 + n as i64))
        })
        .collect();
    let mut hits = 0;
    for (_, ev) in &evs {
        if let Some(p) = ev.position() {
            set.containing(p.lon, p.lat, |_| hits += 1);
        }
    }
    println!(
        "zones: {hits} of {} fence-bench fixes fall in a zone",
        evs.len()
    );
    let mut g = c.benchmark_group("with_zones");
    let World {
        rules,
        vehicles,
        states,
        ..
    } = &mut *w;
    let now = Timestamp(T0 + 2000);
    // The long_stay rule's state per vehicle and its deadline queue, as the engine keeps them.
    let vids: Vec<Arc<str>> = (0..VEHICLES).map(|i| Arc::from(format!("V-{i}"))).collect();
    let before = live();
    // At hand by index, as the fence rule's device states are above: the engine's lookups are
    // measured with the ingest path (`e2e_tcp`).
    let mut stays: Vec<LongStayState> = (0..VEHICLES).map(|_| LongStayState::new(&cfg)).collect();
    let mut stay_due: DeadlineQueue<Arc<str>> = DeadlineQueue::new();
    let mut unsaved: Unsaved<usize> = Unsaved::default();
    let mut unsaved_n = 0;
    println!(
        "long_stay: {} B of state per vehicle in memory",
        (live() - before) / VEHICLES,
    );
    let mut clock = T0;
    // `fence`: the Part 1 rules (`Rules::on_event`); `zones`: the zone rule; `stay`: the
    // long_stay rule (tracker, deadline, queue); all three: what the engine runs per position.
    let mut run = |name: &str,
                   evs: &[(usize, Event)],
                   (fence, zone, stay): (bool, bool, bool),
                   keep: bool| {
        if !wanted(&format!("with_zones/{name}")) {
            return;
        }
        let mut visits: Vec<Vec<zones::ZoneVisit>> = vec![Vec::new(); evs.len()];
        let mut i = 0usize;
        let mut out = Vec::new();
        let mut one = || {
            i = (i + 1) % evs.len();
            // As the engine runs a batch (`Engine::prefetch`): at each chunk's start, what the
            // fences of its vehicles point to is asked for, what the next chunk's objects point
            // to, and the objects of the chunk after that.
            if i.is_multiple_of(PREFETCH_CHUNK) {
                let n = evs.len();
                for k in i..i + PREFETCH_CHUNK {
                    let (v, _) = &evs[k % n];
                    match &vehicles[*v].geofence {
                        Some(f) if fence && f.has_flat_rings() => f.prefetch_shape(),
                        _ => {}
                    }
                }
                for k in i + PREFETCH_CHUNK..i + 2 * PREFETCH_CHUNK {
                    let (v, ev) = &evs[k % n];
                    if fence {
                        vehicles[*v].prefetch_rule_data();
                    }
                    if let (true, Some(p)) = (zone, ev.position()) {
                        set.prefetch(p.lon, p.lat);
                    }
                }
                for k in i + 2 * PREFETCH_CHUNK..i + 3 * PREFETCH_CHUNK {
                    let (v, ev) = &evs[k % n];
                    let v = *v;
                    if let (true, Some(p)) = (zone, ev.position()) {
                        set.prefetch_bitmap(p.lon, p.lat);
                    }
                    if fence {
                        prefetch::object(&vehicles[v]);
                        prefetch::object(&states[v]);
                    }
                    if stay {
                        prefetch::object(&stays[v]);
                    }
                }
            }
            let (v, ev) = &evs[i];
            if let (true, EventKind::Position(fix)) = (stay, &ev.kind) {
                // Fix times move on as they would live: each fix is news to its vehicle.
                clock += 1000;
                let mut f = lienwatch::places::Fix::from(&fix.position);
                f.time = Timestamp(clock);
                let st = &mut stays[*v];
                black_box(st.on_fix(&f, Timestamp(clock + 2000)));
                if let Some(d) = st.arm(&cfg) {
                    stay_due.set(vids[*v].clone(), Some(d));
                }
                // Encoded for the commit's write, as the engine does; a commit every 4,096
                // positions takes them (the store write is not counted here).
                if st.needs_save() {
                    unsaved.put(v, st);
                }
                unsaved_n += 1;
                if unsaved_n == 4096 {
                    unsaved_n = 0;
                    unsaved.write_all(|k, b| {
                        black_box((k, b));
                    });
                }
            }
            let o = fence.then(|| {
                let st = &mut states[*v];
                st.fence_fix_time = None;
                let ctx = VehicleContext::at(&vehicles[*v], 0);
                rules.on_event(ctx, st, ev, now)
            });
            if !keep {
                visits[i].clear();
            }
            out.clear();
            if let (true, EventKind::Position(fix)) = (zone, &ev.kind) {
                // A steady visit re-reads the same fix time: let it through.
                for v in visits[i].iter_mut() {
                    v.fix_time = Timestamp(0);
                }
                zones::on_fix(&cfg, &set, &mut visits[i], fix, now, &mut out);
            }
            black_box((o, out.len()));
        };
        // CPU time over a million positions: on a machine shared with other jobs the wall clock
        // (criterion's figure) also counts the time this process waits for a core.
        let n = 1_000_000;
        let t0 = proc_cpu::cpu_secs("self");
        for _ in 0..n {
            one();
        }
        let cpu_ns = (proc_cpu::cpu_secs("self") - t0) / n as f64 * 1e9;
        println!("{name}: {cpu_ns:.0} ns CPU per position (mean of {n})");
        g.bench_function(name, |b| b.iter(&mut one));
    };
    // Almost every position: in its fence, in no zone. The fence rule alone is the baseline
    // measured in the same run (the machine's load moves every figure).
    run("fence_only/no_zone", &evs, (true, false, false), false);
    run("fence+zones/no_zone", &evs, (true, true, false), false);
    run(
        "fence+zones+long_stay/no_zone",
        &evs,
        (true, true, true),
        false,
    );
    run("zones_only/no_zone", &evs, (false, true, false), false);
    run("long_stay_only", &evs, (false, false, true), false);
    // A car parked in a zone it is already visiting (steady state).
    run("zones_only/visiting", &in_zone, (false, true, false), true);
    // The fix that enters a zone: lookup, visit and alert draft.
    run("zones_only/enter", &in_zone, (false, true, false), false);
    g.finish();
    println!(
        "long_stay: at most {} B persisted per vehicle (postcard) after the runs",
        stays.iter().map(|s| s.to_bytes().len()).max().unwrap_or(0)
    );

    // Separation: push into the ring and compare with the other unit's ring.
    let (a, b) = (DeviceId::new("1"), DeviceId::new("2"));
    let mut mine = separation::FixRing::default();
    let mut theirs = separation::FixRing::default();
    for k in 0..200 {
        theirs.push(separation::RingFix::new(T0 + k * 30_000, 22.6, 114.0));
        mine.push(separation::RingFix::new(
            T0 + k * 30_000 + 5000,
            22.6,
            114.0,
        ));
    }
    let mut sep = Vec::new();
    let mut out = Vec::new();
    let mut k = 200i64;
    let mut g = c.benchmark_group("separation");
    g.bench_function("push+compare", |bch| {
        bch.iter(|| {
            k += 1;
            let f = separation::RingFix::new(T0 + k * 30_000 + 5000, 22.6, 114.0);
            mine.push(f);
            separation::compare(
                &cfg,
                &a,
                f,
                &mine,
                &[(&b, &theirs, lienwatch::registry::DeviceKind::Wireless)],
                &mut sep,
                &mut out,
            );
            black_box(sep.len())
        })
    });
    g.finish();
    let mut st = VehicleRuleState::default();
    st.device_mut(&a).recent = mine.clone();
    st.device_mut(&b).recent = theirs.clone();
    st.device_mut(&a).visits.push(zones::ZoneVisit {
        zone_id: "Z-000001".into(),
        since: Timestamp(T0),
        fix_time: Timestamp(T0),
        dwell_alerted: false,
    });
    println!(
        "vehicle rule state: {} bytes persisted (postcard) for two units with full rings and one visit",
        st.to_bytes().len()
    );
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

/// 100,000 vehicles in a real engine (temporary store): two in five current, the others overdue
/// by 10, 45 or 120 days; the 120-day ones also report a power cut. Tiers: none 40%, low 20%,
/// medium 20%, high 20%.
fn bench_queue(c: &mut Criterion) {
    let store = Store::temporary().expect("store");
    let outbox = store
        .open_outbox(&[], Arc::new(|| Timestamp(T0)))
        .expect("outbox");
    let ecfg = EngineConfig {
        history_retention: None,
        ..EngineConfig::from_config(&Default::default(), Vec::new())
    };
    let now = Timestamp(T0);
    let mut e = Engine::open(store, outbox, ecfg, now).expect("engine");
    let t = Instant::now();
    for i in 0..VEHICLES {
        let id = device_id(i);
        let loan = match i % 5 {
            0 | 1 => json!({"id": "L", "status": "current"}),
            2 => json!({"id": "L", "status": "overdue", "days_past_due": 10}),
            3 => json!({"id": "L", "status": "overdue", "days_past_due": 45}),
            _ => json!({"id": "L", "status": "overdue", "days_past_due": 120}),
        };
        let body = json!({"loan": loan, "devices": [{"id": id.as_str(), "kind": "wired"}]});
        PutVehicle::from_json(
            &format!("V-{i:06}"),
            &serde_json::to_vec(&body).unwrap_or_default(),
        )
        .and_then(|cmd| cmd.apply(&mut e, now))
        .expect("put vehicle");
    }
    // Every device speaks (last_seen orders ties), in batches as connections hand them over.
    for (b, chunk) in (0..VEHICLES).collect::<Vec<_>>().chunks(4096).enumerate() {
        let evs: Vec<Event> = chunk
            .iter()
            .map(|&i| Event {
                device_id: device_id(i),
                protocol: Protocol::Gt06,
                kind: EventKind::Alarm {
                    alarms: if i % 10 == 4 || i % 10 == 9 {
                        AlarmReport::raised(Alarms::POWER_CUT)
                    } else {
                        AlarmReport::NONE
                    },
                },
            })
            .collect();
        e.ingest(&evs, Timestamp(T0 + b as i64 * 1000));
    }
    e.flush().expect("flush");
    let raised = e.take_alerts().len();
    println!(
        "queue: {VEHICLES} vehicles registered and heard from in {:.1?} ({raised} alerts raised)",
        t.elapsed()
    );
    let page = |e: &mut Engine, tier: Option<&str>, status: Option<&str>, after: Option<String>| {
        RiskQueue::parse(tier, status, Some(100), after)
            .and_then(|q| q.apply(e, now))
            .expect("page")
    };
    let first = page(&mut e, None, None, None);
    let tiers: Vec<String> = first
        .vehicles
        .iter()
        .filter_map(|v| v.risk.as_ref().map(|r| r.tier.as_str().to_string()))
        .collect();
    println!(
        "queue: first page {} vehicles, tiers {:?}..",
        first.vehicles.len(),
        &tiers[..3]
    );
    // A deep cursor: 200 pages (20,000 vehicles) into the filtered queue.
    let filter = (Some("high,medium"), Some("overdue"));
    let mut after = None;
    for _ in 0..200 {
        after = page(&mut e, filter.0, filter.1, after).next;
    }
    // CPU time per page too: on a machine shared with other jobs the wall clock also counts the
    // time this process waits for a core.
    for (name, tier, status, cursor) in [
        ("first page", None, None, None),
        ("deep filtered page", filter.0, filter.1, after.clone()),
    ] {
        let t0 = proc_cpu::cpu_secs("self");
        for _ in 0..20 {
            black_box(page(&mut e, tier, status, cursor.clone()));
        }
        println!(
            "queue: {name}: {:.1} ms CPU per page (mean of 20)",
            (proc_cpu::cpu_secs("self") - t0) / 20.0 * 1e3
        );
    }
    let mut g = c.benchmark_group("queue");
    g.sample_size(20);
    g.bench_function("first_page/100k_vehicles", |b| {
        b.iter(|| black_box(page(&mut e, None, None, None).vehicles.len()))
    });
    g.bench_function("deep_page_filtered/100k_vehicles", |b| {
        b.iter(|| {
            black_box(
                page(&mut e, filter.0, filter.1, after.clone())
                    .vehicles
                    .len(),
            )
        })
    });
    g.finish();
}

/// Whether `ONLY` (comma-separated words) asks for the part or case `name` (`with_zones` or
/// `with_zones/fence_only/no_zone`): a word within the name, or a case of the part; all when
/// unset.
fn wanted(name: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| {
        only.split(',')
            .map(str::trim)
            .any(|w| name.contains(w) || w.starts_with(&format!("{name}/")))
    })
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
    if wanted("on_event") {
        bench_positions(&mut c, &mut w);
    }
    if wanted("fence") {
        bench_locate(&mut c, &w);
    }
    if wanted("with_zones") {
        bench_zones(&mut c, &mut w);
    }
    drop(w);
    if wanted("queue") {
        bench_queue(&mut c);
    }
    if wanted("tracker") {
        bench_tracker(&mut c);
    }
    c.final_summary();
}

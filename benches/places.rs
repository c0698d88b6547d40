//! Places cost: the whole computation over 30 days of a car reporting every 10 s (about 260,000
//! fixes, the synthetic life), and the per-fix cost of the streaming `StayTracker` that the
//! `long_stay` rule feeds live.
//!
//! `cargo bench --bench places` (medians: `target/criterion/places/<bench>/new/estimates.json`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lienwatch::places::synthetic::{life, LifeConfig};
use lienwatch::places::{places, Params};
use std::hint::black_box;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let life = life(&LifeConfig::dense(7, 30, 10));
    let Ok(params) = Params::from_rules(200.0, Duration::from_secs(20 * 60), "Asia/Shanghai")
    else {
        return;
    };
    let n = life.fixes.len() as u64;
    let out = places(life.fixes.iter().copied(), life.now, &params);
    println!(
        "30 days at 10 s: {n} fixes, {} places, first {:?}",
        out.places.len(),
        out.places.first()
    );

    let mut g = c.benchmark_group("places");
    g.sample_size(20);
    g.throughput(Throughput::Elements(n));
    g.bench_function("places_30d_every_10s", |b| {
        b.iter(|| places(black_box(life.fixes.iter().copied()), life.now, &params))
    });
    g.bench_function("stay_tracker_30d_every_10s", |b| {
        b.iter(|| {
            let mut t = params.tracker();
            let mut ended = 0u32;
            for f in black_box(&life.fixes) {
                ended += u32::from(t.push(f).is_some());
            }
            black_box((ended, t.current(life.now)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! A synthetic life: days of a car that sleeps at home, works on weekdays, drives about at
//! weekends and once stops somewhere else, with the faults real trackers add (GPS noise, single
//! jumps, heartbeat-only nights, invalid and LBS fixes). Deterministic from a seed, so tests can
//! assert on it and benchmarks can measure the same input every run.

use super::extent::M_PER_DEG;
use super::Fix;
use crate::time::Timestamp;

/// A spot on the map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spot {
    pub lat: f64,
    pub lon: f64,
}

impl Spot {
    /// The spot `east_m` metres east and `north_m` metres north of this one.
    pub fn offset(self, east_m: f64, north_m: f64) -> Spot {
        Spot {
            lat: self.lat + north_m / M_PER_DEG,
            lon: self.lon + east_m / (M_PER_DEG * self.lat.to_radians().cos()),
        }
    }

    fn distance_m(self, other: Spot) -> f64 {
        let dy = (other.lat - self.lat) * M_PER_DEG;
        let dx = (other.lon - self.lon) * M_PER_DEG * self.lat.to_radians().cos();
        dx.hypot(dy)
    }
}

/// How the life is lived and reported.
#[derive(Clone, Debug)]
pub struct LifeConfig {
    pub seed: u64,
    pub days: u32,
    /// Local midnight starting the first day, a Monday.
    pub start: Timestamp,
    /// The local time's offset from UTC (the schedule uses it; pick a zone without DST).
    pub utc_offset_h: i32,
    /// Seconds between fixes while driving, drawn in this range.
    pub moving_every_s: (u32, u32),
    /// Seconds between fixes while parked.
    pub parked_every_s: (u32, u32),
    /// Some nights the tracker sends heartbeats only: no fix between arriving and leaving.
    pub heartbeat_only_nights: bool,
    /// Chance that a parked period has one GPS jump of 300-1500 m (and, per driving fix, a
    /// hundredth of it).
    pub jump_chance: f64,
    /// Chance, per fix, of an extra invalid fix and of an extra LBS fix beside it.
    pub noise_fix_chance: f64,
    pub home: Spot,
    pub work: Spot,
    pub visit: Spot,
    /// The day (0-based, a weekday) the car stops at `visit` on its way home.
    pub visit_day: u32,
}

impl LifeConfig {
    /// A wired tracker in Shenzhen: a fix every 10-30 s while moving, every 30-60 min (or none)
    /// while parked.
    pub fn new(seed: u64, days: u32) -> LifeConfig {
        let home = Spot {
            lat: 22.543096,
            lon: 114.057865,
        };
        LifeConfig {
            seed,
            days,
            // Monday 2026-11-02 00:00 in Asia/Shanghai.
            start: Timestamp::from_secs(1_793_577_600 - 8 * 3600),
            utc_offset_h: 8,
            moving_every_s: (10, 30),
            parked_every_s: (1800, 3600),
            heartbeat_only_nights: true,
            jump_chance: 0.3,
            noise_fix_chance: 0.02,
            home,
            work: home.offset(6400.0, 5200.0),
            visit: home.offset(-8000.0, 8500.0),
            visit_day: days.saturating_sub(1).min(9),
        }
    }

    /// The same life with a fix every `every_s` seconds, moving or not (about 260,000 fixes for
    /// 30 days at 10 s).
    pub fn dense(seed: u64, days: u32, every_s: u32) -> LifeConfig {
        LifeConfig {
            moving_every_s: (every_s, every_s),
            parked_every_s: (every_s, every_s),
            heartbeat_only_nights: false,
            ..LifeConfig::new(seed, days)
        }
    }
}

/// A stop as it really happened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruthStop {
    pub spot: Spot,
    /// The arrival.
    pub since: Timestamp,
}

/// The fixes of a life and the truth behind them.
#[derive(Clone, Debug)]
pub struct Life {
    /// In fix-time order.
    pub fixes: Vec<Fix>,
    pub home: Spot,
    pub work: Spot,
    pub visit: Spot,
    /// Where the car is at the end, since when.
    pub last_stop: TruthStop,
    /// The end of the life: pass as `now`.
    pub now: Timestamp,
}

/// A battery unit hidden in the same car that wakes once a day at `hour` local time and reports
/// where the car stands then (its last valid fix, 30 m off: another antenna), as the loan
/// trackers sold as "one report a day" do (domain.md section 3).
pub fn daily_reports(cfg: &LifeConfig, life: &Life, hour: f64) -> Vec<Fix> {
    let mut out = Vec::new();
    for day in 0..cfg.days {
        let t = cfg.start.millis() + day as i64 * 86_400_000 + (hour * 3_600_000.0) as i64;
        let k = life.fixes.partition_point(|f| f.time.millis() <= t);
        let Some(f) = life.fixes[..k].iter().rev().find(|f| f.valid && !f.lbs) else {
            continue;
        };
        let at = Spot {
            lat: f.lat,
            lon: f.lon,
        }
        .offset(30.0, 0.0);
        out.push(Fix {
            time: Timestamp(t),
            lat: at.lat,
            lon: at.lon,
            valid: true,
            lbs: false,
        });
    }
    out
}

/// Lives the configured days.
pub fn life(cfg: &LifeConfig) -> Life {
    let mut g = Gen {
        rng: fastrand::Rng::with_seed(cfg.seed),
        cfg,
        t: cfg.start.millis(),
        at: cfg.home,
        fixes: Vec::new(),
    };
    let day_ms = 86_400_000i64;
    let local =
        |day: u32, h: f64| cfg.start.millis() + day as i64 * day_ms + (h * 3_600_000.0) as i64;
    let mut last_stop = TruthStop {
        spot: cfg.home,
        since: cfg.start,
    };
    g.emit(g.at);
    for day in 0..cfg.days {
        if day % 7 < 5 {
            let leave = local(day, 7.75) + g.minutes(0, 30);
            g.park(leave, true);
            g.drive(&[cfg.work]);
            let leave = local(day, 17.75) + g.minutes(0, 45);
            g.park(leave, false);
            if day == cfg.visit_day {
                g.drive(&[cfg.visit]);
                let leave = g.t + g.minutes(60, 120);
                g.park(leave, false);
            }
            g.drive(&[cfg.home]);
        } else {
            let leave = local(day, 14.0) + g.minutes(0, 60);
            g.park(leave, true);
            let loop_: Vec<Spot> = (0..3)
                .map(|_| {
                    let a = g.rng.f64() * std::f64::consts::TAU;
                    let r = 3000.0 + 5000.0 * g.rng.f64();
                    cfg.home.offset(r * a.cos(), r * a.sin())
                })
                .chain([cfg.home])
                .collect();
            g.drive(&loop_);
        }
        last_stop = TruthStop {
            spot: cfg.home,
            since: Timestamp(g.t),
        };
    }
    let now = cfg.start.millis() + cfg.days as i64 * day_ms;
    g.park(now, true);
    Life {
        fixes: g.fixes,
        home: cfg.home,
        work: cfg.work,
        visit: cfg.visit,
        last_stop,
        now: Timestamp(now),
    }
}

struct Gen<'a> {
    rng: fastrand::Rng,
    cfg: &'a LifeConfig,
    /// Now, ms since the epoch.
    t: i64,
    /// Where the car is.
    at: Spot,
    fixes: Vec<Fix>,
}

impl Gen<'_> {
    fn minutes(&mut self, lo: u32, hi: u32) -> i64 {
        self.rng.u32(lo * 60..=hi * 60) as i64 * 1000
    }

    fn every(&mut self, (lo, hi): (u32, u32)) -> i64 {
        self.rng.u32(lo.max(1)..=hi.max(lo).max(1)) as i64 * 1000
    }

    /// A fix near `spot` (10-30 m of GPS noise) at the current time, with the occasional invalid
    /// or LBS report beside it.
    fn emit(&mut self, spot: Spot) {
        let a = self.rng.f64() * std::f64::consts::TAU;
        let r = 10.0 + 20.0 * self.rng.f64();
        let p = spot.offset(r * a.cos(), r * a.sin());
        self.push(p, true, false);
        if self.rng.f64() < self.cfg.noise_fix_chance {
            // No fix: devices repeat an old position or send zeros.
            let p = if self.rng.bool() {
                p
            } else {
                Spot { lat: 0.0, lon: 0.0 }
            };
            self.push(p, false, false);
        }
        if self.rng.f64() < self.cfg.noise_fix_chance {
            // A cell position, kilometres off; some devices even flag it valid.
            let a = self.rng.f64() * std::f64::consts::TAU;
            let r = 500.0 + 1500.0 * self.rng.f64();
            let valid = self.rng.bool();
            self.push(spot.offset(r * a.cos(), r * a.sin()), valid, true);
        }
    }

    fn push(&mut self, p: Spot, valid: bool, lbs: bool) {
        self.fixes.push(Fix {
            time: Timestamp(self.t),
            lat: p.lat,
            lon: p.lon,
            valid,
            lbs,
        });
    }

    fn jump(&mut self, spot: Spot) {
        let a = self.rng.f64() * std::f64::consts::TAU;
        let r = 300.0 + 1200.0 * self.rng.f64();
        self.push(spot.offset(r * a.cos(), r * a.sin()), true, false);
    }

    /// Parked where the car is until `until`, then a fix as it leaves (ignition on).
    fn park(&mut self, until: i64, night: bool) {
        let spot = self.at;
        let quiet = night && self.cfg.heartbeat_only_nights && self.rng.bool();
        let mut jump_left = self.rng.f64() < self.cfg.jump_chance;
        if !quiet {
            loop {
                let next = self.t + self.every(self.cfg.parked_every_s);
                // Keep two intervals before leaving, so that a jump is followed by a fix back.
                if next >= until {
                    break;
                }
                self.t = next;
                if jump_left && self.t + 2 * (self.cfg.parked_every_s.1 as i64 * 1000) < until {
                    self.jump(spot);
                    jump_left = false;
                } else {
                    self.emit(spot);
                }
            }
        }
        self.t = self.t.max(until);
        self.emit(spot);
    }

    /// Drives through `route` from where the car is, at 25-50 km/h, the last point being where
    /// it parks (a fix on arrival).
    fn drive(&mut self, route: &[Spot]) {
        let mut path = vec![self.at];
        for &to in route {
            let from = *path.last().unwrap_or(&self.at);
            // A bend halfway, so the road is not a straight line.
            let d = from.distance_m(to);
            let side = (self.rng.f64() - 0.5) * 0.4 * d;
            let mid = Spot {
                lat: (from.lat + to.lat) / 2.0,
                lon: (from.lon + to.lon) / 2.0,
            }
            .offset(side, -side);
            path.push(mid);
            path.push(to);
        }
        let speed = (25.0 + 25.0 * self.rng.f64()) / 3.6;
        let legs: Vec<f64> = path.windows(2).map(|w| w[0].distance_m(w[1])).collect();
        let total: f64 = legs.iter().sum();
        let start = self.t;
        let end = start + (total / speed) as i64 * 1000;
        loop {
            let next = self.t + self.every(self.cfg.moving_every_s);
            if next >= end {
                break;
            }
            self.t = next;
            let mut along = (self.t - start) as f64 / 1000.0 * speed;
            let mut here = path[0];
            for (i, &len) in legs.iter().enumerate() {
                if along <= len || i == legs.len() - 1 {
                    let f = if len > 0.0 {
                        (along / len).min(1.0)
                    } else {
                        1.0
                    };
                    here = Spot {
                        lat: path[i].lat + (path[i + 1].lat - path[i].lat) * f,
                        lon: path[i].lon + (path[i + 1].lon - path[i].lon) * f,
                    };
                    break;
                }
                along -= len;
            }
            if self.rng.f64() < self.cfg.jump_chance / 100.0 {
                self.jump(here);
            } else {
                self.emit(here);
            }
        }
        self.t = end;
        self.at = *route.last().unwrap_or(&self.at);
        self.emit(self.at);
    }
}

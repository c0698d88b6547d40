//! Every risk zone, indexed for "which zones hold this fix". A grid of cells of 0.01 degree
//! (about a kilometre) lists the zones whose bounding box touches each cell, so the usual fix
//! (in no zone) costs one hash probe and no pointer chase; the rare zone whose box spans more
//! than [`MAX_CELLS`] cells (a district, a circle near a pole) goes to an R-tree instead. Each
//! candidate's compiled [`FenceIndex`](super::FenceIndex) then decides. A bitmap of the cells
//! in use (8 to 16 bits a cell, under a megabyte for a nationwide list) answers "no zone here"
//! for most fixes without touching the hash table, which does not stay in cache; each cell
//! keeps its zones' boxes beside their slots, so a fix in a cell but in none of the boxes
//! reads no zone.

use super::Zone;
use crate::fast_hash::FastMap;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;
use std::sync::Arc;

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// Grid cell size in degrees.
const CELL: f64 = 0.01;
/// A zone covering more cells than this is kept in the R-tree.
pub const MAX_CELLS: i64 = 64;

/// The zone registry in memory: by id, and by place.
#[derive(Default)]
pub struct ZoneSet {
    /// Zones by slot; a removed zone leaves its slot free for the next.
    slots: Vec<Option<Arc<Zone>>>,
    free: Vec<u32>,
    by_id: FastMap<Arc<str>, u32>,
    grid: FastMap<u64, Vec<Cand>>,
    /// One bit per hash of a cell key, set for every cell in `grid` (a removed cell's bit stays
    /// set until the next resize: it only costs a probe).
    occupied: Vec<u64>,
    big: RTree<Entry>,
}

/// A zone filed under a cell: its slot and its box, so that a fix outside the box is turned
/// away without reading the zone (most fixes in a cell are outside all of its zones' boxes).
#[derive(Clone, Copy)]
struct Cand {
    slot: u32,
    /// `[min_lon, min_lat, max_lon, max_lat]`, rounded outwards to `f32`: never smaller.
    bbox: [f32; 4],
}

impl Cand {
    fn new(z: &Zone, slot: u32) -> Cand {
        let [x0, y0, x1, y1] = z.geometry.index().bbox();
        Cand {
            slot,
            bbox: [down(x0), down(y0), up(x1), up(y1)],
        }
    }

    fn may_hold(&self, lon: f64, lat: f64) -> bool {
        let [x0, y0, x1, y1] = self.bbox.map(f64::from);
        lon >= x0 && lon <= x1 && lat >= y0 && lat <= y1
    }
}

/// The largest `f32` not above `v`.
fn down(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) > v {
        f.next_down()
    } else {
        f
    }
}

/// The smallest `f32` not below `v`.
fn up(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v {
        f.next_up()
    } else {
        f
    }
}

/// The bit of `key` in a bitmap of `words` 64-bit words (a power of two).
fn bit(key: u64, words: usize) -> (usize, u64) {
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let bits = words * 64;
    let i = (h >> (64 - bits.trailing_zeros())) as usize;
    (i / 64, 1 << (i % 64))
}

fn entry(z: &Zone, slot: u32) -> Entry {
    let [x0, y0, x1, y1] = z.geometry.index().bbox();
    GeomWithData::new(Rectangle::from_corners([x0, y0], [x1, y1]), slot)
}

fn cell_of(v: f64) -> i64 {
    (v / CELL).floor() as i64
}

fn key(x: i64, y: i64) -> u64 {
    ((x as u32 as u64) << 32) | (y as u32 as u64)
}

/// The grid cells a zone's box covers, or `None` when it covers too many for the grid.
fn cells(z: &Zone) -> Option<impl Iterator<Item = u64>> {
    let [x0, y0, x1, y1] = z.geometry.index().bbox();
    let (cx0, cy0, cx1, cy1) = (cell_of(x0), cell_of(y0), cell_of(x1), cell_of(y1));
    if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) > MAX_CELLS {
        return None;
    }
    Some((cx0..=cx1).flat_map(move |x| (cy0..=cy1).map(move |y| key(x, y))))
}

impl ZoneSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set built in one pass (start-up, benchmarks): the R-tree is bulk-loaded.
    pub fn from_zones(zones: impl IntoIterator<Item = Zone>) -> Self {
        let mut s = ZoneSet::new();
        for z in zones {
            if let Some(&slot) = s.by_id.get(&z.id) {
                s.slots[slot as usize] = Some(Arc::new(z));
            } else {
                s.by_id.insert(z.id.clone(), s.slots.len() as u32);
                s.slots.push(Some(Arc::new(z)));
            }
        }
        s.rebuild_index();
        s
    }

    /// Files a zone under its cells, or in the R-tree (`bulk`: collect the R-tree entries for
    /// one bulk load instead).
    fn place(&mut self, z: &Zone, slot: u32, bulk: Option<&mut Vec<Entry>>) {
        match cells(z) {
            Some(cells) => {
                for k in cells {
                    self.grid.entry(k).or_default().push(Cand::new(z, slot));
                    self.mark(k);
                }
            }
            None => match bulk {
                Some(b) => b.push(entry(z, slot)),
                None => self.big.insert(entry(z, slot)),
            },
        }
    }

    /// Sets the bit of a cell in use, first doubling the bitmap while it has under 8 bits a cell.
    fn mark(&mut self, k: u64) {
        if self.occupied.len() * 64 < self.grid.len() * 8 {
            let mut words = self.occupied.len().max(16);
            while words * 64 < self.grid.len() * 16 {
                words *= 2;
            }
            self.occupied = vec![0; words];
            for &k in self.grid.keys() {
                let (w, b) = bit(k, words);
                self.occupied[w] |= b;
            }
        }
        if !self.occupied.is_empty() {
            let (w, b) = bit(k, self.occupied.len());
            self.occupied[w] |= b;
        }
    }

    /// The grid's list for `k`, if the cell may be in use.
    fn cell(&self, k: u64) -> Option<&Vec<Cand>> {
        let (w, b) = bit(k, self.occupied.len().max(1));
        if self.occupied.get(w).is_none_or(|x| x & b == 0) {
            return None;
        }
        self.grid.get(&k)
    }

    /// The slots of the grid's zones whose box holds `(lon, lat)` (the R-tree's not included).
    fn candidates(&self, lon: f64, lat: f64) -> impl Iterator<Item = u32> + '_ {
        self.cell(key(cell_of(lon), cell_of(lat)))
            .into_iter()
            .flatten()
            .filter(move |c| c.may_hold(lon, lat))
            .map(|c| c.slot)
    }

    fn unplace(&mut self, z: &Zone, slot: u32) {
        match cells(z) {
            Some(cells) => {
                for k in cells {
                    if let Some(v) = self.grid.get_mut(&k) {
                        v.retain(|c| c.slot != slot);
                        if v.is_empty() {
                            self.grid.remove(&k);
                        }
                    }
                }
            }
            None => {
                self.big.remove(&entry(z, slot));
            }
        }
    }

    fn rebuild_index(&mut self) {
        self.grid.clear();
        self.occupied.clear();
        let mut big = Vec::new();
        let zones: Vec<(u32, Arc<Zone>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, z)| z.clone().map(|z| (i as u32, z)))
            .collect();
        for (slot, z) in zones {
            self.place(&z, slot, Some(&mut big));
        }
        // Most cells hold one or two zones: no room kept for more.
        for v in self.grid.values_mut() {
            v.shrink_to_fit();
        }
        self.big = RTree::bulk_load(big);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Zone>> {
        let slot = *self.by_id.get(id)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Adds or replaces a zone; true if it is new.
    pub fn upsert(&mut self, zone: Zone) -> bool {
        let created = self.take(&zone.id).is_none();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.place(&zone, slot, None);
        self.by_id.insert(zone.id.clone(), slot);
        self.slots[slot as usize] = Some(Arc::new(zone));
        created
    }

    /// Adds or replaces many zones; a batch large against the set rebuilds the index in one
    /// pass instead of inserting one by one. Answers how many were new.
    pub fn upsert_many(&mut self, zones: Vec<Zone>) -> usize {
        if zones.len() < 1000 || zones.len() < self.len() / 4 {
            let mut created = 0;
            for z in zones {
                created += usize::from(self.upsert(z));
            }
            return created;
        }
        let mut created = 0;
        for z in zones {
            match self.by_id.get(&z.id) {
                Some(&slot) => self.slots[slot as usize] = Some(Arc::new(z)),
                None => {
                    created += 1;
                    let slot = match self.free.pop() {
                        Some(s) => s,
                        None => {
                            self.slots.push(None);
                            (self.slots.len() - 1) as u32
                        }
                    };
                    self.by_id.insert(z.id.clone(), slot);
                    self.slots[slot as usize] = Some(Arc::new(z));
                }
            }
        }
        self.rebuild_index();
        created
    }

    /// Removes a zone; the removed zone if there was one.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Zone>> {
        self.take(id)
    }

    fn take(&mut self, id: &str) -> Option<Arc<Zone>> {
        let slot = self.by_id.remove(id)?;
        let z = self.slots.get_mut(slot as usize)?.take()?;
        self.unplace(&z, slot);
        self.free.push(slot);
        Some(z)
    }

    /// Calls `f` with every zone that holds `(lon, lat)` strictly inside.
    pub fn containing(&self, lon: f64, lat: f64, mut f: impl FnMut(&Arc<Zone>)) {
        let mut check = |slot: u32| {
            if let Some(Some(z)) = self.slots.get(slot as usize) {
                if z.geometry.index().locate(lon, lat, false) == super::Placement::Inside {
                    f(z);
                }
            }
        };
        for slot in self.candidates(lon, lat) {
            check(slot);
        }
        if self.big.size() > 0 {
            for e in self.big.locate_all_at_point(&[lon, lat]) {
                check(e.data);
            }
        }
    }

    /// Asks the cache for the bitmap word of `(lon, lat)`'s cell: the step before
    /// [`ZoneSet::prefetch`], which reads it.
    pub fn prefetch_bitmap(&self, lon: f64, lat: f64) {
        let (w, _) = bit(key(cell_of(lon), cell_of(lat)), self.occupied.len().max(1));
        if let Some(word) = self.occupied.get(w) {
            crate::prefetch::object(word);
        }
    }

    /// Asks the cache for what [`ZoneSet::containing`] will read for `(lon, lat)`: the grid
    /// cell, and the compiled shapes of its zones whose box holds the fix (`crate::prefetch`).
    pub fn prefetch(&self, lon: f64, lat: f64) {
        for slot in self.candidates(lon, lat).take(4) {
            if let Some(Some(z)) = self.slots.get(slot as usize) {
                z.geometry.prefetch();
            }
        }
    }

    /// Every zone, in id order, optionally of one kind.
    pub fn list(&self, kind: Option<&str>) -> Vec<Arc<Zone>> {
        let mut v = self.unordered(kind);
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Every zone, optionally of one kind, in no order: what the engine thread hands out, the
    /// sort left to the reader.
    pub fn unordered(&self, kind: Option<&str>) -> Vec<Arc<Zone>> {
        self.slots
            .iter()
            .flatten()
            .filter(|z| kind.is_none_or(|k| &*z.kind == k))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn circle(id: &str, lon: f64, lat: f64, r: f64) -> Zone {
        let b = json!({"kind": "pawnshop", "geometry": {"type": "Circle", "center": [lon, lat], "radius_m": r}});
        Zone::from_json(id, &serde_json::to_vec(&b).unwrap()).unwrap()
    }

    fn ids(s: &ZoneSet, lon: f64, lat: f64) -> Vec<String> {
        let mut v = vec![];
        s.containing(lon, lat, |z| v.push(z.id.to_string()));
        v.sort();
        v
    }

    #[test]
    fn finds_the_zones_holding_a_point_through_upserts_and_removals() {
        let mut s = ZoneSet::new();
        assert!(s.upsert(circle("a", 114.0, 22.6, 500.0)));
        assert!(s.upsert(circle("b", 114.008, 22.6, 500.0)));
        assert_eq!(ids(&s, 114.004, 22.6), ["a", "b"]);
        assert_eq!(ids(&s, 114.0, 22.6), ["a"]);
        // Replaced: moved away.
        assert!(!s.upsert(circle("a", 115.0, 22.6, 500.0)));
        assert_eq!(ids(&s, 114.0, 22.6), Vec::<String>::new());
        assert_eq!(ids(&s, 115.0, 22.6), ["a"]);
        assert!(s.remove("a").is_some());
        assert!(s.remove("a").is_none());
        assert_eq!(ids(&s, 115.0, 22.6), Vec::<String>::new());
        assert_eq!(s.len(), 1);
        // A big batch bulk-loads; the old zone is still found.
        let many: Vec<Zone> = (0..2000)
            .map(|i| circle(&format!("z{i}"), 100.0 + i as f64 * 0.01, 30.0, 200.0))
            .collect();
        assert_eq!(s.upsert_many(many), 2000);
        assert_eq!(ids(&s, 100.0 + 0.57, 30.0), ["z57"]);
        assert_eq!(ids(&s, 114.008, 22.6), ["b"]);
        assert_eq!(s.list(Some("pawnshop")).len(), 2001);
        // A zone too large for the grid lives in the R-tree, through replace and removal.
        assert!(s.upsert(circle("wide", 110.0, 30.0, 50_000.0)));
        assert_eq!(ids(&s, 110.3, 30.1), ["wide"]);
        assert!(!s.upsert(circle("wide", 112.0, 30.0, 50_000.0)));
        assert_eq!(ids(&s, 110.3, 30.1), Vec::<String>::new());
        assert_eq!(ids(&s, 112.3, 30.1), ["wide"]);
        s.remove("wide");
        assert_eq!(ids(&s, 112.3, 30.1), Vec::<String>::new());
        // Negative coordinates and a zone across cell edges.
        s.upsert(circle("w", -73.99, -0.005, 900.0));
        assert_eq!(ids(&s, -73.99, 0.001), ["w"]);
        assert_eq!(ids(&s, -73.995, -0.01), ["w"]);
        assert_eq!(s.list(Some("garage")).len(), 0);
    }

    #[test]
    fn the_cell_bitmap_never_hides_a_zone_as_it_grows_and_after_a_rebuild() {
        let mut rng = fastrand::Rng::with_seed(5);
        let zones: Vec<(f64, f64)> = (0..3000)
            .map(|_| (113.0 + rng.f64() * 2.0, 22.0 + rng.f64() * 2.0))
            .collect();
        let brute = |all: &[Arc<Zone>], lon: f64, lat: f64| {
            let mut v: Vec<String> = all
                .iter()
                .filter(|z| z.geometry.index().contains(lon, lat))
                .map(|z| z.id.to_string())
                .collect();
            v.sort();
            v
        };
        let mut s = ZoneSet::new();
        // One by one: the bitmap is resized many times on the way.
        for (i, &(lon, lat)) in zones.iter().enumerate() {
            s.upsert(circle(&format!("z{i}"), lon, lat, 300.0));
        }
        let words = s.occupied.len();
        assert!(
            words * 64 >= s.grid.len() * 8,
            "{words} words for {} cells",
            s.grid.len()
        );
        // Points near zone centres and anywhere.
        let probes: Vec<(f64, f64)> = (0..2000)
            .map(|k| match k % 2 {
                0 => {
                    let (lon, lat) = zones[rng.usize(..zones.len())];
                    (
                        lon + (rng.f64() - 0.5) * 0.004,
                        lat + (rng.f64() - 0.5) * 0.004,
                    )
                }
                _ => (113.0 + rng.f64() * 2.0, 22.0 + rng.f64() * 2.0),
            })
            .collect();
        let mut hits = 0;
        let all = s.list(None);
        for &(lon, lat) in &probes {
            let want = brute(&all, lon, lat);
            hits += want.len();
            assert_eq!(ids(&s, lon, lat), want);
        }
        assert!(hits > 400, "{hits}");
        // Removals leave stale bits, never missing ones; a bulk load rebuilds the bitmap.
        for i in (0..3000).step_by(3) {
            s.remove(&format!("z{i}"));
        }
        let again: Vec<Zone> = (3000..6000)
            .map(|i| {
                circle(
                    &format!("z{i}"),
                    113.0 + rng.f64() * 2.0,
                    22.0 + rng.f64() * 2.0,
                    300.0,
                )
            })
            .collect();
        s.upsert_many(again);
        let all = s.list(None);
        for &(lon, lat) in &probes {
            assert_eq!(ids(&s, lon, lat), brute(&all, lon, lat));
        }
    }

    #[test]
    fn cell_boxes_round_outwards() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..100_000 {
            let v = (rng.f64() - 0.5) * 360.0;
            assert!(f64::from(down(v)) <= v && f64::from(up(v)) >= v, "{v}");
            // Never more than one f32 step away.
            assert!(f64::from(up(v)) - f64::from(down(v)) <= 2.0 * 1.6e-5, "{v}");
        }
        for v in [0.0, -0.0, 180.0, -180.0, 90.0, 1e-40] {
            assert!(f64::from(down(v)) <= v && f64::from(up(v)) >= v, "{v}");
        }
    }

    #[test]
    fn circle_boxes_hold_the_circle_at_any_latitude() {
        for lat in [0.0, 45.0, 70.0, 89.99, -60.0] {
            let z = circle("c", 10.0, lat, 5000.0);
            let [x0, y0, x1, y1] = z.geometry.index().bbox();
            for k in 0..32 {
                let a = k as f64 / 32.0 * std::f64::consts::TAU;
                // A point just inside the circle's edge.
                let dlat = 4990.0 / 111_195.0 * a.sin();
                let y = (lat + dlat).clamp(-90.0, 90.0);
                let dlon = 4990.0 / 111_195.0 * a.cos() / y.to_radians().cos().max(1e-9);
                let x = 10.0 + dlon;
                if x.abs() <= 180.0 && z.geometry.index().contains(x, y) {
                    assert!(x0 <= x && x <= x1 && y0 <= y && y <= y1, "{lat} {k}");
                }
            }
        }
    }
}

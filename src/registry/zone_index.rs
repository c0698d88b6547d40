//! Every risk zone, indexed for "which zones hold this fix": an R-tree of bounding boxes picks
//! the few candidates (a nationwide list of 100,000 zones rarely puts two boxes over one spot),
//! and each candidate's compiled [`FenceIndex`](super::FenceIndex) decides.

use super::Zone;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;
use std::collections::HashMap;
use std::sync::Arc;

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// The zone registry in memory: by id, and by place.
#[derive(Default)]
pub struct ZoneSet {
    /// Zones by slot; a removed zone leaves its slot free for the next.
    slots: Vec<Option<Arc<Zone>>>,
    free: Vec<u32>,
    by_id: HashMap<Arc<str>, u32>,
    tree: RTree<Entry>,
}

fn entry(z: &Zone, slot: u32) -> Entry {
    let [x0, y0, x1, y1] = z.geometry.index().bbox();
    GeomWithData::new(Rectangle::from_corners([x0, y0], [x1, y1]), slot)
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
        s.rebuild_tree();
        s
    }

    fn rebuild_tree(&mut self) {
        let entries = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, z)| z.as_ref().map(|z| entry(z, i as u32)))
            .collect();
        self.tree = RTree::bulk_load(entries);
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
        self.tree.insert(entry(&zone, slot));
        self.by_id.insert(zone.id.clone(), slot);
        self.slots[slot as usize] = Some(Arc::new(zone));
        created
    }

    /// Adds or replaces many zones; a batch large against the set rebuilds the R-tree in one
    /// bulk load instead of inserting one by one. Answers how many were new.
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
        self.rebuild_tree();
        created
    }

    /// Removes a zone; the removed zone if there was one.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Zone>> {
        self.take(id)
    }

    fn take(&mut self, id: &str) -> Option<Arc<Zone>> {
        let slot = self.by_id.remove(id)?;
        let z = self.slots.get_mut(slot as usize)?.take()?;
        self.tree.remove(&entry(&z, slot));
        self.free.push(slot);
        Some(z)
    }

    /// Calls `f` with every zone that holds `(lon, lat)` strictly inside.
    pub fn containing(&self, lon: f64, lat: f64, mut f: impl FnMut(&Arc<Zone>)) {
        for e in self.tree.locate_all_at_point(&[lon, lat]) {
            if let Some(Some(z)) = self.slots.get(e.data as usize) {
                if z.geometry.index().locate(lon, lat, false) == super::Placement::Inside {
                    f(z);
                }
            }
        }
    }

    /// Every zone, in id order, optionally of one kind.
    pub fn list(&self, kind: Option<&str>) -> Vec<Arc<Zone>> {
        let mut v: Vec<Arc<Zone>> = self
            .slots
            .iter()
            .flatten()
            .filter(|z| kind.is_none_or(|k| &*z.kind == k))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
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
        assert_eq!(s.list(Some("garage")).len(), 0);
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

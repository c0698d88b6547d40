//! The sled database: trees, record layouts, and the only code that opens it.
//!
//! Writes happen on the engine thread (`crate::engine`), which flushes once per group commit;
//! readers (the admin API) read the trees directly, since sled is safe to share between threads.
//! Values are postcard-encoded; keys are the raw id bytes.

mod blob_sync;
pub(crate) mod sled_file;
pub use blob_sync::BlobSync;
mod device_log;
pub mod journal;
mod writes;
pub use writes::Writes;

pub use device_log::DeviceLog;

use crate::downlink::CommandRecord;
use crate::event::{Cell, DeviceId, Position, Protocol, Timestamp, WifiAp};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record in {tree}: {msg}")]
    Corrupt { tree: &'static str, msg: String },
    /// A file of lienwatch's own next to sled's (the journal, history segments) or one of sled's
    /// blob files could not be read, written or synced: the disk, not the data, failed.
    #[error("store: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A lock of the store's own was left by a thread that panicked while holding it: what it
    /// guards may be half-written, so nothing more goes through it. Neither the data nor the
    /// disk is at fault; the daemon needs a restart, which recovers from what is on disk.
    #[error("store: {what} is unusable after a panic in another thread; restart the daemon")]
    Poisoned { what: &'static str },
    #[error("store: the engine is not running")]
    Closed,
    #[error("store: alert outbox: {0}")]
    Outbox(String),
}

impl StoreError {
    /// An I/O failure on the file or folder `what` names (with its path, where there is one).
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> StoreError {
        StoreError::Io {
            what: what.to_string(),
            source,
        }
    }

    /// An I/O failure of `what` on the file or folder at `path`.
    pub fn io_at(what: &str, path: &std::path::Path, source: std::io::Error) -> StoreError {
        StoreError::io(format_args!("{what} {}", path.display()), source)
    }
}

/// A position as stored: the fix plus when lienwatch received it. A plain layout of its own,
/// since the API form of `Position` skips absent fields, which a binary format cannot do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPosition {
    pub time: Timestamp,
    pub lat: f64,
    pub lon: f64,
    pub valid: bool,
    pub speed_kmh: f64,
    pub course: u16,
    pub satellites: Option<u8>,
    pub altitude_m: Option<f64>,
    pub received_at: Timestamp,
    /// The serving cell and strongest access point of an LBS or Wi-Fi report (invalid fixes
    /// that a recovery team can still place). Last, so that records written before these
    /// fields existed are recognised as the shorter layout (see [`decode_device`]).
    pub cell: Option<Cell>,
    pub wifi: Option<WifiAp>,
}

/// The record layout before `cell` and `wifi` were kept, read from older databases.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct DeviceRecordV1 {
    device_id: DeviceId,
    protocol: Protocol,
    first_seen: Timestamp,
    last_seen: Timestamp,
    position: Option<StoredPositionV1>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StoredPositionV1 {
    time: Timestamp,
    lat: f64,
    lon: f64,
    valid: bool,
    speed_kmh: f64,
    course: u16,
    satellites: Option<u8>,
    altitude_m: Option<f64>,
    received_at: Timestamp,
}

impl From<DeviceRecordV1> for DeviceRecordV2 {
    fn from(r: DeviceRecordV1) -> Self {
        DeviceRecordV2 {
            device_id: r.device_id,
            protocol: r.protocol,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            position: r.position.map(|p| StoredPosition {
                time: p.time,
                lat: p.lat,
                lon: p.lon,
                valid: p.valid,
                speed_kmh: p.speed_kmh,
                course: p.course,
                satellites: p.satellites,
                altitude_m: p.altitude_m,
                received_at: p.received_at,
                cell: None,
                wifi: None,
            }),
        }
    }
}

/// Creates `dir` and its missing parents so that they stay after a power cut: each folder
/// made is synced in its parent. A file synced in a folder whose own entry was never synced can
/// vanish with the folder.
pub fn create_dir_durably(dir: &std::path::Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        // A relative path's first folder is made in the working directory.
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn command_key(tag: u8, id: &[u8; 8]) -> [u8; 9] {
    let mut k = [tag; 9];
    k[1..].copy_from_slice(id);
    k
}

fn device_command_key(device: &DeviceId, id: u64) -> Vec<u8> {
    let mut k = vec![b'd'];
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn corrupt_command(msg: String) -> StoreError {
    StoreError::Corrupt {
        tree: "commands",
        msg,
    }
}

/// Every `(key as text, value)` of a tree keyed by a string id (vehicles, zones, risk, ...).
fn string_keyed(
    tree: &sled::Tree,
) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> + '_ {
    tree.iter().map(|r| {
        let (k, v) = r?;
        Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
    })
}

/// The device id a key of the `rules` or `registrations` tree names.
fn device_key(k: &[u8]) -> DeviceId {
    DeviceId::new(&String::from_utf8_lossy(k))
}

/// A device record in the current layout, or in one before it (`last_valid`, then `cell`/`wifi`,
/// were added at the end, so an older record fails to decode as a newer layout).
fn decode_device(v: &[u8]) -> Result<DeviceRecord, StoreError> {
    match postcard::from_bytes::<DeviceRecord>(v) {
        Ok(r) => Ok(r),
        Err(e) => postcard::from_bytes::<DeviceRecordV2>(v)
            .map(DeviceRecord::from)
            .or_else(|_| {
                postcard::from_bytes::<DeviceRecordV1>(v)
                    .map(DeviceRecordV2::from)
                    .map(DeviceRecord::from)
            })
            .map_err(|_| StoreError::Corrupt {
                tree: "devices",
                msg: e.to_string(),
            }),
    }
}

impl StoredPosition {
    pub fn new(p: &Position, received_at: Timestamp) -> Self {
        StoredPosition {
            time: p.time,
            lat: p.lat,
            lon: p.lon,
            valid: p.valid,
            speed_kmh: p.speed_kmh,
            course: p.course,
            satellites: p.satellites,
            altitude_m: p.altitude_m,
            received_at,
            cell: p.cell,
            wifi: p.wifi,
        }
    }

    pub fn position(&self) -> Position {
        Position {
            time: self.time,
            lat: self.lat,
            lon: self.lon,
            valid: self.valid,
            speed_kmh: self.speed_kmh,
            course: self.course,
            satellites: self.satellites,
            altitude_m: self.altitude_m,
            cell: self.cell,
            wifi: self.wifi,
        }
    }

    /// The position object of CONTRACT.md "Positions": the fix plus `received_at`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.position()).unwrap_or_default();
        v["lat"] = serde_json::json!(crate::event::round6(self.lat));
        v["lon"] = serde_json::json!(crate::event::round6(self.lon));
        v["received_at"] = serde_json::json!(self.received_at);
        v
    }
}

/// Everything lienwatch keeps about one device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub protocol: Protocol,
    pub first_seen: Timestamp,
    /// Receive time of the last message of any kind (the "silent" rule's clock, protocols.md F.2).
    pub last_seen: Timestamp,
    /// Last-known position: the newest fix by device time, valid or not (CONTRACT.md
    /// "Positions").
    pub position: Option<StoredPosition>,
    /// The newest usable fix (valid, with coordinates), where the car was last really seen,
    /// when it is not `position` (an LBS report or a fix without position came after it): what
    /// a map draws beside it, and where a silence began. `None` when `position` is that fix,
    /// so that the common record costs one byte more. Last, so that records written before it
    /// read as the shorter layout (see [`decode_device`]).
    last_valid: Option<StoredPosition>,
}

/// The record layout before `last_valid` was kept.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct DeviceRecordV2 {
    device_id: DeviceId,
    protocol: Protocol,
    first_seen: Timestamp,
    last_seen: Timestamp,
    position: Option<StoredPosition>,
}

impl From<DeviceRecordV2> for DeviceRecord {
    fn from(r: DeviceRecordV2) -> Self {
        // That layout kept a valid fix over a newer one without a fix: its position is the
        // newest usable fix whenever there was one, as `last_valid: None` says.
        DeviceRecord {
            device_id: r.device_id,
            protocol: r.protocol,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            position: r.position,
            last_valid: None,
        }
    }
}

impl DeviceRecord {
    pub fn new(device_id: DeviceId, protocol: Protocol, now: Timestamp) -> Self {
        DeviceRecord {
            device_id,
            protocol,
            first_seen: now,
            last_seen: now,
            position: None,
            last_valid: None,
        }
    }

    /// Applies a fix: the newest device time wins, valid or not; a late older fix only counts
    /// as a sign of life. A usable fix also becomes `last_valid` if it is the newest of those.
    /// Returns whether the last-known position changed.
    pub fn offer_position(&mut self, p: &Position, received_at: Timestamp) -> bool {
        let stored = StoredPosition::new(p, received_at);
        let valid = match self.last_valid() {
            Some(old) if !p.is_usable() || p.time < old.time => Some(old),
            _ if p.is_usable() => Some(stored),
            _ => None,
        };
        let replace = self.position.is_none_or(|old| p.time >= old.time);
        if replace {
            self.position = Some(stored);
        }
        self.last_valid = valid.filter(|v| self.position != Some(*v));
        replace
    }

    /// The newest usable fix: where the car was last really seen.
    pub fn last_valid(&self) -> Option<StoredPosition> {
        self.last_valid
            .or(self.position.filter(|p| p.position().is_usable()))
    }

    /// The newest usable fix as the API shows it, when the last-known position is not that fix.
    pub fn last_valid_json(&self) -> Option<serde_json::Value> {
        self.last_valid.map(|v| v.to_json())
    }

    /// The API view (`GET /v1/devices/{id}`).
    pub fn to_json(&self, vehicle_id: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "device_id": self.device_id,
            "protocol": self.protocol,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "vehicle_id": vehicle_id,
            "position": self.position.as_ref().map(StoredPosition::to_json),
        })
    }
}

/// The open database. Its trees are private: every layout lives here, behind typed methods, so
/// that a change of key or value format is a change of this file only.
///
/// - `devices`: device id -> [`DeviceRecord`] (postcard); the records each commit changed wait
///   in the commit journal until they are folded into it ([`DeviceLog`])
/// - `vehicles`: vehicle id -> the vehicle's API body (JSON text; see `crate::registry`)
/// - `rules`: device id -> the rule state of a registered device (postcard)
/// - `meta`: keys and counters (`alerts_raised`, `jt808_auth_key`, and how far the journal's
///   parts were filed: `journal.devices_filed`, `journal.history_filed`)
/// - `registrations`: JT/T 808 terminal number -> the terminal id it registered with (UTF-8)
/// - `risk`: vehicle id -> its risk reasons ([`crate::risk::RiskState`], postcard)
/// - `history_recent` (and `history`, the first layout's blocks): every fix kept, after the
///   commit journal, with the sealed blocks in day files and their index in the `history` folder beside
///   the database (`crate::history`, which owns their layout)
/// - `commands`: `c` + id (u64 BE) -> [`CommandRecord`] (postcard); `d` + device id + `0` + id ->
///   nothing (a device's commands in order); `o` + id -> nothing while the command is open
/// - `zones`: risk zone id -> the zone's API body (JSON text; see `crate::registry::Zone`)
/// - `vehicle_rules`: vehicle id -> the vehicle-wide rule state (postcard; `crate::rules::VehicleRuleState`)
/// - `stays`: vehicle id -> the `long_stay` rule's state (postcard; `crate::rules::long_stay`)
/// - `bound`: device id -> when it was bound to the vehicle it was last on (ms, i64 BE) and that
///   vehicle's id: a vehicle's places read a reused tracker's history from then on only
/// - `held`: device id -> its `reappeared` held after a login (`crate::rules::HeldReappearance`:
///   silent since, last seen, the login; ms, i64 BE, `i64::MIN` for none), so that a restart
///   during the hold still reports the silence it ended
/// - the outbox's own tree (`crate::alert::outbox`), opened through [`Store::open_outbox`]
/// - beside the database, the `journal` folder ([`journal`]): each commit's new device records
///   and fixes, one synced append a commit, until the background passes file them here
///   (`devices_log` and `history_log`, their trees before the journal, are filed at open)
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    devices: DeviceLog,
    vehicles: sled::Tree,
    rules: sled::Tree,
    meta: sled::Tree,
    registrations: sled::Tree,
    risk: sled::Tree,
    history: crate::history::History,
    /// What each commit adds to the last-known records and the history (`journal`).
    journal: journal::Journal,
    commands: sled::Tree,
    zones: sled::Tree,
    vehicle_rules: sled::Tree,
    stays: sled::Tree,
    bound: sled::Tree,
    held: sled::Tree,
    /// Syncs the files sled keeps large pages in, which its flush does not (`blob_sync`); none
    /// for a temporary store.
    blobs: Option<std::sync::Arc<blob_sync::BlobSync>>,
    /// Syncs sled's log file, which its flush does not (`sled_file`).
    sled_file: std::sync::Arc<sled_file::SledFile>,
}

const ALERTS_RAISED: &str = "alerts_raised";
const MQTT_SESSIONS: &str = "mqtt_sessions";

impl Store {
    pub fn open(path: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb.saturating_mul(1 << 20))
            // Durability comes from the engine's explicit flush per commit; the background
            // flush only bounds what a crash of an idle daemon could lose of API-less writes.
            .flush_every_ms(Some(1000))
            .open()?;
        let meta = db.open_tree("meta")?;
        let journal =
            journal::Journal::open(&path.join("journal"), journal::filed_through(&meta)?)?;
        let blobs = std::sync::Arc::new(blob_sync::BlobSync::new(path));
        journal.sync_blobs_of(blobs.clone());
        let sled_file = std::sync::Arc::new(sled_file::SledFile::open(path)?);
        journal.sync_sled_of(sled_file.clone());
        let mut store = Self::from_db(db, journal, path.join("history"), None)?;
        store.blobs = Some(blobs);
        store.sled_file = sled_file;
        Ok(store)
    }

    /// A throwaway database for `replay` and tests.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        let dir = tempfile::Builder::new()
            .prefix("lienwatch-history")
            .tempdir()
            .map_err(|e| StoreError::io("temporary history folder", e))?;
        Self::from_db(
            db,
            journal::Journal::temporary()?,
            dir.path().to_path_buf(),
            Some(dir),
        )
    }

    fn from_db(
        db: sled::Db,
        journal: journal::Journal,
        blocks_dir: std::path::PathBuf,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<Store, StoreError> {
        let meta = db.open_tree("meta")?;
        Ok(Store {
            devices: DeviceLog::open(&db, &db.open_tree("devices")?, &meta, journal.clone())?,
            vehicles: db.open_tree("vehicles")?,
            rules: db.open_tree("rules")?,
            meta,
            registrations: db.open_tree("registrations")?,
            risk: db.open_tree("risk")?,
            history: crate::history::History::open(&db, journal.clone(), blocks_dir, temporary)?,
            journal,
            commands: db.open_tree("commands")?,
            zones: db.open_tree("zones")?,
            vehicle_rules: db.open_tree("vehicle_rules")?,
            stays: db.open_tree("stays")?,
            bound: db.open_tree("bound")?,
            held: db.open_tree("held")?,
            db,
            blobs: None,
            sled_file: std::sync::Arc::new(sled_file::SledFile::temporary()),
        })
    }

    /// The alert outbox, in the same database so that an alert and the state change that raised
    /// it land in one flush.
    pub fn open_outbox(
        &self,
        webhooks: &[String],
        clock: crate::time::Clock,
    ) -> Result<crate::alert::outbox::Outbox, crate::alert::outbox::OutboxError> {
        crate::alert::outbox::Outbox::open_with_clock(&self.db, webhooks, clock)
    }

    /// Moves webhooks' deliveries to new names before [`Store::open_outbox`]
    /// (`Outbox::rename_webhooks`).
    pub fn rename_outbox_webhooks(
        &self,
        renames: &[(String, String)],
    ) -> Result<(), crate::alert::outbox::OutboxError> {
        crate::alert::outbox::Outbox::rename_webhooks(&self.db, renames)
    }

    /// The position history, in the same database so that a fix and the last-known position
    /// it may become land in one flush.
    pub fn history(&self) -> &crate::history::History {
        &self.history
    }

    /// Bytes the database takes on disk (sled's own figure), for the storage benchmarks.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    pub fn get_device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.devices.get(id)
    }

    /// The records one commit changed, as one write (see [`DeviceLog`]).
    pub fn put_devices<'a>(
        &self,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
    ) -> Result<(), StoreError> {
        self.devices.append(records)
    }

    /// Every device's newest record, in id order.
    pub fn all_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices.all()
    }

    /// The device log, for its background fold.
    pub fn device_log(&self) -> &DeviceLog {
        &self.devices
    }

    /// Every stored vehicle as `(id, body)`; the registry parses the body.
    pub fn all_vehicles(&self) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> + '_ {
        string_keyed(&self.vehicles)
    }

    /// Every stored rule state as `(device id, encoded state)`.
    pub fn all_rule_states(
        &self,
    ) -> impl Iterator<Item = Result<(DeviceId, Vec<u8>), StoreError>> + '_ {
        self.rules.iter().map(|r| {
            let (k, v) = r?;
            Ok((device_key(&k), v.to_vec()))
        })
    }

    /// Every vehicle's risk state as `(vehicle id, bytes)`.
    pub fn all_risk(&self) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> + '_ {
        string_keyed(&self.risk)
    }

    /// Every JT/T 808 registration binding.
    pub fn all_registrations(
        &self,
    ) -> impl Iterator<Item = Result<(DeviceId, Box<str>), StoreError>> + '_ {
        self.registrations.iter().map(|r| {
            let (k, v) = r?;
            Ok((device_key(&k), String::from_utf8_lossy(&v).into()))
        })
    }

    /// Every device's binding time as `(device, vehicle, since)`.
    pub fn all_bound(
        &self,
    ) -> impl Iterator<Item = Result<(DeviceId, String, Timestamp), StoreError>> + '_ {
        self.bound.iter().filter_map(|r| {
            let (k, v) = match r {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let (vehicle, since) = writes::decode_bound(&v)?;
            Some(Ok((device_key(&k), vehicle, since)))
        })
    }

    /// Every device's held `reappeared`.
    pub fn all_held(
        &self,
    ) -> impl Iterator<Item = Result<(DeviceId, crate::rules::HeldReappearance), StoreError>> + '_
    {
        self.held.iter().filter_map(|r| {
            let (k, v) = match r {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let held = writes::decode_held(&v)?;
            Some(Ok((device_key(&k), held)))
        })
    }

    /// Every stored risk zone as `(id, body)`; the registry parses the body.
    pub fn all_zones(&self) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> + '_ {
        string_keyed(&self.zones)
    }

    /// Writes (`Some`) or deletes (`None`) zones in one atomic batch: a bulk import lands whole.
    pub fn put_zones<'a>(
        &self,
        zones: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (id, body) in zones {
            match body {
                Some(b) => batch.insert(id.as_bytes(), b),
                None => batch.remove(id.as_bytes()),
            }
        }
        self.zones.apply_batch(batch)?;
        Ok(())
    }

    /// A writer of zones for a thread other than the engine's (see [`ZoneWriter`]).
    pub fn zone_writer(&self) -> ZoneWriter {
        ZoneWriter {
            db: self.db.clone(),
            zones: self.zones.clone(),
            blobs: self.blobs.clone(),
            sled_file: self.sled_file.clone(),
        }
    }

    /// Every stored vehicle-wide rule state as `(vehicle id, encoded state)`.
    pub fn all_vehicle_rule_states(
        &self,
    ) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> + '_ {
        string_keyed(&self.vehicle_rules)
    }

    /// Every stored `long_stay` rule state as `(vehicle id, encoded state)`.
    pub fn all_stay_states(
        &self,
    ) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> + '_ {
        string_keyed(&self.stays)
    }

    /// How many alerts were ever raised: part of each alert's id, so it must survive restarts.
    pub fn alerts_raised(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(ALERTS_RAISED)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// How many MQTT sessions (`mqtt.sessions`) the broker may still hold for lienwatch: the
    /// ones above a lowered count are drained and deleted at the next start (`ingest::mqtt`).
    pub fn mqtt_sessions(&self) -> Result<Option<u16>, StoreError> {
        Ok(self
            .meta
            .get(MQTT_SESSIONS)?
            .and_then(|v| <[u8; 2]>::try_from(v.as_ref()).ok())
            .map(u16::from_be_bytes))
    }

    /// Records the MQTT session count, on disk at once.
    pub fn set_mqtt_sessions(&self, n: u16) -> Result<(), StoreError> {
        self.meta.insert(MQTT_SESSIONS, &n.to_be_bytes())?;
        self.sled_file.flush(&self.db)?;
        Ok(())
    }

    /// A value kept in the meta tree, created with `init` on first use (JT/T 808 key). Flushed at
    /// once: it must not change across a crash.
    pub fn meta_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(v) = self.meta.get(key)? {
            return Ok(v.to_vec());
        }
        let v = init();
        self.meta.insert(key, v.clone())?;
        self.sled_file.flush(&self.db)?;
        Ok(v)
    }

    /// Writes a command and keeps its indexes: the device's list, and the open set.
    pub fn put_command(&self, rec: &CommandRecord) -> Result<(), StoreError> {
        let id = rec.id.to_be_bytes();
        let body = postcard::to_allocvec(rec).map_err(|e| corrupt_command(e.to_string()))?;
        // One batch: a record on disk as answered with its key still in the open set would be
        // loaded as open after a crash and sent again.
        let mut b = sled::Batch::default();
        b.insert(&command_key(b'c', &id)[..], body);
        b.insert(device_command_key(&rec.device_id, rec.id), &[][..]);
        if rec.state.is_open() {
            b.insert(&command_key(b'o', &id)[..], &[][..]);
        } else {
            b.remove(&command_key(b'o', &id)[..]);
        }
        self.commands.apply_batch(b)?;
        Ok(())
    }

    pub fn get_command(&self, id: u64) -> Result<Option<CommandRecord>, StoreError> {
        self.commands
            .get(command_key(b'c', &id.to_be_bytes()))?
            .map(|v| postcard::from_bytes(&v).map_err(|e| corrupt_command(e.to_string())))
            .transpose()
    }

    /// A device's commands, newest first, at most `limit`.
    pub fn device_commands(
        &self,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let mut prefix = vec![b'd'];
        prefix.extend_from_slice(device.as_str().as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.commands.scan_prefix(&prefix).rev().take(limit) {
            let (k, _) = kv?;
            let id = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt_command("bad device index key".into()))?;
            out.extend(self.get_command(id)?);
        }
        Ok(out)
    }

    /// Every open (queued or sent) command.
    pub fn open_commands(&self) -> impl Iterator<Item = Result<CommandRecord, StoreError>> + '_ {
        self.commands.scan_prefix([b'o']).map(move |kv| {
            let (k, _) = kv?;
            let id = k
                .get(1..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt_command("bad open index key".into()))?;
            self.get_command(id)?
                .ok_or_else(|| corrupt_command(format!("open command {id} missing")))
        })
    }

    /// The highest command id ever stored (ids never repeat, across restarts too).
    pub fn last_command_id(&self) -> Result<Option<u64>, StoreError> {
        match self.commands.scan_prefix([b'c']).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, _) = kv?;
                Ok(k.get(1..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes))
            }
        }
    }

    /// Makes every write so far durable: sled's trees, then the commit journal's record of
    /// what the commit under way staged. In that order, so that a kill in between keeps the
    /// commit's alerts and rule states and loses only its positions, never acknowledged, which
    /// the device sends again. The other order could keep a position and lose the alert it
    /// raised: the device's resend would then look old to the engine.
    ///
    /// sled's blob files are not synced here: no record a device's acknowledgement covers is
    /// large enough to be kept in one (rule states, alerts and the like are far below a 128 KiB
    /// page of 17 records, which the API's limits on the fields alerts carry and on devices per
    /// vehicle keep so, `registry::MAX_FIELD`; device records and fixes go to the journal). What can be, a large
    /// fence or zone, is an admin write, whose answer waits for [`Store::blobs`] to sync them
    /// off the engine thread, so that a 12 MB fence's sync never holds device replies.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let n = self.sled_file.flush(&self.db)?;
        self.journal.commit()?;
        Ok(n)
    }

    /// What syncs sled's blob files (`blob_sync`); none for a temporary store.
    pub fn blobs(&self) -> Option<std::sync::Arc<BlobSync>> {
        self.blobs.clone()
    }
}

/// Writes a bulk zone import from outside the engine thread, a slice at a time. Tens of
/// thousands of zones are a second of sled's work and megabytes of its one log: written in the
/// engine's turn, or in one batch that every commit's flush then waited behind, they held every
/// device's acknowledgement (CONTRACT.md "Admin requests never stall ingestion"). Its caller
/// keeps zone changes one at a time, so the engine's own zone writes never cross it.
#[derive(Clone)]
pub struct ZoneWriter {
    db: sled::Db,
    zones: sled::Tree,
    blobs: Option<std::sync::Arc<blob_sync::BlobSync>>,
    sled_file: std::sync::Arc<sled_file::SledFile>,
}

/// Zones per slice: about 150 KB of sled's log, a few milliseconds of its flush.
const ZONE_SLICE: usize = 500;

impl ZoneWriter {
    /// Writes the zones and returns once they are all on disk, counting in `written` those
    /// that are (a prefix of `zones`). A failure or a crash part-way leaves the slices written
    /// before it: the import is an upsert, so sending it again completes it.
    pub fn put_durably<'a>(
        &self,
        zones: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        written: &mut usize,
    ) -> Result<(), StoreError> {
        let mut zones = zones.into_iter().peekable();
        while zones.peek().is_some() {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for (id, body) in zones.by_ref().take(ZONE_SLICE) {
                batch.insert(id.as_bytes(), body);
                n += 1;
            }
            self.zones.apply_batch(batch)?;
            self.sled_file.flush(&self.db)?;
            BlobSync::sync_if_any(self.blobs.as_deref())?;
            *written += n;
        }
        Ok(())
    }
}

/// Opens a database a test has just dropped in this process. sled lets go of its lock only
/// when its last I/O thread has finished with the files, which can be a moment after the drop
/// returns; a restarted daemon is a new process and never waits for this.
#[cfg(test)]
pub(crate) fn reopen<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(t: i64, valid: bool) -> Position {
        Position {
            time: Timestamp::from_secs(t),
            lat: 22.5,
            lon: 114.0,
            valid,
            ..Default::default()
        }
    }

    /// CONTRACT.md "Positions": the newest fix by time is the last-known position, valid or
    /// not; the newest valid one is kept beside it.
    #[test]
    fn newest_fix_wins_and_late_fixes_do_not_replace() {
        let mut r = DeviceRecord::new(DeviceId::new("1"), Protocol::Gt06, Timestamp::from_secs(0));
        assert!(r.offer_position(&pos(100, true), Timestamp::from_secs(101)));
        assert!(!r.offer_position(&pos(50, true), Timestamp::from_secs(102)));
        assert_eq!(r.last_valid_json(), None, "the same fix: not shown twice");
        assert!(r.offer_position(&pos(200, false), Timestamp::from_secs(203)));
        assert_eq!(r.position.unwrap().time, Timestamp::from_secs(200));
        assert_eq!(r.last_valid().unwrap().time, Timestamp::from_secs(100));
        assert_eq!(
            r.last_valid_json().unwrap()["time"],
            serde_json::json!(Timestamp::from_secs(100))
        );
        // A late valid fix: older than the last-known position, which it leaves; newer than the
        // valid one kept, which it becomes.
        assert!(!r.offer_position(&pos(150, true), Timestamp::from_secs(204)));
        assert_eq!(r.last_valid().unwrap().time, Timestamp::from_secs(150));
        assert!(r.offer_position(&pos(300, true), Timestamp::from_secs(301)));
        assert_eq!(r.position.unwrap().time, Timestamp::from_secs(300));
        assert_eq!(r.last_valid_json(), None);
    }

    #[test]
    fn records_of_the_layout_before_last_valid_still_read() {
        let old = postcard::to_allocvec(&DeviceRecordV2 {
            device_id: DeviceId::new("868120145233604"),
            protocol: Protocol::Gt06,
            first_seen: Timestamp::from_secs(1),
            last_seen: Timestamp::from_secs(2),
            position: Some(StoredPosition::new(
                &pos(100, true),
                Timestamp::from_secs(101),
            )),
        })
        .unwrap();
        let r = decode_device(&old).unwrap();
        assert_eq!(r.position.unwrap().time, Timestamp::from_secs(100));
        assert_eq!(
            r.last_valid(),
            r.position,
            "that layout's position was its newest valid fix"
        );
        assert_eq!(r.last_valid_json(), None);
        let none = postcard::to_allocvec(&DeviceRecordV2 {
            device_id: DeviceId::new("1"),
            protocol: Protocol::Gt06,
            first_seen: Timestamp::from_secs(1),
            last_seen: Timestamp::from_secs(2),
            position: Some(StoredPosition::new(
                &pos(100, false),
                Timestamp::from_secs(101),
            )),
        })
        .unwrap();
        assert_eq!(decode_device(&none).unwrap().last_valid(), None);
    }

    #[test]
    fn records_round_trip_through_sled() {
        let s = Store::temporary().unwrap();
        let mut r = DeviceRecord::new(
            DeviceId::new("868120145233604"),
            Protocol::Gt06,
            Timestamp::from_secs(5),
        );
        r.offer_position(&pos(100, true), Timestamp::from_secs(101));
        s.put_devices([&r]).unwrap();
        let back = s.get_device("868120145233604").unwrap().unwrap();
        assert_eq!(back.position, r.position);
        assert_eq!(back.first_seen, r.first_seen);
    }

    #[test]
    fn records_of_the_layout_before_cell_and_wifi_still_read() {
        let old = postcard::to_allocvec(&DeviceRecordV1 {
            device_id: DeviceId::new("868120145233604"),
            protocol: Protocol::Gt06,
            first_seen: Timestamp::from_secs(1),
            last_seen: Timestamp::from_secs(2),
            position: Some(StoredPositionV1 {
                time: Timestamp::from_secs(100),
                lat: 22.5,
                lon: 114.0,
                valid: true,
                speed_kmh: 0.0,
                course: 0,
                satellites: Some(7),
                altitude_m: None,
                received_at: Timestamp::from_secs(101),
            }),
        })
        .unwrap();
        let r = decode_device(&old).unwrap();
        let p = r.position.unwrap();
        assert_eq!((p.lat, p.satellites, p.cell), (22.5, Some(7), None));
        // And a current record with a cell keeps it.
        let mut cur =
            DeviceRecord::new(DeviceId::new("1"), Protocol::Gt06, Timestamp::from_secs(0));
        let mut lbs = pos(50, false);
        lbs.cell = Some(Cell {
            mcc: 460,
            mnc: 0,
            lac: 9340,
            cid: 3967,
        });
        cur.offer_position(&lbs, Timestamp::from_secs(51));
        let back = decode_device(&postcard::to_allocvec(&cur).unwrap()).unwrap();
        assert_eq!(back.position.unwrap().cell, lbs.cell);
        assert_eq!(back.position.unwrap().to_json()["cell"]["mcc"], 460);
    }
}

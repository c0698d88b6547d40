//! The one normalised shape every protocol produces.
//!
//! Protocol quirks stop at the session (`crate::protocol`): what comes out is a device id, a fix in
//! WGS-84 with a UTC time, and the alarm conditions the frame reported. Rules, the store and alerts
//! only ever see these types.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A device id: decimal digits (CONTRACT.md "Names"). Cheap to clone: sessions cache one per
/// connection and stamp every event with it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    pub fn new(s: &str) -> Self {
        DeviceId(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Device ids are decimal digits; used to validate ids taken from topics and payloads.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
    }

    /// Builds an id from BCD bytes (two digits a byte), dropping leading zeros as CONTRACT.md asks
    /// for JT/T 808 terminal numbers. `None` if a nibble is not a decimal digit.
    pub fn from_bcd(bytes: &[u8]) -> Option<Self> {
        let digits = bcd_digits(bytes)?;
        let s = digits.trim_start_matches('0');
        Some(DeviceId::new(if s.is_empty() { "0" } else { s }))
    }

    /// A GT06 login's IMEI: 8 BCD bytes, the 16-digit form of a 15-digit IMEI, whose leading 0
    /// nibble is dropped (CONTRACT.md "Names"), and only that one: an IMEI may itself begin
    /// with 0 (reporting body 01). `None` if a nibble is not a decimal digit.
    pub fn from_imei_bcd(bytes: &[u8; 8]) -> Option<Self> {
        let digits = bcd_digits(bytes)?;
        Some(DeviceId::new(digits.strip_prefix('0').unwrap_or(&digits)))
    }
}

/// The decimal digits of BCD bytes, two a byte; `None` if a nibble is not a digit.
fn bcd_digits(bytes: &[u8]) -> Option<String> {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for d in [b >> 4, b & 0x0f] {
            if d > 9 {
                return None;
            }
            s.push((b'0' + d) as char);
        }
    }
    Some(s)
}

/// Lets maps keyed by `DeviceId` be queried with a `&str` (hashes agree: the derive hashes the str).
impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !DeviceId::is_valid(&s) {
            return Err(serde::de::Error::custom(format!(
                "device id {s:?} is not a string of 1 to 32 decimal digits"
            )));
        }
        Ok(DeviceId::new(&s))
    }
}

pub use crate::time::Timestamp;

/// Normalised alarm and state conditions (protocols.md §F.3). A small bit set so that decoders
/// fill it without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Alarms(pub u32);

impl Alarms {
    pub const NONE: Alarms = Alarms(0);
    /// External (main) power removed: the wired unit runs on its backup battery.
    pub const POWER_CUT: Alarms = Alarms(1 << 0);
    /// Removal evidence: tamper switch, cover opened, light sensor, OBD unplugged, antenna cut.
    pub const TAMPER: Alarms = Alarms(1 << 1);
    pub const LOW_BATTERY: Alarms = Alarms(1 << 2);
    pub const SOS: Alarms = Alarms(1 << 3);
    /// Towed or moved while parked / armed.
    pub const TOW: Alarms = Alarms(1 << 4);
    pub const VIBRATION: Alarms = Alarms(1 << 5);
    pub const OVERSPEED: Alarms = Alarms(1 << 6);
    /// GSM or GNSS jamming detected by the device.
    pub const JAMMING: Alarms = Alarms(1 << 7);
    /// A geofence the device itself evaluates (not lienwatch's fence).
    pub const DEVICE_GEOFENCE: Alarms = Alarms(1 << 8);
    pub const LOW_POWER: Alarms = Alarms(1 << 9);
    /// Fuel / power relay engaged (immobilised).
    pub const IMMOBILISED: Alarms = Alarms(1 << 10);

    const NAMES: [(Alarms, &'static str); 11] = [
        (Alarms::POWER_CUT, "power_cut"),
        (Alarms::TAMPER, "tamper"),
        (Alarms::LOW_BATTERY, "low_battery"),
        (Alarms::SOS, "sos"),
        (Alarms::TOW, "tow"),
        (Alarms::VIBRATION, "vibration"),
        (Alarms::OVERSPEED, "overspeed"),
        (Alarms::JAMMING, "jamming"),
        (Alarms::DEVICE_GEOFENCE, "device_geofence"),
        (Alarms::LOW_POWER, "low_power"),
        (Alarms::IMMOBILISED, "immobilised"),
    ];

    pub const fn contains(self, other: Alarms) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
    pub const fn union(self, other: Alarms) -> Alarms {
        Alarms(self.0 | other.0)
    }
    pub const fn intersection(self, other: Alarms) -> Alarms {
        Alarms(self.0 & other.0)
    }
    pub const fn difference(self, other: Alarms) -> Alarms {
        Alarms(self.0 & !other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn insert(&mut self, other: Alarms) {
        self.0 |= other.0;
    }
    pub fn set(&mut self, other: Alarms, on: bool) {
        if on {
            self.0 |= other.0
        } else {
            self.0 &= !other.0
        }
    }

    /// The names of the set conditions, in a fixed order (the `alarms` list of CONTRACT.md).
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(a, _)| self.contains(*a))
            .map(|(_, n)| *n)
            .collect()
    }

    pub fn from_name(name: &str) -> Option<Alarms> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(a, _)| *a)
    }
}

impl fmt::Debug for Alarms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.names())
    }
}

/// What one frame says about alarm conditions.
///
/// Protocols differ: JT/T 808 and H02 send the full alarm word in every report (a clear bit means
/// the condition ended), GT06 sends one alarm code per alarm packet (silent about the others).
/// `known` says which conditions this frame reports at all; `active` which of those are on. Rules
/// raise an alert on the edge from off to on, so a condition repeated in every frame alerts once.
/// MQTT JSON reports alarms as events instead (`events`): each listed one happened, and says
/// nothing about whether it goes on.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct AlarmReport {
    pub active: Alarms,
    pub known: Alarms,
    /// Conditions that occurred, each an event of its own: they raise their alert every time and
    /// latch no state (protocols.md E.4: "treat `alarms` as edge events").
    pub events: Alarms,
}

impl AlarmReport {
    pub const NONE: AlarmReport = AlarmReport {
        active: Alarms::NONE,
        known: Alarms::NONE,
        events: Alarms::NONE,
    };

    /// An edge-style report: these conditions are on, nothing is said about the others.
    pub fn raised(a: Alarms) -> Self {
        AlarmReport {
            active: a,
            known: a,
            events: Alarms::NONE,
        }
    }

    /// These conditions occurred, as events: nothing is said about their state.
    pub fn occurred(a: Alarms) -> Self {
        AlarmReport {
            active: a,
            known: Alarms::NONE,
            events: a,
        }
    }

    /// Adds that `cond` is known to be on or off.
    pub fn with(mut self, cond: Alarms, on: bool) -> Self {
        self.known.insert(cond);
        self.active.set(cond, on);
        self
    }
}

/// A fix as the API, `decode` and alerts show it (CONTRACT.md "Positions").
#[derive(Clone, Copy, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Position {
    /// The device's fix time, UTC.
    pub time: Timestamp,
    pub lat: f64,
    pub lon: f64,
    /// The device's own fix flag: false for no fix, LBS only, or a repeated old fix.
    pub valid: bool,
    pub speed_kmh: f64,
    pub course: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satellites: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude_m: Option<f64>,
    /// The serving cell, kept for LBS-only reports (no GNSS fix) so that the cell can still be
    /// looked up; such positions are never valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<Cell>,
    /// The strongest Wi-Fi access point of a Wi-Fi report, for the same reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi: Option<WifiAp>,
}

/// A GSM/LTE cell as devices report it (MCC, MNC, LAC or TAC, cell id).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Cell {
    pub mcc: u16,
    pub mnc: u16,
    pub lac: u32,
    pub cid: u64,
}

/// A Wi-Fi access point seen by the device: its BSSID and signal strength in dBm.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct WifiAp {
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
    pub rssi: i16,
}

/// BSSIDs as `aa:bb:cc:dd:ee:ff`, the form location services take.
mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&parts.join(":"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for b in mac.iter_mut() {
            let part = parts.next().unwrap_or("");
            *b = u8::from_str_radix(part, 16)
                .map_err(|_| serde::de::Error::custom(format!("bad BSSID {text:?}")))?;
        }
        if parts.next().is_some() {
            return Err(serde::de::Error::custom(format!("bad BSSID {text:?}")));
        }
        Ok(mac)
    }
}

impl Position {
    /// A fix the rules may use for geometry: flagged valid, and not the 0/0 null island that
    /// devices send before their first fix.
    pub fn is_usable(&self) -> bool {
        self.valid
            && self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
            && !(self.lat.abs() < 1e-6 && self.lon.abs() < 1e-6)
    }
}

/// The wire protocol (or payload format) an event came in on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Gt06,
    Jt808,
    Teltonika,
    H02,
    Json,
    Owntracks,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Gt06 => "gt06",
            Protocol::Jt808 => "jt808",
            Protocol::Teltonika => "teltonika",
            Protocol::H02 => "h02",
            Protocol::Json => "json",
            Protocol::Owntracks => "owntracks",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "gt06" => Protocol::Gt06,
            "jt808" => Protocol::Jt808,
            "teltonika" => Protocol::Teltonika,
            "h02" => Protocol::H02,
            "json" => Protocol::Json,
            "owntracks" => Protocol::Owntracks,
            _ => return None,
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A located report.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Fix {
    pub position: Position,
    pub alarms: AlarmReport,
    /// Sent late from the device's buffer (GT06 re-upload flag, JT/T 808 0x0704 type 1, ...):
    /// it updates history and last-known position but must not fire real-time alerts on its own.
    pub buffered: bool,
    /// What the report says besides the fix (odometer, fuel, signal, battery ...).
    pub props: Props,
}

/// Readings a report carries besides the fix: the JT/T 808 additional items (2013 §8.18 tables
/// 27/28, kept by 2019) and the vendor items common on loan trackers. Each is absent unless the
/// frame sent it, and `decode` shows only what is present.
#[derive(Clone, Copy, PartialEq, Debug, Default, Serialize)]
pub struct Props {
    /// Odometer in metres (item 0x01, 1/10 km).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odometer_m: Option<u64>,
    /// Fuel in litres (item 0x02, 1/10 L).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "milli")]
    pub fuel_l: Option<f32>,
    /// Speed from the tachograph, km/h (item 0x03, 1/10 km/h).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "milli")]
    pub tacho_speed_kmh: Option<f32>,
    /// Id of a manual-confirm alarm event (item 0x04).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm_event_id: Option<u16>,
    /// The area or route an overspeed alarm refers to (item 0x11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overspeed_area: Option<AreaRef>,
    /// An area or route entered or left (item 0x12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_crossing: Option<AreaCrossing>,
    /// A route section driven too fast or too slowly (item 0x13).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_time: Option<RouteTime>,
    /// Extended vehicle signal bits (item 0x25: lights, brake, reverse ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vehicle_signal: Option<u32>,
    /// IO status bits (item 0x2A: deep sleep, sleep ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<u16>,
    /// Analog inputs AD0 and AD1 (item 0x2B).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analog: Option<[u16; 2]>,
    /// Mobile network signal strength as the device reports it (item 0x30, CSQ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<u8>,
    /// Backup battery charge, percent (vendor items 0x56, 0xD4, 0xE1, 0xE3, 0xE4, 0xFE ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    /// Backup battery voltage (vendor items 0x69, 0xE3, 0xEE).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "milli")]
    pub battery_v: Option<f32>,
    /// External (vehicle) power voltage (vendor items 0x61, 0x82, 0xE1, 0xEE, 0xF1 ...).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "milli")]
    pub power_v: Option<f32>,
}

/// A reading kept as `f32` (the protocols carry at most three decimals; the small type keeps
/// every event small) shown with those three decimals rather than `f32`'s binary tail.
fn milli<S: serde::Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) => s.serialize_f64((f64::from(*x) * 1000.0).round() / 1000.0),
        None => s.serialize_none(),
    }
}

/// An area or route named by an alarm item: its kind (1 circle, 2 rectangle, 3 polygon, 4 route;
/// 0 = no particular area) and id.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct AreaRef {
    pub kind: u8,
    pub id: u32,
}

/// Item 0x12: the area or route and whether the vehicle went out of it (else in).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct AreaCrossing {
    pub kind: u8,
    pub id: u32,
    pub out: bool,
}

/// Item 0x13: the route section, the time driven on it and whether that was too long.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct RouteTime {
    pub id: u32,
    pub seconds: u16,
    pub too_long: bool,
}

impl Fix {
    /// A live fix that reports no alarm conditions.
    pub fn live(position: Position) -> Self {
        Fix {
            position,
            alarms: AlarmReport::NONE,
            buffered: false,
            props: Props::default(),
        }
    }
}

/// What a device said, normalised.
#[derive(Clone, PartialEq, Debug)]
pub enum EventKind {
    /// The device identified itself (GT06 login, JT/T 808 authentication, Teltonika IMEI).
    Login,
    /// A JT/T 808 registration (0x0100): the device identified itself, but its session is not
    /// ready for commands until it authenticates, maybe on another connection than the one
    /// holding its commands. Everything else takes it as a [`EventKind::Login`].
    Registered,
    /// A sign of life without a fix; may carry alarm state (GT06 0x13 terminal info).
    Heartbeat { alarms: AlarmReport },
    /// A fix (valid or not).
    Position(Fix),
    /// An alarm without a usable position.
    Alarm { alarms: AlarmReport },
    /// The device's answer to a command lienwatch sent it (`crate::downlink`).
    CommandAnswer(CommandAnswer),
}

/// What ties a device's answer to the command it answers (CONTRACT.md "Commands to devices").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AnswerKey {
    /// GT06: the 4-byte server flag sent in the 0x80 and echoed in the 0x15 / 0x21.
    ServerFlag(u32),
    /// JT/T 808: the platform serial and message id the answer names.
    Reply { serial: u16, msg_id: u16 },
    /// Teltonika Codec 12 (and an H02 word too long for [`AnswerKey::word`]): no correlation on
    /// the wire; the answer is to the command in flight (one at a time per device).
    InOrder,
    /// H02: the command word (`S20`, `D1`, ...) that the device's `V4` echoes (protocols.md
    /// §D), uppercased and packed big-endian into 8 bytes.
    Word(u64),
}

impl AnswerKey {
    /// The key of an H02 command word: [`AnswerKey::Word`] for 1 to 8 printable characters,
    /// [`AnswerKey::InOrder`] otherwise.
    pub fn word(w: &str) -> AnswerKey {
        if w.is_empty() || w.len() > 8 || !w.bytes().all(|b| b.is_ascii_graphic()) {
            return AnswerKey::InOrder;
        }
        let mut packed = [0u8; 8];
        packed[..w.len()].copy_from_slice(w.to_ascii_uppercase().as_bytes());
        AnswerKey::Word(u64::from_be_bytes(packed))
    }
}

/// A device's answer to a command: the text it sent back and, for a position query answered
/// with a fix (JT/T 808 0x0201), that fix. `ok` is false when the device refused the command.
#[derive(Clone, PartialEq, Debug)]
pub struct CommandAnswer {
    pub key: AnswerKey,
    pub ok: bool,
    pub text: Option<String>,
    pub position: Option<Position>,
}

/// A normalised event from one device.
#[derive(Clone, PartialEq, Debug)]
pub struct Event {
    pub device_id: DeviceId,
    pub protocol: Protocol,
    pub kind: EventKind,
}

impl Event {
    pub fn position(&self) -> Option<&Position> {
        match &self.kind {
            EventKind::Position(f) => Some(&f.position),
            _ => None,
        }
    }

    pub fn alarms(&self) -> AlarmReport {
        match &self.kind {
            EventKind::Position(f) => f.alarms,
            EventKind::Heartbeat { alarms } | EventKind::Alarm { alarms } => *alarms,
            EventKind::Login | EventKind::Registered | EventKind::CommandAnswer(_) => {
                AlarmReport::NONE
            }
        }
    }

    /// The JSON object `lienwatch decode` prints for this event (CONTRACT.md "decode").
    /// `device_id` is left out when the bytes did not carry it (an empty id).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.to_json_inner();
        if self.device_id.as_str().is_empty() {
            if let Some(o) = v.as_object_mut() {
                o.remove("device_id");
            }
        }
        v
    }

    fn to_json_inner(&self) -> serde_json::Value {
        use serde_json::json;
        match &self.kind {
            EventKind::Position(f) => {
                let p = &f.position;
                let mut v = json!({
                    "type": "position",
                    "device_id": self.device_id.as_str(),
                    "time": p.time,
                    "lat": round6(p.lat),
                    "lon": round6(p.lon),
                    "valid": p.valid,
                    "speed_kmh": (p.speed_kmh * 100.0).round() / 100.0,
                    "course": p.course,
                    "alarms": f.alarms.active.names(),
                });
                if let Some(s) = p.satellites {
                    v["satellites"] = json!(s);
                }
                if let Some(a) = p.altitude_m {
                    v["altitude_m"] = json!(a);
                }
                if let Some(c) = p.cell {
                    v["cell"] = json!(c);
                }
                if let Some(w) = p.wifi {
                    v["wifi"] = json!(w);
                }
                if f.buffered {
                    v["buffered"] = json!(true);
                }
                if let (Some(o), serde_json::Value::Object(props)) =
                    (v.as_object_mut(), json!(f.props))
                {
                    o.extend(props);
                }
                v
            }
            EventKind::Login => json!({"type": "login", "device_id": self.device_id.as_str()}),
            EventKind::Registered => {
                json!({"type": "login", "device_id": self.device_id.as_str(), "registration": true})
            }
            EventKind::Heartbeat { alarms } => json!({
                "type": "heartbeat",
                "device_id": self.device_id.as_str(),
                "alarms": alarms.active.names(),
            }),
            EventKind::Alarm { alarms } => json!({
                "type": "alarm",
                "device_id": self.device_id.as_str(),
                "alarms": alarms.active.names(),
            }),
            EventKind::CommandAnswer(a) => {
                let mut v = json!({
                    "type": "command_answer",
                    "device_id": self.device_id.as_str(),
                    "ok": a.ok,
                });
                match a.key {
                    AnswerKey::ServerFlag(f) => v["server_flag"] = json!(f),
                    AnswerKey::Reply { serial, msg_id } => {
                        v["reply_serial"] = json!(serial);
                        v["reply_id"] = json!(format!("0x{msg_id:04X}"));
                    }
                    AnswerKey::InOrder => {}
                    AnswerKey::Word(w) => {
                        let word = w.to_be_bytes();
                        let word = word.iter().take_while(|&&b| b != 0).map(|&b| b as char);
                        v["command_word"] = json!(word.collect::<String>());
                    }
                }
                if let Some(t) = &a.text {
                    v["text"] = json!(t);
                }
                if let Some(p) = &a.position {
                    v["position"] = json!({"time": p.time, "lat": round6(p.lat), "lon": round6(p.lon), "valid": p.valid});
                }
                v
            }
        }
    }
}

/// Rounds a coordinate to 6 decimals (about 0.1 m), the precision the protocols carry.
pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id refused for its length or its characters says what an id may be.
    #[test]
    fn a_refused_device_id_names_what_an_id_may_be() {
        let read = |s: &str| serde_json::from_value::<DeviceId>(serde_json::json!(s));
        assert_eq!(read(&"1".repeat(32)).unwrap().as_str(), "1".repeat(32));
        for bad in ["1".repeat(33), "12a".into(), String::new()] {
            let e = read(&bad).unwrap_err().to_string();
            assert!(e.contains("1 to 32 decimal digits"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn civil_time_matches_known_instants() {
        let t = Timestamp::from_civil(2024, 5, 20, 10, 30, 15).unwrap();
        assert_eq!(t.secs(), 1_716_201_015);
        assert_eq!(t.to_string(), "2024-05-20T10:30:15Z");
        assert_eq!(Timestamp::from_civil(1970, 1, 1, 0, 0, 0).unwrap().0, 0);
        assert_eq!(
            Timestamp::from_civil(2000, 2, 29, 0, 0, 0).unwrap().secs(),
            951_782_400
        );
        assert!(Timestamp::from_civil(2023, 2, 29, 0, 0, 0).is_none());
        assert!(Timestamp::from_civil(2023, 13, 1, 0, 0, 0).is_none());
        assert!(Timestamp::from_civil(2023, 1, 1, 24, 0, 0).is_none());
    }

    #[test]
    fn timestamp_round_trips_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-11-22T08:15:31.204Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T08:15:31.204Z");
        let t = Timestamp::parse_rfc3339("2026-11-22T16:15:30+08:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T08:15:30Z");
    }

    #[test]
    fn bcd_ids_drop_leading_zeros() {
        let id = DeviceId::from_bcd(&[0x08, 0x68, 0x12, 0x01, 0x45, 0x23, 0x36, 0x04]).unwrap();
        assert_eq!(id.as_str(), "868120145233604");
        let id = DeviceId::from_bcd(&[0x01, 0x39, 0x12, 0x34, 0x56, 0x78]).unwrap();
        assert_eq!(id.as_str(), "13912345678");
        assert!(DeviceId::from_bcd(&[0x1a]).is_none());
        assert_eq!(DeviceId::from_bcd(&[0x00, 0x00]).unwrap().as_str(), "0");
    }

    #[test]
    fn gt06_imeis_drop_one_leading_nibble_only() {
        let id = DeviceId::from_imei_bcd(&[0x08, 0x68, 0x12, 0x01, 0x45, 0x23, 0x36, 0x04]);
        assert_eq!(id.unwrap().as_str(), "868120145233604");
        // An IMEI of reporting body 01 keeps its own leading 0: 15 digits.
        let id = DeviceId::from_imei_bcd(&[0x00, 0x13, 0x45, 0x67, 0x89, 0x01, 0x23, 0x45]);
        assert_eq!(id.unwrap().as_str(), "013456789012345");
        assert!(DeviceId::from_imei_bcd(&[0x0A, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn alarm_names_round_trip() {
        let a = Alarms::POWER_CUT.union(Alarms::TAMPER);
        assert_eq!(a.names(), vec!["power_cut", "tamper"]);
        assert_eq!(Alarms::from_name("tamper"), Some(Alarms::TAMPER));
        let r = AlarmReport::NONE.with(Alarms::POWER_CUT, false);
        assert!(r.known.contains(Alarms::POWER_CUT) && r.active.is_empty());
    }

    #[test]
    fn null_island_is_not_usable() {
        let p = Position {
            valid: true,
            ..Default::default()
        };
        assert!(!p.is_usable());
    }
}

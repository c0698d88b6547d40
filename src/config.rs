//! The TOML configuration (CONTRACT.md "Configuration"): parsed strictly (unknown keys are
//! errors), validated, with defaults that work on a laptop. Every error names the file and the key.

use crate::protocol::WireProtocol;
use crate::time::parse_utc_offset;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SYSTEM_CONFIG: &str = "/etc/lienwatch/lienwatch.toml";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// One per port, as written. Absent: one TCP listener per protocol on its default port.
    #[serde(default, rename = "listener")]
    listener_tables: Option<Vec<ListenerConfig>>,
    /// The listeners to open, resolved once when the file is read.
    #[serde(skip)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub rules: crate::rules::RuleConfig,
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<crate::alert::webhook::WebhookConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The text it was read from, for [`Config::with_overrides`].
    #[serde(skip)]
    source: String,
}

/// `[risk]`: the points of each risk reason (CONTRACT.md "Risk tier and the collections queue").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// Overrides of the default points, by reason code.
    #[serde(default)]
    points: std::collections::BTreeMap<String, i64>,
    /// The resolved points.
    #[serde(skip)]
    pub resolved: crate::risk::Points,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The sled database lives here.
    #[serde(default = "default_data_path")]
    pub path: PathBuf,
    /// sled page cache in MiB (sled's own default of 1 GiB is far too much for this data).
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Longest a group commit waits to gather more writes before its flush. It bounds the flush
    /// rate (each flush costs an fsync and sled's write-out): 2 ms adds nothing a tracker notices
    /// (they wait seconds for a reply) and roughly halves the storage work under load. Zero
    /// flushes as soon as the previous flush returns.
    #[serde(default = "default_commit_window", with = "crate::duration")]
    pub commit_window: Duration,
    /// Delivered and failed alerts older than this are deleted from the outbox (hourly).
    /// Pending alerts are kept whatever their age.
    #[serde(default = "default_alert_retention", with = "crate::duration")]
    pub alert_retention: Duration,
    /// Every fix is kept this long, then pruned in the background (CONTRACT.md "Position
    /// history"). 180 days is what the leading car-loan platforms keep.
    #[serde(default = "default_history_retention", with = "crate::duration")]
    pub history_retention: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: default_data_path(),
            cache_mb: default_cache_mb(),
            commit_window: default_commit_window(),
            alert_retention: default_alert_retention(),
            history_retention: default_history_retention(),
        }
    }
}

fn default_data_path() -> PathBuf {
    PathBuf::from("./lienwatch-data")
}
fn default_cache_mb() -> u64 {
    64
}
fn default_commit_window() -> Duration {
    Duration::from_millis(2)
}
fn default_alert_retention() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_history_retention() -> Duration {
    Duration::from_secs(180 * 86_400)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Devices not in the registry: stored and visible, no rules. `false`: refused at login.
    #[serde(default = "yes")]
    pub accept_unknown: bool,
    /// Key for JT/T 808 authentication codes; absent: a random key kept in the store.
    #[serde(default)]
    pub jt808_auth_key: Option<String>,
    /// Default idle timeout of TCP connections (a listener may override it).
    #[serde(default = "default_idle", with = "crate::duration")]
    pub idle_timeout: Duration,
    /// Default cap on concurrent TCP connections per listener.
    #[serde(default = "default_max_conn")]
    pub max_connections: usize,
    /// Largest frame accepted.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// A fix dated more than this ahead of its arrival is `suspect`: acknowledged and counted,
    /// never the last-known position, never seen by a rule (one bad clock must not freeze a car).
    #[serde(default = "default_max_future", with = "crate::duration")]
    pub max_future: Duration,
    /// Most devices in no vehicle that logins may add while `accept_unknown` holds: ids are
    /// the peer's to choose, and each one admitted is kept for good.
    #[serde(default = "default_max_unknown")]
    pub max_unknown_devices: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            accept_unknown: true,
            jt808_auth_key: None,
            idle_timeout: default_idle(),
            max_connections: default_max_conn(),
            max_frame: default_max_frame(),
            max_future: default_max_future(),
            max_unknown_devices: default_max_unknown(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_idle() -> Duration {
    Duration::from_secs(600)
}
fn default_max_conn() -> usize {
    20_000
}
fn default_max_frame() -> usize {
    crate::protocol::DEFAULT_MAX_FRAME
}
/// A TOML error as its line, column, key and message, without the line's text: the line may
/// hold a secret (`secret = "..."` with a bad escape), and this message goes to standard error
/// and, at a refused reload, to the journal.
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    // serde names the value it could not take ("invalid type: integer `31415926`, expected a
    // string"): only what comes after it is kept.
    let msg = e.message().trim_end();
    let msg = match msg.split_once(", expected") {
        Some((what, expected)) if what.starts_with("invalid ") => {
            let kind = what
                .split([' ', '`', '"'])
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            format!("{kind}, expected{expected}")
        }
        _ => msg.to_string(),
    };
    let Some(at) = e.span().map(|s| s.start.min(text.len())) else {
        return msg.to_string();
    };
    let before = text.get(..at).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let col = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    // A key only where the line is `key = value`, never a line inside a multi-line string.
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let opened = |q: &str| text.get(..line_start).unwrap_or("").matches(q).count() % 2 == 1;
    let in_string = opened("\"\"\"") || opened("'''");
    let key = (!in_string)
        .then(|| line.split_once('='))
        .flatten()
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        });
    let lines: Vec<&str> = text.lines().take(line_no).collect();
    let table = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    let place = match (table, key) {
        (Some(t), Some(k)) if !line.trim_start().starts_with('[') => format!(", at {t}.{k}"),
        (_, Some(k)) => format!(", at {k}"),
        (Some(t), None) => format!(", in [{t}]"),
        (None, None) => String::new(),
    };
    format!("line {line_no}, column {col}{place}: {msg}")
}

fn default_max_unknown() -> usize {
    crate::engine::admission::DEFAULT_MAX_UNKNOWN
}
fn default_max_future() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// gt06 | jt808 | teltonika | h02
    pub protocol: String,
    pub bind: String,
    #[serde(default)]
    pub transport: Transport,
    /// Device clock offset for devices configured to local time (`"+08:00"`).
    #[serde(default)]
    pub utc_offset: Option<String>,
    #[serde(default, with = "crate::duration::option")]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// GT06 only: the text a `locate` command sends (models differ); default `WHERE#`.
    #[serde(default)]
    pub gt06_locate: Option<String>,
}

/// A listener after validation.
#[derive(Debug, Clone)]
pub struct Listener {
    pub protocol: WireProtocol,
    pub bind: SocketAddr,
    pub transport: Transport,
    pub utc_offset_s: Option<i32>,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// GT06: what `locate` sends (`None`: `WHERE#`).
    pub gt06_locate: Option<String>,
}

impl Listener {
    /// The command as this listener's devices take it: a GT06 `locate` is the configured text.
    pub fn localise(
        &self,
        cmd: crate::protocol::downlink::Downlink,
    ) -> crate::protocol::downlink::Downlink {
        use crate::protocol::downlink::Downlink;
        match (&cmd, self.protocol, &self.gt06_locate) {
            (Downlink::Locate, WireProtocol::Gt06, Some(text)) => Downlink::Raw(text.clone()),
            _ => cmd,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signs the broker's certificate (mqtts://); absent: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive", with = "crate::duration")]
    pub keep_alive: Duration,
    /// The MQTT 5 receive maximum: unacknowledged messages the broker may have out to each
    /// session. Acks wait for the commit, so this is also the most one commit can hold.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// Sessions in one shared-subscription group; more than one where the broker caps the
    /// window below `max_inflight`, so that their windows add up.
    #[serde(default = "default_sessions")]
    pub sessions: u16,
    /// Session expiry the broker keeps our subscriptions and queue for while we are away.
    #[serde(default = "default_session_expiry", with = "crate::duration")]
    pub session_expiry: Duration,
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<MqttSubscription>,
}

impl MqttConfig {
    /// The broker password: inline, or what `password_file` holds now.
    pub fn password(&self) -> Result<Option<String>, String> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => read_secret(f).map(Some),
            (None, None) => Ok(None),
        }
    }
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_inflight() -> u16 {
    4096
}
fn default_sessions() -> u16 {
    1
}
fn default_session_expiry() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_max_packet() -> usize {
    256 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSubscription {
    /// Topic filter; a `{device_id}` level subscribes as `+` and names the device.
    pub topic: String,
    /// json | owntracks | gt06 | jt808 | teltonika
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "json".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_bind", deserialize_with = "de_socket_addr")]
    pub bind: SocketAddr,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: default_admin_bind(),
            token: None,
            token_file: None,
        }
    }
}

fn default_admin_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `admin.bind`, parsed once into an address; the message names the key, which toml's own
/// error position does not spell out.
fn de_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "admin.bind: {s:?} is not an address like 127.0.0.1:8080"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `lienwatch=debug`); `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (journald-friendly, no ANSI) or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: default_log_format(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}
fn default_log_format() -> String {
    "text".into()
}

/// What the web console's map draws on (CONTRACT.md "Console").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Map tile URL template (`{z}`, `{x}`, `{y}`, optionally `{s}` in the host); `""` draws on
    /// a blank background, so the console works where no tile server is reachable.
    #[serde(default = "default_tile_url")]
    pub tile_url: String,
    /// The datum of the tiles: Chinese map tiles are GCJ-02, so what is drawn is shifted to match
    /// them (stored data stays WGS-84).
    #[serde(default, deserialize_with = "de_tile_crs")]
    pub tile_crs: TileCrs,
    /// Credit shown on the map for the tiles; default: OpenStreetMap's for the OpenStreetMap URL,
    /// none otherwise.
    #[serde(default)]
    pub tile_attribution: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            tile_url: default_tile_url(),
            tile_crs: TileCrs::default(),
            tile_attribution: None,
        }
    }
}

pub const OSM_TILE_URL: &str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";

fn default_tile_url() -> String {
    OSM_TILE_URL.into()
}

impl ConsoleConfig {
    /// The origin tiles are fetched from (`https://*.tiles.example` for a `{s}` host), for the
    /// console's Content-Security-Policy; `None` for no tiles or tiles from the admin address.
    pub fn tile_origin(&self) -> Option<String> {
        tile_origin(&self.tile_url).ok().flatten()
    }

    /// The credit shown for the tiles.
    pub fn attribution(&self) -> String {
        match &self.tile_attribution {
            Some(a) => a.clone(),
            None if self.tile_url == OSM_TILE_URL => "© OpenStreetMap contributors".into(),
            None => String::new(),
        }
    }
}

/// Checks a tile URL template and finds its origin: it goes into a response header, so only
/// plain host characters are let through.
fn tile_origin(url: &str) -> Result<Option<String>, String> {
    if url.is_empty() {
        return Ok(None);
    }
    for p in ["{z}", "{x}", "{y}"] {
        if !url.contains(p) {
            return Err(format!("{url:?} lacks the {p} placeholder"));
        }
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"';,".contains(c))
    {
        return Err(format!("{url:?} contains a character not allowed in a URL"));
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return Ok(None);
    }
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "https" || *s == "http")
        .ok_or_else(|| format!("{url:?} must start with https://, http:// or /"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix("{s}.") {
        Some(h) => format!("*.{h}"),
        None => host.to_string(),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    let body = host.strip_prefix("*.").unwrap_or(&host);
    if body.is_empty() || !body.chars().all(plain) {
        return Err(format!(
            "{url:?}: the host must be a plain name or address ({{s}} only as its first label)"
        ));
    }
    Ok(Some(format!("{scheme}://{host}")))
}

/// The datum of the map tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TileCrs {
    /// OpenStreetMap and most tile servers outside China.
    #[default]
    Wgs84,
    /// AMap/Gaode, Tencent and other maps of China (protocols.md F.1).
    Gcj02,
}

fn de_tile_crs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TileCrs, D::Error> {
    match String::deserialize(d)?.as_str() {
        "wgs84" => Ok(TileCrs::Wgs84),
        "gcj02" => Ok(TileCrs::Gcj02),
        other => Err(serde::de::Error::custom(format!(
            "console.tile_crs: {other:?} must be \"wgs84\" or \"gcj02\""
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {msg}")]
    Read { file: String, msg: String },
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: {key}: {msg}")]
    Invalid {
        file: String,
        key: String,
        msg: String,
    },
}

/// Two binds that cannot both be held: the same port, on the same address or where either
/// is a wildcard (`[::]` takes IPv4 too on a dual-stack host).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Where the config comes from (CONTRACT.md "Command line"). The system file counts as absent
/// only when it is not there: one that cannot be looked at is an error, not a reason to start
/// on the built-in defaults (every tracker port open, a fresh store).
pub fn resolve_path(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = explicit {
        return Ok(Some(p.to_path_buf()));
    }
    if let Ok(p) = std::env::var("LIENWATCH_CONFIG") {
        if !p.is_empty() {
            return Ok(Some(PathBuf::from(p)));
        }
    }
    resolve_system(Path::new(SYSTEM_CONFIG))
}

fn resolve_system(sys: &Path) -> Result<Option<PathBuf>, ConfigError> {
    match sys.try_exists() {
        Ok(there) => Ok(there.then(|| sys.to_path_buf())),
        Err(e) => Err(ConfigError::Read {
            file: sys.display().to_string(),
            msg: e.to_string(),
        }),
    }
}

fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Config {
    /// Loads and validates; `None` means the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let mut c = Config::default();
            c.resolve("<built-in defaults>")?;
            return Ok(c);
        };
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            msg: e.to_string(),
        })?;
        let c = Config::parse(&text, &file)?;
        Ok(c)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            msg: parse_error(text, &e),
        })?;
        c.resolve(file)?;
        c.source = text.to_string();
        Ok(c)
    }

    /// This configuration with the TOML `extra` laid over it key by key (a table of `extra`
    /// merged into the same table here, anything else replacing what was there): what a replay
    /// fixture's own `config` changes, the rest as the operator's file has it.
    pub fn with_overrides(&self, extra: &str, file: &str) -> Result<Config, ConfigError> {
        let table = |text: &str| {
            text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
                file: file.to_string(),
                msg: parse_error(text, &e),
            })
        };
        let mut base = table(&self.source)?;
        overlay(&mut base, table(extra)?);
        Config::parse(&base.to_string(), file)
    }

    fn invalid(file: &str, key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_string(),
            key: key.into(),
            msg: msg.into(),
        }
    }

    /// Checks what serde cannot (protocol names, files that must be readable) and resolves the
    /// listeners, once.
    fn resolve(&mut self, file: &str) -> Result<(), ConfigError> {
        // Checked before the listeners that inherit them, so that the error names the key the
        // operator wrote.
        if self.ingest.max_connections == 0 {
            return Err(Self::invalid(
                file,
                "ingest.max_connections",
                "must be at least 1",
            ));
        }
        // Every reply waits up to one window for its commit: a device gives up on an ack in
        // seconds, and a window of minutes would hold every connection that long.
        if self.storage.commit_window > Duration::from_secs(1) {
            return Err(Self::invalid(
                file,
                "storage.commit_window",
                "must be at most 1s (every device reply waits up to this long)",
            ));
        }
        if self.ingest.idle_timeout < Duration::from_secs(1) {
            return Err(Self::invalid(
                file,
                "ingest.idle_timeout",
                "must be at least 1s",
            ));
        }
        if let Some(k) = &self.ingest.jt808_auth_key {
            // Authentication codes derive from it: a short key lets anyone compute them.
            if k.trim().chars().count() < 8 {
                return Err(Self::invalid(
                    file,
                    "ingest.jt808_auth_key",
                    "must be at least 8 characters (leave it out for a random one)",
                ));
            }
        }
        let listeners = self.resolve_listeners(file)?;
        for (i, l) in listeners.iter().enumerate() {
            if let Some(j) = listeners[..i]
                .iter()
                .position(|o| o.transport == l.transport && same_port(o.bind, l.bind))
            {
                return Err(Self::invalid(
                    file,
                    format!("listener[{i}].bind"),
                    format!(
                        "{} takes the port of listener[{j}] ({})",
                        l.bind, listeners[j].bind
                    ),
                ));
            }
            if l.transport == Transport::Tcp && same_port(l.bind, self.admin.bind) {
                return Err(Self::invalid(
                    file,
                    "admin.bind",
                    format!(
                        "{} takes the port of listener[{i}] ({})",
                        self.admin.bind, l.bind
                    ),
                ));
            }
        }
        self.listeners = listeners;
        if self.admin.token.is_some() && self.admin.token_file.is_some() {
            return Err(Self::invalid(
                file,
                "admin.token",
                "set either token or token_file, not both",
            ));
        }
        if let Some(t) = &self.admin.token {
            check_admin_token(t).map_err(|m| Self::invalid(file, "admin.token", m))?;
        }
        if let Some(p) = &self.admin.token_file {
            read_secret(p)
                .and_then(|t| check_admin_token(&t).map_err(|m| format!("{}: {m}", p.display())))
                .map_err(|m| Self::invalid(file, "admin.token_file", m))?;
        }
        if self.storage.alert_retention < Duration::from_secs(3600) {
            return Err(Self::invalid(
                file,
                "storage.alert_retention",
                "must be at least 1h",
            ));
        }
        self.rules
            .validate()
            .map_err(|e| Self::invalid(file, e.key(), e.to_string()))?;
        self.risk.resolved = crate::risk::Points::with_overrides(&self.risk.points)
            .map_err(|e| Self::invalid(file, e.key(), e.to_string()))?;
        if self.storage.history_retention < Duration::from_secs(60) {
            return Err(Self::invalid(
                file,
                "storage.history_retention",
                "must be at least 1m",
            ));
        }
        if self.storage.cache_mb == 0 {
            return Err(Self::invalid(
                file,
                "storage.cache_mb",
                "must be at least 1",
            ));
        }
        if self.ingest.max_frame < 64 || self.ingest.max_frame > 1 << 20 {
            return Err(Self::invalid(
                file,
                "ingest.max_frame",
                "must be between 64 and 1048576 bytes",
            ));
        }
        if let Some(m) = &self.mqtt {
            validate_mqtt(m, file)?;
        }
        // The name keys each webhook's deliveries in the outbox, so two may not share one; an
        // unnamed webhook is named by its URL without credentials or query.
        let mut names: Vec<String> = Vec::with_capacity(self.webhooks.len());
        for (i, w) in self.webhooks.iter().enumerate() {
            let resolved = w
                .resolve()
                .map_err(|m| Self::invalid(file, format!("webhook[{i}]"), m.to_string()))?;
            if let Some(j) = names.iter().position(|n| *n == resolved.name) {
                return Err(Self::invalid(
                    file,
                    format!("webhook[{i}].name"),
                    format!(
                        "\"{}\" is also webhook[{j}]'s name; give each webhook a name of its own",
                        resolved.name
                    ),
                ));
            }
            names.push(resolved.name);
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(Self::invalid(
                file,
                "log.format",
                "must be \"text\" or \"json\"",
            ));
        }
        check_log_filter(&self.log.level).map_err(|m| Self::invalid(file, "log.level", m))?;
        tile_origin(&self.console.tile_url)
            .map_err(|m| Self::invalid(file, "console.tile_url", m))?;
        if let Some(a) = &self.console.tile_attribution {
            if a.chars().count() > 300 || a.chars().any(char::is_control) {
                return Err(Self::invalid(
                    file,
                    "console.tile_attribution",
                    "must be one line of at most 300 characters",
                ));
            }
        }
        Ok(())
    }

    /// The listeners to open: the configured ones, or one TCP listener per protocol on its
    /// default port.
    fn resolve_listeners(&self, file: &str) -> Result<Vec<Listener>, ConfigError> {
        let Some(ls) = &self.listener_tables else {
            return Ok([
                WireProtocol::Gt06,
                WireProtocol::Jt808,
                WireProtocol::Teltonika,
                WireProtocol::H02,
            ]
            .into_iter()
            .map(|p| Listener {
                protocol: p,
                bind: SocketAddr::from(([0, 0, 0, 0], p.default_port())),
                transport: Transport::Tcp,
                utc_offset_s: None,
                idle_timeout: self.ingest.idle_timeout,
                max_connections: self.ingest.max_connections,
                gt06_locate: None,
            })
            .collect());
        };
        let mut out = Vec::new();
        for (i, l) in ls.iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].{k}");
            let protocol = match (l.protocol.as_str(), l.transport) {
                ("gt06" | "jt808" | "teltonika" | "h02", Transport::Tcp) => {
                    WireProtocol::parse(&l.protocol)
                }
                ("teltonika", Transport::Udp) => Some(WireProtocol::TeltonikaUdp),
                ("h02", Transport::Udp) => Some(WireProtocol::H02),
                ("gt06" | "jt808", Transport::Udp) => {
                    return Err(Self::invalid(
                        file,
                        key("transport"),
                        format!("{} is served over tcp only", l.protocol),
                    ))
                }
                _ => None,
            }
            .ok_or_else(|| {
                Self::invalid(
                    file,
                    key("protocol"),
                    format!(
                        "unknown protocol {:?} (gt06, jt808, teltonika, h02)",
                        l.protocol
                    ),
                )
            })?;
            let bind: SocketAddr = l.bind.parse().map_err(|_| {
                Self::invalid(
                    file,
                    key("bind"),
                    format!("{:?} is not an address like 0.0.0.0:5023", l.bind),
                )
            })?;
            let utc_offset_s = l
                .utc_offset
                .as_deref()
                .map(parse_utc_offset)
                .transpose()
                .map_err(|m| Self::invalid(file, key("utc_offset"), m))?;
            let max_connections = l.max_connections.unwrap_or(self.ingest.max_connections);
            if l.idle_timeout.is_some_and(|t| t < Duration::from_secs(1)) {
                return Err(Self::invalid(
                    file,
                    key("idle_timeout"),
                    "must be at least 1s",
                ));
            }
            if max_connections == 0 {
                return Err(Self::invalid(
                    file,
                    key("max_connections"),
                    "must be at least 1",
                ));
            }
            if let Some(text) = &l.gt06_locate {
                if protocol != WireProtocol::Gt06 {
                    return Err(Self::invalid(
                        file,
                        key("gt06_locate"),
                        "only a gt06 listener sends GT06 commands",
                    ));
                }
                if !crate::protocol::downlink::text_ok(text)
                    || text.len() > crate::protocol::gt06_command::MAX_COMMAND_TEXT
                {
                    return Err(Self::invalid(
                        file,
                        key("gt06_locate"),
                        "1 to 245 bytes of printable ASCII, like \"WHERE#\"",
                    ));
                }
            }
            out.push(Listener {
                protocol,
                bind,
                transport: l.transport,
                utc_offset_s,
                idle_timeout: l.idle_timeout.unwrap_or(self.ingest.idle_timeout),
                max_connections,
                gt06_locate: l.gt06_locate.clone(),
            });
        }
        Ok(out)
    }
}

/// Each session is a connection and two tasks. A broker that holds each session to a window of
/// 1 needs a few hundred for commits of a useful size (256 in `benches/mqtt_ingest.rs`); beyond
/// this, the window is better raised at the broker.
const MAX_MQTT_SESSIONS: u16 = 1024;

fn validate_mqtt(m: &MqttConfig, file: &str) -> Result<(), ConfigError> {
    let bad = |k: &str, msg: String| Config::invalid(file, format!("mqtt.{k}"), msg);
    let rest = m
        .url
        .strip_prefix("mqtt://")
        .or_else(|| m.url.strip_prefix("mqtts://"))
        .ok_or_else(|| {
            bad(
                "url",
                format!("{:?} must start with mqtt:// or mqtts://", m.url),
            )
        })?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| bad("url", format!("{:?} needs a host:port", m.url)))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("url", format!("{:?} needs a host:port", m.url)));
    }
    if m.client_id.trim().is_empty() {
        return Err(bad(
            "client_id",
            "must not be empty (a persistent session needs a stable id)".into(),
        ));
    }
    // MQTT 5 §3.1.2.10 keeps it in two bytes of seconds, and rumqttc refuses less than 5 s.
    if !(Duration::from_secs(5)..=Duration::from_secs(u16::MAX.into())).contains(&m.keep_alive) {
        return Err(bad("keep_alive", "must be between 5s and 65535s".into()));
    }
    if m.max_inflight == 0 {
        return Err(bad("max_inflight", "must be at least 1".into()));
    }
    if !(1..=MAX_MQTT_SESSIONS).contains(&m.sessions) {
        return Err(bad(
            "sessions",
            format!("must be between 1 and {MAX_MQTT_SESSIONS}"),
        ));
    }
    if m.password.is_some() && m.password_file.is_some() {
        return Err(bad(
            "password",
            "set either password or password_file, not both".into(),
        ));
    }
    if m.username.is_none() {
        // MQTT sends a password only with a user name (MQTT 5 §3.1.2.9 allows it, but brokers
        // authenticate the pair): one set alone would be dropped without a word.
        for (set, k) in [
            (m.password.is_some(), "password"),
            (m.password_file.is_some(), "password_file"),
        ] {
            if set {
                return Err(bad(k, "needs mqtt.username".into()));
            }
        }
    }
    if let Some(p) = &m.password_file {
        read_secret(p).map_err(|e| bad("password_file", e))?;
    }
    if let Some(p) = &m.ca_file {
        if !m.url.starts_with("mqtts://") {
            return Err(bad(
                "ca_file",
                "only an mqtts:// url uses a CA; this one is plain mqtt://".into(),
            ));
        }
        pem_certificates(p).map_err(|e| bad("ca_file", e))?;
    }
    if m.max_packet_size < 1024 {
        // 0 is a protocol error at the broker (MQTT 5 §3.1.2.11.4); below a kilobyte no
        // position message fits.
        return Err(bad("max_packet_size", "must be at least 1024 bytes".into()));
    }
    if m.subscriptions.is_empty() {
        return Err(bad(
            "subscription",
            "at least one [[mqtt.subscription]] is needed".into(),
        ));
    }
    for (i, s) in m.subscriptions.iter().enumerate() {
        if !["json", "owntracks", "gt06", "jt808", "teltonika"].contains(&s.format.as_str()) {
            return Err(bad(
                &format!("subscription[{i}].format"),
                format!(
                    "unknown format {:?} (json, owntracks, gt06, jt808, teltonika)",
                    s.format
                ),
            ));
        }
        let key = format!("subscription[{i}].topic");
        if let Err(why) = topic_problem(&s.topic) {
            return Err(bad(&key, format!("{:?}: {why}", s.topic)));
        }
        // The broker sends a message that matches two subscriptions under both, and lienwatch
        // would read both copies by the first: another format must not overlap.
        if let Some((j, _)) = m.subscriptions[..i].iter().enumerate().find(|(_, o)| {
            o.format != s.format && filters_overlap(&as_filter(&o.topic), &as_filter(&s.topic))
        }) {
            return Err(bad(
                &key,
                format!(
                    "{:?} overlaps subscription[{j}].topic {:?}, which has another format: a topic \
                     can only have one",
                    s.topic, m.subscriptions[j].topic
                ),
            ));
        }
    }
    Ok(())
}

/// Why a configured subscription topic cannot be used, if it cannot.
fn topic_problem(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("empty");
    }
    if topic.starts_with("$share/") {
        return Err("lienwatch makes its shared subscription itself: set mqtt.sessions instead");
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err("`#` must be a whole level, and the last");
        }
        if l.contains('+') && *l != "+" {
            return Err("`+` must be a whole level");
        }
        if l.contains("{device_id}") && *l != "{device_id}" {
            return Err("`{device_id}` must be a whole level");
        }
    }
    if levels.iter().filter(|l| **l == "{device_id}").count() > 1 {
        return Err("`{device_id}` may appear once");
    }
    Ok(())
}

/// The filter a subscription topic subscribes with.
fn as_filter(topic: &str) -> String {
    topic.replace("{device_id}", "+")
}

/// Whether some topic matches both filters (`+` one level, `#` the rest).
fn filters_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
            _ => return false,
        }
    }
}

/// Reads a secret file: trimmed, non-empty.
/// The certificates of a PEM file (a CA bundle): an error unless it holds at least one, so that
/// a DER file or a truncated one is refused by `check-config`, not at the first TLS handshake.
pub fn pem_certificates(p: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", p.display()));
    }
    Ok(certs)
}

/// The admin token, inline or from its file: long enough not to be guessed in a few tries.
fn check_admin_token(t: &str) -> Result<(), String> {
    if t.trim().chars().count() < 8 {
        return Err("must be at least 8 characters".into());
    }
    Ok(())
}

/// A `log.level` filter. A bare word that is not a level is a target to tracing, which keeps
/// nothing else: `"warning"` would silence every log line. So a bare word must be a level, and
/// a target takes one (`lienwatch=debug`).
pub fn check_log_filter(spec: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d)) {
            return Err(format!(
                "{d:?} is not a level: use off, error, warn, info, debug or trace, \
                 or target=level (\"lienwatch=debug\")"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(spec)
        .map(drop)
        .map_err(|e| e.to_string())
}

pub fn read_secret(p: &Path) -> Result<String, String> {
    let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(format!("{} is empty", p.display()));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_open_four_listeners() {
        let c = Config::load(None).unwrap();
        let ls = &c.listeners;
        assert_eq!(ls.len(), 4);
        assert_eq!(ls[0].bind.port(), 5023);
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = Config::parse("[storage]\npaht = \"x\"\n", "lw.toml").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("lw.toml") && m.contains("paht"), "{m}");
    }

    #[test]
    fn overrides_are_laid_over_the_file_key_by_key() {
        let base = Config::parse(
            "[ingest]\njt808_auth_key = \"a-key-of-the-operator\"\n\n[rules]\nstay_min = \"10m\"\nstay_radius_m = 150.0\n",
            "base.toml",
        )
        .unwrap();
        let c = base
            .with_overrides("[rules]\nstay_min = \"30m\"\n", "fixture")
            .unwrap();
        assert_eq!(
            c.ingest.jt808_auth_key.as_deref(),
            Some("a-key-of-the-operator")
        );
        assert_eq!(c.rules.stay_min, Duration::from_secs(1800));
        assert_eq!(c.rules.stay_radius_m, 150.0);
        // Over the defaults, and still checked: a bad value names the key and the fixture.
        let c = Config::default()
            .with_overrides("[rules]\nstay_min = \"30m\"\n", "fixture")
            .unwrap();
        assert_eq!(c.rules.stay_min, Duration::from_secs(1800));
        let err = base
            .with_overrides("[rules]\nstay_radius_m = -1.0\n", "fixture x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fixture x") && err.contains("stay_radius_m"),
            "{err}"
        );
    }

    #[test]
    fn places_and_history_settings_are_checked_naming_the_key() {
        for (toml, key) in [
            ("[rules]\ntimezone = \"Mars/Olympus\"\n", "rules.timezone"),
            ("[rules]\nstay_radius_m = 1\n", "rules.stay_radius_m"),
            ("[rules]\nstay_min = \"0s\"\n", "rules.stay_min"),
            (
                "[rules]\ngeofence_margin_m = -1\n",
                "rules.geofence_margin_m",
            ),
            (
                "[storage]\nhistory_retention = \"10s\"\n",
                "storage.history_retention",
            ),
        ] {
            let m = Config::parse(toml, "lw.toml").unwrap_err().to_string();
            assert!(m.contains(key), "{toml}: {m}");
        }
        let c = Config::parse("[rules]\ntimezone = \"Asia/Shanghai\"\n", "lw.toml").unwrap();
        assert!(c.rules.time_zone().is_ok());
        assert_eq!(c.storage.history_retention.as_secs(), 180 * 86_400);
        let c = Config::parse("[risk.points]\nsilent_overdue = 50\n", "lw.toml").unwrap();
        assert_eq!(c.risk.resolved.of(crate::risk::Reason::SilentOverdue), 50);
    }

    #[test]
    fn two_webhooks_may_not_share_a_name() {
        // Unnamed, they are named by the URL without its query: the same name twice.
        let twice = "[[webhook]]\nurl = \"http://127.0.0.1:9/hook?a=1\"\nsecret = \"s\"\n\
                     [[webhook]]\nurl = \"http://127.0.0.1:9/hook?a=2\"\nsecret = \"s\"\n";
        let m = Config::parse(twice, "lw.toml").unwrap_err().to_string();
        assert!(
            m.contains("lw.toml") && m.contains("webhook[1].name") && m.contains("webhook[0]"),
            "{m}"
        );
        let named = "[[webhook]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/a\"\nsecret = \"s\"\n\
                     [[webhook]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/b\"\nsecret = \"s\"\n";
        let m = Config::parse(named, "lw.toml").unwrap_err().to_string();
        assert!(m.contains("webhook[1].name") && m.contains("crm"), "{m}");
        let apart = twice.replacen("[[webhook]]\n", "[[webhook]]\nname = \"first\"\n", 1);
        let c = Config::parse(&apart, "lw.toml").unwrap();
        assert_eq!(c.webhooks.len(), 2);
    }

    /// A TOML error names the line, column and key, never the line's text: it may hold a
    /// secret.
    #[test]
    fn a_parse_error_names_the_key_and_not_its_value() {
        let text = "[[webhook]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"s3cr3t\\q-value\"\n";
        let e = Config::parse(text, "lw.toml").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("webhook.secret"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = Config::parse("[rules]\nsilence_after = \"soon\"\n", "lw.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules.silence_after"), "{e}");
        // A value of the wrong type is not repeated either, nor a line of a multi-line string
        // taken for a key.
        let e = Config::parse("[admin]\ntoken = 31415926\n", "lw.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.token") && e.contains("integer"), "{e}");
        assert!(!e.contains("31415926"), "{e}");
        let text = "[admin]\ntoken = \"\"\"\nc2VjcmV0\\q==\n\"\"\"\n";
        let e = Config::parse(text, "lw.toml").unwrap_err().to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let text = "[admin]\ntoken = \"\"\"\nabc=def\\q\n\"\"\"\n";
        let e = Config::parse(text, "lw.toml").unwrap_err().to_string();
        assert!(!e.contains("abc"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::parse(
            "[[listener]]\nprotocol = \"gt07\"\nbind = \"0.0.0.0:1\"\n",
            "lw.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("listener[0].protocol"), "{e}");
        let e = Config::parse(
            "[[listener]]\nprotocol = \"gt06\"\nbind = \"nowhere\"\n",
            "lw.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("listener[0].bind"), "{e}");
        let e = Config::parse("[rules]\nsilence_after = \"soon\"\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("silence_after"), "{e}");
        let e = Config::parse("[rules]\nseparation_m = -5\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("rules.separation_m"), "{e}");
        let e = Config::parse("[rules]\nrisk_zone_dwell_after = \"0s\"\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("rules.risk_zone_dwell_after"), "{e}");
        let e = Config::parse("[rules]\nseparation = 5\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("separation"), "{e}");
        let c = Config::parse(
            "[rules]\nseparation_m = 500\nrisk_zone_dwell_after = \"30m\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.rules.separation_m, 500.0);
        assert_eq!(c.rules.risk_zone_dwell_after, Duration::from_secs(1800));
        let e = Config::parse("[admin]\nbind = \"x\"\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("admin.bind"), "{e}");
    }

    #[test]
    fn settings_that_would_break_every_connection_name_the_key_written() {
        for (toml, key) in [
            ("[ingest]\nmax_connections = 0\n", "ingest.max_connections"),
            ("[ingest]\nidle_timeout = \"0s\"\n", "ingest.idle_timeout"),
            ("[storage]\ncommit_window = \"1h\"\n", "storage.commit_window"),
            (
                "[ingest]\nmax_connections = 0\n[[listener]]\nprotocol = \"gt06\"\nbind = \"127.0.0.1:5023\"\n",
                "ingest.max_connections",
            ),
            (
                "[[listener]]\nprotocol = \"gt06\"\nbind = \"127.0.0.1:5023\"\nidle_timeout = \"0s\"\n",
                "listener[0].idle_timeout",
            ),
            ("[ingest]\njt808_auth_key = \"\"\n", "ingest.jt808_auth_key"),
            ("[ingest]\njt808_auth_key = \"  short \"\n", "ingest.jt808_auth_key"),
        ] {
            let m = Config::parse(toml, "lw.toml").unwrap_err().to_string();
            assert!(m.contains(key), "{toml}: {m}");
        }
        let c = Config::parse(
            "[ingest]\njt808_auth_key = \"0123456789abcdef\"\nidle_timeout = \"1s\"\n",
            "lw.toml",
        )
        .unwrap();
        assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(1));
    }

    #[test]
    fn binds_that_cannot_both_be_held_are_refused() {
        let two = |a: &str, b: &str| {
            format!(
                "[[listener]]\nprotocol = \"gt06\"\nbind = \"{a}\"\n\
                 [[listener]]\nprotocol = \"h02\"\nbind = \"{b}\"\n"
            )
        };
        for (a, b) in [
            ("0.0.0.0:5023", "127.0.0.1:5023"),
            ("127.0.0.1:5023", "0.0.0.0:5023"),
            ("[::]:5023", "0.0.0.0:5023"),
            ("127.0.0.1:5023", "127.0.0.1:5023"),
        ] {
            let m = Config::parse(&two(a, b), "lw.toml")
                .unwrap_err()
                .to_string();
            assert!(
                m.contains("listener[1].bind") && m.contains("listener[0]"),
                "{a} {b}: {m}"
            );
        }
        Config::parse(&two("127.0.0.1:5023", "127.0.0.2:5023"), "lw.toml").expect("two hosts");
        Config::parse(&two("0.0.0.0:5023", "0.0.0.0:5013"), "lw.toml").expect("two ports");
        // The same port over UDP is another socket.
        let udp = "[[listener]]\nprotocol = \"h02\"\nbind = \"0.0.0.0:5013\"\n\
                   [[listener]]\nprotocol = \"h02\"\ntransport = \"udp\"\nbind = \"0.0.0.0:5013\"\n";
        Config::parse(udp, "lw.toml").expect("tcp and udp");
        let m = Config::parse("[admin]\nbind = \"127.0.0.1:5023\"\n", "lw.toml")
            .unwrap_err()
            .to_string();
        assert!(m.contains("admin.bind") && m.contains("listener[0]"), "{m}");
    }

    #[test]
    fn mqtt_credentials_tls_and_packet_size_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "broker-password\n").unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, include_str!("../tests/common/example-ca.pem")).unwrap();
        // A truncated PEM (or a DER file) would fail only at the first TLS handshake.
        let cut = dir.path().join("cut.pem");
        std::fs::write(&cut, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let cut_line = format!("ca_file = {:?}", cut.display().to_string());
        let mqtt = |url: &str, extra: &str| {
            format!(
                "[mqtt]\nurl = \"{url}\"\nclient_id = \"lw\"\n{extra}\n\
                 [[mqtt.subscription]]\ntopic = \"t/+\"\nformat = \"json\"\n"
            )
        };
        let file = format!("password_file = {:?}", secret.display().to_string());
        let ca_line = format!("ca_file = {:?}", ca.display().to_string());
        for (url, extra, key) in [
            (
                "mqtt://127.0.0.1:1883",
                "password = \"pw\"",
                "mqtt.password",
            ),
            ("mqtt://127.0.0.1:1883", file.as_str(), "mqtt.password_file"),
            (
                "mqtt://127.0.0.1:1883",
                &format!("username = \"u\"\npassword = \"pw\"\n{file}"),
                "mqtt.password",
            ),
            ("mqtt://127.0.0.1:1883", ca_line.as_str(), "mqtt.ca_file"),
            ("mqtts://127.0.0.1:8883", cut_line.as_str(), "mqtt.ca_file"),
            // rumqttc asserts 5 s or more; MQTT keeps it in 16 bits of seconds.
            (
                "mqtt://127.0.0.1:1883",
                "keep_alive = \"2s\"",
                "mqtt.keep_alive",
            ),
            (
                "mqtt://127.0.0.1:1883",
                "keep_alive = \"1d\"",
                "mqtt.keep_alive",
            ),
            (
                "mqtt://127.0.0.1:1883",
                "max_packet_size = 0",
                "mqtt.max_packet_size",
            ),
        ] {
            let m = Config::parse(&mqtt(url, extra), "lw.toml")
                .unwrap_err()
                .to_string();
            assert!(m.contains(key), "{extra}: {m}");
        }
        Config::parse(
            &mqtt(
                "mqtts://127.0.0.1:8883",
                &format!("username = \"u\"\n{file}\n{ca_line}"),
            ),
            "lw.toml",
        )
        .expect("a user, its password file and a CA for mqtts://");
    }

    /// `"warning"` (journald's word) is a target to tracing, and would silence every line;
    /// a token from a file is held to the inline token's length.
    #[test]
    fn a_log_level_that_is_no_level_and_a_short_token_file_name_the_key() {
        for level in ["warning", "info,verbose", "lienwatch"] {
            let m = Config::parse(&format!("[log]\nlevel = {level:?}\n"), "lw.toml")
                .unwrap_err()
                .to_string();
            assert!(m.contains("log.level") && m.contains("not a level"), "{m}");
        }
        for level in [
            "warn",
            "INFO",
            "info,lienwatch=debug",
            "lienwatch::ingest=trace",
        ] {
            Config::parse(&format!("[log]\nlevel = {level:?}\n"), "lw.toml").expect(level);
        }
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("token");
        std::fs::write(&short, "abc\n").unwrap();
        let m = Config::parse(
            &format!("[admin]\ntoken_file = {:?}\n", short.display().to_string()),
            "lw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("admin.token_file") && m.contains("at least 8"),
            "{m}"
        );
    }

    #[test]
    fn a_system_config_that_cannot_be_looked_at_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_system(&dir.path().join("none.toml")).unwrap(), None);
        let there = dir.path().join("lienwatch.toml");
        std::fs::write(&there, "").unwrap();
        assert_eq!(resolve_system(&there).unwrap(), Some(there.clone()));
        // A path through a file: the lookup itself fails (as EACCES does for a user the
        // folder shuts out), and that is not "no config".
        let through = there.join("lienwatch.toml");
        let e = resolve_system(&through).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn console_tiles_are_checked_and_give_the_csp_origin() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.console.tile_crs, TileCrs::Wgs84);
        assert_eq!(
            c.console.tile_origin().as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(c.console.attribution(), "© OpenStreetMap contributors");
        let c = Config::parse(
            "[console]\ntile_url = \"\"\ntile_crs = \"gcj02\"\n",
            "lw.toml",
        )
        .unwrap();
        assert_eq!(c.console.tile_crs, TileCrs::Gcj02);
        assert_eq!(c.console.tile_origin(), None);
        let c = Config::parse(
            "[console]\ntile_url = \"https://{s}.tiles.example:8443/a/{z}/{x}/{y}.png\"\n",
            "lw.toml",
        )
        .unwrap();
        assert_eq!(
            c.console.tile_origin().as_deref(),
            Some("https://*.tiles.example:8443")
        );
        assert_eq!(c.console.attribution(), "");
        for bad in [
            "[console]\ntile_url = \"https://t.example/{z}/{x}.png\"\n",
            "[console]\ntile_url = \"ftp://t.example/{z}/{x}/{y}.png\"\n",
            "[console]\ntile_url = \"https://t.example; script-src *;/{z}/{x}/{y}\"\n",
            "[console]\ntile_url = \"https://a.{s}.example/{z}/{x}/{y}\"\n",
        ] {
            let e = Config::parse(bad, "lw.toml").unwrap_err();
            assert!(e.to_string().contains("console.tile_url"), "{bad}: {e}");
        }
        let e = Config::parse("[console]\ntile_crs = \"bd09\"\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("console.tile_crs"), "{e}");
        let e = Config::parse("[console]\ntiles = \"x\"\n", "lw.toml").unwrap_err();
        assert!(e.to_string().contains("tiles"), "{e}");
    }

    #[test]
    fn gt06_locate_is_a_gt06_listeners_printable_text() {
        let l = "[[listener]]\nprotocol = \"gt06\"\nbind = \"0.0.0.0:1\"\n";
        let c = Config::parse(&format!("{l}gt06_locate = \"DWXX#\"\n"), "lw.toml").unwrap();
        assert_eq!(c.listeners[0].gt06_locate.as_deref(), Some("DWXX#"));
        use crate::protocol::downlink::Downlink;
        assert_eq!(
            c.listeners[0].localise(Downlink::Locate),
            Downlink::Raw("DWXX#".into())
        );
        for (text, what) in [
            (format!("{l}gt06_locate = \"\"\n"), "empty"),
            (format!("{l}gt06_locate = \"a\\u0007\"\n"), "control character"),
            (
                "[[listener]]\nprotocol = \"jt808\"\nbind = \"0.0.0.0:1\"\ngt06_locate = \"WHERE#\"\n"
                    .to_string(),
                "not gt06",
            ),
        ] {
            let e = Config::parse(&text, "lw.toml").expect_err(what).to_string();
            assert!(e.contains("listener[0].gt06_locate"), "{what}: {e}");
        }
    }

    #[test]
    fn contract_example_parses() {
        let text = r#"
[storage]
path = "/var/lib/lienwatch"
[ingest]
accept_unknown = true
[[listener]]
protocol = "gt06"
bind = "0.0.0.0:5023"
[[listener]]
protocol = "teltonika"
bind = "0.0.0.0:5027"
transport = "udp"
[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "lienwatch-1"
[[mqtt.subscription]]
topic = "trackers/{device_id}/position"
format = "json"
[admin]
bind = "127.0.0.1:8080"
token = "0123456789abcdef"
[rules]
silence_after = "6h"
silence_after_wireless = "48h"
geofence_margin_m = 50
startup_grace = "10m"
[[webhook]]
url = "https://collections.example/hooks/lienwatch"
secret = "s3cret"
types = ["geofence_exit", "silent_overdue"]
"#;
        let c = Config::parse(text, "x").unwrap();
        let ls = &c.listeners;
        assert_eq!(ls[1].protocol, WireProtocol::TeltonikaUdp);
        assert_eq!(c.webhooks.len(), 1);
    }

    #[test]
    fn mqtt_topics_name_what_is_wrong() {
        let with = |subs: &str| {
            let text =
                format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nclient_id = \"lw\"\n{subs}");
            Config::parse(&text, "x")
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let sub = |topic: &str, format: &str| {
            format!("[[mqtt.subscription]]\ntopic = \"{topic}\"\nformat = \"{format}\"\n")
        };
        assert_eq!(with(&sub("trackers/{device_id}/position", "json")), Ok(()));
        for (topic, why) in [
            ("$share/g/trackers/{device_id}", "mqtt.sessions"),
            ("trackers/dev{device_id}", "whole level"),
            ("trackers/a+/x", "whole level"),
            ("trackers/#/x", "the last"),
            ("{device_id}/{device_id}", "once"),
        ] {
            let e = with(&sub(topic, "json")).unwrap_err();
            assert!(
                e.contains("mqtt.subscription[0].topic") && e.contains(why),
                "{topic}: {e}"
            );
        }
        // Overlapping filters: fine with one format, refused with two.
        let two = |a: &str, fa: &str, b: &str, fb: &str| with(&(sub(a, fa) + &sub(b, fb)));
        assert!(two("fleet/#", "json", "fleet/{device_id}/raw", "json").is_ok());
        let e = two("fleet/#", "json", "fleet/{device_id}/raw", "gt06").unwrap_err();
        assert!(
            e.contains("subscription[1].topic") && e.contains("overlaps"),
            "{e}"
        );
        assert!(two("fleet/+/json", "json", "fleet/+/raw", "gt06").is_ok());
        assert!(two("a/#", "json", "a", "gt06").is_err(), "a/# matches a");
        assert!(two("a/+", "json", "a", "gt06").is_ok());
    }
}

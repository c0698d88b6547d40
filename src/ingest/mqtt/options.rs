//! From `[mqtt]` to what each session connects with: broker address, TLS, credentials, the
//! persistent-session and flow-control settings, and the routes.

use super::routing::{Format, Route, SessionLayout};
use super::MqttError;
use crate::config::MqttConfig;
use rumqttc::v5::MqttOptions;
use rumqttc::Transport;
use std::sync::Arc;

/// Most messages decoded into one commit: a bound on decode latency before the first commit of a
/// full window; the window itself (`max_inflight`) bounds what is outstanding.
const MAX_BATCH: usize = 1024;

/// Everything a session needs to (re)connect.
#[derive(Clone)]
pub(super) struct Plan {
    /// The options of session 0; [`Plan::session`] derives the others.
    pub opts: MqttOptions,
    pub routes: Arc<[Route]>,
    pub layout: SessionLayout,
    /// Request channel capacity: every ack of a full inflight window, plus control requests.
    pub channel: usize,
    pub max_batch: usize,
}

impl Plan {
    /// The options of session `index`: only the client id differs.
    pub fn session(&self, index: u16) -> MqttOptions {
        let mut o = self.opts.clone();
        o.set_client_id(self.layout.client_id(index));
        o
    }
}

/// Packet ids a session may have in flight outbound. lienwatch never publishes: it sends one
/// SUBSCRIBE and an UNSUBSCRIBE per stale filter at most (`connection::Subscriptions`), so that
/// many, with room to spare, keeps each id unique while in use (MQTT-2.2.1-3). rumqttc's default
/// is 65,535, and it keeps a slot for each: 14.5 MB per session, 3.7 GB of resident memory over
/// the 256 sessions a window of 1 calls for (103 MB with this window).
fn outgoing_window(routes: usize) -> u16 {
    u16::try_from(routes.saturating_mul(2).saturating_add(16)).unwrap_or(u16::MAX)
}

pub(super) fn plan(cfg: &MqttConfig) -> Result<Plan, MqttError> {
    let (tls, rest) = if let Some(r) = cfg.url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = cfg.url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(MqttError::Url(cfg.url.clone()));
    };
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| MqttError::Url(cfg.url.clone()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| MqttError::Url(cfg.url.clone()))?;
    if host.is_empty() {
        return Err(MqttError::Url(cfg.url.clone()));
    }
    let mut routes = Vec::new();
    for (index, s) in cfg.subscriptions.iter().enumerate() {
        let format = Format::parse(&s.format).ok_or_else(|| MqttError::Format {
            index,
            format: s.format.clone(),
        })?;
        routes.push(Route::new(&s.topic, format));
    }

    let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(
            cfg.session_expiry.as_secs().min(u32::MAX as u64) as u32
        ))
        .set_receive_maximum(Some(cfg.max_inflight))
        .set_max_packet_size(Some(cfg.max_packet_size.min(u32::MAX as usize) as u32))
        .set_keep_alive(cfg.keep_alive)
        .set_manual_acks(true)
        .set_outgoing_inflight_upper_limit(outgoing_window(routes.len()));
    if let Some(user) = &cfg.username {
        let password = cfg
            .password()
            .map_err(MqttError::Password)?
            .unwrap_or_default();
        opts.set_credentials(user.clone(), password);
    }
    if tls {
        let ca = match &cfg.ca_file {
            Some(p) => std::fs::read(p).map_err(|e| MqttError::CaFile {
                path: p.display().to_string(),
                msg: e.to_string(),
            })?,
            None => system_roots()?,
        };
        // rumqttc parses the PEM and builds the rustls config with the process-wide provider
        // (ring, installed by the daemon); its `Default` would panic if a platform store fails.
        opts.set_transport(Transport::tls(ca, None, None));
    }
    Ok(Plan {
        opts,
        routes: routes.into(),
        layout: SessionLayout {
            client_id: cfg.client_id.clone(),
            sessions: cfg.sessions.max(1),
        },
        channel: cfg.max_inflight as usize + 16,
        max_batch: MAX_BATCH,
    })
}

/// The platform CA bundle as PEM, from the usual Linux and BSD locations (`SSL_CERT_FILE` first).
fn system_roots() -> Result<Vec<u8>, MqttError> {
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let known = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    env.into_iter()
        .chain(known.iter().map(std::path::PathBuf::from))
        .find_map(|p| std::fs::read(p).ok().filter(|b| !b.is_empty()))
        .ok_or(MqttError::NoRoots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_reads_the_url_and_rejects_bad_ones() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
            [mqtt]
            url = "mqtt://[::1]:18830"
            client_id = "lw"
            [[mqtt.subscription]]
            topic = "a/{device_id}"
            "#,
        )
        .expect("config");
        let Some(mut m) = cfg.mqtt else {
            panic!("no [mqtt]")
        };
        let p = plan(&m).expect("plan");
        assert_eq!(p.opts.broker_address(), ("::1".to_string(), 18830));
        assert!(!p.opts.clean_start());
        assert_eq!(p.opts.receive_maximum(), Some(m.max_inflight));
        assert_eq!(p.layout.sessions, 1);
        m.url = "tcp://x:1".into();
        assert!(matches!(plan(&m), Err(MqttError::Url(_))));
        m.url = "mqtts://x:1".into();
        m.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(plan(&m), Err(MqttError::CaFile { .. })));
    }

    #[test]
    fn each_session_gets_its_own_client_id() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
            [mqtt]
            url = "mqtt://127.0.0.1:1883"
            client_id = "lw"
            sessions = 3
            [[mqtt.subscription]]
            topic = "a/{device_id}"
            "#,
        )
        .expect("config");
        let Some(m) = cfg.mqtt else {
            panic!("no [mqtt]")
        };
        let p = plan(&m).expect("plan");
        let ids: Vec<String> = (0..3).map(|i| p.session(i).client_id()).collect();
        assert_eq!(ids, ["lw", "lw-1", "lw-2"]);
        assert_eq!(p.session(2).receive_maximum(), Some(m.max_inflight));
        assert_eq!(p.layout.filter(&p.routes[0].filter), "$share/lw/a/+");
    }

    #[test]
    fn the_window_defaults_to_thousands_and_sessions_are_bounded() {
        let text = |extra: &str| {
            format!(
                "[storage]\npath = \"data\"\n[admin]\nbind = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdef\"\n\
                 [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nclient_id = \"lw\"\n{extra}\n\
                 [[mqtt.subscription]]\ntopic = \"a/{{device_id}}\"\n"
            )
        };
        let c = crate::config::Config::parse(&text(""), "x").expect("valid");
        let m = c.mqtt.expect("[mqtt]");
        assert_eq!((m.max_inflight, m.sessions), (4096, 1));
        assert!(crate::config::Config::parse(&text("sessions = 1024"), "x").is_ok());
        for bad in ["sessions = 0", "sessions = 1025"] {
            let e = crate::config::Config::parse(&text(bad), "x").expect_err(bad);
            assert!(e.to_string().contains("mqtt.sessions"), "{bad}: {e}");
        }
    }
}

//! Topic routing: which configured subscription a topic belongs to and which level names the
//! device, and the filters and client ids each session subscribes with.

use crate::protocol::WireProtocol;

/// What a subscription's payloads are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    OwnTracks,
    /// Raw device frames, one fresh sessionless decoder per message.
    Raw(WireProtocol),
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "json" => Format::Json,
            "owntracks" => Format::OwnTracks,
            "gt06" => Format::Raw(WireProtocol::Gt06),
            "jt808" => Format::Raw(WireProtocol::Jt808),
            "teltonika" => Format::Raw(WireProtocol::Teltonika),
            _ => return None,
        })
    }
}

/// A configured subscription: the filter sent to the broker and where the device id sits.
#[derive(Clone, Debug)]
pub struct Route {
    /// The topic filter with `{device_id}` replaced by `+`.
    pub filter: String,
    /// Index of the `{device_id}` level, if the configured topic has one.
    pub device_level: Option<usize>,
    pub format: Format,
}

impl Route {
    pub fn new(topic: &str, format: Format) -> Route {
        let mut device_level = None;
        let levels: Vec<&str> = topic
            .split('/')
            .enumerate()
            .map(|(i, l)| {
                if l == "{device_id}" {
                    device_level.get_or_insert(i);
                    "+"
                } else {
                    l
                }
            })
            .collect();
        // OwnTracks publishes to `<base>/<user>/<device>`, and the base is the app's setting:
        // without a `{device_id}`, the device is the filter's last `+` level (the third level
        // of the topic only when the filter has none, as in `owntracks/#`).
        if format == Format::OwnTracks && device_level.is_none() {
            device_level = levels.iter().rposition(|l| *l == "+");
        }
        Route {
            filter: levels.join("/"),
            device_level,
            format,
        }
    }

    /// `Some(device level value)` when `topic` matches this route's filter.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Option<&'t str>> {
        if !filter_matches(&self.filter, topic) {
            return None;
        }
        Some(self.device_level.and_then(|i| topic.split('/').nth(i)))
    }
}

/// The route a topic belongs to (the first that matches) and its device level value.
pub fn route<'r, 't>(routes: &'r [Route], topic: &'t str) -> Option<(&'r Route, Option<&'t str>)> {
    routes.iter().find_map(|r| r.matches(topic).map(|d| (r, d)))
}

/// MQTT topic filter matching (`+` one level, `#` the rest; `$` topics only match explicitly).
/// Shared subscriptions (`$share/<group>/<filter>`) match on the filter part.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, f)) => f,
            None => return false,
        },
        None => filter,
    };
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// How the subscription is spread over `mqtt.sessions` broker sessions.
///
/// One session keeps the plain filters, as before sessions existed. Several sessions join one
/// shared-subscription group (MQTT 5 `$share/<group>/`), named after the client id so that two
/// lienwatch deployments on one broker do not split each other's messages. Session 0 keeps the
/// configured client id (so going from one session to several keeps its queue), the others add
/// `-<index>`; all stable across restarts so that each finds its persistent session again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionLayout {
    pub client_id: String,
    pub sessions: u16,
}

impl SessionLayout {
    pub fn shared(&self) -> bool {
        self.sessions > 1
    }

    /// The client id of session `index` (0-based).
    pub fn client_id(&self, index: u16) -> String {
        if index > 0 {
            format!("{}-{index}", self.client_id)
        } else {
            self.client_id.clone()
        }
    }

    /// The share group name: the client id with the characters a filter level cannot hold
    /// (`/`, `+`, `#`) replaced.
    pub fn group(&self) -> String {
        self.client_id
            .chars()
            .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
            .collect()
    }

    /// The filter session subscribes with for a route's filter.
    pub fn filter(&self, filter: &str) -> String {
        if self.shared() {
            format!("$share/{}/{filter}", self.group())
        } else {
            filter.to_string()
        }
    }

    /// The filter of the other layout, which a session drops when it finds it left in its
    /// persistent session by an earlier configuration (only the layout's own copy of each
    /// message is wanted).
    pub fn other_filter(&self, filter: &str) -> String {
        if self.shared() {
            filter.to_string()
        } else {
            format!("$share/{}/{filter}", self.group())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_turn_the_placeholder_into_a_wildcard() {
        let r = Route::new("trackers/{device_id}/position", Format::Json);
        assert_eq!(r.filter, "trackers/+/position");
        assert_eq!(r.device_level, Some(1));
        assert_eq!(r.matches("trackers/123/position"), Some(Some("123")));
        assert_eq!(r.matches("trackers/123/status"), None);
        assert_eq!(r.matches("trackers/123/position/x"), None);
        let r = Route::new("tenant/owntracks/+/+", Format::OwnTracks);
        assert_eq!(r.matches("tenant/owntracks/1001/5"), Some(Some("5")));
        let r = Route::new("owntracks/#", Format::OwnTracks);
        assert_eq!(r.device_level, None);
        assert_eq!(r.matches("owntracks/alice/42"), Some(None));
    }

    #[test]
    fn the_first_matching_route_wins() {
        let routes = [
            Route::new("a/{device_id}", Format::Json),
            Route::new("a/#", Format::OwnTracks),
        ];
        let (r, d) = route(&routes, "a/7").expect("routed");
        assert_eq!((r.format, d), (Format::Json, Some("7")));
        let (r, d) = route(&routes, "a/7/x").expect("routed");
        assert_eq!((r.format, d), (Format::OwnTracks, None));
        assert!(route(&routes, "b/7").is_none());
    }

    #[test]
    fn filter_matching_follows_the_spec() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a/b"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("a/b", "a"));
        assert!(filter_matches("$share/g/a/+", "a/b"));
        assert!(!filter_matches("$share/g", "g"));
        assert!(filter_matches("a//c", "a//c"));
    }

    #[test]
    fn one_session_keeps_the_plain_layout() {
        let l = SessionLayout {
            client_id: "lw-1".into(),
            sessions: 1,
        };
        assert_eq!(l.client_id(0), "lw-1");
        assert_eq!(l.filter("t/+/p"), "t/+/p");
        assert_eq!(l.other_filter("t/+/p"), "$share/lw-1/t/+/p");
    }

    #[test]
    fn several_sessions_share_one_group() {
        let l = SessionLayout {
            client_id: "lw/a+b#".into(),
            sessions: 3,
        };
        assert_eq!(l.client_id(0), "lw/a+b#");
        assert_eq!(l.client_id(1), "lw/a+b#-1");
        assert_eq!(l.client_id(2), "lw/a+b#-2");
        assert_eq!(l.group(), "lw_a_b_");
        assert_eq!(l.filter("t/+/p"), "$share/lw_a_b_/t/+/p");
        assert_eq!(l.other_filter("t/+/p"), "t/+/p");
        assert!(filter_matches(&l.filter("t/+/p"), "t/9/p"));
    }
}

//! Durations in config and API bodies are strings like `"500ms"`, `"3s"`, `"6h"`, `"2d"`
//! (CONTRACT.md "Configuration"). Use with `#[serde(with = "crate::duration")]`, or
//! `crate::duration::option` for optional fields.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"500ms\", \"6h\" or \"2d\" ({e})"))
}

pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_contract_forms() {
        assert_eq!(super::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(super::parse("6h").unwrap().as_secs(), 6 * 3600);
        assert_eq!(super::parse("2d").unwrap().as_secs(), 2 * 86400);
        assert!(super::parse("six hours").is_err());
    }
}

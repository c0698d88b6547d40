//! Temporary stand-in; replaced by the rules engine.
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default = "d6h", with = "crate::duration")]
    pub silence_after: Duration,
    #[serde(default = "d48h", with = "crate::duration")]
    pub silence_after_wireless: Duration,
    #[serde(default = "d50")]
    pub geofence_margin_m: f64,
    #[serde(default = "d10m", with = "crate::duration")]
    pub startup_grace: Duration,
}
fn d6h() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn d48h() -> Duration {
    Duration::from_secs(48 * 3600)
}
fn d10m() -> Duration {
    Duration::from_secs(600)
}
fn d50() -> f64 {
    50.0
}
impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            silence_after: d6h(),
            silence_after_wireless: d48h(),
            geofence_margin_m: 50.0,
            startup_grace: d10m(),
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceRuleState {}

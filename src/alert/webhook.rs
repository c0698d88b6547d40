//! Temporary stand-in; replaced by signed webhook delivery.
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub types: Option<Vec<crate::alert::AlertType>>,
}
impl WebhookConfig {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

//! The LINE channel's settings, as the host passes them (JSON), validated.

pub use adapter_kit::Secret;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The LINE channel's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The channel secret: signs webhooks (`X-Line-Signature`).
    pub channel_secret: Secret,
    /// The long-lived channel access token: authorizes API calls.
    pub channel_access_token: Secret,
    /// API base URL. Default `https://api.line.me`; a fake server's in tests.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Timeout of one API request, in milliseconds. Default 10,000.
    #[serde(default = "default_timeout")]
    pub request_timeout_ms: u64,
    /// Tries per request for retryable errors. Default 4.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay in milliseconds, doubling per try. Default 250.
    #[serde(default = "default_backoff")]
    pub backoff_base_ms: u64,
}

fn default_api_base() -> String {
    "https://api.line.me".to_owned()
}
fn default_timeout() -> u64 {
    10_000
}
fn default_attempts() -> u32 {
    4
}
fn default_backoff() -> u64 {
    250
}

impl Settings {
    /// Parses and validates settings JSON. Errors name the key and what it should
    /// be, never the value (it may be a secret).
    pub fn from_json(json: &str) -> Result<Self> {
        let settings: Self = adapter_kit::settings::from_json(json).map_err(Error::Settings)?;
        let bad = |key: &str, why: &str| Err(Error::Settings(format!("{key}: {why}")));
        if settings.channel_secret.expose().is_empty() {
            return bad("channel_secret", "must not be empty");
        }
        if settings.channel_access_token.expose().is_empty() {
            return bad("channel_access_token", "must not be empty");
        }
        if !url::Url::parse(&settings.api_base)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return bad("api_base", "must be an http(s) URL");
        }
        if settings.request_timeout_ms == 0 || settings.max_attempts == 0 {
            return bad("request_timeout_ms/max_attempts", "must be above 0");
        }
        Ok(settings)
    }
}

//! The echo channel's settings: the JSON of its `[channels.settings]` table.

use adapter_api::{AdapterError, ErrorKind};
use adapter_kit::Secret;
use serde::Deserialize;

/// What a host config gives the echo channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The secret every webhook carries in `X-Echo-Secret`.
    pub secret: Secret,
    /// Where replies are POSTed, an `http` or `https` URL.
    pub send_url: String,
    /// How long one reply may take, in milliseconds. Default 10,000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

impl Settings {
    /// Parses and checks the settings. An error names the key, never the value: it
    /// may be a secret.
    pub fn from_json(json: &str) -> Result<Self, AdapterError> {
        let invalid = |message: String| AdapterError::new(ErrorKind::INVALID_SETTINGS, message);
        let settings: Self = adapter_kit::settings::from_json(json).map_err(invalid)?;
        if settings.secret.expose().is_empty() {
            return Err(invalid("secret: must not be empty".to_owned()));
        }
        let url_ok = reqwest::Url::parse(&settings.send_url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
        if !url_ok {
            return Err(invalid("send_url: must be an http(s) URL".to_owned()));
        }
        if settings.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms: must be above 0".to_owned()));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_with_a_secret_and_a_url_are_taken_with_defaults() {
        let settings =
            Settings::from_json(r#"{"secret": "s3", "send_url": "https://chat.example/send"}"#)
                .unwrap();
        assert_eq!(settings.secret.expose(), "s3");
        assert_eq!(settings.request_timeout_ms, 10_000);
        assert_eq!(format!("{settings:?}").matches("s3").count(), 0);
    }

    #[test]
    fn a_bad_setting_is_named_without_its_value() {
        for (json, key) in [
            (r#"{"send_url": "https://chat.example/send"}"#, "secret"),
            (r#"{"secret": "", "send_url": "https://x"}"#, "secret:"),
            (
                r#"{"secret": "hunter2", "send_url": "ftp://x"}"#,
                "send_url:",
            ),
            (
                r#"{"secret": 987654321, "send_url": "https://x"}"#,
                "secret:",
            ),
            (
                r#"{"secret": "hunter2", "send_url": "https://x", "sendurl": 1}"#,
                "sendurl:",
            ),
        ] {
            let err = Settings::from_json(json).unwrap_err();
            assert_eq!(err.kind, ErrorKind::INVALID_SETTINGS, "{json}");
            assert!(err.message.contains(key), "{json}: {err}");
            assert!(!err.message.contains("hunter2"), "{json}: {err}");
            assert!(!err.message.contains("987654321"), "{json}: {err}");
        }
    }
}

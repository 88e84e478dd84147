//! The channel settings, as the host passes them (JSON), validated.

use std::time::Duration;

pub use adapter_kit::Secret;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One Facebook Page this app answers for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSettings {
    /// The Page id (the `entry[].id` of its webhooks).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The Page access token used to send as this Page.
    pub access_token: Secret,
}

/// The Messenger channel's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Meta app's secret: signs webhooks and `appsecret_proof`.
    pub app_secret: Secret,
    /// The token typed into the dashboard for the GET handshake.
    pub verify_token: Secret,
    /// Graph API base URL. Default `https://graph.facebook.com`; a fake server in tests.
    #[serde(default = "default_graph_api_base")]
    pub graph_api_base: String,
    /// Graph API version path segment. Default `v25.0`.
    #[serde(default = "default_graph_api_version")]
    pub graph_api_version: String,
    /// The Pages this app sends as.
    pub pages: Vec<PageSettings>,
    /// Accept the legacy `X-Hub-Signature` (sha1) when `X-Hub-Signature-256` is
    /// absent. Default `false`.
    #[serde(default)]
    pub allow_sha1_signature: bool,
    /// Timeout of one Graph API request, in milliseconds. Default 10,000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How many times one Graph request is tried at most. Default 4.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Resend a request that timed out after it may have reached Meta (the Send API
    /// has no idempotency key, so this risks a duplicate). Default `false`.
    #[serde(default)]
    pub retry_after_timeout: bool,
    /// First retry delay in milliseconds; doubles per try, with jitter. Default 250.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest delay between two tries, in milliseconds. Default 10,000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Send API calls per second per Page (Meta's limit: 300). 0 disables pacing.
    #[serde(default = "default_send_rate")]
    pub send_rate_per_second: u32,
    /// Audio and video sends per second per Page (Meta's limit: 10). 0 disables.
    #[serde(default = "default_media_rate")]
    pub media_rate_per_second: u32,
    /// Most Send API calls for one Page sent together as one Graph batch request,
    /// when that many are ready at the same moment (nothing waits for a batch to
    /// fill). 1 sends every call alone. Default and most: 50, Meta's limit.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_send_rate() -> u32 {
    300
}
fn default_media_rate() -> u32 {
    10
}
fn default_batch_size() -> usize {
    crate::send::batch::MAX_CALLS
}

fn default_graph_api_base() -> String {
    "https://graph.facebook.com".to_owned()
}
fn default_graph_api_version() -> String {
    "v25.0".to_owned()
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    4
}
fn default_backoff_base_ms() -> u64 {
    250
}
fn default_backoff_max_ms() -> u64 {
    10_000
}

fn string_or_number<'de, D>(deserializer: D) -> std::result::Result<String, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
}

impl Settings {
    /// Parses and validates settings JSON. Errors name the key and what it should
    /// be, never the value (it may be a secret).
    pub fn from_json(json: &str) -> Result<Self> {
        let settings: Self = adapter_kit::settings::from_json(json).map_err(Error::Settings)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Settings(format!("{key}: {why}")));
        if self.app_secret.expose().is_empty() {
            return bad("app_secret", "must not be empty");
        }
        if self.verify_token.expose().is_empty() {
            return bad("verify_token", "must not be empty");
        }
        match url::Url::parse(&self.graph_api_base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => return bad("graph_api_base", "must be an http(s) URL"),
        }
        let version_ok = self
            .graph_api_version
            .strip_prefix('v')
            .and_then(|v| v.split_once('.'))
            .is_some_and(|(major, minor)| {
                !major.is_empty()
                    && !minor.is_empty()
                    && major
                        .bytes()
                        .chain(minor.bytes())
                        .all(|b| b.is_ascii_digit())
            });
        if !version_ok {
            return bad("graph_api_version", "must look like \"v25.0\"");
        }
        if self.pages.is_empty() {
            return bad("pages", "list at least one Page ({ id, access_token })");
        }
        for (i, page) in self.pages.iter().enumerate() {
            if page.id.is_empty() || !page.id.bytes().all(|b| b.is_ascii_digit()) {
                return bad(&format!("pages[{i}].id"), "must be a numeric Page id");
            }
            if page.access_token.expose().is_empty() {
                return bad(&format!("pages[{i}].access_token"), "must not be empty");
            }
            if self.pages[..i].iter().any(|p| p.id == page.id) {
                return bad(&format!("pages[{i}].id"), "duplicate Page id");
            }
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be above 0");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if !(1..=crate::send::batch::MAX_CALLS).contains(&self.batch_size) {
            return bad(
                "batch_size",
                "must be 1 to 50 (the Graph API takes at most 50 calls in one batch)",
            );
        }
        Ok(())
    }

    /// The Page with this id.
    pub fn page(&self, id: &str) -> Option<&PageSettings> {
        self.pages.iter().find(|p| p.id == id)
    }

    /// The timeout of one Graph request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(extra: &str) -> String {
        format!(
            r#"{{"app_secret":"s3cret","verify_token":"tok","pages":[{{"id":"1","access_token":"PAGE_TOKEN"}}]{extra}}}"#
        )
    }

    #[test]
    fn defaults_apply() {
        let s = Settings::from_json(&json("")).unwrap();
        assert_eq!(s.graph_api_base, "https://graph.facebook.com");
        assert_eq!(s.graph_api_version, "v25.0");
        assert!(!s.allow_sha1_signature);
        assert_eq!(s.batch_size, 50);
        assert_eq!(s.page("1").unwrap().access_token.expose(), "PAGE_TOKEN");
    }

    #[test]
    fn debug_hides_secrets() {
        let s = Settings::from_json(&json("")).unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("PAGE_TOKEN"),
            "{debug}"
        );
    }

    #[test]
    fn a_setting_of_the_wrong_type_is_named_but_its_value_never_shown() {
        let cases = [
            (
                r#"{"app_secret":987654321,"verify_token":"t","pages":[]}"#,
                "app_secret: expected a string",
            ),
            (
                r#"{"app_secret":"s","verify_token":"t","pages":[{"id":"1","access_token":987654321}]}"#,
                "pages[0].access_token: expected a string",
            ),
            (
                &json(r#","max_attempts":"987654321""#),
                "max_attempts: expected u32",
            ),
        ];
        for (input, says) in cases {
            let err = Settings::from_json(input).unwrap_err().to_string();
            assert!(err.contains(says), "{input} -> {err}");
            assert!(!err.contains("987654321"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json(r#","colour":"red""#), "colour"),
            (json(r#","graph_api_base":"ftp://x""#), "graph_api_base"),
            (json(r#","graph_api_version":"25""#), "graph_api_version"),
            (json(r#","max_attempts":0"#), "max_attempts"),
            (json(r#","batch_size":0"#), "batch_size"),
            (json(r#","batch_size":51"#), "batch_size"),
            (
                r#"{"app_secret":"","verify_token":"t","pages":[{"id":"1","access_token":"a"}]}"#
                    .to_owned(),
                "app_secret",
            ),
            (
                r#"{"app_secret":"s","verify_token":"t","pages":[]}"#.to_owned(),
                "pages",
            ),
            (
                r#"{"app_secret":"s","verify_token":"t","pages":[{"id":"1","access_token":""}]}"#
                    .to_owned(),
                "pages[0].access_token",
            ),
            (
                r#"{"app_secret":"s","verify_token":"t","pages":[{"id":"1","access_token":"a"},{"id":1,"access_token":"b"}]}"#
                    .to_owned(),
                "pages[1].id",
            ),
            (r#"{"verify_token":"t","pages":[]}"#.to_owned(), "app_secret"),
        ];
        for (input, key) in cases {
            let err = Settings::from_json(&input).unwrap_err().to_string();
            assert!(err.contains(key), "{input} -> {err}");
        }
    }
}

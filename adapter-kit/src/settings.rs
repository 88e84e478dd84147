//! Settings errors that name the key and what it should be, never the value: a
//! setting may be a secret, and serde's messages quote the value they refused
//! (`invalid type: integer `987654321`, expected a string`).

use adapter_api::settings::{redact, with_key};
use serde::de::DeserializeOwned;

/// Parses a plugin's settings JSON into `T`. An error is one line naming the key
/// (`pages[0].access_token: expected a string`) without the value found there.
pub fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| describe(&err.path().to_string(), err.inner()))?;
    deserializer.end().map_err(|err| describe("", &err))?;
    Ok(value)
}

fn describe(path: &str, err: &serde_json::Error) -> String {
    let message = err.to_string();
    // serde_json appends the position; the host wrote this JSON, so it tells the
    // reader nothing.
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    with_key(path, &redact(message))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        secret: String,
        #[serde(default)]
        pages: Vec<Page>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Page {
        id: u64,
        token: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    fn error(json: &str) -> String {
        from_json::<Settings>(json).unwrap_err()
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_key_and_expected_type_only() {
        let err = error(r#"{"secret": 987654321}"#);
        assert_eq!(err, "secret: expected a string");
        let err = error(r#"{"secret": "s", "pages": [{"id": 1, "token": 987654321}]}"#);
        assert_eq!(err, "pages[0].token: expected a string");
        let err =
            error(r#"{"secret": "s", "pages": [{"id": "hunter2, expected x", "token": "t"}]}"#);
        assert_eq!(err, "pages[0].id: expected u64");
    }

    #[test]
    fn a_bad_variant_or_number_is_refused_without_the_value() {
        let err = error(r#"{"secret": "s", "mode": "hunter2"}"#);
        assert!(err.starts_with("mode: unknown variant, expected"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = error(r#"{"secret": "s", "pages": [{"id": -42424242, "token": "t"}]}"#);
        assert_eq!(err, "pages[0].id: expected u64");
    }

    #[test]
    fn missing_and_unknown_keys_are_named() {
        assert_eq!(error("{}"), "missing field `secret`");
        let err = error(r#"{"secret": "s", "colour": "hunter2"}"#);
        assert!(
            err.starts_with("colour: unknown key, expected one of"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}

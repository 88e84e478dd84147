//! TOML errors told by line and key, never with the text of the file: toml's own
//! message prints the offending line, and serde's quotes the value, either of which
//! may be a secret.

use adapter_api::settings::{redact, with_key};
use serde::de::DeserializeOwned;

/// Parses `text`; an error is one line: where (line and column, or the key) and
/// what is wrong.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let document = toml::de::Deserializer::parse(text)
        .map_err(|err| format!("{}{}", at(text, &err), first_line(err.message())))?;
    serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        format!(
            "{}{}",
            at(text, &inner),
            with_key(&path, &redact(first_line(inner.message())))
        )
    })
}

/// `line 4, column 12: ` where the error is, or nothing when toml does not say.
fn at(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return String::new();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |start| start.chars().count())
        + 1;
    format!("line {line}, column {column}: ")
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim_end()
}

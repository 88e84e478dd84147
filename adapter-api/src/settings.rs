//! Settings errors without the values they refused: a setting may be a secret, and
//! serde's messages quote the value (`invalid type: integer `987654321`, expected a
//! string`). Both sides of the contract describe settings errors this way: the
//! plugin for its settings JSON, the host for its config file.

/// `key: message`, or the message alone when the error is about the whole document
/// (serde_path_to_error's path `.`).
pub fn with_key(path: &str, message: &str) -> String {
    if path.is_empty() || path == "." {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// A serde error message without the value it quotes: `invalid type: string "x",
/// expected u64` becomes `expected u64`. Messages that quote no value (a missing
/// key, a syntax error) are kept as they are.
pub fn redact(message: &str) -> String {
    // serde's `Error::invalid_type`, `invalid_value`, `invalid_length` and
    // `unknown_variant` write "<what was found>, expected <what the type wants>"; what
    // was found may be the value. The expected part comes from the type, so the last
    // ", expected " is the one serde wrote even if the value itself contains those
    // words.
    let after_expected = |rest: &str| {
        rest.rfind(", expected ")
            .map(|at| rest[at + 2..].to_owned())
    };
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            return after_expected(rest).unwrap_or_else(|| "invalid value".to_owned());
        }
    }
    // serde_path_to_error's path already ends with the unknown key.
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return match after_expected(rest) {
            Some(expected) => format!("unknown key, {expected}"),
            None => "unknown key".to_owned(),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match after_expected(rest) {
            Some(expected) => format!("unknown variant, {expected}"),
            None => "unknown variant".to_owned(),
        };
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_that_quote_no_value_are_kept() {
        assert_eq!(redact("missing field `x`"), "missing field `x`");
        assert_eq!(redact("invalid type: map"), "invalid value");
        assert_eq!(
            redact("invalid length 3, expected a tuple of size 2"),
            "expected a tuple of size 2"
        );
    }
}

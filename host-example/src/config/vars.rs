//! `${VAR}` references in channel settings, filled from the environment, and
//! `${file:PATH}` references, filled from a file (a mounted secret, read again at each
//! reload).

use std::path::Path;

type KeyError = (String, String);

/// Where references are filled from: the environment, and files relative to `base`.
pub(super) struct Sources<'a, E> {
    /// Answers `${NAME}`.
    pub env: &'a E,
    /// The folder a relative `${file:PATH}` is read from (the config file's).
    pub base: &'a Path,
}

/// Replaces `${VAR}`s in every string of `table`; the keys of strings with a `$NAME`
/// without braces (taken literally) are added to `bare`.
pub(super) fn substitute_table(
    table: &mut toml::Table,
    path: &str,
    sources: &Sources<'_, impl Fn(&str) -> Option<String>>,
    bare: &mut Vec<String>,
) -> Result<(), KeyError> {
    for (key, value) in table.iter_mut() {
        substitute(value, &format!("{path}.{key}"), sources, bare)?;
    }
    Ok(())
}

fn substitute(
    value: &mut toml::Value,
    path: &str,
    sources: &Sources<'_, impl Fn(&str) -> Option<String>>,
    bare: &mut Vec<String>,
) -> Result<(), KeyError> {
    match value {
        toml::Value::String(s) => {
            if has_bare_reference(s) {
                bare.push(path.to_owned());
            }
            *s = expand(s, sources).map_err(|reason| (path.to_owned(), reason))?
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), sources, bare)?;
            }
        }
        toml::Value::Table(table) => substitute_table(table, path, sources, bare)?,
        _ => {}
    }
    Ok(())
}

/// Whether `text` has a `$` followed by a letter or `_` (`$VAR`, which [`expand`]
/// leaves as it is), outside `$$`.
fn has_bare_reference(text: &str) -> bool {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return true;
        }
        rest = after;
    }
    false
}

/// Replaces each `${NAME}` in `text` with the variable's value, and each
/// `${file:PATH}` with the file's text (one final line break dropped). `$$` is a
/// literal `$`. Errors name the variable or the file, never a value.
pub(super) fn expand(
    text: &str,
    sources: &Sources<'_, impl Fn(&str) -> Option<String>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated ${...} reference".to_owned())?;
            let name = &tail[..end];
            if let Some(file) = name.strip_prefix("file:") {
                out.push_str(&read_secret(sources.base, file)?);
                rest = &tail[end + 1..];
                continue;
            }
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            match (sources.env)(name) {
                Some(value) if !value.is_empty() => out.push_str(&value),
                Some(_) => return Err(format!("environment variable {name} is empty")),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The text of the file `file` (relative to `base`), without one final line break.
fn read_secret(base: &Path, file: &str) -> Result<String, String> {
    if file.is_empty() {
        return Err("${file:} names no file".to_owned());
    }
    let path = base.join(file);
    // The error says which file and why (not found, permission denied), never what
    // it holds.
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text.to_owned())
}

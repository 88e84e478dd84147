//! `${VAR}` references in channel settings, filled from the environment.

type KeyError = (String, String);

/// Replaces `${VAR}`s in every string of `table`; the keys of strings with a `$NAME`
/// without braces (taken literally) are added to `bare`.
pub(super) fn substitute_table(
    table: &mut toml::Table,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    bare: &mut Vec<String>,
) -> Result<(), KeyError> {
    for (key, value) in table.iter_mut() {
        substitute(value, &format!("{path}.{key}"), env, bare)?;
    }
    Ok(())
}

fn substitute(
    value: &mut toml::Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    bare: &mut Vec<String>,
) -> Result<(), KeyError> {
    match value {
        toml::Value::String(s) => {
            if has_bare_reference(s) {
                bare.push(path.to_owned());
            }
            *s = expand(s, env).map_err(|reason| (path.to_owned(), reason))?
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, bare)?;
            }
        }
        toml::Value::Table(table) => substitute_table(table, path, env, bare)?,
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

/// Replaces each `${NAME}` in `text` with the variable's value. `$$` is a literal `$`.
pub(super) fn expand(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
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
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            match env(name) {
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

//! The host's TOML config: parsed strictly (unknown keys are errors), `${VAR}`
//! references in channel settings filled from the environment, validated as a whole.

use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// A config error: the file, the key and the reason, on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: String,
        /// toml's message (it names the key and the line).
        message: String,
    },
    /// A value is present but unusable.
    #[error("{file}: {key}: {reason}")]
    Invalid {
        /// The config file.
        file: String,
        /// The key, e.g. `channels[0].settings.app_secret`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// Folder of plugin libraries, relative to the config file. Default `plugins`.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Largest webhook body accepted, in bytes. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Events accepted but not yet processed, in all, before webhooks get 503 (Meta
    /// retries them). Default 10,000.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Conversations processed at the same time; one conversation's events are
    /// always processed one after another, in order. Default 256.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long one send may take, retries included, in milliseconds. Default 60,000.
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// How long shutdown waits for queued events and in-flight sends. Default 10,000 ms.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// How long a client may take to send a webhook's body before getting 408, in
    /// milliseconds (a body trickled in byte by byte holds a connection). Default 10,000.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_workers() -> usize {
    256
}
fn default_send_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}

/// `[[channels]]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Served at `/webhooks/{name}`.
    pub name: String,
    /// The id of the plugin that implements it.
    pub plugin: String,
    /// Disabled channels are not served (404). Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Given to the plugin as JSON, after `${VAR}` substitution. May hold secrets.
    #[serde(default)]
    pub settings: toml::Table,
}

fn yes() -> bool {
    true
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Settings hold secrets: show only their keys.
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .field("enabled", &self.enabled)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `[queue]`: where accepted events wait until their replies are sent.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// SQLite file keeping accepted events across crashes, relative to the config
    /// file; `":memory:"` keeps them in memory only. Default `queue.sqlite3`.
    #[serde(default = "default_queue_path")]
    pub path: PathBuf,
    /// How long a processed event is remembered to drop redeliveries, in seconds.
    /// Default 86,400 (a day).
    #[serde(default = "default_remember_secs")]
    pub remember_secs: u64,
    /// At most this many processed ids are remembered in memory mode. Default 100,000.
    #[serde(default = "default_remember_max")]
    pub remember_max: usize,
    /// How long a reply that failed with a retryable error (the channel's API down,
    /// a rate limit) is tried again, counted from when its event was accepted, in
    /// seconds. Default 900.
    #[serde(default = "default_retry_for_secs")]
    pub retry_for_secs: u64,
    /// Send again, after a crash, a reply whose send had started but whose outcome is
    /// unknown (it may have been delivered: a duplicate is possible). Default `false`:
    /// such a reply is logged, counted and not sent again.
    #[serde(default)]
    pub resend_unknown: bool,
    /// A PostgreSQL database shared by several hosts, `postgres://USER@HOST:PORT/DB`
    /// (`${VAR}` replaced; may hold a password: never logged), instead of `path`.
    #[serde(default)]
    pub url: Option<String>,
    /// With `url`: partitions of the conversations, the same on every host of the
    /// group. Default 256.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// With `url`: how long a host's lease on its partitions lasts unless renewed, in
    /// ms. Default 10,000.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// With `url`: how often a host looks for the pending events of its partitions
    /// accepted by other hosts, in ms. Default 20.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            path: default_queue_path(),
            remember_secs: default_remember_secs(),
            remember_max: default_remember_max(),
            retry_for_secs: default_retry_for_secs(),
            resend_unknown: false,
            url: None,
            partitions: default_partitions(),
            lease_ms: default_lease_ms(),
            poll_ms: default_poll_ms(),
        }
    }
}

impl std::fmt::Debug for QueueConfig {
    /// The url may hold a password: shown as set or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConfig")
            .field("path", &self.path)
            .field("remember_secs", &self.remember_secs)
            .field("remember_max", &self.remember_max)
            .field("retry_for_secs", &self.retry_for_secs)
            .field("resend_unknown", &self.resend_unknown)
            .field("url", &self.url.as_ref().map(|_| "***"))
            .field("partitions", &self.partitions)
            .field("lease_ms", &self.lease_ms)
            .field("poll_ms", &self.poll_ms)
            .finish()
    }
}

impl QueueConfig {
    /// Whether events are kept in memory only.
    pub fn in_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }
}

fn default_queue_path() -> PathBuf {
    PathBuf::from("queue.sqlite3")
}
fn default_remember_secs() -> u64 {
    86_400
}
fn default_remember_max() -> usize {
    100_000
}
fn default_retry_for_secs() -> u64 {
    900
}
fn default_partitions() -> u32 {
    256
}
fn default_lease_ms() -> u64 {
    10_000
}
fn default_poll_ms() -> u64 {
    20
}

/// `[bot]`: the example bot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Send a typing indicator before each reply. Default `false`.
    #[serde(default)]
    pub typing_indicator: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: ServerConfig,
    #[serde(default)]
    channels: Vec<ChannelConfig>,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    bot: BotConfig,
}

/// The whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`, with `plugins_dir` resolved against the config file's folder.
    pub server: ServerConfig,
    /// `[[channels]]`, settings with `${VAR}` replaced.
    pub channels: Vec<ChannelConfig>,
    /// `[queue]`, with `path` resolved against the config file's folder.
    pub queue: QueueConfig,
    /// `[bot]`.
    pub bot: BotConfig,
}

impl Config {
    /// Reads, substitutes and validates `path`, taking `${VAR}` from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base, |name| {
            std::env::var(name).ok()
        })
    }

    /// Parses config text; `file` names it in errors, `base` resolves relative paths,
    /// `env` answers `${VAR}`.
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            reason,
        };

        let mut server = raw.server;
        if server.plugins_dir.is_relative() {
            server.plugins_dir = base.join(&server.plugins_dir);
        }
        let mut queue = raw.queue;
        if let Some(url) = &queue.url {
            if queue.path != default_queue_path() {
                return Err(invalid(
                    "queue.url".to_owned(),
                    "is exclusive with queue.path: a queue is a file or a database".to_owned(),
                ));
            }
            let expanded =
                expand(url, &env).map_err(|reason| invalid("queue.url".to_owned(), reason))?;
            if !expanded.starts_with("postgres://") && !expanded.starts_with("postgresql://") {
                return Err(invalid(
                    "queue.url".to_owned(),
                    "must start with postgres://".to_owned(),
                ));
            }
            queue.url = Some(expanded);
        }
        if !queue.in_memory() && queue.path.is_relative() {
            queue.path = base.join(&queue.path);
        }
        let positive = [
            ("queue.remember_secs", queue.remember_secs),
            ("queue.remember_max", queue.remember_max as u64),
            ("queue.partitions", u64::from(queue.partitions)),
            ("queue.lease_ms", queue.lease_ms),
            ("queue.poll_ms", queue.poll_ms),
            ("server.max_body_bytes", server.max_body_bytes as u64),
            ("server.queue_capacity", server.queue_capacity as u64),
            ("server.workers", server.workers as u64),
            ("server.send_timeout_ms", server.send_timeout_ms),
            ("server.body_timeout_ms", server.body_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key.to_owned(), "must be above 0".to_owned()));
            }
        }
        if server.max_body_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "server.max_body_bytes".to_owned(),
                "must be at most 64 MiB".to_owned(),
            ));
        }

        let mut names = HashSet::new();
        let mut channels = raw.channels;
        for (i, channel) in channels.iter_mut().enumerate() {
            let key = |k: &str| format!("channels[{i}].{k}");
            let name_ok = !channel.name.is_empty()
                && channel.name.len() <= 64
                && channel.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return Err(invalid(
                    key("name"),
                    format!(
                        "{:?} must be 1-64 characters of a-z, 0-9, '-' and '_'",
                        channel.name
                    ),
                ));
            }
            if !names.insert(channel.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("duplicate channel {:?}", channel.name),
                ));
            }
            if channel.plugin.is_empty() {
                return Err(invalid(key("plugin"), "must not be empty".to_owned()));
            }
            if channel.enabled {
                substitute_table(&mut channel.settings, &key("settings"), &env)
                    .map_err(|(key, reason)| invalid(key, reason))?;
            }
        }
        Ok(Self {
            server,
            channels,
            queue,
            bot: raw.bot,
        })
    }

    /// The enabled channels.
    pub fn enabled_channels(&self) -> impl Iterator<Item = &ChannelConfig> {
        self.channels.iter().filter(|c| c.enabled)
    }

    /// `server.send_timeout_ms` as a duration.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.server.send_timeout_ms)
    }
}

impl ChannelConfig {
    /// The settings as the JSON object the plugin receives.
    pub fn settings_json(&self) -> String {
        serde_json::to_string(&self.settings).unwrap_or_else(|_| "{}".to_owned())
    }
}

type KeyError = (String, String);

fn substitute_table(
    table: &mut toml::Table,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), KeyError> {
    for (key, value) in table.iter_mut() {
        substitute(value, &format!("{path}.{key}"), env)?;
    }
    Ok(())
}

fn substitute(
    value: &mut toml::Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), KeyError> {
    match value {
        toml::Value::String(s) => {
            *s = expand(s, env).map_err(|reason| (path.to_owned(), reason))?
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => substitute_table(table, path, env)?,
        _ => {}
    }
    Ok(())
}

/// Replaces each `${NAME}` in `text` with the variable's value. `$$` is a literal `$`.
fn expand(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[channels]]
name = "messenger"
plugin = "messenger"

[channels.settings]
app_secret = "${SECRET}"
verify_token = "literal-$$-token"
pages = [{ id = "1", access_token = "${TOKEN}" }]
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cret".to_owned()),
            "TOKEN" => Some("page-token".to_owned()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "host.toml", Path::new("/etc/dmflow"), env)
    }

    #[test]
    fn substitutes_and_resolves() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.server.plugins_dir, Path::new("/etc/dmflow/plugins"));
        let settings: serde_json::Value =
            serde_json::from_str(&config.channels[0].settings_json()).unwrap();
        assert_eq!(settings["app_secret"], "s3cret");
        assert_eq!(settings["verify_token"], "literal-$-token");
        assert_eq!(settings["pages"][0]["access_token"], "page-token");
        assert!(config.channels[0].enabled);
        assert_eq!(config.queue.path, Path::new("/etc/dmflow/queue.sqlite3"));
        let memory = parse(&format!("{GOOD}\n[queue]\npath = \":memory:\"\n")).unwrap();
        assert!(memory.queue.in_memory());
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let debug = format!("{:?}", parse(GOOD).unwrap());
        assert!(
            !debug.contains("s3cret") && !debug.contains("page-token"),
            "{debug}"
        );
    }

    #[test]
    fn each_error_names_file_and_key() {
        let cases = [
            (GOOD.replace("listen =", "lisen ="), "lisen"),
            (
                GOOD.replace("${SECRET}", "${MISSING}"),
                "channels[0].settings.app_secret",
            ),
            (
                GOOD.replace("${TOKEN}", "${TOKEN"),
                "channels[0].settings.pages[0].access_token",
            ),
            (
                GOOD.replace("name = \"messenger\"", "name = \"../x\""),
                "channels[0].name",
            ),
            (
                GOOD.replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\""),
                "listen",
            ),
            (format!("{GOOD}\n[bot]\ncolour = 1\n"), "colour"),
            (
                GOOD.replace("[[channels]]", "[server.extra]\n[[channels]]"),
                "extra",
            ),
            (
                GOOD.replace(
                    "listen = \"127.0.0.1:8080\"",
                    "listen = \"127.0.0.1:8080\"\nworkers = 0",
                ),
                "server.workers",
            ),
            (
                format!("{GOOD}\n[[channels]]\nname = \"messenger\"\nplugin = \"x\"\n"),
                "channels[1].name",
            ),
            (
                format!("{GOOD}\n[queue]\nremember_secs = 0\n"),
                "queue.remember_secs",
            ),
            (format!("{GOOD}\n[queue]\npaht = \"x\"\n"), "paht"),
            (
                GOOD.replace(
                    "listen = \"127.0.0.1:8080\"",
                    "listen = \"127.0.0.1:8080\"\nmax_body_bytes = -1",
                ),
                "max_body_bytes",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("host.toml"), "{err}");
            assert!(err.contains(key), "expected {key:?} in: {err}");
            assert!(
                !err.contains("s3cret") && !err.contains("page-token"),
                "{err}"
            );
        }
    }

    #[test]
    fn disabled_channels_need_no_secrets() {
        let text = GOOD
            .replace(
                "plugin = \"messenger\"",
                "plugin = \"messenger\"\nenabled = false",
            )
            .replace("${SECRET}", "${MISSING}");
        let config = parse(&text).unwrap();
        assert_eq!(config.enabled_channels().count(), 0);
    }
}

//! The host's TOML config: parsed strictly (unknown keys are errors), `${VAR}`
//! references in channel settings filled from the environment, validated as a whole.
//! No error quotes a value from the file (a value may be a secret), only names that
//! passed validation, such as a duplicate channel's.

mod server;
#[cfg(test)]
mod tests;
mod toml_error;
mod vars;

pub use self::server::{ListenAddr, ServerConfig};

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// A config error: the file, the key and the reason, on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The cause is part of the message, not a
    /// `source`, so that an error chain prints it once.
    #[error("{file}: cannot read: {cause}{}", start_hint(cause))]
    Read {
        /// The config file.
        file: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: String,
        /// Where (line, key) and what is wrong, without the value found there.
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

/// What to do when there is no config file yet.
fn start_hint(cause: &std::io::Error) -> &'static str {
    if cause.kind() == std::io::ErrorKind::NotFound {
        " (to start, copy examples/host.toml and edit it, or pass --config FILE)"
    } else {
        ""
    }
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
#[derive(Clone, PartialEq, Deserialize)]
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

/// `[admin]`: where `/healthz`, `/readyz` and `/metrics` are served.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// When set, those routes are served on this address only (404 on
    /// `server.listen`); when not, on `server.listen`. Port 0 picks a free port.
    #[serde(default)]
    pub listen: Option<ListenAddr>,
}

/// `[bot]`: the example bot.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Send a typing indicator before each reply. Default `false`.
    #[serde(default)]
    pub typing_indicator: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    channels: Vec<ChannelConfig>,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    bot: BotConfig,
    #[serde(default)]
    admin: AdminConfig,
}

/// The whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, as errors name it.
    pub file: String,
    /// The file it was read from, which a reload reads again (`None` when parsed
    /// from text).
    pub path: Option<PathBuf>,
    /// What looks wrong but does not stop start-up, one line each, naming keys and
    /// never values; logged as warnings when the host starts.
    pub warnings: Vec<String>,
    /// `[server]`, with `plugins_dir` resolved against the config file's folder.
    pub server: ServerConfig,
    /// `[[channels]]`, settings with `${VAR}` replaced.
    pub channels: Vec<ChannelConfig>,
    /// `[queue]`, with `path` resolved against the config file's folder.
    pub queue: QueueConfig,
    /// `[bot]`.
    pub bot: BotConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
}

impl Config {
    /// Reads, substitutes and validates `path`, taking `${VAR}` from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            file: path.display().to_string(),
            cause,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = Self::parse(&text, &path.display().to_string(), base, |name| {
            std::env::var(name).ok()
        })?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            ..config
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
        let raw: RawConfig = toml_error::parse(text).map_err(|message| ConfigError::Parse {
            file: file.to_owned(),
            message,
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
            let sources = vars::Sources { env: &env, base };
            let expanded = vars::expand(url, &sources)
                .map_err(|reason| invalid("queue.url".to_owned(), reason))?;
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
            ("server.header_timeout_ms", server.header_timeout_ms),
            ("server.idle_timeout_ms", server.idle_timeout_ms),
            ("server.max_connections", server.max_connections as u64),
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
        if server.max_inflight_body_bytes < server.max_body_bytes {
            return Err(invalid(
                "server.max_inflight_body_bytes".to_owned(),
                "must be at least server.max_body_bytes".to_owned(),
            ));
        }
        server
            .listen
            .check()
            .map_err(|reason| invalid("server.listen".to_owned(), reason))?;
        if let Some(admin) = &raw.admin.listen {
            admin
                .check()
                .map_err(|reason| invalid("admin.listen".to_owned(), reason))?;
        }
        if raw
            .admin
            .listen
            .as_ref()
            .is_some_and(|admin| admin.0 == server.listen.0 && !admin.0.ends_with(":0"))
        {
            return Err(invalid(
                "admin.listen".to_owned(),
                "must differ from server.listen".to_owned(),
            ));
        }

        let mut warnings = Vec::new();
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
                    "must be 1-64 characters of a-z, 0-9, '-' and '_'".to_owned(),
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
                let mut bare = Vec::new();
                let sources = vars::Sources { env: &env, base };
                vars::substitute_table(
                    &mut channel.settings,
                    &key("settings"),
                    &sources,
                    &mut bare,
                )
                .map_err(|(key, reason)| invalid(key, reason))?;
                warnings.extend(bare.into_iter().map(|key| {
                    format!(
                        "{file}: {key}: a $ followed by a name is taken literally; \
                         write ${{NAME}} to read an environment variable, $$ for a $"
                    )
                }));
            }
        }
        if !channels.iter().any(|c| c.enabled) {
            warnings.push(format!(
                "{file}: channels: no enabled channel; every webhook will get 404"
            ));
        }
        Ok(Self {
            file: file.to_owned(),
            path: None,
            warnings,
            server,
            channels,
            queue,
            bot: raw.bot,
            admin: raw.admin,
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

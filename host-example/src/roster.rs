//! The channels the host serves now, and reloading them while it runs.
//!
//! A reload reads the config file and the plugins folder again, prepares every new
//! or changed channel's adapter, and only when all of that succeeded puts the new
//! lineup in place, in one step: new channels are served at once; a changed channel
//! keeps its queue and gets the new adapter for its next sends, while the sends
//! under way finish on the old one; a removed or disabled channel answers 404 from
//! then on, and the events it had queued are still processed. A config that does
//! not load (a syntax error, a missing plugin, a setting refused) is refused whole:
//! the running lineup stays.

pub(crate) mod folder;

pub use self::folder::open_one;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use adapter_api::{Adapter, AdapterError, ErrorKind, LoadedPlugin, PluginInfo};
use anyhow::{bail, Context};
use serde::Serialize;

use self::folder::Stamp;
use crate::{
    channels::{new_adapter, Channel},
    config::Config,
    metrics::Metrics,
};

/// The channels served under one config.
pub struct Lineup {
    /// Counts the configs put in place: 1 at start-up, one more per reload.
    pub generation: u64,
    /// Enabled channels by name (some may be down).
    pub channels: HashMap<String, Arc<Channel>>,
    /// Every plugin that loaded (enabled or not).
    pub plugins: Vec<PluginInfo>,
    /// The loaded libraries' files as they were when loaded.
    stamps: HashMap<PathBuf, Stamp>,
    /// What it was built from.
    config: Config,
}

/// What a reload changed, by channel name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// The lineup's generation now.
    pub generation: u64,
    /// Channels served from now on.
    pub added: Vec<String>,
    /// Channels with a new plugin or new settings.
    pub changed: Vec<String>,
    /// Channels removed or disabled.
    pub removed: Vec<String>,
    /// Config tables that changed but are read only at start-up.
    pub restart_needed: Vec<&'static str>,
}

/// The lineup being served, swapped whole by a reload.
pub struct Roster {
    current: RwLock<Arc<Lineup>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Roster {
    /// Loads the plugins folder and creates the enabled channels' adapters.
    ///
    /// A library that cannot be loaded is logged (one line naming it) and skipped. A
    /// channel naming a plugin that is not there, or whose plugin refuses its
    /// settings ([`ErrorKind::INVALID_SETTINGS`]), is a config error: the host does
    /// not start. A channel whose adapter cannot be created otherwise (the plugin
    /// panics, or fails in another way) starts down, with an error log line, and is
    /// retried with the breaker's delays; the other channels go on.
    pub fn start(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        for channel in config.channels.iter().filter(|c| !c.enabled) {
            tracing::info!(channel = channel.name, "channel disabled in the config");
        }
        let plan = prepare(&config, None)?;
        let (lineup, _) = commit(plan, config, None, &metrics);
        metrics.config_generation.set(1);
        Ok(Self {
            current: RwLock::new(Arc::new(lineup)),
            reloading: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// The lineup served now.
    pub fn current(&self) -> Arc<Lineup> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The channel served at `/webhooks/{name}` now.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .channels
            .get(name)
            .cloned()
    }

    /// Reads the config file the host started from, and the plugins folder, again,
    /// and puts the new lineup in place; or refuses the whole config and keeps the
    /// running one. Logs the outcome (one line) and counts it.
    pub async fn reload(&self) -> anyhow::Result<Changes> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.current();
        let outcome = tokio::task::spawn_blocking({
            let previous = Arc::clone(&previous);
            move || {
                let path = previous.config.path.clone().with_context(|| {
                    format!(
                        "{}: not read from a file; nothing to reload",
                        previous.config.file
                    )
                })?;
                let config = Config::load(&path)?;
                let plan = prepare(&config, Some(&previous))?;
                Ok::<_, anyhow::Error>((config, plan))
            }
        })
        .await
        .map_err(|err| anyhow::anyhow!("the reload failed: {err}"))
        .and_then(|prepared| prepared);
        let (config, plan) = match outcome {
            Ok(prepared) => prepared,
            Err(err) => {
                self.metrics.reload("refused");
                tracing::error!(
                    "config reload refused, generation {} stays: {err}",
                    previous.generation
                );
                return Err(err);
            }
        };
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let (lineup, changes) = commit(plan, config, Some(&previous), &self.metrics);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lineup);
        self.metrics.reload("applied");
        self.metrics
            .config_generation
            .set(i64::try_from(changes.generation).unwrap_or(i64::MAX));
        tracing::info!(
            generation = changes.generation,
            "config reloaded: added [{}], changed [{}], removed [{}]",
            changes.added.join(", "),
            changes.changed.join(", "),
            changes.removed.join(", ")
        );
        for table in &changes.restart_needed {
            tracing::warn!(
                "{table}: changed in the config; it is read only at start-up and takes \
                 effect at the next restart"
            );
        }
        Ok(changes)
    }
}

/// What to do with one enabled channel of the new config.
enum Step {
    /// Same plugin, same settings: the running channel, untouched.
    Keep(Arc<Channel>),
    /// A new channel, with its first adapter's build.
    Open {
        library: LoadedPlugin,
        settings_json: String,
        built: Result<Adapter, AdapterError>,
    },
    /// A running channel with a new plugin or new settings.
    Replace {
        channel: Arc<Channel>,
        library: LoadedPlugin,
        settings_json: String,
        built: Result<Adapter, AdapterError>,
    },
}

/// The next lineup, built and checked, not yet in place.
struct Plan {
    folder: folder::Folder,
    steps: Vec<(String, Step)>,
}

/// Loads the plugins folder and builds the adapters of the channels that are new
/// or changed since `previous`. Fails, dropping what it built, on a config error:
/// a missing plugin, or settings its plugin refuses. Blocks: plugin constructors may.
fn prepare(config: &Config, previous: Option<&Lineup>) -> anyhow::Result<Plan> {
    let folder = folder::load(config, previous.map(|p| &p.stamps))?;
    let mut steps = Vec::new();
    for (i, channel) in config.channels.iter().enumerate() {
        if !channel.enabled {
            continue;
        }
        let Some(library) = folder.set.get(&channel.plugin) else {
            let found: Vec<_> = folder
                .set
                .plugins
                .iter()
                .map(|p| p.info.id.to_string())
                .collect();
            let found = if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            };
            bail!(
                "{}: channels[{i}].plugin: no plugin {:?} in {} (found: {found})",
                config.file,
                channel.plugin,
                config.server.plugins_dir.display()
            );
        };
        let settings_json = channel.settings_json();
        let running = previous.and_then(|p| p.channels.get(&channel.name));
        if let Some(running) = running.filter(|c| c.built_from(library, &settings_json)) {
            steps.push((channel.name.clone(), Step::Keep(Arc::clone(running))));
            continue;
        }
        let built = new_adapter(library, &channel.name, &settings_json);
        if let Err(err) = &built {
            if err.kind == ErrorKind::INVALID_SETTINGS {
                // The plugin's message names the key, never the value.
                bail!(
                    "{}: channels[{i}] ({}): {}",
                    config.file,
                    channel.name,
                    err.message
                );
            }
        }
        let library = library.clone();
        let step = match running {
            None => Step::Open {
                library,
                settings_json,
                built,
            },
            Some(channel) => Step::Replace {
                channel: Arc::clone(channel),
                library,
                settings_json,
                built,
            },
        };
        steps.push((channel.name.clone(), step));
    }
    Ok(Plan { folder, steps })
}

/// Puts `plan` into effect: the lineup to serve from now on, and what changed
/// since `previous`.
fn commit(
    plan: Plan,
    config: Config,
    previous: Option<&Lineup>,
    metrics: &Metrics,
) -> (Lineup, Changes) {
    let mut changes = Changes {
        generation: previous.map_or(1, |p| p.generation + 1),
        ..Changes::default()
    };
    let mut channels = HashMap::new();
    let index = |name: &str| config.channels.iter().position(|c| c.name == name);
    for (name, step) in plan.steps {
        let channel = match step {
            Step::Keep(channel) => channel,
            Step::Open {
                library,
                settings_json,
                built,
            } => {
                let channel = Channel::open(
                    &name,
                    &library,
                    settings_json,
                    metrics.channel(&name),
                    built,
                );
                announce(&channel, "enabled", index(&name));
                changes.added.push(name.clone());
                channel
            }
            Step::Replace {
                channel,
                library,
                settings_json,
                built,
            } => {
                channel.replace(&library, settings_json, built);
                announce(&channel, "changed", index(&name));
                changes.changed.push(name.clone());
                channel
            }
        };
        channels.insert(name, channel);
    }
    if let Some(previous) = previous {
        let mut removed: Vec<_> = previous
            .channels
            .keys()
            .filter(|name| !channels.contains_key(*name))
            .cloned()
            .collect();
        removed.sort();
        for name in &removed {
            tracing::info!(
                channel = name,
                "channel removed: its webhooks get 404; the events it queued are still \
                 processed"
            );
        }
        changes.removed = removed;
        changes.restart_needed = restart_needed(&previous.config, &config);
    }
    changes.added.sort();
    changes.changed.sort();
    let lineup = Lineup {
        generation: changes.generation,
        channels,
        plugins: plan
            .folder
            .set
            .plugins
            .iter()
            .map(|p| p.info.clone())
            .collect(),
        stamps: plan.folder.stamps,
        config,
    };
    (lineup, changes)
}

/// Logs a channel put in place (`how`: enabled, changed; `index`: its place in the
/// config's `channels`), and whether it is up.
fn announce(channel: &Channel, how: &str, index: Option<usize>) {
    let plugin = channel.plugin();
    match channel.failure() {
        None => tracing::info!(
            channel = channel.name,
            plugin = %plugin.id,
            version = %plugin.version,
            "channel {how} at /webhooks/{}",
            channel.name
        ),
        Some(reason) => tracing::error!(
            channel = channel.name,
            "channel {how}, down until its adapter can be created: channels[{}]: {reason}",
            index.unwrap_or_default()
        ),
    }
}

/// The tables of `after` that differ from `before` and are read only at start-up:
/// everything but the channels and the plugins folder.
fn restart_needed(before: &Config, after: &Config) -> Vec<&'static str> {
    let mut tables = Vec::new();
    let server = |config: &Config| crate::config::ServerConfig {
        plugins_dir: PathBuf::new(),
        ..config.server.clone()
    };
    if server(before) != server(after) {
        tables.push("server");
    }
    if before.queue != after.queue {
        tables.push("queue");
    }
    if before.bot != after.bot {
        tables.push("bot");
    }
    if before.admin != after.admin {
        tables.push("admin");
    }
    tables
}

#[cfg(test)]
mod tests;

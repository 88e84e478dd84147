//! Plugins loaded at start-up, and one adapter per enabled channel, with fault
//! isolation: a channel whose adapter fails (panics, or cannot be created) is down
//! for a while, then gets a fresh adapter; the delay grows while the failures go
//! on (a circuit breaker, see [`Backoff`]). The other channels go on meanwhile.

mod backoff;

use std::{
    collections::HashMap,
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak},
    time::{Duration, Instant},
};

use adapter_api::{
    load_plugins, Adapter, AdapterError, ErrorKind, LoadError, LoadedPlugin, PluginInfo, PluginSet,
};
use anyhow::bail;

use self::backoff::Backoff;
use crate::{
    config::Config,
    host_services,
    metrics::{ChannelMetrics, Metrics},
};

/// An enabled channel: its name, the plugin behind it, and its adapter.
pub struct Channel {
    /// The channel name (the URL segment).
    pub name: String,
    /// What the plugin said about itself.
    pub plugin: PluginInfo,
    library: LoadedPlugin,
    /// The channel's metrics.
    pub metrics: ChannelMetrics,
    /// The settings JSON (holds secrets: never logged).
    settings_json: String,
    state: RwLock<State>,
    /// This channel, for the thread that builds its next adapter.
    this: Weak<Channel>,
}

struct State {
    health: Health,
    backoff: Backoff,
}

enum Health {
    Up {
        adapter: Arc<Adapter>,
        since: Instant,
    },
    Down(Outage),
}

/// Why a channel is down, and when a fresh adapter is tried.
#[derive(Clone, Debug)]
pub struct Outage {
    /// What failed, in words fit for `/healthz`: no panic text, no setting.
    pub reason: String,
    /// When the next adapter is built (in the past while that build runs).
    pub retry_at: Instant,
}

impl Channel {
    /// Creates the channel with its first adapter (`built`: the constructor's
    /// outcome); if that failed, the channel starts down and the adapter is tried
    /// again later.
    fn open(
        name: &str,
        library: &LoadedPlugin,
        settings_json: String,
        metrics: ChannelMetrics,
        built: Result<Adapter, AdapterError>,
    ) -> Arc<Self> {
        let channel = Arc::new_cyclic(|this| Self {
            name: name.to_owned(),
            plugin: library.info.clone(),
            library: library.clone(),
            metrics,
            settings_json,
            state: RwLock::new(State {
                // Until the first build's outcome is in, a moment from now.
                health: Health::Down(Outage {
                    reason: "the adapter is being created".to_owned(),
                    retry_at: Instant::now(),
                }),
                backoff: Backoff::default(),
            }),
            this: this.clone(),
        });
        if !channel.built(built, false) {
            channel.rebuild_later();
        }
        channel
    }

    /// The adapter, or `None` while the channel is down.
    pub fn adapter(&self) -> Option<Arc<Adapter>> {
        match &self.read().health {
            Health::Up { adapter, .. } => Some(Arc::clone(adapter)),
            Health::Down(_) => None,
        }
    }

    /// Why the channel is down and until when, or `None` while it is up.
    pub fn outage(&self) -> Option<Outage> {
        match &self.read().health {
            Health::Up { .. } => None,
            Health::Down(outage) => Some(outage.clone()),
        }
    }

    /// Why the channel is down (fit for `/healthz`), if it is.
    pub fn failure(&self) -> Option<String> {
        self.outage().map(|outage| outage.reason)
    }

    /// `None` while the channel is up; while it is down, when a fresh adapter is
    /// tried (in the past while that build runs).
    pub fn retry_at(&self) -> Option<Instant> {
        self.outage().map(|outage| outage.retry_at)
    }

    /// `adapter` failed (`what`: a fixed phrase such as "send panicked", shown on
    /// `/healthz`): counts the failure and takes the channel down until a fresh
    /// adapter is built, after the breaker's delay. Nothing more if the channel
    /// has moved on from `adapter` already.
    pub fn plugin_failed(&self, adapter: &Arc<Adapter>, what: &str) {
        self.metrics.plugin_failures.inc();
        let mut state = self.write();
        let up_for = match &state.health {
            Health::Up {
                adapter: current,
                since,
            } if Arc::ptr_eq(current, adapter) => since.elapsed(),
            _ => return,
        };
        let delay = state.go_down(Some(up_for), format!("the adapter failed: {what}"));
        drop(state);
        tracing::warn!(
            channel = self.name,
            "adapter failed ({what}); channel down, a fresh adapter in {delay:?}"
        );
        // Let the broken adapter finish what it can, off this thread.
        let old = Arc::clone(adapter);
        std::thread::spawn(move || old.shutdown(Duration::from_secs(1)));
        self.rebuild_later();
    }

    /// Puts a freshly built adapter in place (`restart`: in place of a failed one),
    /// or takes the channel down for the next delay; returns whether the channel is
    /// up. Starts no rebuild.
    fn built(&self, built: Result<Adapter, AdapterError>, restart: bool) -> bool {
        let mut state = self.write();
        match built {
            Ok(adapter) => {
                state.health = Health::Up {
                    adapter: Arc::new(adapter),
                    since: Instant::now(),
                };
                if restart {
                    self.metrics.adapter_restarts.inc();
                    tracing::info!(channel = self.name, "fresh adapter built; channel up");
                }
                true
            }
            Err(err) => {
                self.metrics.plugin_failures.inc();
                let reason = format!(
                    "the {} plugin could not create the adapter ({})",
                    self.plugin.id, err.kind
                );
                let delay = state.go_down(None, reason);
                drop(state);
                tracing::error!(
                    channel = self.name,
                    "the {} plugin could not create the adapter: {err}; next try in {delay:?}",
                    self.plugin.id
                );
                false
            }
        }
    }

    /// Builds a fresh adapter on a thread of its own (the plugin's constructor may
    /// block) once the channel's retry time has come, again after each failed build,
    /// until one is up. One such thread runs while the channel is down.
    fn rebuild_later(&self) {
        let this = Weak::clone(&self.this);
        let spawned = std::thread::Builder::new()
            .name(format!("rebuild-{}", self.name))
            .spawn(move || loop {
                let Some(retry_at) = this.upgrade().and_then(|c| c.retry_at()) else {
                    return;
                };
                std::thread::sleep(retry_at.saturating_duration_since(Instant::now()));
                let Some(channel) = this.upgrade() else {
                    return;
                };
                let built = new_adapter(&channel.library, &channel.name, &channel.settings_json);
                if channel.built(built, true) {
                    return;
                }
            });
        if let Err(err) = spawned {
            tracing::error!(
                channel = self.name,
                "cannot start the thread that rebuilds the adapter: {err}"
            );
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Takes the channel down after a failure (`up_for`: how long the failed adapter
    /// was up; `None`: the build failed); returns the delay before the next build.
    fn go_down(&mut self, up_for: Option<Duration>, reason: String) -> Duration {
        let delay = self.backoff.failed(up_for);
        self.health = Health::Down(Outage {
            reason,
            retry_at: Instant::now() + delay,
        });
        delay
    }
}

/// Asks `library` for channel `name`'s adapter; a panic on the host's side of the
/// call is an error too.
fn new_adapter(
    library: &LoadedPlugin,
    name: &str,
    settings_json: &str,
) -> Result<Adapter, AdapterError> {
    catch_unwind(AssertUnwindSafe(|| {
        library.new_adapter(settings_json, host_services::for_channel(name))
    }))
    .unwrap_or_else(|_| {
        Err(AdapterError::new(
            ErrorKind::PANICKED,
            "panicked while creating the adapter",
        ))
    })
    .map(Adapter::new)
}

/// Every enabled channel by name, and what was loaded.
pub struct Channels {
    /// Enabled channels by name (some may be down).
    pub by_name: HashMap<String, Arc<Channel>>,
    /// Every plugin that loaded (enabled or not).
    pub plugins: Vec<PluginInfo>,
}

/// Loads the plugins folder and creates the enabled channels' adapters.
///
/// A library that cannot be loaded is logged (one line naming it) and skipped. A
/// channel naming a plugin that is not there, or whose plugin refuses its settings
/// ([`ErrorKind::INVALID_SETTINGS`]), is a config error: the host does not start. A
/// channel whose adapter cannot be created otherwise (the plugin panics, or fails in
/// another way) starts down, with an error log line, and is retried with the
/// breaker's delays; the other channels go on.
pub fn start(config: &Config, metrics: &Metrics) -> anyhow::Result<Channels> {
    let dir = &config.server.plugins_dir;
    let set = load_folder(config)?;
    report(&set, dir);

    let mut by_name = HashMap::new();
    for (i, channel) in config.channels.iter().enumerate() {
        if !channel.enabled {
            tracing::info!(channel = channel.name, "channel disabled in the config");
            continue;
        }
        let Some(library) = set.get(&channel.plugin) else {
            let found: Vec<_> = set.plugins.iter().map(|p| p.info.id.to_string()).collect();
            let found = if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            };
            bail!(
                "{}: channels[{i}].plugin: no plugin {:?} in {} (found: {found})",
                config.file,
                channel.plugin,
                dir.display()
            );
        };
        let settings_json = channel.settings_json();
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
        let opened = Channel::open(
            &channel.name,
            library,
            settings_json,
            metrics.channel(&channel.name),
            built,
        );
        match opened.failure() {
            None => tracing::info!(
                channel = channel.name,
                plugin = %library.info.id,
                version = %library.info.version,
                "channel enabled at /webhooks/{}",
                channel.name
            ),
            Some(reason) => tracing::error!(
                channel = channel.name,
                "channel down until its adapter can be created: channels[{i}]: {reason}"
            ),
        }
        by_name.insert(channel.name.clone(), opened);
    }
    Ok(Channels {
        by_name,
        plugins: set.plugins.iter().map(|p| p.info.clone()).collect(),
    })
}

/// Loads the plugins folder and creates the adapter of channel `name` only: for
/// one-off channel operations from the command line.
pub fn open_one(config: &Config, name: &str) -> anyhow::Result<Arc<Adapter>> {
    let Some((i, channel)) = config
        .channels
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
    else {
        let names: Vec<_> = config.channels.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "no channel {name:?} in the config (channels: {})",
            names.join(", ")
        );
    };
    if !channel.enabled {
        bail!("channels[{i}] ({name}) is disabled in the config");
    }
    let dir = &config.server.plugins_dir;
    let set = load_folder(config)?;
    let Some(library) = set.get(&channel.plugin) else {
        bail!(
            "{}: channels[{i}].plugin: no plugin {:?} in {}",
            config.file,
            channel.plugin,
            dir.display()
        );
    };
    match new_adapter(library, name, &channel.settings_json()) {
        Ok(adapter) => Ok(Arc::new(adapter)),
        Err(err) if err.kind == ErrorKind::INVALID_SETTINGS => {
            bail!("{}: channels[{i}] ({name}): {}", config.file, err.message)
        }
        Err(err) => bail!(
            "channels[{i}] ({name}): the {} plugin could not create the adapter: {err}",
            library.info.id
        ),
    }
}

/// Loads `server.plugins_dir`; an unreadable folder is a config error naming the
/// key, its cause told once.
fn load_folder(config: &Config) -> anyhow::Result<PluginSet> {
    // `LoadError` carries its cause both in its message and as its source: formatted
    // here into a fresh error, so that the error chain prints it once.
    load_plugins(&config.server.plugins_dir)
        .map_err(|err| anyhow::anyhow!("{}: server.plugins_dir: {err}", config.file))
}

fn report(set: &PluginSet, dir: &Path) {
    for plugin in &set.plugins {
        match &plugin.link_target {
            None => tracing::info!(
                path = %plugin.path.display(),
                id = %plugin.info.id,
                version = %plugin.info.version,
                api = %plugin.info.api_version,
                "plugin loaded"
            ),
            Some(target) => tracing::info!(
                path = %plugin.path.display(),
                target = %target.display(),
                id = %plugin.info.id,
                version = %plugin.info.version,
                api = %plugin.info.api_version,
                "plugin loaded through a symbolic link to {}",
                target.display()
            ),
        }
    }
    for failure in &set.failures {
        tracing::error!("plugin not loaded: {failure}");
        if let LoadError::IncompatibleLayout { full, .. } = failure {
            tracing::debug!(
                "full layout report for {}:\n{full}",
                failure.path().display()
            );
        }
    }
    if set.plugins.is_empty() {
        tracing::warn!("no plugin loaded from {}", dir.display());
    }
}

//! Plugins loaded at start-up, and one adapter per enabled channel, with fault
//! isolation: an adapter that panics is replaced by a fresh one; one that keeps
//! panicking, or that cannot be created, leaves its channel failed (503) while the
//! other channels go on.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use adapter_api::{load_plugins, Adapter, LoadError, LoadedPlugin, PluginInfo, PluginSet};
use anyhow::bail;

use crate::{
    config::Config,
    host_services,
    metrics::{ChannelMetrics, Metrics},
};

/// Fresh adapters a channel may get within [`RESTART_WINDOW`] before it is failed.
const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(300);

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
    restarts: Mutex<VecDeque<Instant>>,
}

enum State {
    Up(Arc<Adapter>),
    Failed(String),
}

impl Channel {
    /// Creates the channel's adapter; if the plugin refuses or panics, the channel is
    /// created failed, with the reason.
    fn open(
        name: &str,
        library: &LoadedPlugin,
        settings_json: String,
        metrics: ChannelMetrics,
    ) -> Self {
        let state = match library.new_adapter(&settings_json, host_services::for_channel(name)) {
            Ok(adapter) => State::Up(Arc::new(Adapter::new(adapter))),
            Err(err) => State::Failed(format!(
                "the {} plugin could not create the adapter: {err}",
                library.info.id
            )),
        };
        Self {
            name: name.to_owned(),
            plugin: library.info.clone(),
            library: library.clone(),
            metrics,
            settings_json,
            state: RwLock::new(state),
            restarts: Mutex::default(),
        }
    }

    /// The adapter, or `None` while the channel is failed.
    pub fn adapter(&self) -> Option<Arc<Adapter>> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Up(adapter) => Some(Arc::clone(adapter)),
            State::Failed(_) => None,
        }
    }

    /// While the channel is down, when it is next tried; `None` while it is up.
    pub fn retry_at(&self) -> Option<Instant> {
        None
    }

    /// Why the channel is failed, if it is.
    pub fn failure(&self) -> Option<String> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Up(_) => None,
            State::Failed(reason) => Some(reason.clone()),
        }
    }

    /// `adapter` failed (`what`: a panic, say): counts the failure, and replaces the
    /// adapter with a fresh one, or fails the channel when it has been replaced too
    /// often.
    pub fn plugin_failed(&self, adapter: &Arc<Adapter>, what: &str) {
        self.metrics.plugin_failures.inc();
        if self.replace_adapter(adapter, what) {
            self.metrics.adapter_restarts.inc();
        }
    }

    /// Replaces a failed `adapter`, or fails the channel; returns whether a fresh
    /// adapter is in place.
    fn replace_adapter(&self, adapter: &Arc<Adapter>, what: &str) -> bool {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match &*state {
            // Another request already replaced it.
            State::Up(current) if !Arc::ptr_eq(current, adapter) => return true,
            State::Failed(_) => return false,
            State::Up(_) => {}
        }
        let old = std::mem::replace(&mut *state, State::Failed(String::new()));
        if let State::Up(old) = old {
            // Let the broken adapter finish what it can, off this thread.
            std::thread::spawn(move || old.shutdown(Duration::from_secs(1)));
        }
        let mut restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            restarts.pop_front();
        }
        if restarts.len() >= MAX_RESTARTS {
            let reason = format!(
                "the adapter failed {} times in {RESTART_WINDOW:?} (last: {what})",
                MAX_RESTARTS + 1
            );
            tracing::error!(channel = self.name, "channel failed: {reason}");
            *state = State::Failed(reason);
            return false;
        }
        restarts.push_back(now);
        match self
            .library
            .new_adapter(&self.settings_json, host_services::for_channel(&self.name))
        {
            Ok(adapter) => {
                tracing::warn!(
                    channel = self.name,
                    "adapter failed ({what}); replaced by a fresh one"
                );
                *state = State::Up(Arc::new(Adapter::new(adapter)));
                true
            }
            Err(err) => {
                let reason =
                    format!("the adapter failed ({what}) and could not be recreated: {err}");
                tracing::error!(channel = self.name, "channel failed: {reason}");
                *state = State::Failed(reason);
                false
            }
        }
    }
}

/// Every enabled channel by name, and what was loaded.
pub struct Channels {
    /// Enabled channels by name (some may be failed).
    pub by_name: HashMap<String, Arc<Channel>>,
    /// Every plugin that loaded (enabled or not).
    pub plugins: Vec<PluginInfo>,
}

/// Loads the plugins folder and creates the enabled channels' adapters.
///
/// A library that cannot be loaded is logged (one line naming it) and skipped. A
/// channel naming a plugin that is not there is a config error: the host does not
/// start. A channel whose adapter cannot be created (the plugin refuses its settings,
/// or panics) is failed, with an error log line, and the other channels go on.
pub fn start(config: &Config, metrics: &Metrics) -> anyhow::Result<Channels> {
    let dir = &config.server.plugins_dir;
    let set = load_plugins(dir)?;
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
                "channels[{i}].plugin: no plugin {:?} in {} (found: {found})",
                channel.plugin,
                dir.display()
            );
        };
        let opened = Channel::open(
            &channel.name,
            library,
            channel.settings_json(),
            metrics.channel(&channel.name),
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
                "channel disabled: channels[{i}]: {reason}"
            ),
        }
        by_name.insert(channel.name.clone(), Arc::new(opened));
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
    let set = load_plugins(dir)?;
    let Some(library) = set.get(&channel.plugin) else {
        bail!(
            "channels[{i}].plugin: no plugin {:?} in {}",
            channel.plugin,
            dir.display()
        );
    };
    let metrics = Metrics::default().channel(name);
    let opened = Channel::open(name, library, channel.settings_json(), metrics);
    match opened.adapter() {
        Some(adapter) => Ok(adapter),
        None => bail!(
            "channels[{i}] ({name}): {}",
            opened.failure().unwrap_or_default()
        ),
    }
}

fn report(set: &PluginSet, dir: &Path) {
    for plugin in &set.plugins {
        tracing::info!(
            path = %plugin.path.display(),
            id = %plugin.info.id,
            version = %plugin.info.version,
            api = %plugin.info.api_version,
            "plugin loaded"
        );
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

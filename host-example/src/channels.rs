//! Plugins loaded at start-up, and one adapter per enabled channel.

use std::{collections::HashMap, path::Path, sync::Arc};

use adapter_api::{load_plugins, Adapter, LoadError, PluginInfo, PluginSet};
use anyhow::{bail, Context};

use crate::{config::Config, host_services};

/// An enabled channel: its name, the plugin behind it, and its adapter.
pub struct Channel {
    /// The channel name (the URL segment).
    pub name: String,
    /// What the plugin said about itself.
    pub plugin: PluginInfo,
    /// The adapter.
    pub adapter: Adapter,
}

/// Every enabled channel by name, and what was loaded.
pub struct Channels {
    /// Enabled channels by name.
    pub by_name: HashMap<String, Arc<Channel>>,
    /// Every plugin that loaded (enabled or not).
    pub plugins: Vec<PluginInfo>,
}

/// Loads the plugins folder and creates the enabled channels' adapters.
///
/// A library that cannot be loaded is logged (one line naming it) and skipped; a
/// channel whose plugin is missing or whose adapter cannot be created is an error:
/// the host does not start half-configured.
pub fn start(config: &Config) -> anyhow::Result<Channels> {
    let dir = &config.server.plugins_dir;
    let set = load_plugins(dir)?;
    report(&set, dir);

    let mut by_name = HashMap::new();
    for (i, channel) in config.channels.iter().enumerate() {
        if !channel.enabled {
            tracing::info!(channel = channel.name, "channel disabled in the config");
            continue;
        }
        let Some(plugin) = set.get(&channel.plugin) else {
            let found: Vec<_> = set.plugins.iter().map(|p| p.info.id.to_string()).collect();
            bail!(
                "channels[{i}].plugin: no plugin {:?} in {} (found: {})",
                channel.plugin,
                dir.display(),
                if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join(", ")
                }
            );
        };
        let adapter = plugin
            .new_adapter(
                &channel.settings_json(),
                host_services::for_channel(&channel.name),
            )
            .map_err(anyhow::Error::new)
            .with_context(|| {
                format!(
                    "channels[{i}] ({}): the {} plugin refused its settings",
                    channel.name, channel.plugin
                )
            })?;
        tracing::info!(
            channel = channel.name,
            plugin = %plugin.info.id,
            version = %plugin.info.version,
            "channel enabled at /webhooks/{}",
            channel.name
        );
        by_name.insert(
            channel.name.clone(),
            Arc::new(Channel {
                name: channel.name.clone(),
                plugin: plugin.info.clone(),
                adapter: Adapter::new(adapter),
            }),
        );
    }
    Ok(Channels {
        by_name,
        plugins: set.plugins.iter().map(|p| p.info.clone()).collect(),
    })
}

/// Loads the plugins folder and creates the adapter of channel `name` only: for
/// one-off channel operations from the command line.
pub fn open_one(config: &Config, name: &str) -> anyhow::Result<Channel> {
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
    let Some(plugin) = set.get(&channel.plugin) else {
        bail!(
            "channels[{i}].plugin: no plugin {:?} in {}",
            channel.plugin,
            dir.display()
        );
    };
    let adapter = plugin
        .new_adapter(&channel.settings_json(), host_services::for_channel(name))
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!(
                "channels[{i}] ({name}): the {} plugin refused its settings",
                channel.plugin
            )
        })?;
    Ok(Channel {
        name: name.to_owned(),
        plugin: plugin.info.clone(),
        adapter: Adapter::new(adapter),
    })
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

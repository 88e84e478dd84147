//! The plugins folder, read at start-up and again at each reload. A library loaded
//! once stays mapped for the life of the process (abi_stable never unloads one), so
//! a reload loads only the libraries it has not seen, and a loaded library changed
//! on disk is reported, not reloaded.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use adapter_api::{load_plugins, Adapter, ErrorKind, LoadError, PluginSet};
use anyhow::bail;

use crate::{channels::new_adapter, config::Config};

/// What identifies a library file's content without reading it: a library written
/// in place or replaced by another file gets a different stamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device and inode: a file moved into place has a new one.
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        })
    }
}

/// The plugins folder as loaded now.
pub(super) struct Folder {
    /// What loaded, and why the rest did not.
    pub set: PluginSet,
    /// Each loaded library's file as it was when first loaded.
    pub stamps: HashMap<PathBuf, Stamp>,
}

/// Loads `server.plugins_dir` and logs what changed since `known` (the stamps of the
/// libraries loaded before; `None` at start-up): a library not loaded before, one
/// that failed to load, and one loaded before that changed on disk since (its loaded
/// copy stays in use). An unreadable folder is a config error naming the key, its
/// cause told once.
pub(super) fn load(
    config: &Config,
    known: Option<&HashMap<PathBuf, Stamp>>,
) -> anyhow::Result<Folder> {
    let dir = &config.server.plugins_dir;
    let set = read(config)?;
    let mut stamps = HashMap::new();
    for plugin in &set.plugins {
        let before = known.and_then(|known| known.get(&plugin.path));
        let now = Stamp::of(&plugin.path);
        match (before, &now) {
            (None, _) => report_loaded(plugin),
            (Some(before), Some(now)) if before != now => tracing::warn!(
                path = %plugin.path.display(),
                id = %plugin.info.id,
                "plugin file changed on disk: the copy loaded before stays in use until \
                 a restart (a loaded library is never unloaded); to switch without a \
                 restart, install the new version under a new file name and reload"
            ),
            _ => {}
        }
        let stamp = before.cloned().or(now);
        if let Some(stamp) = stamp {
            stamps.insert(plugin.path.clone(), stamp);
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
    Ok(Folder { set, stamps })
}

/// Loads `server.plugins_dir` without logging what loaded: for one-off commands.
pub(crate) fn read(config: &Config) -> anyhow::Result<PluginSet> {
    // `LoadError` carries its cause both in its message and as its source: formatted
    // here into a fresh error, so that the error chain prints it once.
    load_plugins(&config.server.plugins_dir)
        .map_err(|err| anyhow::anyhow!("{}: server.plugins_dir: {err}", config.file))
}

fn report_loaded(plugin: &adapter_api::LoadedPlugin) {
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

/// Loads the plugins folder and creates the adapter of channel `name` only: for
/// one-off channel operations from the command line.
pub fn open_one(config: &Config, name: &str) -> anyhow::Result<std::sync::Arc<Adapter>> {
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
    let set = read(config)?;
    let Some(library) = set.get(&channel.plugin) else {
        bail!(
            "{}: channels[{i}].plugin: no plugin {:?} in {}",
            config.file,
            channel.plugin,
            dir.display()
        );
    };
    match new_adapter(library, name, &channel.settings_json()) {
        Ok(adapter) => Ok(std::sync::Arc::new(adapter)),
        Err(err) if err.kind == ErrorKind::INVALID_SETTINGS => {
            bail!("{}: channels[{i}] ({name}): {}", config.file, err.message)
        }
        Err(err) => bail!(
            "channels[{i}] ({name}): the {} plugin could not create the adapter: {err}",
            library.info.id
        ),
    }
}

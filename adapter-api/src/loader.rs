//! Host side: finding and loading plugin libraries.

mod permissions;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use abi_stable::{
    library::{lib_header_from_path, LibraryError},
    std_types::{RResult, RStr},
};

use crate::{
    AdapterError, AdapterPluginRef, ChannelAdapterBox, HostServicesBox, PluginInfo, API_VERSION,
};

/// Why a plugin library could not be loaded. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugins folder could not be read.
    #[error("{}: cannot read the plugins folder: {source}", dir.display())]
    ReadDir {
        /// The folder.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A user other than the library's owner could replace it: the file or its
    /// folder is writable by its group or by others (checked on Unix).
    #[error("{}: {reason}", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is writable, its mode, and the fix.
        reason: String,
    },
    /// The file is not a loadable library (missing, truncated, not a shared object).
    #[error("{}: not a loadable library: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },
    /// The library loads but exports no DmFlow adapter root module.
    #[error("{}: not a DmFlow adapter plugin (no abi_stable root module exported)", path.display())]
    NotAPlugin {
        /// The file.
        path: PathBuf,
    },
    /// The plugin was built against an `adapter-api` version this host cannot use.
    #[error(
        "{}: incompatible plugin: built against adapter-api {found}, this host needs {expected} \
         (same major, same or newer minor)",
        path.display()
    )]
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// The host's API version.
        expected: String,
        /// The plugin's API version.
        found: String,
    },
    /// The plugin's types do not have the layout the host expects.
    #[error("{}: incompatible plugin: {summary}", path.display())]
    IncompatibleLayout {
        /// The file.
        path: PathBuf,
        /// A one-line summary.
        summary: String,
        /// abi_stable's full report (long; log it at debug level).
        full: String,
    },
    /// The plugin's root module failed to initialise or described itself wrongly.
    #[error("{}: plugin failed to initialise: {reason}", path.display())]
    Init {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// Another library in the folder already declared the same plugin id.
    #[error("{}: duplicate plugin id {id:?}, already loaded from {}", path.display(), first.display())]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The id both declare.
        id: String,
        /// The library loaded first.
        first: PathBuf,
    },
}

impl LoadError {
    /// The library the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::ReadDir { dir: path, .. }
            | Self::Unsafe { path, .. }
            | Self::Open { path, .. }
            | Self::NotAPlugin { path }
            | Self::IncompatibleVersion { path, .. }
            | Self::IncompatibleLayout { path, .. }
            | Self::Init { path, .. }
            | Self::DuplicateId { path, .. } => path,
        }
    }

    fn from_library(path: &Path, error: LibraryError) -> Self {
        let path = path.to_path_buf();
        match error {
            LibraryError::OpenError { err, .. } => {
                // The loader's message usually repeats the path; keep one.
                let reason = err.to_string();
                let reason = reason
                    .strip_prefix(&format!("{}: ", path.display()))
                    .unwrap_or(&reason)
                    .to_owned();
                Self::Open { path, reason }
            }
            LibraryError::GetSymbolError { .. } => Self::NotAPlugin { path },
            LibraryError::IncompatibleVersionNumber {
                expected_version,
                actual_version,
                ..
            } => Self::IncompatibleVersion {
                path,
                expected: expected_version.to_string(),
                found: actual_version.to_string(),
            },
            LibraryError::AbiInstability(err) => {
                let full = err.to_string();
                Self::IncompatibleLayout {
                    path,
                    summary: layout_summary(&full),
                    full,
                }
            }
            LibraryError::InvalidAbiHeader(header) => Self::IncompatibleLayout {
                path,
                summary: format!(
                    "built with an incompatible abi_stable (library {}.{}, host {}.{})",
                    header.abi_major,
                    header.abi_minor,
                    abi_stable::library::AbiHeader::VALUE.abi_major,
                    abi_stable::library::AbiHeader::VALUE.abi_minor
                ),
                full: String::new(),
            },
            other => {
                let full = other.to_string();
                Self::Init {
                    path,
                    reason: first_line(&full).to_owned(),
                }
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error")
}

/// abi_stable's layout report runs to hundreds of lines; keep what names the problem.
fn layout_summary(full: &str) -> String {
    let interesting = full
        .lines()
        .map(str::trim)
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("too many") || l.contains("mismatch") || l.contains("expected")
        })
        .unwrap_or_else(|| first_line(full));
    let mut summary = format!("type layouts differ ({interesting})");
    if summary.len() > 300 {
        summary.truncate(300);
        summary.push('…');
    }
    summary
}

/// A plugin library that loaded and passed the version and layout checks. Cheap to
/// clone: the library stays loaded for the life of the process.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The file `path` leads to when it is a symbolic link.
    pub link_target: Option<PathBuf>,
    /// What it says about itself.
    pub info: PluginInfo,
    module: AdapterPluginRef,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("link_target", &self.link_target)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Creates an adapter from settings JSON. The settings may hold secrets: they are
    /// passed to the plugin and never logged here.
    pub fn new_adapter(
        &self,
        settings_json: &str,
        host: HostServicesBox,
    ) -> Result<ChannelAdapterBox, AdapterError> {
        match (self.module.new_adapter())(RStr::from(settings_json), host) {
            RResult::ROk(adapter) => Ok(adapter),
            RResult::RErr(err) => Err(err),
        }
    }
}

/// The outcome of loading a folder: what loaded, and why the rest did not.
#[derive(Debug, Default)]
pub struct PluginSet {
    /// Libraries that loaded, in file-name order.
    pub plugins: Vec<LoadedPlugin>,
    /// Libraries that were refused, each with its reason.
    pub failures: Vec<LoadError>,
}

impl PluginSet {
    /// The plugin that declares `id`.
    pub fn get(&self, id: &str) -> Option<&LoadedPlugin> {
        self.plugins.iter().find(|p| p.info.id.as_str() == id)
    }
}

/// Loads one plugin library, checking who may write it (on Unix: only its owner may
/// write the file and its folder), its `adapter-api` version and type layouts.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let checked = permissions::check(path).map_err(|reason| LoadError::Unsafe {
        path: path.to_path_buf(),
        reason,
    })?;
    check_not_truncated(path).map_err(|reason| LoadError::Open {
        path: path.to_path_buf(),
        reason,
    })?;
    let header = lib_header_from_path(path).map_err(|e| LoadError::from_library(path, e))?;
    // The version first: a plugin of an older minor lacks fields a newer host's root
    // module has, and the layout check below would refuse it with a report that does
    // not say why.
    let built_against = header.version_strings().to_string();
    if !compatible(API_VERSION, &built_against) {
        return Err(LoadError::IncompatibleVersion {
            path: path.to_path_buf(),
            expected: API_VERSION.to_owned(),
            found: built_against,
        });
    }
    let module = header
        .init_root_module::<AdapterPluginRef>()
        .map_err(|e| LoadError::from_library(path, e))?;
    let info = (module.info())();
    if info.id.trim().is_empty() {
        return Err(LoadError::Init {
            path: path.to_path_buf(),
            reason: "the plugin declares an empty id".to_owned(),
        });
    }
    if !compatible(API_VERSION, info.api_version.as_str()) {
        return Err(LoadError::IncompatibleVersion {
            path: path.to_path_buf(),
            expected: API_VERSION.to_owned(),
            found: info.api_version.to_string(),
        });
    }
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        link_target: checked.link_target,
        info,
        module,
    })
}

/// A shared object cut short can still be mapped by the dynamic loader, and touching
/// a page past its end kills the process (SIGBUS). For ELF files, check that every
/// segment and the section header table lie within the file before loading it.
fn check_not_truncated(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut head = Vec::new();
    file.take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    if !head.starts_with(b"\x7fELF") || head.get(5) != Some(&1) {
        // Not little-endian ELF: the dynamic loader's own checks apply.
        return Ok(());
    }
    let truncated = || "truncated: the ELF headers point past the end of the file".to_owned();
    let read = |at: u64, size: usize| -> Result<u64, String> {
        let at = usize::try_from(at).map_err(|_| truncated())?;
        let bytes = head.get(at..at + size).ok_or_else(truncated)?;
        let mut buf = [0u8; 8];
        buf[..size].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(buf))
    };
    let is64 = head.get(4) == Some(&2);
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = if is64 {
        (
            read(0x20, 8)?,
            read(0x28, 8)?,
            read(0x36, 2)?,
            read(0x38, 2)?,
            read(0x3A, 2)?,
            read(0x3C, 2)?,
        )
    } else {
        (
            read(0x1C, 4)?,
            read(0x20, 4)?,
            read(0x2A, 2)?,
            read(0x2C, 2)?,
            read(0x2E, 2)?,
            read(0x30, 2)?,
        )
    };
    let within = |offset: u64, size: u64| offset.checked_add(size).is_some_and(|end| end <= len);
    if !within(shoff, shentsize * shnum) || !within(phoff, phentsize * phnum) {
        return Err(truncated());
    }
    for i in 0..phnum {
        let entry = phoff + i * phentsize;
        let (offset, filesz) = if is64 {
            (read(entry + 8, 8)?, read(entry + 0x20, 8)?)
        } else {
            (read(entry + 4, 4)?, read(entry + 0x10, 4)?)
        };
        if !within(offset, filesz) {
            return Err(truncated());
        }
    }
    Ok(())
}

/// Whether a plugin built against `plugin` can be used by a host built against `host`:
/// same major, and the plugin's minor at least the host's.
fn compatible(host: &str, plugin: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(host), parse(plugin)) {
        (Some((hmaj, hmin)), Some((pmaj, pmin))) => hmaj == pmaj && pmin >= hmin,
        _ => false,
    }
}

/// Loads every library in `dir` whose name ends with this platform's suffix (`.so`,
/// `.dylib`, `.dll`), in file-name order.
///
/// Fails only when the folder cannot be read; a library that cannot be loaded is
/// reported in [`PluginSet::failures`] and the others still load.
pub fn load_plugins(dir: &Path) -> Result<PluginSet, LoadError> {
    let read_err = |source| LoadError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_library = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX));
        if is_library && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();

    let mut set = PluginSet::default();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in paths {
        match load_plugin(&path) {
            Ok(plugin) => {
                let id = plugin.info.id.to_string();
                if let Some(first) = seen.get(&id) {
                    set.failures.push(LoadError::DuplicateId {
                        path,
                        id,
                        first: first.clone(),
                    });
                } else {
                    seen.insert(id, path);
                    set.plugins.push(plugin);
                }
            }
            Err(err) => set.failures.push(err),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rule_is_same_major_same_or_newer_minor() {
        assert!(compatible("1.0.0", "1.0.0"));
        assert!(compatible("1.0.0", "1.3.2"));
        assert!(compatible("1.2.0", "1.2.9"));
        assert!(!compatible("1.2.0", "1.1.0"));
        assert!(!compatible("1.0.0", "2.0.0"));
        assert!(!compatible("1.0.0", "garbage"));
    }

    #[test]
    fn non_library_files_are_refused_with_one_line_each() {
        let dir = std::env::temp_dir().join(format!("adapter-api-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join(format!("notes{}", std::env::consts::DLL_SUFFIX));
        std::fs::write(&text, "this is not a library").unwrap();
        #[cfg(unix)]
        for path in [&dir, &text] {
            use std::os::unix::fs::PermissionsExt;
            // Whatever the umask: a file others may write is refused before it is opened.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.join("README.txt"), "ignored: wrong suffix").unwrap();

        let set = load_plugins(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();

        assert!(set.plugins.is_empty());
        assert_eq!(set.failures.len(), 1, "{:?}", set.failures);
        let line = set.failures[0].to_string();
        assert!(line.contains("notes"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        assert!(matches!(set.failures[0], LoadError::Open { .. }));
    }

    #[test]
    fn a_truncated_shared_object_is_refused_before_it_is_mapped() {
        let this = std::env::current_exe().unwrap(); // an ELF file
        let whole = std::fs::read(&this).unwrap();
        let dir = std::env::temp_dir().join(format!("adapter-api-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("cut.so");
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let full = dir.join("full.so");
        std::fs::write(&full, &whole).unwrap();
        let cut_result = check_not_truncated(&cut);
        let full_result = check_not_truncated(&full);
        std::fs::remove_dir_all(&dir).ok();
        assert!(cut_result.unwrap_err().contains("truncated"));
        assert!(full_result.is_ok());
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let err = load_plugins(Path::new("/definitely/not/here")).unwrap_err();
        assert!(err.to_string().starts_with("/definitely/not/here"), "{err}");
    }

    #[test]
    fn layout_summary_is_one_short_line() {
        let full = "\n\nError:\n  too many fields in struct Foo\n".repeat(200);
        let summary = layout_summary(&full);
        assert!(summary.contains("too many fields"));
        assert!(summary.len() < 400 && !summary.contains('\n'));
    }
}

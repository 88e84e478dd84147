//! Who may change a library before it is loaded. Loading a library runs its code in
//! the host, so, like sshd's `StrictModes`, a library that a user other than its
//! owner could replace is refused: one writable by its group or by others, or in a
//! folder writable by them (where it can be swapped for another file).

use std::path::{Path, PathBuf};

/// A library that passed the check, and where it really is when it is a symbolic
/// link (the host logs the target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checked {
    /// The file a symbolic link leads to; `None` for a plain file.
    pub(super) link_target: Option<PathBuf>,
}

/// Checks `path`, the folder it is in and, for a symbolic link, the file it leads
/// to and that file's folder. `Err` is the reason, in words, naming what to fix.
#[cfg(unix)]
pub(super) fn check(path: &Path) -> Result<Checked, String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        // Not there: opening it says so.
        return Ok(Checked { link_target: None });
    };
    let link = meta.file_type().is_symlink();
    let link_target = if link {
        Some(std::fs::canonicalize(path).map_err(|e| format!("a broken symbolic link: {e}"))?)
    } else {
        None
    };
    let folder = |file: &Path| match file.parent() {
        Some(dir) if dir.as_os_str().is_empty() => PathBuf::from("."),
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("/"),
    };
    let file = link_target.as_deref().unwrap_or(path);
    not_writable_by_others(file, "the library")?;
    not_writable_by_others(&folder(path), "its folder")?;
    if let Some(target) = &link_target {
        not_writable_by_others(&folder(target), "the folder of the library it links to")?;
    }
    Ok(Checked { link_target })
}

/// Libraries are not checked where file modes do not say who may write.
#[cfg(not(unix))]
pub(super) fn check(path: &Path) -> Result<Checked, String> {
    let link_target = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path).ok(),
        _ => None,
    };
    Ok(Checked { link_target })
}

#[cfg(unix)]
fn not_writable_by_others(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{what} ({}): {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o022 == 0 {
        return Ok(());
    }
    Err(format!(
        "refused: {what} ({}) is writable by {} (mode {:04o}); only its owner may write \
         it: chmod go-w {}",
        path.display(),
        match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and others",
            (true, false) => "its group",
            _ => "others",
        },
        mode & 0o7777,
        path.display()
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A folder of mode 0755 holding `lib.so` of mode 0755.
    fn folder() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let lib = dir.path().join("lib.so");
        std::fs::write(&lib, b"x").unwrap();
        chmod(&lib, 0o755);
        (dir, lib)
    }

    #[test]
    fn a_library_only_its_owner_may_write_passes() {
        let (_dir, lib) = folder();
        assert_eq!(check(&lib), Ok(Checked { link_target: None }));
        chmod(&lib, 0o600);
        assert!(check(&lib).is_ok());
    }

    #[test]
    fn a_library_writable_by_its_group_or_others_is_refused_naming_the_mode() {
        let (_dir, lib) = folder();
        for (mode, says) in [
            (0o775, "its group (mode 0775)"),
            (0o757, "others (mode 0757)"),
        ] {
            chmod(&lib, mode);
            let reason = check(&lib).unwrap_err();
            assert!(reason.contains(says), "{reason}");
            assert!(
                reason.contains("the library") && !reason.contains('\n'),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_folder_writable_by_others_refuses_its_libraries() {
        let (dir, lib) = folder();
        chmod(dir.path(), 0o777);
        let reason = check(&lib).unwrap_err();
        chmod(dir.path(), 0o755);
        assert!(reason.contains("its folder"), "{reason}");
        assert!(
            reason.contains("its group and others (mode 0777)"),
            "{reason}"
        );
    }

    #[test]
    fn a_symbolic_link_gives_its_target_and_the_target_is_checked() {
        let (real, lib) = folder();
        let (links, _) = folder();
        let link = links.path().join("link.so");
        symlink(&lib, &link).unwrap();
        let target = std::fs::canonicalize(&lib).unwrap();
        assert_eq!(
            check(&link),
            Ok(Checked {
                link_target: Some(target)
            })
        );

        chmod(&lib, 0o666);
        assert!(check(&link).unwrap_err().contains("the library"));
        chmod(&lib, 0o755);
        chmod(real.path(), 0o777);
        let reason = check(&link).unwrap_err();
        chmod(real.path(), 0o755);
        assert!(
            reason.contains("the folder of the library it links to"),
            "{reason}"
        );
    }
}

//! One host per queue file: an exclusive lock on `<path>-lock`, held for the life of
//! the queue. The OS drops it when the process ends, `kill -9` included, so a stale
//! lock never needs cleaning up.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::{Path, PathBuf},
};

use crate::store::StoreError;

/// The lock file beside the database at `database`.
pub(super) fn path_for(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// Takes the queue's lock, or says which host holds it. The file is held open (and
/// locked) until the returned handle is dropped.
pub(super) fn take(database: &Path) -> Result<File, StoreError> {
    let path = path_for(database);
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(|e| StoreError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: database.to_owned(),
            lock: path,
        }),
        Err(TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_queue_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("queue.sqlite3");
        let first = take(&database).unwrap();
        let err = take(&database).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("queue.sqlite3"), "{err}");
        drop(first);
        take(&database).expect("free again once the first host is gone");
    }
}

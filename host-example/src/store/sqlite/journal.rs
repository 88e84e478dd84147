//! The side journal: accepted events written down while the WAL starts over.
//!
//! Restarting SQLite's WAL means waiting for the disk (a checkpoint's two fsyncs, then
//! the new WAL header's), milliseconds at a time, and no transaction can commit
//! meanwhile. So for that moment the writer appends accepted events to this
//! file instead (a `write()`, no fsync: the same promise as a WAL commit under
//! `synchronous = NORMAL`, which survives the process dying) and moves them into the
//! database once the WAL is back. A host stopped in between finds them here at start-up.
//!
//! One JSON object per line. A line that does not parse (a write cut short by a power
//! cut, or zeros where the file system had not yet written) is skipped and reported.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::schema::{Key, UNKNOWN_MS};
use crate::store::{EventKey, StoreError};

fn unknown_ms() -> i64 {
    UNKNOWN_MS
}

/// An accepted event as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) channel: String,
    pub(super) event_id: String,
    /// The event's own time, part of its key in the database; [`UNKNOWN_MS`] in the
    /// lines of hosts from before it was kept.
    #[serde(default = "unknown_ms")]
    pub(super) at_ms: i64,
    /// The event's stored JSON, as the `intake` table's `event` column holds it.
    pub(super) event: String,
    /// When it was accepted (ms since the epoch); 0 in the lines of hosts from before
    /// it was kept (taken as the time it is read back).
    #[serde(default)]
    pub(super) accepted_ms: i64,
}

impl Record {
    /// The event's key.
    pub(super) fn id(&self) -> EventKey {
        EventKey {
            channel: self.channel.clone(),
            event_id: self.event_id.clone(),
            at_ms: self.at_ms,
        }
    }

    /// Its row's key.
    pub(super) fn key(&self) -> Key<'_> {
        Key {
            channel: &self.channel,
            event_id: &self.event_id,
            at_ms: self.at_ms,
        }
    }
}

/// The journal file, opened for appending.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// A failed write left part of a line that could not be cut back.
    torn: bool,
}

impl Journal {
    /// The journal beside the database at `database`.
    pub(super) fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push("-intake");
        PathBuf::from(name)
    }

    /// Opens (or creates) the journal at `path` and reads back what it holds.
    pub(super) fn open(path: PathBuf) -> Result<(Self, Vec<Record>), StoreError> {
        let failed = |e: std::io::Error| StoreError::io(&path, e);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(failed)?;
        let mut records = Vec::new();
        let mut skipped = 0;
        for line in BufReader::new(&file).split(b'\n') {
            let line = line.map_err(failed)?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice(&line) {
                Ok(record) => records.push(record),
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                path = %path.display(),
                skipped,
                "event store journal: unreadable lines skipped (a write cut short)"
            );
        }
        let len = file.metadata().map_err(failed)?.len();
        Ok((
            Self {
                path,
                file,
                len,
                torn: false,
            },
            records,
        ))
    }

    /// Appends `records` with one `write()`. On failure, what part of them got in is
    /// cut back; if even that fails, the next append starts on a new line, so that
    /// the piece stays a line of its own (skipped at start-up) and cannot swallow the
    /// next record.
    pub(super) fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let mut lines = Vec::with_capacity(records.len() * 1024 + 1);
        if self.torn {
            lines.push(b'\n');
        }
        for record in records {
            serde_json::to_writer(&mut lines, record)
                .map_err(|e| StoreError::Unreadable(std::sync::Arc::new(e)))?;
            lines.push(b'\n');
        }
        match self.file.write_all(&lines) {
            Ok(()) if self.torn => {
                self.len = self.file.metadata().map_err(|e| self.io_error(e))?.len();
                self.torn = false;
                Ok(())
            }
            Ok(()) => {
                self.len += lines.len() as u64;
                Ok(())
            }
            Err(err) => {
                if self.file.set_len(self.len).is_err() {
                    self.torn = true;
                }
                Err(self.io_error(err))
            }
        }
    }

    /// An I/O error on the journal, naming its file.
    fn io_error(&self, e: std::io::Error) -> StoreError {
        StoreError::io(&self.path, e)
    }

    /// Empties the journal once its records are committed in the database.
    pub(super) fn clear(&mut self) -> Result<(), StoreError> {
        if self.len == 0 && !self.torn {
            return Ok(());
        }
        self.file.set_len(0).map_err(|e| self.io_error(e))?;
        self.len = 0;
        self.torn = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            channel: "m".into(),
            event_id: id.into(),
            at_ms: 1_700_000_000_000,
            // A real line break inside: escaped in the journal's line.
            event: format!("{{\"event_id\":\"{id}\",\"text\":\"line\nbreak\"}}"),
            accepted_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_clear_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(&dir.path().join("q.sqlite3"));
        assert!(path.ends_with("q.sqlite3-intake"));
        let (mut journal, found) = Journal::open(path.clone()).unwrap();
        assert!(found.is_empty());
        journal.append(&[record("a"), record("b")]).unwrap();
        journal.append(&[record("c")]).unwrap();
        drop(journal);

        let (mut journal, found) = Journal::open(path.clone()).unwrap();
        assert_eq!(found, [record("a"), record("b"), record("c")]);
        journal.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        journal.append(&[record("d")]).unwrap();
        drop(journal);
        assert_eq!(Journal::open(path).unwrap().1, [record("d")]);
    }

    #[test]
    fn a_line_from_before_event_times_were_kept_reads_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(
            &path,
            "{\"channel\":\"m\",\"event_id\":\"a\",\"event\":\"{}\"}\n",
        )
        .unwrap();
        let found = Journal::open(path).unwrap().1;
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].event_id.as_str(), found[0].at_ms),
            ("a", UNKNOWN_MS)
        );
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_others_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(path.clone()).unwrap();
        journal.append(&[record("a")]).unwrap();
        drop(journal);
        // Half a record, then zeros (what a power cut can leave), then a whole one.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"channel":"m","event_id":"b","ev"#)
            .unwrap();
        file.write_all(&[b'\n', 0, 0, 0, b'\n']).unwrap();
        drop(file);
        let (mut journal, _) = Journal::open(path.clone()).unwrap();
        journal.append(&[record("c")]).unwrap();
        drop(journal);
        assert_eq!(Journal::open(path).unwrap().1, [record("a"), record("c")]);
    }

    #[test]
    fn a_piece_that_could_not_be_cut_back_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(path.clone()).unwrap();
        journal.append(&[record("a")]).unwrap();
        // A write that failed half-way, and a cut back that failed too.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"channel":"m","event_"#)
            .unwrap();
        journal.torn = true;
        journal.append(&[record("b")]).unwrap();
        journal.append(&[record("c")]).unwrap();
        drop(journal);
        assert_eq!(
            Journal::open(path).unwrap().1,
            [record("a"), record("b"), record("c")]
        );
    }
}

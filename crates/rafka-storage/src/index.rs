//! Sparse offset and time indexes of one segment, in Kafka's file formats.
//!
//! * `.index`: 8-byte entries, relative offset u32 + file position u32
//!   (big-endian). An entry `(offset, position)` says the batch starting at
//!   `position` has last offset `offset`.
//! * `.timeindex`: 12-byte entries, timestamp i64 + relative offset u32. An
//!   entry `(timestamp, offset)` says the largest timestamp among batches up
//!   to and including the one ending at `offset` is `timestamp`.
//!
//! Both are appended every `index.interval.bytes` of log data and kept in
//! memory for lookups; the file is an exact image of the entries (no
//! preallocation), written as entries accumulate and fsynced on flush. On open
//! a file is trusted only after [`IndexFile::load`]'s sanity checks.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::IoContext;
use crate::io::{read_full_at, write_all_at};
use crate::StorageError;

/// An index entry with a fixed-size big-endian encoding relative to the segment base offset.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, base_offset: i64, out: &mut Vec<u8>);
    fn decode(buf: &[u8], base_offset: i64) -> Self;
    /// Absolute offset this entry refers to.
    fn offset(&self) -> i64;
}

/// `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub offset: i64,
    pub position: u32,
}

/// `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub offset: i64,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, base_offset: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(&((self.offset - base_offset) as u32).to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8], base_offset: i64) -> Self {
        let rel = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let position = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        OffsetEntry {
            offset: base_offset + i64::from(rel),
            position,
        }
    }
    fn offset(&self) -> i64 {
        self.offset
    }
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, base_offset: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&((self.offset - base_offset) as u32).to_be_bytes());
    }
    fn decode(buf: &[u8], base_offset: i64) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&buf[..8]);
        let rel = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            offset: base_offset + i64::from(rel),
        }
    }
    fn offset(&self) -> i64 {
        self.offset
    }
}

/// One index file and its in-memory copy.
#[derive(Debug)]
pub(crate) struct IndexFile<E: IndexEntry> {
    path: PathBuf,
    file: Arc<File>,
    base_offset: i64,
    entries: Vec<E>,
    /// Entries already written to the file.
    written: usize,
    scratch: Vec<u8>,
}

pub(crate) type OffsetIndex = IndexFile<OffsetEntry>;
pub(crate) type TimeIndex = IndexFile<TimeEntry>;

impl<E: IndexEntry> IndexFile<E> {
    /// Opens (creating if absent) the file with no entries loaded.
    pub(crate) fn open(path: &Path, base_offset: i64) -> Result<Self, StorageError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx("opening index", path)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            base_offset,
            entries: Vec::new(),
            written: 0,
            scratch: Vec::new(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Reads the file into memory. `Ok(Err(reason))` when the file is not a
    /// whole number of entries; ordering checks are the caller's (they depend
    /// on the entry type).
    pub(crate) fn load(&mut self) -> Result<Result<(), String>, StorageError> {
        let len = self
            .file
            .metadata()
            .ctx("reading metadata of", &self.path)?
            .len();
        if len % E::SIZE as u64 != 0 {
            return Ok(Err(format!(
                "length {len} is not a multiple of the entry size {}",
                E::SIZE
            )));
        }
        let mut buf = vec![0u8; len as usize];
        let n = read_full_at(&self.file, &mut buf, 0).ctx("reading", &self.path)?;
        if n != buf.len() {
            return Ok(Err(format!("short read: {n} of {len} bytes")));
        }
        self.entries = buf
            .chunks_exact(E::SIZE)
            .map(|c| E::decode(c, self.base_offset))
            .collect();
        self.written = self.entries.len();
        Ok(Ok(()))
    }

    pub(crate) fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Writes entries not yet in the file (page cache only, no fsync).
    pub(crate) fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.written == self.entries.len() {
            return Ok(());
        }
        self.scratch.clear();
        for e in &self.entries[self.written..] {
            e.encode(self.base_offset, &mut self.scratch);
        }
        write_all_at(&self.file, &self.scratch, (self.written * E::SIZE) as u64)
            .ctx("writing", &self.path)?;
        self.written = self.entries.len();
        Ok(())
    }

    /// Keeps the first `len` entries, in memory and in the file.
    pub(crate) fn truncate_entries(&mut self, len: usize) -> Result<(), StorageError> {
        if len >= self.entries.len() && self.written <= len {
            return Ok(());
        }
        self.entries.truncate(len);
        if self.written > len {
            self.written = len;
            self.file
                .set_len((len * E::SIZE) as u64)
                .ctx("truncating", &self.path)?;
        }
        Ok(())
    }

    /// Renames the file to `to` (the open handle follows it).
    pub(crate) fn rename(&mut self, to: PathBuf) -> Result<(), StorageError> {
        std::fs::rename(&self.path, &to).ctx("renaming", &self.path)?;
        self.path = to;
        Ok(())
    }

    /// Drops every entry, in memory and in the file.
    pub(crate) fn reset(&mut self) -> Result<(), StorageError> {
        self.entries.clear();
        self.written = 0;
        self.file.set_len(0).ctx("truncating", &self.path)
    }

    /// Keeps only entries whose offset is below `offset`.
    pub(crate) fn truncate_to_offset(&mut self, offset: i64) -> Result<(), StorageError> {
        let keep = self.entries.partition_point(|e| e.offset() < offset);
        self.truncate_entries(keep)
    }

    /// Checks that entry offsets are in `[base, next_offset)` and strictly increasing.
    fn check_offsets(&self, next_offset: i64) -> Result<(), String> {
        let mut prev: Option<i64> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let o = e.offset();
            if o < self.base_offset || o >= next_offset {
                return Err(format!(
                    "entry {i} offset {o} outside the segment range [{}, {next_offset})",
                    self.base_offset
                ));
            }
            if prev.is_some_and(|p| o <= p) {
                return Err(format!("entry {i} offset {o} does not increase"));
            }
            prev = Some(o);
        }
        Ok(())
    }
}

impl IndexFile<OffsetEntry> {
    /// Appends `(last offset of batch, batch position)`.
    pub(crate) fn append(&mut self, offset: i64, position: u32) {
        self.push(OffsetEntry { offset, position });
    }

    /// Position from which to scan for the batch containing `offset`: the
    /// position of the last indexed batch ending at or before `offset`, or 0.
    pub(crate) fn lookup(&self, offset: i64) -> u32 {
        let n = self.entries.partition_point(|e| e.offset <= offset);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].position
        }
    }

    /// Drops entries for batches at or beyond file position `position`.
    pub(crate) fn truncate_to_position(&mut self, position: u64) -> Result<(), StorageError> {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.truncate_entries(keep)
    }

    /// Kafka's sanity check: offsets increasing and inside the segment,
    /// positions increasing and inside the log file.
    pub(crate) fn sanity_check(&self, log_size: u64, next_offset: i64) -> Result<(), String> {
        self.check_offsets(next_offset)?;
        let mut prev: Option<u32> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if u64::from(e.position) >= log_size {
                return Err(format!(
                    "entry {i} position {} beyond the log size {log_size}",
                    e.position
                ));
            }
            if prev.is_some_and(|p| e.position <= p) {
                return Err(format!(
                    "entry {i} position {} does not increase",
                    e.position
                ));
            }
            prev = Some(e.position);
        }
        Ok(())
    }
}

impl IndexFile<TimeEntry> {
    /// Appends `(max timestamp so far, offset where it was reached)` if the
    /// timestamp grew since the last entry.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if timestamp < 0 {
            return;
        }
        match self.entries.last() {
            Some(last) if timestamp <= last.timestamp || offset <= last.offset => {}
            _ => self.push(TimeEntry { timestamp, offset }),
        }
    }

    /// The last entry whose timestamp is strictly below `timestamp`: every
    /// record up to its offset is older than `timestamp`.
    pub(crate) fn last_before(&self, timestamp: i64) -> Option<TimeEntry> {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Timestamps and offsets strictly increasing, offsets inside the segment.
    pub(crate) fn sanity_check(&self, next_offset: i64) -> Result<(), String> {
        self.check_offsets(next_offset)?;
        for (i, pair) in self.entries.windows(2).enumerate() {
            if pair[1].timestamp <= pair[0].timestamp {
                return Err(format!(
                    "entry {} timestamp {} does not increase",
                    i + 1,
                    pair[1].timestamp
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_returns_floor_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&dir.path().join("x.index"), 100).unwrap();
        idx.append(109, 0);
        idx.append(119, 500);
        idx.append(129, 1000);
        assert_eq!(idx.lookup(100), 0);
        assert_eq!(idx.lookup(118), 0);
        assert_eq!(idx.lookup(119), 500);
        assert_eq!(idx.lookup(125), 500);
        assert_eq!(idx.lookup(10_000), 1000);
    }

    #[test]
    fn index_files_hold_relative_big_endian_entries_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = OffsetIndex::open(&path, 1000).unwrap();
        idx.append(1005, 77);
        idx.write_pending().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![0, 0, 0, 5, 0, 0, 0, 77]);
        let mut again = OffsetIndex::open(&path, 1000).unwrap();
        again.load().unwrap().unwrap();
        assert_eq!(
            again.entries(),
            &[OffsetEntry {
                offset: 1005,
                position: 77
            }]
        );
    }

    #[test]
    fn time_index_only_grows_and_finds_last_entry_before_a_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TimeIndex::open(&dir.path().join("x.timeindex"), 0).unwrap();
        idx.maybe_append(100, 5);
        idx.maybe_append(90, 9); // older: ignored
        idx.maybe_append(200, 12);
        assert_eq!(idx.entries().len(), 2);
        assert_eq!(idx.last_before(100), None);
        assert_eq!(idx.last_before(101).map(|e| e.offset), Some(5));
        assert_eq!(idx.last_before(1000).map(|e| e.offset), Some(12));
    }

    #[test]
    fn index_with_partial_entry_fails_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        std::fs::write(&path, [0u8; 11]).unwrap();
        let mut idx = OffsetIndex::open(&path, 0).unwrap();
        assert!(idx.load().unwrap().is_err());
    }

    #[test]
    fn sanity_check_rejects_positions_beyond_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&dir.path().join("x.index"), 0).unwrap();
        idx.append(3, 100);
        assert!(idx.sanity_check(50, 10).is_err());
        assert!(idx.sanity_check(150, 10).is_ok());
    }
}

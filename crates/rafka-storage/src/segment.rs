//! One log segment: `<base offset>.log` plus its `.index` and `.timeindex`.
//!
//! The `.log` file is a plain concatenation of record batches; a segment's
//! name is the base offset of its first batch, zero-padded to 20 digits. The
//! segment keeps, in memory, its size, next offset, largest timestamp (and
//! the batch where it was reached) and both indexes.
//!
//! A segment is loaded one of two ways: [`Segment::load_trusted`] believes the
//! index files after sanity checks and scans only the tail after the last
//! index entry; [`Segment::recover`] reads every batch, checks its CRC,
//! rebuilds the indexes and cuts the file at the first bad or incomplete batch.
//! All writes go through the owning [`crate::PartitionLog`]'s lock; readers
//! clone the `Arc<File>` and read positions outside it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{batches, verify_crc, BatchHeader, NO_TIMESTAMP};
use crate::config::{LogConfig, PREALLOCATE_STEP};
use crate::error::IoContext;
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{read_full_at, start_writeback, write_all_at, BatchScanner, Scan};
use crate::StorageError;

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// Largest offset distance from the base that the 32-bit relative index entries
/// hold (Kafka uses `Int.MaxValue`).
pub(crate) const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// The unit reservations are aligned to.
const PAGE: u64 = 4096;

/// Read size when scanning headers.
const HEADER_SCAN_CHUNK: usize = 16 * 1024;
/// Read size when scanning whole batches for recovery.
const RECOVERY_SCAN_CHUNK: usize = 1024 * 1024;

/// `<base offset, 20 digits>.<ext>`.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// What [`Segment::recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryOutcome {
    /// Bytes cut off the end of the file (0 if the segment was intact).
    pub truncated_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    log: Arc<File>,
    size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Last batch's last offset + 1, or `base_offset` when empty.
    next_offset: i64,
    /// Largest batch max timestamp (-1 if none) and the last offset of the
    /// first batch that reached it.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch (Kafka's base for time-based rolling).
    first_batch_timestamp: Option<i64>,
    /// When the segment received its first data (or was loaded), for `maybe_roll`.
    roll_clock_ms: Option<i64>,
    bytes_since_index: u64,
    /// Data or index entries written since the last flush: what `flush` goes by to
    /// seal indexes and fsync all three files.
    dirty: bool,
    /// The `.log` file changed (written, cut or created) since its last fsync. Implies
    /// `dirty`; `PartitionLog::sync_appended` clears only this one, so that the next
    /// `flush` still seals and syncs the indexes.
    log_unsynced: bool,
    /// An index file did not exist when the segment was opened.
    index_missing: bool,
    /// With `preallocate`: blocks are reserved up to here (beyond `size`, the file
    /// size unchanged). 0 when nothing is known to be reserved.
    preallocated_to: u64,
    /// `preallocate` failed here (unsupported by the filesystem, or full): do not try
    /// again for this segment; the appends themselves report a full disk.
    preallocate_failed: bool,
    /// Write-back of the `.log` file was started (`sync_file_range`) below here.
    writeback_started_to: u64,
    /// `sync_file_range` failed on this segment: do not try again.
    writeback_failed: bool,
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        Self::paths_with_suffix(dir, base_offset, "")
    }

    fn paths_with_suffix(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
    ) -> (PathBuf, PathBuf, PathBuf) {
        let path = |ext| dir.join(format!("{}{suffix}", file_name(base_offset, ext)));
        (path(LOG_EXT), path(INDEX_EXT), path(TIME_INDEX_EXT))
    }

    /// Renames the segment's files to their standard names followed by
    /// `suffix` ("" for the standard names): both indexes first, then the
    /// log, so a log file under the new name always has its indexes there
    /// too. Open handles (and readers holding them) follow the files.
    pub(crate) fn rename_files(&mut self, dir: &Path, suffix: &str) -> Result<(), StorageError> {
        let (log_path, index_path, time_path) =
            Self::paths_with_suffix(dir, self.base_offset, suffix);
        self.offset_index.rename(index_path)?;
        self.time_index.rename(time_path)?;
        std::fs::rename(&self.log_path, &log_path).ctx("renaming", &self.log_path)?;
        self.log_path = log_path;
        Ok(())
    }

    fn with_files(
        base_offset: i64,
        log_path: PathBuf,
        log: File,
        size: u64,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
    ) -> Self {
        Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size,
            offset_index,
            time_index,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: -1,
            first_batch_timestamp: None,
            roll_clock_ms: None,
            bytes_since_index: 0,
            dirty: false,
            log_unsynced: false,
            index_missing: false,
            preallocated_to: 0,
            preallocate_failed: false,
            writeback_started_to: size & !(PAGE - 1),
            writeback_failed: false,
        }
    }

    /// Creates a new, empty segment. Fails if its `.log` already exists.
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, StorageError> {
        Self::create_with_suffix(dir, base_offset, "")
    }

    /// Creates a new, empty segment whose three file names end with `suffix`
    /// (the log cleaner's `.cleaned` segments; [`Segment::rename_files`]
    /// moves them into place). Fails if its log file already exists.
    pub(crate) fn create_with_suffix(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
    ) -> Result<Segment, StorageError> {
        let (log_path, index_path, time_path) = Self::paths_with_suffix(dir, base_offset, suffix);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .ctx("creating segment", &log_path)?;
        let mut offset_index = OffsetIndex::open(&index_path, base_offset)?;
        offset_index.reset()?;
        let mut time_index = TimeIndex::open(&time_path, base_offset)?;
        time_index.reset()?;
        let mut segment = Self::with_files(base_offset, log_path, log, 0, offset_index, time_index);
        segment.mark_dirty();
        Ok(segment)
    }

    /// Opens an existing segment's files without reading them; follow with
    /// [`Segment::load_trusted`] or [`Segment::recover`].
    pub(crate) fn open_existing(dir: &Path, base_offset: i64) -> Result<Segment, StorageError> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .ctx("opening segment", &log_path)?;
        let size = log.metadata().ctx("reading metadata of", &log_path)?.len();
        let index_missing = !index_path.exists() || !time_path.exists();
        let offset_index = OffsetIndex::open(&index_path, base_offset)?;
        let time_index = TimeIndex::open(&time_path, base_offset)?;
        let mut segment =
            Self::with_files(base_offset, log_path, log, size, offset_index, time_index);
        segment.index_missing = index_missing;
        Ok(segment)
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Max timestamp of the segment's first batch, if known and set.
    pub(crate) fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp.filter(|t| *t >= 0)
    }

    pub(crate) fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    pub(crate) fn log_file(&self) -> &Arc<File> {
        &self.log
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Everything must be synced again: the data and the indexes.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
        self.log_unsynced = true;
    }

    /// The data must be synced again (a data-only sync failed; `dirty` is untouched).
    pub(crate) fn mark_log_unsynced(&mut self) {
        self.log_unsynced = true;
    }

    /// Files to fsync for this segment; clears both flags.
    pub(crate) fn take_files_to_sync(&mut self) -> [Arc<File>; 3] {
        self.dirty = false;
        self.log_unsynced = false;
        [
            self.log.clone(),
            self.offset_index.file().clone(),
            self.time_index.file().clone(),
        ]
    }

    /// The `.log` file, if it changed since its last fsync; clears only that flag (the
    /// indexes stay dirty for the next flush).
    pub(crate) fn take_log_to_sync(&mut self) -> Option<Arc<File>> {
        std::mem::take(&mut self.log_unsynced).then(|| self.log.clone())
    }

    /// Updates in-memory state and indexes for a batch written at `position`.
    fn index_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
        if self.bytes_since_index > u64::from(index_interval_bytes) {
            self.offset_index
                .append(header.last_offset(), position as u32);
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_size() as u64;
        self.next_offset = header.next_offset();
    }

    /// Appends already validated, offset-assigned batches (page cache only). With
    /// `preallocate_up_to` (the segment size cap, from `preallocate`), first reserves
    /// blocks [`PREALLOCATE_STEP`] ahead of the new end when the write would pass the
    /// reservation. With a nonzero `writeback_interval`, then starts write-back of the
    /// appended pages once that many bytes are waiting for it.
    pub(crate) fn append(
        &mut self,
        buf: &[u8],
        index_interval_bytes: u32,
        now_ms: i64,
        preallocate_up_to: Option<u64>,
        writeback_interval: u64,
    ) -> Result<(), StorageError> {
        let start = self.size;
        if let Some(cap) = preallocate_up_to {
            self.reserve_ahead(start + buf.len() as u64, cap);
        }
        if let Err(e) = write_all_at(&self.log, buf, start) {
            // Drop whatever part of the batches reached the file.
            if let Err(cut) = self.log.set_len(start) {
                tracing::error!(path = %self.log_path.display(), size = start, error = %cut,
                    "could not cut a partial write off the segment");
            }
            return Err(StorageError::IoAt {
                op: "appending to",
                path: self.log_path.clone(),
                source: e,
            });
        }
        for item in batches(buf) {
            let (header, range) = item?;
            self.index_batch(&header, start + range.start as u64, index_interval_bytes);
        }
        self.size += buf.len() as u64;
        self.mark_dirty();
        if writeback_interval > 0 {
            self.start_writeback(writeback_interval);
        }
        if self.roll_clock_ms.is_none() {
            self.roll_clock_ms = Some(now_ms);
        }
        // Index files are best effort here; a failure resurfaces in flush().
        if let Err(e) = self.write_pending_indexes() {
            tracing::warn!(segment = %self.log_path.display(), error = %e, "deferred index write failed");
        }
        Ok(())
    }

    /// Reserves blocks up to the next [`PREALLOCATE_STEP`] boundary past `end` (at
    /// most to `cap`, the segment size limit, unless `end` is already past it) with
    /// `fallocate(FALLOC_FL_KEEP_SIZE)`: the file size, and so recovery, is unchanged.
    fn reserve_ahead(&mut self, end: u64, cap: u64) {
        if end <= self.preallocated_to || self.preallocate_failed {
            return;
        }
        let from = self.preallocated_to.max(self.size & !(PAGE - 1));
        let to = ((end + PREALLOCATE_STEP) & !(PREALLOCATE_STEP - 1)).min(cap.max(end));
        match rustix::fs::fallocate(&*self.log, rustix::fs::FallocateFlags::KEEP_SIZE, from, to - from) {
            Ok(()) => self.preallocated_to = to,
            Err(e) => {
                self.preallocate_failed = true;
                tracing::warn!(segment = %self.log_path.display(), error = %e,
                    "cannot preallocate the segment (preallocate=true); appending without it");
            }
        }
    }

    /// Starts write-back (without waiting for it) of the whole pages appended since
    /// the last start, once there are at least `step` bytes of them.
    fn start_writeback(&mut self, step: u64) {
        if self.writeback_failed || self.size < self.writeback_started_to + step {
            return;
        }
        let to = self.size & !(PAGE - 1);
        let from = self.writeback_started_to;
        if let Err(e) = start_writeback(&self.log, from, to - from) {
            self.writeback_failed = true;
            tracing::warn!(segment = %self.log_path.display(), error = %e,
                "cannot start write-back of the segment; leaving it to the kernel");
        } else {
            self.writeback_started_to = to;
        }
    }

    /// Gives back the blocks reserved beyond the data (the segment stopped being
    /// active, or the log closes) by truncating the file to its own size, which frees
    /// every block past the end, a reservation left by a run that crashed included.
    /// (Punching a hole would not do: ext4 ignores holes beyond the file size.)
    pub(crate) fn release_preallocation(&mut self) {
        if self.preallocated_to == 0 {
            return;
        }
        if let Err(e) = self.log.set_len(self.size) {
            tracing::warn!(segment = %self.log_path.display(), error = %e,
                "cannot release the blocks preallocated beyond the segment's data");
        }
        self.preallocated_to = 0;
    }

    pub(crate) fn write_pending_indexes(&mut self) -> Result<(), StorageError> {
        self.offset_index.write_pending()?;
        self.time_index.write_pending()
    }

    /// Called when the segment stops being active, on flush and on close:
    /// records the final max timestamp in the time index (so a later trusted
    /// load knows it) and writes pending index entries.
    pub(crate) fn seal(&mut self) -> Result<(), StorageError> {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        self.write_pending_indexes()
    }

    /// Whether the append of `append_bytes` ending at `append_last_offset`
    /// must go to a new segment (Kafka's `shouldRoll`, without jitter).
    pub(crate) fn should_roll(
        &self,
        config: &LogConfig,
        append_bytes: usize,
        append_max_timestamp: i64,
        append_last_offset: i64,
        now_ms: i64,
    ) -> bool {
        if self.is_empty() {
            return false;
        }
        if self.size + append_bytes as u64 > config.effective_segment_bytes() {
            return true;
        }
        if append_last_offset - self.base_offset > MAX_RELATIVE_OFFSET {
            return true;
        }
        if let Some(segment_ms) = config.segment_ms {
            // Kafka measures age by the producer clock when timestamps exist,
            // so replaying old data does not roll on every append.
            let waited = match self.first_batch_timestamp {
                Some(first) if first >= 0 && append_max_timestamp >= 0 => {
                    append_max_timestamp - first
                }
                _ => now_ms - self.roll_clock_ms.unwrap_or(now_ms),
            };
            if waited > segment_ms {
                return true;
            }
        }
        false
    }

    /// Age-based roll check for the periodic `maybe_roll`, by broker clock.
    pub(crate) fn is_older_than(&self, age_ms: i64, now_ms: i64) -> bool {
        !self.is_empty() && self.roll_clock_ms.is_some_and(|t| now_ms - t > age_ms)
    }

    /// Largest timestamp for time retention: the max record timestamp, or the
    /// file's modification time when no batch has one (Kafka's rule).
    pub(crate) fn retention_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        self.log
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MAX, |d| d.as_millis() as i64)
    }

    /// Start position for a scan looking for the batch containing `offset`.
    pub(crate) fn lookup_position(&self, offset: i64) -> u64 {
        u64::from(self.offset_index.lookup(offset))
    }

    /// Start position for a scan looking for the first batch whose max
    /// timestamp is >= `timestamp`: just after the last time-index entry
    /// below it (every batch before that is older).
    pub(crate) fn timestamp_lookup_position(&self, timestamp: i64) -> u64 {
        match self.time_index.last_before(timestamp) {
            Some(entry) => self.lookup_position(entry.offset + 1),
            None => 0,
        }
    }

    /// Loads the index files and trusts them after sanity checks; scans only
    /// the batches after the last offset-index entry to find the segment end.
    /// `Ok(Err(reason))` means the segment must be recovered instead.
    pub(crate) fn load_trusted(&mut self, now_ms: i64) -> Result<Result<(), String>, StorageError> {
        if self.index_missing && self.size > 0 {
            return Ok(Err("index file missing".to_string()));
        }
        if let Err(reason) = self.offset_index.load()? {
            return Ok(Err(format!(
                "{}: {reason}",
                self.offset_index.path().display()
            )));
        }
        if let Err(reason) = self.time_index.load()? {
            return Ok(Err(format!(
                "{}: {reason}",
                self.time_index.path().display()
            )));
        }
        let last_entry = self.offset_index.last();
        let start = last_entry.map_or(0, |e| u64::from(e.position));
        if start >= self.size && self.size > 0 {
            return Ok(Err(format!(
                "index position {start} is not inside the log of {} bytes",
                self.size
            )));
        }
        if let Some(last_time) = self.time_index.last() {
            self.max_timestamp = last_time.timestamp;
            self.offset_of_max_timestamp = last_time.offset;
        }
        let file = self.log.clone();
        let mut scanner = BatchScanner::new(&file, start, self.size, HEADER_SCAN_CHUNK);
        let mut first = true;
        loop {
            match scanner.next(false).ctx("reading", &self.log_path)? {
                Scan::End => break,
                Scan::Incomplete { pos } => {
                    return Ok(Err(format!("incomplete batch at position {pos}")))
                }
                Scan::Corrupt { pos, reason } => {
                    return Ok(Err(format!("bad batch at position {pos}: {reason}")))
                }
                Scan::Batch { header, .. } => {
                    if first {
                        if let Some(entry) = last_entry {
                            if header.last_offset() != entry.offset {
                                return Ok(Err(format!(
                                    "last index entry says offset {} but its batch ends at {}",
                                    entry.offset,
                                    header.last_offset()
                                )));
                            }
                        } else {
                            self.first_batch_timestamp = Some(header.max_timestamp);
                        }
                        first = false;
                    }
                    if header.base_offset < self.next_offset {
                        return Ok(Err(format!(
                            "batch at offset {} overlaps the previous batch ending before {}",
                            header.base_offset, self.next_offset
                        )));
                    }
                    if header.max_timestamp > self.max_timestamp {
                        self.max_timestamp = header.max_timestamp;
                        self.offset_of_max_timestamp = header.last_offset();
                    }
                    self.next_offset = header.next_offset();
                }
            }
        }
        if let Err(reason) = self.offset_index.sanity_check(self.size, self.next_offset) {
            return Ok(Err(format!(
                "{}: {reason}",
                self.offset_index.path().display()
            )));
        }
        if let Err(reason) = self.time_index.sanity_check(self.next_offset) {
            return Ok(Err(format!(
                "{}: {reason}",
                self.time_index.path().display()
            )));
        }
        if self.size > 0 && self.first_batch_timestamp.is_none() {
            let mut head = [0u8; BatchHeader::SIZE];
            let n = read_full_at(&self.log, &mut head, 0).ctx("reading", &self.log_path)?;
            match BatchHeader::parse(&head[..n]) {
                Ok(h) => self.first_batch_timestamp = Some(h.max_timestamp),
                Err(e) => return Ok(Err(format!("first batch: {e}"))),
            }
        }
        if self.size > 0 {
            self.roll_clock_ms = Some(now_ms);
        }
        self.bytes_since_index = self.size - start;
        Ok(Ok(()))
    }

    /// Reads every batch, checking length, magic, CRC and offset order;
    /// rebuilds both indexes; cuts the file at the first bad or incomplete
    /// batch. `on_batch` sees every batch kept (for the leader-epoch cache).
    pub(crate) fn recover(
        &mut self,
        index_interval_bytes: u32,
        now_ms: i64,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<RecoveryOutcome, StorageError> {
        self.offset_index.reset()?;
        self.time_index.reset()?;
        self.next_offset = self.base_offset;
        self.max_timestamp = NO_TIMESTAMP;
        self.offset_of_max_timestamp = -1;
        self.first_batch_timestamp = None;
        self.bytes_since_index = 0;
        let file = self.log.clone();
        let mut scanner = BatchScanner::new(&file, 0, self.size, RECOVERY_SCAN_CHUNK);
        let mut cut: Option<(u64, String)> = None;
        loop {
            let (pos, header) = match scanner.next(true).ctx("reading", &self.log_path)? {
                Scan::End => break,
                Scan::Incomplete { pos } => {
                    cut = Some((pos, "incomplete batch".to_string()));
                    break;
                }
                Scan::Corrupt { pos, reason } => {
                    cut = Some((pos, reason));
                    break;
                }
                Scan::Batch { pos, header, bytes } => {
                    let problem = if let Err(e) = verify_crc(bytes.unwrap_or_default()) {
                        Some(e.to_string())
                    } else if header.base_offset < self.next_offset {
                        Some(format!(
                            "batch base offset {} is below the expected next offset {}",
                            header.base_offset, self.next_offset
                        ))
                    } else if header.last_offset_delta < 0 {
                        Some(format!(
                            "negative lastOffsetDelta {}",
                            header.last_offset_delta
                        ))
                    } else if header.last_offset() - self.base_offset > MAX_RELATIVE_OFFSET {
                        Some(format!(
                            "offset {} too far from the segment base",
                            header.last_offset()
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = problem {
                        cut = Some((pos, reason));
                        break;
                    }
                    (pos, header)
                }
            };
            self.index_batch(&header, pos, index_interval_bytes);
            on_batch(&header);
        }
        let mut outcome = RecoveryOutcome { truncated_bytes: 0 };
        if let Some((pos, reason)) = cut {
            outcome.truncated_bytes = self.size - pos;
            tracing::info!(
                segment = %self.log_path.display(),
                position = pos,
                truncated_bytes = outcome.truncated_bytes,
                next_offset = self.next_offset,
                %reason,
                "truncating torn or corrupt tail of segment"
            );
            self.log.set_len(pos).ctx("truncating", &self.log_path)?;
            self.size = pos;
            self.writeback_started_to = self.writeback_started_to.min(pos & !(PAGE - 1));
            self.preallocated_to = 0;
        }
        // What was scanned may never have been fsynced (it was past the
        // recovery point): the caller must sync it before moving the
        // recovery point over it.
        self.mark_dirty();
        self.roll_clock_ms = (self.size > 0).then_some(now_ms);
        self.write_pending_indexes()?;
        Ok(outcome)
    }

    /// Header-only pass over the whole segment (rebuilding the epoch cache).
    pub(crate) fn for_each_header(
        &self,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), StorageError> {
        self.for_each_header_from(self.base_offset, on_batch)
    }

    /// Header-only pass from the offset-index position at or before the
    /// batch holding `offset` to the segment end: `on_batch` may also see a
    /// few batches before `offset`. Record bodies are skipped, not read
    /// (bodies larger than the scan chunk are never touched).
    pub(crate) fn for_each_header_from(
        &self,
        offset: i64,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), StorageError> {
        let start = if offset <= self.base_offset {
            0
        } else {
            self.lookup_position(offset)
        };
        let mut scanner = BatchScanner::new(&self.log, start, self.size, HEADER_SCAN_CHUNK);
        loop {
            match scanner.next(false).ctx("reading", &self.log_path)? {
                Scan::Batch { header, .. } => on_batch(&header),
                Scan::End | Scan::Incomplete { .. } => return Ok(()),
                Scan::Corrupt { pos, reason } => {
                    return Err(StorageError::corrupt(format!(
                        "{} at position {pos}: {reason}",
                        self.log_path.display()
                    )))
                }
            }
        }
    }

    /// Removes every batch whose last offset is >= `offset` (a batch
    /// straddling `offset` goes entirely). Returns the new next offset.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<i64, StorageError> {
        if offset >= self.next_offset {
            return Ok(self.next_offset);
        }
        let start = self.lookup_position(offset);
        let mut cut: Option<(u64, i64)> = None;
        {
            let mut scanner = BatchScanner::new(&self.log, start, self.size, HEADER_SCAN_CHUNK);
            loop {
                match scanner.next(false).ctx("reading", &self.log_path)? {
                    Scan::Batch { pos, header, .. } => {
                        if header.last_offset() >= offset {
                            let next = if pos == 0 {
                                self.base_offset
                            } else {
                                header.base_offset
                            };
                            cut = Some((pos, next));
                            break;
                        }
                    }
                    Scan::End | Scan::Incomplete { .. } => break,
                    Scan::Corrupt { pos, reason } => {
                        return Err(StorageError::corrupt(format!(
                            "{} at position {pos}: {reason}",
                            self.log_path.display()
                        )))
                    }
                }
            }
        }
        let Some((position, next_offset)) = cut else {
            return Ok(self.next_offset);
        };
        self.log
            .set_len(position)
            .ctx("truncating", &self.log_path)?;
        self.size = position;
        self.writeback_started_to = self.writeback_started_to.min(position & !(PAGE - 1));
        self.preallocated_to = 0;
        self.next_offset = next_offset;
        self.offset_index.truncate_to_position(position)?;
        self.time_index.truncate_to_offset(next_offset)?;
        self.recompute_max_timestamp()?;
        if self.size == 0 {
            self.first_batch_timestamp = None;
            self.roll_clock_ms = None;
        }
        self.bytes_since_index = 0;
        self.mark_dirty();
        Ok(next_offset)
    }

    /// After a truncation: the max is the last time-index entry's or larger
    /// in a batch after it.
    fn recompute_max_timestamp(&mut self) -> Result<(), StorageError> {
        let (mut max, mut at, start) = match self.time_index.last() {
            Some(e) => (e.timestamp, e.offset, self.lookup_position(e.offset + 1)),
            None => (NO_TIMESTAMP, -1, 0),
        };
        let after = at;
        let mut scanner = BatchScanner::new(&self.log, start, self.size, HEADER_SCAN_CHUNK);
        while let Scan::Batch { header, .. } = scanner.next(false).ctx("reading", &self.log_path)? {
            if header.last_offset() > after && header.max_timestamp > max {
                max = header.max_timestamp;
                at = header.last_offset();
            }
        }
        self.max_timestamp = max;
        self.offset_of_max_timestamp = at;
        Ok(())
    }

    /// Deletes the segment's files (missing files are fine).
    pub(crate) fn delete_files(&self) -> Result<(), StorageError> {
        for path in [
            self.log_path.as_path(),
            self.offset_index.path(),
            self.time_index.path(),
        ] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StorageError::IoAt {
                        op: "deleting",
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }
}

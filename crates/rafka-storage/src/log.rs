//! [`PartitionLog`]: the durable log of one partition replica.
//!
//! A partition directory holds an ordered list of segments (the last one is
//! *active* and takes appends) plus checkpoint files. Everything mutable sits
//! behind one `parking_lot::Mutex`; methods take `&self`, so the log is shared
//! as `Arc<PartitionLog>`.
//!
//! Concurrency rules:
//! * appends validate and patch timestamps *before* taking the lock; under it
//!   they only assign offsets (12 bytes per batch), maybe roll, and write.
//! * reads take the lock just long enough to pick the segment, clone its file
//!   handle and note positions; the `pread`s happen outside it.
//! * `flush` and `sync_appended` hold a second lock (`flush_lock`, always
//!   taken before the main one) for their whole run but the main lock only to
//!   collect the files to fsync; the fsyncs run while appends continue. The
//!   recovery-point checkpoint is only written under `flush_lock`, and
//!   truncation takes it too, so neither can record as durable data that a
//!   concurrent truncation replaced.
//!
//! Durability order ("persist before you write"): a new leader epoch reaches
//! `leader-epoch-checkpoint` before the data in that epoch; a truncation
//! lowers the recovery point on disk before it touches segment files.
//! Nothing is fsynced by an append itself. [`PartitionLog::flush`] (periodic)
//! syncs data and indexes and moves the recovery point;
//! [`PartitionLog::sync_appended`] (the broker's `flush.messages` /
//! `flush.ms` modes) syncs only the segment data written since the last sync
//! and is a group commit: callers queue on `flush_lock`, and one that finds
//! its data already covered by the sync that ran meanwhile returns without
//! an fsync. Both advance the *durable end* ([`PartitionLog::synced_end_offset`]):
//! every offset below it is on stable storage. It can be above the recovery
//! point (a crash rescans from the recovery point and keeps what is intact,
//! which includes everything synced); truncation lowers it with the log end.
//!
//! Recovery after a crash (no `.clean-shutdown` marker): segments wholly
//! below the recovery point are trusted (after index sanity checks), the rest
//! are scanned batch by batch with CRC checks, the first torn or corrupt
//! batch and everything after it are dropped, and the indexes and the leader
//! epoch cache are rebuilt for the scanned part.
//!
//! Idempotent producers (module `producer_state`): the producer state lives
//! under the same lock. A leader append checks every idempotent batch before
//! writing anything (duplicates are answered with the original offsets);
//! replicated appends update the state unchecked. `flush` and `close` write a
//! snapshot of it at the log end offset (after the data is fsynced, before
//! the recovery point moves); `open` and truncations reload the newest
//! snapshot at or below the log end and replay the batch headers after it.
//!
//! Compaction (child module `cleaner`, [`PartitionLog::compact`]) reads
//! closed segments outside the lock and swaps each cleaned segment in under
//! it; a truncation meanwhile makes the pass give up. It leaves offset gaps:
//! reads and index lookups already look for the first batch ending at or
//! after the wanted offset, and replicated appends may start past the log
//! end.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::batch::{
    batches, records, set_base_offset, set_partition_leader_epoch, validate_for_append,
    validate_replicated, BatchHeader,
};
use crate::checkpoint::{
    read_offset, write_offset, HIGH_WATERMARK_CHECKPOINT, LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT, TMP_SUFFIX,
};
use crate::config::{LogConfig, TimestampType};
use crate::epoch::{EpochEntry, LeaderEpochCache};
use crate::error::IoContext;
use crate::io::{read_full_at, sync_dir, BatchScanner, Scan};
use crate::producer_state::{
    is_tracked, PendingEntries, ProducerSnapshot, ProducerStateManager, Verdict, SNAPSHOT_EXT,
};
use crate::segment::{file_name, Segment, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT};
use crate::StorageError;

/// Marker written by [`PartitionLog::close`]; its presence on open means the
/// indexes can be trusted without a scan. Removed by `open`.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// A test hook run by [`PartitionLog::sync_appended`] before it fsyncs (feature
/// `fault-injection`): it may block, to hold a sync in flight, or fail, to act as a
/// failed fsync.
#[cfg(any(test, feature = "fault-injection"))]
pub type SyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The broker time stamped on the batches, or -1 for CreateTime.
    pub log_append_time: i64,
    /// Largest batch max timestamp appended (-1 if none).
    pub max_timestamp: i64,
    pub batch_count: usize,
    pub bytes: usize,
    /// The append was an idempotent producer's retry of a batch already in
    /// the log: nothing was written, `base_offset`/`last_offset` (and
    /// `max_timestamp`) are those of the original batch, `log_append_time`
    /// is -1 and `batch_count`/`bytes` are 0.
    pub duplicate: bool,
}

/// Result of [`PartitionLog::read`].
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches only, exactly as stored.
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

struct Inner {
    config: LogConfig,
    /// Ordered by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    /// Offsets below this are known to be fsynced (as last checkpointed).
    recovery_point: i64,
    epochs: LeaderEpochCache,
    /// Idempotent-producer state for the batches below the log end, and
    /// the snapshot files.
    producers: ProducerStateManager,
    /// Segment files were created or deleted since the last directory fsync.
    dir_dirty: bool,
    /// The durable end: offsets below it are fsynced (by `flush` or
    /// `sync_appended`). Never above the log end offset.
    synced_end_offset: i64,
    /// Wall-clock time of the oldest append not yet covered by a started sync
    /// (for `flush.ms`); `None` when there is none.
    unsynced_since_ms: Option<i64>,
    closed: bool,
    /// Bumped by every truncation: a cleaner pass that sees it move drops its work.
    truncations: u64,
    /// Lowest log end a truncation left since the cleaner last looked: data
    /// appended above it is dirty again.
    truncated_to: Option<i64>,
}

/// The durable log of one partition. See the module documentation.
pub struct PartitionLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Serialises flush/sync_appended/close/truncation and guards the
    /// recovery-point file.
    flush_lock: Mutex<()>,
    /// How many times `sync_appended` fsynced (for tests and diagnostics).
    appended_syncs: AtomicU64,
    /// Runs before the fsyncs of `sync_appended`; an error counts as a failed fsync.
    #[cfg(any(test, feature = "fault-injection"))]
    sync_hook: Mutex<Option<SyncHook>>,
    high_watermark: Mutex<Option<i64>>,
    /// Serialises compaction passes; holds the cleaner checkpoint.
    cleaner: Mutex<cleaner::CleanerState>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Adds a follower-style epoch entry for a batch newer than the cache.
fn note_batch_epoch(epochs: &mut LeaderEpochCache, header: &BatchHeader) -> bool {
    let epoch = header.partition_leader_epoch;
    if epoch >= 0 && epochs.latest_epoch().is_none_or(|latest| epoch > latest) {
        epochs.assign(epoch, header.base_offset)
    } else {
        false
    }
}

/// Parses `<20 digits>.<ext>`.
fn parse_segment_file(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Lists segment base offsets and producer-state snapshot offsets; removes
/// leftover temp files and orphan indexes.
fn scan_dir(dir: &Path) -> Result<(Vec<i64>, Vec<i64>), StorageError> {
    let mut logs = std::collections::BTreeSet::new();
    let mut indexes = Vec::new();
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            tracing::info!(path = %entry.path().display(), "removing leftover temporary file");
            std::fs::remove_file(entry.path()).ctx("removing", &entry.path())?;
        } else if let Some(base) = parse_segment_file(name, LOG_EXT) {
            logs.insert(base);
        } else if let Some(offset) = parse_segment_file(name, SNAPSHOT_EXT) {
            snapshots.push(offset);
        } else if let Some(base) =
            parse_segment_file(name, INDEX_EXT).or_else(|| parse_segment_file(name, TIME_INDEX_EXT))
        {
            indexes.push((entry.path(), base));
        }
    }
    for (path, base) in indexes {
        if !logs.contains(&base) {
            tracing::info!(path = %path.display(), "removing index file without a segment");
            std::fs::remove_file(&path).ctx("removing", &path)?;
        }
    }
    Ok((logs.into_iter().collect(), snapshots))
}

/// Reads a checkpoint that the log can live without; a corrupt file is
/// logged and treated as absent.
fn read_optional_offset(dir: &Path, name: &str) -> Result<Option<i64>, StorageError> {
    match read_offset(dir, name) {
        Ok(v) => Ok(v),
        Err(StorageError::CorruptCheckpoint { path, reason }) => {
            tracing::warn!(path = %path.display(), %reason, "ignoring corrupt checkpoint");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Inner {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("invariant: a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("invariant: a log always has an active segment")
    }

    fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    fn check_open(&self, dir: &Path) -> Result<(), StorageError> {
        if self.closed {
            Err(StorageError::Closed {
                dir: dir.to_path_buf(),
            })
        } else {
            Ok(())
        }
    }

    /// Index of the segment that holds `offset` (the last one based at or below it).
    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// Appends validated, offset-assigned batches to the active segment with this
    /// log's index interval, preallocation (up to the segment size cap, if
    /// `preallocate`) and write-back interval.
    fn append_to_active(&mut self, records: &[u8], now_ms: i64) -> Result<(), StorageError> {
        let config = &self.config;
        let (interval, writeback) = (config.index_interval_bytes, config.writeback_interval_bytes);
        let preallocate = config.preallocate.then_some(config.segment_bytes);
        self.active_mut().append(records, interval, now_ms, preallocate, writeback)
    }

    /// Seals the active segment and starts a new one at the log end offset.
    /// A no-op when the active segment is empty.
    fn roll(&mut self, dir: &Path) -> Result<(), StorageError> {
        let leo = self.log_end_offset();
        let active = self.active_mut();
        if active.is_empty() {
            return Ok(());
        }
        active.seal()?;
        active.release_preallocation();
        let new = Segment::create(dir, leo)?;
        tracing::debug!(dir = %dir.display(), base_offset = leo, "rolled new segment");
        self.segments.push(new);
        self.dir_dirty = true;
        Ok(())
    }

    /// Deletes the longest prefix of segments matching `predicate(segment,
    /// next segment's base)`, never past `upper_offset` and never an empty
    /// active segment; rolls first if every segment goes.
    fn delete_prefix(
        &mut self,
        dir: &Path,
        upper_offset: i64,
        mut predicate: impl FnMut(&Segment, Option<i64>) -> bool,
    ) -> Result<usize, StorageError> {
        let n = self.segments.len();
        let leo = self.log_end_offset();
        let mut count = 0;
        for i in 0..n {
            let seg = &self.segments[i];
            let next_base = self.segments.get(i + 1).map(Segment::base_offset);
            if next_base.is_none() && seg.is_empty() {
                break;
            }
            if next_base.unwrap_or(leo) > upper_offset || !predicate(seg, next_base) {
                break;
            }
            count += 1;
        }
        if count == n {
            self.roll(dir)?;
        }
        for _ in 0..count {
            let seg = &self.segments[0];
            tracing::info!(dir = %dir.display(), base_offset = seg.base_offset(), next_offset = seg.next_offset(),
                size = seg.size(), "deleting segment");
            seg.delete_files()?;
            self.segments.remove(0);
            self.dir_dirty = true;
        }
        Ok(count)
    }

    /// After segments were deleted from the front: move the log start up.
    fn advance_start_to_first_segment(&mut self, dir: &Path) -> Result<(), StorageError> {
        let first = self.segments[0].base_offset();
        if first > self.log_start_offset {
            self.log_start_offset = first;
            write_offset(dir, LOG_START_OFFSET_CHECKPOINT, first)?;
            if self.epochs.truncate_from_start(first) {
                self.epochs.persist()?;
            }
        }
        Ok(())
    }

    /// Starts the `flush.ms` clock at the first append after a sync (the clock is
    /// read only then).
    fn note_unsynced_append(&mut self) {
        if self.unsynced_since_ms.is_none() {
            self.unsynced_since_ms = Some(wall_clock_ms());
        }
    }

    /// After a failed sync: the appends it took the clock of are unsynced again.
    fn restore_unsynced_since(&mut self, taken: Option<i64>) {
        self.unsynced_since_ms = match (taken, self.unsynced_since_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Notes a truncation to `new_end` for the log cleaner.
    fn note_truncation(&mut self, new_end: i64) {
        self.truncations += 1;
        self.truncated_to = Some(self.truncated_to.map_or(new_end, |t| t.min(new_end)));
    }

    /// Drops all data and restarts the log, empty, at `offset`.
    fn truncate_fully(&mut self, dir: &Path, offset: i64) -> Result<(), StorageError> {
        self.note_truncation(offset);
        // Checkpoints first: a crash part-way leaves log start > data, which
        // open() resolves by finishing the job.
        write_offset(dir, LOG_START_OFFSET_CHECKPOINT, offset)?;
        write_offset(dir, RECOVERY_POINT_CHECKPOINT, offset)?;
        self.recovery_point = offset;
        // No snapshot may outlive the data it describes.
        self.producers.clear();
        if self.producers.delete_all_snapshots(dir)? {
            sync_dir(dir).ctx("syncing directory", dir)?;
        }
        // Keep the segment list non-empty at every step, even if I/O fails.
        while self.segments.len() > 1 {
            if let Some(seg) = self.segments.last() {
                seg.delete_files()?;
            }
            self.segments.pop();
            self.dir_dirty = true;
        }
        if self.segments[0].base_offset() == offset {
            // Same name: empty it in place (all its batches are >= offset).
            self.segments[0].truncate_to(offset)?;
        } else {
            let new = Segment::create(dir, offset)?;
            let old = std::mem::replace(&mut self.segments[0], new);
            // Should this fail, open() drops the leftover: it lies below the log start.
            old.delete_files()?;
        }
        self.log_start_offset = offset;
        self.dir_dirty = true;
        // Nothing lies below `offset` any more: there is nothing to lose.
        self.synced_end_offset = offset;
        self.unsynced_since_ms = None;
        if self.epochs.clear() {
            self.epochs.persist()?;
        }
        tracing::info!(dir = %dir.display(), offset, "truncated log fully, restarting at offset");
        Ok(())
    }

    /// Rebuilds the producer state for the current log: deletes snapshots
    /// beyond the log end, loads the newest remaining readable one (or starts
    /// empty at the log start offset) and replays the batch headers from
    /// there to the log end. Returns how many batches were replayed.
    fn reload_producer_state(&mut self, dir: &Path) -> Result<usize, StorageError> {
        let leo = self.log_end_offset();
        if self.producers.delete_snapshots_above(dir, leo)? {
            self.dir_dirty = true;
        }
        let from = self
            .producers
            .load_newest_snapshot(dir)?
            .unwrap_or(self.log_start_offset);
        let mut replayed = 0;
        let producers = &mut self.producers;
        for seg in self.segments.iter().filter(|s| s.next_offset() > from) {
            seg.for_each_header_from(from, &mut |h| {
                if h.last_offset() >= from {
                    producers.apply(h);
                    replayed += 1;
                }
            })?;
        }
        tracing::debug!(dir = %dir.display(), from, log_end = leo, replayed, "rebuilt producer state");
        Ok(replayed)
    }

    /// Whether a producer-state snapshot at the log end offset would save a
    /// rebuild any work: there is none there yet, and there is data or state.
    fn producer_snapshot_due(&self) -> bool {
        let leo = self.log_end_offset();
        self.producers.newest_snapshot() != Some(leo)
            && (leo > self.log_start_offset || !self.producers.is_empty())
    }
}

/// Snapshot of where to read, taken under the lock.
struct ReadPlan {
    file: Arc<File>,
    base_offset: i64,
    start: u64,
    end: u64,
}

impl PartitionLog {
    /// Opens (creating if absent) the log in `dir`, recovering after a crash.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<PartitionLog, StorageError> {
        let dir = dir.into();
        config.validate()?;
        let now = wall_clock_ms();
        if !dir.exists() {
            std::fs::create_dir_all(&dir).ctx("creating log directory", &dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).ctx("syncing directory", parent)?;
            }
        }
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        cleaner::recover_leftovers(&dir)?;
        let (bases, snapshot_offsets) = scan_dir(&dir)?;
        let recovery_point = if clean {
            i64::MAX
        } else {
            read_optional_offset(&dir, RECOVERY_POINT_CHECKPOINT)?.unwrap_or(0)
        };
        let log_start_checkpoint = read_optional_offset(&dir, LOG_START_OFFSET_CHECKPOINT)?;
        let (mut epochs, epochs_file_ok) = LeaderEpochCache::load(&dir)?;
        let epochs_loaded = epochs.entries().to_vec();
        let mut rebuild_epochs = !epochs_file_ok;
        let mut epochs_trimmed = false;
        tracing::info!(dir = %dir.display(), clean, recovery_point, segments = bases.len(), "opening partition log");

        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len() + 1);
        let mut dir_dirty = false;
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = Segment::open_existing(&dir, base)?;
            let segment_end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let mut recover = !clean && segment_end > recovery_point;
            if !recover {
                match seg.load_trusted(now)? {
                    Ok(()) if rebuild_epochs => seg.for_each_header(&mut |h| {
                        note_batch_epoch(&mut epochs, h);
                    })?,
                    Ok(()) => {}
                    Err(reason) => {
                        tracing::warn!(dir = %dir.display(), base_offset = base, %reason,
                            "segment failed its sanity check, rebuilding it");
                        recover = true;
                    }
                }
            }
            if !recover {
                segments.push(seg);
                continue;
            }
            if !epochs_trimmed {
                // From here on the epoch cache is rebuilt from the data.
                epochs.truncate_from_end(base);
                epochs_trimmed = true;
                rebuild_epochs = true;
            }
            let outcome = seg.recover(config.index_interval_bytes, now, &mut |h| {
                note_batch_epoch(&mut epochs, h);
            })?;
            let torn = outcome.truncated_bytes > 0;
            if torn {
                tracing::info!(dir = %dir.display(), base_offset = base, next_offset = seg.next_offset(),
                    truncated_bytes = outcome.truncated_bytes, "recovered segment with a torn tail");
            }
            segments.push(seg);
            if torn {
                for &later in &bases[i + 1..] {
                    tracing::info!(dir = %dir.display(), base_offset = later,
                        "deleting segment after a torn tail");
                    Segment::open_existing(&dir, later)?.delete_files()?;
                    dir_dirty = true;
                }
                break;
            }
        }

        // An empty segment that is not the last one holds nothing: drop it.
        let mut i = 0;
        while i + 1 < segments.len() {
            if segments[i].is_empty() {
                segments[i].delete_files()?;
                segments.remove(i);
                dir_dirty = true;
            } else {
                i += 1;
            }
        }

        let mut log_start = match (
            segments.first().map(Segment::base_offset),
            log_start_checkpoint,
        ) {
            (Some(first), Some(cp)) => first.max(cp),
            (Some(first), None) => first,
            (None, Some(cp)) => cp.max(0),
            (None, None) => 0,
        };
        if segments.is_empty() {
            segments.push(Segment::create(&dir, log_start)?);
            dir_dirty = true;
        }
        let mut inner = Inner {
            config,
            segments,
            log_start_offset: log_start,
            recovery_point: 0,
            epochs,
            producers: ProducerStateManager::new(snapshot_offsets),
            dir_dirty,
            synced_end_offset: 0,
            unsynced_since_ms: None,
            closed: false,
            truncations: 0,
            truncated_to: None,
        };
        if log_start > inner.log_end_offset() {
            // Retention or DeleteRecords moved the start past data that did
            // not survive the crash: start over there (Kafka does the same).
            tracing::warn!(dir = %dir.display(), log_start, log_end = inner.log_end_offset(),
                "log start offset is beyond the recovered data");
            inner.truncate_fully(&dir, log_start)?;
        }
        // Segments wholly below the log start (a crash before retention ran).
        while inner.segments.len() > 1 && inner.segments[1].base_offset() <= log_start {
            inner.segments[0].delete_files()?;
            inner.segments.remove(0);
            inner.dir_dirty = true;
        }
        log_start = inner.log_start_offset;
        let leo = inner.log_end_offset();
        inner.epochs.truncate_from_end(leo);
        inner.epochs.truncate_from_start(log_start);
        if !epochs_file_ok || inner.epochs.entries() != epochs_loaded.as_slice() {
            inner.epochs.persist()?;
        }

        inner.reload_producer_state(&dir)?;

        // Make what recovery scanned (and cut) durable, then record it: only
        // fsynced data may lie below the recovery point (and a snapshot).
        for seg in inner.segments.iter_mut().filter(|s| s.is_dirty()) {
            seg.write_pending_indexes()?;
            for file in seg.take_files_to_sync() {
                file.sync_data().ctx("syncing", seg.log_path())?;
            }
        }
        if inner.dir_dirty {
            sync_dir(&dir).ctx("syncing directory", &dir)?;
            inner.dir_dirty = false;
        }
        if inner.producer_snapshot_due() {
            // Made durable by the directory sync of the checkpoint below.
            inner.producers.take_snapshot(&dir, leo)?;
        }
        write_offset(&dir, RECOVERY_POINT_CHECKPOINT, leo)?;
        inner.recovery_point = leo;
        inner.synced_end_offset = leo;
        if log_start_checkpoint != Some(log_start) {
            write_offset(&dir, LOG_START_OFFSET_CHECKPOINT, log_start)?;
        }
        let high_watermark = read_optional_offset(&dir, HIGH_WATERMARK_CHECKPOINT)?;
        if clean {
            std::fs::remove_file(&marker).ctx("removing", &marker)?;
            sync_dir(&dir).ctx("syncing directory", &dir)?;
        }
        tracing::info!(dir = %dir.display(), log_start_offset = log_start, log_end_offset = leo,
            segments = inner.segments.len(), "opened partition log");
        Ok(PartitionLog {
            dir,
            inner: Mutex::new(inner),
            flush_lock: Mutex::new(()),
            appended_syncs: AtomicU64::new(0),
            #[cfg(any(test, feature = "fault-injection"))]
            sync_hook: Mutex::new(None),
            high_watermark: Mutex::new(high_watermark),
            cleaner: Mutex::new(cleaner::CleanerState::default()),
        })
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends producer batches as the leader (see the crate docs for the checks).
    ///
    /// Every batch is validated before anything is written: one bad batch
    /// rejects the whole append. Offsets are assigned from the log end
    /// offset, `leader_epoch` is stamped on every batch (a value below the
    /// latest cached epoch is refused with `StaleLeaderEpoch`; a negative one
    /// is stamped but not cached), LogAppendTime is applied if configured.
    /// Control batches are accepted: refusing them from clients is the
    /// protocol front's job.
    ///
    /// Batches with a producer id (>= 0, idempotent or transactional, not
    /// control) are checked against that producer's state, each against the
    /// state as left by the earlier batches of the same append:
    /// `InvalidProducerEpoch` for an epoch older than the producer's,
    /// `OutOfOrderSequence` for a newer epoch not starting at sequence 0 or
    /// the same epoch not continuing at the last sequence + 1, a
    /// `CorruptBatch` for a negative base sequence; a producer the partition
    /// does not know may start at any sequence. A batch equal (epoch, first
    /// and last sequence) to one of the producer's last 5 is a retry: a
    /// single-batch append of it writes nothing and returns the original
    /// offsets with [`AppendInfo::duplicate`] set; within a multi-batch
    /// append it is refused with `OutOfOrderSequence`.
    pub fn append(
        &self,
        mut records: BytesMut,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let (max_message_bytes, timestamp_type) = {
            let inner = self.inner.lock();
            (inner.config.max_message_bytes, inner.config.timestamp_type)
        };
        let summary = validate_for_append(&mut records, max_message_bytes, timestamp_type, now_ms)?;

        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        if leader_epoch >= 0 {
            if let Some(latest) = inner.epochs.latest_epoch() {
                if leader_epoch < latest {
                    return Err(StorageError::StaleLeaderEpoch {
                        epoch: leader_epoch,
                        latest,
                    });
                }
            }
        }
        let base_offset = inner.log_end_offset();
        let last_offset = base_offset + summary.offset_count - 1;
        let mut pending = PendingEntries::new();
        let mut pos = 0;
        let mut next = base_offset;
        while pos < records.len() {
            let header = BatchHeader::parse(&records[pos..])?;
            if is_tracked(&header) {
                match inner.producers.check(&mut pending, &header, next)? {
                    Verdict::Append => {}
                    Verdict::Duplicate(original) if summary.batch_count == 1 => {
                        tracing::debug!(dir = %self.dir.display(), producer_id = header.producer_id,
                            base_sequence = header.base_sequence, base_offset = original.first_offset,
                            "duplicate batch from an idempotent producer, not appended");
                        return Ok(AppendInfo {
                            base_offset: original.first_offset,
                            last_offset: original.last_offset,
                            log_append_time: -1,
                            max_timestamp: original.max_timestamp,
                            batch_count: 0,
                            bytes: 0,
                            duplicate: true,
                        });
                    }
                    Verdict::Duplicate(_) => {
                        return Err(StorageError::OutOfOrderSequence {
                            producer_id: header.producer_id,
                            expected: inner.producers.expected_sequence(&pending, &header),
                            got: header.base_sequence,
                        });
                    }
                }
            }
            let batch = &mut records[pos..pos + header.total_size()];
            set_base_offset(batch, next);
            set_partition_leader_epoch(batch, leader_epoch);
            next += i64::from(header.last_offset_delta) + 1;
            pos += header.total_size();
        }
        if leader_epoch >= 0 && inner.epochs.latest_epoch() != Some(leader_epoch) {
            inner.epochs.assign(leader_epoch, base_offset);
            inner.epochs.persist()?;
        }
        if inner.active().should_roll(
            &inner.config,
            records.len(),
            summary.max_timestamp,
            last_offset,
            now_ms,
        ) {
            inner.roll(&self.dir)?;
        }
        inner.append_to_active(&records, now_ms)?;
        inner.note_unsynced_append();
        if !pending.is_empty() {
            inner.producers.commit(pending);
        }
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time: if timestamp_type == TimestampType::LogAppendTime {
                now_ms
            } else {
                -1
            },
            max_timestamp: summary.max_timestamp,
            batch_count: summary.batch_count,
            bytes: summary.bytes,
            duplicate: false,
        })
    }

    /// Appends batches copied from the leader, keeping their offsets and
    /// epochs. The first batch must not start below the log end offset
    /// (`UnexpectedAppendOffset` otherwise); it may start above it, leaving
    /// a gap, because the leader's log may be compacted (Kafka allows the
    /// same). Later batches must not overlap.
    /// CRCs are checked; sizes are not limited by `max_message_bytes`.
    /// Producer state is updated from the batches without sequence checks
    /// (the leader made them), so that it is right should this replica lead.
    pub fn append_replicated(&self, records: Bytes) -> Result<AppendInfo, StorageError> {
        let summary = validate_replicated(&records)?;
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        let leo = inner.log_end_offset();
        if summary.first_offset < leo {
            return Err(StorageError::UnexpectedAppendOffset {
                base_offset: summary.first_offset,
                log_end: leo,
            });
        }
        let mut epochs_changed = false;
        let mut tracked = Vec::new();
        for item in batches(&records) {
            let (header, _) = item?;
            epochs_changed |= note_batch_epoch(&mut inner.epochs, &header);
            if is_tracked(&header) {
                tracked.push(header);
            }
        }
        if epochs_changed {
            inner.epochs.persist()?;
        }
        let now_ms = wall_clock_ms();
        if inner.active().should_roll(
            &inner.config,
            records.len(),
            summary.max_timestamp,
            summary.last_offset,
            now_ms,
        ) {
            inner.roll(&self.dir)?;
        }
        inner.append_to_active(&records, now_ms)?;
        inner.note_unsynced_append();
        for header in &tracked {
            inner.producers.apply(header);
        }
        Ok(AppendInfo {
            base_offset: summary.first_offset,
            last_offset: summary.last_offset,
            log_append_time: -1,
            max_timestamp: summary.max_timestamp,
            batch_count: summary.batch_count,
            bytes: summary.bytes,
            duplicate: false,
        })
    }

    /// Reads whole batches from the one containing `offset`, up to `max_bytes`
    /// (but a first batch larger than that whole when `min_one_batch`), never a
    /// batch whose last offset is >= `upper_bound`. Reads one segment at most,
    /// like Kafka; the caller fetches again from the next offset.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, StorageError> {
        let (plan, log_start_offset, log_end_offset, chunk) = {
            let inner = self.inner.lock();
            let log_start = inner.log_start_offset;
            let log_end = inner.log_end_offset();
            if offset < log_start || offset > log_end {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start,
                    log_end,
                });
            }
            let chunk = (inner.config.index_interval_bytes as usize + 2 * BatchHeader::SIZE)
                .clamp(4096, 64 * 1024);
            let plan = if offset == log_end || offset >= upper_bound {
                None
            } else {
                let mut idx = inner.segment_index_for(offset);
                let mut start = inner.segments[idx].lookup_position(offset);
                while offset >= inner.segments[idx].next_offset() && idx + 1 < inner.segments.len()
                {
                    idx += 1;
                    start = 0;
                }
                let seg = &inner.segments[idx];
                Some(ReadPlan {
                    file: seg.log_file().clone(),
                    base_offset: seg.base_offset(),
                    start,
                    end: seg.size(),
                })
            };
            (plan, log_start, log_end, chunk)
        };
        let mut result = ReadResult {
            records: Bytes::new(),
            log_start_offset,
            log_end_offset,
        };
        let Some(plan) = plan else {
            return Ok(result);
        };
        let path = || self.dir.join(file_name(plan.base_offset, LOG_EXT));

        // Find the batch containing `offset`, from the index position.
        let mut scanner = BatchScanner::new(&plan.file, plan.start, plan.end, chunk);
        let first = loop {
            match scanner.next(false).ctx("reading", &path())? {
                Scan::Batch { pos, header, .. } if header.last_offset() >= offset => {
                    break Some((pos, header))
                }
                Scan::Batch { .. } => {}
                Scan::End | Scan::Incomplete { .. } => break None,
                Scan::Corrupt { pos, reason } => {
                    return Err(StorageError::corrupt(format!(
                        "{} at position {pos}: {reason}",
                        path().display()
                    )))
                }
            }
        };
        let Some((first_pos, first_header)) = first else {
            return Ok(result);
        };
        if first_header.last_offset() >= upper_bound {
            return Ok(result);
        }
        let first_size = first_header.total_size();
        let want = if first_size > max_bytes {
            if !min_one_batch {
                return Ok(result);
            }
            first_size
        } else {
            max_bytes.min((plan.end - first_pos) as usize)
        };
        let mut buf = BytesMut::zeroed(want);
        let n = read_full_at(&plan.file, &mut buf, first_pos).ctx("reading", &path())?;
        buf.truncate(n);
        let mut keep = 0;
        for item in batches(&buf) {
            match item {
                Ok((header, range)) if header.last_offset() < upper_bound => keep = range.end,
                _ => break,
            }
        }
        buf.truncate(keep);
        result.records = buf.freeze();
        Ok(result)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.lock().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.inner.lock().log_end_offset()
    }

    /// The offset up to which data is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.inner.lock().recovery_point
    }

    /// ListOffsets by timestamp: the first record at or after the log start
    /// whose timestamp is >= `ts`, as `(offset, timestamp)`.
    ///
    /// Uncompressed CreateTime batches are searched record by record, so the
    /// answer is exact. Storage cannot decompress, so for a compressed batch
    /// the answer is `(base offset, max timestamp)` of the first batch whose
    /// max timestamp is >= `ts` (the consumer then reads the whole batch and
    /// skips what it does not want). LogAppendTime batches give every record
    /// the batch max timestamp, so their answer is also the batch base offset.
    /// Bounding the answer by the high watermark is the caller's job.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let (log_start, plans) = {
            let inner = self.inner.lock();
            let log_start = inner.log_start_offset;
            let plans: Vec<ReadPlan> = inner
                .segments
                .iter()
                .filter(|s| s.max_timestamp() >= ts && s.next_offset() > log_start)
                .map(|s| ReadPlan {
                    file: s.log_file().clone(),
                    base_offset: s.base_offset(),
                    start: s.timestamp_lookup_position(ts),
                    end: s.size(),
                })
                .collect();
            (log_start, plans)
        };
        for plan in plans {
            let path = self.dir.join(file_name(plan.base_offset, LOG_EXT));
            let mut scanner = BatchScanner::new(&plan.file, plan.start, plan.end, 16 * 1024);
            loop {
                let (pos, header) = match scanner.next(false).ctx("reading", &path)? {
                    Scan::Batch { pos, header, .. } => (pos, header),
                    Scan::End | Scan::Incomplete { .. } => break,
                    Scan::Corrupt { pos, reason } => {
                        return Err(StorageError::corrupt(format!(
                            "{} at position {pos}: {reason}",
                            path.display()
                        )))
                    }
                };
                if header.last_offset() < log_start || header.max_timestamp < ts {
                    continue;
                }
                if header.compression() != 0 || header.is_log_append_time() {
                    return Ok(Some((
                        header.base_offset.max(log_start),
                        header.max_timestamp,
                    )));
                }
                if let Some(found) =
                    Self::first_record_at_or_after(&plan.file, &path, pos, &header, ts, log_start)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Reads an uncompressed batch and returns its first record with
    /// timestamp >= `ts` and offset >= `min_offset`.
    fn first_record_at_or_after(
        file: &File,
        path: &Path,
        pos: u64,
        header: &BatchHeader,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let mut batch = vec![0u8; header.total_size()];
        let n = read_full_at(file, &mut batch, pos).ctx("reading", path)?;
        if n < batch.len() {
            return Ok(None); // truncated under us
        }
        for record in records(&batch)? {
            let record = record?;
            let (offset, timestamp) = (record.offset(header), record.timestamp(header));
            if offset >= min_offset && timestamp >= ts {
                return Ok(Some((offset, timestamp)));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: `(largest timestamp, offset of the first
    /// record carrying it)`, `(-1, -1)` for an empty log or a log without
    /// timestamps. For compressed and LogAppendTime batches the offset is the
    /// batch base offset (see [`PartitionLog::offset_for_timestamp`]).
    pub fn max_timestamp_and_offset(&self) -> (i64, i64) {
        let plan = {
            let inner = self.inner.lock();
            let mut best: Option<&Segment> = None;
            for seg in &inner.segments {
                if seg.max_timestamp() >= 0
                    && best.is_none_or(|b| seg.max_timestamp() > b.max_timestamp())
                {
                    best = Some(seg);
                }
            }
            best.map(|s| {
                (
                    ReadPlan {
                        file: s.log_file().clone(),
                        base_offset: s.base_offset(),
                        start: s.lookup_position(s.offset_of_max_timestamp()),
                        end: s.size(),
                    },
                    s.max_timestamp(),
                    s.offset_of_max_timestamp(),
                )
            })
        };
        let Some((plan, max_ts, batch_last_offset)) = plan else {
            return (-1, -1);
        };
        let path = self.dir.join(file_name(plan.base_offset, LOG_EXT));
        let exact = (|| -> Result<Option<i64>, StorageError> {
            let mut scanner = BatchScanner::new(&plan.file, plan.start, plan.end, 16 * 1024);
            while let Scan::Batch { pos, header, .. } = scanner.next(false).ctx("reading", &path)? {
                if header.last_offset() < batch_last_offset {
                    continue;
                }
                if header.compression() != 0 || header.is_log_append_time() {
                    return Ok(Some(header.base_offset));
                }
                let found =
                    Self::first_record_at_or_after(&plan.file, &path, pos, &header, max_ts, 0)?;
                return Ok(Some(found.map_or(header.base_offset, |(offset, _)| offset)));
            }
            Ok(None)
        })();
        match exact {
            Ok(Some(offset)) => (max_ts, offset),
            Ok(None) => (max_ts, batch_last_offset),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not read the batch with the max timestamp");
                (max_ts, batch_last_offset)
            }
        }
    }

    /// KIP-101 `OffsetsForLeaderEpoch`, with Kafka's `endOffsetFor` semantics:
    /// `(largest cached epoch <= leader_epoch, start offset of the next epoch
    /// or the log end offset)`. An epoch older than every cached epoch answers
    /// `(leader_epoch, start offset of the first cached epoch)`; an undefined
    /// epoch (-1) or one newer than the latest answers `(-1, -1)`.
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> (i32, i64) {
        let inner = self.inner.lock();
        inner
            .epochs
            .end_offset_for(leader_epoch, inner.log_end_offset())
    }

    /// The idempotence state of `producer_id` (its epoch and last batch), or
    /// `None` if no batch of it is known.
    pub fn producer_state(&self, producer_id: i64) -> Option<ProducerSnapshot> {
        self.inner.lock().producers.snapshot_of(producer_id)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.lock().epochs.latest_epoch()
    }

    /// The leader-epoch cache entries, oldest first.
    pub fn leader_epoch_entries(&self) -> Vec<EpochEntry> {
        self.inner.lock().epochs.entries().to_vec()
    }

    /// On becoming leader in `epoch`: record that it starts at the log end
    /// offset (Kafka's `maybeAssignEpochStartOffset`), so followers asking for
    /// the new epoch before anything is appended in it get the right answer.
    pub fn assign_leader_epoch(&self, epoch: i32) -> Result<(), StorageError> {
        if epoch < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "leader epoch must not be negative, got {epoch}"
            )));
        }
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        match inner.epochs.latest_epoch() {
            Some(latest) if epoch < latest => Err(StorageError::StaleLeaderEpoch { epoch, latest }),
            Some(latest) if epoch == latest => Ok(()),
            _ => {
                let leo = inner.log_end_offset();
                inner.epochs.assign(epoch, leo);
                inner.epochs.persist()
            }
        }
    }

    /// fsyncs every segment written since the last flush (and the directory
    /// if files were created or removed), then writes a producer-state
    /// snapshot and advances the recovery point checkpoint, both at the log
    /// end offset seen before the fsyncs. Only the 2 newest snapshots are
    /// kept.
    pub fn flush(&self) -> Result<(), StorageError> {
        let _flushing = self.flush_lock.lock();
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<(), StorageError> {
        let (files, target, dir_dirty, snapshot, unsynced_since) = {
            let mut inner = self.inner.lock();
            let n = inner.segments.len();
            let mut files = Vec::new();
            for (i, seg) in inner.segments.iter_mut().enumerate() {
                if !seg.is_dirty() {
                    continue;
                }
                if i + 1 == n {
                    seg.seal()?;
                } else {
                    seg.write_pending_indexes()?;
                }
                files.extend(seg.take_files_to_sync());
            }
            let dir_dirty = std::mem::take(&mut inner.dir_dirty);
            let unsynced_since = inner.unsynced_since_ms.take();
            let leo = inner.log_end_offset();
            let snapshot = inner
                .producer_snapshot_due()
                .then(|| inner.producers.encode_snapshot(leo));
            (files, leo, dir_dirty, snapshot, unsynced_since)
        };
        let synced = files.iter().try_for_each(|f| f.sync_data()).and_then(|()| {
            if dir_dirty {
                sync_dir(&self.dir)
            } else {
                Ok(())
            }
        });
        if let Err(source) = synced {
            let mut inner = self.inner.lock();
            // Unknown what reached the disk: sync everything again next time.
            inner.segments.iter_mut().for_each(Segment::mark_dirty);
            inner.dir_dirty = true;
            inner.restore_unsynced_since(unsynced_since);
            return Err(StorageError::IoAt {
                op: "syncing",
                path: self.dir.clone(),
                source,
            });
        }
        {
            let mut inner = self.inner.lock();
            inner.synced_end_offset = inner.synced_end_offset.max(target);
        }
        // The data below `target` is durable: a snapshot of it may be too.
        // (`flush_lock` keeps truncations out until we are done.)
        if let Some(bytes) = &snapshot {
            ProducerStateManager::write_snapshot_file(&self.dir, target, bytes)?;
        }
        let mut inner = self.inner.lock();
        if snapshot.is_some() {
            inner.producers.snapshot_written(&self.dir, target)?;
        }
        if target > inner.recovery_point {
            // Its directory sync also covers the snapshot's rename.
            write_offset(&self.dir, RECOVERY_POINT_CHECKPOINT, target)?;
            inner.recovery_point = target;
        } else if snapshot.is_some() {
            sync_dir(&self.dir).ctx("syncing directory", &self.dir)?;
        }
        Ok(())
    }

    /// fsyncs the data (`.log` files only) written since the last sync, and the
    /// directory if segment files were created or removed, and returns the durable
    /// end: the log end offset as it was just before those fsyncs (see
    /// [`PartitionLog::synced_end_offset`]). Indexes, the producer-state snapshot and
    /// the recovery-point checkpoint are left to [`PartitionLog::flush`]: after a
    /// crash, recovery rescans everything above the recovery point anyway.
    ///
    /// A group commit: the caller needs everything appended before the call; callers
    /// queue on `flush_lock`, and one that finds the durable end already at or past
    /// the log end it saw on entry (a sync or flush that ran while it waited covered
    /// it) returns at once, without an fsync. So N concurrent callers cost one or two
    /// fsyncs, not N.
    ///
    /// On failure the data is marked unsynced again (the next call retries it) and the
    /// durable end does not move.
    pub fn sync_appended(&self) -> Result<i64, StorageError> {
        let wanted = self.log_end_offset();
        let _flushing = self.flush_lock.lock();
        let (files, target, dir_dirty, unsynced_since) = {
            let mut inner = self.inner.lock();
            if inner.synced_end_offset >= wanted {
                return Ok(inner.synced_end_offset);
            }
            let files: Vec<Arc<File>> = inner
                .segments
                .iter_mut()
                .filter_map(Segment::take_log_to_sync)
                .collect();
            let dir_dirty = std::mem::take(&mut inner.dir_dirty);
            let unsynced_since = inner.unsynced_since_ms.take();
            (files, inner.log_end_offset(), dir_dirty, unsynced_since)
        };
        self.appended_syncs.fetch_add(1, Ordering::Relaxed);
        let synced = self
            .run_sync_hook()
            .and_then(|()| files.iter().try_for_each(|f| f.sync_data()))
            .and_then(|()| {
                if dir_dirty {
                    sync_dir(&self.dir)
                } else {
                    Ok(())
                }
            });
        let mut inner = self.inner.lock();
        if let Err(source) = synced {
            // Unknown what reached the disk: sync all the data again next time.
            inner
                .segments
                .iter_mut()
                .for_each(Segment::mark_log_unsynced);
            inner.dir_dirty |= dir_dirty;
            inner.restore_unsynced_since(unsynced_since);
            return Err(StorageError::IoAt {
                op: "syncing",
                path: self.dir.clone(),
                source,
            });
        }
        inner.synced_end_offset = inner.synced_end_offset.max(target);
        tracing::trace!(dir = %self.dir.display(), durable_end = inner.synced_end_offset,
            files = files.len(), "synced appended data");
        Ok(inner.synced_end_offset)
    }

    #[cfg(any(test, feature = "fault-injection"))]
    fn run_sync_hook(&self) -> std::io::Result<()> {
        let hook = self.sync_hook.lock().clone();
        hook.map_or(Ok(()), |hook| hook())
    }

    #[cfg(not(any(test, feature = "fault-injection")))]
    fn run_sync_hook(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// Installs (or with `None` removes) the hook [`PartitionLog::sync_appended`] runs
    /// before its fsyncs: tests use it to hold a sync in flight or to fail it.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn set_sync_hook(&self, hook: Option<SyncHook>) {
        *self.sync_hook.lock() = hook;
    }

    /// The durable end: every offset below it is on stable storage, fsynced by
    /// [`PartitionLog::sync_appended`] or [`PartitionLog::flush`] (or found on disk by
    /// `open`). At most the log end offset; a truncation lowers it with the log end.
    pub fn synced_end_offset(&self) -> i64 {
        self.inner.lock().synced_end_offset
    }

    /// Wall-clock time (ms) of the oldest append that no sync has covered yet, or
    /// `None` if every append has been (or is being) synced: the `flush.ms` clock.
    pub fn unsynced_since_ms(&self) -> Option<i64> {
        self.inner.lock().unsynced_since_ms
    }

    /// How many times [`PartitionLog::sync_appended`] actually fsynced (calls that
    /// found their data already durable are not counted).
    pub fn appended_syncs(&self) -> u64 {
        self.appended_syncs.load(Ordering::Relaxed)
    }

    /// Flushes, then writes the clean-shutdown marker so that the next open
    /// trusts the indexes instead of scanning. The log refuses writes afterwards
    /// (`StorageError::Closed`); reads still work.
    pub fn close(&self) -> Result<(), StorageError> {
        let _flushing = self.flush_lock.lock();
        {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Ok(());
            }
            inner.closed = true;
            inner.active_mut().release_preallocation();
        }
        self.flush_locked()?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .ctx("writing", &marker)?;
        sync_dir(&self.dir).ctx("syncing directory", &self.dir)?;
        tracing::info!(dir = %self.dir.display(), "closed partition log cleanly");
        Ok(())
    }

    /// Time and size retention ([`PartitionLog::apply_retention_up_to`] with no bound).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        self.apply_retention_up_to(now_ms, i64::MAX)
    }

    /// Deletes old segments; returns how many.
    ///
    /// When `delete_retention` is set: segments whose largest timestamp (file
    /// mtime if none) is more than `retention_ms` before `now_ms`, then the
    /// oldest segments while the log minus that segment stays >=
    /// `retention_bytes`. Always: segments wholly below the log start offset
    /// (see [`PartitionLog::advance_log_start_offset`]). Only whole segments
    /// ending at or below `upper_offset` (pass the high watermark, as Kafka
    /// does, so unreplicated data is never deleted) are considered. When every
    /// segment qualifies the log rolls first, so the active one can go too.
    /// The log start offset moves up to the first remaining segment.
    pub fn apply_retention_up_to(
        &self,
        now_ms: i64,
        upper_offset: i64,
    ) -> Result<usize, StorageError> {
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        let config = inner.config.clone();
        let mut deleted = 0;
        if config.delete_retention {
            if let Some(retention_ms) = config.retention_ms {
                deleted += inner.delete_prefix(&self.dir, upper_offset, |seg, _| {
                    now_ms.saturating_sub(seg.retention_timestamp()) > retention_ms
                })?;
            }
            if let Some(retention_bytes) = config.retention_bytes {
                let total: u64 = inner.segments.iter().map(Segment::size).sum();
                let mut excess = i128::from(total) - i128::from(retention_bytes);
                deleted += inner.delete_prefix(&self.dir, upper_offset, |seg, _| {
                    let size = i128::from(seg.size());
                    if excess - size >= 0 {
                        excess -= size;
                        true
                    } else {
                        false
                    }
                })?;
            }
        }
        let log_start = inner.log_start_offset;
        deleted += inner.delete_prefix(&self.dir, upper_offset, |_, next_base| {
            next_base.is_some_and(|next| next <= log_start)
        })?;
        if deleted > 0 {
            inner.advance_start_to_first_segment(&self.dir)?;
            tracing::info!(dir = %self.dir.display(), deleted, log_start_offset = inner.log_start_offset,
                "retention deleted segments");
        }
        Ok(deleted)
    }

    /// Rolls the active segment when it is older than `segment_ms` (by the
    /// broker clock, since its first append or since the log was opened) or
    /// already at `segment_bytes`. The broker calls this periodically.
    pub fn maybe_roll(&self, now_ms: i64) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        let active = inner.active();
        let too_old = inner
            .config
            .segment_ms
            .is_some_and(|ms| active.is_older_than(ms, now_ms));
        let too_big = active.size() >= inner.config.effective_segment_bytes();
        if too_old || too_big {
            inner.roll(&self.dir)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset
    /// (Kafka's `roll`); a no-op when the active segment is empty.
    pub fn roll(&self) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        inner.roll(&self.dir)
    }

    /// Removes every batch holding an offset >= `offset` (a batch straddling
    /// `offset` goes entirely, so the new log end may be below `offset`), and
    /// the matching index and epoch entries. At or past the log end only epoch
    /// entries starting at or after `offset` go; below the log start it empties the
    /// log and restarts it at `offset`.
    /// Producer-state snapshots above the new end are deleted and the state
    /// is rebuilt for the remaining batches.
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "cannot truncate to negative offset {offset}"
            )));
        }
        let _flushing = self.flush_lock.lock();
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        let old_leo = inner.log_end_offset();
        if offset >= old_leo {
            // No batch to remove, but an epoch that starts at or past `offset` (one this
            // replica opened as leader without writing in it) goes, as in Kafka: else a
            // follower would keep reporting an epoch the leader never had.
            if inner.epochs.truncate_from_end(offset) {
                inner.epochs.persist()?;
            }
            return Ok(());
        }
        if offset < inner.log_start_offset {
            return inner.truncate_fully(&self.dir, offset);
        }
        let idx = inner.segment_index_for(offset);
        inner.note_truncation(offset);
        // Lower the durable recovery point first: after a crash mid-way the
        // touched segment is scanned again.
        let floor = inner.segments[idx].base_offset();
        if inner.recovery_point > floor {
            write_offset(&self.dir, RECOVERY_POINT_CHECKPOINT, floor)?;
            inner.recovery_point = floor;
        }
        // Snapshots of batches about to go must not survive a crash mid-way
        // (the new end is at most `offset`: no batch boundary lies between).
        if inner.producers.delete_snapshots_above(&self.dir, offset)? {
            sync_dir(&self.dir).ctx("syncing directory", &self.dir)?;
        }
        while inner.segments.len() > idx + 1 {
            if let Some(seg) = inner.segments.last() {
                seg.delete_files()?;
            }
            inner.segments.pop();
            inner.dir_dirty = true;
        }
        let new_leo = inner.segments[idx].truncate_to(offset)?;
        inner.note_truncation(new_leo);
        inner.synced_end_offset = inner.synced_end_offset.min(new_leo);
        if inner.epochs.truncate_from_end(new_leo) {
            inner.epochs.persist()?;
        }
        if inner.log_start_offset > new_leo {
            inner.log_start_offset = new_leo;
            write_offset(&self.dir, LOG_START_OFFSET_CHECKPOINT, new_leo)?;
        }
        inner.reload_producer_state(&self.dir)?;
        tracing::info!(dir = %self.dir.display(), offset, old_log_end = old_leo, new_log_end = new_leo, "truncated log");
        Ok(())
    }

    /// Drops everything and restarts the log, empty, at `offset` (a follower
    /// whose leader's log start is beyond this log's end; Kafka's
    /// `truncateFullyAndStartAt`). The epoch cache and the producer state
    /// (with its snapshots) are cleared.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "cannot restart the log at negative offset {offset}"
            )));
        }
        let _flushing = self.flush_lock.lock();
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        inner.truncate_fully(&self.dir, offset)
    }

    /// Moves the log start offset up to `offset` (DeleteRecords); reads below
    /// it fail with `OffsetOutOfRange`. Segments wholly below it are deleted by
    /// the next [`PartitionLog::apply_retention`]. Returns whether it moved.
    /// Bounding `offset` by the high watermark is the caller's job.
    pub fn advance_log_start_offset(&self, offset: i64) -> Result<bool, StorageError> {
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        let log_end = inner.log_end_offset();
        if offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: inner.log_start_offset,
                log_end,
            });
        }
        if offset <= inner.log_start_offset {
            return Ok(false);
        }
        write_offset(&self.dir, LOG_START_OFFSET_CHECKPOINT, offset)?;
        inner.log_start_offset = offset;
        if inner.epochs.truncate_from_start(offset) {
            inner.epochs.persist()?;
        }
        Ok(true)
    }

    /// Replaces the configuration. An invalid config (see
    /// [`LogConfig::validate`]) is logged and ignored; validate it first.
    pub fn update_config(&self, config: LogConfig) {
        if let Err(e) = config.validate() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "ignoring invalid log config update");
            return;
        }
        self.inner.lock().config = config;
    }

    pub fn config(&self) -> LogConfig {
        self.inner.lock().config.clone()
    }

    /// Total size of the segment files.
    pub fn size_bytes(&self) -> u64 {
        self.inner.lock().segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.inner.lock().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.inner
            .lock()
            .segments
            .iter()
            .map(Segment::base_offset)
            .collect()
    }

    /// Deletes the partition directory and everything in it (topic deletion).
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).ctx("deleting log directory", &dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).ctx("syncing directory", parent)?;
        }
        tracing::info!(dir = %dir.display(), "deleted partition log");
        Ok(())
    }

    /// Writes the high watermark to the `high-watermark` checkpoint (atomic
    /// replace, fsynced).
    pub fn checkpoint_high_watermark(&self, hw: i64) -> Result<(), StorageError> {
        if hw < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "high watermark must not be negative, got {hw}"
            )));
        }
        let mut current = self.high_watermark.lock();
        write_offset(&self.dir, HIGH_WATERMARK_CHECKPOINT, hw)?;
        *current = Some(hw);
        Ok(())
    }

    /// The last checkpointed high watermark (as read by `open` or written since).
    pub fn checkpointed_high_watermark(&self) -> Option<i64> {
        *self.high_watermark.lock()
    }
}

#[path = "cleaner.rs"]
mod cleaner;
pub use cleaner::{CleanStats, DEFAULT_KEY_MAP_BYTES};

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "producer_state_tests.rs"]
mod producer_state_tests;

//! Log compaction (`cleanup.policy=compact`): [`PartitionLog::compact`]
//! keeps, for every key, only its latest record, as Kafka's log cleaner does.
//!
//! One pass, on the caller's (blocking) thread:
//!
//! 1. **Plan** (under the log lock): the *cleanable* segments are the closed
//!    segments lying wholly below `first_uncleanable_offset` (the caller
//!    passes the high watermark; the active segment is never cleaned) and
//!    above the log start, stopping at the first segment whose newest record
//!    is younger than `min.compaction.lag.ms`. The cleaner checkpoint
//!    (`cleaner-offset-checkpoint`, one line `<first dirty offset> <next
//!    tombstone deadline ms or -1>`) splits them into a *clean* prefix,
//!    already compacted, and the *dirty* rest. A pass runs when the dirty
//!    bytes are at least `min.cleanable.dirty.ratio` of the cleanable bytes,
//!    when the oldest dirty batch is older than `max.compaction.lag.ms`, or
//!    when a tombstone kept by an earlier pass has passed its horizon.
//! 2. **Key map**: the dirty segments are read, oldest first, into a map
//!    from the exact key bytes to the latest offset of that key (no hashing,
//!    so distinct keys never collide). The map is bounded
//!    ([`DEFAULT_KEY_MAP_BYTES`]): when it fills up, the pass stops at the
//!    last dirty segment it read whole (the first dirty segment is always
//!    read whole, even past the bound) and the rest waits for the next pass.
//! 3. **Rewrite**, oldest segment first, from the log start to the end of the
//!    mapped range. A record is dropped when the map holds a *later* offset
//!    for its key (so a record is only ever dropped when a newer record with
//!    the same key is in the log), or when it is a tombstone (null value) in
//!    a segment whose newest timestamp (file mtime if it has none) is more
//!    than `delete.retention.ms` old. This is simpler than Kafka, which
//!    counts the horizon from when the tombstone was first cleaned. Records
//!    with a null key are always kept. Kept records are copied byte for
//!    byte; a batch that lost records is rebuilt with the same base offset,
//!    `lastOffsetDelta`, timestamps, producer id/epoch/base sequence,
//!    partition leader epoch and attributes, its records recompressed with
//!    its codec. A batch that lost every record is dropped, except that an
//!    empty batch (no records, uncompressed) is kept when it is the last
//!    batch of its producer id (Kafka's rule, so idempotent producer state
//!    survives a rebuild) or the last batch of its segment (Rafka's rule, so
//!    no segment ever becomes empty and every segment keeps its next offset:
//!    the log start and the segment boundaries never move). Offsets are kept,
//!    so compaction leaves gaps; reads at an offset in a gap return the next
//!    batch. Control batches are kept as they are. Segments are not merged.
//! 4. **Swap**, per segment: the cleaned segment is written as
//!    `<base>.{log,index,timeindex}.cleaned` and fsynced; then, under the log
//!    lock and only if no truncation happened meanwhile and the segment is
//!    still the one planned, renamed to `.swap` (indexes first, log last),
//!    the directory fsynced (the commit point: `<base>.log.swap` exists),
//!    renamed over the old files and put in the segment list. Readers that
//!    cloned the old file handle keep reading the old, complete file.
//!    [`recover_leftovers`] runs first thing on open: it deletes `.cleaned`
//!    files (a pass that did not commit) and finishes committed swaps.
//!
//! After the last segment the checkpoint moves to the end of the mapped
//! range and records when the oldest kept tombstone may go. The leader-epoch
//! cache, the log start and end offsets and producer-state snapshots are
//! untouched.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;

use super::PartitionLog;
use crate::batch::{decompressed_records, rebuild_batch, record_spans, BatchHeader};
use crate::checkpoint::{read_lines, write_lines};
use crate::config::LogConfig;
use crate::error::IoContext;
use crate::io::{sync_dir, BatchScanner, Scan};
use crate::segment::{file_name, Segment, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT};
use crate::StorageError;

/// The cleaner checkpoint of a partition directory.
pub(crate) const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Suffix of a cleaned segment being written.
const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned segment committed to replace the old one.
const SWAP_SUFFIX: &str = ".swap";
/// Default bound of the key map (Kafka's `log.cleaner.dedupe.buffer.size`).
pub const DEFAULT_KEY_MAP_BYTES: usize = 128 << 20;
/// Estimated memory of one key-map entry besides the key bytes.
const KEY_ENTRY_OVERHEAD: usize = 64;
/// Cleaned batches are written to the new segment in chunks of about this size.
const WRITE_CHUNK: usize = 1 << 20;
/// Read size when scanning a segment.
const SCAN_CHUNK: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// The first dirty offset when the pass started.
    pub first_dirty_offset: i64,
    /// The cleaner checkpoint after the pass: everything below is compacted.
    /// Equal to `first_dirty_offset` when the pass was abandoned.
    pub cleaned_up_to: i64,
    /// Dirty bytes / cleanable bytes when the pass started.
    pub dirty_ratio: f64,
    /// Distinct keys in the key map.
    pub keys: usize,
    /// Segments read and rewritten (replaced on disk only if they changed).
    pub segments: usize,
    pub records_read: u64,
    pub records_kept: u64,
    pub records_removed: u64,
    /// Of the records removed, tombstones past `delete.retention.ms`.
    pub tombstones_removed: u64,
    /// Batches that disappeared entirely.
    pub batches_removed: u64,
    /// Size of the rewritten segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// A truncation, retention or close got in the way: the pass stopped
    /// early without moving the checkpoint (segments already swapped stay
    /// compacted).
    pub abandoned: bool,
}

/// The cleaner checkpoint, loaded on the first pass.
#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    loaded: bool,
    first_dirty: i64,
    /// When the oldest tombstone kept by the last pass may be removed.
    tombstone_deadline: Option<i64>,
}

impl CleanerState {
    fn load(&mut self, dir: &Path) -> Result<(), StorageError> {
        if self.loaded {
            return Ok(());
        }
        let parsed = match read_lines(dir, CLEANER_CHECKPOINT) {
            Ok(None) => Some((0, None)),
            Ok(Some(lines)) => match lines.as_slice() {
                [line] => {
                    let fields: Vec<Option<i64>> =
                        line.split_whitespace().map(|f| f.parse().ok()).collect();
                    match fields.as_slice() {
                        [Some(offset)] => Some((*offset, None)),
                        [Some(offset), Some(deadline)] => {
                            Some((*offset, Some(*deadline).filter(|d| *d >= 0)))
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
            Err(StorageError::CorruptCheckpoint { .. }) => None,
            Err(e) => return Err(e),
        };
        let (first_dirty, tombstone_deadline) = parsed.unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "ignoring corrupt cleaner checkpoint; the whole log counts as dirty");
            (0, None)
        });
        self.first_dirty = first_dirty;
        self.tombstone_deadline = tombstone_deadline;
        self.loaded = true;
        Ok(())
    }

    fn persist(&self, dir: &Path) -> Result<(), StorageError> {
        let deadline = self.tombstone_deadline.unwrap_or(-1);
        write_lines(
            dir,
            CLEANER_CHECKPOINT,
            &[format!("{} {deadline}", self.first_dirty)],
        )
    }
}

/// A closed segment as seen when the pass was planned.
struct PlannedSegment {
    base: i64,
    /// Base offset of the segment after it: this one ends below it.
    next_base: i64,
    file: Arc<File>,
    size: u64,
    /// Largest timestamp (file mtime if none), as for time retention.
    largest_timestamp: i64,
    first_batch_timestamp: Option<i64>,
}

struct Plan {
    config: LogConfig,
    log_start: i64,
    log_end: i64,
    /// Closed segments wholly inside `(log start, min(first uncleanable, active base))`.
    segments: Vec<PlannedSegment>,
    /// Per producer id, the last offset of its last batch.
    producer_last_offsets: HashMap<i64, i64>,
    truncations: u64,
    truncated_to: Option<i64>,
}

/// Latest offset of every key in the dirty range, with a memory estimate.
#[derive(Default)]
struct KeyMap {
    latest: HashMap<Vec<u8>, i64>,
    bytes: usize,
}

impl KeyMap {
    fn record(&mut self, key: &[u8], offset: i64) {
        match self.latest.get_mut(key) {
            Some(latest) => *latest = (*latest).max(offset),
            None => {
                self.bytes += key.len() + KEY_ENTRY_OVERHEAD;
                self.latest.insert(key.to_vec(), offset);
            }
        }
    }

    /// Whether a record with `key` at `offset` has a newer one in the map.
    fn superseded(&self, key: &[u8], offset: i64) -> bool {
        self.latest.get(key).is_some_and(|latest| *latest > offset)
    }
}

/// How the rewrite of one segment ended.
enum SegmentOutcome {
    Swapped,
    Unchanged,
    Abandoned,
}

fn scan_error(path: &Path, pos: u64, reason: &str) -> StorageError {
    StorageError::corrupt(format!("{} at position {pos}: {reason}", path.display()))
}

/// Calls `on_batch(position, header, bytes)` for every whole batch of a
/// closed segment file.
fn for_each_batch(
    file: &File,
    size: u64,
    path: &Path,
    mut on_batch: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut scanner = BatchScanner::new(file, 0, size, SCAN_CHUNK);
    loop {
        match scanner.next(true).ctx("reading", path)? {
            Scan::End => return Ok(()),
            Scan::Batch { pos, header, bytes } => {
                on_batch(pos, &header, bytes.unwrap_or_default())?
            }
            Scan::Incomplete { pos } => return Err(scan_error(path, pos, "incomplete batch")),
            Scan::Corrupt { pos, reason } => return Err(scan_error(path, pos, &reason)),
        }
    }
}

/// Finishes or discards what an interrupted pass left in `dir`: `.cleaned`
/// files go; a `<base>.log.swap` (a committed swap) replaces `<base>.log`,
/// with its index `.swap` files, if any are left, replacing the indexes
/// (else they were renamed already); index `.swap` files without a log
/// `.swap` belong to a swap that never committed and go. Called by
/// [`PartitionLog::open`] before it lists the segments.
pub(crate) fn recover_leftovers(dir: &Path) -> Result<(), StorageError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        if let Some(name) = entry.file_name().to_str() {
            if name.ends_with(CLEANED_SUFFIX) || name.ends_with(SWAP_SUFFIX) {
                names.push(name.to_string());
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    let remove = |name: &str| -> Result<(), StorageError> {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::IoAt {
                op: "removing",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    };
    for name in names.iter().filter(|n| n.ends_with(CLEANED_SUFFIX)) {
        tracing::info!(dir = %dir.display(), file = %name, "removing an unfinished cleaned segment file");
        remove(name)?;
    }
    let log_swap_suffix = format!(".{LOG_EXT}{SWAP_SUFFIX}");
    for name in names.iter().filter(|n| n.ends_with(&log_swap_suffix)) {
        let log_name = &name[..name.len() - SWAP_SUFFIX.len()];
        if !dir.join(log_name).exists() {
            // The segment it was to replace is gone (cannot happen while swaps
            // are done under the log lock; be safe rather than resurrect data).
            tracing::warn!(dir = %dir.display(), file = %name, "removing a swap file whose segment is gone");
            remove(name)?;
            continue;
        }
        let stem = &log_name[..log_name.len() - LOG_EXT.len()];
        for ext in [INDEX_EXT, TIME_INDEX_EXT] {
            let swap = dir.join(format!("{stem}{ext}{SWAP_SUFFIX}"));
            if swap.exists() {
                let target = dir.join(format!("{stem}{ext}"));
                std::fs::rename(&swap, &target).ctx("renaming", &swap)?;
            }
        }
        let swap = dir.join(name);
        std::fs::rename(&swap, dir.join(log_name)).ctx("renaming", &swap)?;
        tracing::info!(dir = %dir.display(), segment = %log_name, "finished an interrupted swap of a cleaned segment");
    }
    for name in names.iter().filter(|n| n.ends_with(SWAP_SUFFIX)) {
        if dir.join(name).exists() {
            tracing::info!(dir = %dir.display(), file = %name, "removing an uncommitted swap file");
            remove(name)?;
        }
    }
    sync_dir(dir).ctx("syncing directory", dir)
}

impl PartitionLog {
    /// One compaction pass (see the module documentation of `cleaner`):
    /// `None` when the log is not compacted (`LogConfig::compact` unset) or
    /// not due for cleaning, else what the pass did.
    ///
    /// `first_uncleanable_offset` bounds what may be cleaned: pass the high
    /// watermark (the active segment is excluded anyway). Runs on the
    /// caller's thread and may take a while: appends and reads continue,
    /// only the swap of each cleaned segment takes the log lock. Passes on
    /// one log are serialised.
    pub fn compact(
        &self,
        now_ms: i64,
        first_uncleanable_offset: i64,
    ) -> Result<Option<CleanStats>, StorageError> {
        self.compact_bounded(now_ms, first_uncleanable_offset, DEFAULT_KEY_MAP_BYTES)
    }

    /// [`PartitionLog::compact`] with a key map bounded to about `key_map_bytes`.
    pub fn compact_bounded(
        &self,
        now_ms: i64,
        first_uncleanable_offset: i64,
        key_map_bytes: usize,
    ) -> Result<Option<CleanStats>, StorageError> {
        let mut state = self.cleaner.lock();
        let Some(plan) = self.plan_cleaning(first_uncleanable_offset)? else {
            return Ok(None);
        };
        state.load(&self.dir)?;
        if let Some(truncated_to) = plan.truncated_to {
            state.first_dirty = state.first_dirty.min(truncated_to);
        }
        let first_dirty = if state.first_dirty < plan.log_start || state.first_dirty > plan.log_end
        {
            plan.log_start
        } else {
            state.first_dirty
        };
        let config = &plan.config;

        let lag_horizon = now_ms.saturating_sub(config.min_compaction_lag_ms);
        let cleanable: Vec<&PlannedSegment> = plan
            .segments
            .iter()
            .take_while(|s| {
                s.next_base <= first_dirty
                    || config.min_compaction_lag_ms == 0
                    || s.largest_timestamp <= lag_horizon
            })
            .collect();
        let is_dirty = |s: &PlannedSegment| s.next_base > first_dirty;
        let dirty_bytes: u64 = cleanable
            .iter()
            .filter(|s| is_dirty(s))
            .map(|s| s.size)
            .sum();
        let total_bytes: u64 = cleanable.iter().map(|s| s.size).sum();
        let dirty_ratio = if total_bytes == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total_bytes as f64
        };
        let overdue = cleanable
            .iter()
            .find(|s| is_dirty(s))
            .and_then(|s| s.first_batch_timestamp)
            .is_some_and(|t| now_ms.saturating_sub(t) > config.max_compaction_lag_ms);
        let tombstones_due = state.tombstone_deadline.is_some_and(|d| d <= now_ms);
        let due = (dirty_bytes > 0 && (dirty_ratio >= config.min_cleanable_dirty_ratio || overdue))
            || (tombstones_due && !cleanable.is_empty());
        if !due {
            tracing::trace!(dir = %self.dir.display(), first_dirty, dirty_bytes, total_bytes, dirty_ratio,
                "log not due for compaction");
            return Ok(None);
        }

        let mut map = KeyMap::default();
        let mut end = first_dirty;
        for (i, seg) in cleanable.iter().filter(|s| is_dirty(s)).enumerate() {
            let budget = if i == 0 { usize::MAX } else { key_map_bytes };
            if !self.map_segment(seg, first_dirty, &mut map, budget)? {
                break;
            }
            end = seg.next_base;
            if map.bytes >= key_map_bytes {
                break;
            }
        }

        let mut stats = CleanStats {
            first_dirty_offset: first_dirty,
            cleaned_up_to: first_dirty,
            dirty_ratio,
            keys: map.latest.len(),
            ..CleanStats::default()
        };
        let mut deadline: Option<i64> = None;
        for seg in cleanable.iter().filter(|s| s.next_base <= end) {
            stats.segments += 1;
            let outcome =
                self.clean_segment(seg, &map, &plan, now_ms, &mut stats, &mut deadline)?;
            if let SegmentOutcome::Abandoned = outcome {
                tracing::info!(dir = %self.dir.display(), base_offset = seg.base,
                    "compaction pass abandoned: the log changed under it");
                stats.abandoned = true;
                return Ok(Some(stats));
            }
        }
        state.first_dirty = end;
        state.tombstone_deadline = deadline;
        state.persist(&self.dir)?;
        stats.cleaned_up_to = end;
        Ok(Some(stats))
    }

    /// The segments a pass may clean, or `None` when the log is not compacted.
    fn plan_cleaning(&self, first_uncleanable_offset: i64) -> Result<Option<Plan>, StorageError> {
        let mut inner = self.inner.lock();
        inner.check_open(&self.dir)?;
        if !inner.config.compact {
            return Ok(None);
        }
        let log_start = inner.log_start_offset;
        let upper = first_uncleanable_offset.min(inner.active().base_offset());
        let segments = inner
            .segments
            .windows(2)
            .filter(|w| w[1].base_offset() <= upper && w[1].base_offset() > log_start)
            .map(|w| PlannedSegment {
                base: w[0].base_offset(),
                next_base: w[1].base_offset(),
                file: w[0].log_file().clone(),
                size: w[0].size(),
                largest_timestamp: w[0].retention_timestamp(),
                first_batch_timestamp: w[0].first_batch_timestamp(),
            })
            .collect();
        Ok(Some(Plan {
            config: inner.config.clone(),
            log_start,
            log_end: inner.log_end_offset(),
            segments,
            producer_last_offsets: inner.producers.last_batch_offsets(),
            truncations: inner.truncations,
            truncated_to: inner.truncated_to.take(),
        }))
    }

    /// Adds the keys of `seg` at or above `first_dirty` to `map`. Returns
    /// false, leaving a partial segment in the map, when the map outgrows
    /// `budget`: entries always name records that exist, so a partial
    /// segment is harmless, but its range is not clean.
    fn map_segment(
        &self,
        seg: &PlannedSegment,
        first_dirty: i64,
        map: &mut KeyMap,
        budget: usize,
    ) -> Result<bool, StorageError> {
        let path = self.dir.join(file_name(seg.base, LOG_EXT));
        let mut complete = true;
        for_each_batch(&seg.file, seg.size, &path, |_, header, bytes| {
            if !complete || header.is_control() || header.last_offset() < first_dirty {
                return Ok(());
            }
            let data = decompressed_records(bytes)?;
            for item in record_spans(header, &data)? {
                let (record, _) = item?;
                let offset = record.offset(header);
                if let (Some(key), true) = (record.key, offset >= first_dirty) {
                    map.record(key, offset);
                }
            }
            if map.bytes > budget {
                complete = false;
            }
            Ok(())
        })?;
        Ok(complete)
    }

    /// Rewrites one segment without the records `map` supersedes and the
    /// expired tombstones, then swaps it in (module docs, steps 3 and 4).
    fn clean_segment(
        &self,
        seg: &PlannedSegment,
        map: &KeyMap,
        plan: &Plan,
        now_ms: i64,
        stats: &mut CleanStats,
        deadline: &mut Option<i64>,
    ) -> Result<SegmentOutcome, StorageError> {
        let retention = plan.config.delete_retention_ms;
        let expire_tombstones = now_ms.saturating_sub(seg.largest_timestamp) > retention;
        let tombstone_deadline = seg
            .largest_timestamp
            .saturating_add(retention)
            .saturating_add(1);
        let path = self.dir.join(file_name(seg.base, LOG_EXT));
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let leftover = self
                .dir
                .join(format!("{}{CLEANED_SUFFIX}", file_name(seg.base, ext)));
            if leftover.exists() {
                std::fs::remove_file(&leftover).ctx("removing", &leftover)?;
            }
        }
        let mut out = Segment::create_with_suffix(&self.dir, seg.base, CLEANED_SUFFIX)?;
        let interval = plan.config.index_interval_bytes;
        let mut pending = BytesMut::new();
        let mut changed = false;
        let written = for_each_batch(&seg.file, seg.size, &path, |pos, header, bytes| {
            let last_in_segment = pos + bytes.len() as u64 == seg.size;
            if header.is_control() {
                pending.extend_from_slice(bytes);
            } else {
                let data = decompressed_records(bytes)?;
                let mut kept = Vec::with_capacity(data.len());
                let mut kept_count = 0i32;
                for item in record_spans(header, &data)? {
                    let (record, span) = item?;
                    stats.records_read += 1;
                    let keep = match record.key {
                        None => true,
                        Some(key) => {
                            let tombstone = record.value.is_none();
                            let superseded = map.superseded(key, record.offset(header));
                            if superseded {
                                false
                            } else if tombstone && expire_tombstones {
                                stats.tombstones_removed += 1;
                                false
                            } else {
                                if tombstone {
                                    *deadline =
                                        Some(deadline.map_or(tombstone_deadline, |d| {
                                            d.min(tombstone_deadline)
                                        }));
                                }
                                true
                            }
                        }
                    };
                    if keep {
                        kept.extend_from_slice(&data[span]);
                        kept_count += 1;
                    }
                }
                stats.records_kept += kept_count as u64;
                stats.records_removed += (header.records_count - kept_count) as u64;
                let producer_last = header.producer_id >= 0
                    && plan.producer_last_offsets.get(&header.producer_id)
                        == Some(&header.last_offset());
                if kept_count == header.records_count {
                    pending.extend_from_slice(bytes);
                } else if kept_count > 0 || last_in_segment || producer_last {
                    changed = true;
                    pending.extend_from_slice(&rebuild_batch(header, &kept, kept_count)?);
                } else {
                    changed = true;
                    stats.batches_removed += 1;
                }
            }
            // No write-back interval: the cleaned segment is synced whole below.
            if pending.len() >= WRITE_CHUNK {
                out.append(&pending, interval, now_ms, None, 0)?;
                pending.clear();
            }
            Ok(())
        })
        .and_then(|()| {
            if !pending.is_empty() {
                out.append(&pending, interval, now_ms, None, 0)?;
            }
            Ok(())
        });
        stats.bytes_before += seg.size;
        if let Err(e) = written {
            let _ = out.delete_files();
            return Err(e);
        }
        if !changed {
            stats.bytes_after += seg.size;
            out.delete_files()?;
            return Ok(SegmentOutcome::Unchanged);
        }
        stats.bytes_after += out.size();
        let synced = out.seal().and_then(|()| {
            for file in out.take_files_to_sync() {
                file.sync_data().ctx("syncing", out.log_path())?;
            }
            Ok(())
        });
        if let Err(e) = synced {
            let _ = out.delete_files();
            return Err(e);
        }
        self.swap_in(seg, out, plan)
    }

    /// Replaces the planned segment with its cleaned version if the log has
    /// not changed under the pass (no truncation, the segment still there
    /// with the same file and size, the log open); else drops the cleaned files.
    fn swap_in(
        &self,
        seg: &PlannedSegment,
        mut cleaned: Segment,
        plan: &Plan,
    ) -> Result<SegmentOutcome, StorageError> {
        let mut inner = self.inner.lock();
        let n = inner.segments.len();
        let index = inner
            .segments
            .iter()
            .position(|s| s.base_offset() == seg.base)
            .filter(|&i| {
                i + 1 < n
                    && Arc::ptr_eq(inner.segments[i].log_file(), &seg.file)
                    && inner.segments[i].size() == seg.size
            });
        let Some(index) = index.filter(|_| !inner.closed && inner.truncations == plan.truncations)
        else {
            drop(inner);
            cleaned.delete_files()?;
            return Ok(SegmentOutcome::Abandoned);
        };
        // Commit: once `<base>.log.swap` is durable, recovery finishes the swap.
        cleaned.rename_files(&self.dir, SWAP_SUFFIX)?;
        sync_dir(&self.dir).ctx("syncing directory", &self.dir)?;
        cleaned.rename_files(&self.dir, "")?;
        let old = std::mem::replace(&mut inner.segments[index], cleaned);
        // Its files were replaced by the renames: dropping closes the handles.
        drop(old);
        drop(inner);
        sync_dir(&self.dir).ctx("syncing directory", &self.dir)?;
        Ok(SegmentOutcome::Swapped)
    }
}

#[cfg(test)]
#[path = "cleaner_tests.rs"]
mod tests;

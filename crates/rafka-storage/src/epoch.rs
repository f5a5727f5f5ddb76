//! The leader-epoch cache (KIP-101): at which offset each leader epoch began.
//!
//! Entries are `(epoch, start offset)`, both strictly increasing. The leader
//! adds an entry when it first appends in a new epoch (or when it becomes
//! leader); a follower adds one for every batch whose epoch is newer than the
//! latest entry. Truncating the log removes entries at or past the new end;
//! retention moves the oldest surviving entry up to the new log start.
//!
//! Every change is written to `leader-epoch-checkpoint` (Kafka's text format)
//! before the data it describes, so the file is never behind the log; after a
//! crash, recovery trims whatever is ahead.

use std::path::{Path, PathBuf};

use crate::checkpoint::{read_lines, write_lines, LEADER_EPOCH_CHECKPOINT};
use crate::StorageError;

/// Kafka's UNDEFINED_EPOCH.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One leader epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    dir: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint. Returns the cache and whether the file was usable:
    /// `false` means missing or corrupt, and the caller must rebuild from the log.
    pub(crate) fn load(dir: &Path) -> Result<(LeaderEpochCache, bool), StorageError> {
        let mut cache = LeaderEpochCache {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        };
        let lines = match read_lines(dir, LEADER_EPOCH_CHECKPOINT) {
            Ok(Some(lines)) => lines,
            Ok(None) => return Ok((cache, false)),
            Err(StorageError::CorruptCheckpoint { path, reason }) => {
                tracing::warn!(path = %path.display(), %reason, "corrupt leader epoch checkpoint, rebuilding it from the log");
                return Ok((cache, false));
            }
            Err(e) => return Err(e),
        };
        for line in &lines {
            let mut fields = line.split_whitespace();
            let parsed = match (fields.next(), fields.next(), fields.next()) {
                (Some(e), Some(o), None) => e.parse::<i32>().ok().zip(o.parse::<i64>().ok()),
                _ => None,
            };
            let valid = parsed.filter(|&(epoch, start)| {
                epoch >= 0
                    && start >= 0
                    && cache
                        .entries
                        .last()
                        .is_none_or(|last| epoch > last.epoch && start >= last.start_offset)
            });
            match valid {
                Some((epoch, start_offset)) => cache.entries.push(EpochEntry {
                    epoch,
                    start_offset,
                }),
                None => {
                    tracing::warn!(dir = %dir.display(), %line, "malformed or non-monotonic leader epoch entry, rebuilding the cache from the log");
                    cache.entries.clear();
                    return Ok((cache, false));
                }
            }
        }
        Ok((cache, true))
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Writes the checkpoint file.
    pub(crate) fn persist(&self) -> Result<(), StorageError> {
        let lines: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} {}", e.epoch, e.start_offset))
            .collect();
        write_lines(&self.dir, LEADER_EPOCH_CHECKPOINT, &lines)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`).
    /// Entries with an epoch >= `epoch` or a start offset >= `start_offset`
    /// conflict with the new one and are dropped. Returns whether anything
    /// changed; does not persist.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && last.start_offset <= start_offset {
                return false;
            }
        }
        let before = self.entries.len();
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        if self.entries.len() != before {
            tracing::warn!(dir = %self.dir.display(), epoch, start_offset, removed = before - self.entries.len(),
                "new leader epoch entry conflicts with cached entries, dropping them");
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops entries starting at or after `end_offset` (log truncated to it).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset`: drop epochs that ended before it
    /// and move the start of the epoch containing it up to it.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let Some(floor) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return false;
        };
        let changed = floor > 0 || self.entries[floor].start_offset != start_offset;
        self.entries.drain(..floor);
        self.entries[0].start_offset = start_offset;
        changed
    }

    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `requested` and the offset
    /// where it ended (the next epoch's start, or `log_end_offset` for the
    /// latest epoch). A requested epoch older than every entry answers
    /// `(requested, first start offset)`; an undefined or newer-than-latest
    /// epoch answers `(-1, -1)`.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().position(|e| e.epoch > requested) else {
            return undefined;
        };
        let end = self.entries[higher].start_offset;
        if higher == 0 {
            (requested, end)
        } else {
            (self.entries[higher - 1].epoch, end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let (mut cache, _) = LeaderEpochCache::load(dir.path()).unwrap();
        for &(e, o) in entries {
            cache.assign(e, o);
        }
        (dir, cache)
    }

    #[test]
    fn end_offset_for_follows_kafka_semantics() {
        let (_d, cache) = cache_with(&[(2, 10), (4, 30), (7, 50)]);
        let leo = 80;
        assert_eq!(
            cache.end_offset_for(7, leo),
            (7, 80),
            "latest epoch ends at the log end"
        );
        assert_eq!(cache.end_offset_for(4, leo), (4, 50));
        assert_eq!(
            cache.end_offset_for(5, leo),
            (4, 50),
            "unknown epoch in between: previous epoch"
        );
        assert_eq!(cache.end_offset_for(2, leo), (2, 30));
        assert_eq!(
            cache.end_offset_for(1, leo),
            (1, 10),
            "older than all: first start offset"
        );
        assert_eq!(cache.end_offset_for(9, leo), (-1, -1), "newer than latest");
        assert_eq!(cache.end_offset_for(-1, leo), (-1, -1));
    }

    #[test]
    fn checkpoint_file_uses_kafka_text_format_and_reloads() {
        let (dir, cache) = cache_with(&[(0, 0), (3, 150)]);
        cache.persist().unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n2\n0 0\n3 150\n");
        let (reloaded, ok) = LeaderEpochCache::load(dir.path()).unwrap();
        assert!(ok);
        assert_eq!(reloaded.entries(), cache.entries());
    }

    #[test]
    fn truncate_from_start_moves_the_surviving_epoch_up() {
        let (_d, mut cache) = cache_with(&[(1, 0), (2, 100), (3, 200)]);
        assert!(cache.truncate_from_start(150));
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    epoch: 2,
                    start_offset: 150
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 200
                }
            ]
        );
    }

    #[test]
    fn assign_with_an_older_epoch_drops_conflicting_entries() {
        let (_d, mut cache) = cache_with(&[(1, 0), (5, 100)]);
        assert!(cache.assign(3, 50));
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 50
                }
            ]
        );
    }

    #[test]
    fn non_monotonic_checkpoint_is_reported_unusable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEADER_EPOCH_CHECKPOINT),
            "0\n2\n5 10\n3 20\n",
        )
        .unwrap();
        let (cache, ok) = LeaderEpochCache::load(dir.path()).unwrap();
        assert!(!ok);
        assert!(cache.entries().is_empty());
    }
}

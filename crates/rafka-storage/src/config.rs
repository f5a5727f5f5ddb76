//! Per-partition log configuration, with Kafka's defaults.
//!
//! The broker translates topic configs (`segment.bytes`, `retention.ms`,
//! `cleanup.policy`, `delete.retention.ms`, ...) into a [`LogConfig`] once, validates it with
//! [`LogConfig::validate`], and hands it to [`crate::PartitionLog::open`] or
//! [`crate::PartitionLog::update_config`].

use crate::StorageError;

/// Which timestamp the log records for each batch (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Overwrite the batch max timestamp with the broker's append time.
    LogAppendTime,
}

/// Settings of one partition log.
///
/// `Eq` holds because [`LogConfig::validate`] refuses a NaN dirty ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll when the active segment would exceed this many bytes (`segment.bytes`). Capped at `i32::MAX`.
    pub segment_bytes: u64,
    /// Roll when the active segment is older than this (`segment.ms`); `None` = never.
    pub segment_ms: Option<i64>,
    /// Delete segments whose newest record is older than this (`retention.ms`); `None` = forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while the log is larger than this (`retention.bytes`); `None` = no limit.
    pub retention_bytes: Option<u64>,
    /// Bytes of log between two sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest accepted batch (`max.message.bytes`).
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` contains `delete`: time and size retention apply.
    pub delete_retention: bool,
    /// `cleanup.policy` contains `compact`: [`crate::PartitionLog::compact`]
    /// keeps only the latest record of each key.
    pub compact: bool,
    /// How long tombstones (null values) survive compaction (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Compact only when dirty bytes / cleanable bytes reaches this
    /// (`min.cleanable.dirty.ratio`, 0..=1).
    pub min_cleanable_dirty_ratio: f64,
    /// Segments whose newest record is younger than this are not compacted (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// Compact regardless of the dirty ratio once the oldest dirty record is
    /// older than this (`max.compaction.lag.ms`).
    pub max_compaction_lag_ms: i64,
    /// Sync once this many messages are appended and not yet synced
    /// (`flush.messages`, at least 1; [`NO_FLUSH`] = never). 1 is the durable mode: a
    /// record counts as replicated only once fsynced. Storage does not act on it:
    /// the broker calls [`crate::PartitionLog::sync_appended`].
    pub flush_messages: i64,
    /// Sync once the oldest unsynced append is this old (`flush.ms`, at least 0;
    /// [`NO_FLUSH`] = never). Acted on by the broker, as `flush_messages`.
    pub flush_ms: i64,
    /// Reserve disk blocks ahead of the active segment's end (`preallocate`), in
    /// [`PREALLOCATE_STEP`] steps and without changing the file size, so that
    /// write-back does not allocate blocks while appends write the same file. The
    /// reservation beyond the data is released when the segment rolls or the log closes.
    pub preallocate: bool,
    /// Start write-back of a segment's appended bytes once this many have piled up
    /// since the last start (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, not a
    /// sync: it promises no durability and does not wait), so that dirty pages are
    /// written steadily instead of in the kernel's large, late write-back storms that
    /// stall appends. 0 = off: leave it all to the kernel. A no-op off Linux.
    pub writeback_interval_bytes: u64,
}

/// How far ahead of the active segment's end `preallocate` reserves blocks.
pub const PREALLOCATE_STEP: u64 = 8 << 20;

/// The default [`LogConfig::writeback_interval_bytes`]: 1 MiB.
pub const DEFAULT_WRITEBACK_INTERVAL_BYTES: u64 = 1 << 20;

impl Eq for LogConfig {}

/// Kafka's default `segment.bytes`: 1 GiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
/// Seven days in milliseconds: Kafka's default `segment.ms` and `retention.ms`.
pub const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default `max.message.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1_048_588;
/// Kafka's default `delete.retention.ms`: one day.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// Kafka's default `flush.messages` and `flush.ms` (`Long.MAX_VALUE`): never sync
/// because of them, only at the periodic flush.
pub const NO_FLUSH: i64 = i64::MAX;
/// Kafka's default `min.cleanable.dirty.ratio`.
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: Some(SEVEN_DAYS_MS),
            retention_ms: Some(SEVEN_DAYS_MS),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timestamp_type: TimestampType::CreateTime,
            delete_retention: true,
            compact: false,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_cleanable_dirty_ratio: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            flush_messages: NO_FLUSH,
            flush_ms: NO_FLUSH,
            preallocate: false,
            writeback_interval_bytes: DEFAULT_WRITEBACK_INTERVAL_BYTES,
        }
    }
}

impl LogConfig {
    /// Rejects settings that can never work. Called by `PartitionLog::open`.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes == 0 {
            return Err(StorageError::InvalidArgument(
                "segment_bytes must be at least 1".to_string(),
            ));
        }
        if let Some(ms) = self.segment_ms {
            if ms <= 0 {
                return Err(StorageError::InvalidArgument(format!(
                    "segment_ms must be positive, got {ms}"
                )));
            }
        }
        if let Some(ms) = self.retention_ms {
            if ms < 0 {
                return Err(StorageError::InvalidArgument(format!(
                    "retention_ms must not be negative (use None for infinite), got {ms}"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(StorageError::InvalidArgument(format!(
                "min_cleanable_dirty_ratio must be between 0 and 1, got {}",
                self.min_cleanable_dirty_ratio
            )));
        }
        for (name, ms) in [
            ("delete_retention_ms", self.delete_retention_ms),
            ("min_compaction_lag_ms", self.min_compaction_lag_ms),
        ] {
            if ms < 0 {
                return Err(StorageError::InvalidArgument(format!(
                    "{name} must not be negative, got {ms}"
                )));
            }
        }
        if self.max_compaction_lag_ms < 1 {
            return Err(StorageError::InvalidArgument(format!(
                "max_compaction_lag_ms must be positive, got {}",
                self.max_compaction_lag_ms
            )));
        }
        if self.flush_messages < 1 {
            return Err(StorageError::InvalidArgument(format!(
                "flush_messages must be at least 1, got {}",
                self.flush_messages
            )));
        }
        if self.flush_ms < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "flush_ms must not be negative, got {}",
                self.flush_ms
            )));
        }
        if self.max_message_bytes < crate::batch::BatchHeader::SIZE as u32 {
            return Err(StorageError::InvalidArgument(format!(
                "max_message_bytes must be at least {}, got {}",
                crate::batch::BatchHeader::SIZE,
                self.max_message_bytes
            )));
        }
        Ok(())
    }

    /// `segment_bytes` capped so that file positions fit the 32-bit index entries.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(i32::MAX as u64)
    }
}

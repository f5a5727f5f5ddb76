//! The storage crate's one error type.
//!
//! Every variant carries the offending values so that a log line or a test
//! failure says what went wrong without a debugger. Mapping these errors to
//! Kafka error codes is the job of the protocol front, not of storage:
//! `CorruptBatch` is CORRUPT_MESSAGE, `MessageTooLarge` is MESSAGE_TOO_LARGE,
//! `OffsetOutOfRange` is OFFSET_OUT_OF_RANGE, `StaleLeaderEpoch` is
//! FENCED_LEADER_EPOCH, `InvalidProducerEpoch` is INVALID_PRODUCER_EPOCH,
//! `OutOfOrderSequence` is OUT_OF_ORDER_SEQUENCE_NUMBER, the I/O variants are
//! KAFKA_STORAGE_ERROR.

use std::path::{Path, PathBuf};

/// Errors returned by the partition log and the batch helpers.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A record batch failed validation: bad CRC, bad length, magic other
    /// than 2, truncated input, `records_count <= 0`, malformed records...
    #[error("corrupt record batch: {reason}")]
    CorruptBatch { reason: String },

    /// One batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes (max.message.bytes)")]
    MessageTooLarge { size: usize, max: u32 },

    /// A read or truncation asked for an offset outside `[log_start, log_end]`.
    #[error(
        "offset {offset} is out of range: log start offset {log_start}, log end offset {log_end}"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },

    /// A replicated append did not start at the log end offset.
    #[error(
        "replicated batches start at offset {base_offset} but the log end offset is {log_end}"
    )]
    UnexpectedAppendOffset { base_offset: i64, log_end: i64 },

    /// A leader append carried an epoch older than one already in the log.
    #[error("leader epoch {epoch} is older than the latest leader epoch {latest} in the log")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },

    /// An idempotent batch carried a producer epoch older than the one the
    /// partition knows for that producer (the producer was fenced).
    #[error("producer {producer_id} sent epoch {epoch}, older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },

    /// An idempotent batch did not continue its producer's sequence (a gap,
    /// a reordering, or a new epoch not starting at 0).
    #[error(
        "out of order sequence for producer {producer_id}: expected sequence {expected}, got {got}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },

    /// An argument that can never be valid (negative offset, bad config...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A checkpoint file exists but cannot be parsed.
    #[error("corrupt checkpoint file {path}: {reason}")]
    CorruptCheckpoint { path: PathBuf, reason: String },

    /// The log was closed with [`crate::PartitionLog::close`]; it accepts no more writes.
    #[error("the log in {dir} is closed")]
    Closed { dir: PathBuf },

    /// An I/O error without more context.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// An I/O error on a named file.
    #[error("I/O error while {op} {path}: {source}")]
    IoAt {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    pub(crate) fn corrupt(reason: impl Into<String>) -> StorageError {
        StorageError::CorruptBatch {
            reason: reason.into(),
        }
    }
}

/// Attaches the operation and the file to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::IoAt {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

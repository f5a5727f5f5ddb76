//! Rafka's partition log: durable, Kafka-compatible storage for one partition
//! replica, and the record-batch helpers other crates need.
//!
//! Storage knows nothing of Kafka requests, Raft or gRPC. Its map, bottom up:
//!
//! * [`batch`]: the v2 record batch format. Parse and validate headers,
//!   iterate batches in a buffer ([`batches`]) and the records of a batch
//!   (decompressed if need be), patch offsets/epochs/timestamps in place,
//!   build batches ([`batch::BatchBuilder`]), and [`batch::test_support`] for tests.
//! * `compression`: the record-section codecs (those of the `kafka-protocol`
//!   crate), used only by compaction and the produce-path key check.
//! * `index`: the sparse `.index` (offset → position) and `.timeindex`
//!   (timestamp → offset) files of a segment, in Kafka's formats.
//! * `segment`: one `<base offset>.log` file with its indexes: append,
//!   recovery scan, trusted load, truncation.
//! * `epoch`: the KIP-101 leader-epoch cache (`leader-epoch-checkpoint`).
//! * `checkpoint`: Kafka-format text checkpoints replaced atomically.
//! * [`PartitionLog`] (module `log`): the segments of one partition directory
//!   behind one lock — append (leader and replicated), read, offset and
//!   timestamp lookups, flush and the data-only group-commit sync behind the
//!   broker's `flush.messages`/`flush.ms`, crash recovery, retention, truncation.
//! * `cleaner` (a child of `log`): log compaction, [`PartitionLog::compact`],
//!   which keeps the latest record of every key; see its module docs for the
//!   rules, the crash-safe segment swap and the [`CleanStats`] it returns.
//! * `producer_state`: idempotent-producer state (KIP-98): per producer id
//!   the epoch and the last 5 batches, for sequence checks and duplicate
//!   detection on leader appends; snapshotted to `<offset>.snapshot` files
//!   and rebuilt from batch headers on open. See [`ProducerSnapshot`].
//! * [`LogConfig`]: per-partition settings with Kafka's defaults.
//! * [`StorageError`]: the one error type, carrying the offending values.
//!
//! On disk a partition directory looks like Kafka's:
//!
//! ```text
//! 00000000000000000000.log        record batches, exactly as received
//! 00000000000000000000.index      relative offset u32 + position u32
//! 00000000000000000000.timeindex  timestamp i64 + relative offset u32
//! leader-epoch-checkpoint         0 / count / "epoch start-offset" lines
//! 00000000000000000042.snapshot   producer state below offset 42 (the 2 newest kept)
//! recovery-point-offset-checkpoint, log-start-offset-checkpoint, high-watermark
//! cleaner-offset-checkpoint       compacted topics: first dirty offset and tombstone deadline
//! 00000000000000000000.log.cleaned / .log.swap   a compaction in progress (see `cleaner`)
//! .clean-shutdown                 present only between close() and open()
//! ```

pub mod batch;
mod checkpoint;
mod compression;
mod config;
mod epoch;
mod error;
mod index;
mod io;
mod log;
mod producer_state;
mod segment;
mod varint;

pub use batch::{batches, BatchHeader};
pub use config::{
    LogConfig, TimestampType, DEFAULT_DELETE_RETENTION_MS, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MIN_CLEANABLE_DIRTY_RATIO, DEFAULT_SEGMENT_BYTES, DEFAULT_WRITEBACK_INTERVAL_BYTES, NO_FLUSH,
    PREALLOCATE_STEP, SEVEN_DAYS_MS,
};
pub use epoch::{EpochEntry, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use error::StorageError;
#[cfg(any(test, feature = "fault-injection"))]
pub use log::SyncHook;
pub use log::{
    AppendInfo, CleanStats, PartitionLog, ReadResult, CLEAN_SHUTDOWN_FILE, DEFAULT_KEY_MAP_BYTES,
};
pub use producer_state::ProducerSnapshot;

/// Compile-time check that the log can be shared across threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
};

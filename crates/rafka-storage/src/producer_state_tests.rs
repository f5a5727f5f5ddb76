//! Tests of idempotent-producer state in [`PartitionLog`]: sequence checks,
//! duplicates, replication, snapshots, recovery and truncation.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::batch::test_support::{all_records, simple_batch};
use crate::batch::BatchBuilder;

const T0: i64 = 1_700_000_000_000;
const PID: i64 = 1000;

fn test_config() -> LogConfig {
    LogConfig {
        segment_ms: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, test_config()).expect("open log")
}

fn open_with(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open log")
}

/// A batch of `count` records from producer `pid`, epoch `epoch`, starting at sequence `seq`.
fn pbatch(pid: i64, epoch: i16, seq: i32, count: usize) -> BytesMut {
    let mut builder = BatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..count {
        let value = format!("p{pid}-e{epoch}-s{seq}-{i}");
        builder.push(T0 + i as i64, None, Some(value.as_bytes()), &[]);
    }
    builder.build()
}

fn concat(parts: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// `(epoch, first sequence, last sequence, base offset, last offset)` of a producer's last batch.
type LastBatch = Option<(i16, i32, i32, i64, i64)>;

/// The [`LastBatch`] of `pid`.
fn state(log: &PartitionLog, pid: i64) -> LastBatch {
    log.producer_state(pid).map(|s| {
        (
            s.producer_epoch,
            s.first_sequence,
            s.last_sequence,
            s.base_offset,
            s.last_offset,
        )
    })
}

/// The whole producer state: every entry with all its cached batches.
fn full_state(log: &PartitionLog) -> Vec<(i64, crate::producer_state::ProducerEntry)> {
    log.inner.lock().producers.entries()
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .collect();
    out.sort();
    out
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn record_count(log: &PartitionLog) -> usize {
    let end = log.log_end_offset();
    let start = log.log_start_offset();
    if start == end {
        return 0;
    }
    all_records(&log.read(start, 1 << 24, end, true).unwrap().records).len()
}

// ---------------------------------------------------------------------------
// Leader append checks
// ---------------------------------------------------------------------------

#[test]
fn in_sequence_batches_are_appended_and_tracked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(state(&log, PID), None);
    let a = log.append(pbatch(PID, 0, 0, 3), 0, T0).unwrap();
    let b = log.append(pbatch(PID, 0, 3, 2), 0, T0).unwrap();
    assert!(!a.duplicate && !b.duplicate);
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    assert_eq!(state(&log, PID), Some((0, 3, 4, 3, 4)));
    assert_eq!(log.producer_state(PID).unwrap().last_timestamp, T0 + 1);
    assert_eq!(log.producer_state(PID).unwrap().producer_id, PID);
}

#[test]
fn a_retry_of_the_last_batch_returns_the_original_offsets_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    let original = log.append(pbatch(PID, 0, 0, 3), 0, T0).unwrap();
    let size = log.size_bytes();
    let retry = log.append(pbatch(PID, 0, 0, 3), 0, T0 + 5).unwrap();
    assert_eq!(
        retry,
        AppendInfo {
            base_offset: 2,
            last_offset: 4,
            log_append_time: -1,
            max_timestamp: original.max_timestamp,
            batch_count: 0,
            bytes: 0,
            duplicate: true,
        }
    );
    assert_eq!((original.base_offset, original.last_offset), (2, 4));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(record_count(&log), 5);
    assert_eq!(state(&log, PID), Some((0, 0, 2, 2, 4)));
}

#[test]
fn a_retry_of_an_older_batch_among_the_last_five_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut infos = Vec::new();
    for i in 0..6 {
        infos.push(log.append(pbatch(PID, 0, i * 2, 2), 0, T0).unwrap());
    }
    let leo = log.log_end_offset();
    // Batches 1..=5 are cached; batch 1 (sequences 2-3) is the oldest of them.
    for i in [1usize, 3, 5] {
        let retry = log.append(pbatch(PID, 0, i as i32 * 2, 2), 0, T0).unwrap();
        assert!(retry.duplicate, "batch {i}");
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (infos[i].base_offset, infos[i].last_offset)
        );
    }
    assert_eq!(log.log_end_offset(), leo);
    // Batch 0 fell out of the cache: its retry is out of order, not a duplicate.
    match log.append(pbatch(PID, 0, 0, 2), 0, T0) {
        Err(StorageError::OutOfOrderSequence {
            producer_id: PID,
            expected: 12,
            got: 0,
        }) => {}
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), leo);
}

#[test]
fn a_same_start_but_different_length_is_not_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 3), 0, T0).unwrap();
    let err = log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfOrderSequence {
                expected: 3,
                got: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_out_of_order_sequence_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 5), 0, T0).unwrap();
    // Overlaps the last batch without equalling it.
    let err = log.append(pbatch(PID, 0, 3, 4), 0, T0).unwrap_err();
    match &err {
        StorageError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        } => assert_eq!((*producer_id, *expected, *got), (PID, 5, 3)),
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("1000") && message.contains('5') && message.contains('3'),
        "{message}"
    );
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(state(&log, PID), Some((0, 0, 4, 0, 4)));
}

#[test]
fn a_sequence_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    match log.append(pbatch(PID, 0, 3, 1), 0, T0) {
        Err(StorageError::OutOfOrderSequence {
            producer_id: PID,
            expected: 2,
            got: 3,
        }) => {}
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(
        log.append(pbatch(PID, 0, 2, 1), 0, T0).unwrap().base_offset,
        2
    );
}

#[test]
fn a_stale_producer_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 3, 0, 2), 0, T0).unwrap();
    let err = log.append(pbatch(PID, 2, 2, 1), 0, T0).unwrap_err();
    match &err {
        StorageError::InvalidProducerEpoch {
            producer_id,
            epoch,
            current,
        } => assert_eq!((*producer_id, *epoch, *current), (PID, 2, 3)),
        other => panic!("expected InvalidProducerEpoch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("1000") && message.contains("epoch 2"),
        "{message}"
    );
    // Even a batch equal to a cached one, but from an older epoch.
    assert!(matches!(
        log.append(pbatch(PID, 2, 0, 2), 0, T0),
        Err(StorageError::InvalidProducerEpoch { .. })
    ));
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn a_new_epoch_must_start_at_sequence_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 3), 0, T0).unwrap();
    match log.append(pbatch(PID, 1, 3, 1), 0, T0) {
        Err(StorageError::OutOfOrderSequence {
            producer_id: PID,
            expected: 0,
            got: 3,
        }) => {}
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    assert_eq!(state(&log, PID), Some((0, 0, 2, 0, 2)));
    let bumped = log.append(pbatch(PID, 1, 0, 2), 0, T0).unwrap();
    assert!(!bumped.duplicate);
    assert_eq!((bumped.base_offset, bumped.last_offset), (3, 4));
    assert_eq!(state(&log, PID), Some((1, 0, 1, 3, 4)));
    // The old epoch is now fenced, and its batches are no longer duplicates.
    assert!(matches!(
        log.append(pbatch(PID, 0, 0, 3), 0, T0),
        Err(StorageError::InvalidProducerEpoch {
            epoch: 0,
            current: 1,
            ..
        })
    ));
}

#[test]
fn an_unknown_producer_may_start_at_any_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let info = log.append(pbatch(PID, 4, 42, 3), 0, T0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (0, false));
    assert_eq!(state(&log, PID), Some((4, 42, 44, 0, 2)));
    assert_eq!(
        log.append(pbatch(PID, 4, 45, 1), 0, T0)
            .unwrap()
            .base_offset,
        3
    );
    // Producers are independent.
    assert_eq!(
        log.append(pbatch(7, 0, 9, 1), 0, T0).unwrap().base_offset,
        4
    );
    assert_eq!(state(&log, 7), Some((0, 9, 9, 4, 4)));
}

#[test]
fn sequences_wrap_from_i32_max_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    // Sequences MAX-1, MAX, 0, 1.
    log.append(pbatch(PID, 0, i32::MAX - 1, 4), 0, T0).unwrap();
    assert_eq!(state(&log, PID), Some((0, i32::MAX - 1, 1, 0, 3)));
    assert!(
        log.append(pbatch(PID, 0, i32::MAX - 1, 4), 0, T0)
            .unwrap()
            .duplicate
    );
    assert!(matches!(
        log.append(pbatch(PID, 0, 0, 1), 0, T0),
        Err(StorageError::OutOfOrderSequence {
            expected: 2,
            got: 0,
            ..
        })
    ));
    assert_eq!(
        log.append(pbatch(PID, 0, 2, 1), 0, T0).unwrap().base_offset,
        4
    );

    // A batch ending exactly at i32::MAX is followed by sequence 0.
    log.append(pbatch(8, 0, i32::MAX - 1, 2), 0, T0).unwrap();
    assert_eq!(state(&log, 8).unwrap().2, i32::MAX);
    let next = log.append(pbatch(8, 0, 0, 1), 0, T0).unwrap();
    assert!(!next.duplicate);
    assert_eq!(state(&log, 8).unwrap().1, 0);
}

#[test]
fn a_negative_base_sequence_with_a_producer_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let err = log.append(pbatch(PID, 0, -1, 1), 0, T0).unwrap_err();
    assert!(matches!(err, StorageError::CorruptBatch { .. }), "{err}");
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_multi_batch_append_checks_each_batch_against_the_ones_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let info = log
        .append(
            concat(&[
                &pbatch(PID, 0, 0, 2),
                &simple_batch(1, T0),
                &pbatch(PID, 0, 2, 2),
                &pbatch(9, 0, 0, 1),
            ]),
            0,
            T0,
        )
        .unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batch_count),
        (0, 5, 4)
    );
    assert_eq!(state(&log, PID), Some((0, 2, 3, 3, 4)));
    assert_eq!(state(&log, 9), Some((0, 0, 0, 5, 5)));

    // A bad second batch rejects the whole append, state included.
    let err = log
        .append(
            concat(&[&pbatch(PID, 0, 4, 1), &pbatch(PID, 0, 9, 1)]),
            0,
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(state(&log, PID), Some((0, 2, 3, 3, 4)));

    // A duplicate inside a multi-batch append is refused, not half-appended.
    let err = log
        .append(
            concat(&[&pbatch(PID, 0, 2, 2), &pbatch(PID, 0, 4, 1)]),
            0,
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfOrderSequence {
                expected: 4,
                got: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = log
        .append(
            concat(&[&pbatch(PID, 0, 4, 1), &pbatch(PID, 0, 4, 1)]),
            0,
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfOrderSequence {
                expected: 5,
                got: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(state(&log, PID), Some((0, 2, 3, 3, 4)));
}

#[test]
fn transactional_batches_are_checked_like_idempotent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let txn = |seq: i32| {
        let mut b = BatchBuilder::new()
            .producer(PID, 0, seq)
            .transactional(true);
        b.push(T0, None, Some(b"t"), &[]);
        b.build()
    };
    log.append(txn(0), 0, T0).unwrap();
    assert!(log.append(txn(0), 0, T0).unwrap().duplicate);
    assert!(matches!(
        log.append(txn(5), 0, T0),
        Err(StorageError::OutOfOrderSequence { .. })
    ));
    assert_eq!(log.append(txn(1), 0, T0).unwrap().base_offset, 1);
}

#[test]
fn non_idempotent_batches_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let a = log.append(simple_batch(2, T0), 0, T0).unwrap();
    let b = log.append(simple_batch(2, T0), 0, T0).unwrap();
    assert!(!a.duplicate && !b.duplicate);
    assert_eq!((a.base_offset, b.base_offset), (0, 2));
    log.append(pbatch(PID, 0, 0, 1), 0, T0).unwrap();
    let c = log.append(simple_batch(2, T0), 0, T0).unwrap();
    assert_eq!((c.base_offset, c.duplicate), (5, false));
    assert_eq!(log.producer_state(-1), None);
    assert_eq!(state(&log, PID), Some((0, 0, 0, 4, 4)));
    assert_eq!(record_count(&log), 7);
}

// ---------------------------------------------------------------------------
// Replication
// ---------------------------------------------------------------------------

/// A producer batch as a leader would have stored it, at `base_offset`.
fn replicated(pid: i64, epoch: i16, seq: i32, count: usize, base_offset: i64) -> Bytes {
    let mut builder = BatchBuilder::new()
        .producer(pid, epoch, seq)
        .base_offset(base_offset)
        .partition_leader_epoch(0);
    for i in 0..count {
        builder.push(T0 + i as i64, None, Some(b"r"), &[]);
    }
    builder.build().freeze()
}

#[test]
fn replicated_batches_update_the_state_that_a_leader_append_continues() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append_replicated(replicated(PID, 2, 10, 3, 0)).unwrap();
    log.append_replicated(replicated(PID, 2, 13, 2, 3)).unwrap();
    assert_eq!(state(&log, PID), Some((2, 13, 14, 3, 4)));
    // As the new leader: a retry of the replicated batch is a duplicate...
    let retry = log.append(pbatch(PID, 2, 13, 2), 1, T0).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (3, 4));
    // ...a gap is refused, and the next sequence is appended.
    assert!(matches!(
        log.append(pbatch(PID, 2, 16, 1), 1, T0),
        Err(StorageError::OutOfOrderSequence {
            expected: 15,
            got: 16,
            ..
        })
    ));
    assert_eq!(
        log.append(pbatch(PID, 2, 15, 1), 1, T0)
            .unwrap()
            .base_offset,
        5
    );
}

#[test]
fn replicated_batches_are_mirrored_without_checks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append_replicated(replicated(PID, 5, 0, 1, 0)).unwrap();
    // The leader accepted these; a follower does not second-guess them.
    log.append_replicated(replicated(PID, 5, 7, 1, 1)).unwrap();
    log.append_replicated(replicated(PID, 4, 0, 1, 2)).unwrap();
    assert_eq!(state(&log, PID), Some((4, 0, 0, 2, 2)));
}

// ---------------------------------------------------------------------------
// Snapshots and recovery
// ---------------------------------------------------------------------------

/// Appends a mix of producers and plain batches; returns the expected states.
fn fill(log: &PartitionLog) -> Vec<(i64, LastBatch)> {
    for round in 0..4 {
        log.append(pbatch(PID, 1, round * 3, 3), 0, T0).unwrap();
        log.append(simple_batch(2, T0), 0, T0).unwrap();
        log.append(pbatch(77, 0, 100 + round, 1), 0, T0).unwrap();
    }
    [PID, 77, 5]
        .iter()
        .map(|&pid| (pid, state(log, pid)))
        .collect()
}

fn states(log: &PartitionLog, pids: &[i64]) -> Vec<(i64, LastBatch)> {
    pids.iter().map(|&pid| (pid, state(log, pid))).collect()
}

#[test]
fn state_survives_close_and_reopen_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let size = pbatch(PID, 0, 0, 1).len() as u64;
    let config = LogConfig {
        segment_bytes: 3 * size,
        ..test_config()
    };
    let log = open_with(dir.path(), config.clone());
    // The producer's batches live in the first segment only...
    log.append(pbatch(PID, 3, 0, 1), 0, T0).unwrap();
    log.append(pbatch(PID, 3, 1, 1), 0, T0).unwrap();
    for _ in 0..6 {
        log.append(simple_batch(1, T0), 0, T0).unwrap();
    }
    let before = state(&log, PID);
    assert_eq!(before, Some((3, 1, 1, 1, 1)));
    let full_before = full_state(&log);
    // ...which retention then deletes: only a snapshot can remember them.
    let active_base = *log.segment_base_offsets().last().unwrap();
    assert!(active_base > 2);
    log.advance_log_start_offset(active_base).unwrap();
    assert!(log.apply_retention(T0).unwrap() > 0);
    assert!(!segment_path(dir.path(), 0).exists());
    log.close().unwrap();
    assert_eq!(
        snapshot_files(dir.path()),
        vec![snapshot_path(dir.path(), 8)]
    );
    drop(log);

    let log = open_with(dir.path(), config);
    assert_eq!(state(&log, PID), before);
    assert_eq!(full_state(&log), full_before);
    let retry = log.append(pbatch(PID, 3, 1, 1), 0, T0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 1);
    assert_eq!(
        log.append(pbatch(PID, 3, 2, 1), 0, T0).unwrap().base_offset,
        8
    );
}

#[test]
fn state_is_rebuilt_from_the_log_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let expected = fill(&log);
    let full = full_state(&log);
    drop(log); // no flush, no close: like kill -9
    assert!(snapshot_files(dir.path()).is_empty());

    let log = open(dir.path());
    assert_eq!(states(&log, &[PID, 77, 5]), expected);
    assert_eq!(full_state(&log), full);
    assert!(log.append(pbatch(PID, 1, 9, 3), 0, T0).unwrap().duplicate);
    // Open wrote a snapshot at the recovered end, so the next open need not scan.
    assert_eq!(
        snapshot_files(dir.path()),
        vec![snapshot_path(dir.path(), log.log_end_offset())]
    );
}

#[test]
fn a_crash_with_a_torn_tail_keeps_the_state_of_every_complete_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 64,
        ..test_config()
    };
    let log = open_with(dir.path(), config.clone());
    for round in 0..10 {
        log.append(pbatch(PID, 0, round * 2, 2), 0, T0).unwrap();
        log.append(simple_batch(3, T0), 0, T0).unwrap();
    }
    // A snapshot in the middle of the segment: the rebuild starts there.
    log.flush().unwrap();
    let flushed_at = log.log_end_offset();
    log.append(pbatch(PID, 0, 20, 2), 0, T0).unwrap();
    log.append(pbatch(55, 0, 0, 1), 0, T0).unwrap();
    let good_len = log.size_bytes();
    let expected = states(&log, &[PID, 55]);
    let full = full_state(&log);
    let torn = log.append(pbatch(PID, 0, 22, 4), 0, T0).unwrap();
    let full_len = log.size_bytes();
    assert_eq!(state(&log, PID).unwrap().2, 25);
    drop(log);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    file.set_len(good_len + (full_len - good_len) / 2).unwrap();
    drop(file);

    let log = open_with(dir.path(), config);
    assert_eq!(log.log_end_offset(), torn.base_offset);
    assert!(snapshot_path(dir.path(), flushed_at).exists());
    assert_eq!(states(&log, &[PID, 55]), expected);
    assert_eq!(full_state(&log), full);
    // The torn batch never made it: its retry is appended, not a duplicate.
    let retry = log.append(pbatch(PID, 0, 22, 4), 0, T0).unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.base_offset, torn.base_offset);
    // The complete one before it is still a duplicate.
    assert!(log.append(pbatch(PID, 0, 20, 2), 0, T0).unwrap().duplicate);
}

#[test]
fn a_corrupt_snapshot_is_ignored_and_the_state_rebuilt_by_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let expected = fill(&log);
    let full = full_state(&log);
    log.close().unwrap();
    drop(log);
    let snapshot = snapshot_files(dir.path()).pop().expect("a snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    // The low byte of the last sequence of the last batch of the last producer.
    let at = bytes.len() - 32 + 7;
    bytes[at] ^= 0x01;
    std::fs::write(&snapshot, &bytes).unwrap();

    let log = open(dir.path());
    assert_eq!(states(&log, &[PID, 77, 5]), expected);
    assert_eq!(full_state(&log), full);
    // Replaced by a good one at the same offset.
    assert_ne!(std::fs::read(&snapshot).unwrap(), bytes);
    drop(log);
    let log = open(dir.path());
    assert_eq!(full_state(&log), full);
}

#[test]
fn a_torn_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    log.flush().unwrap();
    log.append(pbatch(PID, 0, 2, 2), 0, T0).unwrap();
    log.append(pbatch(PID, 0, 4, 2), 0, T0).unwrap();
    log.flush().unwrap();
    log.append(pbatch(PID, 0, 6, 1), 0, T0).unwrap();
    let expected = state(&log, PID);
    let full = full_state(&log);
    assert_eq!(
        snapshot_files(dir.path()),
        vec![snapshot_path(dir.path(), 2), snapshot_path(dir.path(), 6)]
    );
    drop(log);
    let newest = snapshot_path(dir.path(), 6);
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let log = open(dir.path());
    assert_eq!(state(&log, PID), expected);
    assert_eq!(full_state(&log), full);
    // The older snapshot held only the first batch: the others came from the scan.
    for seq in [0, 2, 4, 6] {
        assert!(
            log.append(pbatch(PID, 0, seq, if seq == 6 { 1 } else { 2 }), 0, T0)
                .unwrap()
                .duplicate
        );
    }
}

#[test]
fn only_the_two_newest_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for seq in 0..5 {
        log.append(pbatch(PID, 0, seq, 1), 0, T0).unwrap();
        log.flush().unwrap();
    }
    // A flush with nothing new writes nothing.
    log.flush().unwrap();
    assert_eq!(
        snapshot_files(dir.path()),
        vec![snapshot_path(dir.path(), 4), snapshot_path(dir.path(), 5)]
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!(state(&log, PID), Some((0, 4, 4, 4, 4)));
}

#[test]
fn an_empty_log_writes_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.flush().unwrap();
    log.close().unwrap();
    assert!(snapshot_files(dir.path()).is_empty());
}

#[test]
fn snapshots_beyond_the_recovered_log_end_are_deleted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    log.flush().unwrap();
    let good_len = log.size_bytes();
    log.append(pbatch(PID, 0, 2, 2), 0, T0).unwrap();
    log.flush().unwrap();
    assert!(snapshot_path(dir.path(), 4).exists());
    drop(log);
    // The second batch is lost (say, by a disk that lied about fsync).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    file.set_len(good_len + 5).unwrap();
    drop(file);

    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 2);
    assert!(!snapshot_path(dir.path(), 4).exists());
    assert_eq!(state(&log, PID), Some((0, 0, 1, 0, 1)));
    let again = log.append(pbatch(PID, 0, 2, 2), 0, T0).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 2);
}

#[test]
fn a_snapshot_of_a_different_offset_than_its_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    log.flush().unwrap();
    log.append(pbatch(PID, 0, 2, 2), 0, T0).unwrap();
    drop(log);
    // A snapshot copied under another name must not be believed.
    std::fs::copy(snapshot_path(dir.path(), 2), snapshot_path(dir.path(), 4)).unwrap();
    let log = open(dir.path());
    assert_eq!(state(&log, PID), Some((0, 2, 3, 2, 3)));
}

// ---------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------

#[test]
fn truncate_to_forgets_the_truncated_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 3), 0, T0).unwrap(); // 0-2
    log.append(pbatch(PID, 0, 3, 3), 0, T0).unwrap(); // 3-5
    log.flush().unwrap(); // snapshot at 6
    log.append(pbatch(PID, 0, 6, 2), 0, T0).unwrap(); // 6-7
    log.append(pbatch(9, 0, 0, 1), 0, T0).unwrap(); // 8

    log.truncate_to(4).unwrap(); // inside the second batch: it goes whole
    assert_eq!(log.log_end_offset(), 3);
    assert!(!snapshot_path(dir.path(), 6).exists());
    assert_eq!(state(&log, PID), Some((0, 0, 2, 0, 2)));
    assert_eq!(state(&log, 9), None);
    let retry = log.append(pbatch(PID, 0, 3, 3), 0, T0).unwrap();
    assert!(!retry.duplicate, "a truncated batch is not a duplicate");
    assert_eq!(retry.base_offset, 3);
    assert!(log.append(pbatch(PID, 0, 0, 3), 0, T0).unwrap().duplicate);
    let expected = full_state(&log);

    // The reloaded state is what a reopen finds too.
    drop(log);
    let log = open(dir.path());
    assert_eq!(full_state(&log), expected);
    assert_eq!(state(&log, 9), None);
}

#[test]
fn truncate_to_keeps_a_snapshot_below_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    log.append(pbatch(PID, 0, 2, 2), 0, T0).unwrap();
    log.flush().unwrap(); // snapshot at 4
    log.append(pbatch(PID, 0, 4, 2), 0, T0).unwrap();
    log.append(pbatch(PID, 0, 6, 2), 0, T0).unwrap();
    log.truncate_to(6).unwrap();
    assert!(snapshot_path(dir.path(), 4).exists());
    // What a fresh replay of the remaining batches gives.
    let replay = tempfile::tempdir().unwrap();
    let other = open(replay.path());
    for seq in [0, 2, 4] {
        other.append(pbatch(PID, 0, seq, 2), 0, T0).unwrap();
    }
    assert_eq!(full_state(&log), full_state(&other));
    assert_eq!(state(&log, PID), Some((0, 4, 5, 4, 5)));
    assert!(log.append(pbatch(PID, 0, 2, 2), 0, T0).unwrap().duplicate);
}

#[test]
fn truncate_fully_forgets_every_producer_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    log.flush().unwrap();
    assert!(!snapshot_files(dir.path()).is_empty());
    log.truncate_fully_and_start_at(50).unwrap();
    assert_eq!(state(&log, PID), None);
    assert!(snapshot_files(dir.path()).is_empty());
    let info = log.append(pbatch(PID, 0, 0, 2), 0, T0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (50, false));
    drop(log);
    let log = open(dir.path());
    assert_eq!(state(&log, PID), Some((0, 0, 1, 50, 51)));
}

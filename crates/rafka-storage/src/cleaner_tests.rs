//! Tests of log compaction ([`PartitionLog::compact`]): one property per test.

use std::path::Path;

use bytes::BytesMut;

use super::*;
use crate::batch::test_support::{build_batch, build_compressed_batch, records_of, RecordSpec};
use crate::batch::{batches, verify_crc, BatchBuilder, BatchHeader};
use crate::CLEAN_SHUTDOWN_FILE;

/// A plausible wall-clock time for test timestamps.
const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 60 * 60 * 1000;
const NO_BOUND: i64 = i64::MAX;

/// `(offset, key, value)` as read back, keys and values as text.
type Kv = (i64, Option<String>, Option<String>);

fn compact_config() -> LogConfig {
    LogConfig {
        segment_ms: None,
        retention_ms: None,
        delete_retention: false,
        compact: true,
        delete_retention_ms: HOUR,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn open_with(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open log")
}

fn open(dir: &Path) -> PartitionLog {
    open_with(dir, compact_config())
}

/// Appends one batch of `(key, value)` records stamped `ts`; `None` value = tombstone.
fn put_all(log: &PartitionLog, records: &[(Option<&str>, Option<&str>)], ts: i64) {
    let specs: Vec<RecordSpec<'_>> = records
        .iter()
        .map(|(k, v)| (k.map(str::as_bytes), v.map(str::as_bytes), ts))
        .collect();
    log.append(build_batch(ts, &specs), 0, ts).expect("append");
}

fn put(log: &PartitionLog, key: &str, value: &str, ts: i64) {
    put_all(log, &[(Some(key), Some(value))], ts);
}

fn delete(log: &PartitionLog, key: &str, ts: i64) {
    put_all(log, &[(Some(key), None)], ts);
}

/// Every batch from the log start to the log end, as stored.
fn read_batches(log: &PartitionLog) -> Vec<BytesMut> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let result = log.read(offset, 1 << 20, end, true).expect("read");
        let mut progressed = false;
        for item in batches(&result.records) {
            let (header, range) = item.expect("valid batch");
            verify_crc(&result.records[range.clone()]).expect("valid CRC");
            out.push(BytesMut::from(&result.records[range]));
            offset = header.next_offset();
            progressed = true;
        }
        assert!(progressed, "no progress reading at offset {offset}");
    }
    out
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8(b).expect("utf-8"))
}

/// Every record of the log as `(offset, key, value)`.
fn read_all(log: &PartitionLog) -> Vec<Kv> {
    read_batches(log)
        .iter()
        .flat_map(|b| records_of(b))
        .map(|(offset, _, k, v)| (offset, text(k), text(v)))
        .collect()
}

fn kv(offset: i64, key: &str, value: Option<&str>) -> Kv {
    (offset, Some(key.to_string()), value.map(str::to_string))
}

fn compact(log: &PartitionLog, now: i64) -> CleanStats {
    log.compact(now, NO_BOUND)
        .expect("compaction")
        .expect("compaction was due")
}

/// Writes `rounds` rounds of `a`, `b`, `c` (value `<key><round>`), one
/// segment per round, then `z` in the active segment. Offsets: round r,
/// key i at `3r + i`; `z` at `3 * rounds`.
fn three_keys_in_rounds(log: &PartitionLog, rounds: usize) {
    for round in 0..rounds {
        for key in ["a", "b", "c"] {
            put(log, key, &format!("{key}{round}"), T0);
        }
        log.roll().unwrap();
    }
    put(log, "z", "active", T0);
}

#[test]
fn only_the_latest_value_of_each_key_survives_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    three_keys_in_rounds(&log, 4);

    let stats = compact(&log, T0);

    assert_eq!(
        read_all(&log),
        vec![
            kv(9, "a", Some("a3")),
            kv(10, "b", Some("b3")),
            kv(11, "c", Some("c3")),
            kv(12, "z", Some("active")),
        ]
    );
    assert_eq!(
        (
            stats.records_read,
            stats.records_kept,
            stats.records_removed
        ),
        (12, 3, 9)
    );
    assert_eq!(
        (stats.segments, stats.keys, stats.cleaned_up_to),
        (4, 3, 12)
    );
    assert!(stats.bytes_after < stats.bytes_before, "{stats:?}");
    assert!(!stats.abandoned);
}

#[test]
fn offsets_boundaries_and_reads_inside_gaps_are_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    three_keys_in_rounds(&log, 3);
    let bases = log.segment_base_offsets();

    compact(&log, T0);

    assert_eq!(log.segment_base_offsets(), bases);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 10));
    // Offsets 0, 1, 3, 4 are gone. Each segment keeps its last batch,
    // emptied when superseded: offsets 2 (c0) and 5 (c1).
    for (at, next) in [(0, 2), (1, 2), (3, 5), (4, 5)] {
        let read = log.read(at, 1 << 20, 10, true).unwrap().records;
        let first = BatchHeader::parse(&read).unwrap();
        assert_eq!(
            (first.base_offset, first.records_count),
            (next, 0),
            "read at {at}"
        );
    }
    let read = log.read(6, 1 << 20, 10, true).unwrap().records;
    assert_eq!(records_of(&read)[0].0, 6);
}

#[test]
fn the_active_segment_and_offsets_from_the_bound_on_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    three_keys_in_rounds(&log, 3);
    put(&log, "z", "active again", T0);

    // Only the first segment (offsets 0..3) lies below the bound.
    let stats = log.compact(T0, 5).unwrap().expect("due");
    assert_eq!((stats.segments, stats.records_removed), (1, 0));
    assert_eq!(read_all(&log).len(), 11);

    compact(&log, T0);
    let all = read_all(&log);
    assert_eq!(
        &all[3..],
        &[
            kv(9, "z", Some("active")),
            kv(10, "z", Some("active again"))
        ],
        "the active segment keeps both z records"
    );
}

#[test]
fn tombstones_survive_until_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    put(&log, "a", "1", T0);
    put(&log, "b", "1", T0);
    delete(&log, "a", T0);
    log.roll().unwrap();
    put(&log, "z", "active", T0);

    compact(&log, T0 + HOUR / 2);
    assert_eq!(
        read_all(&log),
        vec![
            kv(1, "b", Some("1")),
            kv(2, "a", None),
            kv(3, "z", Some("active"))
        ]
    );

    // Nothing new is dirty, but the tombstone's deadline makes a pass due.
    assert!(log.compact(T0 + HOUR, NO_BOUND).unwrap().is_none());
    let stats = compact(&log, T0 + HOUR + 1);
    assert_eq!(stats.tombstones_removed, 1);
    assert_eq!(
        read_all(&log),
        vec![kv(1, "b", Some("1")), kv(3, "z", Some("active"))]
    );
    assert!(log.compact(T0 + 2 * HOUR, NO_BOUND).unwrap().is_none());
}

#[test]
fn a_tombstone_expires_by_its_segment_timestamp_in_the_same_pass() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    put(&log, "a", "1", T0);
    delete(&log, "a", T0);
    put(&log, "b", "1", T0);
    log.roll().unwrap();
    put(&log, "z", "active", T0);

    let stats = compact(&log, T0 + 2 * HOUR);
    assert_eq!((stats.tombstones_removed, stats.records_removed), (1, 2));
    assert_eq!(
        read_all(&log),
        vec![kv(2, "b", Some("1")), kv(3, "z", Some("active"))]
    );
}

#[test]
fn compressed_batches_are_rewritten_with_their_codec() {
    for codec in 1..=4u8 {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let specs: Vec<RecordSpec<'_>> = vec![
            (Some(b"a"), Some(b"1"), T0),
            (Some(b"b"), Some(b"1"), T0 + 5),
            (Some(b"a"), Some(b"2"), T0 + 9),
            (Some(b"c"), Some(b"1"), T0 + 7),
        ];
        log.append(build_compressed_batch(codec, T0, &specs), 0, T0)
            .unwrap();
        put(&log, "c", "2", T0);
        log.roll().unwrap();
        put(&log, "z", "active", T0);

        compact(&log, T0);

        let stored = read_batches(&log);
        let header = BatchHeader::parse(&stored[0]).unwrap();
        assert_eq!(header.compression(), codec, "codec {codec}");
        assert_eq!(
            (
                header.base_offset,
                header.last_offset_delta,
                header.records_count
            ),
            (0, 3, 2)
        );
        assert_eq!(
            (
                header.base_timestamp,
                header.max_timestamp,
                header.partition_leader_epoch
            ),
            (T0, T0 + 9, 0)
        );
        assert_eq!(
            read_all(&log),
            vec![
                kv(1, "b", Some("1")),
                kv(2, "a", Some("2")),
                kv(4, "c", Some("2")),
                kv(5, "z", Some("active")),
            ],
            "codec {codec}"
        );
    }
}

/// One idempotent batch of producer 7, epoch 0, with `records` (key, value).
fn idempotent_batch(sequence: i32, records: &[(&str, &str)]) -> BytesMut {
    let mut builder = BatchBuilder::new().producer(7, 0, sequence);
    for (k, v) in records {
        builder.push(T0, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
    }
    builder.build()
}

#[test]
fn an_idempotent_producers_last_batch_survives_emptied_and_rebuilds_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(idempotent_batch(0, &[("k", "1"), ("j", "1")]), 0, T0)
        .unwrap();
    log.append(idempotent_batch(2, &[("k", "2")]), 0, T0)
        .unwrap();
    put(&log, "k", "3", T0);
    put(&log, "j", "2", T0);
    log.roll().unwrap();
    put(&log, "z", "active", T0);
    let before = log.producer_state(7).expect("producer known");

    compact(&log, T0);

    let stored: Vec<BatchHeader> = read_batches(&log)
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap())
        .collect();
    let emptied = stored.iter().find(|h| h.producer_id == 7).expect("kept");
    assert_eq!(
        (
            emptied.base_offset,
            emptied.records_count,
            emptied.base_sequence
        ),
        (2, 0, 2)
    );
    assert_eq!(stored.len(), 4, "the first producer batch went: {stored:?}");

    // A rebuild from the log alone (no snapshot) finds the same state.
    log.close().unwrap();
    drop(log);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let log = open(dir.path());
    assert_eq!(log.producer_state(7), Some(before));
    log.append(idempotent_batch(3, &[("k", "4")]), 0, T0)
        .expect("the next sequence is accepted");
}

#[test]
fn records_without_a_key_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    put_all(&log, &[(None, Some("keyless")), (Some("a"), Some("1"))], T0);
    put(&log, "a", "2", T0);
    log.roll().unwrap();
    put(&log, "z", "active", T0);

    compact(&log, T0);

    assert_eq!(
        read_all(&log),
        vec![
            (0, None, Some("keyless".to_string())),
            kv(2, "a", Some("2")),
            kv(3, "z", Some("active")),
        ]
    );
}

#[test]
fn the_dirty_ratio_gates_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            ..compact_config()
        },
    );
    three_keys_in_rounds(&log, 4);
    let first = compact(&log, T0);
    assert_eq!(first.dirty_ratio, 1.0);
    assert!(
        log.compact(T0, NO_BOUND).unwrap().is_none(),
        "nothing dirty"
    );

    // One small dirty segment after the (now small) clean ones.
    log.roll().unwrap();
    put(&log, "a", "new", T0);
    log.roll().unwrap();
    assert!(
        log.compact(T0, NO_BOUND).unwrap().is_none(),
        "ratio below 0.5"
    );
    for value in ["x", "y", "w", "v"] {
        put(&log, "b", value, T0);
        log.roll().unwrap();
    }
    let stats = compact(&log, T0);
    assert!(stats.dirty_ratio >= 0.5, "{stats:?}");
    assert_eq!(stats.first_dirty_offset, 12);
}

#[test]
fn the_checkpoint_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    three_keys_in_rounds(&log, 2);
    compact(&log, T0);
    log.close().unwrap();
    drop(log);

    let log = open(dir.path());
    assert!(
        log.compact(T0, NO_BOUND).unwrap().is_none(),
        "nothing dirty after restart"
    );
}

#[test]
fn segments_younger_than_the_min_compaction_lag_stay_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            min_compaction_lag_ms: HOUR,
            ..compact_config()
        },
    );
    put(&log, "a", "old", T0);
    log.roll().unwrap();
    put(&log, "a", "new", T0 + HOUR);
    log.roll().unwrap();
    put(&log, "z", "active", T0 + HOUR);

    let stats = compact(&log, T0 + HOUR + 1);
    assert_eq!((stats.segments, stats.cleaned_up_to), (1, 1));
    assert_eq!(
        read_all(&log).len(),
        3,
        "a=old is only superseded by a lagging record"
    );

    compact(&log, T0 + 2 * HOUR + 1);
    assert_eq!(
        read_all(&log),
        vec![kv(1, "a", Some("new")), kv(2, "z", Some("active"))]
    );
}

#[test]
fn a_full_key_map_cleans_the_dirty_range_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    three_keys_in_rounds(&log, 3);

    let first = log.compact_bounded(T0, NO_BOUND, 1).unwrap().expect("due");
    assert_eq!(first.cleaned_up_to, 3, "only the first dirty segment fits");
    let second = log.compact_bounded(T0, NO_BOUND, 1).unwrap().expect("due");
    assert_eq!((second.first_dirty_offset, second.cleaned_up_to), (3, 6));
    log.compact_bounded(T0, NO_BOUND, 1).unwrap().expect("due");
    assert_eq!(
        read_all(&log),
        vec![
            kv(6, "a", Some("a2")),
            kv(7, "b", Some("b2")),
            kv(8, "c", Some("c2")),
            kv(9, "z", Some("active")),
        ]
    );
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// A log of three rounds, closed, and a copy of its directory.
fn closed_log_and_copy() -> (tempfile::TempDir, tempfile::TempDir) {
    let original = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let log = open(original.path());
    three_keys_in_rounds(&log, 3);
    log.close().unwrap();
    for entry in std::fs::read_dir(original.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    (original, copy)
}

#[test]
fn an_unfinished_cleaned_segment_is_discarded_on_open() {
    let (dir, _) = closed_log_and_copy();
    for ext in ["log", "index", "timeindex"] {
        std::fs::write(
            dir.path().join(format!("{:020}.{ext}.cleaned", 0)),
            b"half written",
        )
        .unwrap();
    }
    let log = open(dir.path());
    assert!(files_with_suffix(dir.path(), ".cleaned").is_empty());
    assert_eq!(read_all(&log).len(), 10);
}

#[test]
fn a_committed_swap_is_finished_on_open() {
    // Compact one copy; give the other the cleaned first segment as `.swap`
    // files, as if it crashed at the commit point.
    let (dir, crashed) = closed_log_and_copy();
    let log = open(dir.path());
    compact(&log, T0);
    let expected = read_all(&log);
    log.close().unwrap();
    for ext in ["log", "index", "timeindex"] {
        let name = format!("{:020}.{ext}", 0);
        std::fs::copy(
            dir.path().join(&name),
            crashed.path().join(format!("{name}.swap")),
        )
        .unwrap();
    }
    // A swap that never committed (index `.swap` without the log's) goes.
    std::fs::write(
        crashed.path().join(format!("{:020}.index.swap", 3)),
        b"junk",
    )
    .unwrap();
    std::fs::remove_file(crashed.path().join(CLEAN_SHUTDOWN_FILE)).unwrap();

    let log = open(crashed.path());
    assert!(files_with_suffix(crashed.path(), ".swap").is_empty());
    let kept: Vec<i64> = read_all(&log).iter().map(|r| r.0).collect();
    assert_eq!(
        kept,
        vec![3, 4, 5, 6, 7, 8, 9],
        "segment 0 is the cleaned one"
    );
    assert_eq!(read_all(&log)[3..], expected[..]);
}

#[test]
fn compaction_after_a_truncation_maps_the_data_appended_since() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    three_keys_in_rounds(&log, 3);
    log.truncate_to(4).unwrap();
    put(&log, "a", "after truncation", T0);
    log.roll().unwrap();
    put(&log, "z", "active", T0);

    compact(&log, T0);
    assert_eq!(
        read_all(&log),
        vec![
            kv(1, "b", Some("b0")),
            kv(2, "c", Some("c0")),
            kv(4, "a", Some("after truncation")),
            kv(5, "z", Some("active")),
        ]
    );
}

#[test]
fn a_log_without_the_compact_policy_is_never_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            compact: false,
            ..compact_config()
        },
    );
    three_keys_in_rounds(&log, 2);
    assert!(log.compact(T0, NO_BOUND).unwrap().is_none());
    assert_eq!(read_all(&log).len(), 7);
}

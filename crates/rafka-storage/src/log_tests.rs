//! Tests of [`PartitionLog`]: one property per test, named for it.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::batch::test_support::{
    all_records, build_batch, opaque_compressed_batch, records_of, simple_batch, OwnedRecord,
};
use crate::batch::{batches, verify_crc, BatchHeader};
use crate::config::PREALLOCATE_STEP;

/// A plausible wall-clock time for test timestamps.
const T0: i64 = 1_700_000_000_000;

fn test_config() -> LogConfig {
    LogConfig {
        segment_ms: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open_with(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open log")
}

fn open(dir: &Path) -> PartitionLog {
    open_with(dir, test_config())
}

fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Size of one `simple_batch(1, _)`.
fn one_record_batch_size() -> usize {
    simple_batch(1, T0).len()
}

fn headers(buf: &[u8]) -> Vec<BatchHeader> {
    batches(buf).map(|b| b.expect("valid batch").0).collect()
}

/// Every record from the log start to the log end, following segments.
fn read_everything(log: &PartitionLog) -> Vec<OwnedRecord> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let result = log.read(offset, 1 << 20, end, true).expect("read");
        let got = all_records(&result.records);
        assert!(!got.is_empty(), "no progress reading at offset {offset}");
        let last_batch = headers(&result.records).last().copied().expect("a batch");
        out.extend(got.into_iter().filter(|r| r.0 >= offset));
        offset = last_batch.next_offset();
    }
    out
}

fn offsets(records: &[OwnedRecord]) -> Vec<i64> {
    records.iter().map(|r| r.0).collect()
}

fn concat(parts: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

fn append_garbage(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

// ---------------------------------------------------------------------------
// Append and read
// ---------------------------------------------------------------------------

#[test]
fn append_assigns_consecutive_offsets_and_reads_back_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let first = log
        .append(
            build_batch(
                T0,
                &[
                    (Some(b"k0"), Some(b"v0"), T0),
                    (None, Some(b"v1"), T0 + 1),
                    (None, None, T0 + 2),
                ],
            ),
            0,
            T0,
        )
        .unwrap();
    let second = log.append(simple_batch(2, T0 + 10), 0, T0).unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    assert_eq!(first.log_append_time, -1);
    assert_eq!(first.max_timestamp, T0 + 2);
    assert_eq!(log.log_end_offset(), 5);

    let result = log.read(0, 1 << 20, 5, true).unwrap();
    assert_eq!((result.log_start_offset, result.log_end_offset), (0, 5));
    let records = all_records(&result.records);
    assert_eq!(offsets(&records), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        records[0],
        (0, T0, Some(b"k0".to_vec()), Some(b"v0".to_vec()))
    );
    assert_eq!(records[2], (2, T0 + 2, None, None));
    assert_eq!(records[4].3.as_deref(), Some(&b"value-1"[..]));
}

#[test]
fn one_append_of_several_batches_numbers_them_consecutively() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let info = log
        .append(
            concat(&[
                &simple_batch(3, T0),
                &simple_batch(2, T0),
                &simple_batch(1, T0),
            ]),
            0,
            T0,
        )
        .unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batch_count),
        (0, 5, 3)
    );
    let result = log.read(0, 1 << 20, 6, true).unwrap();
    let bases: Vec<i64> = headers(&result.records)
        .iter()
        .map(|h| h.base_offset)
        .collect();
    assert_eq!(bases, vec![0, 3, 5]);
    assert_eq!(info.bytes, result.records.len());
}

#[test]
fn append_stamps_the_leader_epoch_and_keeps_the_crc_valid() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 7, T0).unwrap();
    let result = log.read(0, 1 << 20, 2, true).unwrap();
    let h = headers(&result.records)[0];
    assert_eq!(h.partition_leader_epoch, 7);
    verify_crc(&result.records[..h.total_size()]).unwrap();
}

#[test]
fn read_from_the_middle_of_a_batch_returns_that_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(5, T0), 0, T0).unwrap();
    log.append(simple_batch(5, T0), 0, T0).unwrap();
    let result = log.read(7, 1 << 20, 10, true).unwrap();
    let hs = headers(&result.records);
    assert_eq!(hs.len(), 1);
    assert_eq!((hs[0].base_offset, hs[0].last_offset()), (5, 9));
}

#[test]
fn read_never_returns_a_batch_reaching_the_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..3 {
        log.append(simple_batch(5, T0), 0, T0).unwrap();
    }
    let to_ten = log.read(0, 1 << 20, 10, true).unwrap();
    assert_eq!(
        offsets(&all_records(&to_ten.records)),
        (0..10).collect::<Vec<_>>()
    );
    let to_seven = log.read(0, 1 << 20, 7, true).unwrap();
    assert_eq!(
        offsets(&all_records(&to_seven.records)),
        (0..5).collect::<Vec<_>>()
    );
    let inside = log.read(5, 1 << 20, 7, true).unwrap();
    assert!(inside.records.is_empty(), "batch 5..9 crosses the bound 7");
}

#[test]
fn read_returns_only_whole_batches_that_fit_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let size = simple_batch(3, T0).len();
    for _ in 0..4 {
        log.append(simple_batch(3, T0), 0, T0).unwrap();
    }
    let result = log.read(0, 2 * size + size / 2, 12, true).unwrap();
    assert_eq!(result.records.len(), 2 * size);
    assert_eq!(headers(&result.records).len(), 2);
}

#[test]
fn first_batch_larger_than_max_bytes_is_returned_only_with_min_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(10, T0), 0, T0).unwrap();
    log.append(simple_batch(10, T0), 0, T0).unwrap();
    let whole = log.read(0, 10, 20, true).unwrap();
    assert_eq!(
        headers(&whole.records).len(),
        1,
        "exactly the first batch, whole"
    );
    let none = log.read(0, 10, 20, false).unwrap();
    assert!(none.records.is_empty());
}

#[test]
fn read_at_the_log_end_or_the_upper_bound_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(
        log.read(0, 100, 0, true).unwrap().records.is_empty(),
        "empty log"
    );
    log.append(simple_batch(3, T0), 0, T0).unwrap();
    assert!(log.read(3, 100, 3, true).unwrap().records.is_empty());
    assert!(
        log.read(2, 100, 2, true).unwrap().records.is_empty(),
        "offset == upper bound"
    );
}

#[test]
fn read_outside_the_log_is_offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(3, T0), 0, T0).unwrap();
    match log.read(4, 100, 4, true) {
        Err(StorageError::OffsetOutOfRange {
            offset: 4,
            log_start: 0,
            log_end: 3,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        log.read(-1, 100, 3, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let message = log.read(9, 100, 9, true).unwrap_err().to_string();
    assert!(message.contains('9') && message.contains('3'), "{message}");
}

#[test]
fn index_lookups_find_every_offset_among_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            index_interval_bytes: 200,
            ..test_config()
        },
    );
    for i in 0..300usize {
        log.append(simple_batch(1 + i % 3, T0), 0, T0).unwrap();
    }
    let leo = log.log_end_offset();
    for offset in 0..leo {
        let result = log.read(offset, 1, leo, true).unwrap();
        let h = headers(&result.records)[0];
        assert!(
            h.base_offset <= offset && offset <= h.last_offset(),
            "offset {offset} in batch {h:?}"
        );
    }
    log.flush().unwrap();
    let index_len = file_len(&segment_path(dir.path(), 0, "index"));
    assert!(index_len > 0, "index has entries");
    assert_eq!(index_len % 8, 0, "index length {index_len}");
    let time_len = file_len(&segment_path(dir.path(), 0, "timeindex"));
    assert_eq!(time_len % 12, 0);
}

#[test]
fn every_offset_is_readable_across_rolled_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 1000,
            index_interval_bytes: 100,
            ..test_config()
        },
    );
    for _ in 0..100 {
        log.append(simple_batch(2, T0), 0, T0).unwrap();
    }
    assert!(log.segment_count() > 5);
    assert_eq!(
        offsets(&read_everything(&log)),
        (0..200).collect::<Vec<_>>()
    );
    for offset in [0, 1, 57, 99, 100, 150, 199] {
        let h = headers(&log.read(offset, 1, 200, true).unwrap().records)[0];
        assert!(h.base_offset <= offset && offset <= h.last_offset());
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[test]
fn corrupt_crc_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut batch = simple_batch(3, T0);
    let last = batch.len() - 1;
    batch[last] ^= 0x55;
    let err = log.append(batch, 0, T0).unwrap_err();
    assert!(matches!(err, StorageError::CorruptBatch { .. }), "{err}");
    assert!(err.to_string().contains("CRC"), "{err}");
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(file_len(&segment_path(dir.path(), 0, "log")), 0);
}

#[test]
fn one_bad_batch_rejects_the_whole_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let good = simple_batch(2, T0);
    let mut bad = simple_batch(2, T0);
    bad[30] ^= 0x01;
    assert!(log.append(concat(&[&good, &bad]), 0, T0).is_err());
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn truncated_input_or_trailing_bytes_reject_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let good = simple_batch(2, T0);
    let cut = BytesMut::from(&good[..good.len() - 3]);
    let err = log.append(cut, 0, T0).unwrap_err();
    assert!(err.to_string().contains("only"), "{err}");
    let trailing = concat(&[&good, b"0123456789"]);
    let err = log.append(trailing, 0, T0).unwrap_err();
    assert!(err.to_string().contains("truncated input"), "{err}");
    assert!(
        log.append(BytesMut::new(), 0, T0).is_err(),
        "empty record set"
    );
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn batch_larger_than_max_message_bytes_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..test_config()
        },
    );
    let big = build_batch(T0, &[(None, Some(&[7u8; 500]), T0)]);
    let size = big.len();
    match log.append(big, 0, T0) {
        Err(StorageError::MessageTooLarge { size: s, max: 200 }) => assert_eq!(s, size),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn zero_records_or_a_wrong_magic_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let empty = crate::batch::BatchBuilder::new().base_timestamp(T0).build();
    let err = log.append(empty, 0, T0).unwrap_err();
    assert!(err.to_string().contains("records count 0"), "{err}");
    let mut old = simple_batch(1, T0);
    old[16] = 1;
    let err = log.append(old, 0, T0).unwrap_err();
    assert!(err.to_string().contains("magic 1"), "{err}");
}

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

#[test]
fn offset_for_timestamp_finds_the_exact_record_in_an_uncompressed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap(); // offsets 0-1 at T0
    log.append(
        build_batch(
            T0 + 100,
            &[
                (None, Some(b"a"), T0 + 100),
                (None, Some(b"b"), T0 + 300),
                (None, Some(b"c"), T0 + 200),
                (None, Some(b"d"), T0 + 400),
            ],
        ),
        0,
        T0,
    )
    .unwrap(); // offsets 2-5
    assert_eq!(log.offset_for_timestamp(T0).unwrap(), Some((0, T0)));
    assert_eq!(
        log.offset_for_timestamp(T0 + 50).unwrap(),
        Some((2, T0 + 100))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 150).unwrap(),
        Some((3, T0 + 300)),
        "first offset, not smallest timestamp"
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 400).unwrap(),
        Some((5, T0 + 400))
    );
    assert_eq!(log.offset_for_timestamp(T0 + 401).unwrap(), None);
}

#[test]
fn offset_for_timestamp_answers_the_base_offset_of_a_compressed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(3, T0), 0, T0).unwrap(); // 0-2
    log.append(
        opaque_compressed_batch(1, T0 + 200, T0 + 500, 4, b"not really gzip"),
        0,
        T0,
    )
    .unwrap(); // 3-6
    assert_eq!(
        log.offset_for_timestamp(T0 + 300).unwrap(),
        Some((3, T0 + 500))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 500).unwrap(),
        Some((3, T0 + 500))
    );
    assert_eq!(log.offset_for_timestamp(T0 + 501).unwrap(), None);
}

#[test]
fn log_append_time_overwrites_timestamps_and_answers_lookups_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..test_config()
        },
    );
    let append_time = T0 + 5_000;
    let info = log.append(simple_batch(3, T0), 0, append_time).unwrap();
    assert_eq!(
        (info.log_append_time, info.max_timestamp),
        (append_time, append_time)
    );
    let result = log.read(0, 1 << 20, 3, true).unwrap();
    let h = headers(&result.records)[0];
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, append_time);
    verify_crc(&result.records[..h.total_size()]).unwrap();
    assert!(records_of(&result.records)
        .iter()
        .all(|r| r.1 == append_time));
    assert_eq!(
        log.offset_for_timestamp(T0 + 10).unwrap(),
        Some((0, append_time))
    );
    assert_eq!(log.offset_for_timestamp(append_time + 1).unwrap(), None);
}

#[test]
fn offset_for_timestamp_uses_the_time_index_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 2000,
            index_interval_bytes: 150,
            ..test_config()
        },
    );
    for i in 0..200i64 {
        let ts = T0 + i * 10;
        log.append(
            build_batch(ts, &[(None, Some(b"x"), ts), (None, Some(b"y"), ts + 5)]),
            0,
            T0,
        )
        .unwrap();
    }
    assert!(log.segment_count() > 5);
    for i in (0..200i64).step_by(7) {
        let ts = T0 + i * 10;
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            Some((2 * i, ts)),
            "exact ts of batch {i}"
        );
        assert_eq!(
            log.offset_for_timestamp(ts + 3).unwrap(),
            Some((2 * i + 1, ts + 5)),
            "inside batch {i}"
        );
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, T0)));
}

#[test]
fn max_timestamp_and_offset_points_at_the_first_record_with_the_largest_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.max_timestamp_and_offset(), (-1, -1));
    log.append(
        build_batch(T0, &[(None, Some(b"a"), T0), (None, Some(b"b"), T0 + 100)]),
        0,
        T0,
    )
    .unwrap();
    log.append(
        build_batch(
            T0,
            &[(None, Some(b"c"), T0 + 900), (None, Some(b"d"), T0 + 300)],
        ),
        0,
        T0,
    )
    .unwrap();
    log.append(build_batch(T0, &[(None, Some(b"e"), T0 + 400)]), 0, T0)
        .unwrap();
    assert_eq!(log.max_timestamp_and_offset(), (T0 + 900, 2));
}

// ---------------------------------------------------------------------------
// Segments and retention
// ---------------------------------------------------------------------------

#[test]
fn segment_rolls_when_the_next_append_would_exceed_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let size = one_record_batch_size() as u64;
    let log = open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 3 * size,
            ..test_config()
        },
    );
    for _ in 0..7 {
        log.append(simple_batch(1, T0), 0, T0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 6]);
    for base in [0, 3, 6] {
        assert!(segment_path(dir.path(), base, "log").exists());
        assert!(segment_path(dir.path(), base, "index").exists());
        assert!(segment_path(dir.path(), base, "timeindex").exists());
    }
    assert_eq!(file_len(&segment_path(dir.path(), 0, "log")), 3 * size);
    assert_eq!(log.size_bytes(), 7 * size);
}

#[test]
fn segment_rolls_by_age_on_append_and_in_maybe_roll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(
        dir.path(),
        LogConfig {
            segment_ms: Some(1000),
            ..test_config()
        },
    );
    log.maybe_roll(T0 + 1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1, "an empty segment never rolls");
    log.append(simple_batch(1, T0), 0, T0).unwrap();
    log.append(simple_batch(1, T0 + 500), 0, T0 + 500).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(simple_batch(1, T0 + 1500), 0, T0 + 1500)
        .unwrap();
    assert_eq!(
        log.segment_base_offsets(),
        vec![0, 2],
        "producer time moved 1500 ms past the first batch"
    );
    log.maybe_roll(T0 + 2000).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.maybe_roll(T0 + 2600).unwrap();
    assert_eq!(
        log.segment_base_offsets(),
        vec![0, 2, 3],
        "active segment older than segment_ms"
    );
}

/// One batch per segment, batch `i` at `T0 + i * 1000`.
fn log_with_one_batch_per_segment(dir: &Path, segments: i64, config: LogConfig) -> PartitionLog {
    let size = one_record_batch_size() as u64;
    let log = open_with(
        dir,
        LogConfig {
            segment_bytes: size,
            ..config
        },
    );
    for i in 0..segments {
        log.append(simple_batch(1, T0 + i * 1000), 0, T0).unwrap();
    }
    assert_eq!(log.segment_count() as i64, segments);
    log
}

#[test]
fn retention_by_time_deletes_expired_segments_and_advances_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_one_batch_per_segment(
        dir.path(),
        5,
        LogConfig {
            retention_ms: Some(2500),
            ..test_config()
        },
    );
    let deleted = log.apply_retention(T0 + 5000).unwrap();
    assert_eq!(deleted, 3, "segments with max timestamp before T0+2500");
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.segment_base_offsets(), vec![3, 4]);
    assert!(!segment_path(dir.path(), 0, "log").exists());
    assert!(!segment_path(dir.path(), 2, "index").exists());
    assert!(matches!(
        log.read(2, 100, 5, true),
        Err(StorageError::OffsetOutOfRange { log_start: 3, .. })
    ));
    assert_eq!(offsets(&read_everything(&log)), vec![3, 4]);
}

#[test]
fn retention_by_size_keeps_at_least_retention_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let size = one_record_batch_size() as u64;
    let log = log_with_one_batch_per_segment(
        dir.path(),
        6,
        LogConfig {
            retention_bytes: Some(2 * size + size / 2),
            ..test_config()
        },
    );
    assert_eq!(log.apply_retention(T0).unwrap(), 3);
    assert_eq!(log.size_bytes(), 3 * size);
    assert_eq!(log.log_start_offset(), 3);
}

#[test]
fn retention_does_nothing_without_the_delete_policy() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_one_batch_per_segment(
        dir.path(),
        4,
        LogConfig {
            retention_ms: Some(1),
            retention_bytes: Some(1),
            delete_retention: false,
            ..test_config()
        },
    );
    assert_eq!(log.apply_retention(T0 + 1_000_000).unwrap(), 0);
    assert_eq!(log.segment_count(), 4);
}

#[test]
fn retention_of_every_segment_rolls_and_keeps_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_one_batch_per_segment(
        dir.path(),
        3,
        LogConfig {
            retention_ms: Some(1000),
            ..test_config()
        },
    );
    assert_eq!(log.apply_retention(T0 + 1_000_000).unwrap(), 3);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
    assert_eq!(log.segment_base_offsets(), vec![3]);
    let info = log.append(simple_batch(1, T0 + 1_000_000), 0, T0).unwrap();
    assert_eq!(info.base_offset, 3);
}

#[test]
fn retention_never_deletes_past_the_upper_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_one_batch_per_segment(
        dir.path(),
        5,
        LogConfig {
            retention_ms: Some(1),
            ..test_config()
        },
    );
    assert_eq!(
        log.apply_retention_up_to(T0 + 1_000_000, 2).unwrap(),
        2,
        "segments ending at or below offset 2"
    );
    assert_eq!(log.log_start_offset(), 2);
}

#[test]
fn advanced_log_start_hides_offsets_and_lets_retention_drop_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_one_batch_per_segment(dir.path(), 4, test_config());
    assert!(log.advance_log_start_offset(2).unwrap());
    assert!(matches!(
        log.read(1, 100, 4, true),
        Err(StorageError::OffsetOutOfRange { log_start: 2, .. })
    ));
    assert_eq!(log.apply_retention(T0).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![2, 3]);
    assert!(matches!(
        log.advance_log_start_offset(9),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let reopened = open(dir.path());
    assert_eq!(reopened.log_start_offset(), 2);
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

#[test]
fn recovery_truncates_garbage_after_the_last_complete_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..3 {
        log.append(simple_batch(2, T0), 0, T0).unwrap();
    }
    let good_len = log.size_bytes();
    drop(log); // no close: like kill -9
    let path = segment_path(dir.path(), 0, "log");
    append_garbage(&path, &[0xAB; 100]);

    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(file_len(&path), good_len);
    assert_eq!(offsets(&read_everything(&log)), (0..6).collect::<Vec<_>>());
    assert_eq!(
        log.append(simple_batch(1, T0), 0, T0).unwrap().base_offset,
        6
    );
}

#[test]
fn recovery_drops_a_half_written_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    let good_len = log.size_bytes();
    log.append(simple_batch(4, T0), 0, T0).unwrap();
    let full_len = log.size_bytes();
    drop(log);
    let path = segment_path(dir.path(), 0, "log");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(good_len + (full_len - good_len) / 2).unwrap();
    drop(file);

    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(file_len(&path), good_len);
    assert_eq!(offsets(&read_everything(&log)), vec![0, 1, 2, 3]);
    let info = log.append(simple_batch(1, T0), 0, T0).unwrap();
    assert_eq!(info.base_offset, 4);
    assert_eq!(offsets(&read_everything(&log)), vec![0, 1, 2, 3, 4]);
}

#[test]
fn recovery_stops_at_a_corrupt_batch_and_drops_every_later_segment() {
    let dir = tempfile::tempdir().unwrap();
    let size = one_record_batch_size() as u64;
    let log = open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 3 * size,
            ..test_config()
        },
    );
    for _ in 0..9 {
        log.append(simple_batch(1, T0), 0, T0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 6]);
    drop(log);
    // Flip a byte inside the second batch of the middle segment (offset 4).
    let path = segment_path(dir.path(), 3, "log");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = size as usize + 40;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let log = open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 3 * size,
            ..test_config()
        },
    );
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    assert!(!segment_path(dir.path(), 6, "log").exists());
    assert_eq!(offsets(&read_everything(&log)), vec![0, 1, 2, 3]);
}

#[test]
fn recovery_rebuilds_the_epoch_cache_beyond_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 1, T0).unwrap(); // 0-1, epoch 1
    let good_len = log.size_bytes();
    log.append(simple_batch(2, T0), 2, T0).unwrap(); // 2-3, epoch 2
    assert_eq!(log.latest_epoch(), Some(2));
    drop(log);
    let path = segment_path(dir.path(), 0, "log");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(good_len + 10).unwrap();
    drop(file);

    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(
        log.leader_epoch_entries(),
        vec![EpochEntry {
            epoch: 1,
            start_offset: 0
        }]
    );
    let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n1\n1 0\n");
}

#[test]
fn flush_records_the_recovery_point_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(5, T0), 0, T0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 5);
    let text =
        std::fs::read_to_string(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    assert_eq!(text, "0\n1\n5\n");
}

#[test]
fn a_corrupt_index_below_the_recovery_point_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2000,
        index_interval_bytes: 100,
        ..test_config()
    };
    let log = open_with(dir.path(), config.clone());
    for _ in 0..60 {
        log.append(simple_batch(2, T0), 0, T0).unwrap();
    }
    log.flush().unwrap();
    drop(log);
    let index = segment_path(dir.path(), 0, "index");
    let good = std::fs::read(&index).unwrap();
    assert!(!good.is_empty());
    std::fs::write(&index, [0xffu8; 13]).unwrap();

    let log = open_with(dir.path(), config);
    assert_eq!(
        std::fs::read(&index).unwrap(),
        good,
        "index rebuilt to the same entries"
    );
    assert_eq!(
        offsets(&read_everything(&log)),
        (0..120).collect::<Vec<_>>()
    );
}

#[test]
fn reopen_after_clean_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1500,
        index_interval_bytes: 100,
        ..test_config()
    };
    let log = open_with(dir.path(), config.clone());
    for i in 0..50i64 {
        log.append(simple_batch(2, T0 + i), (i / 20) as i32, T0)
            .unwrap();
    }
    log.checkpoint_high_watermark(90).unwrap();
    let before = (
        read_everything(&log),
        log.segment_base_offsets(),
        log.leader_epoch_entries(),
        log.max_timestamp_and_offset(),
        log.offset_for_timestamp(T0 + 33).unwrap(),
    );
    let index_before = std::fs::read(segment_path(dir.path(), 0, "index")).unwrap();
    log.close().unwrap();
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    drop(log);

    let log = open_with(dir.path(), config);
    assert!(
        !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "marker consumed by open"
    );
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(log.recovery_point(), 100);
    assert_eq!(log.checkpointed_high_watermark(), Some(90));
    let after = (
        read_everything(&log),
        log.segment_base_offsets(),
        log.leader_epoch_entries(),
        log.max_timestamp_and_offset(),
        log.offset_for_timestamp(T0 + 33).unwrap(),
    );
    assert_eq!(after, before);
    assert_eq!(
        std::fs::read(segment_path(dir.path(), 0, "index")).unwrap(),
        index_before
    );
    assert_eq!(
        log.append(simple_batch(1, T0), 2, T0).unwrap().base_offset,
        100
    );
}

#[test]
fn a_missing_index_after_clean_close_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 100,
        ..test_config()
    };
    let log = open_with(dir.path(), config.clone());
    for _ in 0..30 {
        log.append(simple_batch(2, T0), 0, T0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let index = segment_path(dir.path(), 0, "index");
    let good = std::fs::read(&index).unwrap();
    std::fs::remove_file(&index).unwrap();

    let log = open_with(dir.path(), config);
    assert_eq!(std::fs::read(&index).unwrap(), good);
    assert_eq!(log.log_end_offset(), 60);
}

#[test]
fn a_lost_epoch_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    log.append(simple_batch(2, T0), 3, T0).unwrap();
    log.close().unwrap();
    drop(log);
    std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).unwrap();

    let log = open(dir.path());
    assert_eq!(
        log.leader_epoch_entries(),
        vec![
            EpochEntry {
                epoch: 0,
                start_offset: 0
            },
            EpochEntry {
                epoch: 3,
                start_offset: 2
            }
        ]
    );
}

#[test]
fn open_removes_leftover_temp_files_and_orphan_indexes() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    std::fs::write(dir.path().join("high-watermark.tmp"), "junk").unwrap();
    std::fs::write(segment_path(dir.path(), 500, "index"), [0u8; 8]).unwrap();
    let log = open(dir.path());
    assert!(!dir.path().join("high-watermark.tmp").exists());
    assert!(!segment_path(dir.path(), 500, "index").exists());
    assert_eq!(log.segment_base_offsets(), vec![0]);
}

#[test]
fn closed_log_refuses_writes_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append(simple_batch(1, T0), 0, T0),
        Err(StorageError::Closed { .. })
    ));
    assert!(matches!(
        log.truncate_to(0),
        Err(StorageError::Closed { .. })
    ));
    assert_eq!(
        all_records(&log.read(0, 1000, 2, true).unwrap().records).len(),
        2
    );
}

// ---------------------------------------------------------------------------
// Leader epochs, replication, truncation
// ---------------------------------------------------------------------------

#[test]
fn end_offset_for_epoch_reports_where_each_epoch_ended() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.latest_epoch(), None);
    log.append(simple_batch(3, T0), 0, T0).unwrap(); // 0-2
    log.append(simple_batch(3, T0), 2, T0).unwrap(); // 3-5
    log.append(simple_batch(1, T0), 2, T0).unwrap(); // 6
    log.append(simple_batch(2, T0), 5, T0).unwrap(); // 7-8
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(0), (0, 3));
    assert_eq!(
        log.end_offset_for_epoch(1),
        (0, 3),
        "unknown epoch: the previous one's end"
    );
    assert_eq!(log.end_offset_for_epoch(2), (2, 7));
    assert_eq!(
        log.end_offset_for_epoch(5),
        (5, 9),
        "latest epoch ends at the log end"
    );
    assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
    let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n3\n0 0\n2 3\n5 7\n");
}

#[test]
fn a_stale_leader_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(1, T0), 4, T0).unwrap();
    match log.append(simple_batch(1, T0), 3, T0) {
        Err(StorageError::StaleLeaderEpoch {
            epoch: 3,
            latest: 4,
        }) => {}
        other => panic!("expected StaleLeaderEpoch, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn assign_leader_epoch_starts_the_epoch_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(3, T0), 1, T0).unwrap();
    log.assign_leader_epoch(2).unwrap();
    assert_eq!(log.end_offset_for_epoch(1), (1, 3));
    assert_eq!(log.end_offset_for_epoch(2), (2, 3));
    assert!(matches!(
        log.assign_leader_epoch(1),
        Err(StorageError::StaleLeaderEpoch { .. })
    ));
}

#[test]
fn append_replicated_copies_the_leaders_batches_byte_for_byte() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path());
    leader.append(simple_batch(2, T0), 1, T0).unwrap();
    leader.append(simple_batch(3, T0), 4, T0).unwrap();
    let fetched = leader
        .read(0, 1 << 20, leader.log_end_offset(), true)
        .unwrap()
        .records;

    let follower = open(follower_dir.path());
    let info = follower.append_replicated(fetched.clone()).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batch_count),
        (0, 4, 2)
    );
    assert_eq!(follower.log_end_offset(), 5);
    assert_eq!(follower.read(0, 1 << 20, 5, true).unwrap().records, fetched);
    assert_eq!(
        follower.leader_epoch_entries(),
        leader.leader_epoch_entries()
    );
}

#[test]
fn append_replicated_refuses_batches_below_the_log_end() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path());
    leader.append(simple_batch(2, T0), 0, T0).unwrap();
    leader.append(simple_batch(2, T0), 0, T0).unwrap();
    let first = leader.read(0, 1 << 20, 2, true).unwrap().records;
    let follower = open(follower_dir.path());
    follower.append_replicated(first.clone()).unwrap();
    match follower.append_replicated(first.clone()) {
        Err(StorageError::UnexpectedAppendOffset {
            base_offset: 0,
            log_end: 2,
        }) => {}
        other => panic!("expected UnexpectedAppendOffset, got {other:?}"),
    }
    let mut bad = BytesMut::from(&leader.read(2, 1 << 20, 4, true).unwrap().records[..]);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        follower.append_replicated(bad.freeze()),
        Err(StorageError::CorruptBatch { .. })
    ));
    assert_eq!(follower.log_end_offset(), 2);
    assert!(follower.append_replicated(Bytes::new()).is_err());
}

#[test]
fn append_replicated_accepts_a_gap_left_by_compaction() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path());
    leader.append(simple_batch(2, T0), 0, T0).unwrap();
    leader.append(simple_batch(2, T0), 0, T0).unwrap();
    let second = leader.read(2, 1 << 20, 4, true).unwrap().records;
    let follower = open(follower_dir.path());
    follower.append_replicated(second).unwrap();
    assert_eq!(follower.log_end_offset(), 4);
    let read = follower.read(0, 1 << 20, 4, true).unwrap().records;
    assert_eq!(offsets(&all_records(&read)), vec![2, 3]);
}

#[test]
fn truncate_to_removes_later_batches_segments_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let size = one_record_batch_size() as u64;
    let config = LogConfig {
        segment_bytes: 3 * size,
        index_interval_bytes: 10,
        ..test_config()
    };
    let log = open_with(dir.path(), config.clone());
    for i in 0..10i64 {
        log.append(simple_batch(1, T0 + i), if i < 5 { 1 } else { 2 }, T0)
            .unwrap();
    }
    log.flush().unwrap();
    log.truncate_to(4).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    assert!(!segment_path(dir.path(), 6, "log").exists());
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(
        log.recovery_point(),
        3,
        "lowered to the truncated segment's base"
    );
    assert_eq!(log.max_timestamp_and_offset(), (T0 + 3, 3));
    assert_eq!(offsets(&read_everything(&log)), vec![0, 1, 2, 3]);
    assert_eq!(
        log.append(simple_batch(1, T0), 3, T0).unwrap().base_offset,
        4
    );
    drop(log);
    let log = open_with(dir.path(), config);
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(offsets(&read_everything(&log)), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        log.leader_epoch_entries(),
        vec![
            EpochEntry {
                epoch: 1,
                start_offset: 0
            },
            EpochEntry {
                epoch: 3,
                start_offset: 4
            }
        ]
    );
}

#[test]
fn truncate_to_inside_a_batch_removes_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(5, T0), 0, T0).unwrap();
    log.append(simple_batch(5, T0), 0, T0).unwrap();
    log.truncate_to(7).unwrap();
    assert_eq!(log.log_end_offset(), 5);
    log.truncate_to(100).unwrap();
    assert_eq!(
        log.log_end_offset(),
        5,
        "truncating past the end is a no-op"
    );
}

#[test]
fn truncate_fully_restarts_the_log_at_the_given_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(5, T0), 1, T0).unwrap();
    log.truncate_fully_and_start_at(1000).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.segment_base_offsets(), vec![1000]);
    assert!(!segment_path(dir.path(), 0, "log").exists());
    assert_eq!(
        log.append(simple_batch(1, T0), 2, T0).unwrap().base_offset,
        1000
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1001));
}

// ---------------------------------------------------------------------------
// Housekeeping
// ---------------------------------------------------------------------------

#[test]
fn high_watermark_checkpoint_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.checkpointed_high_watermark(), None);
    log.checkpoint_high_watermark(42).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Some(42));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("high-watermark")).unwrap(),
        "0\n1\n42\n"
    );
    drop(log);
    assert_eq!(open(dir.path()).checkpointed_high_watermark(), Some(42));
}

#[test]
fn delete_removes_the_partition_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("topic-0");
    let log = open(&dir);
    log.append(simple_batch(3, T0), 0, T0).unwrap();
    log.flush().unwrap();
    assert!(dir.exists());
    log.delete().unwrap();
    assert!(!dir.exists());
}

#[test]
fn update_config_applies_valid_settings_and_ignores_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.update_config(LogConfig {
        max_message_bytes: 100,
        ..test_config()
    });
    assert_eq!(log.config().max_message_bytes, 100);
    log.update_config(LogConfig {
        segment_bytes: 0,
        ..test_config()
    });
    assert_eq!(
        log.config().max_message_bytes,
        100,
        "invalid update ignored"
    );
    assert!(matches!(
        PartitionLog::open(
            dir.path().join("x"),
            LogConfig {
                segment_ms: Some(0),
                ..test_config()
            }
        ),
        Err(StorageError::InvalidArgument(_))
    ));
}

#[test]
fn concurrent_readers_only_ever_see_whole_contiguous_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 4000,
            ..test_config()
        },
    ));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..400i64 {
                log.append(simple_batch(1 + (i % 4) as usize, T0 + i), 0, T0)
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut offset = 0;
                while offset < 1000 {
                    let end = log.log_end_offset();
                    let result = log.read(offset, 3000, end, true).unwrap();
                    for h in headers(&result.records) {
                        assert_eq!(h.base_offset, offset, "batches are whole and contiguous");
                        offset = h.next_offset();
                    }
                    if result.records.is_empty() {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(read_everything(&log).len() as i64, log.log_end_offset());
}

#[test]
fn truncate_fully_at_the_current_base_offset_empties_the_log_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(5, T0), 1, T0).unwrap();
    log.truncate_fully_and_start_at(0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes()
        ),
        (0, 0, 0)
    );
    assert_eq!(log.segment_base_offsets(), vec![0]);
    assert_eq!(
        log.append(simple_batch(2, T0), 2, T0).unwrap().base_offset,
        0
    );
}

#[test]
fn truncating_at_the_log_end_drops_an_epoch_opened_there_without_writes() {
    // A replica led epoch 2 without writing in it, then follows a leader that never had
    // epoch 2: truncating to its own log end must forget epoch 2, or every fetch would
    // report it and diverge again.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(3, 1_000), 1, 1_000).unwrap();
    log.assign_leader_epoch(2).unwrap();
    assert_eq!(log.latest_epoch(), Some(2));
    log.truncate_to(3).unwrap();
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.log_end_offset(), 3);
    drop(log);
    assert_eq!(
        open(dir.path()).latest_epoch(),
        Some(1),
        "the epoch checkpoint was rewritten"
    );
}

// ---------------------------------------------------------------------------
// sync_appended: the data-only group commit (flush.messages / flush.ms)
// ---------------------------------------------------------------------------

#[test]
fn sync_appended_moves_the_durable_end_to_the_log_end_and_only_fsyncs_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.synced_end_offset(), 0);
    assert_eq!(log.unsynced_since_ms(), None);
    log.append(simple_batch(3, T0), 0, T0).unwrap();
    assert_eq!(log.synced_end_offset(), 0, "an append alone syncs nothing");
    assert!(
        log.unsynced_since_ms().is_some(),
        "the flush.ms clock started"
    );

    assert_eq!(log.sync_appended().unwrap(), 3);
    assert_eq!(log.synced_end_offset(), 3);
    assert_eq!(log.appended_syncs(), 1);
    assert_eq!(log.unsynced_since_ms(), None);
    assert_eq!(log.recovery_point(), 0, "the recovery point is flush's job");

    assert_eq!(log.sync_appended().unwrap(), 3);
    assert_eq!(log.appended_syncs(), 1, "nothing new: no fsync");
}

#[test]
fn sync_appended_leaves_the_indexes_dirty_for_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    log.sync_appended().unwrap();
    assert!(
        log.inner.lock().active().is_dirty(),
        "flush must still seal and sync the indexes"
    );
    log.flush().unwrap();
    assert!(!log.inner.lock().active().is_dirty());
    assert_eq!(log.recovery_point(), 2);
}

#[test]
fn sync_appended_covers_a_rolled_segment_and_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let size = one_record_batch_size() as u64;
    let log = open_with(
        dir.path(),
        LogConfig {
            segment_bytes: 2 * size,
            ..test_config()
        },
    );
    for _ in 0..5 {
        log.append(simple_batch(1, T0), 0, T0).unwrap();
    }
    assert!(log.segment_count() > 1);
    assert!(log.inner.lock().dir_dirty);
    assert_eq!(log.sync_appended().unwrap(), 5);
    let inner = log.inner.lock();
    assert!(
        !inner.dir_dirty,
        "new segment files need their directory synced"
    );
    assert!(inner.segments.iter().all(|s| s.is_dirty()));
}

#[test]
fn flush_and_open_also_move_the_durable_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(4, T0), 0, T0).unwrap();
    log.flush().unwrap();
    assert_eq!(log.synced_end_offset(), 4);
    assert_eq!(log.unsynced_since_ms(), None);
    assert_eq!(log.sync_appended().unwrap(), 4);
    assert_eq!(log.appended_syncs(), 0, "the flush covered it");
    log.append(simple_batch(1, T0), 0, T0).unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.synced_end_offset(), 5, "open syncs what it recovered");
}

#[test]
fn callers_that_appended_before_a_sync_share_its_fsync() {
    const CALLERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let barrier = Arc::new(std::sync::Barrier::new(CALLERS));
    let handles: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                let info = log.append(simple_batch(1, T0), 0, T0).unwrap();
                barrier.wait();
                let durable = log.sync_appended().unwrap();
                assert!(
                    durable > info.last_offset,
                    "{durable} does not cover {info:?}"
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(log.synced_end_offset(), CALLERS as i64);
    assert_eq!(
        log.appended_syncs(),
        1,
        "the first sync covered every caller"
    );
}

#[test]
fn callers_queued_behind_an_inflight_sync_share_the_next_one() {
    const CALLERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    // The first sync blocks in the hook until released; later ones pass.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(Some(held));
    log.set_sync_hook(Some(Arc::new(move || {
        if let Some(rx) = held.lock().take() {
            rx.recv().ok();
        }
        Ok(())
    })));
    log.append(simple_batch(1, T0), 0, T0).unwrap();
    let first = {
        let log = log.clone();
        std::thread::spawn(move || log.sync_appended().unwrap())
    };
    while log.appended_syncs() == 0 {
        std::thread::yield_now();
    }
    // Appended while the first sync is in flight: not covered by it.
    let barrier = Arc::new(std::sync::Barrier::new(CALLERS + 1));
    let handles: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                let info = log.append(simple_batch(1, T0), 0, T0).unwrap();
                barrier.wait();
                let durable = log.sync_appended().unwrap();
                assert!(
                    durable > info.last_offset,
                    "{durable} does not cover {info:?}"
                );
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(std::time::Duration::from_millis(50));
    release.send(()).unwrap();
    assert_eq!(
        first.join().unwrap(),
        1,
        "the first sync covers what it saw"
    );
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(log.synced_end_offset(), 1 + CALLERS as i64);
    assert_eq!(
        log.appended_syncs(),
        2,
        "{CALLERS} callers behind one sync share one more"
    );
}

#[test]
fn truncation_lowers_the_durable_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..5 {
        log.append(simple_batch(1, T0), 0, T0).unwrap();
    }
    assert_eq!(log.sync_appended().unwrap(), 5);
    log.truncate_to(2).unwrap();
    assert_eq!(log.synced_end_offset(), 2);
    log.append(simple_batch(1, T0), 0, T0).unwrap();
    assert_eq!(
        log.synced_end_offset(),
        2,
        "the new offset 2 is not synced yet"
    );
    assert_eq!(log.sync_appended().unwrap(), 3);
    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(log.synced_end_offset(), 100);
    log.append(simple_batch(1, T0), 0, T0).unwrap();
    assert_eq!(log.sync_appended().unwrap(), 101);
}

#[test]
fn a_failed_sync_leaves_the_durable_end_and_the_next_one_retries() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(2, T0), 0, T0).unwrap();
    log.set_sync_hook(Some(Arc::new(|| {
        Err(std::io::Error::other("injected fsync failure"))
    })));
    let err = log.sync_appended().unwrap_err();
    assert!(
        matches!(err, StorageError::IoAt { op: "syncing", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    assert_eq!(log.synced_end_offset(), 0);
    assert!(
        log.unsynced_since_ms().is_some(),
        "still unsynced for flush.ms"
    );
    log.set_sync_hook(None);
    assert_eq!(log.sync_appended().unwrap(), 2);
    assert_eq!(log.appended_syncs(), 2);
}

#[test]
fn flush_settings_are_validated() {
    let ok = LogConfig {
        flush_messages: 1,
        flush_ms: 0,
        ..test_config()
    };
    ok.validate().unwrap();
    assert_eq!(LogConfig::default().flush_messages, crate::NO_FLUSH);
    for bad in [
        LogConfig {
            flush_messages: 0,
            ..test_config()
        },
        LogConfig {
            flush_ms: -1,
            ..test_config()
        },
    ] {
        assert!(matches!(
            bad.validate(),
            Err(StorageError::InvalidArgument(_))
        ));
    }
}

/// Bytes of disk the file holds (allocated blocks), as opposed to its size.
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn preallocate_reserves_blocks_ahead_without_changing_the_size_and_releases_them_on_roll_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { preallocate: true, ..test_config() };
    let log = open_with(dir.path(), config);
    log.append(simple_batch(10, T0), 0, T0).unwrap();
    let first = segment_path(dir.path(), 0, "log");
    let size = file_len(&first);
    assert!(size > 0 && size < 4096);
    assert!(
        allocated_bytes(&first) >= PREALLOCATE_STEP,
        "{} bytes allocated for {size} bytes of data",
        allocated_bytes(&first)
    );

    log.roll().unwrap();
    assert_eq!(file_len(&first), size, "releasing keeps the data");
    assert!(allocated_bytes(&first) <= 4096, "{} bytes still allocated after the roll", allocated_bytes(&first));
    log.append(simple_batch(3, T0), 0, T0).unwrap();
    let second = segment_path(dir.path(), 10, "log");
    assert!(allocated_bytes(&second) >= PREALLOCATE_STEP);

    log.close().unwrap();
    assert!(allocated_bytes(&second) <= 4096, "{} bytes still allocated after close", allocated_bytes(&second));
    let reopened = open_with(dir.path(), LogConfig { preallocate: true, ..test_config() });
    assert_eq!(offsets(&read_everything(&reopened)), (0..13).collect::<Vec<_>>());
}

#[test]
fn without_preallocate_a_segment_holds_only_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(simple_batch(10, T0), 0, T0).unwrap();
    assert!(allocated_bytes(&segment_path(dir.path(), 0, "log")) <= 4096);
}

/// Byte ranges `(start, end)` of `path` whose blocks the filesystem has not
/// allocated yet (delayed allocation: dirty pages no write-back has reached), from
/// the FIEMAP ioctl without its sync flag. `None` where FIEMAP is unsupported.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn delayed_allocation_ranges(path: &Path) -> Option<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
    const MAX_EXTENTS: usize = 512;
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; MAX_EXTENTS],
    }
    let empty = Extent { logical: 0, physical: 0, length: 0, reserved64: [0; 2], flags: 0, reserved: [0; 3] };
    let mut map = Box::new(Fiemap {
        start: 0,
        length: u64::MAX,
        flags: 0,
        mapped_extents: 0,
        extent_count: MAX_EXTENTS as u32,
        reserved: 0,
        extents: [empty; MAX_EXTENTS],
    });
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: `map` is a `struct fiemap` with room for `extent_count` extents, as
    // FS_IOC_FIEMAP expects; it lives across the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut *map as *mut Fiemap) };
    if rc != 0 {
        return None;
    }
    let mapped = map.mapped_extents as usize;
    assert!(mapped < MAX_EXTENTS, "more extents than the test reads");
    Some(
        map.extents[..mapped]
            .iter()
            .filter(|e| e.flags & FIEMAP_EXTENT_DELALLOC != 0)
            .map(|e| (e.logical, e.logical + e.length))
            .collect(),
    )
}

/// A log (kept open, so nothing closes or syncs it) with 1.5 MiB appended in
/// ~16 KiB batches at `writeback_interval_bytes`, and its one segment's path.
#[cfg(target_os = "linux")]
fn one_and_a_half_mebibytes_appended(
    writeback_interval_bytes: u64,
) -> (PartitionLog, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), LogConfig { writeback_interval_bytes, ..test_config() });
    let value = vec![b'x'; 1000];
    let records: Vec<_> = (0..16).map(|_| (None, Some(value.as_slice()), T0)).collect();
    let path = segment_path(dir.path(), 0, "log");
    while file_len(&path) < 3 << 19 {
        log.append(build_batch(T0, &records), 0, T0).unwrap();
    }
    (log, dir, path)
}

#[cfg(target_os = "linux")]
#[test]
fn appends_start_write_back_every_writeback_interval_without_waiting_for_a_flush() {
    const MIB: u64 = 1 << 20;
    // The control, with the interval off: every appended page still waits for the
    // kernel, so its blocks are unallocated from the start of the file.
    let (_control_log, _control_dir, control) = one_and_a_half_mebibytes_appended(0);
    let waiting = match delayed_allocation_ranges(&control) {
        Some(ranges) if ranges.first().is_some_and(|r| r.0 == 0) => ranges,
        other => {
            eprintln!("skipped: this filesystem shows no delayed allocation to observe write-back by ({other:?})");
            return;
        }
    };
    assert!(waiting.iter().map(|r| r.1).max().unwrap() >= 3 << 19, "{waiting:?}");

    let (_log, _dir, path) = one_and_a_half_mebibytes_appended(MIB);
    let waiting = delayed_allocation_ranges(&path).unwrap();
    // Write-back started at the first mebibyte; only the tail since waits.
    assert!(!waiting.is_empty(), "the tail past the last start waits for the kernel");
    assert!(
        waiting.iter().all(|&(start, _)| start >= MIB),
        "pages below the first mebibyte are still unallocated: {waiting:?}"
    );
}

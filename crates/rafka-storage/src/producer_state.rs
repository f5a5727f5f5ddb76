//! Idempotent-producer state of one partition (KIP-98, with KIP-360's
//! leniency for producers the partition does not know).
//!
//! For every producer id seen in a batch with `producerId >= 0` the partition
//! keeps a [`ProducerEntry`]: the producer epoch, the metadata of its last
//! [`CACHED_BATCHES`] batches (sequence range and offsets, newest last) and
//! the max timestamp of its last batch. Batches without a producer id (-1)
//! and control batches (transaction markers, which carry no sequence) are not
//! tracked.
//!
//! A leader append checks each idempotent batch against that state
//! ([`ProducerStateManager::check`]): a batch equal to a cached one is a
//! duplicate (answered with the original offsets, nothing written); an older
//! epoch is fenced; a newer epoch must start at sequence 0; the same epoch
//! must continue at `last sequence + 1` (wrapping from `i32::MAX` to 0); an
//! unknown producer may start anywhere. Replicated appends and recovery
//! update the state without checks.
//!
//! The state is rebuilt on open from a snapshot plus a header-only scan of
//! the batches after it. Snapshots are `<20-digit offset>.snapshot` files
//! describing the state of every batch below that offset (the log end when
//! written), in this big-endian binary format:
//!
//! ```text
//! magic "RFPS" | version u16 = 1 | crc u32 (CRC-32C of every byte after it)
//! offset i64 (equals the file name) | producer count u32
//! per producer, ascending id:
//!   producer id i64 | producer epoch i16 | last timestamp i64 | batch count u8 (1..=5)
//!   per batch, oldest first:
//!     first seq i32 | last seq i32 | first offset i64 | last offset i64 | max timestamp i64
//! ```
//!
//! A file that fails any check (length, magic, version, CRC, offset, counts)
//! is treated as corrupt: it is deleted and the next older one is tried.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::batch::BatchHeader;
use crate::checkpoint::TMP_SUFFIX;
use crate::error::IoContext;
use crate::StorageError;

/// How many of a producer's last batches are remembered for duplicate detection
/// (the producer's `max.in.flight.requests.per.connection` limit with idempotence).
pub(crate) const CACHED_BATCHES: usize = 5;
/// Extension of producer-state snapshot files.
pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
/// How many snapshot files are kept (the newest ones).
pub(crate) const SNAPSHOTS_KEPT: usize = 2;

const SNAPSHOT_MAGIC: &[u8; 4] = b"RFPS";
const SNAPSHOT_VERSION: u16 = 1;
/// magic + version + crc.
const SNAPSHOT_PREFIX: usize = 4 + 2 + 4;
const SNAPSHOT_HEADER: usize = SNAPSHOT_PREFIX + 8 + 4;
const SNAPSHOT_PRODUCER: usize = 8 + 2 + 8 + 1;
const SNAPSHOT_BATCH: usize = 4 + 4 + 8 + 8 + 8;

/// The idempotence state of one producer, as seen by [`crate::PartitionLog::producer_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Base sequence of the producer's last batch.
    pub first_sequence: i32,
    /// Sequence of the last record of the producer's last batch.
    pub last_sequence: i32,
    /// Offsets of the producer's last batch.
    pub base_offset: i64,
    pub last_offset: i64,
    /// Max timestamp of the producer's last batch.
    pub last_timestamp: i64,
}

/// Sequence range and offsets of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the partition remembers of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub producer_epoch: i16,
    /// The first `len` slots hold the last batches, newest last.
    batches: [BatchMetadata; CACHED_BATCHES],
    len: u8,
    pub last_timestamp: i64,
}

impl ProducerEntry {
    fn new(producer_epoch: i16) -> ProducerEntry {
        ProducerEntry {
            producer_epoch,
            batches: [BatchMetadata::default(); CACHED_BATCHES],
            len: 0,
            last_timestamp: -1,
        }
    }

    pub(crate) fn batches(&self) -> &[BatchMetadata] {
        &self.batches[..usize::from(self.len)]
    }

    fn last_batch(&self) -> Option<&BatchMetadata> {
        self.batches().last()
    }

    /// Records a batch; a different epoch forgets the batches of the old one.
    fn add_batch(&mut self, producer_epoch: i16, batch: BatchMetadata) {
        if producer_epoch != self.producer_epoch {
            self.producer_epoch = producer_epoch;
            self.len = 0;
        }
        if usize::from(self.len) == CACHED_BATCHES {
            self.batches.copy_within(1.., 0);
            self.len -= 1;
        }
        self.batches[usize::from(self.len)] = batch;
        self.len += 1;
        self.last_timestamp = batch.max_timestamp;
    }

    fn find_duplicate(
        &self,
        producer_epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Option<BatchMetadata> {
        if producer_epoch != self.producer_epoch {
            return None;
        }
        self.batches()
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// `base + delta` in sequence space, which wraps from `i32::MAX` to 0.
pub(crate) fn add_to_sequence(base: i32, delta: i32) -> i32 {
    let sum = i64::from(base) + i64::from(delta);
    if sum > i64::from(i32::MAX) {
        (sum - i64::from(i32::MAX) - 1) as i32
    } else {
        sum as i32
    }
}

/// Sequence of the last record of a batch.
pub(crate) fn last_sequence(header: &BatchHeader) -> i32 {
    add_to_sequence(header.base_sequence, header.last_offset_delta)
}

/// Whether producer state tracks this batch.
pub(crate) fn is_tracked(header: &BatchHeader) -> bool {
    header.producer_id >= 0 && !header.is_control()
}

fn metadata(header: &BatchHeader, first_offset: i64) -> BatchMetadata {
    BatchMetadata {
        first_seq: header.base_sequence,
        last_seq: last_sequence(header),
        first_offset,
        last_offset: first_offset + i64::from(header.last_offset_delta),
        max_timestamp: header.max_timestamp,
    }
}

/// Outcome of checking one batch of a leader append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// In sequence: append it.
    Append,
    /// Equal to this batch, already in the log.
    Duplicate(BatchMetadata),
}

/// Producer entries touched by an append in progress, applied only if the
/// whole append is written.
pub(crate) type PendingEntries = Vec<(i64, ProducerEntry)>;

/// The producer state of one partition plus the snapshot files on disk.
#[derive(Debug, Default)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Offsets of the snapshot files in the directory.
    snapshots: BTreeSet<i64>,
}

impl ProducerStateManager {
    /// Empty state, knowing which snapshot files exist.
    pub(crate) fn new(snapshots: impl IntoIterator<Item = i64>) -> ProducerStateManager {
        ProducerStateManager {
            producers: HashMap::new(),
            snapshots: snapshots.into_iter().collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub(crate) fn snapshot_of(&self, producer_id: i64) -> Option<ProducerSnapshot> {
        let entry = self.producers.get(&producer_id)?;
        let last = entry.last_batch()?;
        Some(ProducerSnapshot {
            producer_id,
            producer_epoch: entry.producer_epoch,
            first_sequence: last.first_seq,
            last_sequence: last.last_seq,
            base_offset: last.first_offset,
            last_offset: last.last_offset,
            last_timestamp: entry.last_timestamp,
        })
    }

    /// Checks one tracked batch of a leader append that would start at
    /// `first_offset` against the state as updated by the earlier batches of
    /// the same append (`pending`), and records it in `pending` when it is
    /// to be appended.
    pub(crate) fn check(
        &self,
        pending: &mut PendingEntries,
        header: &BatchHeader,
        first_offset: i64,
    ) -> Result<Verdict, StorageError> {
        let producer_id = header.producer_id;
        if header.base_sequence < 0 {
            return Err(StorageError::corrupt(format!(
                "batch of producer {producer_id} has invalid base sequence {}",
                header.base_sequence
            )));
        }
        let slot = pending.iter().position(|(id, _)| *id == producer_id);
        let entry = match slot {
            Some(i) => Some(&pending[i].1),
            None => self.producers.get(&producer_id),
        };
        let epoch = header.producer_epoch;
        let first_seq = header.base_sequence;
        if let Some(entry) = entry {
            if let Some(original) = entry.find_duplicate(epoch, first_seq, last_sequence(header)) {
                return Ok(Verdict::Duplicate(original));
            }
            if epoch < entry.producer_epoch {
                return Err(StorageError::InvalidProducerEpoch {
                    producer_id,
                    epoch,
                    current: entry.producer_epoch,
                });
            }
            let expected = match entry.last_batch() {
                Some(last) if epoch == entry.producer_epoch => add_to_sequence(last.last_seq, 1),
                _ => 0,
            };
            if first_seq != expected {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected,
                    got: first_seq,
                });
            }
        }
        let mut updated = entry.copied().unwrap_or_else(|| ProducerEntry::new(epoch));
        updated.add_batch(epoch, metadata(header, first_offset));
        match slot {
            Some(i) => pending[i].1 = updated,
            None => pending.push((producer_id, updated)),
        }
        Ok(Verdict::Append)
    }

    /// The sequence a producer's next batch must start with, for error messages.
    pub(crate) fn expected_sequence(&self, pending: &PendingEntries, header: &BatchHeader) -> i32 {
        let entry = pending
            .iter()
            .find(|(id, _)| *id == header.producer_id)
            .map(|(_, e)| e)
            .or_else(|| self.producers.get(&header.producer_id));
        match entry.and_then(ProducerEntry::last_batch) {
            Some(last) => add_to_sequence(last.last_seq, 1),
            None => 0,
        }
    }

    /// Applies the entries of a written leader append.
    pub(crate) fn commit(&mut self, pending: PendingEntries) {
        self.producers.extend(pending);
    }

    /// Records a batch already in the log (replication, rebuild), without
    /// checks. `header.base_offset` must be its offset. Untracked batches are
    /// ignored.
    pub(crate) fn apply(&mut self, header: &BatchHeader) {
        if !is_tracked(header) {
            return;
        }
        self.producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch))
            .add_batch(header.producer_epoch, metadata(header, header.base_offset));
    }

    /// Per producer id, the last offset of its last batch: the batch the log
    /// cleaner must keep (possibly emptied) so that a rebuild finds it.
    pub(crate) fn last_batch_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(id, e)| Some((*id, e.last_batch()?.last_offset)))
            .collect()
    }

    /// Every entry, by ascending producer id (tests compare whole states).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(i64, ProducerEntry)> {
        let mut out: Vec<_> = self.producers.iter().map(|(id, e)| (*id, *e)).collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// Forgets every producer (the snapshot files are untouched).
    pub(crate) fn clear(&mut self) {
        self.producers.clear();
    }

    /// Offset of the newest snapshot file.
    pub(crate) fn newest_snapshot(&self) -> Option<i64> {
        self.snapshots.last().copied()
    }

    /// Encodes the state as a snapshot at `offset` (see the module docs).
    pub(crate) fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let size = SNAPSHOT_HEADER
            + self
                .producers
                .values()
                .map(|e| SNAPSHOT_PRODUCER + e.batches().len() * SNAPSHOT_BATCH)
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled below
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let entry = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.producer_epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            out.push(entry.len);
            for b in entry.batches() {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_PREFIX..]);
        out[SNAPSHOT_PREFIX - 4..SNAPSHOT_PREFIX].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Writes `bytes` (from [`ProducerStateManager::encode_snapshot`]) as the
    /// snapshot file for `offset`: temp file, fsync, rename. The caller syncs
    /// the directory. Takes no `&self`, so it can run outside the log's lock;
    /// follow with [`ProducerStateManager::snapshot_written`].
    pub(crate) fn write_snapshot_file(
        dir: &Path,
        offset: i64,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let path = snapshot_path(dir, offset);
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", snapshot_name(offset)));
        {
            let mut file = File::create(&tmp).ctx("creating", &tmp)?;
            file.write_all(bytes).ctx("writing", &tmp)?;
            file.sync_all().ctx("syncing", &tmp)?;
        }
        std::fs::rename(&tmp, &path).ctx("renaming into place", &path)
    }

    /// Notes a written snapshot and deletes all but the newest [`SNAPSHOTS_KEPT`].
    pub(crate) fn snapshot_written(&mut self, dir: &Path, offset: i64) -> Result<(), StorageError> {
        self.snapshots.insert(offset);
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            let Some(oldest) = self.snapshots.first().copied() else {
                break;
            };
            remove_snapshot(dir, oldest)?;
            self.snapshots.remove(&oldest);
        }
        Ok(())
    }

    /// Encodes and writes a snapshot at `offset` in one go (under the log's lock).
    pub(crate) fn take_snapshot(&mut self, dir: &Path, offset: i64) -> Result<(), StorageError> {
        let bytes = self.encode_snapshot(offset);
        Self::write_snapshot_file(dir, offset, &bytes)?;
        self.snapshot_written(dir, offset)
    }

    /// Deletes the snapshot files above `offset`; returns whether any went.
    pub(crate) fn delete_snapshots_above(
        &mut self,
        dir: &Path,
        offset: i64,
    ) -> Result<bool, StorageError> {
        let above: Vec<i64> = self
            .snapshots
            .range(offset.saturating_add(1)..)
            .copied()
            .collect();
        for &o in &above {
            remove_snapshot(dir, o)?;
            self.snapshots.remove(&o);
        }
        Ok(!above.is_empty())
    }

    /// Deletes every snapshot file; returns whether any went.
    pub(crate) fn delete_all_snapshots(&mut self, dir: &Path) -> Result<bool, StorageError> {
        self.delete_snapshots_above(dir, i64::MIN)
    }

    /// Replaces the state with the newest readable snapshot and returns its
    /// offset, or empties it and returns `None` when there is none. Corrupt
    /// snapshot files are logged and deleted.
    pub(crate) fn load_newest_snapshot(&mut self, dir: &Path) -> Result<Option<i64>, StorageError> {
        self.producers.clear();
        while let Some(offset) = self.newest_snapshot() {
            let path = snapshot_path(dir, offset);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.snapshots.remove(&offset);
                    continue;
                }
                Err(source) => {
                    return Err(StorageError::IoAt {
                        op: "reading",
                        path,
                        source,
                    })
                }
            };
            match decode_snapshot(&bytes, offset) {
                Ok(producers) => {
                    self.producers = producers;
                    return Ok(Some(offset));
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "deleting corrupt producer state snapshot");
                    remove_snapshot(dir, offset)?;
                    self.snapshots.remove(&offset);
                }
            }
        }
        Ok(None)
    }
}

fn snapshot_name(offset: i64) -> String {
    format!("{offset:020}.{SNAPSHOT_EXT}")
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(snapshot_name(offset))
}

fn remove_snapshot(dir: &Path, offset: i64) -> Result<(), StorageError> {
    let path = snapshot_path(dir, offset);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::IoAt {
            op: "deleting",
            path,
            source,
        }),
    }
}

/// Big-endian reader over a snapshot; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.pos + N;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated at byte {} of {}", self.pos, self.buf.len()))?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

/// Decodes a snapshot file expected to describe `offset`.
fn decode_snapshot(buf: &[u8], offset: i64) -> Result<HashMap<i64, ProducerEntry>, String> {
    let mut r = Reader { buf, pos: 0 };
    if &r.take::<4>()? != SNAPSHOT_MAGIC {
        return Err("bad magic".to_string());
    }
    let version = r.u16()?;
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let stored = r.u32()?;
    let computed = crc32c::crc32c(&buf[SNAPSHOT_PREFIX..]);
    if stored != computed {
        return Err(format!(
            "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let file_offset = r.i64()?;
    if file_offset != offset {
        return Err(format!(
            "holds offset {file_offset}, its name says {offset}"
        ));
    }
    let count = r.u32()? as usize;
    let mut producers = HashMap::with_capacity(count.min(buf.len() / SNAPSHOT_PRODUCER));
    for _ in 0..count {
        let producer_id = r.i64()?;
        let mut entry = ProducerEntry::new(r.i16()?);
        let last_timestamp = r.i64()?;
        let batches = r.u8()?;
        if producer_id < 0 || batches == 0 || usize::from(batches) > CACHED_BATCHES {
            return Err(format!(
                "producer {producer_id} has an invalid id or batch count {batches}"
            ));
        }
        for _ in 0..batches {
            let batch = BatchMetadata {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
                max_timestamp: r.i64()?,
            };
            if batch.first_offset > batch.last_offset || batch.last_offset >= offset {
                return Err(format!(
                    "producer {producer_id} has a batch at offsets {}..={} outside the snapshot",
                    batch.first_offset, batch.last_offset
                ));
            }
            entry.add_batch(entry.producer_epoch, batch);
        }
        entry.last_timestamp = last_timestamp;
        if producers.insert(producer_id, entry).is_some() {
            return Err(format!("producer {producer_id} appears twice"));
        }
    }
    if r.pos != buf.len() {
        return Err(format!(
            "{} bytes left after the last producer",
            buf.len() - r.pos
        ));
    }
    Ok(producers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;

    fn header(producer_id: i64, epoch: i16, seq: i32, records: usize) -> BatchHeader {
        let mut builder = BatchBuilder::new().producer(producer_id, epoch, seq);
        for i in 0..records {
            builder.push(100 + i as i64, None, Some(b"v"), &[]);
        }
        BatchHeader::parse(&builder.build()).unwrap()
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(add_to_sequence(5, 3), 8);
        assert_eq!(add_to_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(add_to_sequence(i32::MAX, 1), 0);
        assert_eq!(add_to_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(last_sequence(&header(1, 0, i32::MAX - 1, 4)), 1);
    }

    #[test]
    fn an_entry_keeps_the_last_five_batches_of_its_epoch() {
        let mut state = ProducerStateManager::default();
        for i in 0..7i32 {
            let mut h = header(9, 0, i * 2, 2);
            h.base_offset = i64::from(i) * 2;
            state.apply(&h);
        }
        let entry = state.producers[&9];
        let firsts: Vec<i32> = entry.batches().iter().map(|b| b.first_seq).collect();
        assert_eq!(firsts, vec![4, 6, 8, 10, 12]);
        state.apply(&header(9, 1, 0, 1));
        assert_eq!(
            state.producers[&9].batches().len(),
            1,
            "a new epoch forgets the old batches"
        );
        assert_eq!(state.producers[&9].producer_epoch, 1);
    }

    #[test]
    fn snapshot_round_trips_and_detects_any_flipped_byte() {
        let mut state = ProducerStateManager::default();
        for (pid, n) in [(1i64, 1), (2, 6), (i64::MAX, 3)] {
            for i in 0..n {
                let mut h = header(pid, 3, i, 1);
                h.base_offset = i64::from(i) * 10 + pid % 7;
                state.apply(&h);
            }
        }
        let bytes = state.encode_snapshot(1000);
        let decoded = decode_snapshot(&bytes, 1000).unwrap();
        assert_eq!(decoded, state.producers);
        assert!(decode_snapshot(&bytes, 999).unwrap_err().contains("999"));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(
                decode_snapshot(&bad, 1000).is_err(),
                "flip at byte {at} undetected"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode_snapshot(&bytes[..len], 1000).is_err(),
                "cut at {len} undetected"
            );
        }
    }

    #[test]
    fn empty_state_snapshot_round_trips() {
        let state = ProducerStateManager::default();
        let bytes = state.encode_snapshot(0);
        assert_eq!(bytes.len(), SNAPSHOT_HEADER);
        assert!(decode_snapshot(&bytes, 0).unwrap().is_empty());
    }
}

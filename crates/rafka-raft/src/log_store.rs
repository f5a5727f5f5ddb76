//! The durable Raft log: [`LogStore`], openraft's [`RaftLogStorage`].
//!
//! # Layout
//!
//! Everything lives in one directory:
//!
//! - `raft-log`: an append-only file of records (below). Every live entry is also
//!   kept in memory (metadata is small), so reads never touch the disk.
//! - `raft-vote.json`: the last vote, as JSON, replaced atomically
//!   (`.tmp` + fsync + rename + fsync of the directory).
//!
//! # `raft-log` format (version 1)
//!
//! ```text
//! file   := magic record*
//! magic  := "RFKRAFT1"                                  (8 bytes)
//! record := len: u32 LE | crc32c(payload): u32 LE | payload: len bytes (JSON)
//! ```
//!
//! A payload is one operation, replayed in order on open (see `LogRecord`):
//! `{"entry":{"entry":…}}` appends (or overwrites) the openraft entry at its index,
//! `{"truncate":{"since":i}}` deletes every entry with index ≥ i,
//! `{"purge":{"upto":log_id}}` deletes every entry with index ≤ `log_id.index`
//! and remembers `log_id` as the last purged id, and
//! `{"committed":{"log_id":…}}` records the committed log id.
//!
//! # Durability
//!
//! One writer thread owns the file and performs every write in the order the
//! operations were submitted (openraft requires vote and log I/O to be serialised).
//! It drains whatever is queued, writes it with one `write`, and fsyncs once for the
//! whole group (group commit). **An append's [`LogFlushed`] callback is invoked only
//! after that fsync returns**, so openraft never counts an entry that a `kill -9` or
//! power loss could take back. `save_vote`, `truncate` and `purge` return only after
//! their write is durable. The committed log id is written without waiting for an
//! fsync: losing the newest one only means re-learning it from the leader.
//!
//! # Recovery
//!
//! On open the records are replayed up to the first one that is incomplete or fails
//! its checksum; that record and everything after it were never acknowledged (an
//! acknowledgement always follows the fsync that covers everything before it), so
//! the file is truncated there with a warning. A record whose checksum is right but
//! whose payload cannot be decoded is a real corruption and fails the open.
//!
//! # Compaction
//!
//! Truncated and purged entries stay in the file until it is rewritten. After a
//! purge or truncate, when the file holds more than `2 × live + 1024` entry records,
//! the whole file is rewritten from memory (purge marker, live entries, committed id)
//! and atomically renamed over the old one, in order with the other writes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{to_storage_error, RaftStorageError};
use crate::fsutil;
use crate::{NodeId, TypeConfig};

/// Name of the log file inside the store's directory.
pub const LOG_FILE: &str = "raft-log";
/// Name of the vote file inside the store's directory.
pub const VOTE_FILE: &str = "raft-vote.json";
/// The first bytes of a log file; the digit is the format version.
pub const LOG_MAGIC: &[u8; 8] = b"RFKRAFT1";
/// Length of a record's header (length + checksum).
const RECORD_HEADER: usize = 8;
/// Largest payload of one record. A larger length on disk can only be garbage.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// Dead entry records tolerated on top of twice the live ones before a rewrite.
const COMPACT_SLACK: u64 = 1024;
/// Most operations folded into one group write.
const MAX_GROUP_OPS: usize = 4096;

/// One operation in the log file. `E` is `&Entry` when writing, `Entry` when reading.
///
/// Externally tagged on purpose: an internally tagged enum is buffered by serde
/// before it is decoded, and that loses the string-to-integer conversion of JSON map
/// keys, so a membership entry (a map keyed by node id) would not read back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogRecord<E> {
    Entry { entry: E },
    Truncate { since: u64 },
    Purge { upto: LogId<NodeId> },
    Committed { log_id: Option<LogId<NodeId>> },
}

/// Appends one framed record to `out`.
fn encode_record<E: Serialize>(
    record: &LogRecord<E>,
    path: &Path,
    out: &mut Vec<u8>,
) -> Result<(), RaftStorageError> {
    let payload = serde_json::to_vec(record).map_err(|source| RaftStorageError::Encode {
        what: "raft log record",
        path: path.to_path_buf(),
        source,
    })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_RECORD_BYTES)
        .ok_or_else(|| RaftStorageError::TooLarge {
            what: "raft log record",
            path: path.to_path_buf(),
            size: payload.len(),
            limit: MAX_RECORD_BYTES,
        })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The in-memory image of the log, shared by the store and its readers.
#[derive(Debug, Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Entry records in the file, live or not; drives compaction.
    entries_in_file: u64,
}

impl LogMem {
    fn replay(&mut self, record: LogRecord<Entry<TypeConfig>>) {
        match record {
            LogRecord::Entry { entry } => {
                self.entries.insert(entry.log_id.index, entry);
                self.entries_in_file += 1;
            }
            LogRecord::Truncate { since } => self.truncate(since),
            LogRecord::Purge { upto } => self.purge(upto),
            LogRecord::Committed { log_id } => self.committed = log_id,
        }
    }

    fn truncate(&mut self, since: u64) {
        drop(self.entries.split_off(&since));
    }

    fn purge(&mut self, upto: LogId<NodeId>) {
        if self.last_purged.as_ref().is_some_and(|p| *p >= upto) {
            return;
        }
        self.entries = match upto.index.checked_add(1) {
            Some(first_kept) => self.entries.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        self.last_purged = Some(upto);
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }

    fn read<RB: RangeBounds<u64>>(&self, range: &RB) -> Vec<Entry<TypeConfig>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Vec::new(),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&e) => match e.checked_sub(1) {
                Some(e) => e,
                None => return Vec::new(),
            },
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Vec::new();
        }
        self.entries
            .range(start..=end)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The whole log file rebuilt from memory: what a compaction writes.
    fn encode_compacted(&self, path: &Path) -> Result<Vec<u8>, RaftStorageError> {
        let mut out = LOG_MAGIC.to_vec();
        if let Some(upto) = self.last_purged {
            encode_record(
                &LogRecord::<&Entry<TypeConfig>>::Purge { upto },
                path,
                &mut out,
            )?;
        }
        for entry in self.entries.values() {
            encode_record(&LogRecord::Entry { entry }, path, &mut out)?;
        }
        if self.committed.is_some() {
            let record = LogRecord::<&Entry<TypeConfig>>::Committed {
                log_id: self.committed,
            };
            encode_record(&record, path, &mut out)?;
        }
        Ok(out)
    }
}

/// What replaying a log file found.
struct Replayed {
    mem: LogMem,
    /// Bytes of the file that hold whole, valid records.
    valid_len: u64,
    /// Why replay stopped before the end of the file, if it did.
    torn: Option<&'static str>,
}

/// Replays the bytes of a log file into memory.
fn replay(bytes: &[u8], path: &Path) -> Result<Replayed, RaftStorageError> {
    if bytes.len() < LOG_MAGIC.len() || &bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
        return Err(RaftStorageError::Corrupt {
            what: "raft log header",
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "expected the magic {:?}, found {:?}",
                String::from_utf8_lossy(LOG_MAGIC),
                String::from_utf8_lossy(&bytes[..bytes.len().min(LOG_MAGIC.len())])
            ),
        });
    }
    let mut mem = LogMem::default();
    let mut pos = LOG_MAGIC.len();
    let torn = loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_HEADER {
            break Some("incomplete record header");
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD_BYTES {
            break Some("record length beyond the limit");
        }
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            break Some("incomplete record payload");
        };
        if crc32c::crc32c(payload) != crc {
            break Some("record checksum mismatch");
        }
        let record: LogRecord<Entry<TypeConfig>> =
            serde_json::from_slice(payload).map_err(|e| RaftStorageError::Corrupt {
                what: "raft log record",
                path: path.to_path_buf(),
                offset: pos as u64,
                reason: format!("checksum is valid but the payload does not decode: {e}"),
            })?;
        mem.replay(record);
        pos += RECORD_HEADER + len;
    };
    Ok(Replayed {
        mem,
        valid_len: pos as u64,
        torn,
    })
}

/// How the submitter of a write learns that it is done.
enum Done {
    /// An append: tell openraft the entries are on disk.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller awaiting the result.
    Reply(oneshot::Sender<Result<(), RaftStorageError>>),
    /// Nobody waits (the committed log id).
    Nothing,
}

impl Done {
    fn complete(self, result: Result<(), RaftStorageError>) {
        match self {
            Done::Flushed(callback) => {
                callback.log_io_completed(result.map_err(|e| io::Error::other(e.to_string())))
            }
            Done::Reply(tx) => {
                // The caller may have given up (its future was dropped); nothing to do.
                let _ = tx.send(result);
            }
            Done::Nothing => {}
        }
    }

    fn needs_sync(&self) -> bool {
        !matches!(self, Done::Nothing)
    }
}

/// Work for the writer thread, in submission order.
enum WriteOp {
    /// Records to append to the log file.
    Append { bytes: Vec<u8>, done: Done },
    /// A complete new log file to swap in (compaction).
    Replace { bytes: Vec<u8>, done: Done },
    /// A new vote file.
    Vote { bytes: Vec<u8>, done: Done },
}

/// The thread that owns the log file.
struct Writer {
    dir: PathBuf,
    log_path: PathBuf,
    vote_path: PathBuf,
    file: File,
    /// Set by the first failed log write; from then on every write fails.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteOp>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP_OPS {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let mut buf = Vec::new();
            let mut waiting = Vec::new();
            for op in ops {
                match op {
                    WriteOp::Append { bytes, done } => {
                        buf.extend_from_slice(&bytes);
                        waiting.push(done);
                    }
                    WriteOp::Replace { bytes, done } => {
                        self.flush(&mut buf, &mut waiting);
                        let result = self.replace(&bytes);
                        done.complete(result);
                    }
                    WriteOp::Vote { bytes, done } => {
                        self.flush(&mut buf, &mut waiting);
                        let result = fsutil::write_atomic(&self.dir, &self.vote_path, &bytes);
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "failed to save the raft vote");
                        }
                        done.complete(result);
                    }
                }
            }
            self.flush(&mut buf, &mut waiting);
        }
        tracing::debug!(path = %self.log_path.display(), "raft log writer stopped");
    }

    fn failed_error(&self, reason: &str) -> RaftStorageError {
        RaftStorageError::WriterFailed {
            path: self.log_path.clone(),
            reason: reason.to_string(),
        }
    }

    fn fail(&mut self, err: &RaftStorageError) {
        tracing::error!(path = %self.log_path.display(), error = %err, "raft log write failed; the log refuses further writes until reopened");
        self.failed.get_or_insert_with(|| err.to_string());
    }

    /// Writes `buf`, fsyncs if any waiter needs durability, then completes the waiters.
    fn flush(&mut self, buf: &mut Vec<u8>, waiting: &mut Vec<Done>) {
        if buf.is_empty() && waiting.is_empty() {
            return;
        }
        let sync = waiting.iter().any(Done::needs_sync);
        let mut result = Ok(());
        if self.failed.is_none() && !buf.is_empty() {
            let written = self
                .file
                .write_all(buf)
                .map_err(|e| RaftStorageError::io("append to", &self.log_path, e))
                .and_then(|()| {
                    if sync {
                        self.file
                            .sync_data()
                            .map_err(|e| RaftStorageError::io("fsync", &self.log_path, e))
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = written {
                self.fail(&e);
            }
        }
        if let Some(reason) = &self.failed {
            result = Err(reason.clone());
        }
        buf.clear();
        for done in waiting.drain(..) {
            done.complete(result.clone().map_err(|r| self.failed_error(&r)));
        }
    }

    fn replace(&mut self, bytes: &[u8]) -> Result<(), RaftStorageError> {
        if let Some(reason) = &self.failed {
            return Err(self.failed_error(reason));
        }
        let swapped = fsutil::write_atomic(&self.dir, &self.log_path, bytes).and_then(|()| {
            OpenOptions::new()
                .append(true)
                .open(&self.log_path)
                .map_err(|e| RaftStorageError::io("reopen", &self.log_path, e))
        });
        match swapped {
            Ok(file) => {
                self.file = file;
                tracing::info!(path = %self.log_path.display(), bytes = bytes.len(), "compacted the raft log");
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }
}

/// The submitting side of the writer thread. Dropping the last handle lets the
/// thread finish what is queued and then joins it, so a store can be reopened
/// as soon as the previous one is gone.
struct WriterHandle {
    log_path: PathBuf,
    tx: Option<mpsc::Sender<WriteOp>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    fn submit(&self, op: WriteOp) -> Result<(), RaftStorageError> {
        let gone = || RaftStorageError::WriterFailed {
            path: self.log_path.clone(),
            reason: "the writer thread has exited".into(),
        };
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(op)
            .map_err(|_| gone())
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(path = %self.log_path.display(), "the raft log writer thread panicked");
            }
        }
    }
}

/// The durable Raft log, vote and committed log id of one node. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    dir: Arc<PathBuf>,
    mem: Arc<Mutex<LogMem>>,
    writer: Arc<WriterHandle>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

/// A read-only view of a [`LogStore`]'s entries, handed to openraft's replication
/// tasks. It does not keep the writer alive.
#[derive(Clone)]
pub struct LogStoreReader {
    mem: Arc<Mutex<LogMem>>,
}

impl Debug for LogStoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStoreReader").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens the log in `dir`, creating the directory and an empty log if absent,
    /// replays it into memory and drops a torn tail left by a crash.
    pub fn open(dir: &Path) -> Result<LogStore, RaftStorageError> {
        fsutil::ensure_dir(dir)?;
        let log_path = dir.join(LOG_FILE);
        let vote_path = dir.join(VOTE_FILE);
        fsutil::remove_stale_tmp(&log_path)?;
        fsutil::remove_stale_tmp(&vote_path)?;

        let bytes = match fsutil::read_if_exists(&log_path)? {
            Some(bytes) => bytes,
            None => {
                fsutil::write_atomic(dir, &log_path, LOG_MAGIC)?;
                tracing::info!(path = %log_path.display(), "created an empty raft log");
                LOG_MAGIC.to_vec()
            }
        };
        let Replayed {
            mut mem,
            valid_len,
            torn,
        } = replay(&bytes, &log_path)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(|e| RaftStorageError::io("open", &log_path, e))?;
        if let Some(reason) = torn {
            let dropped = bytes.len() as u64 - valid_len;
            tracing::warn!(
                path = %log_path.display(),
                offset = valid_len,
                dropped_bytes = dropped,
                reason,
                "dropping the unacknowledged tail of the raft log left by a crash"
            );
            file.set_len(valid_len)
                .map_err(|e| RaftStorageError::io("truncate torn tail of", &log_path, e))?;
            file.sync_all()
                .map_err(|e| RaftStorageError::io("fsync", &log_path, e))?;
        }

        if let Some(vote_bytes) = fsutil::read_if_exists(&vote_path)? {
            let vote: Vote<NodeId> =
                serde_json::from_slice(&vote_bytes).map_err(|e| RaftStorageError::Corrupt {
                    what: "raft vote",
                    path: vote_path.clone(),
                    offset: 0,
                    reason: e.to_string(),
                })?;
            mem.vote = Some(vote);
        }

        tracing::info!(
            path = %log_path.display(),
            entries = mem.entries.len(),
            first_index = mem.entries.first_key_value().map(|(i, _)| *i),
            last_log_id = ?mem.last_log_id(),
            last_purged = ?mem.last_purged,
            committed = ?mem.committed,
            vote = ?mem.vote,
            "recovered the raft log"
        );

        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            log_path: log_path.clone(),
            vote_path,
            file,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| RaftStorageError::io("start the writer thread for", &log_path, e))?;
        Ok(LogStore {
            dir: Arc::new(dir.to_path_buf()),
            mem: Arc::new(Mutex::new(mem)),
            writer: Arc::new(WriterHandle {
                log_path,
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> &Path {
        &self.writer.log_path
    }

    /// Submits `bytes` (records already applied to memory by the caller, under the
    /// same lock) and, when the log has grown far beyond its live entries, a rewrite.
    fn submit_locked(
        &self,
        mem: &mut LogMem,
        bytes: Vec<u8>,
        done: Done,
        maybe_compact: bool,
    ) -> Result<(), RaftStorageError> {
        self.writer.submit(WriteOp::Append { bytes, done })?;
        let live = mem.entries.len() as u64;
        if maybe_compact && mem.entries_in_file > live.saturating_mul(2) + COMPACT_SLACK {
            let bytes = mem.encode_compacted(self.log_path())?;
            tracing::debug!(
                live,
                in_file = mem.entries_in_file,
                "scheduling raft log compaction"
            );
            self.writer.submit(WriteOp::Replace {
                bytes,
                done: Done::Nothing,
            })?;
            mem.entries_in_file = live;
        }
        Ok(())
    }

    /// Applies `record` to memory, writes it, and waits until it is durable.
    async fn write_and_wait(
        &self,
        record: LogRecord<&Entry<TypeConfig>>,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> Result<(), StorageError<NodeId>> {
        let err = |e: RaftStorageError| to_storage_error(&e, subject.clone(), verb);
        let mut bytes = Vec::new();
        encode_record(&record, self.log_path(), &mut bytes).map_err(err)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut mem = self.mem.lock();
            match record {
                LogRecord::Truncate { since } => mem.truncate(since),
                LogRecord::Purge { upto } => mem.purge(upto),
                LogRecord::Entry { .. } | LogRecord::Committed { .. } => {}
            }
            self.submit_locked(&mut mem, bytes, Done::Reply(tx), true)
                .map_err(err)?;
        }
        match rx.await {
            Ok(result) => result.map_err(err),
            Err(_) => Err(err(RaftStorageError::WriterFailed {
                path: self.log_path().to_path_buf(),
                reason: "the writer thread exited before completing the write".into(),
            })),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStoreReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.mem.lock().read(&range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.mem.lock().read(&range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStoreReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let mem = self.mem.lock();
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogStoreReader {
            mem: self.mem.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote_path = self.dir.join(VOTE_FILE);
        let err = |e: RaftStorageError| to_storage_error(&e, ErrorSubject::Vote, ErrorVerb::Write);
        let bytes = serde_json::to_vec(vote).map_err(|source| {
            err(RaftStorageError::Encode {
                what: "raft vote",
                path: vote_path.clone(),
                source,
            })
        })?;
        let (tx, rx) = oneshot::channel();
        self.writer
            .submit(WriteOp::Vote {
                bytes,
                done: Done::Reply(tx),
            })
            .map_err(err)?;
        match rx.await {
            Ok(result) => result.map_err(err)?,
            Err(_) => {
                return Err(err(RaftStorageError::WriterFailed {
                    path: vote_path,
                    reason: "the writer thread exited before saving the vote".into(),
                }))
            }
        }
        self.mem.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.mem.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let err = |e: RaftStorageError| to_storage_error(&e, ErrorSubject::Store, ErrorVerb::Write);
        let mut bytes = Vec::new();
        let record = LogRecord::<&Entry<TypeConfig>>::Committed { log_id: committed };
        encode_record(&record, self.log_path(), &mut bytes).map_err(err)?;
        let mut mem = self.mem.lock();
        mem.committed = committed;
        self.submit_locked(&mut mem, bytes, Done::Nothing, false)
            .map_err(err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.mem.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for entry in &entries {
            encode_record(&LogRecord::Entry { entry }, self.log_path(), &mut bytes).map_err(
                |e| to_storage_error(&e, ErrorSubject::Log(entry.log_id), ErrorVerb::Write),
            )?;
        }
        let mut mem = self.mem.lock();
        mem.entries_in_file += entries.len() as u64;
        for entry in entries {
            mem.entries.insert(entry.log_id.index, entry);
        }
        // Readable now; durable (and acknowledged through `callback`) after the fsync.
        self.submit_locked(&mut mem, bytes, Done::Flushed(callback), false)
            .map_err(|e| to_storage_error(&e, ErrorSubject::Logs, ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(since = %log_id, "truncating the raft log");
        let record = LogRecord::Truncate {
            since: log_id.index,
        };
        self.write_and_wait(record, ErrorSubject::Log(log_id), ErrorVerb::Delete)
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(upto = %log_id, "purging the raft log");
        let record = LogRecord::Purge { upto: log_id };
        self.write_and_wait(record, ErrorSubject::Log(log_id), ErrorVerb::Delete)
            .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::EntryPayload;
    use rafka_metadata::MetadataRecord;

    use super::*;
    use crate::MetadataBatch;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(MetadataBatch {
                records: vec![MetadataRecord::ClusterId {
                    cluster_id: format!("c{index}"),
                }],
            }),
        }
    }

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
        indexes.map(|i| entry(term, i)).collect()
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    async fn log_state(store: &mut LogStore) -> (Option<LogId<NodeId>>, Option<LogId<NodeId>>) {
        let state = store.get_log_state().await.unwrap();
        (state.last_purged_log_id, state.last_log_id)
    }

    #[tokio::test]
    async fn entries_vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries(1, 0..=4)).await.unwrap();
            store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            store.save_committed(Some(log_id(1, 1, 3))).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        let read = store.try_get_log_entries(0..5).await.unwrap();
        assert_eq!(read, entries(1, 0..=4));
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(Vote::new_committed(1, 1))
        );
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));
        assert_eq!(log_state(&mut store).await, (None, Some(log_id(1, 1, 4))));
    }

    #[tokio::test]
    async fn every_kind_of_entry_reads_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = std::collections::BTreeMap::from([
            (1, openraft::BasicNode::new("10.0.0.1:9093")),
            (2, openraft::BasicNode::new("10.0.0.2:9093")),
        ]);
        let written = vec![
            Entry::<TypeConfig> {
                log_id: log_id(1, 1, 0),
                payload: EntryPayload::Membership(openraft::Membership::new(
                    vec![std::collections::BTreeSet::from([1, 2])],
                    nodes,
                )),
            },
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            entry(1, 2),
        ];
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(written.clone()).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), written);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_on_reopen_and_the_log_stays_appendable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries(1, 0..=2)).await.unwrap();
        }
        let good_len = std::fs::metadata(&path).unwrap().len();
        // A crash mid-write: the next record's header and half its payload.
        let mut torn = Vec::new();
        encode_record(
            &LogRecord::Entry {
                entry: &entry(1, 3),
            },
            &path,
            &mut torn,
        )
        .unwrap();
        torn.truncate(torn.len() / 2);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn).unwrap();
        drop(file);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        store.blocking_append([entry(2, 3)]).await.unwrap();
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2, 3]);
        assert_eq!(log_state(&mut store).await.1, Some(log_id(2, 1, 3)));
    }

    #[tokio::test]
    async fn a_record_with_a_bad_checksum_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries(1, 0..=1)).await.unwrap();
        }
        // Two more whole records, the first with a flipped payload byte: a group
        // write whose pages only partly reached the disk.
        let mut tail = Vec::new();
        encode_record(
            &LogRecord::Entry {
                entry: &entry(1, 2),
            },
            &path,
            &mut tail,
        )
        .unwrap();
        let last = tail.len() - 2;
        tail[last] ^= 0xff;
        encode_record(
            &LogRecord::Entry {
                entry: &entry(1, 3),
            },
            &path,
            &mut tail,
        )
        .unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&tail).unwrap();
        drop(file);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![0, 1]);
    }

    #[tokio::test]
    async fn purge_and_truncate_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries(1, 0..=9)).await.unwrap();
            store.purge(log_id(1, 1, 3)).await.unwrap();
            store.truncate(log_id(1, 1, 8)).await.unwrap();
            assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
        assert_eq!(
            log_state(&mut store).await,
            (Some(log_id(1, 1, 3)), Some(log_id(1, 1, 7)))
        );
        // A purge beyond the last entry leaves an empty log whose last id is the purged one.
        store.purge(log_id(1, 1, 20)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert!(indexes(&mut store).await.is_empty());
        assert_eq!(
            log_state(&mut store).await,
            (Some(log_id(1, 1, 20)), Some(log_id(1, 1, 20)))
        );
    }

    #[tokio::test]
    async fn an_overwritten_suffix_reads_back_as_the_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries(1, 0..=5)).await.unwrap();
            store.truncate(log_id(1, 1, 3)).await.unwrap();
            store.blocking_append(entries(2, 3..=4)).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        let read = store.try_get_log_entries(..).await.unwrap();
        let mut expected = entries(1, 0..=2);
        expected.extend(entries(2, 3..=4));
        assert_eq!(read, expected);
    }

    #[tokio::test]
    async fn a_log_far_larger_than_its_live_entries_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries(1, 1..=3000)).await.unwrap();
            store
                .save_committed(Some(log_id(1, 1, 2990)))
                .await
                .unwrap();
            let before = std::fs::metadata(&path).unwrap().len();
            store.purge(log_id(1, 1, 2900)).await.unwrap();
            // The rewrite is queued behind the purge; a vote round-trips the queue.
            store.save_vote(&Vote::new(1, 1)).await.unwrap();
            let after = std::fs::metadata(&path).unwrap().len();
            assert!(
                after * 10 < before,
                "{after} bytes after compaction, {before} before"
            );
            // Appends after the rewrite land in the new file.
            store
                .blocking_append(entries(1, 3001..=3002))
                .await
                .unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, (2901..=3002).collect::<Vec<_>>());
        assert_eq!(
            log_state(&mut store).await,
            (Some(log_id(1, 1, 2900)), Some(log_id(1, 1, 3002)))
        );
        assert_eq!(
            store.read_committed().await.unwrap(),
            Some(log_id(1, 1, 2990))
        );
    }

    #[tokio::test]
    async fn reads_of_empty_or_inverted_ranges_return_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 0..=9)).await.unwrap();
        assert!(store.try_get_log_entries(5..5).await.unwrap().is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = store.try_get_log_entries(7..3).await.unwrap();
        assert!(inverted.is_empty());
        assert!(store.try_get_log_entries(..0).await.unwrap().is_empty());
        assert_eq!(store.try_get_log_entries(8..).await.unwrap().len(), 2);
        let mut reader = store.get_log_reader().await;
        assert_eq!(
            reader.try_get_log_entries(2..=4).await.unwrap(),
            entries(1, 2..=4)
        );
    }

    #[test]
    fn a_file_without_the_magic_fails_the_open_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), b"not a raft log").unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, RaftStorageError::Corrupt { offset: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(LOG_FILE), "{err}");
    }

    #[test]
    fn a_checksummed_record_that_does_not_decode_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let payload = br#"{"no_such_op":{}}"#;
        let mut bytes = LOG_MAGIC.to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        std::fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, RaftStorageError::Corrupt { offset, .. } if offset == LOG_MAGIC.len() as u64),
            "{err}"
        );
    }
}

//! One hosted partition: its log plus the replica state the metadata image gives it.
//!
//! The partition owns the high watermark (HW): the offset below which records are
//! committed and visible to consumers. As leader, HW = the smallest log end offset
//! (LEO) over the ISR, where a follower's LEO is the offset of its latest fetch; it
//! only moves forward, and not at all while the ISR is smaller than
//! `min.insync.replicas` (Kafka 4.0). A member being added to the ISR counts before the
//! controller has committed it (Kafka's "maximal ISR"), so a replica that becomes
//! in-sync can never be elected with less than the HW. As follower, HW = min(the
//! leader's HW, own LEO). Waiters (acks=all produces, long-poll fetches) watch the HW.
//!
//! The leader also tracks, per follower, when it was last caught up: a follower that
//! has not been caught up for `replica.lag.time.max.ms` is proposed for removal from
//! the ISR, and one that reaches the HW is proposed for addition (both go to the
//! controller as AlterPartition; one proposal in flight at a time).
//!
//! The log sits behind an `RwLock<Option<_>>` so topic deletion can take it away from
//! under in-flight requests: they then see the partition as gone rather than writing
//! into a deleted directory.
//!
//! Flush policy (`flush.messages`, `flush.ms`; read from two atomics, so the default,
//! "never", costs the append path one load). With `flush.messages=1`, the durable
//! mode, the leader counts its own *durable end* (what is fsynced,
//! [`PartitionLog::synced_end_offset`]) for the HW instead of its LEO, and followers
//! fsync before they report a new LEO (see `rafka-replication`), so a record is
//! committed, and acknowledged, only once it is on stable storage on the leader and on
//! every ISR member counted. Syncs run off the async runtime, one round at a time per
//! partition ([`Partition::request_sync`]): requests arriving while a round runs are
//! all served by the next one, which covers everything appended before it starts
//! (group commit). With `flush.messages=N>1` an append that leaves N or more messages
//! unsynced starts a round in the background; `flush.ms` is the broker's syncer task
//! ([`crate::ReplicaManager::run_log_syncer`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use rafka_storage::{AppendInfo, LogConfig, PartitionLog, StorageError, NO_FLUSH};
use tokio::sync::watch;
use uuid::Uuid;

use crate::errors::KafkaError;

/// What the metadata image says about this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Effective `min.insync.replicas` for the topic.
    pub min_insync_replicas: usize,
}

/// What the leader knows about one follower.
#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The follower's log end offset as of its latest fetch (-1 until it fetches from
    /// this leader in this epoch).
    log_end_offset: i64,
    /// Last time (ms) the follower was known to hold everything the leader had.
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end offset when the follower last fetched.
    leader_end_offset_at_last_fetch: i64,
}

/// An AlterPartition this leader sent and the image has not reflected yet.
#[derive(Debug, Clone)]
struct PendingIsrChange {
    isr: Vec<i32>,
    /// The partition epoch the request was based on.
    partition_epoch: i32,
}

/// Leader-only bookkeeping, reset at every leadership change.
#[derive(Debug, Default)]
struct LeaderBook {
    followers: HashMap<i32, FollowerProgress>,
    pending: Option<PendingIsrChange>,
}

/// An ISR change this leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Outcome of checking a follower's fetch position against this leader's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerPosition {
    /// The follower's log matches ours up to its fetch offset.
    Consistent,
    /// The follower's log diverges: it must truncate to at most `end_offset` (KIP-320).
    Diverging { epoch: i32, end_offset: i64 },
}

/// Sync rounds of one partition: at most one runs at a time.
#[derive(Debug, Default)]
struct SyncRounds {
    /// A round is running (on a blocking thread).
    running: bool,
    /// A sync was requested after the running round started: run one more.
    again: bool,
    /// Rounds started so far, the running one included.
    started: u64,
}

/// What the sync rounds have done, for the requests waiting on them.
#[derive(Debug, Clone, Default)]
struct SyncOutcome {
    /// Rounds finished (they finish in the order they start).
    finished: u64,
    /// The error of the last finished round, if it failed.
    error: Option<KafkaError>,
}

/// Told when a partition's log grows or its high watermark moves: how a leader's
/// replication session for one follower learns, without polling, which of its
/// partitions have something new.
pub trait ChangeListener: Send + Sync {
    fn partition_changed(&self, topic_id: Uuid, partition: i32);
}

/// A partition replica hosted by this broker.
pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    node_id: i32,
    dir: PathBuf,
    log: RwLock<Option<PartitionLog>>,
    state: RwLock<ReplicaState>,
    high_watermark: watch::Sender<i64>,
    /// Bumped on every change of leader, epoch or ISR, so waiters can re-check.
    state_version: watch::Sender<u64>,
    leader_book: Mutex<LeaderBook>,
    /// Told when the log grows or the high watermark moves (as leader): the
    /// replication sessions of the followers fetching this partition.
    listeners: Mutex<Vec<Weak<dyn ChangeListener>>>,
    /// `flush.messages` and `flush.ms` of the log config ([`NO_FLUSH`] = never).
    flush_messages: AtomicI64,
    flush_ms: AtomicI64,
    sync_rounds: Mutex<SyncRounds>,
    sync_outcome: watch::Sender<SyncOutcome>,
    /// As follower: the leader's high watermark as last received.
    leader_high_watermark: AtomicI64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The file recording which topic id a partition directory belongs to (as in Kafka).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Reads the topic id recorded in a partition directory, if any.
pub fn recorded_topic_id(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

fn write_partition_metadata(dir: &Path, topic_id: Uuid) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{PARTITION_METADATA_FILE}.tmp"));
    std::fs::write(&tmp, format!("version: 0\ntopic_id: {topic_id}\n"))?;
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA_FILE))
}

impl Partition {
    /// Opens (recovering if needed) the partition's log in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: PathBuf,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        node_id: i32,
        config: LogConfig,
        state: ReplicaState,
    ) -> Result<Partition, StorageError> {
        write_partition_metadata(&dir, topic_id)?;
        let (flush_messages, flush_ms) = (config.flush_messages, config.flush_ms);
        let log = PartitionLog::open(dir.clone(), config)?;
        let (high_watermark, _) = watch::channel(log.checkpointed_high_watermark().unwrap_or(0));
        let partition = Partition {
            topic: topic.to_string(),
            topic_id,
            index,
            node_id,
            dir,
            log: RwLock::new(Some(log)),
            state: RwLock::new(ReplicaState { leader: -1, ..state.clone() }),
            high_watermark,
            state_version: watch::channel(0).0,
            leader_book: Mutex::new(LeaderBook::default()),
            listeners: Mutex::new(Vec::new()),
            flush_messages: AtomicI64::new(flush_messages),
            flush_ms: AtomicI64::new(flush_ms),
            sync_rounds: Mutex::new(SyncRounds::default()),
            sync_outcome: watch::channel(SyncOutcome::default()).0,
            leader_high_watermark: AtomicI64::new(0),
        };
        partition.set_state(state)?;
        Ok(partition)
    }

    /// This broker's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log, or UNKNOWN_TOPIC_OR_PARTITION once the partition has been deleted.
    pub fn log(&self) -> Result<LogRef<'_>, KafkaError> {
        let guard = self.log.read();
        if guard.is_none() {
            return Err(ResponseError::UnknownTopicOrPartition.into());
        }
        Ok(LogRef(guard))
    }

    pub fn state(&self) -> ReplicaState {
        self.state.read().clone()
    }

    /// Applies a new log configuration (an invalid one is logged and ignored).
    pub fn update_log_config(&self, config: LogConfig) {
        let Ok(log) = self.log() else { return };
        if log.config() == config {
            return;
        }
        if config.validate().is_ok() {
            self.flush_messages.store(config.flush_messages, Ordering::Relaxed);
            self.flush_ms.store(config.flush_ms, Ordering::Relaxed);
        }
        log.update_config(config);
        drop(log);
        // Leaving the durable mode lets the HW count the LEO again.
        self.maybe_advance_high_watermark();
    }

    /// `flush.messages`: 1 is the durable mode, [`NO_FLUSH`] never syncs because of it.
    pub fn flush_messages(&self) -> i64 {
        self.flush_messages.load(Ordering::Relaxed)
    }

    /// `flush.ms`: [`NO_FLUSH`] never syncs because of it.
    pub fn flush_ms(&self) -> i64 {
        self.flush_ms.load(Ordering::Relaxed)
    }

    /// `flush.messages=1`: records count (for the HW, and as follower for the fetch
    /// offset reported to the leader) only once fsynced.
    pub fn is_durable(&self) -> bool {
        self.flush_messages() == 1
    }

    /// Messages appended and not yet fsynced (LEO − durable end).
    pub fn unsynced_messages(&self) -> i64 {
        self.log().map_or(0, |log| log.log_end_offset() - log.synced_end_offset())
    }

    /// fsyncs what the log appended since its last sync (blocking: call it off the
    /// async runtime), then lets the HW follow the new durable end. Concurrent callers
    /// share fsyncs ([`PartitionLog::sync_appended`]). A failure is logged here.
    pub fn sync_log(&self) -> Result<i64, KafkaError> {
        let synced = self.log().and_then(|log| log.sync_appended().map_err(KafkaError::from));
        match &synced {
            Ok(_) => self.follow_durable_end(),
            Err(e) if e.code == ResponseError::KafkaStorageError => {
                tracing::error!(topic = %self.topic, partition = self.index, error = ?e.message, "fsync of the partition log failed");
            }
            Err(e) => tracing::debug!(topic = %self.topic, partition = self.index, error = ?e.message, "partition log not synced"),
        }
        synced
    }

    /// After the durable end moved: the HW may follow it.
    fn follow_durable_end(&self) {
        if self.is_leader() {
            self.maybe_advance_high_watermark();
        } else {
            self.update_follower_high_watermark(self.leader_high_watermark.load(Ordering::Relaxed));
        }
    }

    /// Starts a sync round on a blocking thread, or asks the running one to be followed
    /// by another: returns the round that covers everything appended before this call
    /// (await it with [`Partition::wait_synced`]). Needs a Tokio runtime.
    pub fn request_sync(self: &Arc<Self>) -> u64 {
        let mut rounds = self.sync_rounds.lock();
        if rounds.running {
            rounds.again = true;
            return rounds.started + 1;
        }
        rounds.running = true;
        rounds.started += 1;
        let round = rounds.started;
        drop(rounds);
        let partition = self.clone();
        tokio::task::spawn_blocking(move || partition.run_sync_rounds());
        round
    }

    fn run_sync_rounds(&self) {
        loop {
            // A panic must not leave `running` set: no round would ever run again.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sync_log()))
                .unwrap_or_else(|_| Err(KafkaError::with_message(ResponseError::UnknownServerError, "the log sync panicked")));
            self.sync_outcome.send_modify(|outcome| {
                outcome.finished += 1;
                outcome.error = result.err();
            });
            let mut rounds = self.sync_rounds.lock();
            if !std::mem::take(&mut rounds.again) {
                rounds.running = false;
                return;
            }
            rounds.started += 1;
        }
    }

    /// Waits for sync round `round` to finish and checks that the log is durable up to
    /// `offset`: KAFKA_STORAGE_ERROR (or the round's other error) if the round failed,
    /// NOT_LEADER_OR_FOLLOWER if a truncation took the records away meanwhile,
    /// REQUEST_TIMED_OUT at `deadline`.
    pub async fn wait_synced(&self, round: u64, offset: i64, deadline: tokio::time::Instant) -> Result<(), KafkaError> {
        let mut outcomes = self.sync_outcome.subscribe();
        let finished = tokio::time::timeout_at(deadline, outcomes.wait_for(|o| o.finished >= round)).await;
        let error = match finished {
            Ok(Ok(outcome)) => outcome.error.clone(),
            Ok(Err(_)) => None, // the sender lives as long as `self`
            Err(_) => {
                return Err(KafkaError::with_message(
                    ResponseError::RequestTimedOut,
                    "the batch was not synced to disk before the request timeout",
                ))
            }
        };
        if self.log()?.synced_end_offset() >= offset {
            return Ok(());
        }
        Err(match error {
            Some(e) if e.code == ResponseError::KafkaStorageError => KafkaError::with_message(
                ResponseError::KafkaStorageError,
                format!("the batch could not be synced to disk: {}", e.message.as_deref().unwrap_or("I/O error")),
            ),
            Some(e) => e,
            None => KafkaError::with_message(ResponseError::NotLeaderOrFollower, "the log was truncated before the batch was synced"),
        })
    }

    /// The flush policy's part of a leader append ending at `end` (last offset + 1):
    /// in the durable mode, the sync round to wait for before acknowledging (none if
    /// `end` is already durable); with `flush.messages=N>1`, a background round once N
    /// messages are unsynced. Does nothing under the default policy.
    pub fn sync_after_append(self: &Arc<Self>, end: i64) -> Option<u64> {
        let policy = self.flush_messages();
        if policy == NO_FLUSH {
            return None;
        }
        let (leo, durable) = {
            let log = self.log().ok()?;
            (log.log_end_offset(), log.synced_end_offset())
        };
        if policy == 1 {
            return (durable < end).then(|| self.request_sync());
        }
        if leo - durable >= policy {
            self.request_sync();
        }
        None
    }

    /// Applies what the metadata image says now. Becoming leader (or a new leader
    /// epoch) starts the follower bookkeeping afresh: in-sync followers count as caught
    /// up from now, and every follower's LEO is unknown until it fetches.
    ///
    /// The new epoch is recorded under the state lock: `append_as_follower` holds that
    /// lock (shared) across its append, so no answer from the previous leader can land
    /// between the epoch's start offset being taken and this broker leading.
    pub fn set_state(&self, state: ReplicaState) -> Result<(), StorageError> {
        let previous = {
            let mut current = self.state.write();
            self.record_leader_epoch(&state)?;
            std::mem::replace(&mut *current, state.clone())
        };
        {
            let mut book = self.leader_book.lock();
            let new_term = previous.leader != state.leader || previous.leader_epoch != state.leader_epoch;
            if state.leader != self.node_id {
                *book = LeaderBook::default();
            } else if new_term {
                let now = crate::handlers::now_ms();
                book.pending = None;
                book.followers = state
                    .replicas
                    .iter()
                    .filter(|r| **r != self.node_id)
                    .map(|r| {
                        (*r, FollowerProgress {
                            log_end_offset: -1,
                            last_caught_up_ms: if state.isr.contains(r) { now } else { 0 },
                            last_fetch_ms: 0,
                            leader_end_offset_at_last_fetch: -1,
                        })
                    })
                    .collect();
            } else if book.pending.as_ref().is_some_and(|p| p.partition_epoch < state.partition_epoch) {
                book.pending = None;
            }
        }
        if previous != state {
            self.state_version.send_modify(|v| *v += 1);
        }
        self.maybe_advance_high_watermark();
        Ok(())
    }

    /// Notified whenever leader, epochs or ISR change.
    pub fn watch_state(&self) -> watch::Receiver<u64> {
        self.state_version.subscribe()
    }

    /// On becoming leader in an epoch, the epoch starts at the current log end (KIP-101),
    /// persisted before any batch of that epoch is written.
    fn record_leader_epoch(&self, state: &ReplicaState) -> Result<(), StorageError> {
        if state.leader != self.node_id {
            return Ok(());
        }
        match self.log.read().as_ref() {
            Some(log) if log.latest_epoch().is_none_or(|e| e < state.leader_epoch) => log.assign_leader_epoch(state.leader_epoch),
            _ => Ok(()),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        self.state.read().leader == self.node_id
    }

    /// Registers `listener` to be told when this partition's log grows or its high
    /// watermark moves; it stays registered until dropped.
    pub fn add_change_listener(&self, listener: Weak<dyn ChangeListener>) {
        let mut listeners = self.listeners.lock();
        listeners.retain(|l| l.strong_count() > 0);
        if !listeners.iter().any(|l| Weak::ptr_eq(l, &listener)) {
            listeners.push(listener);
        }
    }

    /// Tells every live listener that this partition changed.
    pub fn notify_listeners(&self) {
        self.listeners.lock().retain(|l| match l.upgrade() {
            Some(listener) => {
                listener.partition_changed(self.topic_id, self.index);
                true
            }
            None => false,
        });
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Notified whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Waits until the high watermark reaches `required` while this broker still leads
    /// in `leader_epoch`: NOT_LEADER_OR_FOLLOWER as soon as leadership moves, and at
    /// `deadline` NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below
    /// `min.insync.replicas`, else REQUEST_TIMED_OUT.
    pub async fn wait_for_high_watermark(
        &self,
        required: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), KafkaError> {
        let mut hw = self.watch_high_watermark();
        let mut state_changes = self.watch_state();
        loop {
            if *hw.borrow_and_update() >= required {
                return Ok(());
            }
            let state = self.state();
            if state.leader != self.node_id || state.leader_epoch != leader_epoch {
                return Err(KafkaError::with_message(
                    ResponseError::NotLeaderOrFollower,
                    "leadership moved before the batch was replicated to the in-sync replicas",
                ));
            }
            tokio::select! {
                _ = hw.changed() => {}
                _ = state_changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    if *hw.borrow() >= required {
                        return Ok(());
                    }
                    let state = self.state();
                    return Err(if state.isr.len() < state.min_insync_replicas {
                        KafkaError::with_message(
                            ResponseError::NotEnoughReplicasAfterAppend,
                            format!("the ISR shrank to {:?}, below min.insync.replicas={}, after the batch was written", state.isr, state.min_insync_replicas),
                        )
                    } else {
                        KafkaError::with_message(
                            ResponseError::RequestTimedOut,
                            "the batch was not replicated to the in-sync replicas before the request timeout",
                        )
                    });
                }
            }
        }
    }

    /// Checks a client's view of the leader epoch (KIP-320): older → FENCED_LEADER_EPOCH,
    /// newer → UNKNOWN_LEADER_EPOCH. -1 means the client does not know and skips the check.
    pub fn check_leader_epoch(&self, client_epoch: i32) -> Result<(), KafkaError> {
        if client_epoch < 0 {
            return Ok(());
        }
        let ours = self.state.read().leader_epoch;
        match client_epoch.cmp(&ours) {
            std::cmp::Ordering::Less => Err(ResponseError::FencedLeaderEpoch.into()),
            std::cmp::Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch.into()),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// Appends a producer's batches as the leader. With `acks=all` the ISR must hold at
    /// least `min.insync.replicas` members or nothing is appended (NOT_ENOUGH_REPLICAS).
    pub fn append_as_leader(
        &self,
        records: BytesMut,
        acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, KafkaError> {
        // The state lock is held (shared) across the append, as in `append_as_follower`:
        // a new leader epoch recorded by `set_state` then starts after this batch, never
        // under it.
        let state = self.state.read();
        if state.leader != self.node_id {
            return Err(ResponseError::NotLeaderOrFollower.into());
        }
        if acks == -1 && state.isr.len() < state.min_insync_replicas {
            return Err(ResponseError::NotEnoughReplicas.into());
        }
        let info = self.log()?.append(records, state.leader_epoch, now_ms)?;
        drop(state);
        if !self.maybe_advance_high_watermark() {
            self.notify_listeners();
        }
        Ok(info)
    }

    /// Recomputes the HW as leader: the smallest LEO over the maximal ISR (the
    /// committed ISR plus members of a pending addition), never backwards, and not at
    /// all while the committed ISR is below `min.insync.replicas`. Returns whether it moved.
    pub fn maybe_advance_high_watermark(&self) -> bool {
        let state = self.state.read();
        if state.leader != self.node_id || state.isr.len() < state.min_insync_replicas {
            return false;
        }
        let Ok(log) = self.log() else { return false };
        let mut candidate = if self.is_durable() { log.synced_end_offset() } else { log.log_end_offset() };
        drop(log);
        {
            let book = self.leader_book.lock();
            let pending = book.pending.as_ref().map(|p| p.isr.as_slice()).unwrap_or(&[]);
            for member in state.isr.iter().chain(pending.iter()) {
                if *member == self.node_id {
                    continue;
                }
                match book.followers.get(member) {
                    Some(f) => candidate = candidate.min(f.log_end_offset),
                    None => return false,
                }
            }
        }
        drop(state);
        let moved = self.high_watermark.send_if_modified(|hw| {
            if candidate > *hw {
                *hw = candidate;
                true
            } else {
                false
            }
        });
        if moved {
            self.notify_listeners();
        }
        moved
    }

    /// As follower: HW = min(the leader's HW, own LEO, and in the durable mode own
    /// durable end), never backwards except after a truncation below it.
    pub fn update_follower_high_watermark(&self, leader_high_watermark: i64) {
        self.leader_high_watermark.store(leader_high_watermark, Ordering::Relaxed);
        let Ok(log) = self.log() else { return };
        let leo = log.log_end_offset();
        let bound = if self.is_durable() { log.synced_end_offset() } else { leo };
        drop(log);
        self.high_watermark.send_if_modified(|hw| {
            let next = (*hw).max(leader_high_watermark.min(bound)).min(leo);
            let moved = next != *hw;
            *hw = next;
            moved
        });
    }

    /// As follower: applies the leader's last high watermark again, after something
    /// that may lift this replica's bound (a sync in the durable mode).
    pub fn refresh_follower_high_watermark(&self) {
        self.update_follower_high_watermark(self.leader_high_watermark.load(Ordering::Relaxed));
    }

    /// Checks a follower's fetch position (its LEO and the epoch of its last batch)
    /// against this leader's epoch history (KIP-320).
    pub fn check_follower_position(&self, fetch_offset: i64, last_fetched_epoch: i32) -> Result<FollowerPosition, KafkaError> {
        if last_fetched_epoch < 0 {
            return Ok(FollowerPosition::Consistent);
        }
        let log = self.log()?;
        let (epoch, end_offset) = log.end_offset_for_epoch(last_fetched_epoch);
        if epoch < 0 {
            // We know no epoch that old or our history starts later: nothing to compare.
            return Ok(FollowerPosition::Consistent);
        }
        if epoch != last_fetched_epoch || end_offset < fetch_offset {
            return Ok(FollowerPosition::Diverging { epoch, end_offset });
        }
        Ok(FollowerPosition::Consistent)
    }

    /// Records a follower's fetch at `fetch_offset` (its LEO) and advances the HW.
    /// Returns an ISR expansion to propose when the follower, outside the ISR, has
    /// caught up to the HW and to the start of the current leader epoch.
    pub fn record_follower_fetch(&self, replica: i32, fetch_offset: i64, now_ms: i64) -> Option<IsrProposal> {
        let (leader_epoch, partition_epoch, isr) = {
            let state = self.state.read();
            if state.leader != self.node_id {
                return None;
            }
            (state.leader_epoch, state.partition_epoch, state.isr.clone())
        };
        let (leader_end_offset, epoch_start) = match self.log() {
            Ok(log) => (log.log_end_offset(), log.end_offset_for_epoch(leader_epoch - 1).1),
            Err(_) => return None,
        };
        {
            let mut book = self.leader_book.lock();
            let progress = book.followers.get_mut(&replica)?;
            if fetch_offset >= leader_end_offset {
                progress.last_caught_up_ms = now_ms;
            } else if fetch_offset >= progress.leader_end_offset_at_last_fetch && progress.last_fetch_ms > 0 {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
            }
            progress.log_end_offset = fetch_offset;
            progress.last_fetch_ms = now_ms;
            progress.leader_end_offset_at_last_fetch = leader_end_offset;
        }
        self.maybe_advance_high_watermark();
        let hw = self.high_watermark();
        let mut book = self.leader_book.lock();
        if isr.contains(&replica) || book.pending.is_some() || fetch_offset < hw || fetch_offset < epoch_start {
            return None;
        }
        let mut new_isr = isr;
        new_isr.push(replica);
        book.pending = Some(PendingIsrChange { isr: new_isr.clone(), partition_epoch });
        Some(IsrProposal { leader_epoch, partition_epoch, new_isr })
    }

    /// As leader: the ISR without the followers not caught up for `max_lag_ms`, if any
    /// (and no other change is pending).
    pub fn propose_isr_shrink(&self, now_ms: i64, max_lag_ms: i64) -> Option<IsrProposal> {
        let state = self.state.read();
        if state.leader != self.node_id {
            return None;
        }
        let mut book = self.leader_book.lock();
        if book.pending.is_some() {
            return None;
        }
        let lagging: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| *r != self.node_id)
            .filter(|r| book.followers.get(r).is_none_or(|f| now_ms - f.last_caught_up_ms > max_lag_ms))
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let new_isr: Vec<i32> = state.isr.iter().copied().filter(|r| !lagging.contains(r)).collect();
        book.pending = Some(PendingIsrChange { isr: new_isr.clone(), partition_epoch: state.partition_epoch });
        Some(IsrProposal { leader_epoch: state.leader_epoch, partition_epoch: state.partition_epoch, new_isr })
    }

    /// A proposal got its answer (and, if accepted, this broker's image has it): forget
    /// it so the next fetch or check can propose again.
    pub fn isr_change_done(&self, proposal: &IsrProposal) {
        let mut book = self.leader_book.lock();
        if book.pending.as_ref().is_some_and(|p| p.isr == proposal.new_isr && p.partition_epoch == proposal.partition_epoch) {
            book.pending = None;
        }
    }

    /// Appends batches fetched from the leader, unchanged.
    ///
    /// Only while this broker still follows `leader` in `leader_epoch` (checked under
    /// the state lock, so a late answer from a deposed leader can never be appended
    /// after this broker has taken over or moved to another leader).
    pub fn append_as_follower(&self, records: bytes::Bytes, leader: i32, leader_epoch: i32) -> Result<(), KafkaError> {
        let state = self.state.read();
        if state.leader != leader || state.leader_epoch != leader_epoch || leader == self.node_id {
            return Err(ResponseError::FencedLeaderEpoch.into());
        }
        self.log()?.append_replicated(records)?;
        drop(state);
        Ok(())
    }

    /// Truncates a follower's log to `offset` (divergence or out of range), keeping the
    /// HW within the log. Only while this broker still follows `leader` in
    /// `leader_epoch`, checked under the state lock as for `append_as_follower`: a late
    /// answer from a deposed leader must never cut the log of the broker that took over.
    pub fn truncate_as_follower(&self, offset: i64, leader: i32, leader_epoch: i32) -> Result<(), KafkaError> {
        self.as_follower_of(leader, leader_epoch, |log| log.truncate_to(offset))
    }

    /// Empties a follower's log and restarts it at `start` (the leader's log start moved
    /// past our end); the same leadership check as `truncate_as_follower`.
    pub fn restart_as_follower_at(&self, start: i64, leader: i32, leader_epoch: i32) -> Result<(), KafkaError> {
        self.as_follower_of(leader, leader_epoch, |log| log.truncate_fully_and_start_at(start))
    }

    fn as_follower_of(
        &self,
        leader: i32,
        leader_epoch: i32,
        cut: impl FnOnce(&PartitionLog) -> Result<(), StorageError>,
    ) -> Result<(), KafkaError> {
        let state = self.state.read();
        if state.leader != leader || state.leader_epoch != leader_epoch || leader == self.node_id {
            return Err(ResponseError::FencedLeaderEpoch.into());
        }
        let log = self.log()?;
        cut(&log)?;
        let leo = log.log_end_offset();
        drop(log);
        drop(state);
        self.high_watermark.send_if_modified(|hw| {
            if *hw > leo {
                *hw = leo;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    /// Flushes the log and checkpoints the high watermark.
    pub fn flush(&self) -> Result<(), StorageError> {
        if let Some(log) = self.log.read().as_ref() {
            log.flush()?;
            log.checkpoint_high_watermark(self.high_watermark())?;
        }
        if self.is_durable() {
            // The flush moved the durable end.
            self.follow_durable_end();
        }
        Ok(())
    }

    /// Flushes and marks the log cleanly closed (shutdown).
    pub fn close(&self) -> Result<(), StorageError> {
        if let Some(log) = self.log.read().as_ref() {
            log.checkpoint_high_watermark(self.high_watermark())?;
            log.close()?;
        }
        Ok(())
    }

    /// Takes the log away (waiting for in-flight users) and deletes its directory.
    pub fn delete(&self) -> Result<(), StorageError> {
        let log = self.log.write().take();
        match log {
            Some(log) => log.delete(),
            None => Ok(()),
        }
    }
}

/// A borrowed, live partition log.
pub struct LogRef<'a>(RwLockReadGuard<'a, Option<PartitionLog>>);

impl std::ops::Deref for LogRef<'_> {
    type Target = PartitionLog;

    fn deref(&self) -> &PartitionLog {
        // Constructed only when the option is Some.
        self.0.as_ref().expect("LogRef holds a live log")
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;

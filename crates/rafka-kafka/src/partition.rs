//! One hosted partition: its log plus the replica state the metadata image gives it.
//!
//! The partition owns the high watermark (HW): the offset below which records are
//! committed and visible to consumers. HW = the smallest log end offset over the ISR;
//! while this broker is the only ISR member that is its own log end offset. Waiters
//! (acks=all produces, long-poll fetches) watch the HW.
//!
//! The log sits behind an `RwLock<Option<_>>` so topic deletion can take it away from
//! under in-flight requests: they then see the partition as gone rather than writing
//! into a deleted directory.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use parking_lot::{RwLock, RwLockReadGuard};
use rafka_storage::{AppendInfo, LogConfig, PartitionLog, StorageError};
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
        let log = PartitionLog::open(dir.clone(), config)?;
        let (high_watermark, _) = watch::channel(log.checkpointed_high_watermark().unwrap_or(0));
        let partition = Partition {
            topic: topic.to_string(),
            topic_id,
            index,
            node_id,
            dir,
            log: RwLock::new(Some(log)),
            state: RwLock::new(state),
            high_watermark,
        };
        let state = partition.state();
        partition.record_leader_epoch(&state)?;
        partition.maybe_advance_high_watermark();
        Ok(partition)
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

    pub fn set_state(&self, state: ReplicaState) -> Result<(), StorageError> {
        self.record_leader_epoch(&state)?;
        *self.state.write() = state;
        self.maybe_advance_high_watermark();
        Ok(())
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

    pub fn is_leader(&self) -> bool {
        self.state.read().leader == self.node_id
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Notified whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
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
        let (leader_epoch, enough_isr) = {
            let state = self.state.read();
            if state.leader != self.node_id {
                return Err(ResponseError::NotLeaderOrFollower.into());
            }
            (state.leader_epoch, state.isr.len() >= state.min_insync_replicas)
        };
        if acks == -1 && !enough_isr {
            return Err(ResponseError::NotEnoughReplicas.into());
        }
        let info = self.log()?.append(records, leader_epoch, now_ms)?;
        self.maybe_advance_high_watermark();
        Ok(info)
    }

    /// Recomputes the HW. Only this broker's log end offset is known here, so the HW
    /// advances only while this broker is the sole ISR member; follower progress is
    /// reported by the replication layer.
    pub fn maybe_advance_high_watermark(&self) {
        let sole_member = {
            let state = self.state.read();
            state.leader == self.node_id && state.isr == [self.node_id]
        };
        if !sole_member {
            return;
        }
        let Ok(log) = self.log() else { return };
        let leo = log.log_end_offset();
        drop(log);
        self.high_watermark.send_if_modified(|hw| {
            if leo > *hw {
                *hw = leo;
                true
            } else {
                false
            }
        });
    }

    /// Flushes the log and checkpoints the high watermark.
    pub fn flush(&self) -> Result<(), StorageError> {
        if let Some(log) = self.log.read().as_ref() {
            log.flush()?;
            log.checkpoint_high_watermark(self.high_watermark())?;
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

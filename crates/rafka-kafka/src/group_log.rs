//! `__consumer_offsets` as the group coordinator sees it: appends as the partition's
//! leader with `acks=all` rules, waits for the in-sync replicas, and reads for loading.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use rafka_group::coordinator::LogFuture;
use rafka_group::{OffsetsLog, OFFSETS_TOPIC};

use crate::handlers::now_ms;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;

/// Reads for loading ask for this much at a time.
const LOAD_READ_BYTES: usize = 1 << 20;

/// [`OffsetsLog`] on this broker's replicas of `__consumer_offsets`.
#[derive(Debug)]
pub struct ReplicaOffsetsLog {
    replicas: Arc<ReplicaManager>,
}

impl ReplicaOffsetsLog {
    pub fn new(replicas: Arc<ReplicaManager>) -> ReplicaOffsetsLog {
        ReplicaOffsetsLog { replicas }
    }

    fn leading(&self, partition: i32, leader_epoch: i32) -> Result<Arc<Partition>, ResponseError> {
        match self.replicas.get(OFFSETS_TOPIC, partition) {
            Some(p) if p.is_leader() && p.state().leader_epoch == leader_epoch => Ok(p),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }
}

impl OffsetsLog for ReplicaOffsetsLog {
    fn append(&self, partition: i32, leader_epoch: i32, batch: BytesMut) -> Result<(i64, i64), ResponseError> {
        let p = self.leading(partition, leader_epoch)?;
        let info = p.append_as_leader(batch, -1, now_ms()).map_err(|e| e.code)?;
        Ok((info.base_offset, info.last_offset + 1))
    }

    fn wait_committed(&self, partition: i32, leader_epoch: i32, end_offset: i64, timeout: Duration) -> LogFuture {
        let p = self.leading(partition, leader_epoch);
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            p?.wait_for_high_watermark(end_offset, leader_epoch, deadline).await.map_err(|e| e.code)
        })
    }

    fn read(&self, partition: i32, offset: i64) -> Result<(Bytes, i64, i64), String> {
        let p = self
            .replicas
            .get(OFFSETS_TOPIC, partition)
            .ok_or_else(|| format!("{OFFSETS_TOPIC}-{partition} is not hosted here"))?;
        let log = p.log().map_err(|e| format!("{:?}", e.code))?;
        if offset < 0 {
            return Ok((Bytes::new(), log.log_start_offset(), log.log_end_offset()));
        }
        let read = log.read(offset, LOAD_READ_BYTES, i64::MAX, true).map_err(|e| e.to_string())?;
        Ok((read.records, read.log_start_offset, read.log_end_offset))
    }
}

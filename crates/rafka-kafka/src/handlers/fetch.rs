//! Fetch: read committed batches (below the high watermark) from many partitions,
//! long-polling until `min_bytes` are available or `max_wait_ms` passes.
//!
//! Limits follow Kafka: `partition_max_bytes` per partition and `max_bytes` for the
//! whole response, except that the first batch of the first non-empty partition is
//! returned whole even when larger (KIP-74), so a consumer can never get stuck.
//! Incremental fetch sessions (KIP-227) are declined by answering session id 0, which
//! tells clients to keep sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, LeaderIdAndEpoch, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use rafka_metadata::MetadataImage;
use tokio::sync::watch;
use uuid::Uuid;

use crate::context::BrokerContext;
use crate::errors::KafkaError;
use crate::partition::Partition;

/// Kafka's isolation level READ_COMMITTED.
const READ_COMMITTED: i8 = 1;

struct Target {
    topic_name: TopicName,
    topic_id: Uuid,
    /// Resolved name, or None when the topic id is unknown.
    resolved: Option<String>,
    partitions: Vec<(i32, i64, i32, i32)>, // (partition, fetch_offset, partition_max_bytes, current_leader_epoch)
}

fn error_data(index: i32, error: KafkaError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
}

fn lookup(ctx: &BrokerContext, image: &MetadataImage, version: i16, topic: &str, index: i32) -> Result<Arc<Partition>, PartitionData> {
    ctx.leader_partition(image, topic, index).map_err(|e| {
        let data = error_data(index, e);
        // `current_leader` exists from Fetch v12 (KIP-951).
        match (image.partition(topic, index), version >= 12) {
            (Some(p), true) => data.with_current_leader(
                LeaderIdAndEpoch::default().with_leader_id(BrokerId(p.leader)).with_leader_epoch(p.leader_epoch),
            ),
            _ => data,
        }
    })
}

pub async fn handle(ctx: &BrokerContext, request: FetchRequest, version: i16) -> FetchResponse {
    let image = ctx.image();
    let targets: Vec<Target> = request
        .topics
        .into_iter()
        .map(|t| Target {
            resolved: if version >= 13 {
                image.topic_by_id(&t.topic_id).map(|x| x.name.clone())
            } else {
                Some(t.topic.0.to_string())
            },
            topic_name: t.topic,
            topic_id: t.topic_id,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| (p.partition, p.fetch_offset, p.partition_max_bytes, p.current_leader_epoch))
                .collect(),
        })
        .collect();
    let read_committed = request.isolation_level == READ_COMMITTED;
    let asked = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let max_bytes = asked.min(ctx.limits.fetch_max_bytes);
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);

    loop {
        // Subscribe before reading so that an append between the read and the wait
        // still wakes us.
        let mut watchers: Vec<watch::Receiver<i64>> = Vec::new();
        let mut total = 0usize;
        let mut any_error = false;
        let mut responses = Vec::with_capacity(targets.len());
        for target in &targets {
            let mut partitions = Vec::with_capacity(target.partitions.len());
            for &(index, fetch_offset, partition_max, client_epoch) in &target.partitions {
                let data = match &target.resolved {
                    None => Err(error_data(index, ResponseError::UnknownTopicId.into())),
                    Some(name) => lookup(ctx, &image, version, name, index),
                }
                .and_then(|p| {
                    watchers.push(p.watch_high_watermark());
                    read_partition(&p, index, fetch_offset, partition_max, client_epoch, max_bytes.saturating_sub(total), total == 0)
                });
                let data = match data {
                    Ok(d) => d,
                    Err(d) => {
                        any_error = true;
                        d
                    }
                };
                total += data.records.as_ref().map_or(0, |r| r.len());
                let data = if read_committed { data.with_aborted_transactions(Some(vec![])) } else { data };
                partitions.push(data);
            }
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(target.topic_name.clone())
                    .with_topic_id(target.topic_id)
                    .with_partitions(partitions),
            );
        }
        let done = total >= min_bytes || any_error || watchers.is_empty() || tokio::time::Instant::now() >= deadline;
        if done || !wait_for_any(&mut watchers, deadline).await {
            return FetchResponse::default().with_session_id(0).with_responses(responses);
        }
    }
}

/// Waits until any watched high watermark moves; false when the deadline passed.
async fn wait_for_any(watchers: &mut [watch::Receiver<i64>], deadline: tokio::time::Instant) -> bool {
    if watchers.is_empty() {
        tokio::time::sleep_until(deadline).await;
        return false;
    }
    let changes = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
    tokio::time::timeout_at(deadline, changes).await.is_ok()
}

fn read_partition(
    partition: &Partition,
    index: i32,
    fetch_offset: i64,
    partition_max: i32,
    client_epoch: i32,
    remaining: usize,
    first: bool,
) -> Result<PartitionData, PartitionData> {
    partition.check_leader_epoch(client_epoch).map_err(|e| error_data(index, e))?;
    let hw = partition.high_watermark();
    let log = partition.log().map_err(|e| error_data(index, e))?;
    let limit = (partition_max.max(0) as usize).min(remaining);
    let base = PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(hw)
        .with_last_stable_offset(hw)
        .with_log_start_offset(log.log_start_offset());
    match log.read(fetch_offset, limit, hw, first) {
        Ok(read) => Ok(base
            .with_log_start_offset(read.log_start_offset)
            .with_records(Some(read.records))),
        Err(e) => Err(base.with_error_code(KafkaError::from(e).code())),
    }
}

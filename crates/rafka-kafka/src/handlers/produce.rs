//! Produce: validate and append now (in connection order), acknowledge later.
//!
//! `acks=0` sends no response at all, `acks=1` answers after the leader's append, and
//! `acks=all` waits until the high watermark passes the batch or the request's timeout
//! expires (REQUEST_TIMED_OUT). Every partition gets its own error code; one bad
//! partition never fails the others.
//!
//! In the durable mode (`flush.messages=1`) every append starts (or joins) a sync of
//! the leader's log off the runtime ([`Partition::sync_after_append`]); `acks=1` and
//! `acks=all` wait for it before anything else (`acks=all` then also for the HW, which
//! counts only fsynced data), and a failed fsync answers KAFKA_STORAGE_ERROR.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::ResponseError;
use rafka_storage::batch::BatchHeader;
use rafka_metadata::MetadataImage;
use uuid::Uuid;

use super::{message, now_ms, Pending};
use crate::context::BrokerContext;
use crate::errors::KafkaError;
use crate::partition::Partition;

/// Per-partition outcome of the append phase.
struct Appended {
    partition: Arc<Partition>,
    response: PartitionProduceResponse,
    /// Offset the high watermark must reach for acks=all.
    required_hw: i64,
    /// Durable mode: the sync round that must make the batch durable before any ack.
    sync_round: Option<u64>,
    /// The leader epoch the batch was appended in (acks=all waits only while it lasts).
    leader_epoch: i32,
}

enum Outcome {
    Appended(Appended),
    Failed(PartitionProduceResponse),
}

fn failed(index: i32, error: KafkaError) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_error_message(message(&error.message))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

/// Rejects what this broker does not accept before touching the log.
fn check_batches(records: &[u8]) -> Result<(), KafkaError> {
    if records.len() < BatchHeader::SIZE {
        return Err(KafkaError::with_message(
            ResponseError::CorruptMessage,
            format!("record set of {} bytes is shorter than a batch header", records.len()),
        ));
    }
    if records[16] != 2 {
        return Err(KafkaError::with_message(
            ResponseError::UnsupportedForMessageFormat,
            format!("record batch magic {} is not supported; produce v3+ requires magic 2", records[16]),
        ));
    }
    let header = BatchHeader::parse(records)?;
    if header.total_size() != records.len() {
        return Err(KafkaError::with_message(
            ResponseError::InvalidRecord,
            "a produce request must carry exactly one record batch per partition",
        ));
    }
    if header.is_transactional() {
        return Err(KafkaError::with_message(
            ResponseError::InvalidRecord,
            "transactional batches are not supported; idempotent producers (no transactional.id) are",
        ));
    }
    if header.is_control() {
        return Err(KafkaError::with_message(ResponseError::InvalidRecord, "clients may not write control batches"));
    }
    Ok(())
}

/// A compacted topic needs a key on every record (Kafka's `LogValidator`): compaction
/// could not tell which keyless record is the latest. Compressed batches are
/// decompressed for the check. Only leaders check; followers copy what leaders took.
fn check_keys_for_compaction(partition: &Partition, topic: &str, records: &[u8]) -> Result<(), KafkaError> {
    let compacted = partition.log().map(|log| log.config().compact).unwrap_or(false);
    if compacted && rafka_storage::batch::has_record_without_key(records)? {
        return Err(KafkaError::with_message(
            ResponseError::InvalidRecord,
            format!("Compacted topic cannot accept message without key in topic partition {topic}-{}", partition.index),
        ));
    }
    Ok(())
}

/// `current_leader` exists from Produce v10 (KIP-951); older versions must leave it unset.
fn with_leader(response: PartitionProduceResponse, version: i16, leader: i32, epoch: i32) -> PartitionProduceResponse {
    if version < 10 {
        return response;
    }
    response.with_current_leader(LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch))
}

#[allow(clippy::too_many_arguments)]
fn append_one(
    ctx: &BrokerContext,
    image: &MetadataImage,
    version: i16,
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
    now: i64,
) -> Outcome {
    let partition = match ctx.leader_partition(image, topic, index) {
        Ok(p) => p,
        Err(e) => {
            let response = failed(index, e);
            return Outcome::Failed(match image.partition(topic, index) {
                Some(p) => with_leader(response, version, p.leader, p.leader_epoch),
                None => response,
            });
        }
    };
    let records = records.unwrap_or_default();
    if let Err(e) = check_batches(&records).and_then(|()| check_keys_for_compaction(&partition, topic, &records)) {
        return Outcome::Failed(failed(index, e));
    }
    match partition.append_as_leader(BytesMut::from(records), acks, now) {
        Ok(info) => {
            let log_start = partition.log().map(|l| l.log_start_offset()).unwrap_or(-1);
            let leader_epoch = partition.leader_epoch();
            let sync_round = partition.sync_after_append(info.last_offset + 1);
            Outcome::Appended(Appended {
                sync_round,
                leader_epoch,
                response: PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(info.base_offset)
                    .with_log_append_time_ms(info.log_append_time)
                    .with_log_start_offset(log_start),
                required_hw: info.last_offset + 1,
                partition,
            })
        }
        Err(e) => {
            let state = partition.state();
            Outcome::Failed(with_leader(failed(index, e), version, state.leader, state.leader_epoch))
        }
    }
}

/// Appends every partition's batch and returns the acknowledgement to wait for.
pub fn start(ctx: Arc<BrokerContext>, request: ProduceRequest, version: i16) -> Pending {
    let acks = request.acks;
    let now = now_ms();
    let image = ctx.image();
    let mut topics: Vec<(TopicName, Uuid, Vec<Outcome>)> = Vec::new();
    for topic in request.topic_data {
        // v13+ names topics by id only.
        let resolved = if version >= 13 {
            image.topic_by_id(&topic.topic_id).map(|t| t.name.clone())
        } else {
            Some(topic.name.0.to_string())
        };
        let outcomes = topic
            .partition_data
            .into_iter()
            .map(|p| {
                if !matches!(acks, -1..=1) {
                    return Outcome::Failed(failed(
                        p.index,
                        KafkaError::with_message(ResponseError::InvalidRequiredAcks, format!("acks={acks} is not one of -1, 0, 1")),
                    ));
                }
                match &resolved {
                    Some(name) => append_one(&ctx, &image, version, name, p.index, p.records, acks, now),
                    None => Outcome::Failed(failed(p.index, ResponseError::UnknownTopicId.into())),
                }
            })
            .collect();
        topics.push((topic.name, topic.topic_id, outcomes));
    }
    if acks == 0 {
        return Box::pin(std::future::ready(None));
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut responses = Vec::with_capacity(topics.len());
        for (name, topic_id, outcomes) in topics {
            let mut partitions = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                partitions.push(match outcome {
                    Outcome::Failed(r) => r,
                    Outcome::Appended(a) => match wait_for_sync(&a, deadline).await {
                        Err(e) => failed(a.response.index, e),
                        Ok(()) if acks == 1 => a.response,
                        Ok(()) => wait_for_replication(a, deadline).await,
                    },
                });
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_partition_responses(partitions),
            );
        }
        Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
    })
}

/// Durable mode: waits until the leader's log is fsynced past the batch (at once
/// otherwise). A failed fsync is KAFKA_STORAGE_ERROR, logged by the sync itself.
async fn wait_for_sync(appended: &Appended, deadline: tokio::time::Instant) -> Result<(), KafkaError> {
    match appended.sync_round {
        Some(round) => appended.partition.wait_synced(round, appended.required_hw, deadline).await,
        None => Ok(()),
    }
}

/// Waits until the high watermark passes the batch. Answers NOT_LEADER_OR_FOLLOWER
/// as soon as this broker stops leading the partition (the client retries with the new
/// leader; an idempotent producer's retry is recognised as a duplicate), and at the
/// deadline REQUEST_TIMED_OUT, or NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR has
/// shrunk below `min.insync.replicas` meanwhile.
async fn wait_for_replication(appended: Appended, deadline: tokio::time::Instant) -> PartitionProduceResponse {
    let partition = &appended.partition;
    match partition.wait_for_high_watermark(appended.required_hw, appended.leader_epoch, deadline).await {
        Ok(()) => appended.response,
        Err(e) => failed(appended.response.index, e),
    }
}


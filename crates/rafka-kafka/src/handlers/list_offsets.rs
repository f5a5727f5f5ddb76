//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offset lookups.

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::context::BrokerContext;
use crate::errors::KafkaError;
use crate::partition::Partition;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

fn error_response(index: i32, error: KafkaError) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_timestamp(-1)
        .with_offset(-1)
        .with_leader_epoch(-1)
}

fn lookup(partition: &Partition, version: i16, index: i32, timestamp: i64, client_epoch: i32) -> Result<ListOffsetsPartitionResponse, KafkaError> {
    partition.check_leader_epoch(client_epoch)?;
    let log = partition.log()?;
    let hw = partition.high_watermark();
    let epoch = partition.state().leader_epoch;
    let (ts, offset) = match timestamp {
        LATEST => (-1, hw),
        EARLIEST | EARLIEST_LOCAL => (-1, log.log_start_offset()),
        // No tiered storage: nothing has been tiered, which Kafka reports as offset -1.
        LATEST_TIERED => (-1, -1),
        MAX_TIMESTAMP => {
            let (ts, offset) = log.max_timestamp_and_offset();
            if offset >= hw { (-1, -1) } else { (ts, offset) }
        }
        ts if ts >= 0 => match log.offset_for_timestamp(ts)? {
            Some((offset, found_ts)) if offset < hw => (found_ts, offset),
            _ => (-1, -1),
        },
        other => {
            return Err(KafkaError::with_message(
                ResponseError::InvalidRequest,
                format!("timestamp {other} is not a valid ListOffsets target"),
            ))
        }
    };
    // `leader_epoch` exists from v4.
    let leader_epoch = if offset < 0 || version < 4 { -1 } else { epoch };
    Ok(ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_timestamp(ts)
        .with_offset(offset)
        .with_leader_epoch(leader_epoch))
}

pub fn handle(ctx: &BrokerContext, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = ctx.image();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    ctx.leader_partition(&image, &name, p.partition_index)
                        .and_then(|partition| lookup(&partition, version, p.partition_index, p.timestamp, p.current_leader_epoch))
                        .unwrap_or_else(|e| error_response(p.partition_index, e))
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

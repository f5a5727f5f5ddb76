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
    // `leader_epoch` exists from v4. As in Kafka: the log's latest epoch for LATEST, else
    // the epoch that wrote the returned offset (consumers use it to detect truncation).
    let leader_epoch = if offset < 0 || version < 4 {
        -1
    } else if timestamp == LATEST {
        log.latest_epoch().unwrap_or(-1)
    } else {
        epoch_of(&log.leader_epoch_entries(), offset)
    };
    Ok(ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_timestamp(ts)
        .with_offset(offset)
        .with_leader_epoch(leader_epoch))
}

/// The epoch whose range holds `offset`: the last entry starting at or before it.
fn epoch_of(entries: &[rafka_storage::EpochEntry], offset: i64) -> i32 {
    entries
        .iter()
        .take_while(|e| e.start_offset <= offset)
        .last()
        .map_or(-1, |e| e.epoch)
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

#[cfg(test)]
mod tests {
    use super::epoch_of;
    use rafka_storage::EpochEntry;

    #[test]
    fn an_offset_belongs_to_the_last_epoch_starting_at_or_before_it() {
        let entries = [EpochEntry { epoch: 0, start_offset: 0 }, EpochEntry { epoch: 3, start_offset: 10 }];
        assert_eq!(epoch_of(&entries, 0), 0);
        assert_eq!(epoch_of(&entries, 9), 0);
        assert_eq!(epoch_of(&entries, 10), 3);
        assert_eq!(epoch_of(&entries, 99), 3);
        assert_eq!(epoch_of(&[], 5), -1);
    }
}

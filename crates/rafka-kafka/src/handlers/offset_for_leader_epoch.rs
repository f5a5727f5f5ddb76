//! OffsetForLeaderEpoch (KIP-101/KIP-320): the end offset of a leader epoch, so a client
//! or replica can detect that its log diverged from the leader's and truncate.

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::context::BrokerContext;
use crate::errors::KafkaError;

fn answer(ctx: &BrokerContext, topic: &str, partition: i32, current_epoch: i32, epoch: i32) -> Result<(i32, i64), KafkaError> {
    let p = ctx.leader_partition(&ctx.image(), topic, partition)?;
    p.check_leader_epoch(current_epoch)?;
    let log = p.log()?;
    Ok(log.end_offset_for_epoch(epoch))
}

pub fn handle(ctx: &BrokerContext, request: OffsetForLeaderEpochRequest, _version: i16) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| match answer(ctx, &name, p.partition, p.current_leader_epoch, p.leader_epoch) {
                    Ok((epoch, end_offset)) => EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(epoch)
                        .with_end_offset(end_offset),
                    Err(e) => EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_error_code(e.code())
                        .with_leader_epoch(-1)
                        .with_end_offset(-1),
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

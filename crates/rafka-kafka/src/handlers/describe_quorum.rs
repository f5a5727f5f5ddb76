//! DescribeQuorum (KIP-595/KIP-836): the metadata quorum's leader, epoch, high
//! watermark and each voter's and observer's log end offset, as the leader sees them
//! (the command is forwarded to it). The metadata log is the partition
//! `__cluster_metadata-0`, as in Kafka.

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_metadata::controller::{ControllerRequest, ControllerResponse, QuorumReplica};

use super::message;
use crate::context::BrokerContext;
use crate::errors::KafkaError;

pub const METADATA_TOPIC: &str = "__cluster_metadata";

fn replicas(list: &[QuorumReplica], version: i16) -> Vec<ReplicaState> {
    list.iter()
        .map(|r| {
            let state = ReplicaState::default().with_replica_id(BrokerId(r.node_id)).with_log_end_offset(r.log_end_offset);
            if version >= 1 {
                state.with_last_fetch_timestamp(-1).with_last_caught_up_timestamp(-1)
            } else {
                state
            }
        })
        .collect()
}

pub async fn handle(ctx: &BrokerContext, request: DescribeQuorumRequest, version: i16) -> DescribeQuorumResponse {
    let state = match ctx.controller.submit(ControllerRequest::DescribeQuorum).await {
        Ok(ControllerResponse::Quorum(state)) => Ok(state),
        Ok(other) => Err(KafkaError::from(super::admin::unexpected(&other))),
        Err(e) => Err(KafkaError::from(&e)),
    };
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let known_topic = t.topic_name.0.as_str() == METADATA_TOPIC;
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = PartitionData::default().with_partition_index(p.partition_index);
                    if !known_topic || p.partition_index != 0 {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code()).with_leader_id(BrokerId(-1));
                    }
                    match &state {
                        Ok(s) => base
                            .with_leader_id(BrokerId(s.leader_id))
                            .with_leader_epoch(s.leader_epoch)
                            .with_high_watermark(s.high_watermark)
                            .with_current_voters(replicas(&s.voters, version))
                            .with_observers(replicas(&s.observers, version)),
                        Err(e) => {
                            let data = base.with_error_code(e.code()).with_leader_id(BrokerId(-1));
                            if version >= 2 { data.with_error_message(message(&e.message)) } else { data }
                        }
                    }
                })
                .collect();
            TopicData::default().with_topic_name(t.topic_name).with_partitions(partitions)
        })
        .collect();
    let response = DescribeQuorumResponse::default().with_topics(topics);
    if version >= 2 {
        // v2 lists each voter's endpoints; Rafka voters are reached on their gRPC port,
        // which Kafka tools cannot use, so no listener is offered.
        response.with_error_message(None::<StrBytes>)
    } else {
        response
    }
}

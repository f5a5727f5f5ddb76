//! ElectLeaders (KIP-460): preferred or unclean leader election through the controller.
//!
//! Preferred election gives each named partition (or every partition, with a null list)
//! back to its first replica when that replica is alive and in the ISR; unclean election
//! gives a leaderless partition to a live replica even outside the ISR, which may lose
//! acknowledged data and is only done when asked for.

use std::time::Duration;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_metadata::controller::{ControllerRequest, ControllerResponse, ElectionType};

use super::message;
use crate::context::BrokerContext;
use crate::errors::KafkaError;

pub async fn handle(ctx: &BrokerContext, request: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let election = match (version, request.election_type) {
        (0, _) | (_, 0) => Ok(ElectionType::Preferred),
        (_, 1) => Ok(ElectionType::Unclean),
        (_, other) => Err(KafkaError::with_message(ResponseError::InvalidRequest, format!("unknown election type {other}"))),
    };
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let whole_request_error = |e: KafkaError| {
        let results = partitions
            .iter()
            .flatten()
            .map(|(topic, partition)| (topic.clone(), *partition, Err(e.clone())))
            .collect();
        respond(version, if version >= 1 { e.code() } else { 0 }, results)
    };
    let election = match election {
        Ok(e) => e,
        Err(e) => return whole_request_error(e),
    };
    let answer = ctx.controller.submit(ControllerRequest::ElectLeaders { election, partitions: partitions.clone() }).await;
    match answer {
        Ok(ControllerResponse::LeadersElected { offset, results }) => {
            let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64).min(Duration::from_millis(ctx.limits.metadata_apply_timeout_ms));
            ctx.replicas.wait_applied(offset, timeout).await;
            let results = results.into_iter().map(|(t, p, r)| (t, p, r.map_err(KafkaError::from))).collect();
            respond(version, 0, results)
        }
        Ok(other) => whole_request_error(KafkaError::with_message(ResponseError::UnknownServerError, format!("unexpected controller answer {other:?}"))),
        Err(e) => whole_request_error(KafkaError::from(e)),
    }
}

fn respond(version: i16, error_code: i16, results: Vec<(String, i32, Result<(), KafkaError>)>) -> ElectLeadersResponse {
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, result) in results {
        let (code, text) = match result {
            Ok(()) => (0, None),
            Err(e) => (e.code(), e.message.clone()),
        };
        let entry = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message(&text));
        match by_topic.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(entry),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![entry]),
            ),
        }
    }
    let response = ElectLeadersResponse::default().with_replica_election_results(by_topic);
    if version >= 1 {
        response.with_error_code(error_code)
    } else {
        response
    }
}

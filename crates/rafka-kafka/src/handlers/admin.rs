//! Topic administration: CreateTopics, DeleteTopics and CreatePartitions.
//!
//! Each forwards to the controller, which validates and commits the change; the answer
//! is sent only once this broker has applied it, so a client's next request (a produce,
//! a Metadata) already sees the new state here.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_metadata::controller::{ControllerRequest, ControllerResponse, CreateTopicSpec, TopicRef};
use rafka_metadata::ControllerError;
use rafka_metadata::topic_config::TOPIC_CONFIGS;
use uuid::Uuid;

use super::message;
use crate::context::BrokerContext;
use crate::errors::KafkaError;

async fn wait_applied(ctx: &BrokerContext, offset: u64) {
    ctx.replicas
        .wait_applied(offset, Duration::from_millis(ctx.limits.metadata_apply_timeout_ms))
        .await;
}

/// A controller answer of the wrong kind (a version mismatch between nodes).
pub(crate) fn unexpected(response: &ControllerResponse) -> ControllerError {
    ControllerError::InvalidRequest { reason: format!("unexpected controller response {response:?}") }
}

/// Submits a command whose answer is just the metadata offset it committed at.
pub(crate) async fn submit_for_offset(ctx: &BrokerContext, request: ControllerRequest) -> Result<u64, ControllerError> {
    match ctx.controller.submit(request).await? {
        ControllerResponse::Done { offset } => Ok(offset),
        other => Err(unexpected(&other)),
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub async fn create_topics(ctx: &BrokerContext, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let specs: Vec<CreateTopicSpec> = request
        .topics
        .iter()
        .map(|t| CreateTopicSpec {
            name: t.name.0.to_string(),
            num_partitions: Some(t.num_partitions),
            replication_factor: Some(t.replication_factor),
            assignments: (!t.assignments.is_empty()).then(|| {
                t.assignments
                    .iter()
                    .map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect()))
                    .collect::<BTreeMap<_, _>>()
            }),
            configs: t
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect(),
        })
        .collect();
    let submitted = ctx
        .controller
        .submit(ControllerRequest::CreateTopics { specs: specs.clone(), validate_only: request.validate_only })
        .await;
    let results = match submitted {
        Ok(ControllerResponse::TopicsCreated { offset, results }) => {
            wait_applied(ctx, offset).await;
            results
        }
        Ok(other) => specs.iter().map(|_| Err(unexpected(&other))).collect(),
        Err(e) => specs.iter().map(|_| Err(e.clone())).collect(),
    };
    let defaults = ctx.topic_defaults();
    let topics = request
        .topics
        .into_iter()
        .zip(results)
        .map(|(t, result)| match result {
            Ok(created) => {
                let configs = TOPIC_CONFIGS
                    .iter()
                    .filter_map(|def| {
                        defaults.effective(def.name, &created.configs).map(|(value, source)| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(def.name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(source as i8)
                        })
                    })
                    .collect();
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_topic_id(created.topic_id)
                    .with_num_partitions(created.num_partitions)
                    .with_replication_factor(created.replication_factor)
                    .with_configs(if version >= 5 { Some(configs) } else { None })
            }
            Err(e) => {
                let e = KafkaError::from(&e);
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(e.code())
                    .with_error_message(message(&e.message))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub async fn delete_topics(ctx: &BrokerContext, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v6 names topics by name or id in `topics`; older versions list names.
    let refs: Vec<TopicRef> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => TopicRef::Name(name.0.to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        request.topic_names.iter().map(|n| TopicRef::Name(n.0.to_string())).collect()
    };
    let results = match ctx.controller.submit(ControllerRequest::DeleteTopics { topics: refs.clone() }).await {
        Ok(ControllerResponse::TopicsDeleted { offset, results }) => {
            wait_applied(ctx, offset).await;
            results
        }
        Ok(other) => refs.iter().map(|_| Err(unexpected(&other))).collect(),
        Err(e) => refs.iter().map(|_| Err(e.clone())).collect(),
    };
    let responses = refs
        .into_iter()
        .zip(results)
        .map(|(r, result)| {
            let (name, id) = match (&result, &r) {
                (Ok((name, id)), _) => (Some(name.clone()), *id),
                (Err(_), TopicRef::Name(n)) => (Some(n.clone()), Uuid::nil()),
                (Err(_), TopicRef::Id(id)) => (None, *id),
            };
            let response = DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(id);
            match result {
                Ok(_) => response,
                Err(e) => {
                    let e = KafkaError::from(&e);
                    response.with_error_code(e.code()).with_error_message(message(&e.message))
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(ctx: &BrokerContext, request: CreatePartitionsRequest, _version: i16) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut seen = std::collections::HashSet::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let outcome = if !seen.insert(name.clone()) {
            Err(KafkaError::with_message(ResponseError::InvalidRequest, format!("topic {name:?} appears more than once")))
        } else {
            let assignments: Option<Vec<Vec<i32>>> = t
                .assignments
                .map(|a| a.into_iter().map(|x| x.broker_ids.into_iter().map(|b| b.0).collect()).collect());
            let command = ControllerRequest::CreatePartitions {
                topic: name.clone(),
                count: t.count,
                assignments,
                validate_only: request.validate_only,
            };
            match submit_for_offset(ctx, command).await {
                Ok(offset) => {
                    wait_applied(ctx, offset).await;
                    Ok(())
                }
                Err(e) => Err(KafkaError::from(&e)),
            }
        };
        let result = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => result.with_error_code(e.code()).with_error_message(message(&e.message)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

//! Metadata: brokers (advertised on the caller's listener), controller, topics and
//! partitions — and topic auto-creation when the broker and the client allow it.

use std::time::Duration;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_metadata::controller::{ControllerRequest, ControllerResponse, CreateTopicSpec};
use rafka_metadata::names::validate_topic_name;
use rafka_metadata::{MetadataImage, TopicImage};
use tracing::info;
use uuid::Uuid;

use crate::connection::ConnectionInfo;
use crate::context::BrokerContext;

/// Operations a client may perform on a topic, as a Kafka ACL-operation bit set. With no
/// authorizer every supported operation is allowed: READ, WRITE, CREATE, DELETE, ALTER,
/// DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC_OPERATIONS: i32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Cluster operations: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// `(id, host, port, rack)` of every live (unfenced) broker with an endpoint on `listener`.
pub fn broker_endpoints<'a>(
    image: &'a MetadataImage,
    listener: &'a str,
) -> impl Iterator<Item = (i32, String, u16, Option<String>)> + 'a {
    image.brokers.values().filter(|b| !image.fenced.contains(&b.broker_id)).filter_map(move |b| {
        b.endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (b.broker_id, e.host.clone(), e.port, b.rack.clone()))
    })
}

fn topic_response(topic: &TopicImage, version: i16, include_ops: bool) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .values()
        .map(|p| {
            let error = if p.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|b| BrokerId(*b)).collect())
                .with_isr_nodes(p.isr.iter().map(|b| BrokerId(*b)).collect())
        })
        .collect();
    let response = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name == rafka_group::OFFSETS_TOPIC)
        .with_partitions(partitions);
    if include_ops && version >= 8 {
        response.with_topic_authorized_operations(TOPIC_OPERATIONS)
    } else {
        response.with_topic_authorized_operations(i32::MIN)
    }
}

fn error_topic(name: Option<String>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
        .with_topic_authorized_operations(i32::MIN)
}

/// Longest a Metadata answer waits for a failover this broker has reported.
const METADATA_FAILOVER_HOLD: std::time::Duration = std::time::Duration::from_millis(1500);

pub async fn handle(
    ctx: &BrokerContext,
    conn: &ConnectionInfo,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // Answer with the leaders elected for a failover in progress rather than the dead one.
    ctx.failover_gate.settle(METADATA_FAILOVER_HOLD).await;
    let mut image = ctx.image();
    // v0 has no null: an empty list means every topic. From v1 null means every topic.
    let requested = match request.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create = ctx.limits.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);

    if let (Some(requested), true) = (&requested, allow_auto_create) {
        let missing: Vec<CreateTopicSpec> = requested
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| validate_topic_name(n).is_ok() && image.topic_by_name(n).is_none())
            .map(|name| CreateTopicSpec {
                name,
                ..Default::default()
            })
            .collect();
        if !missing.is_empty() {
            let command = ControllerRequest::CreateTopics { specs: missing.clone(), validate_only: false };
            if let Ok(ControllerResponse::TopicsCreated { offset, results }) = ctx.controller.submit(command).await {
                for (spec, result) in missing.iter().zip(&results) {
                    match result {
                        Ok(created) => info!(topic = %spec.name, partitions = created.num_partitions, "auto-created topic"),
                        Err(e) => info!(topic = %spec.name, error = %e, "auto-creation refused"),
                    }
                }
                ctx.replicas
                    .wait_applied(offset, Duration::from_millis(ctx.limits.metadata_apply_timeout_ms))
                    .await;
                image = ctx.image();
            }
        }
    }

    let include_ops = request.include_topic_authorized_operations;
    let topics: Vec<MetadataResponseTopic> = match requested {
        None => image
            .topics
            .values()
            .map(|t| topic_response(t, version, include_ops))
            .collect(),
        Some(requested) => requested
            .iter()
            .map(|t| match &t.name {
                Some(name) => {
                    let name = name.0.to_string();
                    if validate_topic_name(&name).is_err() {
                        return error_topic(Some(name), Uuid::nil(), ResponseError::InvalidTopicException);
                    }
                    match image.topic_by_name(&name) {
                        Some(topic) => topic_response(topic, version, include_ops),
                        None => error_topic(Some(name), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                    }
                }
                None => match image.topic_by_id(&t.topic_id) {
                    Some(topic) => topic_response(topic, version, include_ops),
                    None => error_topic(None, t.topic_id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };

    let brokers = broker_endpoints(&image, &conn.listener)
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port as i32)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    let cluster_ops = if request.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        i32::MIN
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(ctx.cluster_id.clone())))
        .with_controller_id(BrokerId(ctx.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

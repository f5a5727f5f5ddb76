//! FindCoordinator: which broker coordinates a consumer group — the leader of the
//! group's `__consumer_offsets` partition (Kafka's hash, so every tool agrees) — with
//! that broker's address on the caller's listener. The first lookup creates
//! `__consumer_offsets` (compacted, `offsets.topic.*` settings).
//!
//! Transaction coordinators do not exist here: those keys are refused with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as InitProducerId refuses a transactional id.
//!
//! (Advertising the API matters beyond groups too: librdkafka decides that a broker
//! supports LZ4 only when ApiVersions lists FindCoordinator.)

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_group::{partition_for, OFFSETS_TOPIC};
use rafka_metadata::controller::{ControllerRequest, ControllerResponse, CreateTopicSpec};
use rafka_metadata::MetadataImage;
use tracing::{info, warn};

use super::metadata::broker_endpoints;
use crate::connection::ConnectionInfo;
use crate::context::BrokerContext;
use crate::errors::KafkaError;

/// How `__consumer_offsets` is created (`offsets.topic.*`).
#[derive(Debug, Clone)]
pub struct OffsetsTopicSettings {
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub segment_bytes: i64,
}

impl Default for OffsetsTopicSettings {
    fn default() -> Self {
        OffsetsTopicSettings { num_partitions: 50, replication_factor: 3, segment_bytes: 104_857_600 }
    }
}

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Creates `__consumer_offsets` if it does not exist yet. Errors are retriable for the
/// client (COORDINATOR_NOT_AVAILABLE) and logged once per attempt.
async fn ensure_offsets_topic(ctx: &BrokerContext) -> Result<(), KafkaError> {
    if ctx.image().topic_by_name(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let settings = &ctx.offsets_topic;
    let live = ctx.image().live_brokers().len();
    if (settings.replication_factor as usize) > live {
        warn!(
            offsets_topic_replication_factor = settings.replication_factor,
            live_brokers = live,
            "cannot create {OFFSETS_TOPIC}: offsets.topic.replication.factor={} but only {live} broker(s) are alive; \
             consumer groups wait until enough brokers are up (or lower offsets.topic.replication.factor)",
            settings.replication_factor
        );
        return Err(KafkaError::with_message(
            ResponseError::CoordinatorNotAvailable,
            format!(
                "{OFFSETS_TOPIC} needs {} live brokers (offsets.topic.replication.factor) and {live} are alive",
                settings.replication_factor
            ),
        ));
    }
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), settings.segment_bytes.to_string()),
    ]);
    let spec = CreateTopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: Some(settings.num_partitions),
        replication_factor: Some(settings.replication_factor),
        assignments: None,
        configs,
    };
    let command = ControllerRequest::CreateTopics { specs: vec![spec], validate_only: false };
    match ctx.controller.submit(command).await {
        Ok(ControllerResponse::TopicsCreated { offset, results }) => {
            match results.first() {
                Some(Ok(created)) => info!(partitions = created.num_partitions, replication_factor = settings.replication_factor, "created {OFFSETS_TOPIC}"),
                Some(Err(e)) => info!(error = %e, "{OFFSETS_TOPIC} not created (another broker may have created it)"),
                None => {}
            }
            ctx.replicas.wait_applied(offset, Duration::from_millis(ctx.limits.metadata_apply_timeout_ms)).await;
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(error = %e, "cannot create {OFFSETS_TOPIC}");
            Err(KafkaError::with_message(ResponseError::CoordinatorNotAvailable, e.to_string()))
        }
    }
}

/// The coordinator of `group` as `(node id, host, port)` on `listener`.
fn group_coordinator(image: &MetadataImage, listener: &str, group: &str) -> Result<(i32, String, u16), KafkaError> {
    let topic = image
        .topic_by_name(OFFSETS_TOPIC)
        .ok_or_else(|| KafkaError::with_message(ResponseError::CoordinatorNotAvailable, format!("{OFFSETS_TOPIC} does not exist yet")))?;
    let partition = partition_for(group, topic.partitions.len() as i32);
    let leader = topic.partitions.get(&partition).map(|p| p.leader).unwrap_or(-1);
    broker_endpoints(image, listener)
        .find(|(id, ..)| *id == leader)
        .map(|(id, host, port, _)| (id, host, port))
        .ok_or_else(|| {
            KafkaError::with_message(
                ResponseError::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC}-{partition} has no live leader right now"),
            )
        })
}

async fn lookup(ctx: &BrokerContext, conn: &ConnectionInfo, key: &str, key_type: i8) -> Result<(i32, String, u16), KafkaError> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => {
            Err(KafkaError::with_message(ResponseError::InvalidRequest, "the group id must not be empty"))
        }
        KEY_TYPE_GROUP => {
            ensure_offsets_topic(ctx).await?;
            group_coordinator(&ctx.image(), &conn.listener, key)
        }
        KEY_TYPE_TRANSACTION => Err(KafkaError::with_message(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported by this broker; idempotent producers (no transactional.id) are",
        )),
        other => Err(KafkaError::with_message(ResponseError::InvalidRequest, format!("unknown coordinator key type {other}"))),
    }
}

pub async fn handle(ctx: &BrokerContext, conn: &ConnectionInfo, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if version < 4 {
        let key = request.key.to_string();
        return match lookup(ctx, conn, &key, request.key_type).await {
            Ok((id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port as i32),
            Err(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_error_message(e.message.map(StrBytes::from_string))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        };
    }
    let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
    for key in request.coordinator_keys {
        let coordinator = match lookup(ctx, conn, &key, request.key_type).await {
            Ok((id, host, port)) => Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port as i32),
            Err(e) => Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(e.code())
                .with_error_message(e.message.map(StrBytes::from_string)),
        };
        coordinators.push(coordinator);
    }
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

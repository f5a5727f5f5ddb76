//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic resources show every supported topic key with its effective value and where
//! it came from (topic override, broker setting, Kafka default), with synonyms when
//! asked. Broker resources show the broker's static configuration, read-only; changing
//! it means editing `server.properties` and restarting, so alters of BROKER resources
//! are refused with a message saying so.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_metadata::controller::{ConfigChange, ControllerRequest};
use rafka_metadata::topic_config::{topic_config_def, ConfigSource, ConfigType, TOPIC_CONFIGS};

use super::message;
use crate::context::BrokerContext;
use crate::errors::KafkaError;

/// Kafka's `ConfigResource.Type` codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn describe_topic(
    ctx: &BrokerContext,
    name: &str,
    keys: Option<&[StrBytes]>,
    synonyms: bool,
    documentation: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, KafkaError> {
    let image = ctx.image();
    let topic = image
        .topic_by_name(name)
        .ok_or_else(|| KafkaError::with_message(ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}")))?;
    let defaults = ctx.topic_defaults();
    Ok(TOPIC_CONFIGS
        .iter()
        .filter(|def| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == def.name)))
        .filter_map(|def| {
            let (value, source) = defaults.effective(def.name, &topic.configs)?;
            let mut list = Vec::new();
            if synonyms {
                if let Some(v) = topic.configs.get(def.name) {
                    list.push(
                        DescribeConfigsSynonym::default()
                            .with_name(s(def.name))
                            .with_value(Some(s(v)))
                            .with_source(ConfigSource::DynamicTopic as i8),
                    );
                }
                if let Some((v, src)) = defaults.default_of(def.name) {
                    if *src == ConfigSource::StaticBroker {
                        list.push(
                            DescribeConfigsSynonym::default()
                                .with_name(s(def.broker_synonym))
                                .with_value(Some(s(v)))
                                .with_source(ConfigSource::StaticBroker as i8),
                        );
                    }
                }
                list.push(
                    DescribeConfigsSynonym::default()
                        .with_name(s(def.broker_synonym))
                        .with_value(Some(s(def.kafka_default)))
                        .with_source(ConfigSource::Default as i8),
                );
            }
            Some(
                DescribeConfigsResourceResult::default()
                    .with_name(s(def.name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_read_only(false)
                    .with_config_source(source as i8)
                    .with_is_sensitive(false)
                    .with_synonyms(list)
                    .with_config_type(def.config_type as i8)
                    .with_documentation(documentation.then(|| s(def.documentation))),
            )
        })
        .collect())
}

fn describe_broker(ctx: &BrokerContext, name: &str, keys: Option<&[StrBytes]>) -> Result<Vec<DescribeConfigsResourceResult>, KafkaError> {
    if name.parse::<i32>().ok() != Some(ctx.node_id) {
        return Err(KafkaError::with_message(
            ResponseError::InvalidRequest,
            format!("broker {name:?} is not this broker ({}); ask that broker", ctx.node_id),
        ));
    }
    Ok(ctx
        .broker_configs
        .iter()
        .filter(|c| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == c.name)))
        .map(|c| {
            let source = if c.explicitly_set { ConfigSource::StaticBroker } else { ConfigSource::Default };
            DescribeConfigsResourceResult::default()
                .with_name(s(&c.name))
                .with_value(if c.is_sensitive { None } else { c.value.clone().map(StrBytes::from_string) })
                .with_read_only(true)
                .with_config_source(source as i8)
                .with_is_sensitive(c.is_sensitive)
                .with_config_type(ConfigType::String as i8)
        })
        .collect())
}

pub fn describe(ctx: &BrokerContext, request: DescribeConfigsRequest, _version: i16) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let keys = r.configuration_keys.as_deref();
            let configs = match r.resource_type {
                RESOURCE_TOPIC => describe_topic(ctx, &name, keys, request.include_synonyms, request.include_documentation),
                RESOURCE_BROKER => describe_broker(ctx, &name, keys),
                other => Err(KafkaError::with_message(
                    ResponseError::InvalidRequest,
                    format!("describing resource type {other} is not supported"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match configs {
                Ok(configs) => result.with_configs(configs),
                Err(e) => result.with_error_code(e.code()).with_error_message(message(&e.message)),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies config changes to one resource; BROKER resources are static.
async fn alter_resource(
    ctx: &BrokerContext,
    resource_type: i8,
    name: &str,
    changes: Result<Vec<ConfigChange>, KafkaError>,
    replace: bool,
    validate_only: bool,
) -> Result<(), KafkaError> {
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err(KafkaError::with_message(
                ResponseError::InvalidRequest,
                "broker configuration is static in Rafka: edit server.properties (or KAFKA_* variables) and restart",
            ))
        }
        other => {
            return Err(KafkaError::with_message(
                ResponseError::InvalidRequest,
                format!("altering resource type {other} is not supported"),
            ))
        }
    }
    let changes = changes?;
    let command = ControllerRequest::AlterTopicConfigs { topic: name.to_string(), changes, replace, validate_only };
    let offset = super::admin::submit_for_offset(ctx, command).await.map_err(|e| KafkaError::from(&e))?;
    ctx.replicas
        .wait_applied(offset, Duration::from_millis(ctx.limits.metadata_apply_timeout_ms))
        .await;
    Ok(())
}

fn no_duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), KafkaError> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(KafkaError::with_message(ResponseError::InvalidRequest, format!("configuration {n} appears more than once")));
        }
    }
    Ok(())
}

pub async fn alter(ctx: &BrokerContext, request: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in request.resources {
        let name = r.resource_name.to_string();
        let changes = no_duplicates(r.configs.iter().map(|c| c.name.as_str())).map(|()| {
            r.configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => ConfigChange::Set(c.name.to_string(), v.to_string()),
                    None => ConfigChange::Delete(c.name.to_string()),
                })
                .collect()
        });
        let outcome = alter_resource(ctx, r.resource_type, &name, changes, true, request.validate_only).await;
        let response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(e) => response.with_error_code(e.code()).with_error_message(message(&e.message)),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Kafka's incremental operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn incremental_changes(
    ctx: &BrokerContext,
    topic: &str,
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<ConfigChange>, KafkaError> {
    no_duplicates(configs.iter().map(|c| c.name.as_str()))?;
    let image = ctx.image();
    let overrides = image.topic_by_name(topic).map(|t| t.configs.clone()).unwrap_or_else(BTreeMap::new);
    configs
        .iter()
        .map(|c| {
            let key = c.name.to_string();
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            match c.config_operation {
                OP_SET => Ok(ConfigChange::Set(key, value)),
                OP_DELETE => Ok(ConfigChange::Delete(key)),
                op @ (OP_APPEND | OP_SUBTRACT) => {
                    let is_list = topic_config_def(&key).is_some_and(|d| d.config_type == ConfigType::List);
                    if !is_list {
                        return Err(KafkaError::with_message(
                            ResponseError::InvalidConfig,
                            format!("{key} is not a list; APPEND and SUBTRACT apply to list configurations only"),
                        ));
                    }
                    let current = ctx.topic_defaults().effective(&key, &overrides).map(|(v, _)| v).unwrap_or_default();
                    let mut items: Vec<String> =
                        current.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
                    for item in value.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                        if op == OP_APPEND {
                            if !items.iter().any(|x| x == item) {
                                items.push(item.to_string());
                            }
                        } else {
                            items.retain(|x| x != item);
                        }
                    }
                    Ok(ConfigChange::Set(key, items.join(",")))
                }
                other => Err(KafkaError::with_message(ResponseError::InvalidRequest, format!("unknown config operation {other}"))),
            }
        })
        .collect()
}

pub async fn incremental_alter(
    ctx: &BrokerContext,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in request.resources {
        let name = r.resource_name.to_string();
        let changes = incremental_changes(ctx, &name, &r.configs);
        let outcome = alter_resource(ctx, r.resource_type, &name, changes, false, request.validate_only).await;
        let response = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(e) => response.with_error_code(e.code()).with_error_message(message(&e.message)),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

//! A small async Kafka admin client for the command-line tools (`rafka topics`,
//! `rafka consumer-groups`, the readiness checks of `rafka dev`).
//!
//! It speaks the Kafka wire protocol through the `kafka-protocol` crate's generated
//! codecs, in three layers:
//!
//! - **frames**: a request is a `RequestHeader` and a `RequestKind` body behind a
//!   4-byte length; a response frame is read only after its length has been checked
//!   against [`MAX_RESPONSE_BYTES`], and grows as bytes arrive, so a bad length
//!   prefix cannot make us allocate it up front.
//! - **[`Connection`]**: one TCP stream, one request in flight. `open` connects
//!   (bounded by [`Timeouts::connect`]) and performs the ApiVersions handshake;
//!   `version` then picks, for each API, the highest version both sides implement.
//!   Every round trip is bounded by [`Timeouts::request`] and checks the
//!   correlation id.
//! - **typed calls** (`metadata`, `create_topic`, `describe_groups`, …) build one
//!   request, pick the version, and return the per-topic (per-group, per-partition)
//!   result for the caller to interpret. Where the wire format changed between
//!   versions (OffsetFetch v8 batches groups, FindCoordinator v4 batches keys) the
//!   call hides it behind one plain result type.
//!
//! [`bootstrap`] tries each address of a `--bootstrap-server` list until one
//! answers. Every error names the address it concerns.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetFetchRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response frame we accept (Kafka's own clients have no such limit;
/// a Metadata response of a very large cluster stays far below it).
pub const MAX_RESPONSE_BYTES: usize = 100 * 1024 * 1024;

/// What we send as `client_software_name` in ApiVersions v3+ (must match
/// Kafka's `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`).
const SOFTWARE_NAME: &str = "rafka-cli";

/// Kafka's `ConfigResource.Type.TOPIC`.
pub const RESOURCE_TYPE_TOPIC: i8 = 2;

/// The versions of each API this client can build requests for and read
/// responses of. The version used is the highest one the broker also supports.
const METADATA_VERSIONS: RangeInclusive<i16> = 4..=12;
const CREATE_TOPICS_VERSIONS: RangeInclusive<i16> = 4..=7;
const DELETE_TOPICS_VERSIONS: RangeInclusive<i16> = 1..=6;
const CREATE_PARTITIONS_VERSIONS: RangeInclusive<i16> = 0..=3;
const DESCRIBE_CONFIGS_VERSIONS: RangeInclusive<i16> = 1..=4;
const FIND_COORDINATOR_VERSIONS: RangeInclusive<i16> = 0..=6;
/// v4 is the first that reports each group's state.
const LIST_GROUPS_VERSIONS: RangeInclusive<i16> = 0..=5;
const DESCRIBE_GROUPS_VERSIONS: RangeInclusive<i16> = 0..=5;
const DELETE_GROUPS_VERSIONS: RangeInclusive<i16> = 0..=2;
/// From v2 a null topic list asks for every committed offset of the group.
const OFFSET_FETCH_VERSIONS: RangeInclusive<i16> = 2..=9;
const OFFSET_COMMIT_VERSIONS: RangeInclusive<i16> = 2..=9;
const LIST_OFFSETS_VERSIONS: RangeInclusive<i16> = 1..=10;
/// ApiVersions is sent at v3 (KIP-511); a broker that does not know v3 answers
/// with a v0 body, which we decode as such.
const API_VERSIONS_VERSION: i16 = 3;

/// Time limits for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect (including name resolution).
    pub connect: Duration,
    /// One request: writing it and reading its whole response.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// Why talking to a broker failed. Each variant names the address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid bootstrap server {0:?}: expected HOST:PORT")]
    BadAddress(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("cannot connect to {addr}: no answer within {} ms", .timeout.as_millis())]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("{addr} did not answer a {api:?} request within {} ms", .timeout.as_millis())]
    RequestTimeout { addr: String, api: ApiKey, timeout: Duration },
    #[error("connection to {addr} failed during a {api:?} request: {source}")]
    Io { addr: String, api: ApiKey, source: std::io::Error },
    #[error("{addr} sent a response frame of {length} bytes to a {api:?} request (the limit is {max})")]
    FrameTooLarge { addr: String, api: ApiKey, length: i64, max: usize },
    #[error("{addr} sent an invalid {api:?} response: {reason}")]
    Protocol { addr: String, api: ApiKey, reason: String },
    #[error("{addr} does not support {api:?} (is it a Kafka broker?)")]
    MissingApi { addr: String, api: ApiKey },
    #[error("{addr} supports {api:?} versions {broker:?}; this tool needs one of {ours:?}")]
    UnsupportedVersion { addr: String, api: ApiKey, broker: RangeInclusive<i16>, ours: RangeInclusive<i16> },
    #[error("could not encode a {api:?} v{version} request: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
    #[error("none of the bootstrap servers answered: {0}")]
    NoBootstrap(String),
}

/// A topic to create. `None` counts leave the choice to the broker (-1 on the wire).
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub configs: Vec<(String, String)>,
}

/// FindCoordinator's answer for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorAnswer {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// A group's committed offsets (OffsetFetch): the group-level error, and per
/// partition the offset (-1: none) and a partition-level error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommittedOffsets {
    pub error_code: i16,
    pub partitions: Vec<CommittedOffset>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error_code: i16,
}

/// One partition's answer to ListOffsets or OffsetCommit (`offset` is -1 for a commit).
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionAnswer {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub offset: i64,
}

/// ListOffsets' special timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// Splits `HOST:PORT[,HOST:PORT...]` into addresses, checking that each has a port.
pub fn parse_bootstrap(servers: &str) -> Result<Vec<String>, ClientError> {
    let addrs: Vec<String> = servers.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if addrs.is_empty() {
        return Err(ClientError::BadAddress(servers.to_string()));
    }
    for addr in &addrs {
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(ClientError::BadAddress(addr.clone())),
        }
    }
    Ok(addrs)
}

/// Connects to the first address of `servers` that answers ApiVersions.
pub async fn bootstrap(servers: &str, timeouts: Timeouts) -> Result<Connection, ClientError> {
    let addrs = parse_bootstrap(servers)?;
    let mut failures = Vec::new();
    for addr in &addrs {
        match Connection::open(addr, timeouts).await {
            Ok(connection) => return Ok(connection),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let [only] = failures.as_slice() {
        return Err(ClientError::NoBootstrap(only.clone()));
    }
    Err(ClientError::NoBootstrap(failures.join("; ")))
}

/// One connection to one broker, with the API versions it announced.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    timeouts: Timeouts,
    next_correlation_id: i32,
    /// API key → the broker's supported version range.
    api_versions: HashMap<i16, RangeInclusive<i16>>,
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`) and performs the ApiVersions handshake.
    pub async fn open(addr: &str, timeouts: Timeouts) -> Result<Connection, ClientError> {
        let stream = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(ClientError::Connect { addr: addr.to_string(), source }),
            Err(_) => return Err(ClientError::ConnectTimeout { addr: addr.to_string(), timeout: timeouts.connect }),
        };
        // Requests are small and we wait for each answer: no reason to delay them.
        let _ = stream.set_nodelay(true);
        let mut connection = Connection {
            addr: addr.to_string(),
            stream,
            timeouts,
            next_correlation_id: 0,
            api_versions: HashMap::new(),
        };
        connection.handshake().await?;
        Ok(connection)
    }

    async fn handshake(&mut self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(SOFTWARE_NAME))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = self
            .round_trip(ApiKey::ApiVersions, API_VERSIONS_VERSION, &RequestKind::ApiVersions(request))
            .await?;
        // A broker that does not know our version answers UNSUPPORTED_VERSION with a
        // v0 body listing what it does support (KIP-511).
        let response = match ApiVersionsResponse::decode(&mut body.clone(), API_VERSIONS_VERSION) {
            Ok(r) if r.error_code != UNSUPPORTED_VERSION => r,
            _ => ApiVersionsResponse::decode(&mut body.clone(), 0).map_err(|e| self.protocol(ApiKey::ApiVersions, e))?,
        };
        if response.error_code != 0 {
            return Err(self.protocol(
                ApiKey::ApiVersions,
                format!("error {}", error_text(response.error_code, None)),
            ));
        }
        self.api_versions = response.api_keys.iter().map(|k| (k.api_key, k.min_version..=k.max_version)).collect();
        Ok(())
    }

    /// The highest version of `api` in both `ours` and the broker's range.
    pub fn version(&self, api: ApiKey, ours: RangeInclusive<i16>) -> Result<i16, ClientError> {
        let broker = self
            .api_versions
            .get(&(api as i16))
            .cloned()
            .ok_or_else(|| ClientError::MissingApi { addr: self.addr.clone(), api })?;
        let version = (*ours.end()).min(*broker.end());
        if version < *ours.start() || version < *broker.start() {
            return Err(ClientError::UnsupportedVersion { addr: self.addr.clone(), api, broker, ours });
        }
        Ok(version)
    }

    /// Sends `request` as version `version` of `api` and decodes the response.
    pub async fn send(&mut self, api: ApiKey, version: i16, request: RequestKind) -> Result<ResponseKind, ClientError> {
        let mut body = self.round_trip(api, version, &request).await?;
        let response = ResponseKind::decode(api, &mut body, version).map_err(|e| self.protocol(api, e))?;
        Ok(response)
    }

    /// Writes one request frame and reads its response frame; returns the body
    /// after the response header.
    async fn round_trip(&mut self, api: ApiKey, version: i16, request: &RequestKind) -> Result<Bytes, ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(api, version, correlation_id, request)?;
        let timeout = self.timeouts.request;
        let io = async {
            self.stream.write_all(&frame).await?;
            read_frame(&mut self.stream).await
        };
        let frame = match tokio::time::timeout(timeout, io).await {
            Err(_) => return Err(ClientError::RequestTimeout { addr: self.addr.clone(), api, timeout }),
            Ok(Err(FrameError::Io(source))) => return Err(ClientError::Io { addr: self.addr.clone(), api, source }),
            Ok(Err(FrameError::TooLarge(length))) => {
                return Err(ClientError::FrameTooLarge { addr: self.addr.clone(), api, length, max: MAX_RESPONSE_BYTES })
            }
            Ok(Ok(frame)) => frame,
        };
        let mut body = frame;
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| self.protocol(api, format!("bad response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(self.protocol(
                api,
                format!("correlation id {} does not match the request's {correlation_id}", header.correlation_id),
            ));
        }
        Ok(body)
    }

    fn protocol(&self, api: ApiKey, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol { addr: self.addr.clone(), api, reason: reason.to_string() }
    }

    // -- typed calls ---------------------------------------------------------

    /// Metadata for `topics` (`None`: every topic; `Some(&[])`: brokers only).
    /// Never creates topics.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, ClientError> {
        let api = ApiKey::Metadata;
        let version = self.version(api, METADATA_VERSIONS)?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        match self.send(api, version, RequestKind::Metadata(request)).await? {
            ResponseKind::Metadata(r) => Ok(r),
            other => Err(self.protocol(api, format!("unexpected response {other:?}"))),
        }
    }

    /// Creates one topic; the caller interprets the result's error code.
    pub async fn create_topic(&mut self, topic: &NewTopic, timeout_ms: i32) -> Result<CreatableTopicResult, ClientError> {
        let api = ApiKey::CreateTopics;
        let version = self.version(api, CREATE_TOPICS_VERSIONS)?;
        let configs = topic
            .configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(&topic.name))
                .with_num_partitions(topic.partitions.unwrap_or(-1))
                .with_replication_factor(topic.replication_factor.unwrap_or(-1))
                .with_configs(configs)])
            .with_timeout_ms(timeout_ms);
        let response = match self.send(api, version, RequestKind::CreateTopics(request)).await? {
            ResponseKind::CreateTopics(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        let found = response.topics.into_iter().find(|t| t.name.0.as_str() == topic.name);
        found.ok_or_else(|| self.protocol(api, format!("no result for topic {:?}", topic.name)))
    }

    /// Deletes one topic by name.
    pub async fn delete_topic(&mut self, name: &str, timeout_ms: i32) -> Result<DeletableTopicResult, ClientError> {
        let api = ApiKey::DeleteTopics;
        let version = self.version(api, DELETE_TOPICS_VERSIONS)?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
        if version >= 6 {
            request.topics = vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
        } else {
            request.topic_names = vec![topic_name(name)];
        }
        let response = match self.send(api, version, RequestKind::DeleteTopics(request)).await? {
            ResponseKind::DeleteTopics(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        let found = response.responses.into_iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name));
        found.ok_or_else(|| self.protocol(api, format!("no result for topic {name:?}")))
    }

    /// Raises the partition count of `name` to `count`.
    pub async fn create_partitions(
        &mut self,
        name: &str,
        count: i32,
        timeout_ms: i32,
    ) -> Result<CreatePartitionsTopicResult, ClientError> {
        let api = ApiKey::CreatePartitions;
        let version = self.version(api, CREATE_PARTITIONS_VERSIONS)?;
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(count)
                .with_assignments(None)])
            .with_timeout_ms(timeout_ms);
        let response = match self.send(api, version, RequestKind::CreatePartitions(request)).await? {
            ResponseKind::CreatePartitions(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        let found = response.results.into_iter().find(|t| t.name.0.as_str() == name);
        found.ok_or_else(|| self.protocol(api, format!("no result for topic {name:?}")))
    }

    /// Every configuration entry of each topic in `names`, in the order asked.
    pub async fn describe_topic_configs(&mut self, names: &[String]) -> Result<Vec<DescribeConfigsResult>, ClientError> {
        let api = ApiKey::DescribeConfigs;
        let version = self.version(api, DESCRIBE_CONFIGS_VERSIONS)?;
        let request = DescribeConfigsRequest::default().with_resources(
            names
                .iter()
                .map(|n| {
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_TYPE_TOPIC)
                        .with_resource_name(StrBytes::from_string(n.clone()))
                        .with_configuration_keys(None)
                })
                .collect(),
        );
        let response = match self.send(api, version, RequestKind::DescribeConfigs(request)).await? {
            ResponseKind::DescribeConfigs(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        let mut results = response.results;
        let mut ordered = Vec::with_capacity(names.len());
        for name in names {
            let i = results
                .iter()
                .position(|r| r.resource_type == RESOURCE_TYPE_TOPIC && r.resource_name.as_str() == name)
                .ok_or_else(|| self.protocol(api, format!("no result for topic {name:?}")))?;
            ordered.push(results.swap_remove(i));
        }
        Ok(ordered)
    }

    /// Which broker coordinates consumer group `group`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<CoordinatorAnswer, ClientError> {
        let api = ApiKey::FindCoordinator;
        let version = self.version(api, FIND_COORDINATOR_VERSIONS)?;
        let mut request = FindCoordinatorRequest::default().with_key_type(0);
        if version >= 4 {
            request.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
        } else {
            request.key = StrBytes::from_string(group.to_string());
        }
        let response = match self.send(api, version, RequestKind::FindCoordinator(request)).await? {
            ResponseKind::FindCoordinator(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        if version < 4 {
            return Ok(CoordinatorAnswer {
                error_code: response.error_code,
                error_message: response.error_message.map(|m| m.to_string()),
                node_id: response.node_id.0,
                host: response.host.to_string(),
                port: response.port,
            });
        }
        let found = response.coordinators.into_iter().find(|c| c.key.as_str() == group);
        let c = found.ok_or_else(|| self.protocol(api, format!("no coordinator for group {group:?}")))?;
        Ok(CoordinatorAnswer {
            error_code: c.error_code,
            error_message: c.error_message.map(|m| m.to_string()),
            node_id: c.node_id.0,
            host: c.host.to_string(),
            port: c.port,
        })
    }

    /// The groups this broker coordinates (ListGroups), with the top-level error
    /// code. `group_state` is empty when the broker only speaks ListGroups v0-3.
    pub async fn list_groups(&mut self) -> Result<(i16, Vec<ListedGroup>), ClientError> {
        let api = ApiKey::ListGroups;
        let version = self.version(api, LIST_GROUPS_VERSIONS)?;
        match self.send(api, version, RequestKind::ListGroups(ListGroupsRequest::default())).await? {
            ResponseKind::ListGroups(r) => Ok((r.error_code, r.groups)),
            other => Err(self.protocol(api, format!("unexpected response {other:?}"))),
        }
    }

    /// DescribeGroups for `groups` (all coordinated by this broker), in the order asked.
    pub async fn describe_groups(&mut self, groups: &[String]) -> Result<Vec<DescribedGroup>, ClientError> {
        let api = ApiKey::DescribeGroups;
        let version = self.version(api, DESCRIBE_GROUPS_VERSIONS)?;
        let request = DescribeGroupsRequest::default().with_groups(groups.iter().map(|g| group_id(g)).collect());
        let response = match self.send(api, version, RequestKind::DescribeGroups(request)).await? {
            ResponseKind::DescribeGroups(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        let mut described = response.groups;
        let mut ordered = Vec::with_capacity(groups.len());
        for group in groups {
            let i = described
                .iter()
                .position(|d| d.group_id.0.as_str() == group)
                .ok_or_else(|| self.protocol(api, format!("no result for group {group:?}")))?;
            ordered.push(described.swap_remove(i));
        }
        Ok(ordered)
    }

    /// Every committed offset of `group` (OffsetFetch with a null topic list).
    pub async fn offset_fetch(&mut self, group: &str) -> Result<CommittedOffsets, ClientError> {
        let api = ApiKey::OffsetFetch;
        let version = self.version(api, OFFSET_FETCH_VERSIONS)?;
        let mut request = OffsetFetchRequest::default();
        if version >= 8 {
            request.groups = vec![OffsetFetchRequestGroup::default().with_group_id(group_id(group)).with_topics(None)];
        } else {
            request.group_id = group_id(group);
            request.topics = None;
        }
        let response = match self.send(api, version, RequestKind::OffsetFetch(request)).await? {
            ResponseKind::OffsetFetch(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        if version < 8 {
            let partitions = response
                .topics
                .into_iter()
                .flat_map(|t| {
                    t.partitions.into_iter().map(move |p| CommittedOffset {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        error_code: p.error_code,
                    })
                })
                .collect();
            return Ok(CommittedOffsets { error_code: response.error_code, partitions });
        }
        let found = response.groups.into_iter().find(|g| g.group_id.0.as_str() == group);
        let g = found.ok_or_else(|| self.protocol(api, format!("no result for group {group:?}")))?;
        let partitions = g
            .topics
            .into_iter()
            .flat_map(|t| {
                t.partitions.into_iter().map(move |p| CommittedOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    error_code: p.error_code,
                })
            })
            .collect();
        Ok(CommittedOffsets { error_code: g.error_code, partitions })
    }

    /// Commits `offsets` (topic, partition, offset) for `group` as an admin does:
    /// generation -1 and no member id, which the coordinator accepts only while the
    /// group has no members. One answer per partition.
    pub async fn offset_commit(
        &mut self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<PartitionAnswer>, ClientError> {
        let api = ApiKey::OffsetCommit;
        let version = self.version(api, OFFSET_COMMIT_VERSIONS)?;
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_metadata(Some(StrBytes::from_static_str("")));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(partition),
                None => topics
                    .push(OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(vec![partition])),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(topics);
        let response = match self.send(api, version, RequestKind::OffsetCommit(request)).await? {
            ResponseKind::OffsetCommit(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| {
                t.partitions.into_iter().map(move |p| PartitionAnswer {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    error_code: p.error_code,
                    offset: -1,
                })
            })
            .collect())
    }

    /// Deletes `groups` (all coordinated by this broker); one result per group.
    pub async fn delete_groups(&mut self, groups: &[String]) -> Result<Vec<DeletableGroupResult>, ClientError> {
        let api = ApiKey::DeleteGroups;
        let version = self.version(api, DELETE_GROUPS_VERSIONS)?;
        let request = DeleteGroupsRequest::default().with_groups_names(groups.iter().map(|g| group_id(g)).collect());
        match self.send(api, version, RequestKind::DeleteGroups(request)).await? {
            ResponseKind::DeleteGroups(r) => Ok(r.results),
            other => Err(self.protocol(api, format!("unexpected response {other:?}"))),
        }
    }

    /// ListOffsets as a consumer (read-uncommitted) for `partitions`, all led by this
    /// broker: `timestamp` is [`LATEST_TIMESTAMP`] (the high watermark) or
    /// [`EARLIEST_TIMESTAMP`] (the log start offset).
    pub async fn list_offsets(
        &mut self,
        partitions: &[(String, i32)],
        timestamp: i64,
    ) -> Result<Vec<PartitionAnswer>, ClientError> {
        let api = ApiKey::ListOffsets;
        let version = self.version(api, LIST_OFFSETS_VERSIONS)?;
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (topic, partition) in partitions {
            let p = ListOffsetsPartition::default().with_partition_index(*partition).with_timestamp(timestamp);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![p])),
            }
        }
        let timeout_ms = i32::try_from(self.timeouts.request.as_millis()).unwrap_or(i32::MAX);
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(0)
            .with_topics(topics)
            .with_timeout_ms(timeout_ms);
        let response = match self.send(api, version, RequestKind::ListOffsets(request)).await? {
            ResponseKind::ListOffsets(r) => r,
            other => return Err(self.protocol(api, format!("unexpected response {other:?}"))),
        };
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| {
                t.partitions.into_iter().map(move |p| PartitionAnswer {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    error_code: p.error_code,
                    offset: p.offset,
                })
            })
            .collect())
    }
}

const UNSUPPORTED_VERSION: i16 = 35;

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One length-prefixed request frame.
fn encode_request(api: ApiKey, version: i16, correlation_id: i32, request: &RequestKind) -> Result<Bytes, ClientError> {
    let encode_error = |e: anyhow::Error| ClientError::Encode { api, version, reason: e.to_string() };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // the length, patched below
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(SOFTWARE_NAME)))
        .encode(&mut buf, api.request_header_version(version))
        .map_err(encode_error)?;
    request.encode(&mut buf, version).map_err(encode_error)?;
    let length = i32::try_from(buf.len() - 4).map_err(|_| ClientError::Encode {
        api,
        version,
        reason: format!("request of {} bytes is too large", buf.len()),
    })?;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

enum FrameError {
    Io(std::io::Error),
    TooLarge(i64),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

/// Reads one response frame, refusing lengths outside `0..=MAX_RESPONSE_BYTES`
/// before reading the body. The buffer grows as bytes arrive.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> Result<Bytes, FrameError> {
    let length = reader.read_i32().await?;
    if length < 0 || length as usize > MAX_RESPONSE_BYTES {
        return Err(FrameError::TooLarge(length as i64));
    }
    let length = length as usize;
    let mut body = Vec::with_capacity(length.min(64 * 1024));
    let read = reader.take(length as u64).read_to_end(&mut body).await?;
    if read < length {
        return Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("connection closed after {read} of {length} response bytes"),
        )));
    }
    Ok(Bytes::from(body))
}

/// The text Kafka's clients show for an error: the broker's message if it sent
/// one, else the protocol's default description of the code.
pub fn error_text(code: i16, message: Option<&str>) -> String {
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let default = match code {
        -1 => "The server experienced an unexpected error when processing the request.",
        2 => "This message has failed its CRC checksum, exceeds the valid size, has a null key for a compacted topic, or is otherwise corrupt.",
        3 => "This server does not host this topic-partition.",
        5 => "There is no leader for this topic-partition as we are in the middle of a leadership election.",
        6 => "For requests intended only for the leader, this error indicates that the broker is not the current leader.",
        7 => "The request timed out.",
        14 => "The coordinator is loading and hence can't process requests.",
        15 => "The coordinator is not available.",
        16 => "This is not the correct coordinator.",
        22 => "Specified group generation id is not valid.",
        24 => "The configured groupId is invalid.",
        25 => "The coordinator is not aware of this member.",
        27 => "The group is rebalancing, so a rejoin is needed.",
        30 => "Group authorization failed.",
        17 => "The request attempted to perform an operation on an invalid topic.",
        29 => "Topic authorization failed.",
        31 => "Cluster authorization failed.",
        35 => "The version of API is not supported.",
        36 => "Topic with this name already exists.",
        37 => "Number of partitions is below 1.",
        38 => "Replication factor is below 1 or larger than the number of available brokers.",
        39 => "Replica assignment is invalid.",
        40 => "Configuration is invalid.",
        41 => "This is not the correct controller for this cluster.",
        42 => "This most likely occurs because of a request being malformed by the client library or the message was sent to an incompatible broker. See the broker logs for more details.",
        44 => "Request parameters do not satisfy the configured policy.",
        68 => "The group is not empty.",
        69 => "The group id does not exist.",
        73 => "The topic deletion is disabled in the broker.",
        89 => "The throttling quota has been exceeded.",
        100 => "This server does not host this topic ID.",
        _ => {
            return match kafka_protocol::ResponseError::try_from_code(code) {
                Some(e) => format!("{e} (error code {code})"),
                None => format!("error code {code}"),
            }
        }
    };
    default.to_string()
}

/// The protocol's name of an error code, as Kafka's documentation writes it
/// (`GROUP_ID_NOT_FOUND`); `error code N` for a code this crate does not know.
pub fn error_name(code: i16) -> String {
    let Some(e) = kafka_protocol::ResponseError::try_from_code(code) else {
        return "NONE".to_string();
    };
    if let kafka_protocol::ResponseError::Unknown(_) = e {
        return format!("error code {code}");
    }
    let camel = e.to_string();
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_need_a_port_on_every_address() {
        assert_eq!(parse_bootstrap("a:1, b:2,").unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(parse_bootstrap("[::1]:9092").unwrap(), vec!["[::1]:9092"]);
        for bad in ["", ",", "localhost", "localhost:", ":9092", "h:0", "h:70000", "h:x"] {
            assert!(matches!(parse_bootstrap(bad), Err(ClientError::BadAddress(_))), "{bad:?}");
        }
    }

    #[test]
    fn request_frames_carry_their_length_and_header() {
        let frame = encode_request(ApiKey::Metadata, 12, 7, &RequestKind::Metadata(MetadataRequest::default())).unwrap();
        assert_eq!(i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(i16::from_be_bytes([frame[4], frame[5]]), ApiKey::Metadata as i16);
        assert_eq!(i16::from_be_bytes([frame[6], frame[7]]), 12);
        assert_eq!(i32::from_be_bytes(frame[8..12].try_into().unwrap()), 7);
    }

    #[tokio::test]
    async fn an_oversized_response_length_is_refused_before_reading_the_body() {
        let mut input: &[u8] = &((MAX_RESPONSE_BYTES as i32) + 1).to_be_bytes();
        assert!(matches!(read_frame(&mut input).await, Err(FrameError::TooLarge(_))));
        let mut negative: &[u8] = &(-5i32).to_be_bytes();
        assert!(matches!(read_frame(&mut negative).await, Err(FrameError::TooLarge(-5))));
    }

    #[tokio::test]
    async fn a_truncated_response_is_an_io_error() {
        let mut input: Vec<u8> = 10i32.to_be_bytes().to_vec();
        input.extend_from_slice(b"abc");
        let mut reader: &[u8] = &input;
        assert!(matches!(read_frame(&mut reader).await, Err(FrameError::Io(_))));
        let mut whole: Vec<u8> = 3i32.to_be_bytes().to_vec();
        whole.extend_from_slice(b"abcdef");
        let mut reader: &[u8] = &whole;
        assert_eq!(&read_frame(&mut reader).await.ok().unwrap()[..], b"abc");
    }

    #[test]
    fn error_text_prefers_the_brokers_message() {
        assert_eq!(error_text(36, Some("Topic 'a' already exists.")), "Topic 'a' already exists.");
        assert_eq!(error_text(36, None), "Topic with this name already exists.");
        assert_eq!(error_text(36, Some("")), "Topic with this name already exists.");
        assert!(error_text(58, None).contains("58"));
    }

    #[test]
    fn error_names_are_the_protocols_upper_case_names() {
        assert_eq!(error_name(69), "GROUP_ID_NOT_FOUND");
        assert_eq!(error_name(68), "NON_EMPTY_GROUP");
        assert_eq!(error_name(15), "COORDINATOR_NOT_AVAILABLE");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(9999), "error code 9999");
    }
}

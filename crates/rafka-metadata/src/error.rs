//! Errors of the metadata layer. Each variant names the values that were wrong;
//! the Kafka front maps them to Kafka error codes in one place.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A request to change metadata that the controller refused.
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerError {
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("topic {name:?} already exists")]
    TopicAlreadyExists { name: String },
    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },
    #[error("unknown topic id {id}")]
    UnknownTopicId { id: String },
    #[error("invalid number of partitions {partitions} for topic {topic:?}: {reason}")]
    InvalidPartitions { topic: String, partitions: i32, reason: String },
    #[error("invalid replication factor {replication_factor}: {reason}")]
    InvalidReplicationFactor { replication_factor: i32, reason: String },
    #[error("invalid replica assignment: {reason}")]
    InvalidReplicaAssignment { reason: String },
    #[error("invalid value {value:?} for configuration {key}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("broker {broker_id}'s data belongs to cluster {stored} but this quorum's cluster id is {cluster}; refusing to register it")]
    InconsistentClusterId { broker_id: i32, stored: String, cluster: String },
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    #[error("broker {broker_id} is not the leader of {topic}-{partition} (the leader is {leader})")]
    NotLeaderOrFollower { topic: String, partition: i32, broker_id: i32, leader: i32 },
    #[error("fenced leader epoch: the current leader epoch is {current}, the request has {got}")]
    FencedLeaderEpoch { current: i32, got: i32 },
    #[error("stale partition state: the current partition epoch is {current}, the request has {got}")]
    InvalidUpdateVersion { current: i32, got: i32 },
    #[error("broker {broker_id} cannot join the ISR: it is not registered, fenced or shut down")]
    IneligibleReplica { broker_id: i32 },
    #[error("no election needed for {topic}-{partition}: broker {leader} already leads it")]
    ElectionNotNeeded { topic: String, partition: i32, leader: i32 },
    #[error("the preferred leader {preferred} of {topic}-{partition} is not alive or not in the ISR")]
    PreferredLeaderNotAvailable { topic: String, partition: i32, preferred: i32 },
    #[error("no replica of {topic}-{partition} is alive to become leader")]
    EligibleLeadersNotAvailable { topic: String, partition: i32 },
    #[error("metadata log failure: {0}")]
    Log(#[from] MetadataError),
}

/// A failure of the metadata log itself (I/O, a corrupt record, shutdown).
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataError {
    #[error("metadata log I/O error at {path}: {message}")]
    Io { path: String, message: String },
    #[error("corrupt metadata record at line {line} of {path}: {message}")]
    Corrupt { path: String, line: usize, message: String },
    #[error("metadata log is shut down")]
    ShutDown,
    #[error("not the active controller")]
    NotController,
    #[error("no active controller could be reached: {0}")]
    Unavailable(String),
}

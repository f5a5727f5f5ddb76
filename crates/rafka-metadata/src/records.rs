//! Metadata records: the only way cluster metadata changes.
//!
//! Records are serialised with serde (JSON lines in the local log, bytes in Raft
//! entries). They are versioned by shape: fields are only ever added, with
//! `#[serde(default)]`, so an old log stays readable by a newer broker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One advertised endpoint of a broker, for one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// Listener name, e.g. `PLAINTEXT` or `EXTERNAL`.
    pub listener: String,
    pub host: String,
    pub port: u16,
    /// Security protocol, e.g. `PLAINTEXT`.
    pub security_protocol: String,
}

/// A broker announcing itself (on every start, with a fresh incarnation id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    pub endpoints: Vec<BrokerEndpoint>,
    #[serde(default)]
    pub rack: Option<String>,
}

/// The resource a configuration record applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
}

/// A change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The cluster's identity, written once by the first node that forms it.
    ClusterId { cluster_id: String },
    RegisterBroker(BrokerRegistration),
    Topic {
        name: String,
        topic_id: Uuid,
    },
    /// Full state of a new partition.
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// Set (`Some`) or remove (`None`) one configuration override.
    Config {
        resource: ConfigResource,
        key: String,
        value: Option<String>,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
    /// The active controller stopped hearing from a broker (or it shut down):
    /// it is no longer offered to clients or chosen for new replicas.
    BrokerFenced {
        broker_id: i32,
        /// Fenced by its own controlled shutdown: only a new registration (a restart)
        /// brings it back, never a late heartbeat.
        #[serde(default)]
        shutdown: bool,
    },
    /// A fenced broker is heartbeating again.
    BrokerUnfenced { broker_id: i32 },
    /// New leader and/or ISR of an existing partition.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        isr: Vec<i32>,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A block of producer ids handed to `broker_id` (KRaft's `ProducerIdsRecord`):
    /// `next_producer_id` is the first id not handed out yet, so the block is committed
    /// before a broker uses it and no id is handed out twice, even across failover.
    ProducerIds {
        broker_id: i32,
        next_producer_id: i64,
    },
}

/// Convenience for building a topic's override map in tests and controllers.
pub type ConfigMap = BTreeMap<String, String>;

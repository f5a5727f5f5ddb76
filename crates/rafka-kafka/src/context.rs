//! What every request handler can see: the node's identity and listeners, the
//! metadata image and controller, the hosted partitions, and the broker's limits.

use std::sync::Arc;

use rafka_metadata::topic_config::TopicDefaults;
use rafka_metadata::controller::ControllerApi;
use rafka_metadata::{MetadataImage, MetadataLog};

use kafka_protocol::ResponseError;

use crate::errors::KafkaError;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;

/// A client listener: where it binds and what it tells clients to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub security_protocol: String,
    pub bind_host: String,
    pub bind_port: u16,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Broker-wide limits and switches that handlers enforce.
#[derive(Debug, Clone)]
pub struct BrokerLimits {
    pub auto_create_topics: bool,
    pub socket_request_max_bytes: usize,
    /// Upper bound on one fetch response (`fetch.max.bytes`), whatever the client asks.
    pub fetch_max_bytes: usize,
    /// How long a handler waits for this broker to act on a metadata change it committed.
    pub metadata_apply_timeout_ms: u64,
}

/// One broker configuration entry, for DescribeConfigs on a BROKER resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub is_sensitive: bool,
    /// Set explicitly (file, environment or flag) rather than defaulted.
    pub explicitly_set: bool,
}

/// Shared state of one broker, handed to every connection.
pub struct BrokerContext {
    pub node_id: i32,
    pub cluster_id: String,
    pub listeners: Vec<Listener>,
    pub metadata: Arc<dyn MetadataLog>,
    /// The active controller, local or reached over gRPC.
    pub controller: Arc<dyn ControllerApi>,
    /// Who the active controller is, as this node knows it (-1 when unknown).
    pub controller_id: Arc<dyn Fn() -> i32 + Send + Sync>,
    pub replicas: Arc<ReplicaManager>,
    pub limits: BrokerLimits,
    pub broker_configs: Vec<ConfigEntry>,
    /// Metadata waits here while a leader failover this broker reported is under way.
    pub failover_gate: Arc<crate::failover_gate::FailoverGate>,
    /// Hands out producer ids for InitProducerId.
    pub producer_ids: crate::handlers::producer_ids::ProducerIdAllocator,
    /// The consumer groups this broker coordinates.
    pub groups: Arc<rafka_group::GroupCoordinator>,
    /// How `__consumer_offsets` is created.
    pub offsets_topic: crate::handlers::find_coordinator::OffsetsTopicSettings,
}

impl std::fmt::Debug for BrokerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerContext")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl BrokerContext {
    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// The partition if this broker leads it; otherwise Kafka's answer for a client that
    /// asked the wrong broker (NOT_LEADER_OR_FOLLOWER: refresh metadata and retry) or for
    /// a partition that does not exist (UNKNOWN_TOPIC_OR_PARTITION).
    pub fn leader_partition(&self, image: &MetadataImage, topic: &str, partition: i32) -> Result<Arc<Partition>, KafkaError> {
        match self.replicas.get(topic, partition) {
            Some(p) if p.is_leader() => Ok(p),
            _ if image.partition(topic, partition).is_some() => Err(ResponseError::NotLeaderOrFollower.into()),
            _ => Err(ResponseError::UnknownTopicOrPartition.into()),
        }
    }

    pub fn topic_defaults(&self) -> &TopicDefaults {
        self.replicas.topic_defaults()
    }

    /// The active controller's id (the Raft leader), or -1 when there is none.
    pub fn controller_id(&self) -> i32 {
        (self.controller_id)()
    }
}

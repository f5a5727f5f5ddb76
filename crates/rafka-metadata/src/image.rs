//! The metadata image: the state built by replaying metadata records in order.
//!
//! The image is immutable once published; a change produces a new image (see
//! [`MetadataImage::apply`]), shared as `Arc<MetadataImage>`. `offset` is the
//! position of the last record applied, so a reader can tell whether it has
//! seen a given commit.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{BrokerRegistration, ConfigResource, MetadataRecord};

/// A registered broker.
pub type BrokerImage = BrokerRegistration;

/// State of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Broker id of the leader, or -1 when the partition has none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
    /// Topic-level configuration overrides (only what was set explicitly).
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn replication_factor(&self) -> usize {
        self.partitions
            .values()
            .next()
            .map(|p| p.replicas.len())
            .unwrap_or(0)
    }
}

/// The whole cluster metadata as of `offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Offset of the last applied record; 0 for an empty image.
    pub offset: u64,
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerImage>,
    /// Registered brokers that are currently fenced (not alive).
    #[serde(default)]
    pub fenced: BTreeSet<i32>,
    /// Fenced brokers that shut down cleanly; they return by registering again.
    #[serde(default)]
    pub shut_down: BTreeSet<i32>,
    pub topics: BTreeMap<Uuid, TopicImage>,
    pub topic_ids_by_name: BTreeMap<String, Uuid>,
    /// The first producer id not handed out yet (idempotent producers).
    #[serde(default)]
    pub next_producer_id: i64,
}

impl MetadataImage {
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids_by_name
            .get(name)
            .and_then(|id| self.topics.get(id))
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(id)
    }

    /// Whether `broker` is registered, unfenced and not shut down: it may lead or join
    /// an ISR.
    pub fn is_alive(&self, broker: i32) -> bool {
        self.brokers.contains_key(&broker)
            && !self.fenced.contains(&broker)
            && !self.shut_down.contains(&broker)
    }

    /// Registered, unfenced brokers in id order.
    pub fn live_brokers(&self) -> Vec<i32> {
        self.brokers.keys().copied().filter(|b| !self.fenced.contains(b)).collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        self.topic_by_name(topic)
            .and_then(|t| t.partitions.get(&partition))
    }

    /// Applies one record at `offset`. Deterministic: every node that applies the same
    /// records in the same order holds the same image. Records that refer to something
    /// that no longer exists (for example a partition of a deleted topic) are ignored.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) {
        self.offset = offset;
        match record {
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
            }
            MetadataRecord::RegisterBroker(registration) => {
                self.brokers
                    .insert(registration.broker_id, registration.clone());
                self.fenced.remove(&registration.broker_id);
                self.shut_down.remove(&registration.broker_id);
            }
            MetadataRecord::BrokerFenced { broker_id, shutdown } => {
                if self.brokers.contains_key(broker_id) {
                    self.fenced.insert(*broker_id);
                    if *shutdown {
                        self.shut_down.insert(*broker_id);
                    }
                }
            }
            MetadataRecord::BrokerUnfenced { broker_id } => {
                self.fenced.remove(broker_id);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                leader_epoch,
                partition_epoch,
            } => {
                if let Some(p) = self
                    .topics
                    .get_mut(topic_id)
                    .and_then(|t| t.partitions.get_mut(partition))
                {
                    p.leader = *leader;
                    p.isr = isr.clone();
                    p.leader_epoch = *leader_epoch;
                    p.partition_epoch = *partition_epoch;
                }
            }
            MetadataRecord::Topic { name, topic_id } => {
                self.topic_ids_by_name.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                if let Some(topic) = self.topics.get_mut(topic_id) {
                    topic.partitions.insert(
                        *partition,
                        PartitionImage {
                            partition: *partition,
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: *partition_epoch,
                        },
                    );
                }
            }
            MetadataRecord::Config {
                resource: ConfigResource::Topic(name),
                key,
                value,
            } => {
                let Some(topic_id) = self.topic_ids_by_name.get(name) else {
                    return;
                };
                if let Some(topic) = self.topics.get_mut(topic_id) {
                    match value {
                        Some(value) => {
                            topic.configs.insert(key.clone(), value.clone());
                        }
                        None => {
                            topic.configs.remove(key);
                        }
                    }
                }
            }
            MetadataRecord::ProducerIds { next_producer_id, .. } => {
                // Never moves back, so an id is never handed out twice.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(topic) = self.topics.remove(topic_id) {
                    self.topic_ids_by_name.remove(&topic.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> (Uuid, MetadataRecord) {
        let id = Uuid::new_v4();
        (
            id,
            MetadataRecord::Topic {
                name: name.to_string(),
                topic_id: id,
            },
        )
    }

    #[test]
    fn replaying_topic_partition_and_config_builds_the_topic() {
        let mut image = MetadataImage::default();
        let (id, record) = topic("orders");
        image.apply(1, &record);
        image.apply(
            2,
            &MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        );
        image.apply(
            3,
            &MetadataRecord::Config {
                resource: ConfigResource::Topic("orders".into()),
                key: "retention.ms".into(),
                value: Some("1000".into()),
            },
        );
        let t = image.topic_by_name("orders").unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(image.offset, 3);
    }

    #[test]
    fn removing_a_topic_frees_its_name() {
        let mut image = MetadataImage::default();
        let (id, record) = topic("gone");
        image.apply(1, &record);
        image.apply(2, &MetadataRecord::RemoveTopic { topic_id: id });
        assert!(image.topic_by_name("gone").is_none());
        assert!(image.topics.is_empty());
    }
}

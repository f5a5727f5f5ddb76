//! The controller: decides metadata changes.
//!
//! Each operation is split in two, after Kafka's `ControllerResult`: a pure
//! `decide_*` function takes the current image and the request and returns the
//! records to commit plus a result per item; [`Controller`] then commits those
//! records through the [`MetadataLog`]. The image only changes when the records
//! are replayed, so every decision can be unit-tested without I/O, and replaying
//! the same log on every node yields the same state.
//!
//! Decisions are serialised (one at a time, each against the image that includes
//! every earlier commit), so two concurrent CreateTopics for one name cannot both win.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::log::MetadataLog;
use crate::names::{collision_key, validate_topic_name};
use crate::records::{BrokerRegistration, ConfigResource, MetadataRecord};
use crate::topic_config::validate_topic_config;

/// Largest partition count one request may create (guards memory against a typo).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// A topic to create, as asked for by a client.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTopicSpec {
    pub name: String,
    /// `None` (or -1 on the wire) means the broker default `num.partitions`.
    pub num_partitions: Option<i32>,
    /// `None` (or -1 on the wire) means `default.replication.factor`.
    pub replication_factor: Option<i16>,
    /// Manual assignment: partition → replicas (first is the preferred leader).
    pub assignments: Option<BTreeMap<i32, Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
}

/// Broker-wide defaults used when a request leaves a value out.
#[derive(Debug, Clone, Copy)]
pub struct TopicCreationDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// What a successful (or validated) topic creation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A topic named by name or by id (DeleteTopics v6+ accepts either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// One change to a topic's configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// Orders brokers so that consecutive ones sit on different racks when racks are set
/// (Kafka's rack-alternated list): racks in name order, one broker from each in turn.
/// Brokers without a rack count as one rack of their own.
fn rack_alternated(brokers: &[(i32, Option<String>)]) -> Vec<(i32, Option<String>)> {
    let mut by_rack: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.clone()).or_default().push(*id);
    }
    let mut queues: Vec<(Option<String>, std::collections::VecDeque<i32>)> =
        by_rack.into_iter().map(|(rack, mut ids)| {
            ids.sort();
            (rack, ids.into_iter().collect())
        }).collect();
    let mut out = Vec::with_capacity(brokers.len());
    while out.len() < brokers.len() {
        for (rack, queue) in queues.iter_mut() {
            if let Some(id) = queue.pop_front() {
                out.push((id, rack.clone()));
            }
        }
    }
    out
}

/// Chooses replicas for `count` new partitions numbered from `first_partition`: leaders
/// round-robin over the (rack-alternated) brokers, starting at a broker chosen from the
/// topic name so leaders of different topics spread too; followers walk on from the
/// leader with a shift that changes every `n` partitions (as in Kafka), preferring
/// brokers on racks the partition does not use yet, so replicas span as many racks as
/// they can.
pub fn place_replicas(
    topic: &str,
    brokers: &[(i32, Option<String>)],
    first_partition: i32,
    count: i32,
    replication_factor: usize,
) -> Vec<Vec<i32>> {
    let brokers = rack_alternated(brokers);
    let n = brokers.len();
    let start = topic
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % n.max(1);
    (first_partition..first_partition + count)
        .map(|p| {
            let p = p as usize;
            let shift = 1 + (p / n) % n.saturating_sub(1).max(1);
            let leader = (start + p) % n;
            let mut chosen = vec![leader];
            let mut racks: BTreeSet<&Option<String>> = BTreeSet::from([&brokers[leader].1]);
            let all_racks: BTreeSet<&Option<String>> = brokers.iter().map(|(_, r)| r).collect();
            while chosen.len() < replication_factor.min(n) {
                // Walk from the leader by the shift; take the first broker not chosen yet
                // whose rack is new, or any not chosen once every rack is used.
                let every_rack_used = racks.len() == all_racks.len();
                let pick = (1..=n)
                    .map(|step| (leader + shift * chosen.len() + step - 1) % n)
                    .find(|i| !chosen.contains(i) && (every_rack_used || !racks.contains(&brokers[*i].1)))
                    .or_else(|| (0..n).find(|i| !chosen.contains(i)));
                match pick {
                    Some(i) => {
                        racks.insert(&brokers[i].1);
                        chosen.push(i);
                    }
                    None => break,
                }
            }
            chosen.into_iter().map(|i| brokers[i].0).collect()
        })
        .collect()
}

/// Live brokers with their racks, for placement.
fn live_brokers_with_racks(image: &MetadataImage) -> Vec<(i32, Option<String>)> {
    image
        .live_brokers()
        .into_iter()
        .map(|id| (id, image.brokers.get(&id).and_then(|b| b.rack.clone())))
        .collect()
}

fn partition_records(topic_id: Uuid, first: i32, assignment: &[Vec<i32>]) -> Vec<MetadataRecord> {
    assignment
        .iter()
        .enumerate()
        .map(|(i, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: first + i as i32,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        })
        .collect()
}

fn validate_assignment(
    image: &MetadataImage,
    replicas: &[i32],
    partition: i32,
) -> Result<(), ControllerError> {
    if replicas.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment {
            reason: format!("partition {partition} has no replicas"),
        });
    }
    let unique: BTreeSet<_> = replicas.iter().collect();
    if unique.len() != replicas.len() {
        return Err(ControllerError::InvalidReplicaAssignment {
            reason: format!("partition {partition} lists a broker twice: {replicas:?}"),
        });
    }
    if let Some(unknown) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
        return Err(ControllerError::InvalidReplicaAssignment {
            reason: format!("partition {partition} names unknown broker {unknown}"),
        });
    }
    Ok(())
}

/// Decides CreateTopics: records for every topic that can be created, a result per topic.
pub fn decide_create_topics(
    image: &MetadataImage,
    specs: &[CreateTopicSpec],
    defaults: TopicCreationDefaults,
) -> (Vec<MetadataRecord>, Vec<Result<CreatedTopic, ControllerError>>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    let brokers = live_brokers_with_racks(image);
    let mut names_in_request: BTreeMap<&str, usize> = BTreeMap::new();
    for spec in specs {
        *names_in_request.entry(spec.name.as_str()).or_default() += 1;
    }
    let mut taken: BTreeSet<String> = image
        .topic_ids_by_name
        .keys()
        .map(|n| collision_key(n))
        .collect();
    for spec in specs {
        let result = (|| {
            validate_topic_name(&spec.name).map_err(|reason| ControllerError::InvalidTopic {
                name: spec.name.clone(),
                reason,
            })?;
            if names_in_request[spec.name.as_str()] > 1 {
                return Err(ControllerError::InvalidRequest {
                    reason: format!("topic {:?} appears more than once in the request", spec.name),
                });
            }
            if image.topic_by_name(&spec.name).is_some() {
                return Err(ControllerError::TopicAlreadyExists {
                    name: spec.name.clone(),
                });
            }
            if taken.contains(&collision_key(&spec.name)) {
                return Err(ControllerError::InvalidTopic {
                    name: spec.name.clone(),
                    reason: "collides with an existing topic that differs only in '.' versus '_'"
                        .into(),
                });
            }
            let mut configs = BTreeMap::new();
            for (k, v) in &spec.configs {
                configs.insert(k.clone(), validate_topic_config(k, v)?);
            }
            let assignment: Vec<Vec<i32>> = match &spec.assignments {
                Some(manual) => {
                    if spec.num_partitions.is_some_and(|n| n != -1)
                        || spec.replication_factor.is_some_and(|r| r != -1)
                    {
                        return Err(ControllerError::InvalidRequest {
                            reason: "give either a replica assignment or partitions and replication factor, not both".into(),
                        });
                    }
                    let expected: Vec<i32> = (0..manual.len() as i32).collect();
                    if manual.keys().copied().collect::<Vec<_>>() != expected {
                        return Err(ControllerError::InvalidReplicaAssignment {
                            reason: "partitions must be numbered 0..N without gaps".into(),
                        });
                    }
                    let rf = manual.values().next().map(Vec::len).unwrap_or(0);
                    for (p, replicas) in manual {
                        validate_assignment(image, replicas, *p)?;
                        if replicas.len() != rf {
                            return Err(ControllerError::InvalidReplicaAssignment {
                                reason: "all partitions must have the same number of replicas"
                                    .into(),
                            });
                        }
                    }
                    manual.values().cloned().collect()
                }
                None => {
                    let partitions = match spec.num_partitions {
                        None | Some(-1) => defaults.num_partitions,
                        Some(n) => n,
                    };
                    if partitions <= 0 || partitions > MAX_PARTITIONS_PER_TOPIC {
                        return Err(ControllerError::InvalidPartitions {
                            topic: spec.name.clone(),
                            partitions,
                            reason: format!("must be between 1 and {MAX_PARTITIONS_PER_TOPIC}"),
                        });
                    }
                    let rf = match spec.replication_factor {
                        None | Some(-1) => defaults.replication_factor,
                        Some(r) => r,
                    };
                    if rf <= 0 {
                        return Err(ControllerError::InvalidReplicationFactor {
                            replication_factor: rf as i32,
                            reason: "must be at least 1".into(),
                        });
                    }
                    if rf as usize > brokers.len() {
                        return Err(ControllerError::InvalidReplicationFactor {
                            replication_factor: rf as i32,
                            reason: format!(
                                "larger than the {} available (unfenced) broker(s)",
                                brokers.len()
                            ),
                        });
                    }
                    place_replicas(&spec.name, &brokers, 0, partitions, rf as usize)
                }
            };
            Ok((assignment, configs))
        })();
        match result {
            Ok((assignment, configs)) => {
                let topic_id = Uuid::new_v4();
                taken.insert(collision_key(&spec.name));
                records.push(MetadataRecord::Topic {
                    name: spec.name.clone(),
                    topic_id,
                });
                records.extend(partition_records(topic_id, 0, &assignment));
                for (key, value) in &configs {
                    records.push(MetadataRecord::Config {
                        resource: ConfigResource::Topic(spec.name.clone()),
                        key: key.clone(),
                        value: Some(value.clone()),
                    });
                }
                results.push(Ok(CreatedTopic {
                    topic_id,
                    num_partitions: assignment.len() as i32,
                    replication_factor: assignment[0].len() as i16,
                    configs,
                }));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (records, results)
}

fn resolve<'a>(
    image: &'a MetadataImage,
    topic: &TopicRef,
) -> Result<&'a crate::image::TopicImage, ControllerError> {
    match topic {
        TopicRef::Name(name) => image
            .topic_by_name(name)
            .ok_or_else(|| ControllerError::UnknownTopic { name: name.clone() }),
        TopicRef::Id(id) => image
            .topic_by_id(id)
            .ok_or_else(|| ControllerError::UnknownTopicId { id: id.to_string() }),
    }
}

/// Decides DeleteTopics. A successful result carries the deleted topic's name and id.
pub fn decide_delete_topics(
    image: &MetadataImage,
    topics: &[TopicRef],
) -> (Vec<MetadataRecord>, Vec<Result<(String, Uuid), ControllerError>>) {
    let mut records = Vec::new();
    let mut deleted = BTreeSet::new();
    let results = topics
        .iter()
        .map(|t| {
            let topic = resolve(image, t)?;
            if deleted.insert(topic.topic_id) {
                records.push(MetadataRecord::RemoveTopic {
                    topic_id: topic.topic_id,
                });
            }
            Ok((topic.name.clone(), topic.topic_id))
        })
        .collect();
    (records, results)
}

/// Decides CreatePartitions: grow `topic` to `count` partitions.
pub fn decide_create_partitions(
    image: &MetadataImage,
    topic: &str,
    count: i32,
    assignments: Option<&[Vec<i32>]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let t = image
        .topic_by_name(topic)
        .ok_or_else(|| ControllerError::UnknownTopic { name: topic.into() })?;
    let current = t.partitions.len() as i32;
    if count <= current {
        return Err(ControllerError::InvalidPartitions {
            topic: topic.into(),
            partitions: count,
            reason: format!(
                "topic currently has {current} partitions; the count can only grow"
            ),
        });
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(ControllerError::InvalidPartitions {
            topic: topic.into(),
            partitions: count,
            reason: format!("must be at most {MAX_PARTITIONS_PER_TOPIC}"),
        });
    }
    let rf = t.replication_factor();
    let new = count - current;
    let assignment: Vec<Vec<i32>> = match assignments {
        Some(manual) => {
            if manual.len() as i32 != new {
                return Err(ControllerError::InvalidReplicaAssignment {
                    reason: format!(
                        "{} assignments given for {new} new partitions",
                        manual.len()
                    ),
                });
            }
            for (i, replicas) in manual.iter().enumerate() {
                validate_assignment(image, replicas, current + i as i32)?;
                if replicas.len() != rf {
                    return Err(ControllerError::InvalidReplicaAssignment {
                        reason: format!("new partitions need {rf} replicas like the existing ones"),
                    });
                }
            }
            manual.to_vec()
        }
        None => {
            let brokers = live_brokers_with_racks(image);
            if rf > brokers.len() {
                return Err(ControllerError::InvalidReplicationFactor {
                    replication_factor: rf as i32,
                    reason: format!("larger than the {} available broker(s)", brokers.len()),
                });
            }
            place_replicas(topic, &brokers, current, new, rf)
        }
    };
    Ok(partition_records(t.topic_id, current, &assignment))
}

/// Decides a change of topic configuration overrides. `replace` drops every override
/// not named in `changes` (the legacy AlterConfigs semantics).
pub fn decide_alter_topic_configs(
    image: &MetadataImage,
    topic: &str,
    changes: &[ConfigChange],
    replace: bool,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let t = image
        .topic_by_name(topic)
        .ok_or_else(|| ControllerError::UnknownTopic { name: topic.into() })?;
    let mut target = if replace { BTreeMap::new() } else { t.configs.clone() };
    for change in changes {
        match change {
            ConfigChange::Set(k, v) => {
                target.insert(k.clone(), validate_topic_config(k, v)?);
            }
            ConfigChange::Delete(k) => {
                if crate::topic_config::topic_config_def(k).is_none() {
                    return Err(ControllerError::InvalidConfig {
                        key: k.clone(),
                        value: String::new(),
                        reason: "not a topic configuration Rafka supports".into(),
                    });
                }
                target.remove(k);
            }
        }
    }
    let resource = ConfigResource::Topic(topic.to_string());
    let mut records = Vec::new();
    for (k, v) in &target {
        if t.configs.get(k) != Some(v) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                key: k.clone(),
                value: Some(v.clone()),
            });
        }
    }
    for k in t.configs.keys() {
        if !target.contains_key(k) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                key: k.clone(),
                value: None,
            });
        }
    }
    Ok(records)
}

/// Fences `broker`: it leaves every ISR it is in, and each partition it led gets a new
/// leader from the remaining ISR (in replica order), or none (-1) when no other in-sync
/// replica is alive — never an out-of-sync one (no unclean election). Leader and
/// partition epochs are bumped so stale leaders and requests are refused.
pub fn decide_fence_broker(image: &MetadataImage, broker: i32, shutdown: bool) -> Vec<MetadataRecord> {
    if !image.brokers.contains_key(&broker) || image.fenced.contains(&broker) {
        return vec![];
    }
    let mut records = vec![MetadataRecord::BrokerFenced { broker_id: broker, shutdown }];
    let alive = |b: &i32| *b != broker && image.brokers.contains_key(b) && !image.fenced.contains(b);
    for topic in image.topics.values() {
        for p in topic.partitions.values() {
            if !p.isr.contains(&broker) && p.leader != broker {
                continue;
            }
            let remaining: Vec<i32> = p.isr.iter().copied().filter(|b| *b != broker).collect();
            let (leader, isr, leader_epoch) = if p.leader == broker {
                match p.replicas.iter().copied().find(|r| remaining.contains(r) && alive(r)) {
                    Some(new_leader) => (new_leader, remaining, p.leader_epoch + 1),
                    // Keep the last ISR member recorded so it can lead again when it returns.
                    None => (-1, if remaining.is_empty() { p.isr.clone() } else { remaining }, p.leader_epoch + 1),
                }
            } else if remaining.is_empty() {
                continue;
            } else {
                (p.leader, remaining, p.leader_epoch)
            };
            records.push(MetadataRecord::PartitionChange {
                topic_id: topic.topic_id,
                partition: p.partition,
                leader,
                isr,
                leader_epoch,
                partition_epoch: p.partition_epoch + 1,
            });
        }
    }
    records
}

/// A heartbeat from `broker`: unfence it (see [`decide_unfence_broker`]) unless it was
/// fenced by its own controlled shutdown — a heartbeat already in flight when the broker
/// shut down must not bring it back; only registering again does.
pub fn decide_heartbeat(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    if image.shut_down.contains(&broker) {
        return vec![];
    }
    decide_unfence_broker(image, broker)
}

/// `broker` is alive (registered or heartbeating): unfence it if fenced, and make it
/// leader of every leaderless partition whose ISR it is in.
pub fn decide_unfence_broker(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    if image.fenced.contains(&broker) {
        records.push(MetadataRecord::BrokerUnfenced { broker_id: broker });
    }
    for topic in image.topics.values() {
        for p in topic.partitions.values() {
            if p.leader < 0 && p.isr.contains(&broker) {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: p.partition,
                    leader: broker,
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch + 1,
                    partition_epoch: p.partition_epoch + 1,
                });
            }
        }
    }
    records
}

/// A command for the active controller, sent over gRPC by any node (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// A broker announcing itself; `proposed_cluster_id` becomes the cluster id if the
    /// cluster has none yet.
    RegisterBroker {
        registration: BrokerRegistration,
        proposed_cluster_id: String,
        /// The cluster id in the broker's `meta.properties`, if it has data already: a
        /// broker whose data belongs to another cluster is refused before it registers.
        #[serde(default)]
        stored_cluster_id: Option<String>,
    },
    Heartbeat { broker_id: i32 },
    /// A broker shutting down cleanly: fence it now rather than after the session timeout.
    Unregister { broker_id: i32 },
    CreateTopics { specs: Vec<CreateTopicSpec>, validate_only: bool },
    DeleteTopics { topics: Vec<TopicRef> },
    CreatePartitions { topic: String, count: i32, assignments: Option<Vec<Vec<i32>>>, validate_only: bool },
    AlterTopicConfigs { topic: String, changes: Vec<ConfigChange>, replace: bool, validate_only: bool },
    /// The quorum's state as the leader sees it (DescribeQuorum). Answered by the node
    /// that runs Raft, not by [`Controller`].
    DescribeQuorum,
}

/// One replica of the metadata log, for DescribeQuorum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumReplica {
    pub node_id: i32,
    /// Next log offset the replica does not have (-1 when unknown).
    pub log_end_offset: i64,
}

/// The metadata quorum as its leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumState {
    pub leader_id: i32,
    /// The Raft term, which is KRaft's leader epoch.
    pub leader_epoch: i32,
    /// Next offset not yet committed (applied) by the quorum.
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// The active controller's answer. `offset` is the metadata offset the change was
/// committed at: the caller waits until its own image has reached it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerResponse {
    Registered { offset: u64, cluster_id: String },
    HeartbeatAck { offset: u64 },
    Unregistered { offset: u64 },
    TopicsCreated { offset: u64, results: Vec<Result<CreatedTopic, ControllerError>> },
    TopicsDeleted { offset: u64, results: Vec<Result<(String, Uuid), ControllerError>> },
    Done { offset: u64 },
    Quorum(QuorumState),
}

/// Where controller commands go: the local controller, or the active one elsewhere.
pub trait ControllerApi: Send + Sync + 'static {
    fn submit(&self, request: ControllerRequest) -> crate::log::BoxFuture<'_, Result<ControllerResponse, ControllerError>>;
}

/// Runs decisions one at a time and commits their records.
pub struct Controller {
    log: Arc<dyn MetadataLog>,
    serial: tokio::sync::Mutex<()>,
    defaults: TopicCreationDefaults,
    /// Last heartbeat per broker, as seen by this controller (not replicated: a new
    /// active controller gives every broker a full session from when it took over).
    heartbeats: parking_lot::Mutex<HashMap<i32, Instant>>,
    session_timeout: Duration,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl ControllerApi for Controller {
    fn submit(&self, request: ControllerRequest) -> crate::log::BoxFuture<'_, Result<ControllerResponse, ControllerError>> {
        Box::pin(self.handle(request))
    }
}

impl Controller {
    pub fn new(log: Arc<dyn MetadataLog>, defaults: TopicCreationDefaults) -> Controller {
        Controller {
            log,
            serial: tokio::sync::Mutex::new(()),
            defaults,
            heartbeats: parking_lot::Mutex::new(HashMap::new()),
            session_timeout: Duration::from_secs(9),
        }
    }

    /// Sets `broker.session.timeout.ms`: a broker silent that long is fenced.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Controller {
        self.session_timeout = timeout;
        self
    }

    /// Forgets every heartbeat: called when this node becomes the active controller, so
    /// each broker gets a full session before it can be fenced.
    pub fn reset_liveness(&self) {
        self.heartbeats.lock().clear();
    }

    /// Fences every registered, unfenced broker not heard from within the session timeout
    /// (`now` is injectable for tests). Returns the fenced broker ids.
    pub async fn fence_silent_brokers(&self, now: Instant) -> Result<Vec<i32>, ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let stale: Vec<i32> = {
            let mut heartbeats = self.heartbeats.lock();
            image
                .live_brokers()
                .into_iter()
                .filter(|b| {
                    let last = *heartbeats.entry(*b).or_insert(now);
                    now.saturating_duration_since(last) > self.session_timeout
                })
                .collect()
        };
        let mut fenced = Vec::new();
        for broker in stale {
            let image = self.log.image();
            let records = decide_fence_broker(&image, broker, false);
            if !records.is_empty() {
                self.log.commit(records).await?;
                tracing::warn!(broker, timeout_ms = self.session_timeout.as_millis() as u64, "fenced broker: no heartbeat within the session timeout");
                fenced.push(broker);
            }
        }
        Ok(fenced)
    }

    /// Handles one command; see [`ControllerRequest`].
    pub async fn handle(&self, request: ControllerRequest) -> Result<ControllerResponse, ControllerError> {
        match request {
            ControllerRequest::RegisterBroker { registration, proposed_cluster_id, stored_cluster_id } => {
                if let (Some(stored), Some(cluster)) = (&stored_cluster_id, &self.log.image().cluster_id) {
                    if stored != cluster {
                        return Err(ControllerError::InconsistentClusterId {
                            broker_id: registration.broker_id,
                            stored: stored.clone(),
                            cluster: cluster.clone(),
                        });
                    }
                }
                let cluster_id = self.ensure_cluster_id(&proposed_cluster_id).await?;
                let broker_id = registration.broker_id;
                self.heartbeats.lock().insert(broker_id, Instant::now());
                let mut offset = self.register_broker(registration).await?;
                let _serial = self.serial.lock().await;
                let records = decide_unfence_broker(&self.log.image(), broker_id);
                if !records.is_empty() {
                    offset = self.log.commit(records).await?;
                }
                Ok(ControllerResponse::Registered { offset, cluster_id })
            }
            ControllerRequest::Heartbeat { broker_id } => {
                self.heartbeats.lock().insert(broker_id, Instant::now());
                let _serial = self.serial.lock().await;
                let image = self.log.image();
                if !image.brokers.contains_key(&broker_id) {
                    return Err(ControllerError::InvalidRequest {
                        reason: format!("broker {broker_id} is not registered"),
                    });
                }
                let records = decide_heartbeat(&image, broker_id);
                let offset = if records.is_empty() {
                    image.offset
                } else {
                    tracing::info!(broker = broker_id, "unfenced broker: heartbeating again");
                    self.log.commit(records).await?
                };
                Ok(ControllerResponse::HeartbeatAck { offset })
            }
            ControllerRequest::Unregister { broker_id } => {
                let _serial = self.serial.lock().await;
                let image = self.log.image();
                let records = decide_fence_broker(&image, broker_id, true);
                let offset = if records.is_empty() { image.offset } else { self.log.commit(records).await? };
                self.heartbeats.lock().remove(&broker_id);
                Ok(ControllerResponse::Unregistered { offset })
            }
            ControllerRequest::CreateTopics { specs, validate_only } => {
                let (offset, results) = self.create_topics(&specs, validate_only).await?;
                Ok(ControllerResponse::TopicsCreated { offset, results })
            }
            ControllerRequest::DeleteTopics { topics } => {
                let (offset, results) = self.delete_topics(&topics).await?;
                Ok(ControllerResponse::TopicsDeleted { offset, results })
            }
            ControllerRequest::CreatePartitions { topic, count, assignments, validate_only } => {
                let offset = self.create_partitions(&topic, count, assignments.as_deref(), validate_only).await?;
                Ok(ControllerResponse::Done { offset })
            }
            ControllerRequest::AlterTopicConfigs { topic, changes, replace, validate_only } => {
                let offset = self.alter_topic_configs(&topic, &changes, replace, validate_only).await?;
                Ok(ControllerResponse::Done { offset })
            }
            ControllerRequest::DescribeQuorum => Err(ControllerError::InvalidRequest {
                reason: "the quorum is described by the node running Raft".into(),
            }),
        }
    }

    pub fn log(&self) -> &Arc<dyn MetadataLog> {
        &self.log
    }

    pub fn creation_defaults(&self) -> TopicCreationDefaults {
        self.defaults
    }

    /// Writes the cluster id if the log has none yet; returns the cluster's id.
    pub async fn ensure_cluster_id(&self, proposed: &str) -> Result<String, ControllerError> {
        let _serial = self.serial.lock().await;
        if let Some(id) = &self.log.image().cluster_id {
            return Ok(id.clone());
        }
        self.log
            .commit(vec![MetadataRecord::ClusterId {
                cluster_id: proposed.to_string(),
            }])
            .await?;
        Ok(proposed.to_string())
    }

    /// Registers (or re-registers, after a restart) a broker and its endpoints.
    pub async fn register_broker(
        &self,
        registration: BrokerRegistration,
    ) -> Result<u64, ControllerError> {
        let _serial = self.serial.lock().await;
        Ok(self
            .log
            .commit(vec![MetadataRecord::RegisterBroker(registration)])
            .await?)
    }

    /// CreateTopics. With `validate_only` nothing is committed.
    pub async fn create_topics(
        &self,
        specs: &[CreateTopicSpec],
        validate_only: bool,
    ) -> Result<(u64, Vec<Result<CreatedTopic, ControllerError>>), ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let (records, results) = decide_create_topics(&image, specs, self.defaults);
        let offset = if validate_only || records.is_empty() {
            image.offset
        } else {
            self.log.commit(records).await?
        };
        Ok((offset, results))
    }

    pub async fn delete_topics(
        &self,
        topics: &[TopicRef],
    ) -> Result<(u64, Vec<Result<(String, Uuid), ControllerError>>), ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let (records, results) = decide_delete_topics(&image, topics);
        let offset = if records.is_empty() {
            image.offset
        } else {
            self.log.commit(records).await?
        };
        Ok((offset, results))
    }

    pub async fn create_partitions(
        &self,
        topic: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<u64, ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let records = decide_create_partitions(&image, topic, count, assignments)?;
        if validate_only {
            return Ok(image.offset);
        }
        Ok(self.log.commit(records).await?)
    }

    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        changes: &[ConfigChange],
        replace: bool,
        validate_only: bool,
    ) -> Result<u64, ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let records = decide_alter_topic_configs(&image, topic, changes, replace)?;
        if validate_only || records.is_empty() {
            return Ok(image.offset);
        }
        Ok(self.log.commit(records).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::BrokerRegistration;

    fn image_with_brokers(ids: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, id) in ids.iter().enumerate() {
            image.apply(
                i as u64 + 1,
                &MetadataRecord::RegisterBroker(BrokerRegistration {
                    broker_id: *id,
                    incarnation_id: Uuid::new_v4(),
                    endpoints: vec![],
                    rack: None,
                }),
            );
        }
        image
    }

    fn replay(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for r in records {
            let next = image.offset + 1;
            image.apply(next, r);
        }
    }

    fn spec(name: &str, partitions: i32, rf: i16) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.into(),
            num_partitions: Some(partitions),
            replication_factor: Some(rf),
            ..Default::default()
        }
    }

    const DEFAULTS: TopicCreationDefaults = TopicCreationDefaults {
        num_partitions: 1,
        replication_factor: 1,
    };

    #[test]
    fn placement_spreads_leaders_and_replicas_evenly() {
        let brokers = [(1, None), (2, None), (3, None)];
        let placed = place_replicas("t", &brokers, 0, 6, 3);
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            assert_eq!(replicas.len(), 3);
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn placement_spans_racks_before_repeating_one() {
        let rack = |r: &str| Some(r.to_string());
        // Six brokers on three racks, listed rack by rack.
        let brokers = [(1, rack("a")), (2, rack("a")), (3, rack("b")), (4, rack("b")), (5, rack("c")), (6, rack("c"))];
        let of = |id: i32| brokers.iter().find(|(b, _)| *b == id).unwrap().1.clone();
        let placed = place_replicas("orders", &brokers, 0, 12, 3);
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            let racks: BTreeSet<_> = replicas.iter().map(|b| of(*b)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?} spans every rack");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.len(), 6, "every broker leads some partition");
        assert!(leaders.values().all(|c| *c == 2));
        // Two racks, RF 3: both racks used, no broker twice.
        let two = [(1, rack("a")), (2, rack("a")), (3, rack("b"))];
        for replicas in place_replicas("x", &two, 0, 6, 3) {
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn created_topic_has_partitions_and_configs_after_replay() {
        let mut image = image_with_brokers(&[1]);
        let mut s = spec("orders", 3, 1);
        s.configs.insert("retention.ms".into(), "1000".into());
        let (records, results) = decide_create_topics(&image, &[s], DEFAULTS);
        assert!(results[0].is_ok());
        replay(&mut image, &records);
        let t = image.topic_by_name("orders").unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(t.partitions[&0].leader, 1);
    }

    #[test]
    fn create_rejects_duplicates_bad_names_rf_and_partitions() {
        let mut image = image_with_brokers(&[1]);
        let (records, _) = decide_create_topics(&image, &[spec("a.b", 1, 1)], DEFAULTS);
        replay(&mut image, &records);
        let (_, results) = decide_create_topics(
            &image,
            &[
                spec("a.b", 1, 1),
                spec("a_b", 1, 1),
                spec("bad/name", 1, 1),
                spec("rf", 1, 2),
                spec("zero", 0, 1),
            ],
            DEFAULTS,
        );
        assert!(matches!(results[0], Err(ControllerError::TopicAlreadyExists { .. })));
        assert!(matches!(results[1], Err(ControllerError::InvalidTopic { .. })));
        assert!(matches!(results[2], Err(ControllerError::InvalidTopic { .. })));
        assert!(matches!(results[3], Err(ControllerError::InvalidReplicationFactor { .. })));
        assert!(matches!(results[4], Err(ControllerError::InvalidPartitions { .. })));
    }

    #[test]
    fn the_same_name_twice_in_one_request_is_refused() {
        let image = image_with_brokers(&[1]);
        let (records, results) =
            decide_create_topics(&image, &[spec("x", 1, 1), spec("x", 1, 1)], DEFAULTS);
        assert!(records.is_empty());
        assert!(results.iter().all(|r| r.is_err()));
    }

    #[test]
    fn partitions_only_grow() {
        let mut image = image_with_brokers(&[1]);
        let (records, _) = decide_create_topics(&image, &[spec("t", 2, 1)], DEFAULTS);
        replay(&mut image, &records);
        assert!(decide_create_partitions(&image, "t", 2, None).is_err());
        let grow = decide_create_partitions(&image, "t", 5, None).unwrap();
        replay(&mut image, &grow);
        assert_eq!(image.topic_by_name("t").unwrap().partitions.len(), 5);
    }

    #[test]
    fn incremental_and_replacing_config_changes() {
        let mut image = image_with_brokers(&[1]);
        let mut s = spec("t", 1, 1);
        s.configs.insert("retention.ms".into(), "1000".into());
        let (records, _) = decide_create_topics(&image, &[s], DEFAULTS);
        replay(&mut image, &records);
        let r = decide_alter_topic_configs(
            &image,
            "t",
            &[ConfigChange::Set("segment.bytes".into(), "4096".into())],
            false,
        )
        .unwrap();
        replay(&mut image, &r);
        assert_eq!(image.topic_by_name("t").unwrap().configs.len(), 2);
        let r = decide_alter_topic_configs(
            &image,
            "t",
            &[ConfigChange::Set("retention.bytes".into(), "10".into())],
            true,
        )
        .unwrap();
        replay(&mut image, &r);
        let configs = &image.topic_by_name("t").unwrap().configs;
        assert_eq!(configs.keys().collect::<Vec<_>>(), vec!["retention.bytes"]);
        assert!(decide_alter_topic_configs(
            &image,
            "t",
            &[ConfigChange::Set("retention.ms".into(), "x".into())],
            false
        )
        .is_err());
    }

    #[test]
    fn fencing_a_leader_elects_the_next_in_sync_replica_and_bumps_epochs() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let (records, _) = decide_create_topics(&image, &[spec("t", 3, 3)], DEFAULTS);
        replay(&mut image, &records);
        let before = image.topic_by_name("t").unwrap().clone();
        let victim = before.partitions[&0].leader;
        let r = decide_fence_broker(&image, victim, false);
        replay(&mut image, &r);
        assert!(image.fenced.contains(&victim));
        assert!(!image.live_brokers().contains(&victim));
        for (i, p) in &image.topic_by_name("t").unwrap().partitions {
            let old = &before.partitions[i];
            assert!(!p.isr.contains(&victim), "partition {i} ISR {:?}", p.isr);
            assert_ne!(p.leader, victim);
            assert!(p.isr.contains(&p.leader));
            assert_eq!(p.partition_epoch, old.partition_epoch + 1);
            let expected_epoch = if old.leader == victim { old.leader_epoch + 1 } else { old.leader_epoch };
            assert_eq!(p.leader_epoch, expected_epoch);
        }
        // Fencing again changes nothing.
        assert!(decide_fence_broker(&image, victim, false).is_empty());
    }

    #[test]
    fn a_partition_without_live_in_sync_replicas_goes_offline_and_returns_with_its_last_member() {
        let mut image = image_with_brokers(&[1]);
        let (records, _) = decide_create_topics(&image, &[spec("solo", 1, 1)], DEFAULTS);
        replay(&mut image, &records);
        let r = decide_fence_broker(&image, 1, false);
        replay(&mut image, &r);
        let p = &image.topic_by_name("solo").unwrap().partitions[&0];
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));
        let r = decide_unfence_broker(&image, 1);
        replay(&mut image, &r);
        let p = &image.topic_by_name("solo").unwrap().partitions[&0];
        assert_eq!((p.leader, p.leader_epoch), (1, 2));
        assert!(image.fenced.is_empty());
    }

    #[test]
    fn a_late_heartbeat_does_not_revive_a_broker_that_shut_down() {
        let mut image = image_with_brokers(&[1, 2]);
        let r = decide_fence_broker(&image, 2, true);
        replay(&mut image, &r);
        assert!(decide_heartbeat(&image, 2).is_empty(), "heartbeat after controlled shutdown");
        // A broker fenced for silence comes back with its next heartbeat.
        let r = decide_fence_broker(&image, 1, false);
        replay(&mut image, &r);
        let r = decide_heartbeat(&image, 1);
        replay(&mut image, &r);
        assert!(!image.fenced.contains(&1));
        // Registering again (a restart) brings the shut-down broker back.
        replay(&mut image, &[MetadataRecord::RegisterBroker(BrokerRegistration {
            broker_id: 2,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![],
            rack: None,
        })]);
        assert!(!image.fenced.contains(&2) && !image.shut_down.contains(&2));
    }

    #[test]
    fn fenced_brokers_get_no_new_replicas() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let r = decide_fence_broker(&image, 2, false);
        replay(&mut image, &r);
        let (records, results) = decide_create_topics(&image, &[spec("n", 4, 2), spec("too-big", 1, 3)], DEFAULTS);
        assert!(matches!(results[1], Err(ControllerError::InvalidReplicationFactor { .. })));
        replay(&mut image, &records);
        for p in image.topic_by_name("n").unwrap().partitions.values() {
            assert!(!p.replicas.contains(&2));
        }
    }

    #[test]
    fn delete_by_name_and_by_id() {
        let mut image = image_with_brokers(&[1]);
        let (records, results) =
            decide_create_topics(&image, &[spec("a", 1, 1), spec("b", 1, 1)], DEFAULTS);
        replay(&mut image, &records);
        let b_id = results[1].as_ref().unwrap().topic_id;
        let (records, results) = decide_delete_topics(
            &image,
            &[TopicRef::Name("a".into()), TopicRef::Id(b_id), TopicRef::Name("zz".into())],
        );
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(ControllerError::UnknownTopic { .. })));
        replay(&mut image, &records);
        assert!(image.topics.is_empty());
    }
}

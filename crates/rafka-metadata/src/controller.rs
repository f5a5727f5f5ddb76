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
//!
//! The decisions:
//! - topics: [`decide_create_topics`], [`decide_delete_topics`],
//!   [`decide_create_partitions`], [`decide_alter_topic_configs`];
//! - broker liveness: [`decide_fence_broker_with`] (session timeout, controlled
//!   shutdown, or a broker another node reported unreachable) and
//!   [`decide_unfence_broker_with`] / [`decide_heartbeat_with`], which move partition
//!   leadership and honour each topic's `unclean.leader.election.enable`;
//! - replication: [`decide_alter_partition`] (a leader shrinking or expanding its ISR,
//!   refused when built from a stale leader or partition epoch; with
//!   `auto.leader.rebalance.enable` a preferred replica that rejoins the ISR leads again
//!   at once), [`decide_elect_leaders`] (preferred or unclean, on request) and
//!   [`decide_preferred_rebalance`] (the periodic auto leader rebalance);
//! - idempotent producers: [`decide_allocate_producer_ids`] hands out disjoint blocks
//!   of producer ids whose end is committed before a block is used.
//!
//! Every leader or ISR change bumps the partition epoch, and every leader change the
//! leader epoch, so stale leaders and requests built from an old state are refused.
//! Broker-level settings the decisions honour are in [`ControllerSettings`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::{MetadataImage, PartitionImage, TopicImage};
use crate::log::MetadataLog;
use crate::names::{collision_key, validate_topic_name};
use crate::records::{BrokerRegistration, ConfigResource, MetadataRecord};
use crate::topic_config::{unclean_leader_election_enabled, validate_topic_config};

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

/// Broker-level replication settings the controller's decisions honour (static
/// configuration of the node that runs the controller, as in Kafka).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerSettings {
    /// `unclean.leader.election.enable`: the default for topics without their own
    /// override. Kafka's default is `false`.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas, both
    /// when one rejoins an ISR and periodically. Kafka's default is `true`.
    pub auto_leader_rebalance_enable: bool,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
        }
    }
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

/// One topic's outcome of a DeleteTopics: the deleted topic's name and id, or why not.
pub type DeletedTopic = Result<(String, Uuid), ControllerError>;

/// Decides DeleteTopics. A successful result carries the deleted topic's name and id.
pub fn decide_delete_topics(
    image: &MetadataImage,
    topics: &[TopicRef],
) -> (Vec<MetadataRecord>, Vec<DeletedTopic>) {
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

/// Fences `broker` with the default [`ControllerSettings`] (unclean leader election
/// only where a topic enables it); see [`decide_fence_broker_with`].
pub fn decide_fence_broker(image: &MetadataImage, broker: i32, shutdown: bool) -> Vec<MetadataRecord> {
    decide_fence_broker_with(image, broker, shutdown, ControllerSettings::default())
}

/// Fences `broker`: it leaves every ISR it is in, and each partition it led gets a new
/// leader from the remaining ISR (in replica order). When no other in-sync replica is
/// alive the partition has no leader (-1) — unless unclean leader election is enabled
/// for its topic (the topic's `unclean.leader.election.enable`, else
/// `settings.unclean_leader_election_enable`): then the first live replica leads, with
/// an ISR of just itself, accepting the loss of what it had not copied. Leader and
/// partition epochs are bumped so stale leaders and requests are refused.
pub fn decide_fence_broker_with(
    image: &MetadataImage,
    broker: i32,
    shutdown: bool,
    settings: ControllerSettings,
) -> Vec<MetadataRecord> {
    if !image.brokers.contains_key(&broker) || image.fenced.contains(&broker) {
        return vec![];
    }
    let mut records = vec![MetadataRecord::BrokerFenced { broker_id: broker, shutdown }];
    let alive = |b: &i32| *b != broker && image.brokers.contains_key(b) && !image.fenced.contains(b);
    for topic in image.topics.values() {
        let unclean = unclean_leader_election_enabled(&topic.configs, settings.unclean_leader_election_enable);
        for p in topic.partitions.values() {
            if !p.isr.contains(&broker) && p.leader != broker {
                continue;
            }
            let remaining: Vec<i32> = p.isr.iter().copied().filter(|b| *b != broker).collect();
            let (leader, isr, leader_epoch) = if p.leader == broker {
                let clean = p.replicas.iter().copied().find(|r| remaining.contains(r) && alive(r));
                let out_of_sync = p.replicas.iter().copied().find(|r| unclean && alive(r));
                match (clean, out_of_sync) {
                    (Some(new_leader), _) => (new_leader, remaining, p.leader_epoch + 1),
                    (None, Some(new_leader)) => (new_leader, vec![new_leader], p.leader_epoch + 1),
                    // Keep the last ISR member recorded so it can lead again when it returns.
                    (None, None) => (-1, if remaining.is_empty() { p.isr.clone() } else { remaining }, p.leader_epoch + 1),
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

/// A heartbeat from `broker` with the default [`ControllerSettings`]; see
/// [`decide_heartbeat_with`].
pub fn decide_heartbeat(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    decide_heartbeat_with(image, broker, ControllerSettings::default())
}

/// A heartbeat from `broker`: unfence it (see [`decide_unfence_broker_with`]) unless it
/// was fenced by its own controlled shutdown — a heartbeat already in flight when the
/// broker shut down must not bring it back; only registering again does.
pub fn decide_heartbeat_with(image: &MetadataImage, broker: i32, settings: ControllerSettings) -> Vec<MetadataRecord> {
    if image.shut_down.contains(&broker) {
        return vec![];
    }
    decide_unfence_broker_with(image, broker, settings)
}

/// `broker` is alive, with the default [`ControllerSettings`]; see
/// [`decide_unfence_broker_with`].
pub fn decide_unfence_broker(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    decide_unfence_broker_with(image, broker, ControllerSettings::default())
}

/// `broker` is alive (registered or heartbeating): unfence it if fenced, and make it
/// leader of every leaderless partition whose ISR it is in. Where unclean leader
/// election is enabled for the topic (see [`decide_fence_broker_with`]), it also takes
/// over a leaderless partition it is a replica of but not in the ISR of, when no ISR
/// member is alive — with an ISR of just itself.
pub fn decide_unfence_broker_with(
    image: &MetadataImage,
    broker: i32,
    settings: ControllerSettings,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    if image.fenced.contains(&broker) {
        records.push(MetadataRecord::BrokerUnfenced { broker_id: broker });
    }
    for topic in image.topics.values() {
        let unclean = unclean_leader_election_enabled(&topic.configs, settings.unclean_leader_election_enable);
        for p in topic.partitions.values() {
            if p.leader >= 0 {
                continue;
            }
            let isr = if p.isr.contains(&broker) {
                p.isr.clone()
            } else if unclean
                && p.replicas.contains(&broker)
                && !p.isr.iter().any(|b| *b != broker && image.is_alive(*b))
            {
                vec![broker]
            } else {
                continue;
            };
            records.push(MetadataRecord::PartitionChange {
                topic_id: topic.topic_id,
                partition: p.partition,
                leader: broker,
                isr,
                leader_epoch: p.leader_epoch + 1,
                partition_epoch: p.partition_epoch + 1,
            });
        }
    }
    records
}

/// The unclean elections among `records` decided against `image`: (topic, partition,
/// new leader) for every change whose new leader was not in the ISR before — a leader
/// that may lack committed records. The controller logs them once committed.
pub fn unclean_elections(image: &MetadataImage, records: &[MetadataRecord]) -> Vec<(String, i32, i32)> {
    // Records of one decision apply in order: an ISR expansion followed by a leader
    // change to the added replica is clean, so each change is judged against the ISR
    // left by the records before it.
    let mut isr_now: HashMap<(Uuid, i32), Vec<i32>> = HashMap::new();
    let mut unclean = Vec::new();
    for record in records {
        if let MetadataRecord::PartitionChange { topic_id, partition, leader, isr, .. } = record {
            let Some(topic) = image.topic_by_id(topic_id) else { continue };
            let Some(before) = topic.partitions.get(partition) else { continue };
            let previous = isr_now.get(&(*topic_id, *partition)).unwrap_or(&before.isr);
            if *leader >= 0 && !previous.contains(leader) {
                unclean.push((topic.name.clone(), *partition, *leader));
            }
            isr_now.insert((*topic_id, *partition), isr.clone());
        }
    }
    unclean
}

/// Looks a partition up by topic id, for requests from brokers.
fn partition_by_id<'a>(
    image: &'a MetadataImage,
    topic_id: &Uuid,
    partition: i32,
) -> Result<(&'a TopicImage, &'a PartitionImage), ControllerError> {
    image
        .topic_by_id(topic_id)
        .and_then(|t| t.partitions.get(&partition).map(|p| (t, p)))
        .ok_or_else(|| ControllerError::UnknownTopicOrPartition {
            topic: topic_id.to_string(),
            partition,
        })
}

/// A leader change of `p` to `leader` with `isr`: both epochs go up by one.
fn leader_change(topic_id: Uuid, p: &PartitionImage, leader: i32, isr: Vec<i32>) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id,
        partition: p.partition,
        leader,
        isr,
        leader_epoch: p.leader_epoch + 1,
        partition_epoch: p.partition_epoch + 1,
    }
}

/// The state of `p` once `records` (decided against the image that holds `p`) are
/// applied: what a requester is told without re-reading the image after the commit.
pub fn partition_after(topic_id: Uuid, p: &PartitionImage, records: &[MetadataRecord]) -> PartitionImage {
    let mut state = p.clone();
    for record in records {
        if let MetadataRecord::PartitionChange { topic_id: t, partition, leader, isr, leader_epoch, partition_epoch } = record {
            if *t == topic_id && *partition == p.partition {
                state.leader = *leader;
                state.isr = isr.clone();
                state.leader_epoch = *leader_epoch;
                state.partition_epoch = *partition_epoch;
            }
        }
    }
    state
}

/// An AlterPartition from a partition leader: its proposed new ISR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    /// The broker asking: it must be the partition's leader.
    pub broker_id: i32,
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader epoch the requester leads in.
    pub leader_epoch: i32,
    /// The partition epoch of the state the requester last saw.
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Decides AlterPartition (ISR shrink or expand by the leader), with Kafka's checks in
/// Kafka's order: the partition must exist (UNKNOWN_TOPIC_OR_PARTITION), the leader
/// epoch must be the current one (FENCED_LEADER_EPOCH), the requester must be the
/// leader (NOT_LEADER_OR_FOLLOWER), and the partition epoch must be the current one
/// (INVALID_UPDATE_VERSION: the request was built from a stale state). The new ISR must
/// hold the leader and only replicas of the partition, each once (INVALID_REQUEST), and
/// a broker it adds must be alive — registered, unfenced, not shut down
/// (INELIGIBLE_REPLICA).
///
/// An unchanged ISR (as a set) needs no records. Otherwise one `PartitionChange` keeps
/// the leader and leader epoch and bumps the partition epoch. With
/// `auto.leader.rebalance.enable`, an ISR expansion that adds the partition's preferred
/// replica (the first) while it is alive and not the leader also hands it the
/// leadership in a second change (both epochs bumped again), so a restarted broker
/// leads its partitions again as soon as it has caught up.
pub fn decide_alter_partition(
    image: &MetadataImage,
    request: &AlterPartitionRequest,
    settings: ControllerSettings,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let (topic, p) = partition_by_id(image, &request.topic_id, request.partition)?;
    if request.leader_epoch != p.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch { current: p.leader_epoch, got: request.leader_epoch });
    }
    if request.broker_id != p.leader {
        return Err(ControllerError::NotLeaderOrFollower {
            topic: topic.name.clone(),
            partition: p.partition,
            broker_id: request.broker_id,
            leader: p.leader,
        });
    }
    if request.partition_epoch != p.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion { current: p.partition_epoch, got: request.partition_epoch });
    }
    let new_isr = &request.new_isr;
    let invalid = |reason: String| ControllerError::InvalidRequest {
        reason: format!("new ISR {new_isr:?} of {}-{}: {reason}", topic.name, p.partition),
    };
    if !new_isr.contains(&p.leader) {
        return Err(invalid(format!("it leaves out the leader {}", p.leader)));
    }
    if let Some(stranger) = new_isr.iter().find(|b| !p.replicas.contains(b)) {
        return Err(invalid(format!("broker {stranger} is not one of the replicas {:?}", p.replicas)));
    }
    let proposed: BTreeSet<i32> = new_isr.iter().copied().collect();
    if proposed.len() != new_isr.len() {
        return Err(invalid("it lists a broker twice".into()));
    }
    let current: BTreeSet<i32> = p.isr.iter().copied().collect();
    if proposed == current {
        return Ok(vec![]);
    }
    if let Some(dead) = proposed.difference(&current).find(|b| !image.is_alive(**b)) {
        return Err(ControllerError::IneligibleReplica { broker_id: *dead });
    }
    let mut records = vec![MetadataRecord::PartitionChange {
        topic_id: topic.topic_id,
        partition: p.partition,
        leader: p.leader,
        isr: new_isr.clone(),
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch + 1,
    }];
    if let Some(&preferred) = p.replicas.first() {
        if settings.auto_leader_rebalance_enable
            && preferred != p.leader
            && proposed.contains(&preferred)
            && !current.contains(&preferred)
            && image.is_alive(preferred)
        {
            let expanded = partition_after(topic.topic_id, p, &records);
            records.push(leader_change(topic.topic_id, &expanded, preferred, new_isr.clone()));
        }
    }
    Ok(records)
}

/// How many producer ids one AllocateProducerIds hands out.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A block of producer ids handed to one broker: `first_producer_id ..
/// first_producer_id + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub broker_id: i32,
    pub first_producer_id: i64,
    pub count: i64,
}

/// Decides AllocateProducerIds: the next [`PRODUCER_ID_BLOCK_SIZE`] ids from the
/// image's `next_producer_id`, for a registered broker. The record moves
/// `next_producer_id` past the block, and the block is only handed out once that is
/// committed, so a new active controller never hands out an id again.
pub fn decide_allocate_producer_ids(
    image: &MetadataImage,
    broker_id: i32,
) -> Result<(Vec<MetadataRecord>, ProducerIdBlock), ControllerError> {
    if !image.brokers.contains_key(&broker_id) {
        return Err(ControllerError::InvalidRequest {
            reason: format!("broker {broker_id} is not registered"),
        });
    }
    let first = image.next_producer_id;
    let next = first.checked_add(PRODUCER_ID_BLOCK_SIZE).ok_or_else(|| ControllerError::InvalidRequest {
        reason: format!("producer ids are exhausted (next would be {first})"),
    })?;
    Ok((
        vec![MetadataRecord::ProducerIds { broker_id, next_producer_id: next }],
        ProducerIdBlock { broker_id, first_producer_id: first, count: PRODUCER_ID_BLOCK_SIZE },
    ))
}

/// Which leader an ElectLeaders asks for (Kafka's `ElectionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// The preferred replica (the first one) leads again, if it is alive and in sync.
    Preferred,
    /// A partition without a live leader gets one even if no in-sync replica is alive.
    Unclean,
}

/// One partition's outcome of an ElectLeaders: topic name, partition, result.
pub type ElectionResult = (String, i32, Result<(), ControllerError>);

/// One election on `p`: the change to commit, or why there is none.
fn elect_leader(
    image: &MetadataImage,
    topic: &TopicImage,
    p: &PartitionImage,
    election: ElectionType,
) -> Result<MetadataRecord, ControllerError> {
    let not_needed = || ControllerError::ElectionNotNeeded {
        topic: topic.name.clone(),
        partition: p.partition,
        leader: p.leader,
    };
    match election {
        ElectionType::Preferred => {
            let preferred = p.replicas.first().copied().unwrap_or(-1);
            if p.leader == preferred {
                return Err(not_needed());
            }
            if !image.is_alive(preferred) || !p.isr.contains(&preferred) {
                return Err(ControllerError::PreferredLeaderNotAvailable {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    preferred,
                });
            }
            Ok(leader_change(topic.topic_id, p, preferred, p.isr.clone()))
        }
        ElectionType::Unclean => {
            if p.leader >= 0 && image.is_alive(p.leader) {
                return Err(not_needed());
            }
            let in_sync = p.replicas.iter().copied().find(|r| p.isr.contains(r) && image.is_alive(*r));
            if let Some(leader) = in_sync {
                let isr = p.isr.iter().copied().filter(|b| image.is_alive(*b)).collect();
                return Ok(leader_change(topic.topic_id, p, leader, isr));
            }
            match p.replicas.iter().copied().find(|r| image.is_alive(*r)) {
                Some(leader) => Ok(leader_change(topic.topic_id, p, leader, vec![leader])),
                None => Err(ControllerError::EligibleLeadersNotAvailable {
                    topic: topic.name.clone(),
                    partition: p.partition,
                }),
            }
        }
    }
}

/// Decides ElectLeaders for `partitions` (topic name, partition), or for every
/// partition when `None`. Each election bumps the leader and partition epochs.
///
/// - `Preferred`: the first replica leads if it is alive and in the ISR;
///   ELECTION_NOT_NEEDED if it leads already, PREFERRED_LEADER_NOT_AVAILABLE otherwise.
/// - `Unclean` (an explicit request, so regardless of `unclean.leader.election.enable`):
///   only a partition with no leader or a dead one; a live ISR member leads if there is
///   one, else the first live replica with an ISR of just itself.
///   ELECTION_NOT_NEEDED if the leader is alive, ELIGIBLE_LEADERS_NOT_AVAILABLE if no
///   replica is.
///
/// A partition named twice is elected once. With `None`, as in Kafka, partitions that
/// need no election are left out of the results.
pub fn decide_elect_leaders(
    image: &MetadataImage,
    election: ElectionType,
    partitions: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionResult>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    match partitions {
        Some(partitions) => {
            let mut seen = BTreeSet::new();
            for (name, partition) in partitions {
                if !seen.insert((name.as_str(), *partition)) {
                    continue;
                }
                let result = image
                    .topic_by_name(name)
                    .and_then(|t| t.partitions.get(partition).map(|p| (t, p)))
                    .ok_or_else(|| ControllerError::UnknownTopicOrPartition {
                        topic: name.clone(),
                        partition: *partition,
                    })
                    .and_then(|(t, p)| elect_leader(image, t, p, election))
                    .map(|record| records.push(record));
                results.push((name.clone(), *partition, result));
            }
        }
        None => {
            for topic in image.topic_ids_by_name.values().filter_map(|id| image.topics.get(id)) {
                for p in topic.partitions.values() {
                    match elect_leader(image, topic, p, election) {
                        Ok(record) => {
                            records.push(record);
                            results.push((topic.name.clone(), p.partition, Ok(())));
                        }
                        Err(ControllerError::ElectionNotNeeded { .. }) => {}
                        Err(e) => results.push((topic.name.clone(), p.partition, Err(e))),
                    }
                }
            }
        }
    }
    (records, results)
}

/// The periodic auto leader rebalance: every partition whose preferred replica is
/// alive, in the ISR and not the leader gets it as leader again.
pub fn decide_preferred_rebalance(image: &MetadataImage) -> Vec<MetadataRecord> {
    image
        .topics
        .values()
        .flat_map(|t| t.partitions.values().map(move |p| (t, p)))
        .filter_map(|(t, p)| elect_leader(image, t, p, ElectionType::Preferred).ok())
        .collect()
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
    /// A partition leader changing the ISR (see [`decide_alter_partition`]); answered
    /// with [`ControllerResponse::PartitionChanged`].
    AlterPartition {
        broker_id: i32,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    },
    /// A broker asking for a block of producer ids; answered with
    /// [`ControllerResponse::ProducerIds`].
    AllocateProducerIds { broker_id: i32 },
    /// ElectLeaders for the named (topic, partition)s, or every partition when `None`;
    /// answered with [`ControllerResponse::LeadersElected`].
    ElectLeaders {
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// `broker_id` was confirmed down (a failed connection probe) by `reporter`: fence
    /// it now rather than after the session timeout.
    BrokerUnreachable { broker_id: i32, reporter: i32 },
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
    /// The partition's state after an AlterPartition (unchanged when the ISR was).
    PartitionChanged {
        offset: u64,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Producer ids `first_producer_id .. first_producer_id + count`, for the asker only.
    ProducerIds { offset: u64, first_producer_id: i64, count: i64 },
    LeadersElected { offset: u64, results: Vec<ElectionResult> },
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
    settings: ControllerSettings,
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
            settings: ControllerSettings::default(),
        }
    }

    /// Sets the broker-level replication settings at once.
    pub fn with_settings(mut self, settings: ControllerSettings) -> Controller {
        self.settings = settings;
        self
    }

    /// Sets the broker-level `unclean.leader.election.enable` (default `false`).
    pub fn with_unclean_leader_election(mut self, enable: bool) -> Controller {
        self.settings.unclean_leader_election_enable = enable;
        self
    }

    /// Sets `auto.leader.rebalance.enable` (default `true`).
    pub fn with_auto_leader_rebalance(mut self, enable: bool) -> Controller {
        self.settings.auto_leader_rebalance_enable = enable;
        self
    }

    pub fn settings(&self) -> ControllerSettings {
        self.settings
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
            let records = decide_fence_broker_with(&image, broker, false, self.settings);
            if !records.is_empty() {
                self.commit_changes(&image, records).await?;
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
                let image = self.log.image();
                let records = decide_unfence_broker_with(&image, broker_id, self.settings);
                if !records.is_empty() {
                    offset = self.commit_changes(&image, records).await?;
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
                let records = decide_heartbeat_with(&image, broker_id, self.settings);
                let offset = if records.is_empty() {
                    image.offset
                } else {
                    tracing::info!(broker = broker_id, "unfenced broker: heartbeating again");
                    self.commit_changes(&image, records).await?
                };
                Ok(ControllerResponse::HeartbeatAck { offset })
            }
            ControllerRequest::Unregister { broker_id } => {
                let _serial = self.serial.lock().await;
                let image = self.log.image();
                let records = decide_fence_broker_with(&image, broker_id, true, self.settings);
                let offset = if records.is_empty() { image.offset } else { self.commit_changes(&image, records).await? };
                self.heartbeats.lock().remove(&broker_id);
                Ok(ControllerResponse::Unregistered { offset })
            }
            ControllerRequest::BrokerUnreachable { broker_id, reporter } => {
                let offset = self.fence_unreachable_broker(broker_id, reporter).await?;
                Ok(ControllerResponse::Done { offset })
            }
            ControllerRequest::AlterPartition { broker_id, topic_id, partition, leader_epoch, partition_epoch, new_isr } => {
                let request = AlterPartitionRequest { broker_id, topic_id, partition, leader_epoch, partition_epoch, new_isr };
                let (offset, state) = self.alter_partition(&request).await?;
                Ok(ControllerResponse::PartitionChanged {
                    offset,
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    isr: state.isr,
                })
            }
            ControllerRequest::AllocateProducerIds { broker_id } => {
                let (offset, block) = self.allocate_producer_ids(broker_id).await?;
                Ok(ControllerResponse::ProducerIds {
                    offset,
                    first_producer_id: block.first_producer_id,
                    count: block.count,
                })
            }
            ControllerRequest::ElectLeaders { election, partitions } => {
                let (offset, results) = self.elect_leaders(election, partitions.as_deref()).await?;
                Ok(ControllerResponse::LeadersElected { offset, results })
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

    /// Commits `records` decided against `image` and warns about every unclean leader
    /// election among them (a leader that may lack committed records).
    async fn commit_changes(&self, image: &MetadataImage, records: Vec<MetadataRecord>) -> Result<u64, ControllerError> {
        let unclean = unclean_elections(image, &records);
        let offset = self.log.commit(records).await?;
        for (topic, partition, leader) in unclean {
            tracing::warn!(
                topic = %topic,
                partition,
                leader,
                "unclean leader election: the new leader was not in sync; records it lacks are lost"
            );
        }
        Ok(offset)
    }

    /// A broker another node confirmed unreachable: fenced as the session timeout would
    /// fence it, and forgotten by the liveness tracking so it is not fenced twice.
    /// Nothing happens for an unknown or already fenced broker.
    pub async fn fence_unreachable_broker(&self, broker_id: i32, reporter: i32) -> Result<u64, ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let records = decide_fence_broker_with(&image, broker_id, false, self.settings);
        let offset = if records.is_empty() {
            image.offset
        } else {
            let offset = self.commit_changes(&image, records).await?;
            tracing::warn!(broker = broker_id, reporter, "fenced broker: reported unreachable");
            offset
        };
        self.heartbeats.lock().remove(&broker_id);
        Ok(offset)
    }

    /// AlterPartition: commits the ISR change (and any preferred-leader return) and
    /// returns the offset and the partition's resulting state.
    pub async fn alter_partition(&self, request: &AlterPartitionRequest) -> Result<(u64, PartitionImage), ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let records = decide_alter_partition(&image, request, self.settings)?;
        let (topic_id, current) = partition_by_id(&image, &request.topic_id, request.partition)
            .map(|(t, p)| (t.topic_id, p))?;
        let state = partition_after(topic_id, current, &records);
        if records.is_empty() {
            return Ok((image.offset, state));
        }
        let moved = state.leader != current.leader;
        let offset = self.commit_changes(&image, records).await?;
        if moved {
            tracing::info!(
                topic_id = %topic_id,
                partition = request.partition,
                leader = state.leader,
                "preferred replica rejoined the ISR and leads again"
            );
        }
        Ok((offset, state))
    }

    /// AllocateProducerIds: commits the block's end before handing the block out.
    pub async fn allocate_producer_ids(&self, broker_id: i32) -> Result<(u64, ProducerIdBlock), ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let (records, block) = decide_allocate_producer_ids(&image, broker_id)?;
        let offset = self.log.commit(records).await?;
        Ok((offset, block))
    }

    /// ElectLeaders; see [`decide_elect_leaders`].
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<(u64, Vec<ElectionResult>), ControllerError> {
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let (records, results) = decide_elect_leaders(&image, election, partitions);
        let offset = if records.is_empty() { image.offset } else { self.commit_changes(&image, records).await? };
        Ok((offset, results))
    }

    /// The periodic auto leader rebalance (see [`decide_preferred_rebalance`]); does
    /// nothing when `auto.leader.rebalance.enable` is off. Returns how many partitions
    /// changed leader.
    pub async fn run_preferred_rebalance(&self) -> Result<usize, ControllerError> {
        if !self.settings.auto_leader_rebalance_enable {
            return Ok(0);
        }
        let _serial = self.serial.lock().await;
        let image = self.log.image();
        let records = decide_preferred_rebalance(&image);
        let moved = records.len();
        if moved > 0 {
            self.commit_changes(&image, records).await?;
            tracing::info!(partitions = moved, "auto leader rebalance: preferred replicas lead again");
        }
        Ok(moved)
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

    // ---- replication: AlterPartition, elections, unclean, producer ids ----

    /// An image with `brokers` registered and topic `name` placed by hand.
    fn image_with_topic(brokers: &[i32], name: &str, assignment: &[&[i32]]) -> (MetadataImage, Uuid) {
        let mut image = image_with_brokers(brokers);
        let spec = CreateTopicSpec {
            name: name.into(),
            assignments: Some(assignment.iter().enumerate().map(|(i, r)| (i as i32, r.to_vec())).collect()),
            ..Default::default()
        };
        let (records, results) = decide_create_topics(&image, &[spec], DEFAULTS);
        let id = results[0].as_ref().unwrap().topic_id;
        replay(&mut image, &records);
        (image, id)
    }

    fn part(image: &MetadataImage, topic: &str, partition: i32) -> PartitionImage {
        image.partition(topic, partition).unwrap().clone()
    }

    fn set_isr(image: &mut MetadataImage, topic_id: Uuid, partition: i32, leader: i32, isr: &[i32]) {
        let p = image.topics[&topic_id].partitions[&partition].clone();
        replay(image, &[MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            isr: isr.to_vec(),
            leader_epoch: p.leader_epoch + i32::from(leader != p.leader),
            partition_epoch: p.partition_epoch + 1,
        }]);
    }

    fn alter(image: &MetadataImage, topic_id: Uuid, broker_id: i32, new_isr: &[i32]) -> AlterPartitionRequest {
        let p = &image.topics[&topic_id].partitions[&0];
        AlterPartitionRequest {
            broker_id,
            topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: new_isr.to_vec(),
        }
    }

    const NO_REBALANCE: ControllerSettings = ControllerSettings {
        unclean_leader_election_enable: false,
        auto_leader_rebalance_enable: false,
    };

    const UNCLEAN: ControllerSettings = ControllerSettings {
        unclean_leader_election_enable: true,
        auto_leader_rebalance_enable: true,
    };

    fn set_topic_config(image: &mut MetadataImage, topic: &str, key: &str, value: &str) {
        let r = decide_alter_topic_configs(image, topic, &[ConfigChange::Set(key.into(), value.into())], false).unwrap();
        replay(image, &r);
    }

    #[test]
    fn default_settings_match_kafka() {
        let s = ControllerSettings::default();
        assert!(!s.unclean_leader_election_enable);
        assert!(s.auto_leader_rebalance_enable);
    }

    #[test]
    fn alter_partition_shrinks_and_expands_bumping_only_the_partition_epoch() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        let before = part(&image, "t", 0);
        let r = decide_alter_partition(&image, &alter(&image, id, 1, &[1, 3]), ControllerSettings::default()).unwrap();
        assert_eq!(r.len(), 1);
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 3]));
        assert_eq!(p.leader_epoch, before.leader_epoch);
        assert_eq!(p.partition_epoch, before.partition_epoch + 1);

        let r = decide_alter_partition(&image, &alter(&image, id, 1, &[1, 3, 2]), ControllerSettings::default()).unwrap();
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 3, 2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (before.leader_epoch, before.partition_epoch + 2));
    }

    #[test]
    fn alter_partition_with_an_unchanged_isr_commits_nothing() {
        let (image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        for isr in [&[1, 2, 3][..], &[3, 1, 2][..]] {
            let r = decide_alter_partition(&image, &alter(&image, id, 1, isr), ControllerSettings::default()).unwrap();
            assert!(r.is_empty(), "{isr:?}");
        }
    }

    #[test]
    fn alter_partition_refuses_stale_epochs_non_leaders_and_unknown_partitions() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        let settings = ControllerSettings::default();
        // A request built from the state before a committed change is stale.
        let stale = alter(&image, id, 1, &[1, 2]);
        let r = decide_alter_partition(&image, &alter(&image, id, 1, &[1, 3]), settings).unwrap();
        replay(&mut image, &r);
        assert_eq!(
            decide_alter_partition(&image, &stale, settings),
            Err(ControllerError::InvalidUpdateVersion { current: 1, got: 0 })
        );
        let mut ahead = alter(&image, id, 1, &[1]);
        ahead.partition_epoch += 1;
        assert!(matches!(decide_alter_partition(&image, &ahead, settings), Err(ControllerError::InvalidUpdateVersion { .. })));

        let mut old_epoch = alter(&image, id, 1, &[1]);
        old_epoch.leader_epoch -= 1;
        assert_eq!(
            decide_alter_partition(&image, &old_epoch, settings),
            Err(ControllerError::FencedLeaderEpoch { current: 0, got: -1 })
        );

        assert_eq!(
            decide_alter_partition(&image, &alter(&image, id, 3, &[1, 3]), settings),
            Err(ControllerError::NotLeaderOrFollower { topic: "t".into(), partition: 0, broker_id: 3, leader: 1 })
        );

        let mut unknown_topic = alter(&image, id, 1, &[1]);
        unknown_topic.topic_id = Uuid::new_v4();
        assert!(matches!(
            decide_alter_partition(&image, &unknown_topic, settings),
            Err(ControllerError::UnknownTopicOrPartition { partition: 0, .. })
        ));
        let mut unknown_partition = alter(&image, id, 1, &[1]);
        unknown_partition.partition = 7;
        assert!(matches!(
            decide_alter_partition(&image, &unknown_partition, settings),
            Err(ControllerError::UnknownTopicOrPartition { partition: 7, .. })
        ));
    }

    #[test]
    fn an_isr_must_keep_the_leader_and_hold_only_its_replicas_once() {
        let (image, id) = image_with_topic(&[1, 2, 3, 4], "t", &[&[1, 2, 3]]);
        let settings = ControllerSettings::default();
        for isr in [&[2, 3][..], &[][..], &[1, 4][..], &[1, 2, 2][..]] {
            let result = decide_alter_partition(&image, &alter(&image, id, 1, isr), settings);
            assert!(matches!(result, Err(ControllerError::InvalidRequest { .. })), "{isr:?}: {result:?}");
        }
    }

    #[test]
    fn only_live_brokers_may_join_an_isr_but_dead_ones_may_leave() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        let settings = ControllerSettings::default();
        set_isr(&mut image, id, 0, 1, &[1]);
        // Broker 2 is fenced for silence, broker 3 shut down.
        replay(&mut image, &[
            MetadataRecord::BrokerFenced { broker_id: 2, shutdown: false },
            MetadataRecord::BrokerFenced { broker_id: 3, shutdown: true },
        ]);
        assert_eq!(
            decide_alter_partition(&image, &alter(&image, id, 1, &[1, 2]), settings),
            Err(ControllerError::IneligibleReplica { broker_id: 2 })
        );
        assert_eq!(
            decide_alter_partition(&image, &alter(&image, id, 1, &[1, 3]), settings),
            Err(ControllerError::IneligibleReplica { broker_id: 3 })
        );
        // A member that is in the ISR already may stay even while fenced: only additions are checked.
        set_isr(&mut image, id, 0, 1, &[1, 2]);
        assert!(decide_alter_partition(&image, &alter(&image, id, 1, &[1, 2]), settings).unwrap().is_empty());
        let r = decide_alter_partition(&image, &alter(&image, id, 1, &[1]), settings).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_preferred_replica_rejoining_the_isr_leads_again_when_auto_rebalance_is_on() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        // Broker 1 restarted: 2 leads, 1 is out of the ISR.
        let r = decide_fence_broker(&image, 1, false);
        replay(&mut image, &r);
        let r = decide_heartbeat(&image, 1);
        replay(&mut image, &r);
        let before = part(&image, "t", 0);
        assert_eq!((before.leader, before.isr.clone()), (2, vec![2, 3]));

        // Off: the ISR grows, 2 keeps leading.
        let r = decide_alter_partition(&image, &alter(&image, id, 2, &[2, 3, 1]), NO_REBALANCE).unwrap();
        assert_eq!(r.len(), 1);

        // On: a second change makes 1 the leader, epochs bumped again.
        let r = decide_alter_partition(&image, &alter(&image, id, 2, &[2, 3, 1]), ControllerSettings::default()).unwrap();
        assert_eq!(r.len(), 2);
        let computed = partition_after(id, &before, &r);
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        assert_eq!(p, computed);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![2, 3, 1]));
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        assert_eq!(p.partition_epoch, before.partition_epoch + 2);

        // Adding a broker that is not the preferred replica moves nothing.
        let (mut image, id) = image_with_topic(&[1, 2, 3], "u", &[&[1, 2, 3]]);
        set_isr(&mut image, id, 0, 1, &[1, 2]);
        let r = decide_alter_partition(&image, &alter(&image, id, 1, &[1, 2, 3]), ControllerSettings::default()).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn producer_id_blocks_are_disjoint_and_monotonic() {
        let mut image = image_with_brokers(&[1, 2]);
        let mut blocks = Vec::new();
        for broker in [1, 2, 1, 2] {
            let (records, block) = decide_allocate_producer_ids(&image, broker).unwrap();
            assert_eq!(records, vec![MetadataRecord::ProducerIds {
                broker_id: broker,
                next_producer_id: block.first_producer_id + PRODUCER_ID_BLOCK_SIZE,
            }]);
            replay(&mut image, &records);
            blocks.push(block);
        }
        assert_eq!(blocks[0].first_producer_id, 0);
        for pair in blocks.windows(2) {
            assert_eq!(pair[0].count, PRODUCER_ID_BLOCK_SIZE);
            assert_eq!(pair[1].first_producer_id, pair[0].first_producer_id + pair[0].count);
        }
        assert_eq!(image.next_producer_id, 4 * PRODUCER_ID_BLOCK_SIZE);
        // A replayed older record never moves the counter back.
        replay(&mut image, &[MetadataRecord::ProducerIds { broker_id: 1, next_producer_id: 1000 }]);
        assert_eq!(image.next_producer_id, 4 * PRODUCER_ID_BLOCK_SIZE);
        assert!(matches!(decide_allocate_producer_ids(&image, 9), Err(ControllerError::InvalidRequest { .. })));
    }

    #[test]
    fn preferred_election_moves_leadership_only_to_a_live_in_sync_first_replica() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
        // p0: 2 leads, 1 in sync -> electable. p1: 2 leads already. p2: 1 leads, 3 out of sync.
        set_isr(&mut image, id, 0, 2, &[1, 2, 3]);
        set_isr(&mut image, id, 2, 1, &[1, 2]);
        let asked = vec![("t".to_string(), 0), ("t".to_string(), 1), ("t".to_string(), 2), ("t".to_string(), 9), ("t".to_string(), 0)];
        let (records, results) = decide_elect_leaders(&image, ElectionType::Preferred, Some(&asked));
        assert_eq!(results.len(), 4, "a partition named twice is elected once");
        assert_eq!(results[0], ("t".to_string(), 0, Ok(())));
        assert_eq!(results[1].2, Err(ControllerError::ElectionNotNeeded { topic: "t".into(), partition: 1, leader: 2 }));
        assert_eq!(results[2].2, Err(ControllerError::PreferredLeaderNotAvailable { topic: "t".into(), partition: 2, preferred: 3 }));
        assert_eq!(results[3].2, Err(ControllerError::UnknownTopicOrPartition { topic: "t".into(), partition: 9 }));
        let before = part(&image, "t", 0);
        replay(&mut image, &records);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (before.leader_epoch + 1, before.partition_epoch + 1));

        // A dead preferred replica is not available either, even in the ISR.
        set_isr(&mut image, id, 2, 1, &[1, 2, 3]);
        replay(&mut image, &[MetadataRecord::BrokerFenced { broker_id: 3, shutdown: true }]);
        let (records, results) = decide_elect_leaders(&image, ElectionType::Preferred, Some(&[("t".to_string(), 2)]));
        assert!(records.is_empty());
        assert!(matches!(results[0].2, Err(ControllerError::PreferredLeaderNotAvailable { .. })));

        // Every partition: those that need nothing are left out.
        let (_, results) = decide_elect_leaders(&image, ElectionType::Preferred, None);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].1, 2);
    }

    #[test]
    fn unclean_election_only_for_partitions_without_a_live_leader() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]]);
        // p0: led by live 1. p1: leaderless, ISR [1] dead, 2 and 3 alive but out of sync.
        // p2: leaderless with every replica dead.
        set_isr(&mut image, id, 1, 1, &[1]);
        replay(&mut image, &[MetadataRecord::BrokerFenced { broker_id: 1, shutdown: false }]);
        set_isr(&mut image, id, 1, -1, &[1]);
        set_isr(&mut image, id, 0, 1, &[1, 2, 3]);
        let (records, results) = decide_elect_leaders(
            &image,
            ElectionType::Unclean,
            Some(&[("t".to_string(), 1), ("nope".to_string(), 0)]),
        );
        assert_eq!(results[0].2, Ok(()));
        assert!(matches!(results[1].2, Err(ControllerError::UnknownTopicOrPartition { .. })));
        assert_eq!(unclean_elections(&image, &records), vec![("t".to_string(), 1, 2)]);
        let before = part(&image, "t", 1);
        replay(&mut image, &records);
        let p = part(&image, "t", 1);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (before.leader_epoch + 1, before.partition_epoch + 1));

        // p0's leader 1 is dead but 2 and 3 are in sync: the election is clean.
        let (records, results) = decide_elect_leaders(&image, ElectionType::Unclean, Some(&[("t".to_string(), 0)]));
        assert_eq!(results[0].2, Ok(()));
        assert!(unclean_elections(&image, &records).is_empty());
        replay(&mut image, &records);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3]));

        // A live leader needs no election; no live replica means none is possible.
        let (_, results) = decide_elect_leaders(&image, ElectionType::Unclean, Some(&[("t".to_string(), 0)]));
        assert!(matches!(results[0].2, Err(ControllerError::ElectionNotNeeded { leader: 2, .. })));
        replay(&mut image, &[
            MetadataRecord::BrokerFenced { broker_id: 2, shutdown: false },
            MetadataRecord::BrokerFenced { broker_id: 3, shutdown: false },
        ]);
        set_isr(&mut image, id, 2, -1, &[1]);
        let (records, results) = decide_elect_leaders(&image, ElectionType::Unclean, Some(&[("t".to_string(), 2)]));
        assert!(records.is_empty());
        assert_eq!(results[0].2, Err(ControllerError::EligibleLeadersNotAvailable { topic: "t".into(), partition: 2 }));
    }

    #[test]
    fn periodic_rebalance_moves_only_electable_partitions() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
        set_isr(&mut image, id, 0, 2, &[1, 2, 3]);
        set_isr(&mut image, id, 2, 1, &[1, 2]);
        let r = decide_preferred_rebalance(&image);
        assert_eq!(r.len(), 1);
        replay(&mut image, &r);
        assert_eq!(part(&image, "t", 0).leader, 1);
        assert!(decide_preferred_rebalance(&image).is_empty());
    }

    #[test]
    fn fencing_the_last_in_sync_leader_elects_out_of_sync_replicas_only_when_unclean_is_enabled() {
        let setup = || {
            let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
            set_isr(&mut image, id, 0, 1, &[1]);
            image
        };
        // Off (the default): offline, ISR kept.
        let mut image = setup();
        let r = decide_fence_broker_with(&image, 1, false, ControllerSettings::default());
        assert!(unclean_elections(&image, &r).is_empty());
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));

        // Broker default on: the first live replica leads alone.
        let mut image = setup();
        let before = part(&image, "t", 0);
        let r = decide_fence_broker_with(&image, 1, false, UNCLEAN);
        assert_eq!(unclean_elections(&image, &r), vec![("t".to_string(), 0, 2)]);
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (before.leader_epoch + 1, before.partition_epoch + 1));

        // A topic override wins over the broker default, both ways.
        let mut image = setup();
        set_topic_config(&mut image, "t", "unclean.leader.election.enable", "true");
        let r = decide_fence_broker_with(&image, 1, false, ControllerSettings::default());
        replay(&mut image, &r);
        assert_eq!(part(&image, "t", 0).leader, 2);
        let mut image = setup();
        set_topic_config(&mut image, "t", "unclean.leader.election.enable", "false");
        let r = decide_fence_broker_with(&image, 1, false, UNCLEAN);
        replay(&mut image, &r);
        assert_eq!(part(&image, "t", 0).leader, -1);

        // With a live in-sync replica the election stays clean even when unclean is on.
        let (mut image, _) = image_with_topic(&[1, 2, 3], "c", &[&[1, 2, 3]]);
        let r = decide_fence_broker_with(&image, 1, false, UNCLEAN);
        replay(&mut image, &r);
        assert_eq!(part(&image, "c", 0).isr, vec![2, 3]);
    }

    #[test]
    fn a_returning_out_of_sync_replica_leads_an_offline_partition_only_when_unclean_is_enabled() {
        let (mut image, id) = image_with_topic(&[1, 2], "t", &[&[1, 2]]);
        set_isr(&mut image, id, 0, 1, &[1]);
        // Both die; 1 was the last in sync. Then 2 comes back.
        for b in [2, 1] {
            let r = decide_fence_broker(&image, b, false);
            replay(&mut image, &r);
        }
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));
        assert_eq!(decide_unfence_broker_with(&image, 2, ControllerSettings::default()), vec![
            MetadataRecord::BrokerUnfenced { broker_id: 2 },
        ]);
        let r = decide_heartbeat_with(&image, 2, UNCLEAN);
        assert_eq!(unclean_elections(&image, &r), vec![("t".to_string(), 0, 2)]);
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 2));

        // With the topic override instead of the broker default.
        let (mut image, id) = image_with_topic(&[1, 2], "u", &[&[1, 2]]);
        set_topic_config(&mut image, "u", "unclean.leader.election.enable", "true");
        set_isr(&mut image, id, 0, 1, &[1]);
        for b in [2, 1] {
            let r = decide_fence_broker(&image, b, false);
            replay(&mut image, &r);
        }
        let r = decide_unfence_broker(&image, 2);
        replay(&mut image, &r);
        assert_eq!(part(&image, "u", 0).leader, 2);
    }

    #[test]
    fn an_image_without_producer_ids_still_reads() {
        let image = image_with_brokers(&[1]);
        let mut json = serde_json::to_value(&image).unwrap();
        json.as_object_mut().unwrap().remove("next_producer_id");
        let read: MetadataImage = serde_json::from_value(json).unwrap();
        assert_eq!(read.next_producer_id, 0);
    }

    // ---- the Controller itself, over an in-memory log ----

    /// A log that applies commits immediately, for driving [`Controller`] in tests.
    struct MemoryLog {
        images: tokio::sync::watch::Sender<Arc<MetadataImage>>,
    }

    impl MemoryLog {
        fn new(image: MetadataImage) -> Arc<MemoryLog> {
            Arc::new(MemoryLog { images: tokio::sync::watch::Sender::new(Arc::new(image)) })
        }
    }

    impl MetadataLog for MemoryLog {
        fn commit(&self, records: Vec<MetadataRecord>) -> crate::log::BoxFuture<'_, Result<u64, crate::MetadataError>> {
            Box::pin(async move {
                let mut image = MetadataImage::clone(&self.images.borrow());
                replay(&mut image, &records);
                let offset = image.offset;
                self.images.send_replace(Arc::new(image));
                Ok(offset)
            })
        }

        fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
            self.images.subscribe()
        }
    }

    #[tokio::test]
    async fn alter_partition_answers_with_the_final_state() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        let r = decide_fence_broker(&image, 1, false);
        replay(&mut image, &r);
        let r = decide_heartbeat(&image, 1);
        replay(&mut image, &r);
        let p = part(&image, "t", 0);
        let log = MemoryLog::new(image);
        let controller = Controller::new(log.clone(), DEFAULTS);
        let request = |new_isr: Vec<i32>, leader_epoch, partition_epoch| ControllerRequest::AlterPartition {
            broker_id: 2,
            topic_id: id,
            partition: 0,
            leader_epoch,
            partition_epoch,
            new_isr,
        };
        // Unchanged ISR: the current state at the current offset.
        let offset = log.image().offset;
        match controller.handle(request(vec![2, 3], p.leader_epoch, p.partition_epoch)).await.unwrap() {
            ControllerResponse::PartitionChanged { offset: o, leader, isr, .. } => {
                assert_eq!((o, leader, isr), (offset, 2, vec![2, 3]));
            }
            other => panic!("{other:?}"),
        }
        // 1 rejoins: it leads again, and the requester learns it.
        match controller.handle(request(vec![2, 3, 1], p.leader_epoch, p.partition_epoch)).await.unwrap() {
            ControllerResponse::PartitionChanged { offset, leader, leader_epoch, partition_epoch, isr } => {
                assert_eq!(offset, log.image().offset);
                assert_eq!((leader, isr.clone()), (1, vec![2, 3, 1]));
                assert_eq!((leader_epoch, partition_epoch), (p.leader_epoch + 1, p.partition_epoch + 2));
                let now = part(&log.image(), "t", 0);
                assert_eq!((now.leader, now.isr, now.leader_epoch, now.partition_epoch), (leader, isr, leader_epoch, partition_epoch));
            }
            other => panic!("{other:?}"),
        }
        // The same request again is stale.
        let stale = controller.handle(request(vec![2, 3], p.leader_epoch, p.partition_epoch)).await;
        assert!(matches!(stale, Err(ControllerError::FencedLeaderEpoch { .. })));
    }

    #[tokio::test]
    async fn producer_ids_never_repeat_across_controller_failover() {
        let log = MemoryLog::new(image_with_brokers(&[1, 2]));
        let mut seen = Vec::new();
        for round in 0..3 {
            // A new active controller each round, over the same committed log.
            let controller = Controller::new(log.clone(), DEFAULTS);
            for broker in [1, 2] {
                match controller.handle(ControllerRequest::AllocateProducerIds { broker_id: broker }).await.unwrap() {
                    ControllerResponse::ProducerIds { offset, first_producer_id, count } => {
                        assert_eq!(offset, log.image().offset, "round {round}");
                        assert_eq!(count, PRODUCER_ID_BLOCK_SIZE);
                        seen.push(first_producer_id..first_producer_id + count);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        for pair in seen.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(seen[0].start, 0);
        let unknown = Controller::new(log.clone(), DEFAULTS)
            .handle(ControllerRequest::AllocateProducerIds { broker_id: 7 })
            .await;
        assert!(matches!(unknown, Err(ControllerError::InvalidRequest { .. })));
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_fenced_once_as_the_session_timeout_would() {
        let (image, _) = image_with_topic(&[1, 2], "t", &[&[1, 2]]);
        let log = MemoryLog::new(image);
        let controller = Controller::new(log.clone(), DEFAULTS);
        let expected = decide_fence_broker(&log.image(), 1, false);
        let mut shadow = MetadataImage::clone(&log.image());
        replay(&mut shadow, &expected);

        let start = Instant::now();
        assert!(controller.fence_silent_brokers(start).await.unwrap().is_empty());
        let done = controller.handle(ControllerRequest::BrokerUnreachable { broker_id: 1, reporter: 2 }).await.unwrap();
        assert!(matches!(done, ControllerResponse::Done { offset } if offset == log.image().offset));
        assert_eq!(MetadataImage::clone(&log.image()), shadow);
        assert!(!controller.heartbeats.lock().contains_key(&1));

        // Reported again, or unknown: nothing is committed.
        let offset = log.image().offset;
        for broker in [1, 9] {
            let done = controller.handle(ControllerRequest::BrokerUnreachable { broker_id: broker, reporter: 2 }).await.unwrap();
            assert!(matches!(done, ControllerResponse::Done { offset: o } if o == offset));
        }
        // The session timeout does not fence it a second time.
        let later = start + Duration::from_secs(60);
        assert_eq!(controller.fence_silent_brokers(later).await.unwrap(), vec![2]);
    }

    #[tokio::test]
    async fn elections_and_the_periodic_rebalance_through_the_controller() {
        let (mut image, id) = image_with_topic(&[1, 2, 3], "t", &[&[1, 2, 3], &[2, 3, 1]]);
        set_isr(&mut image, id, 0, 2, &[1, 2, 3]);
        set_isr(&mut image, id, 1, 3, &[1, 2, 3]);
        let log = MemoryLog::new(image);

        let off = Controller::new(log.clone(), DEFAULTS).with_auto_leader_rebalance(false);
        assert_eq!(off.run_preferred_rebalance().await.unwrap(), 0);
        assert_eq!(part(&log.image(), "t", 0).leader, 2);

        let controller = Controller::new(log.clone(), DEFAULTS)
            .with_unclean_leader_election(false)
            .with_auto_leader_rebalance(true);
        assert_eq!(controller.settings(), ControllerSettings::default());
        match controller
            .handle(ControllerRequest::ElectLeaders { election: ElectionType::Preferred, partitions: Some(vec![("t".into(), 0)]) })
            .await
            .unwrap()
        {
            ControllerResponse::LeadersElected { offset, results } => {
                assert_eq!(offset, log.image().offset);
                assert_eq!(results, vec![("t".to_string(), 0, Ok(()))]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(part(&log.image(), "t", 0).leader, 1);
        assert_eq!(controller.run_preferred_rebalance().await.unwrap(), 1);
        assert_eq!(part(&log.image(), "t", 1).leader, 2);
        assert_eq!(controller.run_preferred_rebalance().await.unwrap(), 0);
    }

    #[test]
    fn an_isr_expansion_then_a_leader_change_to_the_added_replica_is_clean() {
        let mut image = MetadataImage::default();
        let topic_id = Uuid::new_v4();
        for r in [
            MetadataRecord::Topic { name: "t".into(), topic_id },
            MetadataRecord::Partition { topic_id, partition: 0, replicas: vec![1, 2, 3], isr: vec![2, 3], leader: 2, leader_epoch: 1, partition_epoch: 1 },
        ] {
            let offset = image.offset + 1;
            image.apply(offset, &r);
        }
        let records = vec![
            MetadataRecord::PartitionChange { topic_id, partition: 0, leader: 2, isr: vec![2, 3, 1], leader_epoch: 1, partition_epoch: 2 },
            MetadataRecord::PartitionChange { topic_id, partition: 0, leader: 1, isr: vec![2, 3, 1], leader_epoch: 2, partition_epoch: 3 },
        ];
        assert!(unclean_elections(&image, &records).is_empty());
        let unclean = vec![MetadataRecord::PartitionChange { topic_id, partition: 0, leader: 1, isr: vec![1], leader_epoch: 2, partition_epoch: 2 }];
        assert_eq!(unclean_elections(&image, &unclean), vec![("t".to_string(), 0, 1)]);
    }
}

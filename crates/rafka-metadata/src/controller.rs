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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A topic named by name or by id (DeleteTopics v6+ accepts either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// One change to a topic's configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// Chooses replicas for `count` new partitions numbered from `first_partition`,
/// spreading replicas and leaders round-robin over the brokers in `brokers`, starting
/// at a broker chosen from the topic name so that leaders of different topics spread too.
pub fn place_replicas(
    topic: &str,
    brokers: &[i32],
    first_partition: i32,
    count: i32,
    replication_factor: usize,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    let start = topic
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % n.max(1);
    (first_partition..first_partition + count)
        .map(|p| {
            let p = p as usize;
            // The follower shift changes every n partitions, as in Kafka, so that the
            // followers of one leader are not always the same brokers.
            let shift = 1 + (p / n) % n.saturating_sub(1).max(1);
            let leader = (start + p) % n;
            let mut replicas = vec![brokers[leader]];
            for r in 1..replication_factor {
                replicas.push(brokers[(leader + shift * r) % n]);
            }
            dedup_keep_order(replicas, brokers, leader)
        })
        .collect()
}

/// With small broker counts the stride can revisit a broker; fill with the next unused.
fn dedup_keep_order(replicas: Vec<i32>, brokers: &[i32], leader: usize) -> Vec<i32> {
    let want = replicas.len();
    let mut seen = BTreeSet::new();
    let mut out: Vec<i32> = replicas.into_iter().filter(|b| seen.insert(*b)).collect();
    let mut i = leader;
    while out.len() < want {
        i = (i + 1) % brokers.len();
        if seen.insert(brokers[i]) {
            out.push(brokers[i]);
        }
    }
    out
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
    let brokers: Vec<i32> = image.brokers.keys().copied().collect();
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
                                "larger than the {} available broker(s)",
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
            let brokers: Vec<i32> = image.brokers.keys().copied().collect();
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

/// Runs decisions one at a time and commits their records.
pub struct Controller {
    log: Arc<dyn MetadataLog>,
    serial: tokio::sync::Mutex<()>,
    defaults: TopicCreationDefaults,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    pub fn new(log: Arc<dyn MetadataLog>, defaults: TopicCreationDefaults) -> Controller {
        Controller {
            log,
            serial: tokio::sync::Mutex::new(()),
            defaults,
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
        let brokers = [1, 2, 3];
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

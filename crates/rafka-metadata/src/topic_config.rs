//! Topic-level configuration: the keys Rafka supports, their types, broker-level
//! synonyms and Kafka defaults, and the validation every write goes through.
//!
//! Only keys that the broker actually enforces are listed; anything else is refused
//! with INVALID_CONFIG rather than silently stored.

use std::collections::BTreeMap;

use crate::error::ControllerError;

/// Kafka's `ConfigType` as used on the wire by DescribeConfigs (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One supported topic configuration key.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker-level key whose value is the default for every topic.
    pub broker_synonym: &'static str,
    pub config_type: ConfigType,
    /// Kafka's default when neither the topic nor the broker sets it.
    pub kafka_default: &'static str,
    pub documentation: &'static str,
    validate: fn(&str) -> Result<String, String>,
}

impl TopicConfigDef {
    /// Validates `value`, returning its normalised form.
    pub fn validate(&self, value: &str) -> Result<String, ControllerError> {
        (self.validate)(value).map_err(|reason| ControllerError::InvalidConfig {
            key: self.name.to_string(),
            value: value.to_string(),
            reason,
        })
    }
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<String, String> {
    move |v: &str| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(n.to_string()),
        Ok(n) => Err(format!("must be at least {min}, got {n}")),
        Err(_) => Err("not a whole number".to_string()),
    }
}

fn int_at_least(min: i64) -> impl Fn(&str) -> Result<String, String> {
    move |v: &str| {
        let n = long_at_least(min)(v)?;
        n.parse::<i32>()
            .map(|n| n.to_string())
            .map_err(|_| "does not fit a 32-bit integer".to_string())
    }
}

fn validate_retention(v: &str) -> Result<String, String> {
    long_at_least(-1)(v)
}
fn validate_segment_bytes(v: &str) -> Result<String, String> {
    int_at_least(14)(v)
}
fn validate_segment_ms(v: &str) -> Result<String, String> {
    long_at_least(1)(v)
}
fn validate_min_isr(v: &str) -> Result<String, String> {
    int_at_least(1)(v)
}
fn validate_max_message_bytes(v: &str) -> Result<String, String> {
    int_at_least(0)(v)
}
fn validate_cleanup_policy(v: &str) -> Result<String, String> {
    let mut items: Vec<&str> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "delete" | "compact" => {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            other => return Err(format!("unknown policy {other:?}; valid: compact, delete")),
        }
    }
    if items.is_empty() {
        return Err("must name at least one policy".to_string());
    }
    Ok(items.join(","))
}

/// Whether a `cleanup.policy` value (as validated) includes `policy`.
pub fn cleanup_policy_includes(value: &str, policy: &str) -> bool {
    value.split(',').any(|p| p.trim() == policy)
}

fn validate_ratio(v: &str) -> Result<String, String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r.to_string()),
        Ok(r) => Err(format!("must be between 0 and 1, got {r}")),
        Err(_) => Err("not a number".to_string()),
    }
}
fn validate_non_negative_ms(v: &str) -> Result<String, String> {
    long_at_least(0)(v)
}
fn validate_flush_messages(v: &str) -> Result<String, String> {
    long_at_least(1)(v)
}
fn validate_positive_ms(v: &str) -> Result<String, String> {
    long_at_least(1)(v)
}
fn validate_timestamp_type(v: &str) -> Result<String, String> {
    match v.trim() {
        "CreateTime" | "LogAppendTime" => Ok(v.trim().to_string()),
        _ => Err("must be CreateTime or LogAppendTime".to_string()),
    }
}

fn validate_boolean(v: &str) -> Result<String, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        b @ ("true" | "false") => Ok(b.to_string()),
        _ => Err("must be true or false".to_string()),
    }
}

/// The topic key (and broker synonym) that lets a partition with no live in-sync
/// replica elect an out-of-sync one, accepting data loss to become available again.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Whether unclean leader election is enabled for a topic with `overrides`: its own
/// override when it has one, else `broker_default` (the broker's
/// `unclean.leader.election.enable`). Overrides are validated when written, so an
/// unreadable one can only come from an old log; it counts as `false`, the safe value.
pub fn unclean_leader_election_enabled(
    overrides: &BTreeMap<String, String>,
    broker_default: bool,
) -> bool {
    match overrides.get(UNCLEAN_LEADER_ELECTION_ENABLE) {
        Some(v) => validate_boolean(v).is_ok_and(|v| v == "true"),
        None => broker_default,
    }
}

/// Every topic configuration key Rafka supports, sorted by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
        config_type: ConfigType::List,
        kafka_default: "delete",
        documentation: "What happens to old segments: \"delete\" removes them by retention time and size; \"compact\" keeps only the latest record of each key; \"compact,delete\" does both.",
        validate: validate_cleanup_policy,
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_synonym: "log.cleaner.delete.retention.ms",
        config_type: ConfigType::Long,
        kafka_default: "86400000",
        documentation: "Compacted topics: how long tombstones (null values) are kept, counted from the newest record of their segment.",
        validate: validate_non_negative_ms,
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_synonym: "log.flush.interval.messages",
        config_type: ConfigType::Long,
        kafka_default: "9223372036854775807",
        documentation: "Sync a partition's log to disk once this many messages are unsynced. 1 is the durable mode: a record is acknowledged (and counts for the high watermark) only once it is fsynced on the leader and on every in-sync replica counted, with concurrent appends sharing fsyncs.",
        validate: validate_flush_messages,
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_synonym: "log.flush.interval.ms",
        config_type: ConfigType::Long,
        kafka_default: "9223372036854775807",
        documentation: "Sync a partition's log to disk once its oldest unsynced record is this old (checked at most every second, at least every 10 ms). Acknowledgements do not wait for it.",
        validate: validate_non_negative_ms,
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_synonym: "log.cleaner.max.compaction.lag.ms",
        config_type: ConfigType::Long,
        kafka_default: "9223372036854775807",
        documentation: "Compacted topics: compact regardless of the dirty ratio once the oldest uncompacted record in a closed segment is this old.",
        validate: validate_positive_ms,
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
        config_type: ConfigType::Int,
        kafka_default: "1048588",
        documentation: "Largest record batch the broker accepts for this topic.",
        validate: validate_max_message_bytes,
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
        config_type: ConfigType::String,
        kafka_default: "CreateTime",
        documentation: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock.",
        validate: validate_timestamp_type,
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        config_type: ConfigType::Double,
        kafka_default: "0.5",
        documentation: "Compacted topics: compact when the uncompacted share of the closed segments reaches this ratio.",
        validate: validate_ratio,
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        config_type: ConfigType::Long,
        kafka_default: "0",
        documentation: "Compacted topics: segments holding records younger than this are not compacted yet.",
        validate: validate_non_negative_ms,
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
        config_type: ConfigType::Int,
        kafka_default: "1",
        documentation: "Smallest ISR with which an acks=all produce is accepted.",
        validate: validate_min_isr,
    },
    TopicConfigDef {
        name: "preallocate",
        broker_synonym: "log.preallocate",
        config_type: ConfigType::Boolean,
        kafka_default: "false",
        documentation: "Reserve disk blocks 8 MiB ahead of the active segment's end (without changing the file size), so that the filesystem does not allocate blocks while appends write the same file; the reservation beyond the data is released when the segment rolls or the broker stops.",
        validate: validate_boolean,
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
        config_type: ConfigType::Long,
        kafka_default: "-1",
        documentation: "Largest size a partition grows to before old segments are deleted; -1 for no limit.",
        validate: validate_retention,
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
        config_type: ConfigType::Long,
        kafka_default: "604800000",
        documentation: "How long a segment is kept after its newest record; -1 for ever.",
        validate: validate_retention,
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
        config_type: ConfigType::Int,
        kafka_default: "1073741824",
        documentation: "Size at which a partition rolls to a new segment file.",
        validate: validate_segment_bytes,
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
        config_type: ConfigType::Long,
        kafka_default: "604800000",
        documentation: "Age at which a partition rolls to a new segment file even if it is not full.",
        validate: validate_segment_ms,
    },
    TopicConfigDef {
        name: UNCLEAN_LEADER_ELECTION_ENABLE,
        broker_synonym: UNCLEAN_LEADER_ELECTION_ENABLE,
        config_type: ConfigType::Boolean,
        kafka_default: "false",
        documentation: "Whether a partition with no live in-sync replica may elect an out-of-sync one as leader, losing the records it lacks, to become available again.",
        validate: validate_boolean,
    },
];

/// Looks up a supported topic configuration key.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Validates one topic override, naming the key in the error when it is not supported.
pub fn validate_topic_config(key: &str, value: &str) -> Result<String, ControllerError> {
    match topic_config_def(key) {
        Some(def) => def.validate(value),
        None => Err(ControllerError::InvalidConfig {
            key: key.to_string(),
            value: value.to_string(),
            reason: "not a topic configuration Rafka supports".to_string(),
        }),
    }
}

/// Where a topic's effective value came from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// The broker's defaults for topic configuration, computed once from the server
/// configuration: for every supported key, its value and whether the broker
/// configuration set it explicitly.
#[derive(Debug, Clone, Default)]
pub struct TopicDefaults {
    values: BTreeMap<&'static str, (String, ConfigSource)>,
}

impl TopicDefaults {
    /// Defaults from broker-level settings; `broker_value(synonym)` returns the value the
    /// broker configuration set explicitly, if any.
    pub fn from_broker(broker_value: impl Fn(&str) -> Option<String>) -> TopicDefaults {
        let values = TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let entry = match broker_value(def.broker_synonym) {
                    Some(v) => (v, ConfigSource::StaticBroker),
                    None => (def.kafka_default.to_string(), ConfigSource::Default),
                };
                (def.name, entry)
            })
            .collect();
        TopicDefaults { values }
    }

    /// The effective value of `key` for a topic with `overrides`, and its source.
    pub fn effective(
        &self,
        key: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Option<(String, ConfigSource)> {
        if let Some(v) = overrides.get(key) {
            return Some((v.clone(), ConfigSource::DynamicTopic));
        }
        self.values.get(key).cloned()
    }

    /// The broker default for `key` and its source.
    pub fn default_of(&self, key: &str) -> Option<&(String, ConfigSource)> {
        self.values.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_valid_values() {
        assert_eq!(validate_topic_config("retention.ms", " 1000 ").unwrap(), "1000");
        assert_eq!(validate_topic_config("cleanup.policy", "delete").unwrap(), "delete");
        assert_eq!(
            validate_topic_config("message.timestamp.type", "LogAppendTime").unwrap(),
            "LogAppendTime"
        );
    }

    #[test]
    fn rejects_bad_values_naming_key_and_value() {
        let err = validate_topic_config("retention.ms", "soon").unwrap_err();
        assert!(err.to_string().contains("retention.ms"));
        assert!(err.to_string().contains("soon"));
        assert!(validate_topic_config("min.insync.replicas", "0").is_err());
        assert!(validate_topic_config("segment.bytes", "99999999999").is_err());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert!(validate_topic_config("cleanup.policy", " , ").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "half").is_err());
        assert!(validate_topic_config("delete.retention.ms", "-1").is_err());
        assert!(validate_topic_config("max.compaction.lag.ms", "0").is_err());
        assert!(validate_topic_config("no.such.key", "1").is_err());
    }

    #[test]
    fn cleanup_policy_accepts_compact_delete_and_both() {
        assert_eq!(validate_topic_config("cleanup.policy", "compact").unwrap(), "compact");
        assert_eq!(
            validate_topic_config("cleanup.policy", "compact, delete,compact").unwrap(),
            "compact,delete"
        );
        assert!(cleanup_policy_includes("compact,delete", "delete"));
        assert!(cleanup_policy_includes("compact,delete", "compact"));
        assert!(!cleanup_policy_includes("delete", "compact"));
    }

    #[test]
    fn compaction_keys_have_kafka_names_types_and_defaults() {
        let expect = [
            ("delete.retention.ms", "log.cleaner.delete.retention.ms", ConfigType::Long, "86400000"),
            ("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", ConfigType::Double, "0.5"),
            ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", ConfigType::Long, "0"),
            ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", ConfigType::Long, "9223372036854775807"),
        ];
        for (name, synonym, config_type, default) in expect {
            let def = topic_config_def(name).unwrap();
            assert_eq!((def.broker_synonym, def.config_type, def.kafka_default), (synonym, config_type, default));
            assert_eq!(def.validate(default).unwrap(), default, "{name}");
        }
        assert_eq!(ConfigType::Double as i8, 6);
        assert_eq!(validate_topic_config("min.cleanable.dirty.ratio", " 0.25 ").unwrap(), "0.25");
    }

    #[test]
    fn flush_keys_have_kafka_names_types_and_defaults() {
        for (name, synonym) in [("flush.messages", "log.flush.interval.messages"), ("flush.ms", "log.flush.interval.ms")] {
            let def = topic_config_def(name).unwrap();
            assert_eq!(
                (def.broker_synonym, def.config_type, def.kafka_default),
                (synonym, ConfigType::Long, "9223372036854775807")
            );
            assert_eq!(def.validate(def.kafka_default).unwrap(), def.kafka_default);
            assert!(validate_topic_config(name, "-1").is_err());
            let err = validate_topic_config(name, "often").unwrap_err();
            assert!(err.to_string().contains(name) && err.to_string().contains("often"), "{err}");
        }
        assert_eq!(validate_topic_config("flush.messages", " 1 ").unwrap(), "1");
        let err = validate_topic_config("flush.messages", "0").unwrap_err();
        assert!(err.to_string().contains("flush.messages") && err.to_string().contains('0'), "{err}");
        // As in Kafka, flush.ms may be 0 (sync at every check).
        assert_eq!(validate_topic_config("flush.ms", "0").unwrap(), "0");
    }

    #[test]
    fn unclean_leader_election_is_a_boolean_defaulting_to_false() {
        assert_eq!(validate_topic_config(UNCLEAN_LEADER_ELECTION_ENABLE, " TRUE ").unwrap(), "true");
        assert_eq!(validate_topic_config(UNCLEAN_LEADER_ELECTION_ENABLE, "false").unwrap(), "false");
        let err = validate_topic_config(UNCLEAN_LEADER_ELECTION_ENABLE, "yes").unwrap_err();
        assert!(err.to_string().contains(UNCLEAN_LEADER_ELECTION_ENABLE));
        let def = topic_config_def(UNCLEAN_LEADER_ELECTION_ENABLE).unwrap();
        assert_eq!((def.config_type, def.kafka_default), (ConfigType::Boolean, "false"));
        let defaults = TopicDefaults::from_broker(|_| None);
        assert_eq!(
            defaults.effective(UNCLEAN_LEADER_ELECTION_ENABLE, &BTreeMap::new()),
            Some(("false".to_string(), ConfigSource::Default))
        );

        let mut overrides = BTreeMap::new();
        assert!(!unclean_leader_election_enabled(&overrides, false));
        assert!(unclean_leader_election_enabled(&overrides, true));
        overrides.insert(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "false".to_string());
        assert!(!unclean_leader_election_enabled(&overrides, true));
        overrides.insert(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "true".to_string());
        assert!(unclean_leader_election_enabled(&overrides, false));
    }

    #[test]
    fn keys_are_sorted_by_name() {
        let names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn topic_override_beats_broker_value_beats_kafka_default() {
        let defaults = TopicDefaults::from_broker(|k| {
            (k == "log.retention.ms").then(|| "5000".to_string())
        });
        let mut overrides = BTreeMap::new();
        assert_eq!(
            defaults.effective("retention.ms", &overrides),
            Some(("5000".to_string(), ConfigSource::StaticBroker))
        );
        assert_eq!(
            defaults.effective("segment.bytes", &overrides),
            Some(("1073741824".to_string(), ConfigSource::Default))
        );
        overrides.insert("retention.ms".to_string(), "7".to_string());
        assert_eq!(
            defaults.effective("retention.ms", &overrides),
            Some(("7".to_string(), ConfigSource::DynamicTopic))
        );
    }
}

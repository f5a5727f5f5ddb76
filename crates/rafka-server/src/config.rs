//! Broker configuration: Kafka `server.properties` keys, read from a file, then the
//! environment, then `--override` flags (each later source wins), parsed and validated
//! once into a typed [`BrokerConfig`] before anything starts.
//!
//! Environment variables follow the official apache/kafka image (`KAFKA_LOG_DIRS` sets
//! `log.dirs`: `_` → `.`, `__` → `_`, `___` → `-`) and the Bitnami form
//! (`KAFKA_CFG_LOG_DIRS`). An unknown key is reported once as a warning; an invalid
//! value is an error whose one-line message names the key and the value.
//!
//! Before typing, [`derive`] lets one pod template or image configure every node:
//! `${NAME}` in any value is replaced by the environment variable `NAME`; when
//! `node.id` is set nowhere and `POD_NAME` ends in a StatefulSet ordinal (`rafka-2`),
//! that ordinal is the node id; and `rafka.quorum.voters.count` with
//! `rafka.quorum.voters.pattern` (`rafka-{id}.rafka-headless:9093`) spell out
//! `controller.quorum.voters` for ids `0..count`.

pub mod derive;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rafka_kafka::{ConfigEntry, Listener};
use rafka_metadata::topic_config::{validate_topic_config, TopicDefaults};
use thiserror::Error;

use crate::properties;

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {key} (from {origin}): {reason}")]
    Invalid {
        key: String,
        value: String,
        origin: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {message}")]
    Io { path: String, message: String },
    #[error(transparent)]
    Syntax(#[from] properties::PropertiesError),
    #[error("--override {0:?} is not in key=value form")]
    BadOverride(String),
    #[error("{key} (from {origin}) refers to ${{{variable}}}, but environment variable {variable} is not set")]
    MissingVariable {
        key: String,
        origin: String,
        variable: String,
    },
    #[error("{key} (from {origin}) has a malformed reference {reference:?}: write ${{NAME}} for an environment variable, $${{ for a literal ${{")]
    BadReference {
        key: String,
        origin: String,
        reference: String,
    },
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: String, line: usize },
    Env(String),
    Flag,
    /// Computed by Rafka from other settings or the environment (see [`derive`]).
    Derived(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag => write!(f, "--override"),
            Origin::Derived(how) => write!(f, "derived from {how}"),
        }
    }
}

/// A key's definition: its default (None = unset) and whether it is a secret.
struct KeyDef {
    name: &'static str,
    default: Option<&'static str>,
    sensitive: bool,
}

const fn key(name: &'static str, default: Option<&'static str>) -> KeyDef {
    KeyDef { name, default, sensitive: false }
}

/// Every key Rafka reads. Aliases (`broker.id`, `log.dir`) are folded into these.
const KNOWN_KEYS: &[KeyDef] = &[
    key("node.id", Some("1")),
    key("process.roles", Some("broker,controller")),
    key("controller.quorum.voters", None),
    key("inter.broker.listener.name", None),
    key("metadata.log.dir", None),
    key("broker.heartbeat.interval.ms", Some("500")),
    key("broker.session.timeout.ms", Some("3000")),
    key("replica.lag.time.max.ms", Some("30000")),
    key("replica.fetch.wait.max.ms", Some("500")),
    key("replica.fetch.response.max.bytes", Some("10485760")),
    key("listeners", Some("PLAINTEXT://localhost:9092")),
    key("advertised.listeners", None),
    key(
        "listener.security.protocol.map",
        Some("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"),
    ),
    key("log.dirs", Some("./rafka-data")),
    key("num.partitions", Some("1")),
    key("default.replication.factor", Some("1")),
    key("auto.create.topics.enable", Some("true")),
    key("message.max.bytes", Some("1048588")),
    key("socket.request.max.bytes", Some("104857600")),
    key("max.connections", Some("10000")),
    key("fetch.max.bytes", Some("57671680")),
    key("log.segment.bytes", Some("1073741824")),
    key("log.roll.ms", None),
    key("log.roll.hours", Some("168")),
    key("log.retention.ms", None),
    key("log.retention.minutes", None),
    key("log.retention.hours", Some("168")),
    key("log.retention.bytes", Some("-1")),
    key("log.retention.check.interval.ms", Some("300000")),
    key("log.flush.offset.checkpoint.interval.ms", Some("60000")),
    key("log.flush.interval.messages", Some("9223372036854775807")),
    // Kafka's default is null: "use log.flush.scheduler.interval.ms", which is never.
    key("log.flush.interval.ms", None),
    key("log.preallocate", Some("false")),
    key("log.cleanup.policy", Some("delete")),
    key("log.cleaner.enable", Some("true")),
    key("log.cleaner.backoff.ms", Some("15000")),
    key("log.cleaner.delete.retention.ms", Some("86400000")),
    key("log.cleaner.min.cleanable.ratio", Some("0.5")),
    key("log.cleaner.min.compaction.lag.ms", Some("0")),
    key("log.cleaner.max.compaction.lag.ms", Some("9223372036854775807")),
    key("log.message.timestamp.type", Some("CreateTime")),
    key("min.insync.replicas", Some("1")),
    key("unclean.leader.election.enable", Some("false")),
    key("auto.leader.rebalance.enable", Some("true")),
    key("leader.imbalance.check.interval.seconds", Some("300")),
    key("cluster.id", None),
    key("broker.rack", None),
    key("offsets.topic.num.partitions", Some("50")),
    key("offsets.topic.replication.factor", Some("3")),
    key("offsets.topic.segment.bytes", Some("104857600")),
    key("offsets.commit.timeout.ms", Some("5000")),
    key("offset.metadata.max.bytes", Some("4096")),
    key("group.initial.rebalance.delay.ms", Some("3000")),
    key("group.min.session.timeout.ms", Some("6000")),
    key("group.max.session.timeout.ms", Some("1800000")),
    key("group.max.size", Some("2147483647")),
    // Rafka's own: controller.quorum.voters for ids 0..count from a host:port pattern.
    key(VOTERS_COUNT_KEY, None),
    key(VOTERS_PATTERN_KEY, None),
    // Rafka's own: start write-back of appended log bytes every this many (0 = off).
    key(WRITEBACK_INTERVAL_KEY, Some("1048576")),
];

/// `rafka.quorum.voters.count` (env `KAFKA_RAFKA_QUORUM_VOTERS_COUNT`).
pub const VOTERS_COUNT_KEY: &str = "rafka.quorum.voters.count";
/// `rafka.quorum.voters.pattern` (env `KAFKA_RAFKA_QUORUM_VOTERS_PATTERN`).
pub const VOTERS_PATTERN_KEY: &str = "rafka.quorum.voters.pattern";
/// `rafka.log.writeback.interval.bytes` (env `KAFKA_RAFKA_LOG_WRITEBACK_INTERVAL_BYTES`).
pub const WRITEBACK_INTERVAL_KEY: &str = "rafka.log.writeback.interval.bytes";
/// The environment variable a Kubernetes pod gets its name in (downward API), whose
/// trailing ordinal becomes `node.id` when that is not set.
pub const POD_NAME_VAR: &str = "POD_NAME";

/// Aliases Kafka accepts for a key.
const ALIASES: &[(&str, &str)] = &[("broker.id", "node.id"), ("log.dir", "log.dirs")];

/// Environment variables of the official image that are not broker settings.
const ENV_NOT_CONFIG: &[&str] = &[
    "KAFKA_VERSION",
    "KAFKA_HOME",
    "KAFKA_DEBUG",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_HEAP_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JMX_PORT",
    "KAFKA_JMX_HOSTNAME",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_OPTS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
];

/// `KAFKA_ADVERTISED_LISTENERS` → `advertised.listeners`, per the official image.
pub fn env_var_to_key(var: &str) -> Option<String> {
    let rest = if let Some(rest) = var.strip_prefix("KAFKA_CFG_") {
        rest
    } else {
        if ENV_NOT_CONFIG.contains(&var) {
            return None;
        }
        var.strip_prefix("KAFKA_")?
    };
    if rest.is_empty() {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    Some(lower.replace("___", "-").replace("__", "\u{0}").replace('_', ".").replace('\u{0}', "_"))
}

/// The settings as given, before typing, with their origins.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    values: BTreeMap<String, (String, Origin)>,
    unknown: BTreeMap<String, Origin>,
}

impl Settings {
    fn set(&mut self, key: &str, value: String, origin: Origin) {
        let key = ALIASES
            .iter()
            .find(|(alias, _)| *alias == key)
            .map(|(_, canonical)| *canonical)
            .unwrap_or(key);
        if KNOWN_KEYS.iter().any(|k| k.name == key) {
            self.values.insert(key.to_string(), (value, origin));
        } else {
            self.unknown.insert(key.to_string(), origin);
        }
    }

    /// Reads the sources in precedence order: file < environment < flags.
    pub fn collect(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Settings, ConfigError> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut settings = Settings::default();
        if let Some(path) = file {
            let display = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
                path: display.clone(),
                message: e.to_string(),
            })?;
            for p in properties::parse(&text, &display)? {
                settings.set(&p.key, p.value, Origin::File { path: display.clone(), line: p.line });
            }
        }
        let mut vars: Vec<(&String, &String)> = env.iter().collect();
        // Bitnami's KAFKA_CFG_ form wins over the plain form when both name a key.
        vars.sort_by_key(|(var, _)| var.starts_with("KAFKA_CFG_"));
        for (var, value) in vars {
            if let Some(key) = env_var_to_key(var) {
                settings.set(&key, value.clone(), Origin::Env(var.clone()));
            }
        }
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
            if k.trim().is_empty() {
                return Err(ConfigError::BadOverride(o.clone()));
            }
            settings.set(k.trim(), v.trim().to_string(), Origin::Flag);
        }
        settings.interpolate(&env)?;
        settings.derive_node_id(&env)?;
        settings.derive_quorum_voters()?;
        Ok(settings)
    }

    /// Replaces `${NAME}` references in every value by the environment's.
    fn interpolate(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        for (key, (value, origin)) in self.values.iter_mut() {
            *value = derive::interpolate(value, env).map_err(|e| match e {
                derive::InterpolationError::Missing(variable) => ConfigError::MissingVariable {
                    key: key.clone(),
                    origin: origin.to_string(),
                    variable,
                },
                derive::InterpolationError::Malformed(reference) => ConfigError::BadReference {
                    key: key.clone(),
                    origin: origin.to_string(),
                    reference,
                },
            })?;
        }
        Ok(())
    }

    /// `node.id` from the StatefulSet ordinal in `POD_NAME`, when no source sets it.
    fn derive_node_id(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let Some(pod_name) = env.get(POD_NAME_VAR) else { return Ok(()) };
        if self.is_set("node.id") {
            return Ok(());
        }
        let origin = Origin::Derived(format!("the ordinal of {POD_NAME_VAR}={pod_name}"));
        match derive::ordinal_of(pod_name) {
            Some(ordinal) => {
                self.values.insert("node.id".to_string(), (ordinal.to_string(), origin));
                Ok(())
            }
            None => Err(ConfigError::Invalid {
                key: "node.id".to_string(),
                value: String::new(),
                origin: origin.to_string(),
                reason: format!(
                    "{POD_NAME_VAR} does not end in -<ordinal> as a StatefulSet pod name does; set node.id (KAFKA_NODE_ID)"
                ),
            }),
        }
    }

    /// `controller.quorum.voters` from `rafka.quorum.voters.count` and `.pattern`.
    fn derive_quorum_voters(&mut self) -> Result<(), ConfigError> {
        let count = self.values.get(VOTERS_COUNT_KEY).cloned();
        let pattern = self.values.get(VOTERS_PATTERN_KEY).cloned();
        let invalid = |key: &str, (value, origin): &(String, Origin), reason: String| ConfigError::Invalid {
            key: key.to_string(),
            value: value.clone(),
            origin: origin.to_string(),
            reason,
        };
        let (count, pattern) = match (count, pattern) {
            (None, None) => return Ok(()),
            (Some(c), None) => return Err(invalid(VOTERS_COUNT_KEY, &c, format!("needs {VOTERS_PATTERN_KEY} too"))),
            (None, Some(p)) => return Err(invalid(VOTERS_PATTERN_KEY, &p, format!("needs {VOTERS_COUNT_KEY} too"))),
            (Some(c), Some(p)) => (c, p),
        };
        if let Some(explicit) = self.values.get("controller.quorum.voters") {
            return Err(invalid(
                "controller.quorum.voters",
                explicit,
                format!("set either controller.quorum.voters or {VOTERS_COUNT_KEY} with {VOTERS_PATTERN_KEY}, not both"),
            ));
        }
        let n: u32 = count
            .0
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| invalid(VOTERS_COUNT_KEY, &count, "must be a whole number between 1 and 1000".to_string()))?;
        let voters = derive::voters_from_pattern(n, &pattern.0).map_err(|reason| invalid(VOTERS_PATTERN_KEY, &pattern, reason))?;
        let origin = Origin::Derived(format!("{VOTERS_COUNT_KEY}={n} and {VOTERS_PATTERN_KEY}={}", pattern.0.trim()));
        self.values.insert("controller.quorum.voters".to_string(), (voters, origin));
        Ok(())
    }

    /// `node.id` as the sources give it (after derivation), or `None` when no source
    /// sets it and the default would apply. Used by `rafka healthcheck` to know which
    /// node it is checking.
    pub fn explicit_node_id(&self) -> Result<Option<i32>, ConfigError> {
        let Some((value, origin)) = self.get("node.id") else { return Ok(None) };
        value.trim().parse::<i32>().ok().filter(|id| *id >= 0).map(Some).ok_or_else(|| ConfigError::Invalid {
            key: "node.id".to_string(),
            value: value.clone(),
            origin: origin.to_string(),
            reason: "not a node id (a whole number, 0 or more)".to_string(),
        })
    }

    /// Keys that Rafka does not know, with where they were set (to warn about once).
    pub fn unknown_keys(&self) -> impl Iterator<Item = (&String, &Origin)> {
        self.unknown.iter()
    }

    fn get(&self, key: &str) -> Option<&(String, Origin)> {
        self.values.get(key)
    }

    fn is_set(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
}

/// The typed, validated broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// This node votes in the metadata quorum (`process.roles` includes `controller`).
    pub is_controller: bool,
    /// Voters of the metadata quorum: node id → gRPC `host:port`. Empty: a single-node
    /// quorum of this node.
    pub quorum_voters: BTreeMap<i32, String>,
    /// The listener serving node-to-node gRPC (never Kafka clients), if any.
    pub inter_broker_listener: Option<Listener>,
    /// Where the Raft log, vote and snapshots live.
    pub metadata_log_dir: PathBuf,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_session_timeout_ms: u64,
    /// A follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// How long a leader holds a follower's fetch when it has no new data.
    pub replica_fetch_wait_max_ms: u64,
    /// Upper bound on one replication fetch response.
    pub replica_fetch_response_max_bytes: usize,
    /// Elect an out-of-sync replica when no in-sync one is left (may lose data).
    pub unclean_leader_election_enable: bool,
    /// Give partitions back to their preferred (first) replica once it is in sync.
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    /// Kafka client listeners.
    pub listeners: Vec<Listener>,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub fetch_max_bytes: usize,
    pub log_retention_check_interval_ms: u64,
    pub log_flush_offset_checkpoint_interval_ms: u64,
    /// Start write-back of appended log bytes every this many (`rafka.log.writeback.interval.bytes`; 0 = off).
    pub log_writeback_interval_bytes: u64,
    /// Run the log cleaner (compaction of `cleanup.policy=compact` topics).
    pub log_cleaner_enable: bool,
    /// How often the log cleaner looks for logs to compact.
    pub log_cleaner_backoff_ms: u64,
    pub cluster_id: Option<String>,
    pub broker_rack: Option<String>,
    /// How `__consumer_offsets` is created (`offsets.topic.*`).
    pub offsets_topic: rafka_kafka::handlers::find_coordinator::OffsetsTopicSettings,
    /// The group coordinator's limits and timeouts (`group.*`, `offsets.commit.timeout.ms`,
    /// `offset.metadata.max.bytes`).
    pub group_coordinator: rafka_group::CoordinatorSettings,
    topic_defaults: BTreeMap<&'static str, String>,
    settings: Settings,
}

struct Reader<'a> {
    settings: &'a Settings,
}

impl Reader<'_> {
    fn raw(&self, key: &str) -> (String, String) {
        match self.settings.get(key) {
            Some((v, origin)) => (v.clone(), origin.to_string()),
            None => (
                KNOWN_KEYS
                    .iter()
                    .find(|k| k.name == key)
                    .and_then(|k| k.default)
                    .unwrap_or("")
                    .to_string(),
                "default".to_string(),
            ),
        }
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let (value, origin) = self.raw(key);
        ConfigError::Invalid {
            key: key.to_string(),
            value,
            origin,
            reason: reason.into(),
        }
    }

    fn string(&self, key: &str) -> String {
        self.raw(key).0.trim().to_string()
    }

    fn optional(&self, key: &str) -> Option<String> {
        self.settings.get(key).map(|(v, _)| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn long(&self, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let v = self.string(key);
        let n: i64 = v.parse().map_err(|_| self.invalid(key, "not a whole number"))?;
        if n < min || n > max {
            return Err(self.invalid(key, format!("must be between {min} and {max}")));
        }
        Ok(n)
    }

    fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        match self.string(key).to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.invalid(key, "must be true or false")),
        }
    }
}

/// `NAME://host:port` entries of `listeners` / `advertised.listeners`.
fn parse_listener_list(r: &Reader, key: &str) -> Result<Vec<(String, String, u16)>, ConfigError> {
    let mut out: Vec<(String, String, u16)> = Vec::new();
    for item in r.string(key).split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, address) = item
            .split_once("://")
            .ok_or_else(|| r.invalid(key, format!("{item:?} is not NAME://host:port")))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| r.invalid(key, format!("{item:?} has no port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| r.invalid(key, format!("{item:?} has an invalid port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let name = name.to_ascii_uppercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(r.invalid(key, format!("listener name {name:?} is not valid")));
        }
        if out.iter().any(|(n, _, _)| *n == name) {
            return Err(r.invalid(key, format!("listener name {name} appears twice")));
        }
        out.push((name, host, port));
    }
    if out.is_empty() {
        return Err(r.invalid(key, "no listener given"));
    }
    Ok(out)
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl BrokerConfig {
    /// Reads and validates the configuration from all sources.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_settings(Settings::collect(file, env, overrides)?)
    }

    pub fn from_settings(settings: Settings) -> Result<BrokerConfig, ConfigError> {
        let r = Reader { settings: &settings };
        let node_id = r.long("node.id", 0, i32::MAX as i64)? as i32;

        let protocol_map: BTreeMap<String, String> = r
            .string("listener.security.protocol.map")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|pair| {
                pair.split_once(':')
                    .map(|(n, p)| (n.trim().to_ascii_uppercase(), p.trim().to_ascii_uppercase()))
                    .ok_or_else(|| r.invalid("listener.security.protocol.map", format!("{pair:?} is not NAME:PROTOCOL")))
            })
            .collect::<Result<_, _>>()?;
        let bound = parse_listener_list(&r, "listeners")?;
        let advertised = if settings.is_set("advertised.listeners") {
            parse_listener_list(&r, "advertised.listeners")?
        } else {
            bound.clone()
        };
        let mut listeners = Vec::new();
        for (name, host, port) in &bound {
            let protocol = protocol_map.get(name).cloned().ok_or_else(|| {
                r.invalid("listener.security.protocol.map", format!("listener {name} has no security protocol"))
            })?;
            if protocol != "PLAINTEXT" {
                return Err(r.invalid(
                    "listeners",
                    format!("listener {name} uses {protocol}; only PLAINTEXT listeners are supported so far"),
                ));
            }
            let (adv_host, adv_port) = match advertised.iter().find(|(n, _, _)| n == name) {
                Some((_, h, p)) => (h.clone(), *p),
                None => (host.clone(), *port),
            };
            if adv_host == "0.0.0.0" || adv_host == "::" {
                return Err(r.invalid(
                    "advertised.listeners",
                    format!("listener {name} advertises the wildcard address {adv_host}; clients cannot connect to it"),
                ));
            }
            let adv_host = if adv_host.is_empty() { local_hostname() } else { adv_host };
            listeners.push(Listener {
                name: name.clone(),
                security_protocol: protocol,
                bind_host: if host.is_empty() { "0.0.0.0".to_string() } else { host.clone() },
                bind_port: *port,
                advertised_host: adv_host,
                advertised_port: if adv_port == 0 { *port } else { adv_port },
            });
        }
        if let Some((name, _, _)) = advertised.iter().find(|(n, _, _)| !bound.iter().any(|(b, _, _)| b == n)) {
            return Err(r.invalid("advertised.listeners", format!("listener {name} is not in listeners")));
        }

        // process.roles and the quorum.
        let roles: Vec<String> = r.string("process.roles").split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
        let is_controller = match roles.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["broker", "controller"] | ["controller", "broker"] => true,
            ["broker"] => false,
            _ => return Err(r.invalid("process.roles", "must be \"broker,controller\" or \"broker\" (controller-only nodes are not supported yet)")),
        };
        let mut quorum_voters = BTreeMap::new();
        for item in r.string("controller.quorum.voters").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, address) = item
                .split_once('@')
                .ok_or_else(|| r.invalid("controller.quorum.voters", format!("{item:?} is not ID@HOST:PORT")))?;
            let id: i32 = id.trim().parse().map_err(|_| r.invalid("controller.quorum.voters", format!("{item:?} has a bad node id")))?;
            let (_, port) = address
                .rsplit_once(':')
                .ok_or_else(|| r.invalid("controller.quorum.voters", format!("{item:?} has no port")))?;
            port.parse::<u16>().map_err(|_| r.invalid("controller.quorum.voters", format!("{item:?} has a bad port")))?;
            if quorum_voters.insert(id, address.trim().to_string()).is_some() {
                return Err(r.invalid("controller.quorum.voters", format!("node {id} is listed twice")));
            }
        }
        if !quorum_voters.is_empty() {
            if is_controller && !quorum_voters.contains_key(&node_id) {
                return Err(r.invalid("controller.quorum.voters", format!("this node (node.id={node_id}) has process.roles=broker,controller but is not a voter")));
            }
            if !is_controller && quorum_voters.contains_key(&node_id) {
                return Err(r.invalid("controller.quorum.voters", format!("this node (node.id={node_id}) is a voter but process.roles=broker")));
            }
        } else if !is_controller {
            return Err(r.invalid("process.roles", "a broker-only node needs controller.quorum.voters to find the quorum"));
        }
        let inter_broker_name = r.optional("inter.broker.listener.name").map(|n| n.to_ascii_uppercase());
        let inter_broker_listener = match &inter_broker_name {
            Some(name) => {
                let position = listeners.iter().position(|l| &l.name == name).ok_or_else(|| {
                    r.invalid("inter.broker.listener.name", format!("no listener named {name} in listeners"))
                })?;
                Some(listeners.remove(position))
            }
            None if !quorum_voters.is_empty() => {
                return Err(r.invalid("inter.broker.listener.name", "must name the listener that serves node-to-node traffic when controller.quorum.voters is set"))
            }
            None => None,
        };
        if listeners.is_empty() {
            return Err(r.invalid("listeners", "no listener left for Kafka clients besides the inter-broker listener"));
        }

        let log_dirs: Vec<PathBuf> = r
            .string("log.dirs")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(r.invalid("log.dirs", "no directory given"));
        }
        let metadata_log_dir = r.optional("metadata.log.dir").map(PathBuf::from).unwrap_or_else(|| log_dirs[0].clone());
        let broker_heartbeat_interval_ms = r.long("broker.heartbeat.interval.ms", 10, 60_000)? as u64;
        let broker_session_timeout_ms = r.long("broker.session.timeout.ms", 100, 600_000)? as u64;
        if broker_session_timeout_ms <= broker_heartbeat_interval_ms {
            return Err(r.invalid("broker.session.timeout.ms", "must be longer than broker.heartbeat.interval.ms"));
        }

        // Topic defaults from broker keys, validated with the topic rules.
        let retention_ms = if settings.is_set("log.retention.ms") {
            r.long("log.retention.ms", -1, i64::MAX)?
        } else if settings.is_set("log.retention.minutes") {
            let m = r.long("log.retention.minutes", -1, i64::MAX / 60_000)?;
            if m < 0 { -1 } else { m * 60_000 }
        } else {
            let h = r.long("log.retention.hours", -1, i64::MAX / 3_600_000)?;
            if h < 0 { -1 } else { h * 3_600_000 }
        };
        let roll_ms = if settings.is_set("log.roll.ms") {
            r.long("log.roll.ms", 1, i64::MAX)?
        } else {
            r.long("log.roll.hours", 1, i64::MAX / 3_600_000)? * 3_600_000
        };
        let mut topic_defaults = BTreeMap::new();
        let mut topic_default = |topic_key: &'static str, broker_key: &str, value: String| -> Result<(), ConfigError> {
            let value = validate_topic_config(topic_key, &value).map_err(|e| r.invalid(broker_key, e.to_string()))?;
            if settings.is_set(broker_key)
                || (broker_key == "log.retention.ms"
                    && (settings.is_set("log.retention.minutes") || settings.is_set("log.retention.hours")))
                || (broker_key == "log.roll.ms" && settings.is_set("log.roll.hours"))
            {
                topic_defaults.insert(topic_key, value);
            }
            Ok(())
        };
        topic_default("retention.ms", "log.retention.ms", retention_ms.to_string())?;
        topic_default("segment.ms", "log.roll.ms", roll_ms.to_string())?;
        topic_default("retention.bytes", "log.retention.bytes", r.string("log.retention.bytes"))?;
        topic_default("segment.bytes", "log.segment.bytes", r.string("log.segment.bytes"))?;
        topic_default("max.message.bytes", "message.max.bytes", r.string("message.max.bytes"))?;
        topic_default("min.insync.replicas", "min.insync.replicas", r.string("min.insync.replicas"))?;
        topic_default("cleanup.policy", "log.cleanup.policy", r.string("log.cleanup.policy"))?;
        topic_default("unclean.leader.election.enable", "unclean.leader.election.enable", r.string("unclean.leader.election.enable"))?;
        topic_default("message.timestamp.type", "log.message.timestamp.type", r.string("log.message.timestamp.type"))?;
        for (topic_key, broker_key) in [
            ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
            ("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio"),
            ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
            ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
            ("flush.messages", "log.flush.interval.messages"),
            ("preallocate", "log.preallocate"),
        ] {
            topic_default(topic_key, broker_key, r.string(broker_key))?;
        }
        if settings.is_set("log.flush.interval.ms") {
            topic_default("flush.ms", "log.flush.interval.ms", r.string("log.flush.interval.ms"))?;
        }

        Ok(BrokerConfig {
            node_id,
            is_controller,
            quorum_voters,
            inter_broker_listener,
            metadata_log_dir,
            broker_heartbeat_interval_ms,
            broker_session_timeout_ms,
            unclean_leader_election_enable: r.boolean("unclean.leader.election.enable")?,
            auto_leader_rebalance_enable: r.boolean("auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_seconds: r.long("leader.imbalance.check.interval.seconds", 1, 86_400 * 365)? as u64,
            replica_lag_time_max_ms: r.long("replica.lag.time.max.ms", 10, i64::from(i32::MAX))? as u64,
            replica_fetch_wait_max_ms: r.long("replica.fetch.wait.max.ms", 0, 60_000)? as u64,
            replica_fetch_response_max_bytes: r.long("replica.fetch.response.max.bytes", 1024, i64::from(i32::MAX))? as usize,
            listeners,
            log_dirs,
            num_partitions: r.long("num.partitions", 1, 100_000)? as i32,
            default_replication_factor: r.long("default.replication.factor", 1, i16::MAX as i64)? as i16,
            auto_create_topics_enable: r.boolean("auto.create.topics.enable")?,
            socket_request_max_bytes: r.long("socket.request.max.bytes", 1024, i32::MAX as i64)? as usize,
            max_connections: r.long("max.connections", 1, 1_000_000)? as usize,
            fetch_max_bytes: r.long("fetch.max.bytes", 1024, i32::MAX as i64)? as usize,
            log_retention_check_interval_ms: r.long("log.retention.check.interval.ms", 1, i64::MAX)? as u64,
            log_flush_offset_checkpoint_interval_ms: r.long("log.flush.offset.checkpoint.interval.ms", 1, i64::MAX)? as u64,
            log_writeback_interval_bytes: r.long(WRITEBACK_INTERVAL_KEY, 0, i64::MAX)? as u64,
            log_cleaner_enable: r.boolean("log.cleaner.enable")?,
            log_cleaner_backoff_ms: r.long("log.cleaner.backoff.ms", 1, i64::MAX)? as u64,
            cluster_id: r.optional("cluster.id"),
            broker_rack: r.optional("broker.rack"),
            offsets_topic: rafka_kafka::handlers::find_coordinator::OffsetsTopicSettings {
                num_partitions: r.long("offsets.topic.num.partitions", 1, 100_000)? as i32,
                replication_factor: r.long("offsets.topic.replication.factor", 1, i16::MAX as i64)? as i16,
                segment_bytes: r.long("offsets.topic.segment.bytes", 1024, i32::MAX as i64)?,
            },
            group_coordinator: {
                let min_session = r.long("group.min.session.timeout.ms", 1, i32::MAX as i64)? as i32;
                let max_session = r.long("group.max.session.timeout.ms", 1, i32::MAX as i64)? as i32;
                if max_session < min_session {
                    return Err(r.invalid(
                        "group.max.session.timeout.ms",
                        format!("must not be below group.min.session.timeout.ms ({min_session})"),
                    ));
                }
                rafka_group::CoordinatorSettings {
                    group: rafka_group::GroupSettings {
                        initial_rebalance_delay_ms: r.long("group.initial.rebalance.delay.ms", 0, i32::MAX as i64)?,
                        min_session_timeout_ms: min_session,
                        max_session_timeout_ms: max_session,
                        max_size: r.long("group.max.size", 1, i32::MAX as i64)? as usize,
                    },
                    offset_metadata_max_bytes: r.long("offset.metadata.max.bytes", 0, i32::MAX as i64)? as usize,
                    commit_timeout: std::time::Duration::from_millis(r.long("offsets.commit.timeout.ms", 1, i32::MAX as i64)? as u64),
                    tick_interval: std::time::Duration::from_millis(100),
                }
            },
            topic_defaults,
            settings,
        })
    }

    /// Topic-config defaults as set by this broker's configuration.
    pub fn topic_defaults(&self) -> TopicDefaults {
        TopicDefaults::from_broker(|synonym| {
            rafka_metadata::topic_config::TOPIC_CONFIGS
                .iter()
                .find(|d| d.broker_synonym == synonym)
                .and_then(|d| self.topic_defaults.get(d.name).cloned())
        })
    }

    /// Keys that were set but are not Rafka settings.
    pub fn unknown_keys(&self) -> Vec<(String, String)> {
        self.settings.unknown_keys().map(|(k, o)| (k.clone(), o.to_string())).collect()
    }

    /// Every known key with its effective value (secrets masked), for the start-up log
    /// and DescribeConfigs.
    pub fn effective(&self) -> Vec<ConfigEntry> {
        KNOWN_KEYS
            .iter()
            .map(|k| {
                let value = self.settings.get(k.name).map(|(v, _)| v.clone()).or(k.default.map(str::to_string));
                ConfigEntry {
                    name: k.name.to_string(),
                    value,
                    is_sensitive: k.sensitive,
                    explicitly_set: self.settings.is_set(k.name),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)], flags: &[&str]) -> Result<BrokerConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, file).unwrap();
        BrokerConfig::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &flags.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn everything_defaults_to_a_local_single_node() {
        let c = BrokerConfig::load(None, vec![], &[]).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listeners[0].bind_host, "localhost");
        assert_eq!(c.listeners[0].bind_port, 9092);
        assert_eq!(c.listeners[0].advertised_host, "localhost");
        assert_eq!(c.log_dirs, vec![PathBuf::from("./rafka-data")]);
        assert!(c.auto_create_topics_enable);
    }

    #[test]
    fn env_names_map_like_the_official_image() {
        assert_eq!(env_var_to_key("KAFKA_ADVERTISED_LISTENERS").unwrap(), "advertised.listeners");
        assert_eq!(env_var_to_key("KAFKA_CFG_LOG_DIRS").unwrap(), "log.dirs");
        assert_eq!(env_var_to_key("KAFKA_SOME__UNDER___DASH").unwrap(), "some_under-dash");
        assert_eq!(env_var_to_key("KAFKA_HEAP_OPTS"), None);
        assert_eq!(env_var_to_key("PATH"), None);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let c = load("num.partitions=2\nbroker.id=5\n", &[("KAFKA_NUM_PARTITIONS", "3")], &[]).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.node_id, 5);
        let c = load("num.partitions=2\n", &[("KAFKA_NUM_PARTITIONS", "3")], &["num.partitions=4"]).unwrap();
        assert_eq!(c.num_partitions, 4);
    }

    #[test]
    fn invalid_values_name_key_value_and_origin() {
        let e = load("num.partitions=abc\n", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("num.partitions") && e.contains("\"abc\"") && e.contains("server.properties:1"), "{e}");
        assert!(!e.contains('\n'));
        let e = load("", &[("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "maybe")], &[]).unwrap_err().to_string();
        assert!(e.contains("KAFKA_AUTO_CREATE_TOPICS_ENABLE"), "{e}");
        assert!(load("log.retention.bytes=-5\n", &[], &[]).is_err());
        assert!(load("listeners=PLAINTEXT://:99999\n", &[], &[]).is_err());
        assert!(load("listeners=SSL://:9093\n", &[], &[]).is_err());
        assert!(load("advertised.listeners=PLAINTEXT://0.0.0.0:9092\n", &[], &[]).is_err());
        assert!(load("advertised.listeners=OTHER://h:1\n", &[], &[]).is_err());
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal() {
        let c = load("no.such.key=1\n", &[], &["another.one=2"]).unwrap();
        let names: Vec<String> = c.unknown_keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["another.one".to_string(), "no.such.key".to_string()]);
    }

    #[test]
    fn listeners_and_advertised_listeners_pair_by_name() {
        let c = load(
            "listeners=PLAINTEXT://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092\n\
             advertised.listeners=PLAINTEXT://broker-1:9092,EXTERNAL://localhost:19092\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].name, "EXTERNAL");
        assert_eq!(c.listeners[1].advertised_host, "localhost");
        assert_eq!(c.listeners[1].advertised_port, 19092);
        assert_eq!(c.listeners[0].advertised_host, "broker-1");
    }

    #[test]
    fn the_issue_example_configuration_is_accepted() {
        let c = load(
            "node.id=1\nprocess.roles=broker,controller\n\
             listeners=PLAINTEXT://127.0.0.1:9092,BROKER://127.0.0.1:9192\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:9092,BROKER://127.0.0.1:9192\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT\n\
             inter.broker.listener.name=BROKER\n\
             controller.quorum.voters=1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194\n\
             log.dirs=/var/lib/rafka/node1\ndefault.replication.factor=3\n",
            &[],
            &[],
        )
        .unwrap();
        assert!(c.is_controller);
        assert_eq!(c.quorum_voters.len(), 3);
        assert_eq!(c.quorum_voters[&2], "127.0.0.1:9193");
        assert_eq!(c.inter_broker_listener.as_ref().unwrap().bind_port, 9192);
        assert_eq!(c.listeners.len(), 1, "the inter-broker listener does not serve Kafka clients");
        assert!(c.unknown_keys().is_empty());
    }

    #[test]
    fn quorum_settings_are_checked_against_each_other() {
        let base = "listeners=PLAINTEXT://:9092,BROKER://:9192\nlistener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT\n";
        let with = |extra: &str| load(&format!("{base}{extra}"), &[], &[]);
        assert!(with("controller.quorum.voters=2@h:9192\ninter.broker.listener.name=BROKER\n").is_err(), "combined node not a voter");
        assert!(with("process.roles=broker\ncontroller.quorum.voters=1@h:9192\ninter.broker.listener.name=BROKER\n").is_err(), "broker-only node listed as voter");
        assert!(with("controller.quorum.voters=1@h:9192\n").is_err(), "voters without inter-broker listener");
        assert!(with("controller.quorum.voters=1@h\ninter.broker.listener.name=BROKER\n").is_err(), "voter without port");
        assert!(with("process.roles=controller\n").is_err());
        assert!(with("process.roles=broker\ncontroller.quorum.voters=2@h:9192\ninter.broker.listener.name=BROKER\n").is_ok());
    }

    /// The environment a StatefulSet pod gets from deploy/k8s/statefulset.yaml.
    fn pod_env(pod: &str) -> Vec<(&str, String)> {
        let host = "${POD_NAME}.rafka-headless.${POD_NAMESPACE}.svc.cluster.local";
        vec![
            ("POD_NAME", pod.to_string()),
            ("POD_NAMESPACE", "prod".to_string()),
            ("KAFKA_LISTENERS", "CLIENT://:9092,BROKER://:9093".to_string()),
            ("KAFKA_ADVERTISED_LISTENERS", format!("CLIENT://{host}:9092,BROKER://{host}:9093")),
            ("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CLIENT:PLAINTEXT,BROKER:PLAINTEXT".to_string()),
            ("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER".to_string()),
            ("KAFKA_RAFKA_QUORUM_VOTERS_COUNT", "3".to_string()),
            ("KAFKA_RAFKA_QUORUM_VOTERS_PATTERN", "rafka-{id}.rafka-headless.${POD_NAMESPACE}.svc.cluster.local:9093".to_string()),
        ]
    }

    fn load_env(env: &[(&str, String)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::load(None, env.iter().map(|(k, v)| (k.to_string(), v.clone())), &[])
    }

    #[test]
    fn a_pod_derives_its_node_id_address_and_voters_from_its_name() {
        let c = load_env(&pod_env("rafka-2")).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.listeners[0].advertised_host, "rafka-2.rafka-headless.prod.svc.cluster.local");
        assert_eq!(c.listeners[0].advertised_port, 9092);
        assert_eq!(c.inter_broker_listener.as_ref().unwrap().advertised_host, "rafka-2.rafka-headless.prod.svc.cluster.local");
        assert_eq!(c.quorum_voters.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(c.quorum_voters[&0], "rafka-0.rafka-headless.prod.svc.cluster.local:9093");
        let voters = c.effective().into_iter().find(|e| e.name == "controller.quorum.voters").unwrap();
        assert!(voters.explicitly_set && voters.value.unwrap().starts_with("0@rafka-0."));
        assert!(c.unknown_keys().is_empty());
    }

    #[test]
    fn an_explicit_node_id_wins_over_the_pod_ordinal() {
        let mut env = pod_env("rafka-2");
        env.push(("KAFKA_NODE_ID", "1".to_string()));
        assert_eq!(load_env(&env).unwrap().node_id, 1);
        let c = load("node.id=${POD_ORDINAL}\n", &[("POD_ORDINAL", "0"), ("POD_NAME", "rafka-2")], &[]).unwrap();
        assert_eq!(c.node_id, 0);
    }

    #[test]
    fn a_pod_name_without_an_ordinal_needs_an_explicit_node_id() {
        let e = load_env(&[("POD_NAME", "rafka-7d9f-x2kq".to_string())]).unwrap_err().to_string();
        assert!(e.contains("node.id") && e.contains("POD_NAME=rafka-7d9f-x2kq") && e.contains("KAFKA_NODE_ID"), "{e}");
        assert!(load_env(&[]).is_ok(), "without POD_NAME the default node.id applies");
    }

    #[test]
    fn a_missing_variable_is_one_line_naming_it_the_key_and_the_origin() {
        let mut env = pod_env("rafka-2");
        env.retain(|(k, _)| *k != "POD_NAMESPACE");
        let e = load_env(&env).unwrap_err().to_string();
        assert!(e.contains("POD_NAMESPACE") && e.contains("is not set"), "{e}");
        assert!(e.contains("advertised.listeners") && e.contains("KAFKA_ADVERTISED_LISTENERS"), "{e}");
        assert!(!e.contains('\n'));
        let e = load("log.dirs=/data/${NODE\n", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("log.dirs") && e.contains("server.properties:1") && e.contains("malformed"), "{e}");
        let c = load("log.dirs=/data/$${literal}\n", &[], &[]).unwrap();
        assert_eq!(c.log_dirs, vec![PathBuf::from("/data/${literal}")]);
    }

    #[test]
    fn derived_voters_are_checked_like_written_ones() {
        let mut env = pod_env("rafka-2");
        env.push(("KAFKA_CONTROLLER_QUORUM_VOTERS", "0@a:9093".to_string()));
        let e = load_env(&env).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
        let mut env = pod_env("rafka-3");
        let e = load_env(&env).unwrap_err().to_string();
        assert!(e.contains("node.id=3") && e.contains("not a voter") && e.contains("derived from"), "{e}");
        env.retain(|(k, _)| *k != "KAFKA_RAFKA_QUORUM_VOTERS_PATTERN");
        assert!(load_env(&env).unwrap_err().to_string().contains("needs rafka.quorum.voters.pattern"));
        let mut env = pod_env("rafka-0");
        env.push(("KAFKA_RAFKA_QUORUM_VOTERS_COUNT", "three".to_string()));
        assert!(load_env(&env).unwrap_err().to_string().contains("rafka.quorum.voters.count"));
    }

    #[test]
    fn the_healthcheck_sees_the_node_id_the_server_would_use() {
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let id = |pairs: &[(&str, &str)]| Settings::collect(None, env(pairs), &[]).unwrap().explicit_node_id().unwrap();
        assert_eq!(id(&[]), None);
        assert_eq!(id(&[("KAFKA_NODE_ID", "3")]), Some(3));
        assert_eq!(id(&[("KAFKA_BROKER_ID", "4")]), Some(4));
        assert_eq!(id(&[("POD_NAME", "rafka-1")]), Some(1));
    }

    #[test]
    fn retention_units_fold_into_topic_defaults() {
        let c = load("log.retention.minutes=2\n", &[], &[]).unwrap();
        let d = c.topic_defaults();
        let overrides = BTreeMap::new();
        assert_eq!(d.effective("retention.ms", &overrides).unwrap().0, "120000");
        let c = load("log.retention.hours=1\nlog.retention.ms=5\n", &[], &[]).unwrap();
        assert_eq!(c.topic_defaults().effective("retention.ms", &overrides).unwrap().0, "5");
        let c = load("", &[], &[]).unwrap();
        let (v, source) = c.topic_defaults().effective("retention.ms", &overrides).unwrap();
        assert_eq!(v, "604800000");
        assert_eq!(source, rafka_metadata::topic_config::ConfigSource::Default);
    }

    #[test]
    fn log_flush_intervals_are_the_flush_topic_defaults() {
        use rafka_metadata::topic_config::ConfigSource;
        let overrides = BTreeMap::new();
        let d = load("", &[], &[]).unwrap().topic_defaults();
        for key in ["flush.messages", "flush.ms"] {
            assert_eq!(d.effective(key, &overrides).unwrap(), ("9223372036854775807".to_string(), ConfigSource::Default), "{key}");
        }
        let d = load("log.flush.interval.messages=1\nlog.flush.interval.ms=250\n", &[], &[]).unwrap().topic_defaults();
        assert_eq!(d.effective("flush.messages", &overrides).unwrap(), ("1".to_string(), ConfigSource::StaticBroker));
        assert_eq!(d.effective("flush.ms", &overrides).unwrap(), ("250".to_string(), ConfigSource::StaticBroker));
        let e = load("log.flush.interval.messages=0\n", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("log.flush.interval.messages") && e.contains('0'), "{e}");
        let e = load("log.flush.interval.ms=soon\n", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("log.flush.interval.ms") && e.contains("soon"), "{e}");
    }

    #[test]
    fn log_cleaner_settings_are_read_and_their_topic_synonyms_validated() {
        let c = load("", &[], &[]).unwrap();
        assert!(c.log_cleaner_enable);
        assert_eq!(c.log_cleaner_backoff_ms, 15000);
        let c = load(
            "log.cleaner.enable=false
log.cleaner.backoff.ms=200
log.cleaner.min.cleanable.ratio=0.1
log.cleaner.delete.retention.ms=1000
",
            &[],
            &[],
        )
        .unwrap();
        assert!(!c.log_cleaner_enable);
        assert_eq!(c.log_cleaner_backoff_ms, 200);
        let (ratio, source) = c.topic_defaults().effective("min.cleanable.dirty.ratio", &BTreeMap::new()).unwrap();
        assert_eq!((ratio.as_str(), source), ("0.1", rafka_metadata::topic_config::ConfigSource::StaticBroker));
        assert_eq!(c.topic_defaults().effective("delete.retention.ms", &BTreeMap::new()).unwrap().0, "1000");
        assert!(load("log.cleaner.min.cleanable.ratio=2
", &[], &[]).is_err());
        assert!(load("log.cleaner.backoff.ms=0
", &[], &[]).is_err());
    }

    #[test]
    fn the_writeback_interval_defaults_to_a_mebibyte_and_zero_turns_it_off() {
        assert_eq!(load("", &[], &[]).unwrap().log_writeback_interval_bytes, 1 << 20);
        let c = load("rafka.log.writeback.interval.bytes=0\n", &[], &[]).unwrap();
        assert_eq!(c.log_writeback_interval_bytes, 0);
        let c = load("", &[("KAFKA_RAFKA_LOG_WRITEBACK_INTERVAL_BYTES", "65536")], &[]).unwrap();
        assert_eq!(c.log_writeback_interval_bytes, 65536);
        let e = load("rafka.log.writeback.interval.bytes=-1\n", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("rafka.log.writeback.interval.bytes") && e.contains("\"-1\""), "{e}");
        assert!(!e.contains('\n'));
    }
}

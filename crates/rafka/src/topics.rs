//! `rafka topics`: create, list, describe, alter and delete topics, modelled on
//! Kafka's `kafka-topics.sh` (Kafka 4.x) — the same flags, the same output, the same
//! `Error while executing topic command : …` lines — so commands and scripts written
//! for one work with the other.
//!
//! Three steps, kept apart: [`TopicsArgs::action`] checks the flag combination and
//! yields one [`Action`] (usage errors, exit 1, before any connection is made);
//! `execute` runs it over one [`Connection`] from `client.rs`; the describe lines are
//! built by pure functions ([`topic_line`], [`partition_line`]) that the unit tests
//! pin to Kafka's layout.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::MetadataResponse;

use crate::client::{self, Connection, NewTopic, Timeouts};

/// How long the broker may take to carry out a create, delete or alter
/// (the `timeout_ms` of the request; Kafka's admin client uses the same default).
const OPERATION_TIMEOUT_MS: i32 = 30_000;

/// Kafka's `ConfigSource.DEFAULT_CONFIG`: entries with this source are not overrides.
const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// Error codes the tool treats specially.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const LEADER_NOT_AVAILABLE: i16 = 5;

#[derive(Debug, clap::Args)]
pub struct TopicsArgs {
    /// REQUIRED: the broker(s) to connect to, HOST:PORT[,HOST:PORT...]; the first that answers is used.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: Option<String>,

    /// Create a new topic (with --topic; optionally --partitions, --replication-factor, --config).
    #[arg(long, help_heading = "Actions (exactly one)")]
    create: bool,
    /// List all available topics, one per line, sorted.
    #[arg(long, help_heading = "Actions (exactly one)")]
    list: bool,
    /// List details for the given topic (--topic), or for every topic.
    #[arg(long, help_heading = "Actions (exactly one)")]
    describe: bool,
    /// Alter the number of partitions of a topic (with --topic and --partitions).
    #[arg(long, help_heading = "Actions (exactly one)")]
    alter: bool,
    /// Delete a topic (with --topic).
    #[arg(long, help_heading = "Actions (exactly one)")]
    delete: bool,

    /// The topic to create, alter, describe or delete (an exact name; Kafka also accepts a regular expression).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// The number of partitions of the topic being created or altered. Without it, --create uses the
    /// broker's num.partitions. (Adding partitions changes which partition a key maps to.)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    partitions: Option<i32>,
    /// The replication factor of the topic being created. Without it, the broker's
    /// default.replication.factor is used.
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    replication_factor: Option<i32>,
    /// A topic configuration override for the topic being created, e.g. --config retention.ms=60000
    /// (repeatable; --create only). docs/configuration.md lists the keys the broker accepts.
    #[arg(long = "config", value_name = "NAME=VALUE")]
    configs: Vec<String>,
    /// With --alter, --delete or --describe: do nothing (and succeed) if the topic does not exist.
    #[arg(long)]
    if_exists: bool,
    /// With --create: succeed without changes if the topic already exists.
    #[arg(long)]
    if_not_exists: bool,
    /// With --list or --describe: leave out internal topics.
    #[arg(long)]
    exclude_internal: bool,
}

/// One validated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create { topic: NewTopicSpec, if_not_exists: bool },
    List { topic: Option<String>, exclude_internal: bool },
    Describe { topic: Option<String>, if_exists: bool, exclude_internal: bool },
    Alter { topic: String, partitions: i32, if_exists: bool },
    Delete { topic: String, if_exists: bool },
}

/// What `--create` asks for (the wire form is [`NewTopic`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTopicSpec {
    pub name: String,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    /// Sorted by key; a key given twice keeps its last value.
    pub configs: BTreeMap<String, String>,
}

/// A wrong combination of flags (reported before connecting, like Kafka's usage errors).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct UsageError(String);

impl TopicsArgs {
    /// Checks the flags as `kafka-topics.sh` does and returns the bootstrap list and the action.
    pub fn action(&self) -> Result<(String, Action), UsageError> {
        let usage = |m: &str| Err(UsageError(m.to_string()));
        let actions = [self.create, self.list, self.describe, self.alter, self.delete];
        if actions.iter().filter(|a| **a).count() != 1 {
            return usage("Command must include exactly one action: --list, --describe, --create, --alter or --delete");
        }
        let Some(bootstrap) = self.bootstrap_server.clone() else {
            return usage("--bootstrap-server must be specified");
        };
        let action_name = if self.create {
            "create"
        } else if self.list {
            "list"
        } else if self.describe {
            "describe"
        } else if self.alter {
            "alter"
        } else {
            "delete"
        };
        // Each option and the actions it may be used with.
        let options: [(&str, bool, &[&str]); 6] = [
            ("config", !self.configs.is_empty(), &["create"]),
            ("partitions", self.partitions.is_some(), &["create", "alter"]),
            ("replication-factor", self.replication_factor.is_some(), &["create"]),
            ("if-exists", self.if_exists, &["alter", "delete", "describe"]),
            ("if-not-exists", self.if_not_exists, &["create"]),
            ("exclude-internal", self.exclude_internal, &["list", "describe"]),
        ];
        for (option, used, allowed) in options {
            if used && !allowed.contains(&action_name) {
                let mut message = format!("Option \"[{option}]\" can't be used with option \"[{action_name}]\"");
                if option == "config" && action_name == "alter" {
                    message.push_str(" (topic configurations are changed with IncrementalAlterConfigs, e.g. from a Kafka admin client)");
                }
                return usage(&message);
            }
        }
        let topic = self.topic.clone();
        let required_topic = || match &topic {
            Some(t) => Ok(t.clone()),
            None => Err(UsageError("Missing required argument \"[topic]\"".to_string())),
        };
        let action = match action_name {
            "create" => {
                let name = required_topic()?;
                if self.partitions.is_some_and(|p| p < 1) {
                    return usage("The partitions must be greater than 0");
                }
                let replication_factor = match self.replication_factor {
                    None => None,
                    Some(r) if (1..=i16::MAX as i32).contains(&r) => Some(r as i16),
                    Some(_) => return usage("The replication factor must be between 1 and 32767 inclusive"),
                };
                let mut configs = BTreeMap::new();
                for entry in &self.configs {
                    match entry.split_once('=') {
                        Some((k, v)) if !k.trim().is_empty() => {
                            configs.insert(k.trim().to_string(), v.trim().to_string());
                        }
                        _ => {
                            return usage(
                                "Invalid topic config: all configs to be added must be in the format \"key=val\".",
                            )
                        }
                    }
                }
                Action::Create {
                    topic: NewTopicSpec { name, partitions: self.partitions, replication_factor, configs },
                    if_not_exists: self.if_not_exists,
                }
            }
            "list" => Action::List { topic, exclude_internal: self.exclude_internal },
            "describe" => {
                if self.if_exists && topic.is_none() {
                    return usage("--topic is required to describe a topic with --if-exists");
                }
                Action::Describe { topic, if_exists: self.if_exists, exclude_internal: self.exclude_internal }
            }
            "alter" => {
                let topic = required_topic()?;
                let Some(partitions) = self.partitions else {
                    return usage("Missing required argument \"[partitions]\"");
                };
                if partitions < 1 {
                    return usage("The partitions must be greater than 0");
                }
                Action::Alter { topic, partitions, if_exists: self.if_exists }
            }
            _ => Action::Delete { topic: required_topic()?, if_exists: self.if_exists },
        };
        Ok((bootstrap, action))
    }
}

/// Runs `rafka topics`; errors are printed the way Kafka's tool prints them.
pub fn run(args: TopicsArgs) -> ExitCode {
    let (bootstrap, action) = match args.action() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("Run 'rafka topics --help' for the options.");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error while executing topic command : cannot start the I/O runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&bootstrap, action)) {
        Ok(output) => {
            // A closed pipe (`rafka topics --list | head -1`) is not an error worth reporting.
            let _ = std::io::stdout().lock().write_all(output.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error while executing topic command : {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Carries out `action` and returns what to print on stdout.
async fn execute(bootstrap: &str, action: Action) -> anyhow::Result<String> {
    let mut connection = client::bootstrap(bootstrap, Timeouts::default()).await?;
    match action {
        Action::Create { topic, if_not_exists } => create(&mut connection, topic, if_not_exists).await,
        Action::List { topic, exclude_internal } => {
            let metadata = connection.metadata(None).await?;
            let names = matching_topics(&metadata, topic.as_deref(), exclude_internal);
            Ok(names.iter().map(|t| format!("{}\n", topic_name(t))).collect())
        }
        Action::Describe { topic, if_exists, exclude_internal } => {
            describe(&mut connection, topic.as_deref(), if_exists, exclude_internal).await
        }
        Action::Alter { topic, partitions, if_exists } => {
            if !exists(&mut connection, &topic, if_exists).await? {
                return Ok(String::new());
            }
            let result = connection.create_partitions(&topic, partitions, OPERATION_TIMEOUT_MS).await?;
            check(result.error_code, result.error_message.as_deref())?;
            Ok(String::new())
        }
        Action::Delete { topic, if_exists } => {
            if !exists(&mut connection, &topic, if_exists).await? {
                return Ok(String::new());
            }
            let result = connection.delete_topic(&topic, OPERATION_TIMEOUT_MS).await?;
            check(result.error_code, result.error_message.as_deref())?;
            Ok(String::new())
        }
    }
}

async fn create(connection: &mut Connection, topic: NewTopicSpec, if_not_exists: bool) -> anyhow::Result<String> {
    let request = NewTopic {
        name: topic.name.clone(),
        partitions: topic.partitions,
        replication_factor: topic.replication_factor,
        configs: topic.configs.into_iter().collect(),
    };
    let result = connection.create_topic(&request, OPERATION_TIMEOUT_MS).await?;
    if result.error_code == TOPIC_ALREADY_EXISTS {
        if if_not_exists {
            return Ok(String::new());
        }
        // Kafka's wording, whatever the broker's message says.
        bail!("Topic '{}' already exists.", topic.name);
    }
    check(result.error_code, result.error_message.as_deref())?;
    Ok(format!("Created topic {}.\n", topic.name))
}

/// Whether `topic` exists; a missing topic is an error unless `if_exists`.
async fn exists(connection: &mut Connection, topic: &str, if_exists: bool) -> anyhow::Result<bool> {
    let metadata = connection.metadata(None).await?;
    if !matching_topics(&metadata, Some(topic), false).is_empty() {
        return Ok(true);
    }
    if if_exists {
        return Ok(false);
    }
    bail!("Topic '{topic}' does not exist as expected")
}

async fn describe(
    connection: &mut Connection,
    topic: Option<&str>,
    if_exists: bool,
    exclude_internal: bool,
) -> anyhow::Result<String> {
    let metadata = connection.metadata(None).await?;
    let topics = matching_topics(&metadata, topic, exclude_internal);
    if let Some(name) = topic {
        if topics.is_empty() {
            if if_exists {
                return Ok(String::new());
            }
            bail!("Topic '{name}' does not exist as expected");
        }
    }
    if topics.is_empty() {
        return Ok(String::new());
    }
    let names: Vec<String> = topics.iter().map(|t| topic_name(t).to_string()).collect();
    let configs = connection.describe_topic_configs(&names).await?;
    let live: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    let mut out = String::new();
    for (topic, config) in topics.iter().zip(configs) {
        check(config.error_code, config.error_message.as_deref())
            .with_context(|| format!("describing the configuration of topic '{}'", topic_name(topic)))?;
        // Kafka prints every entry that is not a default (ConfigEntry.isDefault()).
        let mut overrides: Vec<(String, String)> = config
            .configs
            .iter()
            .filter(|c| c.config_source != CONFIG_SOURCE_DEFAULT)
            .map(|c| (c.name.to_string(), c.value.as_ref().map_or("null".to_string(), |v| v.to_string())))
            .collect();
        overrides.sort();
        out.push_str(&describe_topic(topic, &overrides, &live));
    }
    Ok(out)
}

/// The topics of `metadata` that exist (no error, or only a leader election under
/// way) and match the filters, sorted by name.
fn matching_topics<'a>(
    metadata: &'a MetadataResponse,
    name: Option<&str>,
    exclude_internal: bool,
) -> Vec<&'a MetadataResponseTopic> {
    let mut topics: Vec<&MetadataResponseTopic> = metadata
        .topics
        .iter()
        .filter(|t| t.name.is_some() && (t.error_code == 0 || t.error_code == LEADER_NOT_AVAILABLE))
        .filter(|t| !(exclude_internal && t.is_internal))
        .filter(|t| name.is_none_or(|n| topic_name(t) == n))
        .collect();
    topics.sort_by(|a, b| topic_name(a).cmp(topic_name(b)));
    topics
}

fn topic_name(topic: &MetadataResponseTopic) -> &str {
    topic.name.as_ref().map_or("", |n| n.0.as_str())
}

/// A per-topic or per-resource error code as an error with Kafka's message.
fn check(code: i16, message: Option<&str>) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    bail!("{}", client::error_text(code, message))
}

/// The topic line and one line per partition (sorted), as `kafka-topics.sh --describe` prints them.
fn describe_topic(topic: &MetadataResponseTopic, overrides: &[(String, String)], live_brokers: &[i32]) -> String {
    let name = topic_name(topic);
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let replication_factor = partitions.first().map_or(0, |p| p.replica_nodes.len());
    let mut out = topic_line(name, topic.topic_id.as_bytes(), partitions.len(), replication_factor, overrides);
    out.push('\n');
    for p in partitions {
        // Like Kafka's client, a leader that is not a live broker is shown as none.
        let leader = Some(p.leader_id.0).filter(|id| *id >= 0 && live_brokers.contains(id));
        let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
        let isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
        out.push_str(&partition_line(name, p.partition_index, leader, &replicas, &isr));
        out.push('\n');
    }
    out
}

/// `Topic: T\tTopicId: …\tPartitionCount: N\tReplicationFactor: R\tConfigs: k=v,…`
/// (the TopicId is left out when it is all zeroes, as Kafka does).
pub fn topic_line(
    name: &str,
    topic_id: &[u8; 16],
    partition_count: usize,
    replication_factor: usize,
    configs: &[(String, String)],
) -> String {
    let mut line = format!("Topic: {name}");
    if topic_id.iter().any(|b| *b != 0) {
        line.push_str(&format!("\tTopicId: {}", kafka_uuid(topic_id)));
    }
    let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line.push_str(&format!(
        "\tPartitionCount: {partition_count}\tReplicationFactor: {replication_factor}\tConfigs: {}",
        configs.join(",")
    ));
    line
}

/// `\tTopic: T\tPartition: P\tLeader: L\tReplicas: …\tIsr: …\tElr: N/A\tLastKnownElr: N/A`.
///
/// Kafka 4's tool always prints the Elr fields; it shows `N/A` when the partition
/// information came from Metadata (which carries no ELR), as it does here.
pub fn partition_line(name: &str, partition: i32, leader: Option<i32>, replicas: &[i32], isr: &[i32]) -> String {
    let join = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let leader = leader.map_or("none".to_string(), |l| l.to_string());
    format!(
        "\tTopic: {name}\tPartition: {partition}\tLeader: {leader}\tReplicas: {}\tIsr: {}\tElr: N/A\tLastKnownElr: N/A",
        join(replicas),
        join(isr)
    )
}

/// A UUID as Kafka prints one (`Uuid.toString()`): URL-safe base64 of its 16
/// bytes, without padding — 22 characters.
pub fn kafka_uuid(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1; // 3 bytes → 4 characters, 1 byte → 2
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TopicsArgs,
    }

    fn action(argv: &[&str]) -> Result<Action, UsageError> {
        let cli = Cli::try_parse_from(std::iter::once("topics").chain(argv.iter().copied())).unwrap();
        cli.args.action().map(|(_, a)| a)
    }

    fn usage(argv: &[&str]) -> String {
        action(argv).unwrap_err().0
    }

    #[test]
    fn topic_ids_print_as_kafka_prints_them() {
        let bytes: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(kafka_uuid(&bytes), "AAECAwQFBgcICQoLDA0ODw");
        assert_eq!(kafka_uuid(&[0xff; 16]), "_____________________w");
        let mut mixed = [0u8; 16];
        mixed[..4].copy_from_slice(&[0xfb, 0xef, 0xbe, 0xff]);
        mixed[15] = 0xfe;
        assert_eq!(kafka_uuid(&mixed), "----_wAAAAAAAAAAAAAA_g");
    }

    #[test]
    fn the_topic_line_matches_kafkas_layout() {
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        let configs = vec![("cleanup.policy".to_string(), "delete".to_string()), ("retention.ms".into(), "1000".into())];
        assert_eq!(
            topic_line("orders", &id, 6, 3, &configs),
            "Topic: orders\tTopicId: AAECAwQFBgcICQoLDA0ODw\tPartitionCount: 6\tReplicationFactor: 3\t\
             Configs: cleanup.policy=delete,retention.ms=1000"
        );
        assert_eq!(
            topic_line("t", &[0; 16], 1, 1, &[]),
            "Topic: t\tPartitionCount: 1\tReplicationFactor: 1\tConfigs: "
        );
    }

    #[test]
    fn the_partition_line_matches_kafkas_layout() {
        assert_eq!(
            partition_line("orders", 0, Some(2), &[2, 3, 1], &[2, 3, 1]),
            "\tTopic: orders\tPartition: 0\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,3,1\tElr: N/A\tLastKnownElr: N/A"
        );
        assert_eq!(
            partition_line("orders", 5, None, &[1], &[]),
            "\tTopic: orders\tPartition: 5\tLeader: none\tReplicas: 1\tIsr: \tElr: N/A\tLastKnownElr: N/A"
        );
    }

    #[test]
    fn create_without_counts_leaves_them_to_the_broker() {
        let a = action(&["--bootstrap-server", "h:1", "--create", "--topic", "t", "--config", "a=1", "--config", "b = x=y"]);
        let Ok(Action::Create { topic, if_not_exists: false }) = a else { panic!("{a:?}") };
        assert_eq!(topic.partitions, None);
        assert_eq!(topic.replication_factor, None);
        assert_eq!(topic.configs.into_iter().collect::<Vec<_>>(), vec![("a".into(), "1".into()), ("b".into(), "x=y".into())]);
    }

    #[test]
    fn exactly_one_action_is_required() {
        let expected = "Command must include exactly one action: --list, --describe, --create, --alter or --delete";
        assert_eq!(usage(&["--bootstrap-server", "h:1"]), expected);
        assert_eq!(usage(&["--bootstrap-server", "h:1", "--list", "--describe"]), expected);
    }

    #[test]
    fn usage_errors_use_kafkas_messages() {
        assert_eq!(usage(&["--list"]), "--bootstrap-server must be specified");
        assert_eq!(usage(&["--bootstrap-server", "h:1", "--create"]), "Missing required argument \"[topic]\"");
        assert_eq!(usage(&["--bootstrap-server", "h:1", "--delete"]), "Missing required argument \"[topic]\"");
        assert_eq!(
            usage(&["--bootstrap-server", "h:1", "--alter", "--topic", "t"]),
            "Missing required argument \"[partitions]\""
        );
        assert_eq!(
            usage(&["--bootstrap-server", "h:1", "--list", "--partitions", "3"]),
            "Option \"[partitions]\" can't be used with option \"[list]\""
        );
        assert_eq!(
            usage(&["--bootstrap-server", "h:1", "--create", "--topic", "t", "--partitions", "0"]),
            "The partitions must be greater than 0"
        );
        assert_eq!(
            usage(&["--bootstrap-server", "h:1", "--create", "--topic", "t", "--replication-factor", "40000"]),
            "The replication factor must be between 1 and 32767 inclusive"
        );
        assert!(usage(&["--bootstrap-server", "h:1", "--create", "--topic", "t", "--config", "novalue"])
            .starts_with("Invalid topic config"));
        assert!(usage(&["--bootstrap-server", "h:1", "--alter", "--topic", "t", "--partitions", "2", "--config", "a=b"])
            .starts_with("Option \"[config]\" can't be used with option \"[alter]\""));
    }

    #[test]
    fn list_and_describe_need_no_topic() {
        assert_eq!(
            action(&["--bootstrap-server", "h:1", "--list"]).unwrap(),
            Action::List { topic: None, exclude_internal: false }
        );
        assert_eq!(
            action(&["--bootstrap-server", "h:1", "--describe", "--exclude-internal"]).unwrap(),
            Action::Describe { topic: None, if_exists: false, exclude_internal: true }
        );
    }
}

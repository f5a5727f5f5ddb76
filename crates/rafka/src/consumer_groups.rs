//! `rafka consumer-groups`: list, describe, reset the offsets of and delete consumer
//! groups, modelled on Kafka's `kafka-consumer-groups.sh` — the same flags, the same
//! tables, the same `Error: …` lines — so what works with one works with the other.
//!
//! The parts, kept apart as in `topics.rs`:
//!
//! - [`ConsumerGroupsArgs::action`] checks the flag combination and yields one
//!   [`Action`] (usage errors, exit 1, before any connection is made); `--topic
//!   T:P,P` values are parsed there by [`parse_topic_spec`].
//! - [`Cluster`] holds the bootstrap connection, the brokers Metadata names and a
//!   connection per broker opened on first use. It knows where requests must go:
//!   ListGroups to every broker (each lists only the groups it coordinates),
//!   DescribeGroups/OffsetFetch/OffsetCommit/DeleteGroups to the group's coordinator
//!   (FindCoordinator, retried while the coordinator is loading or moving), ListOffsets
//!   to each partition's leader.
//! - the `describe`, `reset_offsets`, `delete` and `list` functions run one action
//!   and print as they go, since Kafka interleaves notes on stderr with tables on stdout;
//! - the tables are built by pure functions ([`offsets_table`], [`members_table`],
//!   [`state_table`], [`reset_table`]) over plain rows, with [`lag`] and
//!   [`decode_assignment`] (a member's `ConsumerProtocolAssignment`), which the unit
//!   tests pin to Kafka's layout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;

use crate::client::{self, CommittedOffsets, Connection, Timeouts, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};

/// How long to keep retrying while a group's coordinator is unknown, loading or moving.
const COORDINATOR_WAIT: Duration = Duration::from_secs(15);
/// How long to keep retrying ListOffsets while a partition has no leader (or a new one).
const LEADER_WAIT: Duration = Duration::from_secs(10);
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Error codes the tool acts on.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;

/// What Kafka's tools print where a column has no value.
const MISSING: &str = "-";

/// The group states a ListGroups filter (`--list --state`) may name.
const GROUP_STATES: [&str; 5] = ["Stable", "PreparingRebalance", "CompletingRebalance", "Empty", "Dead"];

const ACTIONS: &str = "Actions (exactly one)";

#[derive(Debug, clap::Args)]
pub struct ConsumerGroupsArgs {
    /// REQUIRED: the broker(s) to connect to, HOST:PORT[,HOST:PORT...]; the first that answers is used
    /// to find the others.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: Option<String>,

    /// List every consumer group of the cluster (asking each broker), one per line, sorted.
    #[arg(long, help_heading = ACTIONS)]
    list: bool,
    /// Describe the groups named by --group (or --all-groups): their committed offsets and lag
    /// (the default), or --members, or --state.
    #[arg(long, help_heading = ACTIONS)]
    describe: bool,
    /// Reset the committed offsets of an inactive group (no members): with --group, one of
    /// --to-earliest/--to-latest/--to-offset, one of --topic/--all-topics, and --execute to apply
    /// (the default is a dry run).
    #[arg(long, help_heading = ACTIONS)]
    reset_offsets: bool,
    /// Delete the groups named by --group (or --all-groups) with their committed offsets; a group
    /// with members cannot be deleted.
    #[arg(long, help_heading = ACTIONS)]
    delete: bool,

    /// The consumer group (repeatable).
    #[arg(long, value_name = "GROUP")]
    group: Vec<String>,
    /// Every consumer group of the cluster, instead of --group.
    #[arg(long)]
    all_groups: bool,

    /// With --describe: one line per member (CONSUMER-ID HOST CLIENT-ID #PARTITIONS).
    #[arg(long)]
    members: bool,
    /// With --describe: the committed offsets, log-end offsets and lag per partition (the default view).
    #[arg(long)]
    offsets: bool,
    /// With --describe: the coordinator, assignment strategy, state and member count of each group.
    /// With --list: add a STATE column; with a value (e.g. --state Stable,Empty), list only groups
    /// in those states.
    #[arg(long, value_name = "STATE[,STATE...]", num_args = 0..=1)]
    state: Option<Option<String>>,

    /// With --reset-offsets: the topic whose offsets to reset, optionally with partitions, e.g.
    /// orders or orders:0,2 (repeatable).
    #[arg(long, value_name = "TOPIC[:P,P...]")]
    topic: Vec<String>,
    /// With --reset-offsets: every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// With --reset-offsets: to each partition's earliest offset (its log start offset).
    #[arg(long)]
    to_earliest: bool,
    /// With --reset-offsets: to each partition's log-end offset (the high watermark).
    #[arg(long)]
    to_latest: bool,
    /// With --reset-offsets: to offset N, moved into [earliest, latest] where it lies outside.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    to_offset: Option<i64>,
    /// With --reset-offsets: only print the new offsets (the default).
    #[arg(long)]
    dry_run: bool,
    /// With --reset-offsets: commit the new offsets.
    #[arg(long)]
    execute: bool,
}

/// One validated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `states`: `None` prints ids only; `Some(filter)` adds the STATE column and,
    /// when the filter is not empty, keeps only groups in those states.
    List { states: Option<Vec<String>> },
    Describe { groups: Groups, view: View },
    ResetOffsets { groups: Groups, target: ResetTarget, scope: Scope, mode: ResetMode },
    Delete { groups: Groups },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Groups {
    Named(Vec<String>),
    All,
}

/// What `--describe` shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum View {
    Offsets,
    Members,
    State,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
}

/// The partitions `--reset-offsets` acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    AllTopics,
    Topics(Vec<TopicSpec>),
}

/// One `--topic T[:P,P...]`; `partitions: None` is every partition of the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResetMode {
    Execute,
    DryRun,
    /// Neither flag: a dry run, with a warning (as Kafka does).
    DefaultDryRun,
}

/// A wrong combination of flags (reported before connecting).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct UsageError(String);

fn usage<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(message.into()))
}

impl ConsumerGroupsArgs {
    /// Checks the flags and returns the bootstrap list and the action.
    pub fn action(&self) -> Result<(String, Action), UsageError> {
        let actions = [
            ("list", self.list),
            ("describe", self.describe),
            ("reset-offsets", self.reset_offsets),
            ("delete", self.delete),
        ];
        let chosen: Vec<&str> = actions.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
        let [action] = chosen.as_slice() else {
            return usage("Command must include exactly one action: --list, --describe, --reset-offsets or --delete");
        };
        let action = *action;
        let Some(bootstrap) = self.bootstrap_server.clone() else {
            return usage("--bootstrap-server must be specified");
        };
        // Each option and the actions it may be used with.
        let options: [(&str, bool, &[&str]); 12] = [
            ("group", !self.group.is_empty(), &["describe", "reset-offsets", "delete"]),
            ("all-groups", self.all_groups, &["describe", "reset-offsets", "delete"]),
            ("members", self.members, &["describe"]),
            ("offsets", self.offsets, &["describe"]),
            ("state", self.state.is_some(), &["list", "describe"]),
            ("topic", !self.topic.is_empty(), &["reset-offsets"]),
            ("all-topics", self.all_topics, &["reset-offsets"]),
            ("to-earliest", self.to_earliest, &["reset-offsets"]),
            ("to-latest", self.to_latest, &["reset-offsets"]),
            ("to-offset", self.to_offset.is_some(), &["reset-offsets"]),
            ("dry-run", self.dry_run, &["reset-offsets"]),
            ("execute", self.execute, &["reset-offsets"]),
        ];
        for (option, used, allowed) in options {
            if used && !allowed.contains(&action) {
                return usage(format!("Option \"[{option}]\" can't be used with option \"[{action}]\""));
            }
        }
        let action = match action {
            "list" => Action::List { states: self.state.as_ref().map(|s| parse_states(s.as_deref())).transpose()? },
            "describe" => {
                let groups = self.groups("describe")?;
                let views = [("offsets", self.offsets), ("members", self.members), ("state", self.state.is_some())];
                let chosen: Vec<&str> = views.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
                let view = match chosen.as_slice() {
                    [] | ["offsets"] => View::Offsets,
                    ["members"] => View::Members,
                    ["state"] => View::State,
                    _ => return usage("--describe takes at most one of --offsets, --members, --state"),
                };
                if let Some(Some(value)) = &self.state {
                    return usage(format!("--state takes no value with --describe (got \"{value}\")"));
                }
                Action::Describe { groups, view }
            }
            "reset-offsets" => {
                let groups = self.groups("reset-offsets")?;
                let target = match (self.to_earliest, self.to_latest, self.to_offset) {
                    (true, false, None) => ResetTarget::Earliest,
                    (false, true, None) => ResetTarget::Latest,
                    (false, false, Some(n)) if n < 0 => {
                        return usage(format!("--to-offset must be 0 or more (got {n})"));
                    }
                    (false, false, Some(n)) => ResetTarget::Offset(n),
                    (false, false, None) => {
                        return usage("--reset-offsets needs one of --to-earliest, --to-latest, --to-offset N");
                    }
                    _ => return usage("--reset-offsets takes only one of --to-earliest, --to-latest, --to-offset"),
                };
                let scope = match (self.topic.is_empty(), self.all_topics) {
                    (true, false) => {
                        return usage("--reset-offsets needs --topic TOPIC[:P,P...] (repeatable) or --all-topics");
                    }
                    (false, true) => return usage("--topic and --all-topics cannot be used together"),
                    (true, true) => Scope::AllTopics,
                    (false, false) => Scope::Topics(
                        self.topic.iter().map(|t| parse_topic_spec(t)).collect::<Result<Vec<_>, _>>()?,
                    ),
                };
                let mode = match (self.dry_run, self.execute) {
                    (true, true) => return usage("--dry-run and --execute cannot be used together"),
                    (false, true) => ResetMode::Execute,
                    (true, false) => ResetMode::DryRun,
                    (false, false) => ResetMode::DefaultDryRun,
                };
                Action::ResetOffsets { groups, target, scope, mode }
            }
            _ => Action::Delete { groups: self.groups("delete")? },
        };
        Ok((bootstrap, action))
    }

    fn groups(&self, action: &str) -> Result<Groups, UsageError> {
        match (self.group.as_slice(), self.all_groups) {
            ([], false) => usage(format!("--{action} needs --group GROUP (repeatable) or --all-groups")),
            ([], true) => Ok(Groups::All),
            (_, true) => usage("--group and --all-groups cannot be used together"),
            (named, false) => {
                if let Some(empty) = named.iter().find(|g| g.is_empty()) {
                    return usage(format!("invalid --group \"{empty}\": a group id cannot be empty"));
                }
                let mut unique: Vec<String> = Vec::new();
                for g in named {
                    if !unique.contains(g) {
                        unique.push(g.clone());
                    }
                }
                Ok(Groups::Named(unique))
            }
        }
    }
}

/// `--list --state [S,S...]`: the states to keep (empty: all), in Kafka's spelling.
fn parse_states(value: Option<&str>) -> Result<Vec<String>, UsageError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let mut states = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match GROUP_STATES.iter().find(|s| s.eq_ignore_ascii_case(item)) {
            Some(s) => states.push(s.to_string()),
            None => {
                return usage(format!("invalid --state \"{item}\": expected one of {}", GROUP_STATES.join(", ")));
            }
        }
    }
    if states.is_empty() {
        return usage(format!("invalid --state \"{value}\": expected one of {}", GROUP_STATES.join(", ")));
    }
    Ok(states)
}

/// Parses `--topic` for `--reset-offsets`: `T` (every partition) or `T:P,P...`.
pub fn parse_topic_spec(value: &str) -> Result<TopicSpec, UsageError> {
    let (topic, partitions) = match value.split_once(':') {
        None => (value, None),
        Some((topic, list)) => {
            let mut partitions = Vec::new();
            for item in list.split(',').map(str::trim) {
                match item.parse::<i32>() {
                    Ok(p) if p >= 0 => {
                        if !partitions.contains(&p) {
                            partitions.push(p);
                        }
                    }
                    _ => {
                        return usage(format!(
                            "invalid --topic \"{value}\": \"{item}\" is not a partition number (expected TOPIC or TOPIC:P,P...)"
                        ))
                    }
                }
            }
            (topic, Some(partitions))
        }
    };
    let topic = topic.trim();
    if topic.is_empty() {
        return usage(format!("invalid --topic \"{value}\": no topic name (expected TOPIC or TOPIC:P,P...)"));
    }
    Ok(TopicSpec { topic: topic.to_string(), partitions })
}

/// Runs `rafka consumer-groups`; errors are printed as `Error: …` lines on stderr.
pub fn run(args: ConsumerGroupsArgs) -> ExitCode {
    let (bootstrap, action) = match args.action() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("Run 'rafka consumer-groups --help' for the options.");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the I/O runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&bootstrap, action)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        // The failures were already printed.
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How an action ended when it did not end with an error of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Done,
    /// Some group failed and was reported; the command exits non-zero.
    Failed,
}

/// Writes to stdout now (tables and notes interleave as in Kafka's tool); a closed
/// pipe (`… --list | head -1`) is not an error worth reporting.
fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

async fn execute(bootstrap: &str, action: Action) -> anyhow::Result<Outcome> {
    let mut cluster = Cluster::connect(bootstrap, Timeouts::default()).await?;
    match action {
        Action::List { states } => {
            let groups = cluster.list_groups().await?;
            let groups: Vec<(String, String)> = groups
                .into_iter()
                .filter(|(_, state)| states.as_ref().is_none_or(|f| f.is_empty() || f.contains(state)))
                .collect();
            match states {
                None => print_out(&groups.iter().map(|(g, _)| format!("{g}\n")).collect::<String>()),
                Some(_) => print_out(&list_state_table(&groups)),
            }
            Ok(Outcome::Done)
        }
        Action::Describe { groups, view } => {
            let groups = cluster.resolve(groups).await?;
            let mut outcome = Outcome::Done;
            for group in &groups {
                if describe(&mut cluster, group, view).await? == Outcome::Failed {
                    outcome = Outcome::Failed;
                }
            }
            Ok(outcome)
        }
        Action::ResetOffsets { groups, target, scope, mode } => {
            if mode == ResetMode::DefaultDryRun {
                eprintln!(
                    "WARN: No action will be performed as the --execute option is missing. \
                     Add --execute to commit the new offsets, or --dry-run to only show them without this warning."
                );
            }
            let groups = cluster.resolve(groups).await?;
            let mut outcome = Outcome::Done;
            for group in &groups {
                if reset_offsets(&mut cluster, group, target, &scope, mode == ResetMode::Execute).await? == Outcome::Failed {
                    outcome = Outcome::Failed;
                }
            }
            Ok(outcome)
        }
        Action::Delete { groups } => {
            let groups = cluster.resolve(groups).await?;
            delete(&mut cluster, &groups).await
        }
    }
}

// -- the actions ------------------------------------------------------------

async fn describe(cluster: &mut Cluster, group: &str, view: View) -> anyhow::Result<Outcome> {
    let (coordinator, described, committed) = cluster.describe_group(group).await?;
    let state = described.group_state.to_string();
    if state == "Dead" {
        eprintln!("Error: Consumer group '{group}' does not exist.");
        return Ok(Outcome::Failed);
    }
    match state.as_str() {
        "Empty" => eprintln!("\nConsumer group '{group}' has no active members."),
        "PreparingRebalance" | "CompletingRebalance" => eprintln!("\nWarning: Consumer group '{group}' is rebalancing."),
        _ => {}
    }
    let members = members_of(&described)?;
    match view {
        View::Offsets => {
            let mut partitions: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
            for m in &members {
                partitions.extend(m.partitions.iter().cloned());
            }
            let log_end = cluster.log_offsets(&partitions, LATEST_TIMESTAMP).await?;
            let rows = offset_rows(group, &members, &committed, &log_end);
            if !rows.is_empty() {
                print_out(&offsets_table(&rows));
            }
        }
        View::Members => {
            if !members.is_empty() {
                print_out(&members_table(group, &members));
            }
        }
        View::State => {
            let address = cluster.brokers.get(&coordinator).cloned().unwrap_or_else(|| MISSING.to_string());
            let row = StateRow {
                group: group.to_string(),
                coordinator: format!("{address} ({coordinator})"),
                assignment_strategy: described.protocol_data.to_string(),
                state,
                members: members.len(),
            };
            print_out(&state_table(&row));
        }
    }
    Ok(Outcome::Done)
}

async fn reset_offsets(
    cluster: &mut Cluster,
    group: &str,
    target: ResetTarget,
    scope: &Scope,
    execute: bool,
) -> anyhow::Result<Outcome> {
    let (_, described, committed) = cluster.describe_group(group).await?;
    let state = described.group_state.to_string();
    if state != "Empty" && state != "Dead" {
        eprintln!(
            "Error: Assignments can only be reset if the group '{group}' is inactive, but the current state is {state}."
        );
        return Ok(Outcome::Failed);
    }
    let partitions: BTreeSet<(String, i32)> = match scope {
        Scope::AllTopics => committed.keys().cloned().collect(),
        Scope::Topics(specs) => cluster.expand_topics(specs).await?,
    };
    if partitions.is_empty() {
        return Ok(Outcome::Done);
    }
    // --to-offset needs both ends, to move the offset into the range.
    let earliest = if matches!(target, ResetTarget::Earliest | ResetTarget::Offset(_)) {
        required(cluster.log_offsets(&partitions, EARLIEST_TIMESTAMP).await?, "earliest")?
    } else {
        BTreeMap::new()
    };
    let latest = if matches!(target, ResetTarget::Latest | ResetTarget::Offset(_)) {
        required(cluster.log_offsets(&partitions, LATEST_TIMESTAMP).await?, "latest")?
    } else {
        BTreeMap::new()
    };
    let mut new_offsets: Vec<(String, i32, i64)> = Vec::with_capacity(partitions.len());
    for tp in &partitions {
        let offset = match target {
            ResetTarget::Earliest => earliest[tp],
            ResetTarget::Latest => latest[tp],
            ResetTarget::Offset(n) => {
                let (low, high) = (earliest[tp], latest[tp]);
                let clamped = clamp_offset(n, low, high);
                if clamped > n {
                    eprintln!(
                        "WARN: New offset ({n}) is lower than the earliest offset of {}-{}; it is set to {clamped}.",
                        tp.0, tp.1
                    );
                } else if clamped < n {
                    eprintln!(
                        "WARN: New offset ({n}) is higher than the latest offset of {}-{}; it is set to {clamped}.",
                        tp.0, tp.1
                    );
                }
                clamped
            }
        };
        new_offsets.push((tp.0.clone(), tp.1, offset));
    }
    if execute {
        cluster.commit(group, &new_offsets).await?;
    }
    print_out(&reset_table(group, &new_offsets));
    Ok(Outcome::Done)
}

/// The offsets of `found`, or an error naming the first partition without one.
fn required(
    found: BTreeMap<(String, i32), Result<i64, String>>,
    which: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    found
        .into_iter()
        .map(|((topic, partition), offset)| match offset {
            Ok(o) => Ok(((topic, partition), o)),
            Err(e) => Err(anyhow!("cannot get the {which} offset of {topic}-{partition}: {e}")),
        })
        .collect()
}

/// `--to-offset`: Kafka moves an offset outside the partition's range to its nearest end.
pub fn clamp_offset(offset: i64, earliest: i64, latest: i64) -> i64 {
    offset.max(earliest).min(latest.max(earliest))
}

async fn delete(cluster: &mut Cluster, groups: &[String]) -> anyhow::Result<Outcome> {
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for group in groups {
        match cluster.delete_group(group).await? {
            0 => deleted.push(group.clone()),
            code => failed.push((group.clone(), code)),
        }
    }
    let quoted = |names: &[String]| names.iter().map(|g| format!("'{g}'")).collect::<Vec<_>>().join(", ");
    if failed.is_empty() {
        print_out(&format!("Deletion of requested consumer groups ({}) was successful.\n", quoted(&deleted)));
        return Ok(Outcome::Done);
    }
    eprintln!("Error: Deletion of some consumer groups failed:");
    for (group, code) in &failed {
        eprintln!(
            "* Group '{group}' could not be deleted due to: {}: {}",
            client::error_name(*code),
            client::error_text(*code, None)
        );
    }
    if !deleted.is_empty() {
        print_out(&format!("\nThese consumer groups were deleted successfully: {}\n", quoted(&deleted)));
    }
    Ok(Outcome::Failed)
}

// -- talking to the cluster ---------------------------------------------------

/// The bootstrap connection, the brokers it named, and one connection per broker
/// opened on first use.
pub struct Cluster {
    bootstrap: Connection,
    timeouts: Timeouts,
    /// Node id → `HOST:PORT`.
    brokers: BTreeMap<i32, String>,
    connections: HashMap<i32, Connection>,
}

impl Cluster {
    async fn connect(bootstrap: &str, timeouts: Timeouts) -> anyhow::Result<Cluster> {
        let mut connection = client::bootstrap(bootstrap, timeouts).await?;
        let metadata = connection.metadata(Some(&[])).await?;
        let brokers = metadata.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        Ok(Cluster { bootstrap: connection, timeouts, brokers, connections: HashMap::new() })
    }

    /// The connection to broker `id`, opened if need be.
    async fn broker(&mut self, id: i32) -> anyhow::Result<&mut Connection> {
        if !self.connections.contains_key(&id) {
            let addr = self.brokers.get(&id).ok_or_else(|| anyhow!("broker {id} is not in the cluster's metadata"))?;
            let connection =
                Connection::open(addr, self.timeouts).await.with_context(|| format!("connecting to broker {id}"))?;
            self.connections.insert(id, connection);
        }
        Ok(self.connections.get_mut(&id).expect("inserted above"))
    }

    /// The group ids named, or every consumer group of the cluster.
    async fn resolve(&mut self, groups: Groups) -> anyhow::Result<Vec<String>> {
        match groups {
            Groups::Named(names) => Ok(names),
            Groups::All => Ok(self.list_groups().await?.into_iter().map(|(g, _)| g).collect()),
        }
    }

    /// Every consumer group (protocol type `consumer`, or none yet) of every broker,
    /// with its state, sorted by id.
    async fn list_groups(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        let mut groups = BTreeMap::new();
        for id in ids {
            let deadline = Instant::now() + COORDINATOR_WAIT;
            let listed = loop {
                let (code, listed) = self.broker(id).await?.list_groups().await?;
                match code {
                    0 => break listed,
                    COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE if Instant::now() < deadline => {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                    code => bail!("broker {id} cannot list its groups: {}", client::error_text(code, None)),
                }
            };
            for g in listed {
                if g.protocol_type.is_empty() || g.protocol_type.as_str() == "consumer" {
                    groups.insert(g.group_id.0.to_string(), g.group_state.to_string());
                }
            }
        }
        Ok(groups.into_iter().collect())
    }

    /// The node id of `group`'s coordinator, waiting while there is none yet.
    async fn coordinator(&mut self, group: &str, deadline: Instant) -> anyhow::Result<i32> {
        loop {
            let answer = self.bootstrap.find_coordinator(group).await?;
            match answer.error_code {
                0 => {
                    let addr = format!("{}:{}", answer.host, answer.port);
                    if self.brokers.get(&answer.node_id) != Some(&addr) {
                        self.connections.remove(&answer.node_id);
                        self.brokers.insert(answer.node_id, addr);
                    }
                    return Ok(answer.node_id);
                }
                COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                code => bail!(
                    "cannot find the coordinator of group '{group}': {}",
                    client::error_text(code, answer.error_message.as_deref())
                ),
            }
        }
    }

    /// DescribeGroups and OffsetFetch at the coordinator: the coordinator's id, the
    /// description, and the committed offsets (≥ 0) by partition.
    async fn describe_group(
        &mut self,
        group: &str,
    ) -> anyhow::Result<(i32, DescribedGroup, BTreeMap<(String, i32), i64>)> {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let id = self.coordinator(group, deadline).await?;
            let connection = self.broker(id).await?;
            let mut described = connection.describe_groups(&[group.to_string()]).await?;
            let described = described.remove(0);
            let code = if described.error_code != 0 {
                described.error_code
            } else {
                let committed = connection.offset_fetch(group).await?;
                match committed_offsets(&committed) {
                    Ok(offsets) => return Ok((id, described, offsets)),
                    Err(code) => code,
                }
            };
            if !coordinator_moved(code) || Instant::now() >= deadline {
                bail!("cannot describe group '{group}': {}", client::error_text(code, None));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Commits `offsets` for `group` at its coordinator; fails naming the first
    /// partition the coordinator refused.
    async fn commit(&mut self, group: &str, offsets: &[(String, i32, i64)]) -> anyhow::Result<()> {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let id = self.coordinator(group, deadline).await?;
            let answers = self.broker(id).await?.offset_commit(group, offsets).await?;
            let Some(refused) = answers.iter().find(|a| a.error_code != 0) else {
                return Ok(());
            };
            if !coordinator_moved(refused.error_code) || Instant::now() >= deadline {
                bail!(
                    "cannot commit the offset of {}-{} for group '{group}': {}",
                    refused.topic,
                    refused.partition,
                    client::error_text(refused.error_code, None)
                );
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// DeleteGroups at the coordinator; the group's error code.
    async fn delete_group(&mut self, group: &str) -> anyhow::Result<i16> {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let id = self.coordinator(group, deadline).await?;
            let results = self.broker(id).await?.delete_groups(&[group.to_string()]).await?;
            let code = results.iter().find(|r| r.group_id.0.as_str() == group).map_or(0, |r| r.error_code);
            if !coordinator_moved(code) || Instant::now() >= deadline {
                return Ok(code);
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Every partition named by `specs`, checked against Metadata.
    async fn expand_topics(&mut self, specs: &[TopicSpec]) -> anyhow::Result<BTreeSet<(String, i32)>> {
        let names: Vec<String> = specs.iter().map(|s| s.topic.clone()).collect();
        let metadata = self.bootstrap.metadata(Some(&names)).await?;
        let mut partitions = BTreeSet::new();
        for spec in specs {
            let found = metadata
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == spec.topic) && t.error_code != UNKNOWN_TOPIC_OR_PARTITION);
            let Some(topic) = found else { bail!("topic '{}' does not exist", spec.topic) };
            let existing: BTreeSet<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
            match &spec.partitions {
                None => partitions.extend(existing.iter().map(|p| (spec.topic.clone(), *p))),
                Some(wanted) => {
                    for p in wanted {
                        if !existing.contains(p) {
                            bail!(
                                "topic '{}' has no partition {p} (it has {} partitions)",
                                spec.topic,
                                existing.len()
                            );
                        }
                        partitions.insert((spec.topic.clone(), *p));
                    }
                }
            }
        }
        Ok(partitions)
    }

    /// ListOffsets at each partition's leader ([`LATEST_TIMESTAMP`] or
    /// [`EARLIEST_TIMESTAMP`]). A partition whose leader cannot answer gets the
    /// reason instead of an offset; leadership changes are retried for a while.
    async fn log_offsets(
        &mut self,
        partitions: &BTreeSet<(String, i32)>,
        timestamp: i64,
    ) -> anyhow::Result<BTreeMap<(String, i32), Result<i64, String>>> {
        let mut results: BTreeMap<(String, i32), Result<i64, String>> = BTreeMap::new();
        let mut pending: BTreeSet<(String, i32)> = partitions.clone();
        let deadline = Instant::now() + LEADER_WAIT;
        while !pending.is_empty() {
            let topics: Vec<String> =
                pending.iter().map(|(t, _)| t.clone()).collect::<BTreeSet<_>>().into_iter().collect();
            let metadata = self.bootstrap.metadata(Some(&topics)).await?;
            for b in &metadata.brokers {
                self.brokers.entry(b.node_id.0).or_insert_with(|| format!("{}:{}", b.host, b.port));
            }
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            let mut retry = BTreeSet::new();
            for tp in &pending {
                let leader = metadata
                    .topics
                    .iter()
                    .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == tp.0))
                    .and_then(|t| t.partitions.iter().find(|p| p.partition_index == tp.1))
                    .map(|p| p.leader_id.0);
                match leader {
                    Some(l) if l >= 0 => by_leader.entry(l).or_default().push(tp.clone()),
                    Some(_) => {
                        results.insert(tp.clone(), Err("the partition has no leader".to_string()));
                        retry.insert(tp.clone());
                    }
                    None => {
                        results.insert(tp.clone(), Err("the partition does not exist".to_string()));
                    }
                }
            }
            for (leader, wanted) in by_leader {
                let answers = match self.broker(leader).await {
                    Ok(connection) => connection.list_offsets(&wanted, timestamp).await.map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                };
                let answers = match answers {
                    Ok(a) => a,
                    Err(e) => {
                        self.connections.remove(&leader);
                        for tp in wanted {
                            results.insert(tp, Err(format!("{e:#}")));
                        }
                        continue;
                    }
                };
                for tp in wanted {
                    let answer = answers.iter().find(|a| a.topic == tp.0 && a.partition == tp.1);
                    match answer {
                        Some(a) if a.error_code == 0 => {
                            results.insert(tp, Ok(a.offset));
                        }
                        Some(a) => {
                            if matches!(a.error_code, NOT_LEADER_OR_FOLLOWER | LEADER_NOT_AVAILABLE) {
                                retry.insert(tp.clone());
                            }
                            results.insert(tp, Err(client::error_text(a.error_code, None)));
                        }
                        None => {
                            results.insert(tp, Err(format!("broker {leader} did not answer for this partition")));
                        }
                    }
                }
            }
            if retry.is_empty() || Instant::now() >= deadline {
                break;
            }
            pending = retry;
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        Ok(results)
    }
}

/// Errors after which the group's coordinator must be looked up again.
fn coordinator_moved(code: i16) -> bool {
    matches!(code, NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS)
}

/// The committed offsets of an OffsetFetch answer, or its (first) error code.
/// Partitions without a committed offset (-1) are left out.
fn committed_offsets(fetched: &CommittedOffsets) -> Result<BTreeMap<(String, i32), i64>, i16> {
    if fetched.error_code != 0 {
        return Err(fetched.error_code);
    }
    let mut offsets = BTreeMap::new();
    for p in &fetched.partitions {
        if p.error_code != 0 {
            return Err(p.error_code);
        }
        if p.offset >= 0 {
            offsets.insert((p.topic.clone(), p.partition), p.offset);
        }
    }
    Ok(offsets)
}

// -- members and their assignments ------------------------------------------

/// One member of a group, as the tables show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub consumer_id: String,
    pub host: String,
    pub client_id: String,
    /// Sorted.
    pub partitions: Vec<(String, i32)>,
}

fn members_of(group: &DescribedGroup) -> anyhow::Result<Vec<Member>> {
    let consumer = group.protocol_type.as_str() == "consumer";
    group
        .members
        .iter()
        .map(|m| {
            let partitions = if consumer {
                decode_assignment(&m.member_assignment).map_err(|e| {
                    anyhow!("the assignment of member {} of group '{}' cannot be read: {e}", m.member_id, group.group_id.0)
                })?
            } else {
                Vec::new()
            };
            Ok(Member {
                consumer_id: m.member_id.to_string(),
                host: m.client_host.to_string(),
                client_id: m.client_id.to_string(),
                partitions,
            })
        })
        .collect()
}

/// The partitions in a consumer member's assignment: a 2-byte version, then a
/// `ConsumerProtocolAssignment` body. A version newer than we know is read as the
/// newest we know (later versions only add fields at the end, as Kafka's clients
/// assume). An empty assignment (the member has not synced yet) has no partitions.
pub fn decode_assignment(bytes: &Bytes) -> Result<Vec<(String, i32)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(format!("{} byte(s) is too short for a version", buf.remaining()));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(format!("unknown version {version}"));
    }
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version.min(3)).map_err(|e| e.to_string())?;
    let mut partitions: Vec<(String, i32)> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
        .collect();
    partitions.sort();
    partitions.dedup();
    Ok(partitions)
}

// -- the tables --------------------------------------------------------------

/// One line of the `--describe` offsets table; `None` prints as `-`.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetRow {
    pub group: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub current_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub consumer_id: Option<String>,
    pub host: Option<String>,
    pub client_id: Option<String>,
}

/// How far the committed offset is behind the log end; unknown (`-`) unless both are known.
pub fn lag(current_offset: Option<i64>, log_end_offset: Option<i64>) -> Option<i64> {
    match (current_offset, log_end_offset) {
        (Some(current), Some(end)) if current >= 0 && end >= 0 => Some(end - current),
        _ => None,
    }
}

/// The rows of `--describe`: each assigned partition with its member, then the
/// partitions with a committed offset but no member, then members without partitions.
/// Partitions are sorted by topic and number.
pub fn offset_rows(
    group: &str,
    members: &[Member],
    committed: &BTreeMap<(String, i32), i64>,
    log_end: &BTreeMap<(String, i32), Result<i64, String>>,
) -> Vec<OffsetRow> {
    let mut owner: BTreeMap<(String, i32), &Member> = BTreeMap::new();
    for m in members {
        for tp in &m.partitions {
            owner.entry(tp.clone()).or_insert(m);
        }
    }
    let row = |tp: &(String, i32), member: Option<&Member>| OffsetRow {
        group: group.to_string(),
        topic: Some(tp.0.clone()),
        partition: Some(tp.1),
        current_offset: committed.get(tp).copied(),
        log_end_offset: log_end.get(tp).and_then(|r| r.as_ref().ok()).copied(),
        consumer_id: member.map(|m| m.consumer_id.clone()),
        host: member.map(|m| m.host.clone()),
        client_id: member.map(|m| m.client_id.clone()),
    };
    let mut rows: Vec<OffsetRow> = owner.iter().map(|(tp, m)| row(tp, Some(m))).collect();
    rows.extend(committed.keys().filter(|tp| !owner.contains_key(*tp)).map(|tp| row(tp, None)));
    rows.extend(members.iter().filter(|m| m.partitions.is_empty()).map(|m| OffsetRow {
        group: group.to_string(),
        topic: None,
        partition: None,
        current_offset: None,
        log_end_offset: None,
        consumer_id: Some(m.consumer_id.clone()),
        host: Some(m.host.clone()),
        client_id: Some(m.client_id.clone()),
    }));
    rows
}

/// Left-aligned columns separated by one space, each as wide as its minimum, its
/// header and its longest value; the last column is not padded. Like Kafka's tool,
/// the table starts with an empty line.
fn table(headers: &[&str], min_widths: &[usize], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let longest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            min_widths[i].max(h.len()).max(longest)
        })
        .collect();
    let line = |cells: &[String]| {
        let last = cells.len() - 1;
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$} ", width = widths[i]));
            }
        }
        line.push('\n');
        line
    };
    let mut out = String::from("\n");
    out.push_str(&line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn or_missing<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| MISSING.to_string(), |v| v.to_string())
}

/// `--describe` (offsets): `GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID`.
pub fn offsets_table(rows: &[OffsetRow]) -> String {
    let headers =
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                or_missing(r.topic.as_ref()),
                or_missing(r.partition),
                or_missing(r.current_offset),
                or_missing(r.log_end_offset),
                or_missing(lag(r.current_offset, r.log_end_offset)),
                or_missing(r.consumer_id.as_ref()),
                or_missing(r.host.as_ref()),
                or_missing(r.client_id.as_ref()),
            ]
        })
        .collect();
    table(&headers, &[15, 15, 10, 15, 15, 15, 15, 15, 0], &cells)
}

/// `--describe --members`: `GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS`.
pub fn members_table(group: &str, members: &[Member]) -> String {
    let cells: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                group.to_string(),
                m.consumer_id.clone(),
                m.host.clone(),
                m.client_id.clone(),
                m.partitions.len().to_string(),
            ]
        })
        .collect();
    table(&["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"], &[15, 15, 15, 15, 0], &cells)
}

/// One line of `--describe --state`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub group: String,
    /// `HOST:PORT (ID)`.
    pub coordinator: String,
    pub assignment_strategy: String,
    pub state: String,
    pub members: usize,
}

/// `--describe --state`: `GROUP COORDINATOR (ID) ASSIGNMENT-STRATEGY STATE #MEMBERS`.
pub fn state_table(row: &StateRow) -> String {
    let cells = vec![vec![
        row.group.clone(),
        row.coordinator.clone(),
        if row.assignment_strategy.is_empty() { MISSING.to_string() } else { row.assignment_strategy.clone() },
        row.state.clone(),
        row.members.to_string(),
    ]];
    table(&["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"], &[15, 25, 20, 20, 0], &cells)
}

/// `--list --state`: `GROUP STATE`, without the leading empty line.
pub fn list_state_table(groups: &[(String, String)]) -> String {
    let cells: Vec<Vec<String>> = groups.iter().map(|(g, s)| vec![g.clone(), s.clone()]).collect();
    table(&["GROUP", "STATE"], &[15, 0], &cells)[1..].to_string()
}

/// `--reset-offsets`: `GROUP TOPIC PARTITION NEW-OFFSET`, sorted by topic and partition.
pub fn reset_table(group: &str, offsets: &[(String, i32, i64)]) -> String {
    let mut sorted = offsets.to_vec();
    sorted.sort();
    let cells: Vec<Vec<String>> = sorted
        .iter()
        .map(|(t, p, o)| vec![group.to_string(), t.clone(), p.to_string(), o.to_string()])
        .collect();
    table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &[30, 30, 10, 0], &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use clap::Parser;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsumerGroupsArgs,
    }

    fn action(argv: &[&str]) -> Result<Action, UsageError> {
        let argv = ["consumer-groups", "--bootstrap-server", "h:1"].into_iter().chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().args.action().map(|(_, a)| a)
    }

    fn usage_error(argv: &[&str]) -> String {
        action(argv).unwrap_err().0
    }

    fn named(groups: &[&str]) -> Groups {
        Groups::Named(groups.iter().map(|g| g.to_string()).collect())
    }

    #[test]
    fn exactly_one_action_is_required() {
        let expected = "Command must include exactly one action: --list, --describe, --reset-offsets or --delete";
        assert_eq!(usage_error(&[]), expected);
        assert_eq!(usage_error(&["--list", "--delete", "--group", "g"]), expected);
        let cli = Cli::try_parse_from(["consumer-groups", "--list"]).unwrap();
        assert_eq!(cli.args.action().unwrap_err().0, "--bootstrap-server must be specified");
    }

    #[test]
    fn list_takes_an_optional_state_filter() {
        assert_eq!(action(&["--list"]).unwrap(), Action::List { states: None });
        assert_eq!(action(&["--list", "--state"]).unwrap(), Action::List { states: Some(vec![]) });
        assert_eq!(
            action(&["--list", "--state", "stable,Empty"]).unwrap(),
            Action::List { states: Some(vec!["Stable".into(), "Empty".into()]) }
        );
        assert_eq!(
            usage_error(&["--list", "--state", "Sleepy"]),
            "invalid --state \"Sleepy\": expected one of Stable, PreparingRebalance, CompletingRebalance, Empty, Dead"
        );
        assert_eq!(usage_error(&["--list", "--group", "g"]), "Option \"[group]\" can't be used with option \"[list]\"");
    }

    #[test]
    fn describe_needs_groups_and_at_most_one_view() {
        assert_eq!(
            action(&["--describe", "--group", "a", "--group", "b", "--group", "a"]).unwrap(),
            Action::Describe { groups: named(&["a", "b"]), view: View::Offsets }
        );
        assert_eq!(
            action(&["--describe", "--all-groups", "--members"]).unwrap(),
            Action::Describe { groups: Groups::All, view: View::Members }
        );
        assert_eq!(
            action(&["--describe", "--state", "--group", "g"]).unwrap(),
            Action::Describe { groups: named(&["g"]), view: View::State }
        );
        assert_eq!(usage_error(&["--describe"]), "--describe needs --group GROUP (repeatable) or --all-groups");
        assert_eq!(
            usage_error(&["--describe", "--group", "g", "--all-groups"]),
            "--group and --all-groups cannot be used together"
        );
        assert_eq!(
            usage_error(&["--describe", "--group", "g", "--members", "--state"]),
            "--describe takes at most one of --offsets, --members, --state"
        );
        assert_eq!(
            usage_error(&["--describe", "--group", "g", "--state", "Stable"]),
            "--state takes no value with --describe (got \"Stable\")"
        );
        assert_eq!(
            usage_error(&["--describe", "--group", "g", "--to-latest"]),
            "Option \"[to-latest]\" can't be used with option \"[describe]\""
        );
        assert_eq!(usage_error(&["--describe", "--group", ""]), "invalid --group \"\": a group id cannot be empty");
    }

    #[test]
    fn reset_offsets_needs_a_target_and_a_scope() {
        assert_eq!(
            action(&["--reset-offsets", "--group", "g", "--to-earliest", "--all-topics", "--execute"]).unwrap(),
            Action::ResetOffsets {
                groups: named(&["g"]),
                target: ResetTarget::Earliest,
                scope: Scope::AllTopics,
                mode: ResetMode::Execute
            }
        );
        assert_eq!(
            action(&["--reset-offsets", "--group", "g", "--to-offset", "5", "--topic", "t:1,0", "--topic", "u"])
                .unwrap(),
            Action::ResetOffsets {
                groups: named(&["g"]),
                target: ResetTarget::Offset(5),
                scope: Scope::Topics(vec![
                    TopicSpec { topic: "t".into(), partitions: Some(vec![1, 0]) },
                    TopicSpec { topic: "u".into(), partitions: None },
                ]),
                mode: ResetMode::DefaultDryRun
            }
        );
        let base = ["--reset-offsets", "--group", "g"];
        let with = |extra: &[&str]| usage_error(&[&base[..], extra].concat());
        assert_eq!(
            with(&["--all-topics"]),
            "--reset-offsets needs one of --to-earliest, --to-latest, --to-offset N"
        );
        assert_eq!(
            with(&["--to-earliest"]),
            "--reset-offsets needs --topic TOPIC[:P,P...] (repeatable) or --all-topics"
        );
        assert_eq!(
            with(&["--to-earliest", "--to-latest", "--all-topics"]),
            "--reset-offsets takes only one of --to-earliest, --to-latest, --to-offset"
        );
        assert_eq!(with(&["--to-offset", "-3", "--all-topics"]), "--to-offset must be 0 or more (got -3)");
        assert_eq!(
            with(&["--to-latest", "--all-topics", "--topic", "t"]),
            "--topic and --all-topics cannot be used together"
        );
        assert_eq!(
            with(&["--to-latest", "--all-topics", "--dry-run", "--execute"]),
            "--dry-run and --execute cannot be used together"
        );
        assert_eq!(
            usage_error(&["--reset-offsets", "--to-latest", "--all-topics"]),
            "--reset-offsets needs --group GROUP (repeatable) or --all-groups"
        );
        assert_eq!(
            with(&["--to-latest", "--topic", "t:x"]),
            "invalid --topic \"t:x\": \"x\" is not a partition number (expected TOPIC or TOPIC:P,P...)"
        );
    }

    #[test]
    fn delete_needs_groups() {
        assert_eq!(action(&["--delete", "--group", "g"]).unwrap(), Action::Delete { groups: named(&["g"]) });
        assert_eq!(usage_error(&["--delete"]), "--delete needs --group GROUP (repeatable) or --all-groups");
        assert_eq!(
            usage_error(&["--delete", "--group", "g", "--execute"]),
            "Option \"[execute]\" can't be used with option \"[delete]\""
        );
    }

    #[test]
    fn topic_specs_name_a_topic_and_optionally_partitions() {
        assert_eq!(parse_topic_spec("orders").unwrap(), TopicSpec { topic: "orders".into(), partitions: None });
        assert_eq!(
            parse_topic_spec("orders:0, 2,2").unwrap(),
            TopicSpec { topic: "orders".into(), partitions: Some(vec![0, 2]) }
        );
        for bad in ["orders:", "orders:1,", "orders:-1", "orders:a", ":1", ""] {
            let e = parse_topic_spec(bad).unwrap_err().0;
            assert!(e.starts_with(&format!("invalid --topic \"{bad}\"")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn lag_is_known_only_when_both_offsets_are() {
        assert_eq!(lag(Some(3), Some(10)), Some(7));
        assert_eq!(lag(Some(10), Some(10)), Some(0));
        assert_eq!(lag(None, Some(10)), None);
        assert_eq!(lag(Some(3), None), None);
        assert_eq!(lag(Some(-1), Some(10)), None);
    }

    #[test]
    fn to_offset_is_moved_into_the_partitions_range() {
        assert_eq!(clamp_offset(5, 0, 10), 5);
        assert_eq!(clamp_offset(50, 0, 10), 10);
        assert_eq!(clamp_offset(1, 4, 10), 4);
        assert_eq!(clamp_offset(0, 0, 0), 0);
    }

    fn encoded_assignment(version: i16, partitions: &[(&str, &[i32])]) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            partitions
                .iter()
                .map(|(t, ps)| {
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        );
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        assignment.encode(&mut buf, version.min(3)).unwrap();
        buf.freeze()
    }

    #[test]
    fn assignments_decode_after_their_version_prefix() {
        let bytes = encoded_assignment(0, &[("orders", &[3, 1]), ("audit", &[0])]);
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            vec![("audit".to_string(), 0), ("orders".to_string(), 1), ("orders".to_string(), 3)]
        );
        let v3 = encoded_assignment(3, &[("t", &[2])]);
        assert_eq!(decode_assignment(&v3).unwrap(), vec![("t".to_string(), 2)]);
        // A newer version is read as the newest known one.
        let mut newer = BytesMut::from(&v3[..]);
        newer[..2].copy_from_slice(&7i16.to_be_bytes());
        assert_eq!(decode_assignment(&newer.freeze()).unwrap(), vec![("t".to_string(), 2)]);
        assert_eq!(decode_assignment(&Bytes::new()).unwrap(), vec![]);
        assert!(decode_assignment(&Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }

    fn member(id: &str, partitions: &[(&str, i32)]) -> Member {
        Member {
            consumer_id: id.to_string(),
            host: "/127.0.0.1".to_string(),
            client_id: format!("client-{id}"),
            partitions: partitions.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn rows_cover_assigned_committed_and_idle_members() {
        let members = [member("m1", &[("t", 1)]), member("m2", &[])];
        let committed = BTreeMap::from([(("t".to_string(), 0), 4), (("t".to_string(), 1), 2)]);
        let log_end = BTreeMap::from([
            (("t".to_string(), 0), Ok(10)),
            (("t".to_string(), 1), Err("no leader".to_string())),
        ]);
        let rows = offset_rows("g", &members, &committed, &log_end);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            OffsetRow {
                group: "g".into(),
                topic: Some("t".into()),
                partition: Some(1),
                current_offset: Some(2),
                log_end_offset: None,
                consumer_id: Some("m1".into()),
                host: Some("/127.0.0.1".into()),
                client_id: Some("client-m1".into()),
            }
        );
        assert_eq!((rows[1].partition, rows[1].current_offset, rows[1].log_end_offset), (Some(0), Some(4), Some(10)));
        assert_eq!(rows[1].consumer_id, None);
        assert_eq!((rows[2].topic.as_deref(), rows[2].consumer_id.as_deref()), (None, Some("m2")));
    }

    #[test]
    fn the_offsets_table_matches_kafkas_layout() {
        let rows = vec![
            OffsetRow {
                group: "billing".into(),
                topic: Some("orders".into()),
                partition: Some(0),
                current_offset: Some(3),
                log_end_offset: Some(10),
                consumer_id: Some("rdkafka-1".into()),
                host: Some("/127.0.0.1".into()),
                client_id: Some("rdkafka".into()),
            },
            OffsetRow {
                group: "billing".into(),
                topic: Some("orders".into()),
                partition: Some(1),
                current_offset: None,
                log_end_offset: Some(7),
                consumer_id: None,
                host: None,
                client_id: None,
            },
        ];
        let expected = "\n\
GROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID     HOST            CLIENT-ID\n\
billing         orders          0          3               10              7               rdkafka-1       /127.0.0.1      rdkafka\n\
billing         orders          1          -               7               -               -               -               -\n";
        assert_eq!(offsets_table(&rows), expected);
    }

    #[test]
    fn columns_grow_with_their_longest_value() {
        let offsets = [("a-rather-long-topic-name".to_string(), 0, 42)];
        let expected = "\n\
GROUP                          TOPIC                          PARTITION  NEW-OFFSET\n\
g                              a-rather-long-topic-name       0          42\n";
        assert_eq!(reset_table("g", &offsets), expected);
        let long = "a-group-name-longer-than-thirty-chars";
        let table = reset_table(long, &offsets);
        assert!(table.lines().nth(1).unwrap().starts_with(&format!("GROUP{} TOPIC", " ".repeat(long.len() - 5))));
        assert!(table.lines().nth(2).unwrap().starts_with(&format!("{long} a-rather")));
    }

    #[test]
    fn the_members_state_and_list_tables() {
        let members = [member("m1", &[("t", 0), ("t", 1)])];
        assert_eq!(
            members_table("g", &members),
            "\nGROUP           CONSUMER-ID     HOST            CLIENT-ID       #PARTITIONS\n\
             g               m1              /127.0.0.1      client-m1       2\n"
        );
        let row = StateRow {
            group: "g".into(),
            coordinator: "127.0.0.1:9092 (1)".into(),
            assignment_strategy: "range".into(),
            state: "Stable".into(),
            members: 2,
        };
        assert_eq!(
            state_table(&row),
            "\nGROUP           COORDINATOR (ID)          ASSIGNMENT-STRATEGY  STATE                #MEMBERS\n\
             g               127.0.0.1:9092 (1)        range                Stable               2\n"
        );
        assert_eq!(
            list_state_table(&[("g".into(), "Empty".into())]),
            "GROUP           STATE\ng               Empty\n"
        );
    }
}

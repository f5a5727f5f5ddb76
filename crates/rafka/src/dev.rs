//! `rafka dev`: a local multi-node cluster in one command.
//!
//! It runs N broker+controller nodes as child processes of this same binary
//! (`rafka server --config DIR/node<i>/server.properties`) on loopback, waits until
//! every node answers Metadata listing all N brokers, prints the bootstrap string,
//! and then supervises:
//!
//! - Ctrl-C or SIGTERM stops the nodes in order: SIGTERM to each (a controlled
//!   shutdown), up to [`STOP_GRACE`], then SIGKILL for stragglers; exit 0. A second
//!   Ctrl-C skips the wait.
//! - A node that exits on its own before the cluster is up is reported with the
//!   tail of its log, the others are stopped, and the command fails. Once the
//!   cluster is up, a node that exits (say, killed to watch a failover) is reported
//!   with the command that starts it again, and the others keep running; the command
//!   fails only when no node is left.
//!
//! The parts: [`plan`] lays out ports and paths and [`server_properties`] writes a
//! node's configuration (both pure, unit-tested); `wait_ready` probes the nodes with
//! the Kafka client of `client.rs`; `Cluster` owns the child processes.
//!
//! The children run in their own process group, so a Ctrl-C in the terminal reaches
//! only this supervisor, which then stops them in order. If the supervisor itself is
//! killed with SIGKILL the nodes keep running; `kill` them by the pids it printed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::client::{Connection, Timeouts};

/// Node i's gRPC (node-to-node) port is its Kafka port plus this.
pub const GRPC_PORT_OFFSET: u16 = 100;
/// The largest cluster `rafka dev` runs (every node is a controller-quorum voter).
pub const MAX_BROKERS: u16 = 9;
/// How long the nodes get for a controlled shutdown before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// Lines of a dead node's log shown in its report, and the width each is cut to.
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_WIDTH: usize = 300;
/// Pause between readiness probes and between checks for exited children.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many broker+controller nodes to run (1 to 9).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=MAX_BROKERS as i64))]
    brokers: u16,
    /// Where the nodes keep their data, in DIR/node<i>/ (kept across restarts; each node's
    /// server.properties there is rewritten at every start, and its log goes to rafka.log).
    #[arg(long, value_name = "DIR", default_value = "./rafka-dev")]
    data_dir: PathBuf,
    /// Node i serves Kafka clients on port P+i-1 and node-to-node gRPC on P+100+i-1,
    /// all on 127.0.0.1 (so 9092.. and 9192.. by default).
    #[arg(long, value_name = "P", default_value_t = 9092)]
    base_port: u16,
    /// How long the nodes may take to come up, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    startup_timeout: u64,
}

/// Where one node lives: its id, ports and directory.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    pub id: u16,
    pub kafka_port: u16,
    pub grpc_port: u16,
    /// `DIR/node<id>`, spelled as the user gave DIR (for messages).
    pub dir: PathBuf,
}

impl NodePlan {
    pub fn kafka_addr(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("server.properties")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("rafka.log")
    }
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// Lays out `brokers` nodes from `base_port` under `data_dir`.
pub fn plan(brokers: u16, data_dir: &Path, base_port: u16) -> anyhow::Result<Vec<NodePlan>> {
    if brokers == 0 || brokers > MAX_BROKERS {
        bail!("--brokers must be between 1 and {MAX_BROKERS}, not {brokers}");
    }
    let highest = u32::from(base_port) + u32::from(GRPC_PORT_OFFSET) + u32::from(brokers) - 1;
    if base_port == 0 || highest > u32::from(u16::MAX) {
        bail!(
            "--base-port {base_port} does not leave room for {brokers} nodes: the ports used are \
             P..P+{} and P+{GRPC_PORT_OFFSET}..P+{}, all at most 65535",
            brokers - 1,
            GRPC_PORT_OFFSET + brokers - 1
        );
    }
    Ok((1..=brokers)
        .map(|id| NodePlan {
            id,
            kafka_port: base_port + (id - 1),
            grpc_port: base_port + (GRPC_PORT_OFFSET + id - 1),
            dir: data_dir.join(format!("node{id}")),
        })
        .collect())
}

/// The bootstrap string for Kafka clients: every node's Kafka address.
pub fn bootstrap_servers(nodes: &[NodePlan]) -> String {
    nodes.iter().map(NodePlan::kafka_addr).collect::<Vec<_>>().join(",")
}

/// The `server.properties` of `node` in the cluster `nodes`, with its data in `data_path`.
pub fn server_properties(node: &NodePlan, nodes: &[NodePlan], data_path: &Path) -> String {
    let voters: Vec<String> = nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.grpc_port)).collect();
    let listeners = format!("PLAINTEXT://127.0.0.1:{},BROKER://127.0.0.1:{}", node.kafka_port, node.grpc_port);
    // Auto-created topics are replicated to every node, up to three (Kafka's usual
    // production setting), so killing a node shows a failover out of the box.
    let replication = nodes.len().min(3);
    format!(
        "# Written by `rafka dev` at every start: changes here are overwritten.\n\
         # Node {id} of a {n}-node local cluster; Kafka clients use PLAINTEXT, nodes talk gRPC on BROKER.\n\
         node.id={id}\n\
         process.roles=broker,controller\n\
         listeners={listeners}\n\
         advertised.listeners={listeners}\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT\n\
         inter.broker.listener.name=BROKER\n\
         controller.quorum.voters={voters}\n\
         log.dirs={data}\n\
         default.replication.factor={replication}\n\
         # Consumer groups: __consumer_offsets is replicated like the topics (never to more\n\
         # nodes than the cluster has), and a group's first rebalance starts at once.\n\
         offsets.topic.replication.factor={replication}\n\
         group.initial.rebalance.delay.ms=0\n",
        id = node.id,
        n = nodes.len(),
        voters = voters.join(","),
        data = escape_property_value(&data_path.to_string_lossy()),
    )
}

/// Escapes a value for Java properties syntax (backslashes, and leading blanks
/// which the parser would drop).
fn escape_property_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' if i == 0 => out.push_str("\\ "),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Runs `rafka dev` until Ctrl-C or SIGTERM (Ok), a node's exit during start-up, or
/// the exit of the last node (Err).
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let nodes = plan(args.brokers, &args.data_dir, args.base_port)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(supervise(&args, nodes))
}

async fn supervise(args: &DevArgs, nodes: Vec<NodePlan>) -> anyhow::Result<()> {
    // Signals first: a Ctrl-C from here on stops whatever has been started.
    let mut signals = Signals::install()?;
    check_ports_free(&nodes)?;
    let leftover = args.data_dir.join(format!("node{}", nodes.len() + 1));
    if leftover.exists() {
        println!(
            "note: {} belongs to a larger cluster and is not started; a data directory is best \
             reused with the same --brokers and --base-port",
            leftover.display()
        );
    }
    for node in &nodes {
        prepare_node(node, &nodes)?;
    }
    let exe = std::env::current_exe().context("cannot find the rafka binary to start the nodes")?;
    println!(
        "Starting {} (data in {}; logs in {}/node<i>/rafka.log)...",
        plural(nodes.len(), "node"),
        args.data_dir.display(),
        args.data_dir.display()
    );
    let mut cluster = Cluster { nodes: Vec::new() };
    for node in &nodes {
        if let Err(e) = cluster.spawn(&exe, node.clone()) {
            cluster.stop(&mut signals).await;
            return Err(e);
        }
    }

    let timeout = Duration::from_secs(args.startup_timeout);
    let startup = tokio::select! {
        ready = wait_ready(&nodes, timeout) => Event::Ready(ready),
        (index, status) = cluster.first_exit() => Event::Exited(index, status),
        name = signals.recv() => Event::Signal(name),
    };
    match startup {
        Event::Ready(Ok(())) => print_banner(&cluster, &args.data_dir),
        Event::Ready(Err(e)) => {
            cluster.stop(&mut signals).await;
            return Err(e);
        }
        event => return finish(event, &mut cluster, &mut signals).await,
    }

    // Once up, a node that dies (say, killed to watch a failover) leaves the others
    // running: the cluster stops only on a signal or when no node is left.
    loop {
        let event = tokio::select! {
            (index, status) = cluster.first_exit() => Event::Exited(index, status),
            name = signals.recv() => Event::Signal(name),
        };
        match event {
            Event::Exited(index, status) if cluster.any_running() => {
                let node = &cluster.nodes[index];
                eprintln!(
                    "rafka dev: node {} (pid {}) exited ({status}); the other nodes keep running. \
                     Start it again with: {} server --config {} >> {} 2>&1",
                    node.plan.id,
                    node.pid,
                    std::env::current_exe().map(|e| e.display().to_string()).unwrap_or_else(|_| "rafka".into()),
                    node.plan.config_path().display(),
                    node.plan.log_path().display(),
                );
            }
            event => return finish(event, &mut cluster, &mut signals).await,
        }
    }
}

/// What ended a wait.
enum Event {
    Ready(anyhow::Result<()>),
    Exited(usize, ExitStatus),
    Signal(&'static str),
}

async fn finish(event: Event, cluster: &mut Cluster, signals: &mut Signals) -> anyhow::Result<()> {
    match event {
        Event::Signal(name) => {
            println!("{name} received: stopping the cluster.");
            cluster.stop(signals).await;
            Ok(())
        }
        Event::Exited(index, status) => {
            let node = &cluster.nodes[index];
            let (id, pid, log) = (node.plan.id, node.pid, node.plan.log_path());
            eprintln!("rafka dev: node {id} (pid {pid}) exited unexpectedly ({status}). The end of {}:", log.display());
            for line in log_tail(&log, LOG_TAIL_LINES) {
                eprintln!("  | {}", shorten(&line, LOG_TAIL_WIDTH));
            }
            cluster.stop(signals).await;
            bail!("node {id} exited unexpectedly ({status}); see {}", log.display())
        }
        Event::Ready(_) => Ok(()),
    }
}

fn print_banner(cluster: &Cluster, data_dir: &Path) {
    let plans: Vec<NodePlan> = cluster.nodes.iter().map(|n| n.plan.clone()).collect();
    let bootstrap = bootstrap_servers(&plans);
    println!(
        "Rafka dev cluster of {} is up. Bootstrap servers: {bootstrap}",
        plural(plans.len(), "broker")
    );
    for node in &cluster.nodes {
        println!(
            "  node {}: pid {}, Kafka 127.0.0.1:{}, gRPC 127.0.0.1:{}, log {}",
            node.plan.id,
            node.pid,
            node.plan.kafka_port,
            node.plan.grpc_port,
            node.plan.log_path().display()
        );
    }
    let replication = plans.len().min(3);
    if replication < 3 {
        println!(
            "Replication factor {replication} for new topics and __consumer_offsets (Kafka's usual 3 needs 3 brokers)."
        );
    }
    println!("Try: rafka topics --bootstrap-server {bootstrap} --describe");
    println!("Ctrl-C stops the cluster; the data stays in {} for the next start.", data_dir.display());
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Refuses to start when any port of the plan is taken.
fn check_ports_free(nodes: &[NodePlan]) -> anyhow::Result<()> {
    for node in nodes {
        for (port, what) in [(node.kafka_port, "Kafka listener"), (node.grpc_port, "node-to-node (gRPC) listener")] {
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    bail!(
                        "port {port} on 127.0.0.1 (node {}'s {what}) is already in use; is another rafka dev or \
                         Kafka running? Stop it, or choose other ports with --base-port",
                        node.id
                    );
                }
                bail!("cannot listen on 127.0.0.1:{port} (node {}'s {what}): {e}", node.id);
            }
        }
    }
    Ok(())
}

/// Creates the node's directories and writes its server.properties.
fn prepare_node(node: &NodePlan, nodes: &[NodePlan]) -> anyhow::Result<()> {
    let data = node.data_path();
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let data = std::path::absolute(&data).with_context(|| format!("cannot resolve {}", data.display()))?;
    let config = node.config_path();
    std::fs::write(&config, server_properties(node, nodes, &data))
        .with_context(|| format!("cannot write {}", config.display()))
}

/// Polls every node until each accepts a Kafka connection and answers Metadata
/// listing all the cluster's brokers.
pub async fn wait_ready(nodes: &[NodePlan], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let expected: BTreeSet<i32> = nodes.iter().map(|n| i32::from(n.id)).collect();
    // None once a node is ready; otherwise why it is not (yet).
    let mut waiting: Vec<Option<String>> = vec![Some("not probed yet".to_string()); nodes.len()];
    loop {
        for (node, state) in nodes.iter().zip(waiting.iter_mut()) {
            if state.is_some() {
                *state = probe(node, &expected).await.err();
            }
        }
        if waiting.iter().all(Option::is_none) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut message = format!("the dev cluster did not come up within {} s:", timeout.as_secs());
            for (node, state) in nodes.iter().zip(&waiting) {
                if let Some(why) = state {
                    message.push_str(&format!("\n  node {} ({}): {why}", node.id, node.kafka_addr()));
                }
            }
            message.push_str("\nSee the node logs:");
            for node in nodes {
                message.push_str(&format!("\n  {}", node.log_path().display()));
            }
            bail!(message);
        }
        tokio::time::sleep(POLL_INTERVAL * 3).await;
    }
}

/// Whether `node` answers Metadata listing every broker in `expected`.
async fn probe(node: &NodePlan, expected: &BTreeSet<i32>) -> Result<(), String> {
    let timeouts = Timeouts { connect: Duration::from_secs(1), request: Duration::from_secs(3) };
    let mut connection = Connection::open(&node.kafka_addr(), timeouts).await.map_err(|e| e.to_string())?;
    let metadata = connection.metadata(Some(&[])).await.map_err(|e| e.to_string())?;
    let listed: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    if expected.is_subset(&listed) {
        Ok(())
    } else {
        Err(format!("Metadata lists brokers {listed:?}, waiting for all of {expected:?}"))
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else { return Vec::new() };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|l| l.to_string()).collect()
}

/// `line` cut to at most `width` characters, marking the cut.
fn shorten(line: &str, width: usize) -> String {
    match line.char_indices().nth(width) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// SIGTERM and SIGINT, as one stream of named events.
struct Signals {
    term: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "Ctrl-C",
        }
    }
}

/// One running (or exited) node.
struct Node {
    plan: NodePlan,
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
}

impl Node {
    /// Whether the process has exited (reaping it if so).
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit
    }
}

/// The child processes of the dev cluster.
struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    fn spawn(&mut self, exe: &Path, plan: NodePlan) -> anyhow::Result<()> {
        let log_path = plan.log_path();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let config = plan.config_path();
        writeln!(
            log,
            "\n===== rafka dev: starting node {}: {} server --config {}",
            plan.id,
            exe.display(),
            config.display()
        )?;
        let mut command = Command::new(exe);
        command
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            // Ctrl-C in the terminal reaches only us; we stop the nodes in order.
            .process_group(0)
            // A last resort should we fail before stopping them.
            .kill_on_drop(true);
        // KAFKA_* variables would override the generated configuration.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KAFKA_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().with_context(|| format!("cannot start node {} ({})", plan.id, exe.display()))?;
        let pid = child.id().unwrap_or_default();
        self.nodes.push(Node { plan, child, pid, exit: None });
        Ok(())
    }

    fn any_running(&mut self) -> bool {
        self.nodes.iter_mut().any(|n| n.poll_exit().is_none())
    }

    /// The first node to exit, and how. Cancel-safe: an exit seen is remembered.
    async fn first_exit(&mut self) -> (usize, ExitStatus) {
        loop {
            for (index, node) in self.nodes.iter_mut().enumerate() {
                if node.exit.is_none() {
                    if let Some(status) = node.poll_exit() {
                        return (index, status);
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGTERM to every running node, up to [`STOP_GRACE`] for them to exit (less
    /// if another signal arrives), then SIGKILL for the rest.
    async fn stop(&mut self, signals: &mut Signals) {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].poll_exit().is_none()).collect();
        if running.is_empty() {
            return;
        }
        println!(
            "Stopping {} (SIGTERM; up to {} s for a controlled shutdown)...",
            plural(running.len(), "node"),
            STOP_GRACE.as_secs()
        );
        for &i in &running {
            let node = &self.nodes[i];
            if let Err(e) = terminate(node.pid) {
                eprintln!("rafka dev: cannot send SIGTERM to node {} (pid {}): {e}", node.plan.id, node.pid);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut hurry = false;
        loop {
            if running.iter().all(|i| self.nodes[*i].poll_exit().is_some()) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = tokio::time::sleep_until(deadline) => break,
                name = signals.recv() => {
                    println!("{name} again: killing the nodes now.");
                    hurry = true;
                    break;
                }
            }
        }
        let mut killed = Vec::new();
        for &i in &running {
            let node = &mut self.nodes[i];
            if node.poll_exit().is_some() {
                continue;
            }
            killed.push(i);
            if !hurry {
                eprintln!(
                    "rafka dev: node {} (pid {}) did not stop within {} s; killing it (SIGKILL).",
                    node.plan.id,
                    node.pid,
                    STOP_GRACE.as_secs()
                );
            }
            let _ = node.child.start_kill();
            if let Ok(status) = node.child.wait().await {
                node.exit = Some(status);
            }
        }
        for &i in running.iter().filter(|i| !killed.contains(i)) {
            let node = &self.nodes[i];
            if let Some(status) = node.exit.filter(|s| !s.success()) {
                eprintln!("rafka dev: node {} exited with {status}; see {}", node.plan.id, node.plan.log_path().display());
            }
        }
        println!("All nodes stopped.");
    }
}

/// Sends SIGTERM to a child we have not reaped.
#[allow(unsafe_code)]
fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    if pid <= 0 {
        return Err(std::io::Error::other("the process has no pid"));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The pid
    // is a child of this process that has not been reaped (callers check
    // `poll_exit` first, and only `try_wait`/`wait` reap), so it cannot name a
    // recycled, unrelated process.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_directories_follow_the_base_port() {
        let nodes = plan(3, Path::new("dev"), 9092).unwrap();
        let layout: Vec<(u16, u16, u16, PathBuf)> =
            nodes.iter().map(|n| (n.id, n.kafka_port, n.grpc_port, n.dir.clone())).collect();
        assert_eq!(
            layout,
            vec![
                (1, 9092, 9192, PathBuf::from("dev/node1")),
                (2, 9093, 9193, PathBuf::from("dev/node2")),
                (3, 9094, 9194, PathBuf::from("dev/node3")),
            ]
        );
        assert_eq!(bootstrap_servers(&nodes), "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094");
    }

    #[test]
    fn plans_that_do_not_fit_are_refused() {
        assert!(plan(0, Path::new("d"), 9092).is_err());
        assert!(plan(MAX_BROKERS + 1, Path::new("d"), 9092).is_err());
        assert!(plan(3, Path::new("d"), 0).is_err());
        assert!(plan(3, Path::new("d"), 65535 - 101).is_err());
        assert!(plan(3, Path::new("d"), 65535 - 102).is_ok());
    }

    #[test]
    fn each_node_gets_the_cluster_settings() {
        let nodes = plan(3, Path::new("dev"), 9092).unwrap();
        let text = server_properties(&nodes[1], &nodes, Path::new("/abs/dev/node2/data"));
        let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            settings,
            vec![
                "node.id=2",
                "process.roles=broker,controller",
                "listeners=PLAINTEXT://127.0.0.1:9093,BROKER://127.0.0.1:9193",
                "advertised.listeners=PLAINTEXT://127.0.0.1:9093,BROKER://127.0.0.1:9193",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT",
                "inter.broker.listener.name=BROKER",
                "controller.quorum.voters=1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194",
                "log.dirs=/abs/dev/node2/data",
                "default.replication.factor=3",
                "offsets.topic.replication.factor=3",
                "group.initial.rebalance.delay.ms=0",
            ]
        );
    }

    #[test]
    fn replication_defaults_to_one_until_data_replication_exists() {
        let five = plan(5, Path::new("d"), 9092).unwrap();
        assert!(server_properties(&five[0], &five, Path::new("/d")).contains("default.replication.factor=3\n"));
    }

    #[test]
    fn property_values_are_escaped() {
        assert_eq!(escape_property_value(r"C:\data"), r"C:\\data");
        assert_eq!(escape_property_value(" x y"), r"\ x y");
    }

    #[test]
    fn a_taken_port_is_refused_by_name() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let nodes = vec![NodePlan { id: 2, kafka_port: port, grpc_port: port, dir: PathBuf::from("d") }];
        let message = check_ports_free(&nodes).unwrap_err().to_string();
        assert!(message.contains(&format!("port {port}")) && message.contains("node 2"), "{message}");
    }

    #[test]
    fn long_log_lines_are_shortened() {
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("ééé", 2), "éé…");
    }

    #[test]
    fn the_log_tail_is_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("rafka-dev-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rafka.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), vec!["b", "c"]);
        assert_eq!(log_tail(&dir.join("missing"), 2), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

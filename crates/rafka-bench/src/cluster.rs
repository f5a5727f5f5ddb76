//! A cluster of real `rafka server` processes on loopback for the benchmarks.
//!
//! It is laid out and configured exactly as `rafka dev` does it (`rafka::dev::plan`
//! and `server_properties`), so the figures describe the cluster users start. Unlike
//! `rafka dev` it keeps each node's process handle: scenarios `kill -9` a node, start
//! it again, stop the whole cluster with SIGTERM (controlled shutdown) and read each
//! broker's RSS and CPU time from `/proc`. Cluster state (leaders, ISR, the active
//! controller) comes from Metadata through the tools' own client (`rafka::client`), so
//! the measured client (librdkafka) does nothing but the measured work.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kafka_protocol::messages::MetadataResponse;
use rafka::client::{self, Connection, NewTopic, Timeouts};
use rafka::dev::{self, NodePlan};

const TIMEOUTS: Timeouts = Timeouts { connect: Duration::from_secs(2), request: Duration::from_secs(60) };

/// One partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A broker's resource use as `/proc` reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub rss_bytes: u64,
    /// User + system CPU time since the process started.
    pub cpu_seconds: f64,
}

pub struct BenchCluster {
    exe: PathBuf,
    nodes: Vec<NodePlan>,
    children: Vec<Option<Child>>,
    /// Extra server.properties lines every node gets after `rafka dev`'s.
    extra_properties: String,
    runtime: tokio::runtime::Runtime,
}

impl BenchCluster {
    /// Lays out `brokers` nodes under `dir` (wiped first) from the first free base port
    /// at or above `base_port`, starts them and waits until every node lists them all.
    pub fn start(exe: &Path, dir: &Path, brokers: u16, base_port: u16, extra_properties: &str) -> anyhow::Result<BenchCluster> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let base_port = free_base_port(base_port, brokers)?;
        let nodes = dev::plan(brokers, dir, base_port)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut cluster = BenchCluster {
            exe: exe.to_path_buf(),
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            extra_properties: extra_properties.to_string(),
            runtime,
        };
        for node in cluster.nodes.clone() {
            cluster.write_config(&node)?;
        }
        cluster.start_all()?;
        Ok(cluster)
    }

    fn write_config(&self, node: &NodePlan) -> anyhow::Result<()> {
        let data = node.data_path();
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let data = std::path::absolute(&data)?;
        let mut properties = dev::server_properties(node, &self.nodes, &data);
        properties.push_str("# rafka-bench\n");
        properties.push_str(&self.extra_properties);
        std::fs::write(node.config_path(), properties)
            .with_context(|| format!("cannot write {}", node.config_path().display()))
    }

    /// Starts every node that is not running and waits until all are serving.
    pub fn start_all(&mut self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        for id in self.ids() {
            if self.children[self.index(id)].is_none() {
                self.spawn(id)?;
            }
        }
        self.wait_ready(Duration::from_secs(600))?;
        Ok(start.elapsed())
    }

    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| i32::from(n.id)).collect()
    }

    fn index(&self, id: i32) -> usize {
        self.nodes.iter().position(|n| i32::from(n.id) == id).expect("a node of this cluster")
    }

    pub fn bootstrap(&self) -> String {
        dev::bootstrap_servers(&self.nodes)
    }

    fn spawn(&mut self, id: i32) -> anyhow::Result<()> {
        let node = self.nodes[self.index(id)].clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .with_context(|| format!("cannot open {}", node.log_path().display()))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("server")
            .arg("--config")
            .arg(node.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KAFKA_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", self.exe.display()))?;
        let index = self.index(id);
        self.children[index] = Some(child);
        Ok(())
    }

    /// Starts node `id` again (after a kill) without waiting for it.
    pub fn restart(&mut self, id: i32) -> anyhow::Result<()> {
        anyhow::ensure!(self.children[self.index(id)].is_none(), "node {id} is already running");
        self.spawn(id)
    }

    /// Waits until every running node answers Metadata listing every running node.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.check_alive()?;
        let running: Vec<NodePlan> = self.running_nodes().cloned().collect();
        self.runtime.block_on(dev::wait_ready(&running, timeout))
    }

    /// The nodes this cluster started and has not killed or stopped.
    fn running_nodes(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().zip(&self.children).filter(|(_, c)| c.is_some()).map(|(n, _)| n)
    }

    /// Fails, naming the node and its log, if a node we started has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (node, child) in self.nodes.iter().zip(self.children.iter_mut()) {
            if let Some(c) = child {
                if let Some(status) = c.try_wait()? {
                    bail!("node {} exited unexpectedly ({status}); see {}", node.id, node.log_path().display());
                }
            }
        }
        Ok(())
    }

    pub fn pid(&self, id: i32) -> Option<u32> {
        self.children[self.index(id)].as_ref().map(Child::id)
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill9(&mut self, id: i32) -> anyhow::Result<()> {
        let index = self.index(id);
        let mut child = self.children[index].take().with_context(|| format!("node {id} is not running"))?;
        child.kill().with_context(|| format!("cannot kill node {id}"))?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM every node (a controlled shutdown) and wait for each to exit.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        for child in self.children.iter().flatten() {
            let pid = libc::pid_t::try_from(child.id())?;
            #[allow(unsafe_code)]
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + dev::STOP_GRACE;
        for (node, slot) in self.nodes.iter().zip(self.children.iter_mut()) {
            let Some(child) = slot.as_mut() else { continue };
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        eprintln!("node {} stopped with {status}; see {}", node.id, node.log_path().display());
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!("node {} did not stop within {:?}: killing it", node.id, dev::STOP_GRACE);
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            *slot = None;
        }
        Ok(())
    }

    /// RSS and CPU time of node `id` (zero if it is not running).
    pub fn stats(&self, id: i32) -> ProcStats {
        self.pid(id).and_then(proc_stats).unwrap_or_default()
    }

    fn connect(&self) -> anyhow::Result<Connection> {
        let live: Vec<String> = self.running_nodes().map(NodePlan::kafka_addr).collect();
        Ok(self.runtime.block_on(client::bootstrap(&live.join(","), TIMEOUTS))?)
    }

    pub fn metadata(&self, topics: Option<&[String]>) -> anyhow::Result<MetadataResponse> {
        let mut connection = self.connect()?;
        Ok(self.runtime.block_on(connection.metadata(topics))?)
    }

    /// The node the brokers name as the active controller.
    pub fn controller(&self) -> anyhow::Result<i32> {
        Ok(self.metadata(Some(&[]))?.controller_id.0)
    }

    pub fn partitions(&self, topic: &str) -> anyhow::Result<Vec<PartitionView>> {
        let metadata = self.metadata(Some(&[topic.to_string()]))?;
        let Some(t) = metadata.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic)) else {
            bail!("Metadata has no topic {topic}");
        };
        let mut views: Vec<PartitionView> = t
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition_index,
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            })
            .collect();
        views.sort_by_key(|p| p.partition);
        Ok(views)
    }

    /// Creates a topic and waits until every partition has a leader and a full ISR.
    pub fn create_topic(&self, name: &str, partitions: i32, replication: i16, configs: &[(&str, &str)]) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let topic = NewTopic {
            name: name.to_string(),
            partitions: Some(partitions),
            replication_factor: Some(replication),
            configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let mut connection = self.connect()?;
        let result = self.runtime.block_on(connection.create_topic(&topic, 600_000))?;
        accepted(&format!("create topic {name}"), result.error_code, result.error_message.as_deref())?;
        self.wait_until(Duration::from_secs(600), &format!("topic {name} to have leaders and full ISRs"), || {
            let views = self.partitions(name)?;
            Ok(views.len() == partitions as usize
                && views.iter().all(|p| p.leader >= 0 && p.isr.len() == usize::try_from(replication).unwrap_or(0)))
        })?;
        Ok(start.elapsed())
    }

    /// Deletes a topic whose figures are taken and waits until Metadata no longer
    /// lists it (the brokers remove its logs as they apply that): a full run writes
    /// more than many machines' free disk (over 75 GB), so no topic outlives its row.
    pub fn delete_topic(&self, name: &str) -> anyhow::Result<()> {
        let mut connection = self.connect()?;
        let result = self.runtime.block_on(connection.delete_topic(name, 60_000))?;
        accepted(&format!("delete topic {name}"), result.error_code, result.error_message.as_deref())?;
        self.wait_until(Duration::from_secs(60), &format!("topic {name} to be deleted"), || {
            let metadata = self.metadata(None)?;
            Ok(!metadata.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name)))
        })
    }

    /// Polls `ready` every 20 ms until it holds; fails after `timeout` naming `what`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match ready() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() >= deadline {
                let why = last_error.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}{why}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every running node's stats, summed.
    pub fn total_stats(&self) -> ProcStats {
        self.ids().iter().map(|id| self.stats(*id)).fold(ProcStats::default(), |a, b| ProcStats {
            rss_bytes: a.rss_bytes + b.rss_bytes,
            cpu_seconds: a.cpu_seconds + b.cpu_seconds,
        })
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first base port at or above `from` whose Kafka and gRPC ports are all free.
fn free_base_port(from: u16, brokers: u16) -> anyhow::Result<u16> {
    let mut base = from;
    for _ in 0..50 {
        let ports = (0..brokers).flat_map(|i| [base + i, base + dev::GRPC_PORT_OFFSET + i]);
        let taken: BTreeSet<u16> = ports.filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err()).collect();
        if taken.is_empty() {
            return Ok(base);
        }
        base = base.checked_add(2 * dev::GRPC_PORT_OFFSET).context("no free ports")?;
    }
    bail!("no free block of ports from {from}")
}

/// Reads RSS and CPU time of `pid` from /proc.
pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    let page = page_size();
    Some(ProcStats { rss_bytes: rss_pages * page, cpu_seconds: (utime + stime) as f64 / ticks })
}

/// The machine's CPU time so far from /proc/stat: (all, stolen by the hypervisor),
/// in clock ticks. Steal is what a noisy virtual machine loses to its neighbours.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total = ticks.iter().take(8).sum();
    Some((total, *ticks.get(7)?))
}

/// Writes back every dirty page of the machine (sync(2)) and returns how long that
/// took: a latency run then starts without the write-back that earlier runs left,
/// which would otherwise land on whichever run comes next.
pub fn write_back_dirty_pages() -> Duration {
    let started = Instant::now();
    #[allow(unsafe_code)]
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe {
        libc::sync();
    }
    started.elapsed()
}

fn clock_ticks_per_second() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Fails with "cannot `what`: <the broker's error>" unless `error_code` is 0.
fn accepted(what: &str, error_code: i16, error_message: Option<&str>) -> anyhow::Result<()> {
    if error_code != 0 {
        bail!("cannot {what}: {}", client::error_text(error_code, error_message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_stats() {
        let stats = proc_stats(std::process::id()).unwrap();
        assert!(stats.rss_bytes > 1 << 20, "{stats:?}");
        assert!(stats.cpu_seconds >= 0.0);
        assert!(proc_stats(u32::MAX).is_none());
    }

    #[test]
    fn a_taken_port_moves_the_base() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        if port > 60000 {
            return; // no room above it for a second block; nothing to show
        }
        let base = free_base_port(port, 1).unwrap();
        assert_ne!(base, port);
    }
}


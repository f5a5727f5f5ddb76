//! The partitions this broker hosts, kept in step with the metadata image.
//!
//! [`ReplicaManager::apply_image`] is the broker's reaction to a metadata delta: it
//! opens logs for partitions newly assigned here, updates leader/ISR state and log
//! configuration of the ones it has, and deletes the logs of partitions that are gone
//! (deleted topics, or a directory left over from an older topic of the same name,
//! recognised by the topic id in `partition.metadata`). After each image it publishes
//! the image offset it has applied, so a handler that committed a change can wait until
//! this broker acts on it.
//!
//! Background duties over every hosted replica: [`ReplicaManager::enforce_retention`]
//! (rolling and `delete` retention) and the log cleaner,
//! [`ReplicaManager::run_log_cleaner`], which compacts every replica (leader or
//! follower: each cleans its own log) of a topic whose `cleanup.policy` includes
//! `compact`, one partition at a time on a blocking thread, never past the high watermark.
//! And the `flush.ms` syncer, [`ReplicaManager::run_log_syncer`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rafka_metadata::topic_config::{cleanup_policy_includes, TopicDefaults};
use rafka_metadata::{MetadataImage, TopicImage};
use rafka_storage::{LogConfig, TimestampType, DEFAULT_MIN_CLEANABLE_DIRTY_RATIO, NO_FLUSH};
use tokio::sync::watch;
use tracing::{info, info_span, warn};
use uuid::Uuid;

use crate::partition::{recorded_topic_id, Partition, ReplicaState};

/// Name of the metadata log's directory inside a log dir (never treated as a partition).
pub const METADATA_DIR_NAME: &str = "__cluster_metadata-0";

/// The `flush.ms` syncer checks at most this often...
const SYNC_CHECK_MIN: Duration = Duration::from_millis(10);
/// ...and at least this often.
const SYNC_CHECK_MAX: Duration = Duration::from_secs(1);

/// Key of a hosted partition.
pub type TopicPartition = (String, i32);

/// The broker's hosted partitions.
pub struct ReplicaManager {
    node_id: i32,
    log_dirs: Vec<PathBuf>,
    defaults: TopicDefaults,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Partition directories found on disk at start-up, not yet claimed by the image.
    unclaimed_dirs: parking_lot::Mutex<Option<HashMap<TopicPartition, PathBuf>>>,
    applied: watch::Sender<u64>,
    /// Broker-wide `rafka.log.writeback.interval.bytes`, set on every topic's log config.
    writeback_interval_bytes: u64,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Splits `orders-12` into `("orders", 12)`.
pub fn parse_partition_dir_name(name: &str) -> Option<TopicPartition> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    if topic.is_empty() || partition < 0 || name == METADATA_DIR_NAME {
        return None;
    }
    Some((topic.to_string(), partition))
}

/// Threads that open or close partition logs when there are many (fsync-bound work).
const IO_THREADS: usize = 8;
/// Fewer logs than this are opened or closed on the calling thread.
const PARALLEL_FROM: usize = 64;

/// Runs `work` on every item: on the calling thread when there are few, else split
/// over [`IO_THREADS`] scoped threads. Opening and closing partition logs is bound by
/// file creation and fsyncs, not CPU, so with thousands of partitions (creating
/// them, starting or stopping with them) the threads overlap the waits; one after
/// another, closing 10,000 logs outlasted any stop grace.
fn for_each_on_io_threads<T: Send>(items: Vec<T>, work: impl Fn(T) + Sync) {
    if items.len() < PARALLEL_FROM {
        items.into_iter().for_each(work);
        return;
    }
    let per_thread = items.len().div_ceil(IO_THREADS);
    let work = &work;
    let mut rest = items.into_iter();
    std::thread::scope(|scope| loop {
        let share: Vec<T> = rest.by_ref().take(per_thread).collect();
        if share.is_empty() {
            break;
        }
        scope.spawn(move || share.into_iter().for_each(work));
    });
}

/// The log configuration of a topic: its overrides over the broker defaults.
pub fn log_config_for(defaults: &TopicDefaults, overrides: &BTreeMap<String, String>) -> LogConfig {
    let get = |key: &str| -> String {
        defaults
            .effective(key, overrides)
            .map(|(v, _)| v)
            .unwrap_or_default()
    };
    let num = |key: &str| -> i64 { get(key).parse().unwrap_or(-1) };
    let optional = |key: &str| -> Option<i64> { Some(num(key)).filter(|v| *v >= 0) };
    let policy = get("cleanup.policy");
    LogConfig {
        segment_bytes: num("segment.bytes").max(14) as u64,
        segment_ms: optional("segment.ms"),
        retention_ms: optional("retention.ms"),
        retention_bytes: optional("retention.bytes").map(|v| v as u64),
        max_message_bytes: num("max.message.bytes").clamp(0, i32::MAX as i64) as u32,
        timestamp_type: if get("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        delete_retention: cleanup_policy_includes(&policy, "delete"),
        compact: cleanup_policy_includes(&policy, "compact"),
        delete_retention_ms: num("delete.retention.ms").max(0),
        min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(DEFAULT_MIN_CLEANABLE_DIRTY_RATIO),
        min_compaction_lag_ms: num("min.compaction.lag.ms").max(0),
        max_compaction_lag_ms: num("max.compaction.lag.ms").max(1),
        // Validated when written; an unreadable value falls back to never.
        flush_messages: Some(num("flush.messages")).filter(|v| *v >= 1).unwrap_or(NO_FLUSH),
        flush_ms: optional("flush.ms").unwrap_or(NO_FLUSH),
        preallocate: get("preallocate") == "true",
        ..LogConfig::default()
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn min_insync_replicas(defaults: &TopicDefaults, topic: &TopicImage) -> usize {
    defaults
        .effective("min.insync.replicas", &topic.configs)
        .and_then(|(v, _)| v.parse().ok())
        .unwrap_or(1)
}

impl ReplicaManager {
    /// Scans `log_dirs` for existing partition directories; nothing is opened until
    /// the first image says which of them this broker hosts.
    pub fn new(node_id: i32, log_dirs: Vec<PathBuf>, defaults: TopicDefaults) -> std::io::Result<ReplicaManager> {
        let mut found = HashMap::new();
        for dir in &log_dirs {
            std::fs::create_dir_all(dir)?;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(tp) = parse_partition_dir_name(&name) {
                    found.insert(tp, entry.path());
                }
            }
        }
        let (applied, _) = watch::channel(0);
        Ok(ReplicaManager {
            node_id,
            log_dirs,
            defaults,
            partitions: RwLock::new(HashMap::new()),
            unclaimed_dirs: parking_lot::Mutex::new(Some(found)),
            applied,
            writeback_interval_bytes: rafka_storage::DEFAULT_WRITEBACK_INTERVAL_BYTES,
        })
    }

    /// Starts write-back of every log's appended bytes each `bytes` (0 = leave it to
    /// the kernel); see [`LogConfig::writeback_interval_bytes`]. Default 1 MiB.
    pub fn with_writeback_interval_bytes(mut self, bytes: u64) -> ReplicaManager {
        self.writeback_interval_bytes = bytes;
        self
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn topic_defaults(&self) -> &TopicDefaults {
        &self.defaults
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// The image offset this broker has fully acted on.
    pub fn applied_offset(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this broker has acted on the image at `offset` (or `timeout` passes).
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn choose_dir(&self, topic: &str, partition: i32) -> PathBuf {
        let counts = {
            let partitions = self.partitions.read();
            let mut counts: HashMap<&Path, usize> = HashMap::new();
            for p in partitions.values() {
                if let Some(parent) = p.dir().parent() {
                    *counts.entry(parent).or_default() += 1;
                }
            }
            self.log_dirs
                .iter()
                .map(|d| counts.get(d.as_path()).copied().unwrap_or(0))
                .collect::<Vec<_>>()
        };
        let (i, _) = counts
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| **c)
            .unwrap_or((0, &0));
        self.log_dirs[i].join(format!("{topic}-{partition}"))
    }

    /// Brings the hosted partitions in line with `image`. Storage errors on one partition
    /// are logged and leave that partition out; the rest proceed.
    pub fn apply_image(&self, image: &MetadataImage) {
        let mut wanted: HashMap<TopicPartition, (&TopicImage, ReplicaState)> = HashMap::new();
        for topic in image.topics.values() {
            for p in topic.partitions.values() {
                if p.replicas.contains(&self.node_id) {
                    wanted.insert(
                        (topic.name.clone(), p.partition),
                        (
                            topic,
                            ReplicaState {
                                leader: p.leader,
                                leader_epoch: p.leader_epoch,
                                partition_epoch: p.partition_epoch,
                                replicas: p.replicas.clone(),
                                isr: p.isr.clone(),
                                min_insync_replicas: min_insync_replicas(&self.defaults, topic),
                            },
                        ),
                    );
                }
            }
        }

        // Remove partitions that are gone or belong to an older topic of the same name.
        let removed: Vec<Arc<Partition>> = {
            let mut partitions = self.partitions.write();
            let gone: Vec<TopicPartition> = partitions
                .iter()
                .filter(|(tp, p)| match wanted.get(*tp) {
                    Some((topic, _)) => topic.topic_id != p.topic_id,
                    None => true,
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            gone.iter().filter_map(|tp| partitions.remove(tp)).collect()
        };
        for p in removed {
            info!(topic = %p.topic, partition = p.index, "deleting partition log");
            if let Err(e) = p.delete() {
                warn!(topic = %p.topic, partition = p.index, error = %e, "failed to delete partition log");
            }
        }

        let mut unclaimed = self.unclaimed_dirs.lock().take().unwrap_or_default();
        // One LogConfig per topic, not per partition: this runs on every image.
        let mut configs: HashMap<Uuid, LogConfig> = HashMap::new();
        let mut to_open = Vec::new();
        for (tp, (topic, state)) in &wanted {
            let config = configs
                .entry(topic.topic_id)
                .or_insert_with(|| LogConfig {
                    writeback_interval_bytes: self.writeback_interval_bytes,
                    ..log_config_for(&self.defaults, &topic.configs)
                })
                .clone();
            let existing = self.get(&tp.0, tp.1);
            match existing {
                Some(p) => {
                    if p.state() != *state {
                        if let Err(e) = p.set_state(state.clone()) {
                            warn!(topic = %p.topic, partition = p.index, error = %e, "cannot record the new leader epoch");
                        }
                    }
                    p.update_log_config(config);
                }
                None => {
                    let dir = match unclaimed.remove(tp) {
                        Some(dir) if recorded_topic_id(&dir) == Some(topic.topic_id) => dir,
                        Some(stale) => {
                            warn!(dir = %stale.display(), "removing a partition directory of an older topic with the same name");
                            if let Err(e) = std::fs::remove_dir_all(&stale) {
                                warn!(dir = %stale.display(), error = %e, "cannot remove stale partition directory");
                            }
                            self.choose_dir(&tp.0, tp.1)
                        }
                        None => self.choose_dir(&tp.0, tp.1),
                    };
                    to_open.push((dir, topic.topic_id, tp, state.clone(), config));
                }
            }
        }
        self.open_partitions(to_open);
        // Directories on disk that the image does not assign here are strays from topics
        // deleted while this broker was down.
        for (tp, dir) in unclaimed {
            warn!(topic = %tp.0, partition = tp.1, dir = %dir.display(), "removing stray partition directory not in the metadata");
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove stray partition directory");
            }
        }
        *self.unclaimed_dirs.lock() = Some(HashMap::new());
        self.applied.send_replace(image.offset);
    }

    /// Opens new partition logs, creating their files.
    fn open_partitions(&self, to_open: Vec<(PathBuf, Uuid, &TopicPartition, ReplicaState, LogConfig)>) {
        let open = |(dir, topic_id, tp, state, config): (PathBuf, Uuid, &TopicPartition, ReplicaState, LogConfig)| {
            match Partition::open(dir, &tp.0, topic_id, tp.1, self.node_id, config, state) {
                Ok(p) => {
                    self.partitions.write().insert(tp.clone(), Arc::new(p));
                }
                Err(e) => {
                    warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot open partition log");
                }
            }
        };
        for_each_on_io_threads(to_open, open);
    }

    /// Time and size retention plus time-based rolling, for every partition.
    pub fn enforce_retention(&self, now_ms: i64) {
        for p in self.all() {
            let Ok(log) = p.log() else { continue };
            if let Err(e) = log.maybe_roll(now_ms) {
                warn!(topic = %p.topic, partition = p.index, error = %e, "segment roll failed");
            }
            // Never delete past the high watermark (data consumers have not been allowed to see).
            match log.apply_retention_up_to(now_ms, p.high_watermark()) {
                Ok(0) => {}
                Ok(n) => {
                    info!(topic = %p.topic, partition = p.index, segments = n, log_start_offset = log.log_start_offset(), "retention deleted segments");
                    drop(log);
                    // Followers learn the new log start from their next answer.
                    p.notify_listeners();
                }
                Err(e) => warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed"),
            }
        }
    }

    /// One log-cleaner round: a compaction pass over every hosted partition whose
    /// `cleanup.policy` includes `compact`, one at a time, each bounded by its high
    /// watermark (storage also stops at the active segment). Blocking: run it on a
    /// blocking thread.
    pub fn clean_compacted_logs(&self, now_ms: i64) {
        for p in self.all() {
            let Ok(log) = p.log() else { continue };
            if !log.config().compact {
                continue;
            }
            let _span = info_span!("log_cleaner", topic = %p.topic, partition = p.index).entered();
            match log.compact(now_ms, p.high_watermark()) {
                Ok(None) => {}
                Ok(Some(stats)) => info!(
                    segments = stats.segments,
                    records_kept = stats.records_kept,
                    records_removed = stats.records_removed,
                    tombstones_removed = stats.tombstones_removed,
                    bytes_before = stats.bytes_before,
                    bytes_after = stats.bytes_after,
                    dirty_ratio = stats.dirty_ratio,
                    cleaned_up_to = stats.cleaned_up_to,
                    abandoned = stats.abandoned,
                    "compacted log"
                ),
                Err(e) => warn!(error = %e, "log compaction failed"),
            }
        }
    }

    /// The log cleaner: every `backoff`, [`ReplicaManager::clean_compacted_logs`] on a
    /// blocking thread (one round at a time), until `stop` turns true.
    pub async fn run_log_cleaner(self: Arc<Self>, backoff: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(backoff.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = crate::server::until_shutdown(&mut stop) => break,
                _ = ticker.tick() => {
                    let replicas = self.clone();
                    let round = tokio::task::spawn_blocking(move || replicas.clean_compacted_logs(wall_clock_ms()));
                    if let Err(e) = round.await {
                        warn!(error = %e, "log cleaner round panicked");
                    }
                }
            }
        }
    }

    /// One check of the syncer: starts a background sync
    /// ([`Partition::request_sync`]) of every partition whose oldest unsynced append is
    /// at least `flush.ms` old, and in the durable mode (`flush.messages=1`) of every
    /// partition that has held unsynced data for `period_ms` (the check period): a
    /// leader elected with an unsynced tail, or one whose sync failed, which no produce
    /// may come to sync. Returns the next check period: the smallest `flush.ms`
    /// hosted, within 10 ms and 1 s. Partitions with neither setting cost two atomic
    /// loads.
    pub fn sync_overdue_logs(&self, now_ms: i64, period_ms: i64) -> Duration {
        let mut next = SYNC_CHECK_MAX;
        for p in self.all() {
            let (messages, ms) = (p.flush_messages(), p.flush_ms());
            if ms != NO_FLUSH {
                next = next.min(Duration::from_millis(ms.max(0) as u64));
            }
            let limit = if messages == 1 { ms.min(period_ms) } else { ms };
            if limit == NO_FLUSH {
                continue;
            }
            let overdue = p
                .log()
                .ok()
                .and_then(|log| log.unsynced_since_ms())
                .is_some_and(|since| now_ms.saturating_sub(since) >= limit);
            if overdue {
                p.request_sync();
            }
        }
        next.clamp(SYNC_CHECK_MIN, SYNC_CHECK_MAX)
    }

    /// The `flush.ms` syncer: [`ReplicaManager::sync_overdue_logs`] every 10 ms to 1 s
    /// (the smallest `flush.ms` hosted, so a log is synced within about `flush.ms`
    /// plus one period, and a newly lowered `flush.ms` is seen within 1 s), until
    /// `stop` turns true. The syncs themselves run on blocking threads.
    pub async fn run_log_syncer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut period = SYNC_CHECK_MAX;
        loop {
            tokio::select! {
                _ = crate::server::until_shutdown(&mut stop) => break,
                _ = tokio::time::sleep(period) => {
                    period = self.sync_overdue_logs(wall_clock_ms(), period.as_millis() as i64);
                }
            }
        }
    }

    /// Flushes every partition and checkpoints recovery points and high watermarks.
    pub fn flush_all(&self) {
        for p in self.all() {
            if let Err(e) = p.flush() {
                warn!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
            }
        }
    }

    /// Closes every partition cleanly (shutdown).
    pub fn close_all(&self) {
        let all: Vec<_> = self.partitions.write().drain().map(|(_, p)| p).collect();
        for_each_on_io_threads(all, |p| {
            if let Err(e) = p.close() {
                warn!(topic = %p.topic, partition = p.index, error = %e, "close failed");
            }
        });
    }

    /// Topic names this broker hosts at least one partition of.
    pub fn hosted_topics(&self) -> HashSet<String> {
        self.partitions.read().keys().map(|(t, _)| t.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names_parse_like_kafka() {
        assert_eq!(parse_partition_dir_name("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(parse_partition_dir_name("my-topic-10"), Some(("my-topic".into(), 10)));
        assert_eq!(parse_partition_dir_name("nodash"), None);
        assert_eq!(parse_partition_dir_name("x-y"), None);
        assert_eq!(parse_partition_dir_name(METADATA_DIR_NAME), None);
    }

    #[test]
    fn topic_overrides_reach_the_log_config() {
        let defaults = TopicDefaults::from_broker(|_| None);
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "-1".to_string());
        overrides.insert("segment.bytes".to_string(), "4096".to_string());
        overrides.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        let c = log_config_for(&defaults, &overrides);
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 4096);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.max_message_bytes, 1048588);
        assert!(c.delete_retention);
        assert!(!c.compact);
        assert_eq!((c.flush_messages, c.flush_ms), (NO_FLUSH, NO_FLUSH), "Kafka's defaults: never");
    }

    #[test]
    fn flush_settings_reach_the_log_config() {
        let defaults = TopicDefaults::from_broker(|k| (k == "log.flush.interval.ms").then(|| "1000".to_string()));
        let mut overrides = BTreeMap::new();
        overrides.insert("flush.messages".to_string(), "1".to_string());
        let c = log_config_for(&defaults, &overrides);
        assert_eq!((c.flush_messages, c.flush_ms), (1, 1000));
        overrides.insert("flush.ms".to_string(), "0".to_string());
        assert_eq!(log_config_for(&defaults, &overrides).flush_ms, 0);
        c.validate().unwrap();
    }

    /// A manager hosting, as sole replica and leader, one partition per `(topic, configs)`.
    fn manager_with(dir: &Path, topics: &[(&str, &[(&str, &str)])]) -> ReplicaManager {
        let manager = ReplicaManager::new(1, vec![dir.to_path_buf()], TopicDefaults::from_broker(|_| None)).unwrap();
        let mut image = MetadataImage { offset: 1, ..MetadataImage::default() };
        for (name, configs) in topics {
            let topic_id = Uuid::new_v4();
            let partition = rafka_metadata::PartitionImage {
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 1,
                partition_epoch: 1,
            };
            image.topics.insert(topic_id, TopicImage {
                name: name.to_string(),
                topic_id,
                partitions: BTreeMap::from([(0, partition)]),
                configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            });
            image.topic_ids_by_name.insert(name.to_string(), topic_id);
        }
        manager.apply_image(&image);
        manager
    }

    fn append_one(manager: &ReplicaManager, topic: &str) -> i64 {
        let batch = rafka_storage::batch::test_support::simple_batch(1, 1_000);
        let p = manager.get(topic, 0).unwrap();
        p.append_as_leader(bytes::BytesMut::from(&batch[..]), 1, 1_000).unwrap().last_offset + 1
    }

    async fn synced_end_reaches(manager: &ReplicaManager, topic: &str, end: i64) {
        let p = manager.get(topic, 0).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.log().unwrap().synced_end_offset() < end {
            assert!(std::time::Instant::now() < deadline, "{topic} was not synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_syncer_syncs_logs_older_than_flush_ms_and_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager_with(dir.path(), &[("timed", &[("flush.ms", "200")]), ("plain", &[])]);
        let (timed, plain_end) = (append_one(&manager, "timed"), append_one(&manager, "plain"));
        let since = manager.get("timed", 0).unwrap().log().unwrap().unsynced_since_ms().unwrap();
        assert_eq!(manager.sync_overdue_logs(since + 100, 1000), Duration::from_millis(200), "next check after flush.ms");
        assert_eq!(manager.get("timed", 0).unwrap().log().unwrap().appended_syncs(), 0, "not due yet");
        manager.sync_overdue_logs(since + 200, 200);
        synced_end_reaches(&manager, "timed", timed).await;
        let plain = manager.get("plain", 0).unwrap();
        let log = plain.log().unwrap();
        assert_eq!((log.synced_end_offset(), log.appended_syncs()), (0, 0), "default settings: never synced by the syncer");
        assert_eq!(log.log_end_offset(), plain_end);
    }

    #[tokio::test]
    async fn the_syncer_catches_a_durable_log_left_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager_with(dir.path(), &[("durable", &[("flush.messages", "1")])]);
        // Appended with no produce request to sync it (as a new leader's unsynced tail).
        let end = append_one(&manager, "durable");
        let p = manager.get("durable", 0).unwrap();
        assert_eq!(p.high_watermark(), 0);
        let since = p.log().unwrap().unsynced_since_ms().unwrap();
        assert_eq!(manager.sync_overdue_logs(since + 10, 1000), SYNC_CHECK_MAX);
        assert_eq!(p.log().unwrap().appended_syncs(), 0, "less than a check period old");
        manager.sync_overdue_logs(since + 1000, 1000);
        synced_end_reaches(&manager, "durable", end).await;
        assert_eq!(p.high_watermark(), end);
    }

    #[test]
    fn compaction_settings_reach_the_log_config() {
        let defaults = TopicDefaults::from_broker(|k| (k == "log.cleaner.delete.retention.ms").then(|| "5000".to_string()));
        let mut overrides = BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        let c = log_config_for(&defaults, &overrides);
        assert!(c.compact && !c.delete_retention, "pure compact turns retention deletion off");
        assert_eq!(c.delete_retention_ms, 5000);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.5);
        assert_eq!((c.min_compaction_lag_ms, c.max_compaction_lag_ms), (0, i64::MAX));

        overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        overrides.insert("min.cleanable.dirty.ratio".to_string(), "0.1".to_string());
        overrides.insert("min.compaction.lag.ms".to_string(), "60000".to_string());
        let c = log_config_for(&defaults, &overrides);
        assert!(c.compact && c.delete_retention);
        assert_eq!((c.min_cleanable_dirty_ratio, c.min_compaction_lag_ms), (0.1, 60000));
        c.validate().unwrap();
    }
}

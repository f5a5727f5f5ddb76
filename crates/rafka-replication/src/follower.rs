//! The follower's side of replication: one fetcher task per leader broker.
//!
//! [`Fetchers::reconcile`] runs after every metadata image: each hosted partition led by
//! another broker is assigned to the fetcher of that broker (started on demand, stopped
//! when it has nothing left to fetch). A fetcher keeps one gRPC stream to its leader and
//! sends one request at a time; when its partition set changes it replaces the stream,
//! so a partition whose leader just moved starts fetching at once instead of after the
//! leader's long-poll wait.
//!
//! Each stream is a fetch session ([`FetchSession`]): the first request lists every
//! partition, later ones only those whose position changed since the previous request
//! (the ones an answer touched) and those that leave the session while they rest after
//! an error. So a request costs what changed, not every partition shared with the
//! leader.
//!
//! Handling an answer, per partition: a diverging epoch truncates the log to where it
//! agrees with the leader's (KIP-320); batches are appended unchanged (offsets and
//! epochs as the leader wrote them); the high watermark follows the leader's, and the
//! log start offset too. A broken stream or a failed connection reports the leader to
//! the controller, then the fetcher reconnects with backoff.
//!
//! Flush policy: the leader counts a follower's fetch offset as what the follower
//! holds, so in the durable mode (`flush.messages=1`) a fetcher fsyncs what it
//! appended before the next request reports it: the partitions with unsynced data are
//! synced concurrently (a blocking task each), and awaited, before every request. A
//! partition whose sync fails leaves the session and rests, then is synced again.
//! With `flush.messages=N>1`, N unsynced messages start a background sync.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use rafka_kafka::partition::Partition;
use rafka_kafka::ReplicaManager;
use rafka_metadata::MetadataImage;
use rafka_rpc::replication_service_client::ReplicationServiceClient;
use rafka_rpc::{PartitionData, PartitionFetch, PartitionId, ReplicaFetchRequest};
use rafka_storage::NO_FLUSH;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::{ReplicationSettings, SuspectReporter};

/// How long a partition rests after the leader refused it (stale metadata on one side).
const PARTITION_BACKOFF: Duration = Duration::from_millis(100);
const MIN_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

type PartitionKey = (Uuid, i32);

/// One partition a fetcher replicates.
#[derive(Clone)]
struct Target {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// Not fetched before this instant (after an error answer).
    resume_at: Option<Instant>,
}

/// The partitions one fetcher replicates, shared with the manager.
#[derive(Default)]
struct TargetSet {
    targets: HashMap<PartitionKey, Target>,
    /// Bumped whenever the set changes (the fetcher replaces its stream).
    generation: u64,
}

struct FetcherHandle {
    address: String,
    targets: Arc<Mutex<TargetSet>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Every fetcher of this broker.
pub struct Fetchers {
    settings: ReplicationSettings,
    replicas: Arc<ReplicaManager>,
    suspects: SuspectReporter,
    fetchers: Mutex<HashMap<i32, FetcherHandle>>,
}

impl std::fmt::Debug for Fetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetchers")
            .field("node_id", &self.settings.node_id)
            .finish_non_exhaustive()
    }
}

impl Fetchers {
    pub fn new(
        settings: ReplicationSettings,
        replicas: Arc<ReplicaManager>,
        suspects: SuspectReporter,
    ) -> Fetchers {
        Fetchers {
            settings,
            replicas,
            suspects,
            fetchers: Mutex::new(HashMap::new()),
        }
    }

    /// The inter-broker (gRPC) address of `broker` in `image`.
    fn address_of(&self, image: &MetadataImage, broker: i32) -> Option<String> {
        image
            .brokers
            .get(&broker)?
            .endpoints
            .iter()
            .find(|e| e.listener == self.settings.inter_broker_listener)
            .map(|e| format!("{}:{}", e.host, e.port))
    }

    /// Brings the fetchers in line with the hosted partitions after `image` was applied.
    pub fn reconcile(&self, image: &MetadataImage) {
        let me = self.settings.node_id;
        let mut wanted: HashMap<i32, HashMap<PartitionKey, Target>> = HashMap::new();
        for partition in self.replicas.all() {
            let state = partition.state();
            if state.leader < 0 || state.leader == me || !state.replicas.contains(&me) {
                continue;
            }
            wanted.entry(state.leader).or_default().insert(
                (partition.topic_id, partition.index),
                Target {
                    partition: partition.clone(),
                    leader_epoch: state.leader_epoch,
                    resume_at: None,
                },
            );
        }
        let mut fetchers = self.fetchers.lock();
        // Stop fetchers that have nothing left, or whose leader moved address.
        let stale: Vec<i32> = fetchers
            .iter()
            .filter(|(leader, handle)| {
                !wanted.contains_key(leader)
                    || self.address_of(image, **leader).as_deref() != Some(handle.address.as_str())
            })
            .map(|(leader, _)| *leader)
            .collect();
        for leader in stale {
            if let Some(handle) = fetchers.remove(&leader) {
                debug!(leader, "stopping fetcher");
                handle.task.abort();
            }
        }
        for (leader, targets) in wanted {
            if let Some(handle) = fetchers.get(&leader) {
                let mut set = handle.targets.lock();
                let same = set.targets.len() == targets.len()
                    && targets.iter().all(|(k, t)| {
                        set.targets.get(k).is_some_and(|o| {
                            o.leader_epoch == t.leader_epoch
                                && Arc::ptr_eq(&o.partition, &t.partition)
                        })
                    });
                if !same {
                    // Keep the rest period of partitions that are still there.
                    let mut next = targets;
                    for (k, t) in next.iter_mut() {
                        if let Some(old) = set
                            .targets
                            .get(k)
                            .filter(|o| o.leader_epoch == t.leader_epoch)
                        {
                            t.resume_at = old.resume_at;
                        }
                    }
                    set.targets = next;
                    set.generation += 1;
                    drop(set);
                    handle.changed.notify_one();
                }
                continue;
            }
            let Some(address) = self.address_of(image, leader) else {
                warn!(leader, listener = %self.settings.inter_broker_listener, "leader has no inter-broker endpoint; cannot replicate from it");
                continue;
            };
            info!(leader, %address, partitions = targets.len(), "starting fetcher");
            let targets = Arc::new(Mutex::new(TargetSet {
                targets,
                generation: 1,
            }));
            let changed = Arc::new(Notify::new());
            let fetcher = Fetcher {
                leader,
                address: address.clone(),
                settings: self.settings.clone(),
                targets: targets.clone(),
                changed: changed.clone(),
                suspects: self.suspects.clone(),
            };
            let span = tracing::info_span!("fetcher", leader);
            let task = tokio::spawn(fetcher.run().instrument(span));
            fetchers.insert(
                leader,
                FetcherHandle {
                    address,
                    targets,
                    changed,
                    task,
                },
            );
        }
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_all(&self) {
        for (_, handle) in self.fetchers.lock().drain() {
            handle.task.abort();
        }
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The follower's side of one stream's fetch session: what the leader's session
/// holds, and what may have changed since the last request.
#[derive(Default)]
struct FetchSession {
    /// Whether the first (full) request has been sent on this stream.
    started: bool,
    /// Per partition in the leader's session: the (fetch offset, last fetched epoch)
    /// it holds.
    sent: HashMap<PartitionKey, (i64, i32)>,
    /// Partitions whose position or state may have changed since the last request.
    dirty: HashSet<PartitionKey>,
    /// Partitions out of the session while they rest.
    resting: HashSet<PartitionKey>,
}

struct Fetcher {
    leader: i32,
    address: String,
    settings: ReplicationSettings,
    targets: Arc<Mutex<TargetSet>>,
    changed: Arc<Notify>,
    suspects: SuspectReporter,
}

/// Why a stream ended.
enum StreamEnd {
    /// The partition set changed: open a new stream on the same connection.
    Replaced,
    /// The connection or stream failed.
    Broken(String),
}

impl Fetcher {
    async fn run(self) {
        let mut backoff = MIN_RECONNECT_BACKOFF;
        loop {
            let channel = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    self.suspects
                        .report(self.leader, "cannot connect to it for replication");
                    debug!(error = %e, "cannot connect to leader");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                    continue;
                }
            };
            let mut client = ReplicationServiceClient::new(channel).max_decoding_message_size(
                self.settings
                    .fetch_response_max_bytes
                    .saturating_mul(2)
                    .max(64 << 20),
            );
            loop {
                match self.stream(&mut client).await {
                    StreamEnd::Replaced => {
                        backoff = MIN_RECONNECT_BACKOFF;
                        continue;
                    }
                    StreamEnd::Broken(reason) => {
                        info!(%reason, "replication stream to the leader broke");
                        self.suspects
                            .report(self.leader, "its replication stream broke");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<Channel, String> {
        Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| e.to_string())
    }

    /// Builds the next request of `session`, or `None` when its session would hold
    /// no partition (returning the earliest time a resting one may rejoin).
    ///
    /// The first request lists every partition that may be fetched now; later ones
    /// list only the partitions in `session.dirty` whose position (log end offset,
    /// epoch of the last batch) differs from what the leader holds, and name the ones
    /// that leave the session. A partition leaves while it rests (after an error) and,
    /// in the durable mode, while its data is not all fsynced: the leader must not
    /// count what is not on disk.
    fn next_request(&self, session: &mut FetchSession) -> Result<ReplicaFetchRequest, Option<Instant>> {
        let set = self.targets.lock();
        let now = Instant::now();
        let keys: Vec<PartitionKey> = if session.started {
            let resumed = session
                .resting
                .iter()
                .filter(|k| set.targets.get(k).is_none_or(|t| t.resume_at.is_none_or(|at| at <= now)))
                .copied()
                .collect::<Vec<_>>();
            session.dirty.drain().chain(resumed).collect()
        } else {
            session.dirty.clear();
            set.targets.keys().copied().collect()
        };
        let mut partitions = Vec::new();
        let mut removed = Vec::new();
        for key in keys {
            session.resting.remove(&key);
            let position = set.targets.get(&key).and_then(|target| {
                if target.resume_at.is_some_and(|at| at > now) {
                    return None;
                }
                let log = target.partition.log().ok()?;
                if target.partition.is_durable() && log.synced_end_offset() < log.log_end_offset() {
                    return None;
                }
                Some((log.log_end_offset(), log.latest_epoch().unwrap_or(-1), target))
            });
            match position {
                Some((fetch_offset, last_fetched_epoch, target)) => {
                    if session.sent.get(&key) == Some(&(fetch_offset, last_fetched_epoch)) {
                        continue;
                    }
                    session.sent.insert(key, (fetch_offset, last_fetched_epoch));
                    partitions.push(PartitionFetch {
                        topic_id: key.0.as_bytes().to_vec(),
                        partition: key.1,
                        current_leader_epoch: target.leader_epoch,
                        fetch_offset,
                        last_fetched_epoch,
                    });
                }
                None => {
                    if set.targets.contains_key(&key) {
                        session.resting.insert(key);
                    }
                    if session.sent.remove(&key).is_some() {
                        removed.push(PartitionId {
                            topic_id: key.0.as_bytes().to_vec(),
                            partition: key.1,
                        });
                    }
                }
            }
        }
        if session.sent.is_empty() {
            // Nothing to fetch until a resting partition may rejoin.
            let earliest = session
                .resting
                .iter()
                .map(|k| set.targets.get(k).and_then(|t| t.resume_at).unwrap_or(now + PARTITION_BACKOFF))
                .min();
            // The leader's session forgets what we removed only with the next request;
            // a new stream starts from scratch anyway.
            session.started = false;
            session.dirty.extend(session.resting.iter().copied());
            return Err(earliest);
        }
        let incremental = session.started;
        session.started = true;
        Ok(ReplicaFetchRequest {
            replica_id: self.settings.node_id,
            max_wait_ms: self.settings.fetch_max_wait.as_millis() as i32,
            max_bytes: self
                .settings
                .fetch_response_max_bytes
                .min(i32::MAX as usize) as i32,
            partitions,
            incremental,
            removed,
        })
    }

    async fn stream(&self, client: &mut ReplicationServiceClient<Channel>) -> StreamEnd {
        let (requests, outbound) = mpsc::channel::<ReplicaFetchRequest>(1);
        let generation_at_start = self.targets.lock().generation;
        let call = client.fetch(ReceiverStream::new(outbound));
        let mut session = FetchSession::default();
        // The first request must be on its way before the call can complete.
        let Some(first) = self.wait_for_request(&mut session).await else {
            return StreamEnd::Replaced;
        };
        if requests.send(first).await.is_err() {
            return StreamEnd::Broken("request stream closed".into());
        }
        let mut responses = match call.await {
            Ok(r) => r.into_inner(),
            Err(status) => return StreamEnd::Broken(status.to_string()),
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.targets.lock().generation != generation_at_start {
                return StreamEnd::Replaced;
            }
            tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        for data in response.partitions {
                            if let Some(key) = self.apply(data) {
                                session.dirty.insert(key);
                            }
                        }
                    }
                    Ok(None) => return StreamEnd::Broken("the leader closed the stream".into()),
                    Err(status) => return StreamEnd::Broken(status.to_string()),
                },
                _ = &mut changed => return StreamEnd::Replaced,
            }
            let Some(next) = self.wait_for_request(&mut session).await else {
                return StreamEnd::Replaced;
            };
            if requests.send(next).await.is_err() {
                return StreamEnd::Broken("request stream closed".into());
            }
        }
    }

    /// The next request of `session`; waits while every partition rests. `None` when
    /// the partition set changed meanwhile.
    async fn wait_for_request(&self, session: &mut FetchSession) -> Option<ReplicaFetchRequest> {
        let generation = self.targets.lock().generation;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.targets.lock().generation != generation {
                return None;
            }
            self.sync_before_request(session).await;
            match self.next_request(session) {
                Ok(request) => return Some(request),
                Err(earliest) => {
                    let until = earliest.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                    tokio::select! {
                        _ = &mut changed => return None,
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }

    /// The flush policy's part before a request, for the partitions the request may
    /// list (all of them before a session's first request, else the ones that changed
    /// or may rejoin): in the durable mode fsyncs every one holding unsynced data,
    /// concurrently, and waits; a failure (logged by the partition) makes
    /// that partition rest. With `flush.messages=N>1`, starts a background sync of
    /// partitions with N unsynced messages. Costs one atomic load per partition under
    /// the default policy.
    async fn sync_before_request(&self, session: &FetchSession) {
        let now = Instant::now();
        let flushing: Vec<(PartitionKey, Arc<Partition>, i64)> = {
            let set = self.targets.lock();
            let eligible = |t: &Target| t.resume_at.is_none_or(|at| at <= now);
            let pick = |(key, t): (&PartitionKey, &Target)| {
                let policy = t.partition.flush_messages();
                (policy != NO_FLUSH && eligible(t)).then(|| (*key, t.partition.clone(), policy))
            };
            if session.started {
                session
                    .dirty
                    .iter()
                    .chain(session.resting.iter())
                    .filter_map(|k| set.targets.get_key_value(k))
                    .filter_map(pick)
                    .collect()
            } else {
                set.targets.iter().filter_map(pick).collect()
            }
        };
        let mut due = Vec::new();
        for (key, partition, policy) in flushing {
            let unsynced = partition.unsynced_messages();
            if policy == 1 && unsynced > 0 {
                due.push((key, partition));
            } else if policy > 1 && unsynced >= policy {
                partition.request_sync();
            }
        }
        if due.is_empty() {
            return;
        }
        // One blocking task per partition: concurrent fdatasyncs share the
        // filesystem's journal commits, where one after another each pays its own.
        let syncs = due.into_iter().map(|(key, partition)| {
            tokio::task::spawn_blocking(move || {
                let ok = partition.sync_log().is_ok();
                // The durable end moved: it may lift our high watermark's bound.
                partition.refresh_follower_high_watermark();
                (key, ok)
            })
        });
        for synced in futures::future::join_all(syncs).await {
            match synced {
                Ok((key, ok)) => {
                    if !ok {
                        self.rest(key);
                    }
                }
                Err(e) => warn!(error = %e, "syncing replicated data panicked"),
            }
        }
    }

    fn rest(&self, key: PartitionKey) {
        if let Some(t) = self.targets.lock().targets.get_mut(&key) {
            t.resume_at = Some(Instant::now() + PARTITION_BACKOFF);
        }
    }

    /// Applies one partition's answer; returns the partition's key when it is one of
    /// ours (its position may have changed, or it now rests).
    fn apply(&self, data: PartitionData) -> Option<PartitionKey> {
        let topic_id = crate::leader::topic_id_from_bytes(&data.topic_id)?;
        let key = (topic_id, data.partition);
        let target = self.targets.lock().targets.get(&key).cloned()?;
        self.apply_to(&target, key, data);
        Some(key)
    }

    fn apply_to(&self, target: &Target, key: PartitionKey, data: PartitionData) {
        let partition = &target.partition;
        let span =
            tracing::debug_span!("replica", topic = %partition.topic, partition = partition.index);
        let _entered = span.enter();
        if data.error_code != 0 {
            let code = i16::try_from(data.error_code).unwrap_or(-1);
            if code == ResponseError::OffsetOutOfRange.code() {
                self.handle_out_of_range(partition, target.leader_epoch, &data);
            } else {
                debug!(code, "leader refused the fetch; waiting for metadata");
            }
            self.rest(key);
            return;
        }
        if let Some(diverging) = data.diverging_epoch {
            let ours = partition
                .log()
                .map(|log| log.end_offset_for_epoch(diverging.epoch));
            let Ok((our_epoch, our_end)) = ours else {
                return;
            };
            let target_offset = if our_epoch < 0 {
                diverging.end_offset
            } else {
                our_end.min(diverging.end_offset)
            };
            info!(
                epoch = diverging.epoch,
                leader_end_offset = diverging.end_offset,
                truncate_to = target_offset,
                "log diverges from the leader's; truncating"
            );
            if let Err(e) = partition.truncate_as_follower(target_offset.max(0), self.leader, target.leader_epoch) {
                warn!(error = %e.message.unwrap_or_default(), "truncation failed");
                self.rest(key);
            }
            return;
        }
        if !data.records.is_empty() {
            if let Err(e) = partition.append_as_follower(data.records, self.leader, target.leader_epoch) {
                // Stale metadata on one side, or batches that do not follow our log end:
                // rest, then rejoin the session from our actual position.
                debug!(code = e.code(), error = ?e.message, "could not append replicated batches");
                self.rest(key);
                return;
            }
        }
        if let Ok(log) = partition.log() {
            if data.log_start_offset > log.log_start_offset()
                && data.log_start_offset <= log.log_end_offset()
            {
                if let Err(e) = log.advance_log_start_offset(data.log_start_offset) {
                    warn!(error = %e, "cannot advance the log start offset");
                }
            }
        }
        partition.update_follower_high_watermark(data.high_watermark);
    }

    /// Our fetch offset is outside the leader's log: below its start (retention moved
    /// on) restart our log there; above its end truncate to its high watermark.
    fn handle_out_of_range(&self, partition: &Partition, leader_epoch: i32, data: &PartitionData) {
        let Ok(ours) = partition.log().map(|log| log.log_end_offset()) else {
            return;
        };
        if data.log_start_offset >= 0 && ours < data.log_start_offset {
            info!(
                our_end = ours,
                leader_start = data.log_start_offset,
                "behind the leader's log start; restarting the log there"
            );
            let restarted = partition.restart_as_follower_at(data.log_start_offset, self.leader, leader_epoch);
            if let Err(e) = restarted {
                warn!(error = ?e.message, "cannot restart the log at the leader's log start");
            }
        } else if data.high_watermark >= 0 && ours > data.high_watermark {
            info!(
                our_end = ours,
                leader_high_watermark = data.high_watermark,
                "ahead of the leader's log; truncating to its high watermark"
            );
            if let Err(e) = partition.truncate_as_follower(data.high_watermark, self.leader, leader_epoch) {
                warn!(error = ?e.message, "truncation failed");
            }
        }
    }
}

//! The leader's side of replication: the gRPC `ReplicationService`.
//!
//! Each follower stream is a fetch session served by one task, which keeps every
//! partition of the session with the follower's position. A request lists only the
//! partitions whose position changed; each of those is checked (this broker leads it,
//! the follower's leader epoch is current, the follower's log does not diverge from
//! ours) and the follower's fetch recorded (which may advance the high watermark or
//! propose an ISR expansion). Unchanged partitions are checked and recorded again
//! every `refresh` (a fraction of `replica.lag.time.max.ms`), so a caught-up follower
//! stays caught up. An answer goes out when a partition has batches past the
//! follower's position, an error or a divergence, and lists those plus the partitions
//! whose high watermark or log start moved since the last answer. Until then the
//! request is held, until a partition of the session changes (partitions tell their
//! sessions directly, see [`ChangeListener`]) or `max_wait_ms` passes. The work per
//! round trip thus follows what changed, not how many partitions the session holds.
//!
//! A follower whose stream ends and that has not opened a new one shortly after is
//! reported to the controller as possibly dead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use rafka_kafka::errors::KafkaError;
use rafka_kafka::partition::{ChangeListener, FollowerPosition, Partition};
use rafka_kafka::ReplicaManager;
use rafka_metadata::{MetadataImage, MetadataLog};
use rafka_rpc::replication_service_server::ReplicationService;
use rafka_rpc::{
    DivergingEpoch, PartitionData, PartitionFetch, ReplicaFetchRequest, ReplicaFetchResponse,
};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, Instrument};
use uuid::Uuid;

use crate::isr::IsrChanges;
use crate::SuspectReporter;

/// How long after a follower's stream ends without a new one before it is reported.
const FOLLOWER_GONE_GRACE: Duration = Duration::from_millis(300);

/// Serves follower fetch streams for the partitions this broker leads.
pub struct LeaderService {
    replicas: Arc<ReplicaManager>,
    metadata: Arc<dyn MetadataLog>,
    isr: IsrChanges,
    suspects: SuspectReporter,
    /// Open sessions per follower id.
    sessions: Arc<Mutex<HashMap<i32, usize>>>,
    /// How often a session checks an unchanged partition again.
    refresh: Duration,
    /// Sessions end when this turns true or its sender is dropped (the node stops).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl LeaderService {
    pub fn new(
        replicas: Arc<ReplicaManager>,
        metadata: Arc<dyn MetadataLog>,
        isr: IsrChanges,
        suspects: SuspectReporter,
        refresh: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> LeaderService {
        LeaderService {
            replicas,
            metadata,
            isr,
            suspects,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            refresh,
            stop,
        }
    }
}

/// Decodes a 16-byte topic id.
pub fn topic_id_from_bytes(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}

fn error_data(request: &PartitionFetch, error: &KafkaError) -> PartitionData {
    PartitionData {
        topic_id: request.topic_id.clone(),
        partition: request.partition,
        error_code: i32::from(error.code()),
        high_watermark: -1,
        log_start_offset: -1,
        diverging_epoch: None,
        records: Bytes::new(),
    }
}

/// What checking one partition of the session gives, before any data is read.
enum Checked {
    /// An answer to send as it is (an error, or a divergence to truncate).
    Answer(PartitionData),
    /// The follower is consistent with our log.
    Ready(Arc<Partition>),
}

type PartitionKey = (Uuid, i32);

/// One partition of a follower's session.
struct SessionPartition {
    /// The follower's position, from the request that last listed the partition.
    fetch: PartitionFetch,
    /// Our partition, while the last check found the follower consistent with it.
    partition: Option<Arc<Partition>>,
    /// An error or divergence answer not yet sent.
    pending: Option<PartitionData>,
    /// When the partition was last checked and the follower's fetch recorded.
    checked_at: Instant,
    /// The high watermark and log start offset last sent on this stream (-1: none yet).
    sent_high_watermark: i64,
    sent_log_start: i64,
}

/// Which partitions of a session changed (their log grew or high watermark moved)
/// since the session last looked, and the wake-up for the session task.
#[derive(Default)]
struct ChangeInbox {
    changed: Mutex<HashSet<PartitionKey>>,
    wake: Notify,
}

impl ChangeListener for ChangeInbox {
    fn partition_changed(&self, topic_id: Uuid, partition: i32) {
        self.changed.lock().insert((topic_id, partition));
        self.wake.notify_one();
    }
}

struct Session {
    replicas: Arc<ReplicaManager>,
    metadata: Arc<dyn MetadataLog>,
    isr: IsrChanges,
    replica_id: i32,
    /// How often an unchanged partition is checked again and its fetch recorded.
    refresh: Duration,
    partitions: HashMap<PartitionKey, SessionPartition>,
    /// Partitions that may have something new for the follower.
    candidates: HashSet<PartitionKey>,
    /// Partitions whose only news is a moved high watermark or log start.
    piggyback: HashSet<PartitionKey>,
    /// (checked_at, key) in check order, to find partitions due for a refresh.
    refresh_queue: VecDeque<(Instant, PartitionKey)>,
    inbox: Arc<ChangeInbox>,
    /// Rotates the order partitions are answered in, so none is starved by the size bound.
    rotation: usize,
}

impl Session {
    fn new(
        replicas: Arc<ReplicaManager>,
        metadata: Arc<dyn MetadataLog>,
        isr: IsrChanges,
        replica_id: i32,
        refresh: Duration,
    ) -> Session {
        Session {
            replicas,
            metadata,
            isr,
            replica_id,
            refresh,
            partitions: HashMap::new(),
            candidates: HashSet::new(),
            piggyback: HashSet::new(),
            refresh_queue: VecDeque::new(),
            inbox: Arc::new(ChangeInbox::default()),
            rotation: 0,
        }
    }

    /// Takes in one request: updates the session's partitions, checks the ones that
    /// changed and those due for a refresh (recording the follower's fetch, which may
    /// move the high watermark or propose an ISR expansion).
    fn update(&mut self, request: &ReplicaFetchRequest) {
        if !request.incremental {
            self.partitions.clear();
            self.candidates.clear();
            self.piggyback.clear();
            self.refresh_queue.clear();
        }
        for removed in &request.removed {
            if let Some(topic_id) = topic_id_from_bytes(&removed.topic_id) {
                let key = (topic_id, removed.partition);
                self.partitions.remove(&key);
                self.candidates.remove(&key);
                self.piggyback.remove(&key);
            }
        }
        let image = self.metadata.image();
        let now = Instant::now();
        let now_ms = rafka_kafka::handlers::now_ms();
        for fetch in &request.partitions {
            let Some(topic_id) = topic_id_from_bytes(&fetch.topic_id) else {
                continue;
            };
            let key = (topic_id, fetch.partition);
            let entry = self.partitions.entry(key).or_insert_with(|| SessionPartition {
                fetch: fetch.clone(),
                partition: None,
                pending: None,
                checked_at: now,
                sent_high_watermark: -1,
                sent_log_start: -1,
            });
            entry.fetch = fetch.clone();
            self.check(&image, key, now, now_ms);
        }
        while let Some(&(at, key)) = self.refresh_queue.front() {
            if at + self.refresh > now {
                break;
            }
            self.refresh_queue.pop_front();
            if self.partitions.get(&key).is_some_and(|p| p.checked_at == at) {
                self.check(&image, key, now, now_ms);
            }
        }
    }

    /// Checks one partition of the session and makes it a candidate for the answer.
    fn check(&mut self, image: &MetadataImage, key: PartitionKey, now: Instant, now_ms: i64) {
        let Some(entry) = self.partitions.get_mut(&key) else {
            return;
        };
        let checked = check_partition(&self.replicas, self.replica_id, image, &entry.fetch);
        match checked {
            Checked::Answer(data) => {
                entry.partition = None;
                entry.pending = Some(data);
            }
            Checked::Ready(partition) => {
                if let Some(proposal) = partition.record_follower_fetch(
                    self.replica_id,
                    entry.fetch.fetch_offset,
                    now_ms,
                ) {
                    self.isr.submit(partition.clone(), proposal);
                }
                let is_new = !entry
                    .partition
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(p, &partition));
                if is_new {
                    let inbox: Arc<dyn ChangeListener> = self.inbox.clone();
                    partition.add_change_listener(Arc::downgrade(&inbox));
                }
                entry.partition = Some(partition);
                entry.pending = None;
            }
        }
        entry.checked_at = now;
        self.refresh_queue.push_back((now, key));
        self.candidates.insert(key);
    }

    /// What a candidate partition has for the follower, with where its log stood
    /// when it was looked at.
    fn news(&self, key: &PartitionKey) -> News {
        let Some(entry) = self.partitions.get(key) else {
            return News::Nothing;
        };
        if entry.pending.is_some() {
            return News::Answer(None);
        }
        let Some(partition) = &entry.partition else {
            return News::Nothing;
        };
        let Ok(seen) = LogPosition::of(partition) else {
            // The log is gone: the answer carries the error.
            return News::Answer(None);
        };
        if entry.fetch.fetch_offset < seen.log_end {
            News::Answer(Some(seen))
        } else if seen.high_watermark != entry.sent_high_watermark || seen.log_start != entry.sent_log_start {
            News::Piggyback(seen)
        } else {
            News::Nothing
        }
    }

    /// Builds the answer, or `None` when no partition has records, an error or a
    /// divergence for the follower (and `must_answer` is false). High watermark and
    /// log start moves alone do not make an answer (as in Kafka, where they do not
    /// complete a delayed follower fetch): they ride along with the next one, at the
    /// latest when `max_wait_ms` expires. Answering them at once would double the
    /// round trips under load, for a value the follower needs only once it leads.
    fn answer(&mut self, max_bytes: i32, must_answer: bool) -> Option<ReplicaFetchResponse> {
        self.candidates.extend(self.inbox.changed.lock().drain());
        // Each key once, with the position `news` just read (none for the moves
        // carried over from earlier calls, which are read again below).
        let mut looked_at: HashMap<PartitionKey, Option<LogPosition>> = HashMap::new();
        let mut must_send = false;
        for key in std::mem::take(&mut self.candidates) {
            match self.news(&key) {
                News::Answer(seen) => {
                    must_send = true;
                    looked_at.insert(key, seen);
                }
                News::Piggyback(seen) => {
                    looked_at.insert(key, Some(seen));
                }
                News::Nothing => {}
            }
        }
        if !must_send && !must_answer {
            // Only moves: remember them for the next answer.
            self.piggyback.extend(looked_at.into_keys());
            return None;
        }
        for key in self.piggyback.drain() {
            looked_at.entry(key).or_insert(None);
        }
        let mut keys: Vec<(PartitionKey, Option<LogPosition>)> = looked_at.into_iter().collect();
        keys.sort_unstable_by_key(|(key, _)| *key);
        if !keys.is_empty() {
            let n = keys.len();
            keys.rotate_left(self.rotation % n);
            self.rotation = self.rotation.wrapping_add(1);
        }
        let mut budget = max_bytes.max(1) as usize;
        let mut first_data = true;
        let mut out = Vec::with_capacity(keys.len());
        for (key, seen) in keys {
            let Some(entry) = self.partitions.get_mut(&key) else {
                continue;
            };
            if let Some(data) = entry.pending.take() {
                out.push(data);
                continue;
            }
            let Some(partition) = entry.partition.clone() else {
                continue;
            };
            let seen = match seen.map_or_else(|| LogPosition::of(&partition), Ok) {
                Ok(seen) => seen,
                Err(e) => {
                    entry.partition = None;
                    out.push(error_data(&entry.fetch, &e));
                    continue;
                }
            };
            let fetch = &entry.fetch;
            let has_data = fetch.fetch_offset < seen.log_end;
            if !has_data
                && seen.high_watermark == entry.sent_high_watermark
                && seen.log_start == entry.sent_log_start
            {
                continue;
            }
            let mut data = PartitionData {
                topic_id: fetch.topic_id.clone(),
                partition: fetch.partition,
                error_code: 0,
                high_watermark: seen.high_watermark,
                log_start_offset: seen.log_start,
                diverging_epoch: None,
                records: Bytes::new(),
            };
            if has_data {
                if budget == 0 {
                    // Over the size bound: its records go in a later answer.
                    self.candidates.insert(key);
                } else {
                    let read = partition.log().and_then(|log| {
                        log.read(fetch.fetch_offset, budget, i64::MAX, first_data)
                            .map_err(KafkaError::from)
                    });
                    match read {
                        Ok(read) => {
                            budget = budget.saturating_sub(read.records.len());
                            first_data &= read.records.is_empty();
                            data.records = read.records;
                        }
                        Err(e) => {
                            entry.partition = None;
                            out.push(error_data(fetch, &e));
                            continue;
                        }
                    }
                }
            }
            entry.sent_high_watermark = seen.high_watermark;
            entry.sent_log_start = seen.log_start;
            out.push(data);
        }
        Some(ReplicaFetchResponse { partitions: out })
    }
}

/// A partition's log start, log end and high watermark, read together.
#[derive(Debug, Clone, Copy)]
struct LogPosition {
    log_start: i64,
    log_end: i64,
    high_watermark: i64,
}

impl LogPosition {
    fn of(partition: &Partition) -> Result<LogPosition, KafkaError> {
        let (log_start, log_end) = partition.log().map(|l| (l.log_start_offset(), l.log_end_offset()))?;
        Ok(LogPosition { log_start, log_end, high_watermark: partition.high_watermark() })
    }
}

/// Whether a partition makes an answer, rides along with one, or has nothing; with
/// the position that was read to decide (none for an error or divergence to send).
enum News {
    Answer(Option<LogPosition>),
    Piggyback(LogPosition),
    Nothing,
}

/// Checks one partition of a follower's session: this broker leads it in the epoch
/// the follower knows, the follower is one of its replicas, and the follower's log
/// agrees with ours (KIP-320) and its position is inside our log.
fn check_partition(
    replicas: &ReplicaManager,
    replica_id: i32,
    image: &MetadataImage,
    fetch: &PartitionFetch,
) -> Checked {
    let fail = |e: KafkaError| Checked::Answer(error_data(fetch, &e));
    let Some(topic) = topic_id_from_bytes(&fetch.topic_id).and_then(|id| image.topic_by_id(&id))
    else {
        return fail(ResponseError::UnknownTopicOrPartition.into());
    };
    let Some(partition) = replicas.get(&topic.name, fetch.partition) else {
        return fail(ResponseError::NotLeaderOrFollower.into());
    };
    if !partition.is_leader() {
        return fail(ResponseError::NotLeaderOrFollower.into());
    }
    if let Err(e) = partition.check_leader_epoch(fetch.current_leader_epoch) {
        return fail(e);
    }
    if !partition.state().replicas.contains(&replica_id) {
        return fail(KafkaError::with_message(
            ResponseError::NotLeaderOrFollower,
            format!("broker {replica_id} is not a replica of this partition"),
        ));
    }
    let (log_start, log_end) = match partition.log() {
        Ok(log) => (log.log_start_offset(), log.log_end_offset()),
        Err(e) => return fail(e),
    };
    let data = |error_code: i16| PartitionData {
        topic_id: fetch.topic_id.clone(),
        partition: fetch.partition,
        error_code: i32::from(error_code),
        high_watermark: partition.high_watermark(),
        log_start_offset: log_start,
        diverging_epoch: None,
        records: Bytes::new(),
    };
    match partition.check_follower_position(fetch.fetch_offset, fetch.last_fetched_epoch) {
        Err(e) => return fail(e),
        Ok(FollowerPosition::Diverging { epoch, end_offset }) => {
            let mut answer = data(0);
            answer.diverging_epoch = Some(DivergingEpoch { epoch, end_offset });
            return Checked::Answer(answer);
        }
        Ok(FollowerPosition::Consistent) => {}
    }
    if fetch.fetch_offset < log_start || fetch.fetch_offset > log_end {
        return Checked::Answer(data(ResponseError::OffsetOutOfRange.code()));
    }
    Checked::Ready(partition)
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<ReplicaFetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReplicationService for LeaderService {
    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<Streaming<ReplicaFetchRequest>>,
    ) -> Result<Response<FetchStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<ReplicaFetchResponse, Status>>(1);
        let replicas = self.replicas.clone();
        let metadata = self.metadata.clone();
        let isr = self.isr.clone();
        let sessions = self.sessions.clone();
        let suspects = self.suspects.clone();
        let refresh = self.refresh;
        let mut stop = self.stop.clone();
        tokio::spawn(
            async move {
                let session = async move {
                    let Ok(Some(first)) = inbound.message().await else {
                        return;
                    };
                    let replica_id = first.replica_id;
                    *sessions.lock().entry(replica_id).or_default() += 1;
                    let mut session = Session::new(replicas, metadata, isr, replica_id, refresh);
                    let ended_cleanly = serve(&mut session, first, &mut inbound, &tx).await;
                    let remaining = {
                        let mut sessions = sessions.lock();
                        let n = sessions.entry(replica_id).or_default();
                        *n = n.saturating_sub(1);
                        *n
                    };
                    if !ended_cleanly && remaining == 0 {
                        // A follower replacing its stream opens the new one at once; one that
                        // stays away may be dead: let the controller probe it.
                        tokio::time::sleep(FOLLOWER_GONE_GRACE).await;
                        if sessions.lock().get(&replica_id).copied().unwrap_or(0) == 0 {
                            suspects.report(replica_id, "its replication stream broke");
                        }
                    }
                };
                tokio::select! {
                    _ = session => {}
                    _ = rafka_kafka::server::until_shutdown(&mut stop) => {}
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves one stream until it ends; returns whether it ended cleanly (the follower
/// closed it or the broker is shutting down) rather than with a transport error.
async fn serve(
    session: &mut Session,
    first: ReplicaFetchRequest,
    inbound: &mut Streaming<ReplicaFetchRequest>,
    tx: &mpsc::Sender<Result<ReplicaFetchResponse, Status>>,
) -> bool {
    let mut next = Some(first);
    loop {
        let request = match next.take() {
            Some(r) => r,
            None => match inbound.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return true,
                Err(status) => {
                    debug!(replica = session.replica_id, %status, "follower stream ended");
                    return status.code() == tonic::Code::Cancelled;
                }
            },
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
        session.update(&request);
        let inbox = session.inbox.clone();
        let response = loop {
            // `notify_one` keeps a permit, so a change after `answer` looked still wakes us.
            let woken = inbox.wake.notified();
            let expired = tokio::time::Instant::now() >= deadline;
            if let Some(response) = session.answer(request.max_bytes, expired) {
                break response;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tx.closed() => return true,
            }
        };
        if tx.send(Ok(response)).await.is_err() {
            return true;
        }
    }
}

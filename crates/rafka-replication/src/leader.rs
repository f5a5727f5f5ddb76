//! The leader's side of replication: the gRPC `ReplicationService`.
//!
//! Each follower stream is served by one session task. For every request it checks
//! each partition (this broker leads it, the follower's leader epoch is current, the
//! follower's log does not diverge from ours), records the follower's position (which
//! may advance the high watermark or propose an ISR expansion), and answers with the
//! batches from the follower's fetch offset. When no partition has anything new (no
//! data, error, divergence or high-watermark change since the last answer on this
//! stream) the request is held until something arrives or `max_wait_ms` passes; the
//! broker-wide activity signal wakes it.
//!
//! A follower whose stream ends and that has not opened a new one shortly after is
//! reported to the controller as possibly dead.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use rafka_kafka::errors::KafkaError;
use rafka_kafka::partition::{FollowerPosition, Partition};
use rafka_kafka::ReplicaManager;
use rafka_metadata::{MetadataImage, MetadataLog};
use rafka_rpc::replication_service_server::ReplicationService;
use rafka_rpc::{
    DivergingEpoch, PartitionData, PartitionFetch, ReplicaFetchRequest, ReplicaFetchResponse,
};
use tokio::sync::mpsc;
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
    /// Sessions end when this turns true or its sender is dropped (the node stops).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl LeaderService {
    pub fn new(
        replicas: Arc<ReplicaManager>,
        metadata: Arc<dyn MetadataLog>,
        isr: IsrChanges,
        suspects: SuspectReporter,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> LeaderService {
        LeaderService {
            replicas,
            metadata,
            isr,
            suspects,
            sessions: Arc::new(Mutex::new(HashMap::new())),
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

/// What one partition of a request gets, before any data is read.
enum Checked {
    Failed(PartitionData),
    Diverging(PartitionData),
    /// The follower is consistent; `has_data` when our log extends past its offset.
    Ready {
        partition: Arc<Partition>,
        has_data: bool,
    },
}

struct Session {
    replicas: Arc<ReplicaManager>,
    metadata: Arc<dyn MetadataLog>,
    isr: IsrChanges,
    replica_id: i32,
    /// The high watermark last sent per partition on this stream.
    sent_high_watermarks: HashMap<(Uuid, i32), i64>,
}

impl Session {
    fn check(&self, image: &MetadataImage, request: &PartitionFetch, now_ms: i64) -> Checked {
        let fail = |e: KafkaError| Checked::Failed(error_data(request, &e));
        let Some(topic) =
            topic_id_from_bytes(&request.topic_id).and_then(|id| image.topic_by_id(&id))
        else {
            return fail(ResponseError::UnknownTopicOrPartition.into());
        };
        let Some(partition) = self.replicas.get(&topic.name, request.partition) else {
            return fail(ResponseError::NotLeaderOrFollower.into());
        };
        if !partition.is_leader() {
            return fail(ResponseError::NotLeaderOrFollower.into());
        }
        if let Err(e) = partition.check_leader_epoch(request.current_leader_epoch) {
            return fail(e);
        }
        if !partition.state().replicas.contains(&self.replica_id) {
            return fail(KafkaError::with_message(
                ResponseError::NotLeaderOrFollower,
                format!(
                    "broker {} is not a replica of this partition",
                    self.replica_id
                ),
            ));
        }
        match partition.check_follower_position(request.fetch_offset, request.last_fetched_epoch) {
            Err(e) => return fail(e),
            Ok(FollowerPosition::Diverging { epoch, end_offset }) => {
                let mut data = self.data(&partition, request);
                data.diverging_epoch = Some(DivergingEpoch { epoch, end_offset });
                return Checked::Diverging(data);
            }
            Ok(FollowerPosition::Consistent) => {}
        }
        let (log_start, log_end) = match partition.log() {
            Ok(log) => (log.log_start_offset(), log.log_end_offset()),
            Err(e) => return fail(e),
        };
        if request.fetch_offset < log_start || request.fetch_offset > log_end {
            let mut data = self.data(&partition, request);
            data.error_code = i32::from(ResponseError::OffsetOutOfRange.code());
            return Checked::Failed(data);
        }
        if let Some(proposal) =
            partition.record_follower_fetch(self.replica_id, request.fetch_offset, now_ms)
        {
            self.isr.submit(partition.clone(), proposal);
        }
        Checked::Ready {
            has_data: request.fetch_offset < log_end,
            partition,
        }
    }

    fn data(&self, partition: &Partition, request: &PartitionFetch) -> PartitionData {
        PartitionData {
            topic_id: request.topic_id.clone(),
            partition: request.partition,
            error_code: 0,
            high_watermark: partition.high_watermark(),
            log_start_offset: partition.log().map(|l| l.log_start_offset()).unwrap_or(-1),
            diverging_epoch: None,
            records: Bytes::new(),
        }
    }

    /// Builds the answer, or `None` when there is nothing new for the follower yet.
    fn answer(
        &mut self,
        request: &ReplicaFetchRequest,
        must_answer: bool,
    ) -> Option<ReplicaFetchResponse> {
        let image = self.metadata.image();
        let now = rafka_kafka::handlers::now_ms();
        let checked: Vec<(usize, Checked)> = request
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i, self.check(&image, p, now)))
            .collect();
        let news = checked.iter().any(|(i, c)| match c {
            Checked::Failed(_) | Checked::Diverging(_) => true,
            Checked::Ready {
                partition,
                has_data,
            } => {
                *has_data || {
                    let key = (partition.topic_id, request.partitions[*i].partition);
                    self.sent_high_watermarks.get(&key) != Some(&partition.high_watermark())
                }
            }
        });
        if !news && !must_answer {
            return None;
        }
        let mut budget = request.max_bytes.max(1) as usize;
        let mut first_data = true;
        let mut out = Vec::with_capacity(checked.len());
        for (i, c) in checked {
            let fetch = &request.partitions[i];
            let data = match c {
                Checked::Failed(d) | Checked::Diverging(d) => d,
                Checked::Ready {
                    partition,
                    has_data,
                } => {
                    let mut data = self.data(&partition, fetch);
                    if has_data && budget > 0 {
                        match partition.log().and_then(|log| {
                            log.read(fetch.fetch_offset, budget, i64::MAX, first_data)
                                .map_err(KafkaError::from)
                        }) {
                            Ok(read) => {
                                budget = budget.saturating_sub(read.records.len());
                                first_data &= read.records.is_empty();
                                data.records = read.records;
                            }
                            Err(e) => data = error_data(fetch, &e),
                        }
                    }
                    if data.error_code == 0 {
                        self.sent_high_watermarks
                            .insert((partition.topic_id, fetch.partition), data.high_watermark);
                    }
                    data
                }
            };
            out.push(data);
        }
        Some(ReplicaFetchResponse { partitions: out })
    }
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
        let mut stop = self.stop.clone();
        tokio::spawn(
            async move {
                let session = async move {
                    let Ok(Some(first)) = inbound.message().await else {
                        return;
                    };
                    let replica_id = first.replica_id;
                    *sessions.lock().entry(replica_id).or_default() += 1;
                    let mut session = Session {
                        replicas,
                        metadata,
                        isr,
                        replica_id,
                        sent_high_watermarks: HashMap::new(),
                    };
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
        let activity = session.replicas.activity().clone();
        let response = loop {
            let woken = activity.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let expired = tokio::time::Instant::now() >= deadline;
            if let Some(response) = session.answer(&request, expired) {
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

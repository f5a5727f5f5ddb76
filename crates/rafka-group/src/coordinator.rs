//! The group coordinator of one broker: it serves the groups whose `__consumer_offsets`
//! partition this broker leads, keeps their state in memory, and writes every change
//! that must survive (assignments, committed offsets, deletions) to that partition
//! before answering.
//!
//! Leadership drives it: [`GroupCoordinator::on_leadership`] is told which offsets
//! partitions this broker leads after each metadata change. A newly led partition is
//! loaded by replaying its log (requests for its groups get
//! COORDINATOR_LOAD_IN_PROGRESS meanwhile); a partition led no more is dropped and its
//! parked requests answered NOT_COORDINATOR, so clients find the new coordinator.
//!
//! Locking: each group has its own mutex, never held across an await. A write is
//! appended while the lock is held (so the log's order is the order of decisions) and
//! waited for after it is released.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, warn};

use crate::group::{Group, GroupSettings, GroupState, JoinParams, JoinResult, Reply, SyncOutcome, SyncResult};
use crate::records::{GroupValue, OffsetValue, RecordKey};

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The offsets partition of `group_id`: Kafka's `abs(groupId.hashCode()) % partitions`,
/// with Java's `String.hashCode`, so every Kafka tool agrees on the coordinator.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

/// A future the offsets log returns.
pub type LogFuture = Pin<Box<dyn Future<Output = Result<(), ResponseError>> + Send>>;

/// What the coordinator needs of `__consumer_offsets` on this broker.
pub trait OffsetsLog: Send + Sync + 'static {
    /// Appends a record batch to `partition` as its leader in `leader_epoch`, with
    /// `acks=all` rules; returns the offsets of its first record and the one after its last.
    fn append(&self, partition: i32, leader_epoch: i32, batch: BytesMut) -> Result<(i64, i64), ResponseError>;
    /// Resolves once the partition's high watermark reaches `end_offset`.
    fn wait_committed(&self, partition: i32, leader_epoch: i32, end_offset: i64, timeout: Duration) -> LogFuture;
    /// Whole batches from `offset` on, and the log's (start, end) offsets.
    fn read(&self, partition: i32, offset: i64) -> Result<(Bytes, i64, i64), String>;
}

/// Broker settings the coordinator obeys.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub group: GroupSettings,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.commit.timeout.ms`: how long a write waits for the in-sync replicas.
    pub commit_timeout: Duration,
    /// How often deadlines (sessions, rebalance timeouts) are checked.
    pub tick_interval: Duration,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            group: GroupSettings::default(),
            offset_metadata_max_bytes: 4096,
            commit_timeout: Duration::from_secs(5),
            tick_interval: Duration::from_millis(100),
        }
    }
}

/// The groups of one offsets partition this broker leads.
struct Shard {
    partition: i32,
    leader_epoch: i32,
    loaded: AtomicBool,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
}

impl Shard {
    /// Removes `group` from the shard if it is still the entry for `group_id` (a new
    /// group of the same id may have replaced it meanwhile) and `still` holds for it,
    /// checked under the shard's lock.
    fn remove_group(&self, group_id: &str, group: &Arc<Mutex<Group>>, still: impl Fn(&Group) -> bool) {
        let mut map = self.groups.lock();
        if map.get(group_id).is_some_and(|current| Arc::ptr_eq(current, group) && still(&group.lock())) {
            map.remove(group_id);
        }
    }
}

/// See the module documentation.
pub struct GroupCoordinator {
    node_id: i32,
    settings: CoordinatorSettings,
    log: Arc<dyn OffsetsLog>,
    shards: RwLock<HashMap<i32, Arc<Shard>>>,
    /// Partitions of `__consumer_offsets` (0 until it exists).
    partition_count: AtomicI32,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn code(error: Option<ResponseError>) -> i16 {
    error.map(|e| e.code()).unwrap_or(0)
}

/// Kafka's translation of a failed `__consumer_offsets` write into what group clients
/// understand: retry elsewhere, retry later, or a commit that is too big.
pub fn store_error(error: ResponseError) -> ResponseError {
    use ResponseError::*;
    match error {
        NotLeaderOrFollower | KafkaStorageError | FencedLeaderEpoch | NotCoordinator => NotCoordinator,
        UnknownTopicOrPartition | NotEnoughReplicas | NotEnoughReplicasAfterAppend | RequestTimedOut
        | CoordinatorNotAvailable => CoordinatorNotAvailable,
        MessageTooLarge | RecordListTooLarge | InvalidFetchSize => InvalidCommitOffsetSize,
        other => other,
    }
}

/// One record to write: a key and its value (`None` = tombstone).
type Write = (RecordKey, Option<Bytes>);

/// Per-partition outcomes of one topic in a response.
type PartitionErrors = Vec<(i32, Option<ResponseError>)>;

fn encode_batch(writes: &[Write], now: i64) -> BytesMut {
    let records: Vec<Record> = writes
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: Some(key.encode()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("uncompressed v2 batches always encode");
    buf
}

impl GroupCoordinator {
    pub fn new(node_id: i32, settings: CoordinatorSettings, log: Arc<dyn OffsetsLog>) -> Arc<GroupCoordinator> {
        Arc::new(GroupCoordinator {
            node_id,
            settings,
            log,
            shards: RwLock::new(HashMap::new()),
            partition_count: AtomicI32::new(0),
        })
    }

    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// Brings the loaded partitions in line with leadership: `led` holds the
    /// `(partition, leader_epoch)` of every offsets partition this broker leads, out of
    /// `partition_count`.
    pub fn on_leadership(self: &Arc<Self>, partition_count: i32, led: &[(i32, i32)]) {
        self.partition_count.store(partition_count, Ordering::Release);
        let wanted: HashMap<i32, i32> = led.iter().copied().collect();
        let (dropped, added) = {
            let mut shards = self.shards.write();
            let stale: Vec<i32> =
                shards.iter().filter(|(p, s)| wanted.get(p) != Some(&s.leader_epoch)).map(|(p, _)| *p).collect();
            let dropped: Vec<Arc<Shard>> = stale.iter().filter_map(|p| shards.remove(p)).collect();
            let mut added = Vec::new();
            for (&partition, &leader_epoch) in &wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = shards.entry(partition) {
                    let shard = Arc::new(Shard {
                        partition,
                        leader_epoch,
                        loaded: AtomicBool::new(false),
                        groups: Mutex::new(HashMap::new()),
                    });
                    slot.insert(shard.clone());
                    added.push(shard);
                }
            }
            (dropped, added)
        };
        for shard in dropped {
            let groups: Vec<_> = shard.groups.lock().drain().map(|(_, g)| g).collect();
            for g in &groups {
                g.lock().mark_dead(ResponseError::NotCoordinator);
            }
            info!(partition = shard.partition, groups = groups.len(), "no longer the coordinator: unloaded groups");
        }
        for shard in added {
            let this = self.clone();
            tokio::spawn(async move {
                let loader = this.clone();
                let s = shard.clone();
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || loader.load(&s)).await {
                    Ok(Ok(count)) => {
                        shard.loaded.store(true, Ordering::Release);
                        info!(partition = shard.partition, leader_epoch = shard.leader_epoch, groups = count,
                              elapsed_ms = started.elapsed().as_millis() as u64, "coordinator loaded groups");
                    }
                    Ok(Err(e)) => {
                        warn!(partition = shard.partition, error = %e, "cannot load groups; this partition's groups stay unavailable");
                    }
                    Err(e) => warn!(partition = shard.partition, error = %e, "group loading panicked"),
                }
            });
        }
    }

    /// Replays the partition's log into its shard; returns the number of groups.
    fn load(&self, shard: &Shard) -> Result<usize, String> {
        let now = now_ms();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let (_, mut offset, _) = self.log.read(shard.partition, -1).unwrap_or((Bytes::new(), 0, 0));
        loop {
            let (mut chunk, _, log_end) = self.log.read(shard.partition, offset)?;
            if chunk.is_empty() || offset >= log_end {
                break;
            }
            while chunk.len() >= 61 {
                let base = i64::from_be_bytes(chunk[0..8].try_into().expect("8 bytes"));
                let length = i32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes")) as usize;
                let last_delta = i32::from_be_bytes(chunk[23..27].try_into().expect("4 bytes")) as i64;
                if chunk.len() < 12 + length {
                    break;
                }
                let mut batch = chunk.split_to(12 + length);
                offset = base + last_delta + 1;
                let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| format!("batch at offset {base}: {e}"))?;
                for record in set.records {
                    if record.control {
                        continue;
                    }
                    let Some(key) = record.key else { continue };
                    match RecordKey::decode(key) {
                        Ok(key) => apply_record(&mut groups, key, record.value, record.offset, now, &self.settings.group),
                        Err(e) => warn!(partition = shard.partition, offset = record.offset, error = %e, "skipping a record"),
                    }
                }
            }
        }
        groups.retain(|_, g| !g.is_vacant());
        let count = groups.len();
        let mut map = shard.groups.lock();
        for (id, g) in groups {
            map.insert(id, Arc::new(Mutex::new(g)));
        }
        Ok(count)
    }

    /// The loaded shard holding `group_id`, or the error telling the client where to go.
    fn shard_for(&self, group_id: &str) -> Result<Arc<Shard>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let count = self.partition_count.load(Ordering::Acquire);
        if count <= 0 {
            return Err(ResponseError::NotCoordinator);
        }
        let partition = partition_for(group_id, count);
        match self.shards.read().get(&partition) {
            None => Err(ResponseError::NotCoordinator),
            Some(s) if !s.loaded.load(Ordering::Acquire) => Err(ResponseError::CoordinatorLoadInProgress),
            Some(s) => Ok(s.clone()),
        }
    }

    fn find_group(shard: &Shard, group_id: &str) -> Option<Arc<Mutex<Group>>> {
        shard.groups.lock().get(group_id).cloned()
    }

    fn get_or_create_group(&self, shard: &Shard, group_id: &str) -> Arc<Mutex<Group>> {
        shard
            .groups
            .lock()
            .entry(group_id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(group_id.to_string(), now_ms(), &self.settings.group))))
            .clone()
    }

    /// Appends `writes` to the shard's partition (call with the group lock held).
    fn append(&self, shard: &Shard, writes: &[Write]) -> Result<(i64, i64), ResponseError> {
        self.log
            .append(shard.partition, shard.leader_epoch, encode_batch(writes, now_ms()))
            .map_err(store_error)
    }

    async fn committed(&self, shard: &Shard, end_offset: i64) -> Result<(), ResponseError> {
        self.log
            .wait_committed(shard.partition, shard.leader_epoch, end_offset, self.settings.commit_timeout)
            .await
            .map_err(store_error)
    }

    /// Writes the group's membership in the background if a transition asked for it.
    fn store_in_background(self: &Arc<Self>, shard: &Arc<Shard>, group: &mut Group) {
        if !group.take_needs_store() {
            return;
        }
        let writes = [(RecordKey::Group { group: group.id.clone() }, Some(group.to_value(now_ms()).encode()))];
        match self.append(shard, &writes) {
            Ok((_, end)) => {
                let this = self.clone();
                let shard = shard.clone();
                let id = group.id.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.committed(&shard, end).await {
                        warn!(group = %id, error = ?e, "group metadata write not replicated");
                    }
                });
            }
            Err(e) => warn!(group = %group.id, error = ?e, "cannot write group metadata"),
        }
    }

    /// Checks every loaded group's deadlines; run it every `tick_interval`.
    pub fn tick(self: &Arc<Self>) {
        let now = now_ms();
        let shards: Vec<Arc<Shard>> =
            self.shards.read().values().filter(|s| s.loaded.load(Ordering::Acquire)).cloned().collect();
        for shard in shards {
            let groups: Vec<(String, Arc<Mutex<Group>>)> =
                shard.groups.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (id, group) in groups {
                let mut g = group.lock();
                let expired = g.tick(now);
                for member in expired {
                    info!(group = %id, member = %member, "member removed: session or rebalance timeout expired");
                }
                self.store_in_background(&shard, &mut g);
                if g.is_vacant() {
                    drop(g);
                    shard.remove_group(&id, &group, |g| g.is_vacant());
                }
            }
        }
    }

    /// Runs [`Self::tick`] forever.
    pub async fn run_ticker(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.settings.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.tick();
        }
    }

    // ----------------------------------------------------------------------------------
    // Requests

    pub async fn join_group(self: &Arc<Self>, r: JoinGroupRequest, version: i16, client_id: &str, client_host: &str) -> JoinGroupResponse {
        let group_id = r.group_id.0.to_string();
        let params = JoinParams {
            member_id: r.member_id.to_string(),
            instance_id: r.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: r.session_timeout_ms,
            rebalance_timeout_ms: if version == 0 || r.rebalance_timeout_ms < 0 { r.session_timeout_ms } else { r.rebalance_timeout_ms },
            protocol_type: r.protocol_type.to_string(),
            protocols: r.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
        };
        let result = match self.shard_for(&group_id) {
            Err(e) => JoinResult::error(e, &params.member_id),
            Ok(shard) => {
                let existing = Self::find_group(&shard, &group_id);
                let group = match existing {
                    Some(g) => Some(g),
                    None if params.member_id.is_empty() => Some(self.get_or_create_group(&shard, &group_id)),
                    None => None,
                };
                match group {
                    None => JoinResult::error(ResponseError::UnknownMemberId, &params.member_id),
                    Some(group) => {
                        let new_id = format!(
                            "{}-{}",
                            params.instance_id.as_deref().unwrap_or(&params.client_id),
                            uuid::Uuid::new_v4()
                        );
                        let member_id = params.member_id.clone();
                        let reply = {
                            let mut g = group.lock();
                            let reply = g.join(params, new_id, now_ms(), &self.settings.group);
                            self.store_in_background(&shard, &mut g);
                            reply
                        };
                        match reply {
                            Reply::Now(r) => r,
                            Reply::Later(rx) => rx.await.unwrap_or_else(|_| JoinResult::error(ResponseError::NotCoordinator, &member_id)),
                        }
                    }
                }
            }
        };
        if let Some(e) = result.error {
            debug!(group = %group_id, member = %result.member_id, error = ?e, "join refused");
        }
        let mut response = JoinGroupResponse::default()
            .with_error_code(code(result.error))
            .with_generation_id(result.generation)
            .with_leader(str_bytes(&result.leader))
            .with_member_id(str_bytes(&result.member_id))
            .with_skip_assignment(result.skip_assignment)
            .with_members(
                result
                    .members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(&id))
                            .with_group_instance_id(instance.as_deref().map(str_bytes))
                            .with_metadata(metadata)
                    })
                    .collect(),
            );
        response = if version >= 7 {
            response
                .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
                .with_protocol_name(result.protocol_name.as_deref().map(str_bytes))
        } else {
            response.with_protocol_name(Some(str_bytes(result.protocol_name.as_deref().unwrap_or(""))))
        };
        response
    }

    pub async fn sync_group(self: &Arc<Self>, r: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let group_id = r.group_id.0.to_string();
        let result = self.sync(r).await;
        let mut response = SyncGroupResponse::default().with_error_code(code(result.error)).with_assignment(result.assignment);
        if version >= 5 {
            response = response
                .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
                .with_protocol_name(result.protocol_name.as_deref().map(str_bytes));
        }
        if let Some(e) = result.error {
            debug!(group = %group_id, error = ?e, "sync refused");
        }
        response
    }

    async fn sync(self: &Arc<Self>, r: SyncGroupRequest) -> SyncResult {
        let group_id = r.group_id.0.to_string();
        let shard = match self.shard_for(&group_id) {
            Ok(s) => s,
            Err(e) => return SyncResult::error(e),
        };
        let Some(group) = Self::find_group(&shard, &group_id) else {
            return SyncResult::error(ResponseError::UnknownMemberId);
        };
        let assignments = r.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
        let (outcome, appended) = {
            let mut g = group.lock();
            let outcome = g.sync(
                &r.member_id,
                r.group_instance_id.as_deref(),
                r.generation_id,
                r.protocol_type.as_deref(),
                r.protocol_name.as_deref(),
                assignments,
                now_ms(),
            );
            let appended = match &outcome {
                SyncOutcome::Store { value, generation, .. } => {
                    let writes = [(RecordKey::Group { group: group_id.clone() }, Some(value.encode()))];
                    let appended = self.append(&shard, &writes);
                    if let Err(e) = appended {
                        g.finish_assignment(*generation, Err(e), now_ms());
                    }
                    Some(appended)
                }
                SyncOutcome::Reply(_) => None,
            };
            (outcome, appended)
        };
        let rx = match outcome {
            SyncOutcome::Reply(Reply::Now(result)) => return result,
            SyncOutcome::Reply(Reply::Later(rx)) => rx,
            SyncOutcome::Store { generation, reply, .. } => {
                if let Some(Ok((_, end))) = appended {
                    let stored = self.committed(&shard, end).await;
                    group.lock().finish_assignment(generation, stored, now_ms());
                }
                reply
            }
        };
        rx.await.unwrap_or_else(|_| SyncResult::error(ResponseError::NotCoordinator))
    }

    pub fn heartbeat(&self, r: HeartbeatRequest) -> HeartbeatResponse {
        let group_id = r.group_id.0.to_string();
        let result = self.shard_for(&group_id).and_then(|shard| match Self::find_group(&shard, &group_id) {
            None => Err(ResponseError::UnknownMemberId),
            Some(group) => group.lock().heartbeat(&r.member_id, r.group_instance_id.as_deref(), r.generation_id, now_ms()),
        });
        HeartbeatResponse::default().with_error_code(code(result.err()))
    }

    pub fn leave_group(self: &Arc<Self>, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let group_id = r.group_id.0.to_string();
        let members: Vec<(String, Option<String>)> = if version >= 3 {
            r.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        let shard = match self.shard_for(&group_id) {
            Ok(s) => s,
            Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
        };
        let Some(group) = Self::find_group(&shard, &group_id) else {
            return if version >= 3 {
                LeaveGroupResponse::default().with_members(
                    members
                        .iter()
                        .map(|(id, instance)| {
                            MemberResponse::default()
                                .with_member_id(str_bytes(id))
                                .with_group_instance_id(instance.as_deref().map(str_bytes))
                                .with_error_code(ResponseError::UnknownMemberId.code())
                        })
                        .collect(),
                )
            } else {
                LeaveGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code())
            };
        };
        let mut g = group.lock();
        let now = now_ms();
        let results: Vec<(String, Option<String>, Option<ResponseError>)> = members
            .into_iter()
            .map(|(id, instance)| {
                let outcome = g.leave(&id, instance.as_deref(), now).err();
                if outcome.is_none() {
                    info!(group = %group_id, member = %id, "member left the group");
                }
                (id, instance, outcome)
            })
            .collect();
        self.store_in_background(&shard, &mut g);
        if version >= 3 {
            LeaveGroupResponse::default().with_members(
                results
                    .into_iter()
                    .map(|(id, instance, e)| {
                        MemberResponse::default()
                            .with_member_id(str_bytes(&id))
                            .with_group_instance_id(instance.as_deref().map(str_bytes))
                            .with_error_code(code(e))
                    })
                    .collect(),
            )
        } else {
            LeaveGroupResponse::default().with_error_code(code(results.into_iter().next().and_then(|r| r.2)))
        }
    }

    /// OffsetCommit. `partition_exists` says whether a (topic, partition) exists, so
    /// commits for unknown ones get UNKNOWN_TOPIC_OR_PARTITION as in Kafka.
    pub async fn offset_commit(
        self: &Arc<Self>,
        r: OffsetCommitRequest,
        partition_exists: &(dyn Fn(&str, i32) -> bool + Sync),
    ) -> OffsetCommitResponse {
        let group_id = r.group_id.0.to_string();
        let respond_all = |error: Option<ResponseError>, r: &OffsetCommitRequest| {
            OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code(error)))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        };
        let shard = match self.shard_for(&group_id) {
            Ok(s) => s,
            Err(e) => return respond_all(Some(e), &r),
        };
        let group = match Self::find_group(&shard, &group_id) {
            Some(g) => g,
            None if r.generation_id_or_member_epoch < 0 => self.get_or_create_group(&shard, &group_id),
            None => return respond_all(Some(ResponseError::IllegalGeneration), &r),
        };
        let now = now_ms();
        // (topic, partition, error, index into writes)
        let mut outcomes: Vec<(usize, i32, Option<ResponseError>, Option<usize>)> = Vec::new();
        let mut writes: Vec<Write> = Vec::new();
        let mut values: Vec<(String, i32, OffsetValue)> = Vec::new();
        let appended = {
            let mut g = group.lock();
            if let Err(e) = g.validate_commit(&r.member_id, r.group_instance_id.as_deref(), r.generation_id_or_member_epoch, now) {
                return respond_all(Some(e), &r);
            }
            for (ti, t) in r.topics.iter().enumerate() {
                for p in &t.partitions {
                    let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
                    let error = if !partition_exists(&t.name, p.partition_index) {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else if metadata.len() > self.settings.offset_metadata_max_bytes {
                        Some(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        None
                    };
                    let slot = error.is_none().then(|| {
                        let value = OffsetValue {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp: now,
                        };
                        writes.push((
                            RecordKey::Offset { group: group_id.clone(), topic: t.name.to_string(), partition: p.partition_index },
                            Some(value.encode()),
                        ));
                        values.push((t.name.to_string(), p.partition_index, value));
                        writes.len() - 1
                    });
                    outcomes.push((ti, p.partition_index, error, slot));
                }
            }
            let appended = if writes.is_empty() { None } else { Some(self.append(&shard, &writes)) };
            if matches!(appended, Some(Ok(_))) {
                g.pending_commits += 1;
            }
            appended
        };
        let write_result = match appended {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok((base, end))) => {
                let stored = self.committed(&shard, end).await;
                let mut g = group.lock();
                g.pending_commits -= 1;
                if stored.is_ok() {
                    for (i, (topic, partition, value)) in values.into_iter().enumerate() {
                        g.apply_offset(&topic, partition, Some(value), base + i as i64);
                    }
                }
                stored
            }
        };
        if let Err(e) = write_result {
            warn!(group = %group_id, error = ?e, "offset commit not stored");
        }
        let mut topics: Vec<OffsetCommitResponseTopic> = r
            .topics
            .iter()
            .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
            .collect();
        for (ti, partition, error, slot) in outcomes {
            let error = error.or_else(|| slot.and_then(|_| write_result.err()));
            topics[ti]
                .partitions
                .push(OffsetCommitResponsePartition::default().with_partition_index(partition).with_error_code(code(error)));
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// The committed offsets of one group: `(topic, [(partition, offset, leader epoch,
    /// metadata)])`, for every stored offset when `topics` is `None`.
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, Vec<(i32, i64, i32, String)>)>, ResponseError> {
        let shard = self.shard_for(group_id)?;
        let group = Self::find_group(&shard, group_id);
        let g = group.as_ref().map(|g| g.lock());
        let lookup = |topic: &str, partition: i32| -> (i32, i64, i32, String) {
            match g.as_ref().and_then(|g| g.offset(topic, partition)) {
                Some(o) => (partition, o.value.offset, o.value.leader_epoch, o.value.metadata.clone()),
                None => (partition, -1, -1, String::new()),
            }
        };
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, partitions)| {
                    let offsets = partitions.iter().map(|p| lookup(&t, *p)).collect();
                    (t, offsets)
                })
                .collect(),
            None => {
                let mut by_topic: Vec<(String, Vec<(i32, i64, i32, String)>)> = Vec::new();
                for (topic, partition, o) in g.as_ref().map(|g| g.offsets()).unwrap_or_default() {
                    let entry = (partition, o.value.offset, o.value.leader_epoch, o.value.metadata.clone());
                    match by_topic.last_mut() {
                        Some((t, list)) if *t == topic => list.push(entry),
                        _ => by_topic.push((topic, vec![entry])),
                    }
                }
                by_topic
            }
        })
    }

    pub fn offset_fetch(&self, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = r
                .groups
                .into_iter()
                .map(|g| {
                    let group_id = g.group_id.0.to_string();
                    let topics = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
                    match self.fetch_offsets(&group_id, topics) {
                        Err(e) => OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(e.code()),
                        Ok(found) => OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(
                            found
                                .into_iter()
                                .map(|(t, ps)| {
                                    OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(&t))).with_partitions(
                                        ps.into_iter()
                                            .map(|(p, offset, epoch, metadata)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(&metadata)))
                                            })
                                            .collect(),
                                    )
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let group_id = r.group_id.0.to_string();
        let requested: Option<Vec<(String, Vec<i32>)>> =
            r.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
        match self.fetch_offsets(&group_id, requested.clone()) {
            Ok(found) => OffsetFetchResponse::default().with_topics(
                found
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(&t))).with_partitions(
                            ps.into_iter()
                                .map(|(p, offset, epoch, metadata)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(str_bytes(&metadata)))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            // v2+ carries a group-level error; v1 only per partition.
            Err(e) => OffsetFetchResponse::default()
                .with_error_code(if version >= 2 { e.code() } else { 0 })
                .with_topics(
                    requested
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(&t))).with_partitions(
                                ps.into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_committed_leader_epoch(-1)
                                            .with_metadata(Some(StrBytes::default()))
                                            .with_error_code(e.code())
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
        }
    }

    pub fn describe_groups(&self, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = r
            .groups
            .into_iter()
            .map(|group_id| {
                let id = group_id.0.to_string();
                let described = DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_authorized_operations(i32::MIN);
                let shard = match self.shard_for(&id) {
                    Ok(s) => s,
                    Err(e) => return described.with_error_code(e.code()).with_group_state(str_bytes("")),
                };
                let Some(group) = Self::find_group(&shard, &id) else {
                    return described.with_group_state(str_bytes(GroupState::Dead.name()));
                };
                let g = group.lock();
                described
                    .with_group_state(str_bytes(g.state().name()))
                    .with_protocol_type(str_bytes(g.protocol_type().unwrap_or("")))
                    .with_protocol_data(str_bytes(g.protocol().unwrap_or("")))
                    .with_members(
                        g.describe_members()
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    )
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub fn list_groups(&self, r: ListGroupsRequest) -> ListGroupsResponse {
        let states: Vec<String> = r.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
        let types: Vec<String> = r.types_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
        if !types.is_empty() && !types.iter().any(|t| t == "classic") {
            return ListGroupsResponse::default();
        }
        let shards: Vec<Arc<Shard>> = self.shards.read().values().cloned().collect();
        let mut error = None;
        let mut listed = Vec::new();
        for shard in shards {
            if !shard.loaded.load(Ordering::Acquire) {
                error = Some(ResponseError::CoordinatorLoadInProgress);
                continue;
            }
            let groups: Vec<Arc<Mutex<Group>>> = shard.groups.lock().values().cloned().collect();
            for group in groups {
                let g = group.lock();
                let state = g.state();
                if state == GroupState::Dead || (!states.is_empty() && !states.contains(&state.name().to_ascii_lowercase())) {
                    continue;
                }
                listed.push(
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&g.id)))
                        .with_protocol_type(str_bytes(g.protocol_type().unwrap_or("")))
                        .with_group_state(str_bytes(state.name()))
                        .with_group_type(str_bytes("classic")),
                );
            }
        }
        listed.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
        ListGroupsResponse::default().with_error_code(code(error)).with_groups(listed)
    }

    pub async fn delete_groups(self: &Arc<Self>, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut results = Vec::new();
        for group_id in r.groups_names {
            let id = group_id.0.to_string();
            let outcome = self.delete_group(&id).await;
            match outcome {
                Ok(()) => info!(group = %id, "group deleted"),
                Err(e) => debug!(group = %id, error = ?e, "group not deleted"),
            }
            results.push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(code(outcome.err())));
        }
        DeleteGroupsResponse::default().with_results(results)
    }

    async fn delete_group(self: &Arc<Self>, group_id: &str) -> Result<(), ResponseError> {
        let shard = self.shard_for(group_id)?;
        let group = Self::find_group(&shard, group_id).ok_or(ResponseError::GroupIdNotFound)?;
        let end = {
            let g = group.lock();
            g.check_deletable()?;
            let mut writes: Vec<Write> = g
                .offsets()
                .into_iter()
                .map(|(topic, partition, _)| (RecordKey::Offset { group: group_id.to_string(), topic, partition }, None))
                .collect();
            writes.push((RecordKey::Group { group: group_id.to_string() }, None));
            self.append(&shard, &writes)?.1
        };
        self.committed(&shard, end).await?;
        group.lock().mark_dead(ResponseError::CoordinatorNotAvailable);
        shard.remove_group(group_id, &group, |_| true);
        Ok(())
    }

    pub async fn offset_delete(self: &Arc<Self>, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let group_id = r.group_id.0.to_string();
        let shard = match self.shard_for(&group_id) {
            Ok(s) => s,
            Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
        };
        let Some(group) = Self::find_group(&shard, &group_id) else {
            return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code());
        };
        let mut outcomes: Vec<(TopicName, PartitionErrors)> = Vec::new();
        let mut deletes: Vec<(String, i32)> = Vec::new();
        let appended = {
            let g = group.lock();
            let subscribed = match g.state() {
                GroupState::Dead => return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code()),
                GroupState::Empty => Some(Default::default()),
                _ => g.subscribed_topics(),
            };
            let Some(subscribed) = subscribed else {
                return OffsetDeleteResponse::default().with_error_code(ResponseError::NonEmptyGroup.code());
            };
            for t in &r.topics {
                let name = t.name.to_string();
                let mut partitions = Vec::new();
                for p in &t.partitions {
                    if subscribed.contains(&name) {
                        partitions.push((p.partition_index, Some(ResponseError::GroupSubscribedToTopic)));
                    } else {
                        if g.offset(&name, p.partition_index).is_some() {
                            deletes.push((name.clone(), p.partition_index));
                        }
                        partitions.push((p.partition_index, None));
                    }
                }
                outcomes.push((t.name.clone(), partitions));
            }
            let writes: Vec<Write> = deletes
                .iter()
                .map(|(topic, partition)| {
                    (RecordKey::Offset { group: group_id.clone(), topic: topic.clone(), partition: *partition }, None)
                })
                .collect();
            if writes.is_empty() { None } else { Some(self.append(&shard, &writes)) }
        };
        let result = match appended {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok((base, end))) => {
                let stored = self.committed(&shard, end).await;
                if stored.is_ok() {
                    let mut g = group.lock();
                    for (i, (topic, partition)) in deletes.iter().enumerate() {
                        g.apply_offset(topic, *partition, None, base + i as i64);
                    }
                }
                stored
            }
        };
        if let Err(e) = result {
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        OffsetDeleteResponse::default().with_topics(
            outcomes
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetDeleteResponseTopic::default().with_name(name).with_partitions(
                        partitions
                            .into_iter()
                            .map(|(p, e)| OffsetDeleteResponsePartition::default().with_partition_index(p).with_error_code(code(e)))
                            .collect(),
                    )
                })
                .collect(),
        )
    }
}

/// Applies one `__consumer_offsets` record during loading.
fn apply_record(groups: &mut HashMap<String, Group>, key: RecordKey, value: Option<Bytes>, log_offset: i64, now: i64, settings: &GroupSettings) {
    let group_id = key.group().to_string();
    let group = groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id.clone(), now, settings));
    match key {
        RecordKey::Offset { topic, partition, .. } => {
            let value = match value.map(OffsetValue::decode) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => {
                    warn!(group = %group_id, offset = log_offset, error = %e, "skipping an offset record");
                    return;
                }
            };
            group.apply_offset(&topic, partition, value, log_offset);
        }
        RecordKey::Group { .. } => match value.map(GroupValue::decode) {
            None => group.clear_membership(),
            Some(Ok(v)) => group.load(v, now),
            Some(Err(e)) => warn!(group = %group_id, offset = log_offset, error = %e, "skipping a group record"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_matches_kafkas_java_hash() {
        // Java: "my-group".hashCode() == -1_906_497_762 → abs % 50 == 12.
        assert_eq!(partition_for("my-group", 50), 12);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE → Utils.abs gives 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
        // Whatever the hash, the partition is in range.
        for id in ["a", "consumer-group-7", "ünïcode", "g".repeat(200).as_str()] {
            assert!((0..50).contains(&partition_for(id, 50)));
        }
    }

    #[test]
    fn store_errors_map_to_what_group_clients_retry_on() {
        assert_eq!(store_error(ResponseError::NotLeaderOrFollower), ResponseError::NotCoordinator);
        assert_eq!(store_error(ResponseError::NotEnoughReplicas), ResponseError::CoordinatorNotAvailable);
        assert_eq!(store_error(ResponseError::RequestTimedOut), ResponseError::CoordinatorNotAvailable);
        assert_eq!(store_error(ResponseError::MessageTooLarge), ResponseError::InvalidCommitOffsetSize);
    }
}

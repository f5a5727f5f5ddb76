//! One classic group: its members, generations and rebalance state machine (Kafka's
//! `ClassicGroup`), plus the offsets committed for it.
//!
//! Everything here is synchronous and takes the time as an argument, so the state
//! machine is tested without clocks or I/O. Answers that must wait (a JoinGroup parked
//! until every member has rejoined, a SyncGroup parked until the leader's assignment is
//! stored) are oneshot channels held by the member and completed by a later call; the
//! [`crate::coordinator`] drives time through [`Group::tick`] and does the writes.
//!
//! States, as Kafka names them: `Empty` → `PreparingRebalance` (members rejoin) →
//! `CompletingRebalance` (waiting for the leader's assignment) → `Stable`, and `Dead`
//! once deleted or unloaded.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use crate::records::{GroupValue, MemberValue, OffsetValue};

/// Broker settings a group obeys.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's tools print and ListGroups filters on.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup, as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id is given one and must join again (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader rejoining a stable group may skip assignment.
    pub supports_skip_assignment: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// An answer now, or one to wait for.
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// What a SyncGroup needs next.
#[derive(Debug)]
pub enum SyncOutcome {
    Reply(Reply<SyncResult>),
    /// The leader sent the assignment: store `value`, then call
    /// [`Group::finish_assignment`] with `generation` and the outcome; the answer
    /// arrives on the receiver.
    Store { value: GroupValue, generation: i32, reply: oneshot::Receiver<SyncResult> },
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    heartbeat_deadline: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    fn fail_waiters(&mut self, error: ResponseError, member_id: &str) {
        if let Some(tx) = self.join_waiter.take() {
            let _ = tx.send(JoinResult::error(error, member_id));
        }
        if let Some(tx) = self.sync_waiter.take() {
            let _ = tx.send(SyncResult::error(error));
        }
    }
}

/// A committed offset and where its record sits in `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub value: OffsetValue,
    pub log_offset: i64,
}

#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    remaining_ms: i64,
    new_member_added: bool,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One group. See the module documentation.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order: the first to join leads when the leader has gone.
    members: IndexMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with when they lapse.
    pending_members: HashMap<String, i64>,
    static_members: HashMap<String, String>,
    offsets: HashMap<(String, i32), StoredOffset>,
    join_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    sync_deadline: Option<i64>,
    /// The leader's assignment while it is being stored.
    pending_assignment: Option<(i32, HashMap<String, Bytes>)>,
    state_timestamp: i64,
    /// `group.initial.rebalance.delay.ms`.
    initial_delay_ms: i64,
    /// Offset commits appended but not yet applied: the group must not be dropped as
    /// vacant meanwhile.
    pub pending_commits: usize,
    /// Set when the group changed in a way that should be written without anyone waiting
    /// on the write (an emptied group's new generation, a replaced static member).
    needs_store: bool,
}

impl Group {
    pub fn new(id: String, now: i64, settings: &GroupSettings) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            offsets: HashMap::new(),
            join_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            pending_assignment: None,
            state_timestamp: now,
            initial_delay_ms: settings.initial_rebalance_delay_ms,
            pending_commits: 0,
            needs_store: false,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Whether the group holds nothing worth keeping in memory.
    pub fn is_vacant(&self) -> bool {
        matches!(self.state, GroupState::Empty | GroupState::Dead)
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.pending_commits == 0
    }

    /// Takes the "write the group in the background" flag.
    pub fn take_needs_store(&mut self) -> bool {
        std::mem::take(&mut self.needs_store)
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members.values().map(|m| m.rebalance_timeout_ms as i64).max().unwrap_or(0)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> HashSet<&str> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return HashSet::new() };
        let mut set: HashSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
        for m in members {
            let theirs: HashSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            set.retain(|n| theirs.contains(n));
        }
        set
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        let candidates = self.candidate_protocols();
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| candidates.contains(name.as_str()))
    }

    /// Each member votes for its most preferred protocol among those all support.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: IndexMap<&str, usize> = IndexMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n.as_str())) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes.iter().find(|(_, v)| **v == best).map(|(n, _)| n.to_string())
    }

    /// The static member `instance_id` is held by someone other than `member_id`.
    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        match instance_id.and_then(|i| self.static_members.get(i)) {
            Some(holder) => holder != member_id,
            None => false,
        }
    }

    fn current_join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .iter()
                .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    /// Handles a JoinGroup. `new_member_id` is used when the member has no id yet.
    pub fn join(&mut self, p: JoinParams, new_member_id: String, now: i64, settings: &GroupSettings) -> Reply<JoinResult> {
        let fail = |e: ResponseError| Reply::Now(JoinResult::error(e, &p.member_id));
        if p.session_timeout_ms < settings.min_session_timeout_ms || p.session_timeout_ms > settings.max_session_timeout_ms {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !self.supports_protocols(&p.protocol_type, &p.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if p.member_id.is_empty() {
            self.join_unknown_member(p, new_member_id, now, settings)
        } else {
            self.join_known_member(p, now)
        }
    }

    fn join_unknown_member(&mut self, p: JoinParams, new_member_id: String, now: i64, settings: &GroupSettings) -> Reply<JoinResult> {
        if let Some(old_id) = p.instance_id.as_ref().and_then(|i| self.static_members.get(i)).cloned() {
            return self.replace_static_member(p, old_id, new_member_id, now);
        }
        if self.members.len() + self.pending_members.len() >= settings.max_size {
            return Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
        }
        if p.require_known_member_id && p.instance_id.is_none() {
            self.pending_members.insert(new_member_id.clone(), now + p.session_timeout_ms as i64);
            return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_member_id));
        }
        self.add_member_and_rebalance(p, new_member_id, now)
    }

    fn join_known_member(&mut self, p: JoinParams, now: i64) -> Reply<JoinResult> {
        let member_id = p.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            return self.add_member_and_rebalance(p, member_id, now);
        }
        if self.is_fenced(&member_id, p.instance_id.as_deref()) {
            return Reply::Now(JoinResult::error(ResponseError::FencedInstanceId, &member_id));
        }
        let Some(member) = self.members.get(&member_id) else {
            return Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, &member_id));
        };
        let unchanged = member.protocols == p.protocols;
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::CompletingRebalance if unchanged => {
                Reply::Now(self.current_join_result(&member_id, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => Reply::Now(self.current_join_result(&member_id, false)),
            GroupState::PreparingRebalance | GroupState::CompletingRebalance | GroupState::Stable => {
                let rx = self.update_member_and_park(&member_id, &p);
                if self.state == GroupState::PreparingRebalance {
                    self.maybe_complete_join(now);
                } else {
                    self.prepare_rebalance(now);
                }
                Reply::Later(rx)
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, &member_id)),
        }
    }

    fn update_member_and_park(&mut self, member_id: &str, p: &JoinParams) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let member = self.members.get_mut(member_id).expect("caller checked membership");
        member.protocols = p.protocols.clone();
        member.session_timeout_ms = p.session_timeout_ms;
        member.rebalance_timeout_ms = p.rebalance_timeout_ms;
        member.client_id = p.client_id.clone();
        member.client_host = p.client_host.clone();
        if let Some(old) = member.join_waiter.replace(tx) {
            // A second JoinGroup while the first is parked: the first is superseded.
            let _ = old.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
        }
        rx
    }

    fn add_member_and_rebalance(&mut self, p: JoinParams, member_id: String, now: i64) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if let Some(instance) = &p.instance_id {
            self.static_members.insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id,
            Member {
                instance_id: p.instance_id,
                client_id: p.client_id,
                client_host: p.client_host,
                rebalance_timeout_ms: p.rebalance_timeout_ms,
                session_timeout_ms: p.session_timeout_ms,
                protocols: p.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                heartbeat_deadline: now + p.session_timeout_ms as i64,
            },
        );
        if let Some(delay) = &mut self.initial_delay {
            delay.new_member_added = true;
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            _ => self.prepare_rebalance(now),
        }
        Reply::Later(rx)
    }

    /// A static member came back with a new member id (a restarted client): it takes
    /// over the old id's place, and the old id is fenced (KIP-345).
    fn replace_static_member(&mut self, p: JoinParams, old_id: String, new_id: String, now: i64) -> Reply<JoinResult> {
        let Some(mut member) = self.members.shift_remove(&old_id) else {
            return Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, ""));
        };
        member.fail_waiters(ResponseError::FencedInstanceId, &old_id);
        let unchanged = member.protocols == p.protocols;
        member.heartbeat_deadline = now + p.session_timeout_ms as i64;
        member.client_id = p.client_id.clone();
        member.client_host = p.client_host.clone();
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &p.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && unchanged {
            // No rebalance: the member keeps its assignment under its new id.
            self.needs_store = true;
            let mut result = self.current_join_result(&new_id, was_leader && p.supports_skip_assignment);
            result.skip_assignment = was_leader && p.supports_skip_assignment;
            return Reply::Now(result);
        }
        let rx = self.update_member_and_park(&new_id, &p);
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            _ => self.prepare_rebalance(now),
        }
        Reply::Later(rx)
    }

    fn prepare_rebalance(&mut self, now: i64) {
        if self.state == GroupState::CompletingRebalance {
            self.pending_assignment = None;
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
                m.heartbeat_deadline = m.heartbeat_deadline.max(now + m.session_timeout_ms as i64);
            }
        }
        self.sync_deadline = None;
        let initial = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.state_timestamp = now;
        let settings_delay = self.initial_delay_ms;
        if initial && settings_delay > 0 && !self.members.is_empty() {
            let remaining = (self.max_rebalance_timeout() - settings_delay).max(0);
            self.initial_delay = Some(InitialDelay { remaining_ms: remaining, new_member_added: false });
            self.join_deadline = Some(now + settings_delay);
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now + self.max_rebalance_timeout());
            self.maybe_complete_join(now);
        }
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn maybe_complete_join(&mut self, now: i64) {
        if self.state == GroupState::PreparingRebalance && self.initial_delay.is_none() && self.all_members_joined() {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: i64) {
        // Dynamic members that did not rejoin in time are gone; static ones keep their
        // place until their session expires.
        let missing: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            self.members.shift_remove(&id);
        }
        self.join_deadline = None;
        self.initial_delay = None;
        self.generation += 1;
        self.state_timestamp = now;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.needs_store = true;
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self
                .members
                .iter()
                .find(|(_, m)| m.join_waiter.is_some())
                .or_else(|| self.members.first())
                .map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let leader = self.leader.clone().unwrap_or_default();
        let everyone = self.current_join_result(&leader, true).members;
        for (id, m) in self.members.iter_mut() {
            if let Some(tx) = m.join_waiter.take() {
                let mut result = JoinResult {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: Vec::new(),
                    skip_assignment: false,
                };
                if *id == leader {
                    result.members = everyone.clone();
                }
                let _ = tx.send(result);
                m.heartbeat_deadline = now + m.session_timeout_ms as i64;
            }
        }
    }

    /// Handles a SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> SyncOutcome {
        let fail = |e| SyncOutcome::Reply(Reply::Now(SyncResult::error(e)));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !self.members.contains_key(member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        if self.is_fenced(member_id, instance_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if generation != self.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let m = &mut self.members[member_id];
                m.heartbeat_deadline = now + m.session_timeout_ms as i64;
                SyncOutcome::Reply(Reply::Now(self.sync_result(member_id)))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let m = &mut self.members[member_id];
                m.sync_waiter = Some(tx);
                m.heartbeat_deadline = now + m.session_timeout_ms as i64;
                let is_leader = self.leader.as_deref() == Some(member_id);
                if !is_leader || self.pending_assignment.is_some() {
                    return SyncOutcome::Reply(Reply::Later(rx));
                }
                let mut by_member: HashMap<String, Bytes> = assignments
                    .into_iter()
                    .filter(|(id, _)| self.members.contains_key(id))
                    .collect();
                for id in self.members.keys() {
                    by_member.entry(id.clone()).or_default();
                }
                let value = self.to_value_with(now, |id| by_member.get(id).cloned().unwrap_or_default());
                self.pending_assignment = Some((self.generation, by_member));
                SyncOutcome::Store { value, generation: self.generation, reply: rx }
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
        }
    }

    /// The leader's assignment for `generation` was stored (or not).
    pub fn finish_assignment(&mut self, generation: i32, stored: Result<(), ResponseError>, now: i64) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        let Some((_, assignments)) = self.pending_assignment.take() else { return };
        match stored {
            Ok(()) => {
                for (id, m) in self.members.iter_mut() {
                    m.assignment = assignments.get(id).cloned().unwrap_or_default();
                }
                self.state = GroupState::Stable;
                self.state_timestamp = now;
                self.sync_deadline = None;
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in ids {
                    let result = self.sync_result(&id);
                    let m = &mut self.members[&id];
                    if let Some(tx) = m.sync_waiter.take() {
                        let _ = tx.send(result);
                        m.heartbeat_deadline = now + m.session_timeout_ms as i64;
                    }
                }
            }
            Err(error) => {
                for m in self.members.values_mut() {
                    if let Some(tx) = m.sync_waiter.take() {
                        let _ = tx.send(SyncResult::error(error));
                    }
                }
                self.prepare_rebalance(now);
            }
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: i64) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty => return Err(ResponseError::UnknownMemberId),
            _ => {}
        }
        if self.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else { return Err(ResponseError::UnknownMemberId) };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        m.heartbeat_deadline = now + m.session_timeout_ms as i64;
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Handles one member of a LeaveGroup.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: i64) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => return Err(ResponseError::UnknownMemberId),
                Some(holder) if !member_id.is_empty() && holder != member_id => return Err(ResponseError::FencedInstanceId),
                Some(holder) => holder.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending_members.remove(&id).is_some() {
            self.maybe_complete_join(now);
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id, now);
        Ok(())
    }

    fn remove_member(&mut self, member_id: &str, now: i64) {
        let Some(mut m) = self.members.shift_remove(member_id) else { return };
        m.fail_waiters(ResponseError::UnknownMemberId, member_id);
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Advances time: ends waits whose deadline passed and expires silent members.
    /// Returns the ids of expired members, for logging.
    pub fn tick(&mut self, now: i64) -> Vec<String> {
        if self.state == GroupState::PreparingRebalance && self.join_deadline.is_some_and(|d| d <= now) {
            match self.initial_delay {
                Some(delay) if delay.new_member_added && delay.remaining_ms > 0 => {
                    let step = self.initial_delay_ms.min(delay.remaining_ms);
                    self.initial_delay = Some(InitialDelay { remaining_ms: delay.remaining_ms - step, new_member_added: false });
                    self.join_deadline = Some(now + step);
                }
                _ => {
                    self.initial_delay = None;
                    self.complete_join(now);
                }
            }
        }
        let mut expired = Vec::new();
        if self.state == GroupState::CompletingRebalance && self.sync_deadline.is_some_and(|d| d <= now) {
            // The leader never sent the assignment (or members never asked for theirs).
            let silent: Vec<String> =
                self.members.iter().filter(|(_, m)| m.sync_waiter.is_none()).map(|(id, _)| id.clone()).collect();
            for id in &silent {
                if let Some(mut m) = self.members.shift_remove(id) {
                    m.fail_waiters(ResponseError::UnknownMemberId, id);
                    if let Some(instance) = &m.instance_id {
                        self.static_members.remove(instance);
                    }
                }
            }
            expired.extend(silent);
            self.prepare_rebalance(now);
        }
        let lapsed: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.heartbeat_deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lapsed {
            self.remove_member(id, now);
        }
        expired.extend(lapsed);
        let before = self.pending_members.len();
        self.pending_members.retain(|_, deadline| *deadline > now);
        if self.pending_members.len() != before {
            self.maybe_complete_join(now);
        }
        expired
    }

    /// Checks an OffsetCommit's member and generation (Kafka's rules for classic groups;
    /// generation < 0 on an empty group is a standalone commit).
    pub fn validate_commit(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: i64) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        let Some(m) = self.members.get_mut(member_id) else { return Err(ResponseError::UnknownMemberId) };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        m.heartbeat_deadline = now + m.session_timeout_ms as i64;
        Ok(())
    }

    /// Records a committed offset whose record is at `log_offset` (a later record wins,
    /// whatever order the writes finish in). `None` deletes it.
    pub fn apply_offset(&mut self, topic: &str, partition: i32, value: Option<OffsetValue>, log_offset: i64) {
        let key = (topic.to_string(), partition);
        if self.offsets.get(&key).is_some_and(|o| o.log_offset > log_offset) {
            return;
        }
        match value {
            Some(value) => {
                self.offsets.insert(key, StoredOffset { value, log_offset });
            }
            None => {
                self.offsets.remove(&key);
            }
        }
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Option<&StoredOffset> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    /// Every committed offset, sorted by topic and partition.
    pub fn offsets(&self) -> Vec<(String, i32, StoredOffset)> {
        let mut all: Vec<_> = self.offsets.iter().map(|((t, p), o)| (t.clone(), *p, o.clone())).collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Topics the members subscribe to, when the subscriptions can be read (consumer
    /// protocol); `None` when they cannot.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let mut metadata = m.metadata_for(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            let _ = bytes::Buf::get_i16(&mut metadata);
            let subscription = ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)).ok()?;
            topics.extend(subscription.topics.into_iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    /// Whether DeleteGroups may remove the group.
    pub fn check_deletable(&self) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => Ok(()),
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }

    /// Marks the group deleted (or unloaded): parked requests are told to find the
    /// coordinator again.
    pub fn mark_dead(&mut self, error: ResponseError) {
        for (id, m) in self.members.iter_mut() {
            m.fail_waiters(error, id);
        }
        self.state = GroupState::Dead;
    }

    /// The record describing the group now.
    pub fn to_value(&self, now: i64) -> GroupValue {
        self.to_value_with(now, |id| self.members.get(id).map(|m| m.assignment.clone()).unwrap_or_default())
    }

    fn to_value_with(&self, now: i64, assignment: impl Fn(&str) -> Bytes) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: now,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberValue {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: assignment(id),
                })
                .collect(),
        }
    }

    /// Restores the membership from a stored record (a coordinator taking over). Members
    /// must heartbeat within their session timeout from `now` or they expire.
    pub fn load(&mut self, value: GroupValue, now: i64) {
        self.generation = value.generation;
        self.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
        self.protocol = value.protocol.clone();
        self.leader = value.leader.clone();
        self.state_timestamp = if value.current_state_timestamp > 0 { value.current_state_timestamp } else { now };
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        let protocol = value.protocol.clone().unwrap_or_default();
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members.insert(instance.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id,
                Member {
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    heartbeat_deadline: now + m.session_timeout_ms as i64,
                },
            );
        }
        self.state = if self.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
    }

    /// The group's membership record was deleted (a tombstone): no members remain.
    pub fn clear_membership(&mut self) {
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.protocol = None;
        self.leader = None;
        self.state = GroupState::Empty;
    }

    /// Members for DescribeGroups: metadata and assignment only once stable, as Kafka.
    pub fn describe_members(&self) -> Vec<MemberDescription> {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata_for(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect()
    }

}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;

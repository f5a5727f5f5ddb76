//! The metadata quorum as the rest of the node sees it: who the active controller is,
//! and a [`ControllerApi`] that takes a command to it wherever it runs.
//!
//! Only the Raft leader decides. [`Quorum::submit`] runs a command on the local
//! [`Controller`] when this node leads, and otherwise sends it over gRPC to the leader,
//! retrying through elections (NOT_CONTROLLER, unreachable peers) until a deadline.
//! [`ControllerGrpcService`] is the receiving side, which refuses commands unless this
//! node is the leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::BasicNode;
use rafka_metadata::controller::{ControllerApi, ControllerRequest, ControllerResponse, QuorumReplica, QuorumState};
use rafka_metadata::log::BoxFuture;
use rafka_metadata::{Controller, ControllerError, MetadataError};
use rafka_raft::{NodeId, Raft};
use rafka_rpc::controller_service_client::ControllerServiceClient;
use rafka_rpc::controller_service_server::ControllerService;
use rafka_rpc::{ControllerCommand, ControllerReply};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

/// How long a connection probe of a reported broker may take before it counts as gone.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a forwarded command keeps retrying through elections before giving up.
pub const DEFAULT_SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Quorum {
    node_id: i32,
    raft: Raft,
    controller: Arc<Controller>,
    /// The listener (same name on every node) whose endpoint is a node's gRPC address.
    inter_broker_listener: Option<String>,
    clients: parking_lot::Mutex<HashMap<NodeId, ControllerServiceClient<Channel>>>,
    /// `controller.quorum.voters`: where to look for the controller before this node
    /// knows the Raft membership (a broker-only node that has not joined yet).
    bootstrap_voters: BTreeMap<NodeId, String>,
    submit_timeout: Duration,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

type Reply = Result<ControllerResponse, ControllerError>;

fn unavailable(why: impl Into<String>) -> ControllerError {
    ControllerError::Log(MetadataError::Unavailable(why.into()))
}

impl Quorum {
    pub fn new(
        node_id: i32,
        raft: Raft,
        controller: Arc<Controller>,
        inter_broker_listener: Option<String>,
        bootstrap_voters: BTreeMap<NodeId, String>,
    ) -> Quorum {
        Quorum {
            node_id,
            raft,
            controller,
            inter_broker_listener,
            clients: parking_lot::Mutex::new(HashMap::new()),
            bootstrap_voters,
            submit_timeout: DEFAULT_SUBMIT_TIMEOUT,
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The active controller (Raft leader) as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id as NodeId)
    }

    fn address_of(&self, node: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone())
            .or_else(|| self.bootstrap_voters.get(&node).cloned())
    }

    /// With no known leader, asks each configured voter in turn; the leader takes the
    /// command, the others answer NOT_CONTROLLER.
    async fn forward_to_any_voter(&self, request: &ControllerRequest) -> Reply {
        let mut last = unavailable("no controller has been elected yet");
        for voter in self.bootstrap_voters.keys().filter(|v| **v != self.node_id as NodeId) {
            match self.forward(*voter, request).await {
                Err(e) if Self::retriable(&e) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Runs a command here, as the leader. Newly registered brokers that are not voters
    /// join the quorum as learners, so every node holds the metadata log.
    pub async fn handle_locally(&self, request: ControllerRequest) -> Reply {
        if !self.is_leader() {
            return Err(ControllerError::Log(MetadataError::NotController));
        }
        let learner = match (&request, &self.inter_broker_listener) {
            (ControllerRequest::RegisterBroker { registration, .. }, Some(listener)) => registration
                .endpoints
                .iter()
                .find(|e| &e.listener == listener)
                .map(|e| (registration.broker_id as NodeId, format!("{}:{}", e.host, e.port))),
            _ => None,
        };
        if matches!(request, ControllerRequest::DescribeQuorum) {
            return Ok(ControllerResponse::Quorum(self.quorum_state()));
        }
        if let ControllerRequest::BrokerUnreachable { broker_id, reporter } = &request {
            if self.probe_reachable(*broker_id).await {
                debug!(broker = broker_id, reporter, "reported broker answers a connection probe; not fencing it");
                return Ok(ControllerResponse::Done { offset: self.controller.log().image().offset });
            }
        }
        let reply = self.controller.handle(request).await?;
        if let Some((id, addr)) = learner {
            let known = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                metrics.membership_config.membership().get_node(&id).is_some()
            };
            if !known {
                info!(node = id, %addr, "adding broker to the metadata quorum as a learner");
                if let Err(e) = self.raft.add_learner(id, BasicNode::new(addr), false).await {
                    warn!(node = id, error = %e, "cannot add learner");
                }
            }
        }
        Ok(reply)
    }

    /// Whether `broker`'s inter-broker port accepts a TCP connection within
    /// [`PROBE_TIMEOUT`]. A refused or unanswered connection means the process (or its
    /// host) is gone: a live broker's kernel accepts even while the process is busy. A
    /// broker with no inter-broker endpoint cannot be probed and counts as reachable.
    async fn probe_reachable(&self, broker: i32) -> bool {
        let image = self.controller.log().image();
        let Some(listener) = &self.inter_broker_listener else { return true };
        let Some(endpoint) = image
            .brokers
            .get(&broker)
            .and_then(|b| b.endpoints.iter().find(|e| &e.listener == listener))
        else {
            return true;
        };
        let address = format!("{}:{}", endpoint.host, endpoint.port);
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&address)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                info!(broker, %address, error = %e, "reported broker refuses connections: fencing it now");
                false
            }
            Err(_) => {
                info!(broker, %address, timeout_ms = PROBE_TIMEOUT.as_millis() as u64, "reported broker does not answer a connection probe: fencing it now");
                false
            }
        }
    }

    /// Leader, term, commit point and each replica's log end, from this (leader) node's
    /// Raft metrics. Offsets are exclusive ends: last index + 1.
    fn quorum_state(&self) -> QuorumState {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let end = |index: Option<u64>| index.map(|i| i as i64 + 1).unwrap_or(0);
        let replica = |id: NodeId| {
            let log_end_offset = if id == m.id {
                end(m.last_log_index)
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .map(|matched| end(matched.map(|l| l.index)))
                    .unwrap_or(-1)
            };
            QuorumReplica { node_id: id as i32, log_end_offset }
        };
        QuorumState {
            leader_id: m.current_leader.map(|l| l as i32).unwrap_or(-1),
            leader_epoch: m.current_term as i32,
            high_watermark: end(m.last_applied.map(|l| l.index)),
            voters: membership.voter_ids().map(replica).collect(),
            observers: membership.learner_ids().map(replica).collect(),
        }
    }

    async fn client(&self, leader: NodeId) -> Result<ControllerServiceClient<Channel>, ControllerError> {
        if let Some(c) = self.clients.lock().get(&leader) {
            return Ok(c.clone());
        }
        let addr = self
            .address_of(leader)
            .ok_or_else(|| unavailable(format!("no address known for controller {leader}")))?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| unavailable(format!("bad controller address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| unavailable(format!("cannot reach controller {leader} at {addr}: {e}")))?;
        let client = ControllerServiceClient::new(channel);
        self.clients.lock().insert(leader, client.clone());
        Ok(client)
    }

    async fn forward(&self, leader: NodeId, request: &ControllerRequest) -> Reply {
        let payload = serde_json::to_vec(request).map_err(|e| unavailable(format!("cannot encode command: {e}")))?;
        let mut client = self.client(leader).await?;
        let mut message = tonic::Request::new(ControllerCommand { payload });
        message.set_timeout(self.submit_timeout);
        match client.submit(message).await {
            Ok(reply) => serde_json::from_slice::<Reply>(&reply.into_inner().payload)
                .map_err(|e| unavailable(format!("undecodable controller reply: {e}")))?,
            Err(status) => {
                self.clients.lock().remove(&leader);
                Err(unavailable(format!("controller {leader}: {status}")))
            }
        }
    }

    fn retriable(e: &ControllerError) -> bool {
        matches!(e, ControllerError::Log(MetadataError::NotController | MetadataError::Unavailable(_)))
    }

    /// Takes `request` to the active controller, retrying through elections.
    pub async fn submit_with_retry(&self, request: ControllerRequest) -> Reply {
        let deadline = Instant::now() + self.submit_timeout;
        loop {
            let attempt = match self.leader() {
                // A leader that lost its majority would wait for ever on the commit.
                Some(leader) if leader == self.node_id as NodeId => {
                    match tokio::time::timeout(self.submit_timeout, self.handle_locally(request.clone())).await {
                        Ok(reply) => reply,
                        Err(_) => Err(unavailable("the metadata quorum did not commit within the timeout")),
                    }
                }
                Some(leader) => self.forward(leader, &request).await,
                None => self.forward_to_any_voter(&request).await,
            };
            match attempt {
                Err(e) if Self::retriable(&e) && Instant::now() < deadline => {
                    debug!(error = %e, "controller command not taken; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }
}

impl ControllerApi for Quorum {
    fn submit(&self, request: ControllerRequest) -> BoxFuture<'_, Reply> {
        Box::pin(self.submit_with_retry(request))
    }
}

/// The receiving side of forwarded controller commands.
pub struct ControllerGrpcService {
    quorum: Arc<Quorum>,
}

impl ControllerGrpcService {
    pub fn new(quorum: Arc<Quorum>) -> ControllerGrpcService {
        ControllerGrpcService { quorum }
    }
}

#[tonic::async_trait]
impl ControllerService for ControllerGrpcService {
    async fn submit(&self, request: tonic::Request<ControllerCommand>) -> Result<tonic::Response<ControllerReply>, tonic::Status> {
        let command: ControllerRequest = serde_json::from_slice(&request.into_inner().payload)
            .map_err(|e| tonic::Status::invalid_argument(format!("undecodable controller command: {e}")))?;
        let reply = self.quorum.handle_locally(command).await;
        let payload = serde_json::to_vec(&reply).map_err(|e| tonic::Status::internal(format!("cannot encode reply: {e}")))?;
        Ok(tonic::Response::new(ControllerReply { payload }))
    }
}

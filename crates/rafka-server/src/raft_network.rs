//! The metadata quorum's transport: openraft's RPCs carried over gRPC.
//!
//! [`GrpcNetwork`] hands openraft one client per peer; each RPC is the openraft
//! request serialised as JSON inside a `RaftMessage`. "Unreachable" (cannot connect —
//! openraft backs off) is kept apart from other network errors and from errors the
//! remote Raft returned. [`RaftGrpcService`] is the receiving side.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use rafka_raft::{NodeId, Raft, TypeConfig};
use rafka_rpc::raft_service_client::RaftServiceClient;
use rafka_rpc::raft_service_server::RaftService;
use rafka_rpc::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a TCP connection to a peer before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Creates gRPC clients for Raft peers.
#[derive(Debug, Clone, Default)]
pub struct GrpcNetwork;

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcPeer {
        GrpcPeer {
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

/// One peer: a lazily connected, reused gRPC channel.
pub struct GrpcPeer {
    target: NodeId,
    addr: String,
    client: Option<RaftServiceClient<Channel>>,
}

/// How an RPC failed before the remote Raft answered.
enum Transport {
    Unreachable(String),
    Network(String),
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Transport> {
    serde_json::to_vec(value).map_err(|e| Transport::Network(format!("cannot encode request: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Transport> {
    serde_json::from_slice(bytes).map_err(|e| Transport::Network(format!("cannot decode response: {e}")))
}

impl GrpcPeer {
    async fn client(&mut self) -> Result<RaftServiceClient<Channel>, Transport> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| Transport::Unreachable(format!("bad peer address {}: {e}", self.addr)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Transport::Unreachable(format!("cannot connect to node {} at {}: {e}", self.target, self.addr)))?;
        let client = RaftServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Sends one RPC; returns the remote's JSON `Result<Resp, Err>`.
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned>(
        &mut self,
        which: Rpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, E>, Transport> {
        let payload = encode(request)?;
        let mut client = self.client().await?;
        let mut message = tonic::Request::new(RaftMessage { payload });
        message.set_timeout(timeout);
        let result = match which {
            Rpc::Append => client.append_entries(message).await,
            Rpc::Vote => client.vote(message).await,
            Rpc::Snapshot => client.install_snapshot(message).await,
        };
        match result {
            Ok(reply) => decode(&reply.into_inner().payload),
            Err(status) => {
                // A broken channel is rebuilt on the next call.
                self.client = None;
                Err(match status.code() {
                    tonic::Code::Unavailable => Transport::Unreachable(status.to_string()),
                    _ => Transport::Network(status.to_string()),
                })
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

/// Sends one RPC and sorts its failure into openraft's error kinds.
async fn send<Req, Resp, E>(
    peer: &mut GrpcPeer,
    which: Rpc,
    request: &Req,
    option: &RPCOption,
) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    match peer.call::<Req, Resp, E>(which, request, option.hard_ttl()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
            peer.target,
            BasicNode::new(&peer.addr),
            remote,
        ))),
        Err(Transport::Unreachable(m)) => Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m)))),
        Err(Transport::Network(m)) => Err(RPCError::Network(NetworkError::new(&std::io::Error::other(m)))),
    }
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        send(self, Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> {
        send(self, Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        send(self, Rpc::Vote, &rpc, &option).await
    }
}

/// The receiving side of the Raft transport.
pub struct RaftGrpcService {
    raft: Raft,
}

impl RaftGrpcService {
    pub fn new(raft: Raft) -> RaftGrpcService {
        RaftGrpcService { raft }
    }
}

fn bad_request(e: serde_json::Error) -> tonic::Status {
    tonic::Status::invalid_argument(format!("undecodable Raft message: {e}"))
}

fn reply<T: Serialize>(value: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    serde_json::to_vec(value)
        .map(|payload| tonic::Response::new(RaftMessage { payload }))
        .map_err(|e| tonic::Status::internal(format!("cannot encode Raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for RaftGrpcService {
    async fn append_entries(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&request.into_inner().payload).map_err(bad_request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = serde_json::from_slice(&request.into_inner().payload).map_err(bad_request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = serde_json::from_slice(&request.into_inner().payload).map_err(bad_request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}

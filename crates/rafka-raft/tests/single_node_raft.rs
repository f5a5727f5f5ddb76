//! A real single-voter openraft node on [`LogStore`] and [`StateMachine`], driven
//! through [`RaftMetadataLog`]: commits land in the image, and a restart from the
//! same directories comes back with the same image.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, ServerState};
use rafka_metadata::{MetadataLog, MetadataRecord};
use rafka_raft::{raft_config, LogStore, NodeId, Raft, RaftMetadataLog, StateMachine, TypeConfig};
use uuid::Uuid;

/// A network where every peer is unreachable: a single voter never needs one.
struct NoNetwork;

struct NoPeer;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::new(
        io::ErrorKind::NotConnected,
        "this test has no network",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
    }
}

/// Starts node 1 on the stores in `dir` and waits until it leads.
async fn start(dir: &std::path::Path, initialize: bool) -> RaftMetadataLog {
    start_with(dir, initialize, raft_config("single-node-test")).await
}

async fn start_with(
    dir: &std::path::Path,
    initialize: bool,
    config: openraft::Config,
) -> RaftMetadataLog {
    let log_store = LogStore::open(&dir.join("raft")).unwrap();
    let state_machine = StateMachine::open(&dir.join("raft")).unwrap();
    let images = state_machine.subscribe();
    let config = Arc::new(config);
    let raft = Raft::new(1, config, NoNetwork, log_store, state_machine)
        .await
        .unwrap();
    if initialize {
        let members = BTreeMap::from([(
            1,
            BasicNode {
                addr: String::new(),
            },
        )]);
        raft.initialize(members).await.unwrap();
    }
    raft.wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "node 1 leads")
        .await
        .unwrap();
    RaftMetadataLog::new(raft, images)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_the_image_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();

    tracing::info!("--- phase 1: a fresh node forms a one-voter quorum and commits two batches");
    let log = start(dir.path(), true).await;
    assert_eq!(log.current_leader().await, Some(1));
    let first = log.commit(vec![topic("a"), topic("b")]).await.unwrap();
    let second = log.commit(vec![topic("c")]).await.unwrap();
    assert!(second > first, "log indexes grow: {first} then {second}");
    let image = log.image();
    assert_eq!(image.offset, second);
    let names: Vec<&str> = image.topics.values().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["a", "b", "c"] {
        assert!(
            image.topic_by_name(name).is_some(),
            "topic {name} in {names:?}"
        );
    }

    tracing::info!("--- phase 2: shut down and restart from the same directories");
    log.raft().shutdown().await.unwrap();
    drop(log);
    let log = start(dir.path(), false).await;
    let mut images = log.subscribe();
    let restarted = images
        .wait_for(|restored| restored.offset >= second)
        .await
        .unwrap()
        .clone();
    for name in ["a", "b", "c"] {
        assert_eq!(
            restarted.topic_by_name(name).map(|t| t.topic_id),
            image.topic_by_name(name).map(|t| t.topic_id),
            "topic {name} after restart"
        );
    }
    assert_eq!(restarted.topics, image.topics);

    tracing::info!("--- phase 3: the restarted leader accepts new commits");
    let third = log.commit(vec![topic("d")]).await.unwrap();
    assert!(third > second);
    assert!(log.image().topic_by_name("d").is_some());
    log.raft().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_snapshot_and_purge_starts_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot only when asked, and keep no log behind it, so the restart below has
    // nothing but the snapshot to rebuild the image from.
    let config = openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..raft_config("snapshot-test")
    };

    tracing::info!("--- phase 1: commit, snapshot, purge the log behind the snapshot");
    let log = start_with(dir.path(), true, config.clone()).await;
    log.commit(vec![topic("a")]).await.unwrap();
    let last = log.commit(vec![topic("b"), topic("c")]).await.unwrap();
    let wait = log.raft().wait(Some(Duration::from_secs(10)));
    // Metrics trail the apply that answered the commit.
    let metrics = wait
        .applied_index(Some(last), "metrics caught up")
        .await
        .unwrap();
    let last_log_id = metrics.last_applied.unwrap();
    log.raft().trigger().snapshot().await.unwrap();
    wait.snapshot(last_log_id, "snapshot built").await.unwrap();
    wait.purged(Some(last_log_id), "log purged up to the snapshot")
        .await
        .unwrap();
    let image = log.image();
    log.raft().shutdown().await.unwrap();
    drop(log);

    tracing::info!("--- phase 2: the reopened state machine holds the image before raft starts");
    let reopened = StateMachine::open(&dir.path().join("raft")).unwrap();
    assert_eq!(*reopened.image(), *image);
    drop(reopened);

    tracing::info!("--- phase 3: raft restarts on the purged log and keeps committing");
    let log = start_with(dir.path(), false, config).await;
    assert_eq!(log.image().topics, image.topics);
    let next = log.commit(vec![topic("d")]).await.unwrap();
    assert!(next > last);
    assert_eq!(log.image().topics.len(), 4);
    log.raft().shutdown().await.unwrap();
}

//! One Rafka node: start-up in dependency order, background duties, and a graceful
//! shutdown that undoes start-up in reverse.
//!
//! Start-up: lock the log directories → check their identity → bind every listener
//! (fail fast, before anything is written) → open the Raft storage and start the
//! metadata quorum (serving its gRPC port) → register this broker with the active
//! controller, which settles the cluster id → open the hosted partitions (crash
//! recovery happens here) → serve Kafka clients, heartbeat, and (while leading) fence
//! silent brokers.
//!
//! Shutdown is controlled: the broker first asks the controller to fence it, so
//! leadership of its partitions moves to other in-sync replicas while it can still
//! answer; then it stops accepting, lets open connections finish the requests they
//! started, stops background tasks and Raft, and closes every partition cleanly.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::BasicNode;
use rafka_kafka::{BrokerContext, BrokerLimits, ConnectionTracker, ReplicaManager};
use rafka_metadata::controller::{ControllerApi, ControllerRequest, ControllerResponse, TopicCreationDefaults};
use rafka_replication::follower::Fetchers;
use rafka_replication::isr::IsrChanges;
use rafka_replication::leader::LeaderService;
use rafka_replication::{ReplicationSettings, SuspectReporter};
use rafka_metadata::records::{BrokerEndpoint, BrokerRegistration};
use rafka_metadata::{Controller, ControllerError, MetadataImage, MetadataLog};
use rafka_raft::{LogStore, NodeId, Raft, RaftMetadataLog, RaftStorageError, StateMachine};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::meta_properties::{self, MetaPropertiesError};
use crate::quorum::{ControllerGrpcService, Quorum};
use crate::raft_network::{GrpcNetwork, RaftGrpcService};

/// How long open connections get to finish their started requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long background duties get to notice a shutdown before they are aborted.
const TASK_GRACE: Duration = Duration::from_secs(2);
/// How long start-up waits for a quorum to accept this broker's registration.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("log directory {path} is in use by another process (lock file {path}/.lock is held)")]
    DirLocked { path: String },
    #[error("cannot use log directory {path}: {message}")]
    Dir { path: String, message: String },
    #[error("cannot listen on {address} for listener {listener}: {message}")]
    Bind { listener: String, address: String, message: String },
    #[error(transparent)]
    Identity(#[from] MetaPropertiesError),
    #[error("metadata storage: {0}")]
    RaftStorage(#[from] RaftStorageError),
    #[error("metadata quorum: {0}")]
    Raft(String),
    #[error("metadata: {0}")]
    Controller(#[from] ControllerError),
    #[error("configured cluster.id {configured} does not match the cluster id {actual} of the quorum")]
    ClusterIdMismatch { configured: String, actual: String },
    #[error("this node's data belongs to cluster {stored} but the quorum's cluster id is {quorum}; refusing to join")]
    WrongCluster { stored: String, quorum: String },
    #[error("could not register with the metadata quorum within {seconds} s (is a majority of controller.quorum.voters running?): {last_error}")]
    RegistrationTimeout { seconds: u64, last_error: String },
}

fn lock_dirs(dirs: &[PathBuf]) -> Result<Vec<File>, NodeError> {
    let mut unique = dirs.to_vec();
    unique.sort();
    unique.dedup();
    unique
        .iter()
        .map(|dir| {
            let dir_err = |e: std::io::Error| NodeError::Dir {
                path: dir.display().to_string(),
                message: e.to_string(),
            };
            std::fs::create_dir_all(dir).map_err(dir_err)?;
            let file = File::create(dir.join(".lock")).map_err(dir_err)?;
            match file.try_lock() {
                Ok(()) => Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::DirLocked {
                    path: dir.display().to_string(),
                }),
                Err(std::fs::TryLockError::Error(e)) => Err(dir_err(e)),
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn bind(name: &str, host: &str, port: u16) -> Result<TcpListener, NodeError> {
    let address = format!("{host}:{port}");
    TcpListener::bind(&address).await.map_err(|e| NodeError::Bind {
        listener: name.to_string(),
        address,
        message: e.to_string(),
    })
}

/// A started node. Dropping it without [`Node::shutdown`] aborts its tasks.
pub struct Node {
    node_id: i32,
    addresses: Vec<(String, SocketAddr)>,
    replicas: Arc<ReplicaManager>,
    fetchers: Arc<Fetchers>,
    quorum: Arc<Quorum>,
    stop: watch::Sender<bool>,
    /// Heartbeats stop before the controlled-shutdown request, not after it.
    heartbeats: tokio::task::AbortHandle,
    listeners: JoinSet<()>,
    tasks: JoinSet<()>,
    span: tracing::Span,
    _locks: Vec<File>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("node_id", &self.node_id).field("addresses", &self.addresses).finish()
    }
}

/// Runs a node until `shutdown` resolves, then shuts it down gracefully.
pub async fn run(config: BrokerConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let node = Node::start(config).await?;
    shutdown.await;
    node.shutdown().await;
    Ok(())
}

impl Node {
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Where each listener actually listens (useful with port 0). The inter-broker
    /// (gRPC) listener, if any, is included under its name.
    pub fn listen_addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// The metadata quorum as this node sees it.
    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    /// Starts a node; see the module doc for the order.
    pub async fn start(config: BrokerConfig) -> Result<Node, NodeError> {
        let span = tracing::info_span!("node", node = config.node_id);
        Node::start_inner(config, span.clone()).instrument(span).await
    }

    async fn start_inner(mut config: BrokerConfig, span: tracing::Span) -> Result<Node, NodeError> {
        let started = Instant::now();
        let node_id = config.node_id;
        let mut all_dirs = config.log_dirs.clone();
        all_dirs.push(config.metadata_log_dir.clone());
        let _locks = lock_dirs(&all_dirs)?;
        let stored_cluster_id = meta_properties::check_dirs(&all_dirs, node_id)?;
        if let (Some(stored), Some(configured)) = (&stored_cluster_id, &config.cluster_id) {
            if stored != configured {
                return Err(NodeError::ClusterIdMismatch { configured: configured.clone(), actual: stored.clone() });
            }
        }

        // Bind everything first: a port conflict fails start-up before anything is written.
        let mut kafka_sockets = Vec::new();
        for listener in &config.listeners {
            kafka_sockets.push((listener.name.clone(), bind(&listener.name, &listener.bind_host, listener.bind_port).await?));
        }
        let grpc_socket = match &config.inter_broker_listener {
            Some(l) => Some(bind(&l.name, &l.bind_host, l.bind_port).await?),
            None => None,
        };
        // A listener on port 0 advertises the port the OS picked (tests, ad-hoc runs).
        let bound = config
            .listeners
            .iter_mut()
            .zip(kafka_sockets.iter().map(|(_, s)| s))
            .chain(config.inter_broker_listener.as_mut().zip(grpc_socket.as_ref()));
        for (listener, socket) in bound {
            if listener.advertised_port == 0 {
                if let Ok(addr) = socket.local_addr() {
                    listener.advertised_port = addr.port();
                }
            }
        }
        let my_grpc_address = config
            .inter_broker_listener
            .as_ref()
            .map(|l| format!("{}:{}", l.advertised_host, l.advertised_port))
            .unwrap_or_default();

        // The metadata quorum.
        let metadata_dir = config.metadata_log_dir.join(rafka_kafka::replica_manager::METADATA_DIR_NAME);
        let log_store = LogStore::open(&metadata_dir.join("raft-log"))?;
        let state_machine = StateMachine::open(&metadata_dir.join("snapshots"))?;
        let images = state_machine.subscribe();
        let raft_config = Arc::new(rafka_raft::raft_config("rafka-metadata"));
        let raft = Raft::new(node_id as NodeId, raft_config, GrpcNetwork, log_store, state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;

        let metadata: Arc<dyn MetadataLog> = Arc::new(RaftMetadataLog::new(raft.clone(), images.clone()));
        let controller = Arc::new(
            Controller::new(
                metadata.clone(),
                TopicCreationDefaults {
                    num_partitions: config.num_partitions,
                    replication_factor: config.default_replication_factor,
                },
            )
            .with_session_timeout(Duration::from_millis(config.broker_session_timeout_ms))
            .with_unclean_leader_election(config.unclean_leader_election_enable)
            .with_auto_leader_rebalance(config.auto_leader_rebalance_enable),
        );
        let quorum = Arc::new(Quorum::new(
            node_id,
            raft.clone(),
            controller.clone(),
            config.inter_broker_listener.as_ref().map(|l| l.name.clone()),
            config.quorum_voters.iter().map(|(id, addr)| (*id as NodeId, addr.clone())).collect(),
        ));

        // Hosted partitions are opened once the first image says which they are; the
        // replication service is served from the start and refuses until then.
        let replicas = Arc::new(
            ReplicaManager::new(node_id, config.log_dirs.clone(), config.topic_defaults())
                .map_err(|e| NodeError::Dir {
                    path: config.log_dirs[0].display().to_string(),
                    message: e.to_string(),
                })?
                .with_writeback_interval_bytes(config.log_writeback_interval_bytes),
        );
        let controller_api: Arc<dyn ControllerApi> = quorum.clone();
        let failover_gate = Arc::new(rafka_kafka::failover_gate::FailoverGate::new());
        let suspects = SuspectReporter::new(node_id, controller_api.clone(), replicas.clone(), failover_gate.clone());
        let isr_changes = IsrChanges::new(node_id, controller_api.clone(), replicas.clone());
        let replication_settings = ReplicationSettings {
            node_id,
            inter_broker_listener: config.inter_broker_listener.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
            fetch_max_wait: Duration::from_millis(config.replica_fetch_wait_max_ms),
            fetch_response_max_bytes: config.replica_fetch_response_max_bytes,
            replica_lag_time_max: Duration::from_millis(config.replica_lag_time_max_ms),
        };
        let fetchers = Arc::new(Fetchers::new(replication_settings.clone(), replicas.clone(), suspects.clone()));

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addresses = Vec::new();
        if let Some(socket) = grpc_socket {
            let address = socket.local_addr().map_err(|e| NodeError::Bind {
                listener: "inter-broker".into(),
                address: String::new(),
                message: e.to_string(),
            })?;
            let name = config.inter_broker_listener.as_ref().map(|l| l.name.clone()).unwrap_or_default();
            info!(listener = %name, %address, "serving node-to-node gRPC");
            addresses.push((name, address));
            let router = tonic::transport::Server::builder()
                .add_service(rafka_rpc::raft_service_server::RaftServiceServer::new(RaftGrpcService::new(raft.clone())).max_decoding_message_size(64 << 20))
                .add_service(rafka_rpc::controller_service_server::ControllerServiceServer::new(ControllerGrpcService::new(quorum.clone())))
                .add_service(rafka_rpc::replication_service_server::ReplicationServiceServer::new(LeaderService::new(
                    replicas.clone(),
                    metadata.clone(),
                    isr_changes.clone(),
                    suspects.clone(),
                    replication_settings.follower_refresh(),
                    stop_rx.clone(),
                )));
            let mut stop = stop_rx.clone();
            // The builder's tcp_nodelay only covers listeners tonic binds itself: set it on
            // ours, or Nagle holds the tail of every large replication answer until the
            // follower's delayed ACK (~40 ms per fetch round trip).
            let incoming = tonic::transport::server::TcpIncoming::from(socket).with_nodelay(Some(true));
            tasks.spawn(
                async move {
                    let shutdown = async move { rafka_kafka::server::until_shutdown(&mut stop).await };
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
                        warn!(error = %e, "gRPC server stopped with an error");
                    }
                }
                .in_current_span(),
            );
        }

        if config.is_controller && !raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))? {
            let voters: BTreeMap<NodeId, BasicNode> = if config.quorum_voters.is_empty() {
                BTreeMap::from([(node_id as NodeId, BasicNode::new(my_grpc_address.clone()))])
            } else {
                config.quorum_voters.iter().map(|(id, addr)| (*id as NodeId, BasicNode::new(addr.clone()))).collect()
            };
            info!(voters = ?voters.keys().collect::<Vec<_>>(), "bootstrapping the metadata quorum");
            // Every voter bootstraps with the same membership; a peer that already did is fine.
            if let Err(e) = raft.initialize(voters).await {
                info!(error = %e, "quorum already initialized by a peer");
            }
        }

        // Leader duties: fence brokers whose heartbeats stop; give partitions back to
        // their preferred replicas (`auto.leader.rebalance.enable`).
        {
            let quorum = quorum.clone();
            let mut stop = stop_rx.clone();
            let period = Duration::from_millis((config.broker_heartbeat_interval_ms / 2).max(50));
            let rebalance_interval_s = config.leader_imbalance_check_interval_seconds;
            tasks.spawn(
                async move {
                    let mut was_leader = false;
                    let mut ticker = tokio::time::interval(period);
                    let rebalance_every = Duration::from_secs(rebalance_interval_s);
                    let mut last_rebalance = Instant::now();
                    loop {
                        tokio::select! {
                            _ = rafka_kafka::server::until_shutdown(&mut stop) => break,
                            _ = ticker.tick() => {}
                        }
                        let leader = quorum.is_leader();
                        if leader && !was_leader {
                            info!("this node is now the active controller");
                            quorum.controller().reset_liveness();
                        }
                        was_leader = leader;
                        if leader {
                            if let Err(e) = quorum.controller().fence_silent_brokers(Instant::now()).await {
                                warn!(error = %e, "fencing check failed");
                            }
                            if last_rebalance.elapsed() >= rebalance_every {
                                last_rebalance = Instant::now();
                                match quorum.controller().run_preferred_rebalance().await {
                                    Ok(0) => {}
                                    Ok(n) => info!(partitions = n, "moved leadership back to preferred replicas"),
                                    Err(e) => warn!(error = %e, "preferred leader rebalance failed"),
                                }
                            }
                        }
                    }
                }
                .in_current_span(),
            );
        }

        // Register with the active controller; it settles the cluster id.
        let proposed_cluster_id = stored_cluster_id
            .clone()
            .or_else(|| config.cluster_id.clone())
            .unwrap_or_else(meta_properties::new_kafka_id);
        // Every listener is advertised, the inter-broker one too: the controller adds a
        // broker-only node to the quorum at its inter-broker address.
        let endpoints: Vec<BrokerEndpoint> = config
            .listeners
            .iter()
            .chain(config.inter_broker_listener.iter())
            .map(|l| BrokerEndpoint {
                listener: l.name.clone(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
                security_protocol: l.security_protocol.clone(),
            })
            .collect();
        let registration = ControllerRequest::RegisterBroker {
            registration: BrokerRegistration {
                broker_id: node_id,
                incarnation_id: Uuid::new_v4(),
                endpoints,
                rack: config.broker_rack.clone(),
            },
            proposed_cluster_id: proposed_cluster_id.clone(),
            stored_cluster_id: stored_cluster_id.clone(),
        };
        let deadline = Instant::now() + REGISTRATION_TIMEOUT;
        let (registered_at, cluster_id) = loop {
            match quorum.submit_with_retry(registration.clone()).await {
                Ok(ControllerResponse::Registered { offset, cluster_id }) => break (offset, cluster_id),
                Ok(other) => return Err(NodeError::Raft(format!("unexpected registration answer {other:?}"))),
                Err(ControllerError::InconsistentClusterId { stored, cluster, .. }) => {
                    return Err(NodeError::WrongCluster { stored, quorum: cluster })
                }
                Err(e) if Instant::now() < deadline => warn!(error = %e, "waiting for the metadata quorum to accept this broker"),
                Err(e) => {
                    return Err(NodeError::RegistrationTimeout {
                        seconds: REGISTRATION_TIMEOUT.as_secs(),
                        last_error: e.to_string(),
                    })
                }
            }
        };
        if let Some(stored) = &stored_cluster_id {
            if *stored != cluster_id {
                return Err(NodeError::WrongCluster { stored: stored.clone(), quorum: cluster_id });
            }
        }
        if let Some(configured) = &config.cluster_id {
            if *configured != cluster_id {
                return Err(NodeError::ClusterIdMismatch { configured: configured.clone(), actual: cluster_id });
            }
        }
        meta_properties::stamp_dirs(&all_dirs, node_id, &cluster_id)?;

        // Our image must include our own registration before we serve.
        let mut images = images;
        let _ = images.wait_for(|image| image.offset >= registered_at).await;

        let groups = rafka_group::GroupCoordinator::new(
            node_id,
            config.group_coordinator.clone(),
            Arc::new(rafka_kafka::group_log::ReplicaOffsetsLog::new(replicas.clone())),
        );
        let first_image = images.borrow_and_update().clone();
        tokio::task::block_in_place(|| replicas.apply_image(&first_image));
        fetchers.reconcile(&first_image);
        update_group_coordinator(&groups, &first_image, node_id);
        {
            let replicas = replicas.clone();
            let fetchers = fetchers.clone();
            let groups = groups.clone();
            let mut stop = stop_rx.clone();
            tasks.spawn(
                async move {
                    loop {
                        tokio::select! {
                            _ = rafka_kafka::server::until_shutdown(&mut stop) => break,
                            changed = images.changed() => {
                                if changed.is_err() { break; }
                                let image = images.borrow_and_update().clone();
                                tokio::task::block_in_place(|| replicas.apply_image(&image));
                                fetchers.reconcile(&image);
                                update_group_coordinator(&groups, &image, node_id);
                            }
                        }
                    }
                }
                .in_current_span(),
            );
        }
        // Heartbeats keep this broker unfenced.
        let heartbeats = {
            let quorum = quorum.clone();
            let mut stop = stop_rx.clone();
            let interval = Duration::from_millis(config.broker_heartbeat_interval_ms);
            tasks.spawn(
                async move {
                    let mut ticker = tokio::time::interval(interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = rafka_kafka::server::until_shutdown(&mut stop) => break,
                            _ = ticker.tick() => {
                                if let Err(e) = quorum.submit_with_retry(ControllerRequest::Heartbeat { broker_id: node_id }).await {
                                    warn!(error = %e, "heartbeat not acknowledged");
                                }
                            }
                        }
                    }
                }
                .in_current_span(),
            )
        };
        {
            let groups = groups.clone();
            let mut stop = stop_rx.clone();
            tasks.spawn(
                async move {
                    tokio::select! {
                        _ = rafka_kafka::server::until_shutdown(&mut stop) => {}
                        _ = groups.run_ticker() => {}
                    }
                }
                .in_current_span(),
            );
        }
        tasks.spawn(isr_changes.clone().run_shrink_checks(replication_settings.replica_lag_time_max, stop_rx.clone()).in_current_span());
        spawn_periodic(&mut tasks, &stop_rx, config.log_retention_check_interval_ms, {
            let replicas = replicas.clone();
            move || replicas.enforce_retention(now_ms())
        });
        if config.log_cleaner_enable {
            let backoff = Duration::from_millis(config.log_cleaner_backoff_ms);
            tasks.spawn(replicas.clone().run_log_cleaner(backoff, stop_rx.clone()).in_current_span());
        }
        spawn_periodic(&mut tasks, &stop_rx, config.log_flush_offset_checkpoint_interval_ms, {
            let replicas = replicas.clone();
            move || replicas.flush_all()
        });
        // flush.ms (and the durable mode's safety net); idle under the default settings.
        tasks.spawn(replicas.clone().run_log_syncer(stop_rx.clone()).in_current_span());

        let controller_id = {
            let metrics = raft.metrics();
            Arc::new(move || metrics.borrow().current_leader.map(|l| l as i32).unwrap_or(-1)) as Arc<dyn Fn() -> i32 + Send + Sync>
        };
        let ctx = Arc::new(BrokerContext {
            node_id,
            cluster_id: cluster_id.clone(),
            listeners: config.listeners.clone(),
            metadata: metadata.clone(),
            controller: quorum.clone(),
            controller_id,
            replicas: replicas.clone(),
            limits: BrokerLimits {
                auto_create_topics: config.auto_create_topics_enable,
                socket_request_max_bytes: config.socket_request_max_bytes,
                fetch_max_bytes: config.fetch_max_bytes,
                metadata_apply_timeout_ms: 30_000,
            },
            broker_configs: config.effective(),
            producer_ids: rafka_kafka::handlers::producer_ids::ProducerIdAllocator::new(),
            groups: groups.clone(),
            offsets_topic: config.offsets_topic.clone(),
            failover_gate,
        });
        let tracker = ConnectionTracker::new(config.max_connections);
        let mut listeners = JoinSet::new();
        for (name, socket) in kafka_sockets {
            let address = socket.local_addr().map_err(|e| NodeError::Bind {
                listener: name.clone(),
                address: String::new(),
                message: e.to_string(),
            })?;
            addresses.push((name.clone(), address));
            info!(listener = %name, %address, "listening for Kafka clients");
            listeners.spawn(
                rafka_kafka::serve_listener(ctx.clone(), name, socket, tracker.clone(), stop_rx.clone(), DRAIN_TIMEOUT)
                    .in_current_span(),
            );
        }
        info!(
            cluster_id = %cluster_id,
            partitions = replicas.all().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "broker started"
        );
        Ok(Node {
            node_id,
            addresses,
            replicas,
            fetchers,
            quorum,
            stop: stop_tx,
            heartbeats,
            listeners,
            tasks,
            span,
            _locks,
        })
    }

    /// Controlled shutdown: ask the controller to fence this broker (moving partition
    /// leadership to other in-sync replicas), stop accepting, let open connections finish
    /// what they started, stop background tasks and Raft, close every partition cleanly.
    pub async fn shutdown(mut self) {
        let span = self.span.clone();
        async move {
            info!("controlled shutdown: handing off leadership");
            self.heartbeats.abort();
            let unregister = self.quorum.submit_with_retry(ControllerRequest::Unregister { broker_id: self.node_id });
            match tokio::time::timeout(Duration::from_secs(5), unregister).await {
                // Act on our own fencing (give up leadership, answer waiting produces
                // NOT_LEADER_OR_FOLLOWER) before anything stops.
                Ok(Ok(ControllerResponse::Unregistered { offset })) => {
                    self.replicas.wait_applied(offset, Duration::from_secs(2)).await;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "controller did not fence this broker; others will after the session timeout"),
                Err(_) => warn!("controller did not answer the shutdown request in time"),
            }
            // Leave the metadata quorum before the gRPC listener closes: a node that
            // keeps voting while unreachable could win an election and be a controller
            // nobody can reach until it exits.
            self.fetchers.stop_all();
            if let Err(e) = self.quorum.raft().shutdown().await {
                warn!(error = %e, "raft shutdown failed");
            }
            info!("shutting down: no new connections; finishing started requests");
            let _ = self.stop.send(true);
            while self.listeners.join_next().await.is_some() {}
            // Background duties stop at their next turn; one stuck on a commit that no
            // quorum will ever take (the last voter leaving) is aborted after a grace.
            let drained = tokio::time::timeout(TASK_GRACE, async { while self.tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                info!(remaining = self.tasks.len(), "aborting background tasks still busy after the grace period");
                self.tasks.shutdown().await;
            }
            let replicas = self.replicas.clone();
            tokio::task::block_in_place(|| replicas.close_all());
            info!("shutdown complete");
        }
        .instrument(span)
        .await
    }
}

fn spawn_periodic(
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
    interval_ms: u64,
    mut duty: impl FnMut() + Send + 'static,
) {
    let mut stop = stop.clone();
    tasks.spawn(
        async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = rafka_kafka::server::until_shutdown(&mut stop) => break,
                    _ = ticker.tick() => tokio::task::block_in_place(&mut duty),
                }
            }
        }
        .in_current_span(),
    );
}

/// Logs the configuration the node runs with, secrets masked, and warns once about
/// each key that is not a Rafka setting.
pub fn log_configuration(config: &BrokerConfig) {
    for entry in config.effective() {
        let value = match (&entry.value, entry.is_sensitive) {
            (_, true) => "[hidden]".to_string(),
            (Some(v), false) => v.clone(),
            (None, false) => "(unset)".to_string(),
        };
        info!(key = %entry.name, value = %value, explicitly_set = entry.explicitly_set, "config");
    }
    for (key, origin) in config.unknown_keys() {
        warn!(key = %key, origin = %origin, "unknown configuration key {key} (from {origin}) is ignored");
    }
}

/// Tells the group coordinator which `__consumer_offsets` partitions this broker leads.
fn update_group_coordinator(groups: &Arc<rafka_group::GroupCoordinator>, image: &MetadataImage, node_id: i32) {
    let Some(topic) = image.topic_by_name(rafka_group::OFFSETS_TOPIC) else {
        groups.on_leadership(0, &[]);
        return;
    };
    let led: Vec<(i32, i32)> =
        topic.partitions.values().filter(|p| p.leader == node_id).map(|p| (p.partition, p.leader_epoch)).collect();
    groups.on_leadership(topic.partitions.len() as i32, &led);
}

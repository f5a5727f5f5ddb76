//! One Rafka node: start-up in dependency order, background duties, and a graceful
//! shutdown that undoes start-up in reverse.
//!
//! Start-up: lock the log directories → check their identity → bind the listeners
//! (fail fast, before anything is written) → open the metadata log and settle the
//! cluster id → register this broker → open the hosted partitions (crash recovery
//! happens here) → serve. Shutdown: stop accepting, let open connections finish the
//! requests they started, stop background tasks, close every partition cleanly.

use std::fs::File;
use std::net::SocketAddr;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafka_kafka::{BrokerContext, BrokerLimits, ConnectionTracker, ReplicaManager};
use rafka_metadata::controller::TopicCreationDefaults;
use rafka_metadata::records::{BrokerEndpoint, BrokerRegistration};
use rafka_metadata::{ControllerError, LocalMetadataLog, MetadataError, MetadataLog};
use rafka_metadata::Controller;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::meta_properties::{self, MetaPropertiesError};

/// How long open connections get to finish their started requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("metadata log: {0}")]
    Metadata(#[from] MetadataError),
    #[error("metadata: {0}")]
    Controller(#[from] ControllerError),
    #[error("configured cluster.id {configured} does not match the cluster id {actual} stored in the metadata log")]
    ClusterIdMismatch { configured: String, actual: String },
}

fn lock_dirs(dirs: &[PathBuf]) -> Result<Vec<File>, NodeError> {
    dirs.iter()
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

/// A started node. Dropping it without [`Node::shutdown`] aborts its tasks.
pub struct Node {
    node_id: i32,
    addresses: Vec<(String, SocketAddr)>,
    replicas: Arc<ReplicaManager>,
    stop: watch::Sender<bool>,
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

    /// Where each listener actually listens (useful with port 0).
    pub fn listen_addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// Starts a node; see the module doc for the order.
    pub async fn start(config: BrokerConfig) -> Result<Node, NodeError> {
        let span = tracing::info_span!("node", node = config.node_id);
        Node::start_inner(config, span.clone()).instrument(span).await
    }

    async fn start_inner(config: BrokerConfig, span: tracing::Span) -> Result<Node, NodeError> {
        let started = Instant::now();
        let node_id = config.node_id;
        let _locks = lock_dirs(&config.log_dirs)?;
        let stored_cluster_id = meta_properties::check_dirs(&config.log_dirs, node_id)?;

        let mut bound = Vec::new();
        for listener in &config.listeners {
            let address = format!("{}:{}", listener.bind_host, listener.bind_port);
            let socket = TcpListener::bind(&address).await.map_err(|e| NodeError::Bind {
                listener: listener.name.clone(),
                address: address.clone(),
                message: e.to_string(),
            })?;
            bound.push((listener.name.clone(), socket));
        }
        // A listener on port 0 advertises the port the OS picked (tests, ad-hoc runs).
        let mut config = config;
        for (listener, (_, socket)) in config.listeners.iter_mut().zip(&bound) {
            if listener.advertised_port == 0 {
                if let Ok(addr) = socket.local_addr() {
                    listener.advertised_port = addr.port();
                }
            }
        }

        let metadata_dir = config.log_dirs[0].join(rafka_kafka::replica_manager::METADATA_DIR_NAME);
        let log = Arc::new(LocalMetadataLog::open(&metadata_dir)?);
        let metadata: Arc<dyn MetadataLog> = log.clone();
        let controller = Arc::new(Controller::new(
            metadata.clone(),
            TopicCreationDefaults {
                num_partitions: config.num_partitions,
                replication_factor: config.default_replication_factor,
            },
        ));
        let proposed = stored_cluster_id
            .clone()
            .or_else(|| config.cluster_id.clone())
            .unwrap_or_else(meta_properties::new_kafka_id);
        let cluster_id = controller.ensure_cluster_id(&proposed).await?;
        if let Some(configured) = &config.cluster_id {
            if *configured != cluster_id {
                return Err(NodeError::ClusterIdMismatch {
                    configured: configured.clone(),
                    actual: cluster_id,
                });
            }
        }
        meta_properties::stamp_dirs(&config.log_dirs, node_id, &cluster_id)?;

        controller
            .register_broker(BrokerRegistration {
                broker_id: node_id,
                incarnation_id: Uuid::new_v4(),
                endpoints: config
                    .listeners
                    .iter()
                    .map(|l| BrokerEndpoint {
                        listener: l.name.clone(),
                        host: l.advertised_host.clone(),
                        port: l.advertised_port,
                        security_protocol: l.security_protocol.clone(),
                    })
                    .collect(),
                rack: config.broker_rack.clone(),
            })
            .await?;

        let replicas = Arc::new(
            ReplicaManager::new(node_id, config.log_dirs.clone(), config.topic_defaults()).map_err(|e| NodeError::Dir {
                path: config.log_dirs[0].display().to_string(),
                message: e.to_string(),
            })?,
        );
        let mut images = metadata.subscribe();
        let first_image = images.borrow_and_update().clone();
        tokio::task::block_in_place(|| replicas.apply_image(&first_image));

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        // React to metadata changes.
        {
            let replicas = replicas.clone();
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
                            }
                        }
                    }
                }
                .in_current_span(),
            );
        }
        // Retention and time-based rolling.
        spawn_periodic(&mut tasks, &stop_rx, config.log_retention_check_interval_ms, {
            let replicas = replicas.clone();
            move || replicas.enforce_retention(now_ms())
        });
        // Flush and checkpoint recovery points, so restart after a crash scans little.
        spawn_periodic(&mut tasks, &stop_rx, config.log_flush_offset_checkpoint_interval_ms, {
            let replicas = replicas.clone();
            move || replicas.flush_all()
        });

        let ctx = Arc::new(BrokerContext {
            node_id,
            cluster_id: cluster_id.clone(),
            listeners: config.listeners.clone(),
            metadata: metadata.clone(),
            controller,
            replicas: replicas.clone(),
            limits: BrokerLimits {
                auto_create_topics: config.auto_create_topics_enable,
                socket_request_max_bytes: config.socket_request_max_bytes,
                fetch_max_bytes: config.fetch_max_bytes,
                metadata_apply_timeout_ms: 30_000,
            },
            broker_configs: config.effective(),
        });
        let tracker = ConnectionTracker::new(config.max_connections);
        let mut listeners = JoinSet::new();
        let mut addresses = Vec::new();
        for (name, socket) in bound {
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
            stop: stop_tx,
            listeners,
            tasks,
            span,
            _locks,
        })
    }

    /// Stops accepting, lets open connections finish what they started, stops the
    /// background tasks and closes every partition cleanly.
    pub async fn shutdown(mut self) {
        let span = self.span.clone();
        async move {
            info!("shutting down: no new connections; finishing started requests");
            let _ = self.stop.send(true);
            while self.listeners.join_next().await.is_some() {}
            while self.tasks.join_next().await.is_some() {}
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

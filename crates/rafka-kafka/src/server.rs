//! Accepting client connections on one listener, with a connection limit and a
//! graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use crate::connection::{Connection, ConnectionInfo};
use crate::context::BrokerContext;

/// Counts open connections across listeners and bounds them (`max.connections`).
#[derive(Debug, Clone)]
pub struct ConnectionTracker {
    permits: Arc<Semaphore>,
}

impl ConnectionTracker {
    pub fn new(max_connections: usize) -> ConnectionTracker {
        ConnectionTracker {
            permits: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn until_shutdown(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets open
/// connections finish the requests they have started (up to `drain`), and returns.
pub async fn serve_listener(
    ctx: Arc<BrokerContext>,
    listener_name: String,
    listener: TcpListener,
    tracker: ConnectionTracker,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = until_shutdown(&mut shutdown) => break,
            permit = tracker.permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = until_shutdown(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(listener = %listener_name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let info = ConnectionInfo {
            listener: listener_name.clone(),
            peer,
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("conn", node = ctx.node_id, listener = %listener_name, peer = %peer);
        connections.spawn(
            async move {
                Connection::new(ctx, info, socket).run(shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    info!(listener = %listener_name, open = connections.len(), "listener stopped; draining connections");
    let _ = tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
}

//! Partition replication: Kafka's leader/follower model carried over gRPC.
//!
//! - [`leader`]: the `ReplicationService` a partition leader serves. Each follower
//!   keeps one bidirectional `Fetch` stream to each broker it follows, a fetch session
//!   over every partition it replicates from that broker in which only changes travel;
//!   the leader answers with raw batches, high watermark and log start offset moves,
//!   or a diverging epoch when the follower's log differs from its own (KIP-320).
//!   Serving a fetch records the follower's progress, which advances the high
//!   watermark and may propose an ISR expansion.
//! - [`follower`]: the fetchers. One task per leader broker, reconciled with the
//!   metadata image; it appends what it receives unchanged, truncates on divergence,
//!   and follows the leader's high watermark and log start.
//! - [`isr`]: sends ISR changes (AlterPartition) to the controller, one in flight per
//!   partition, and periodically proposes removing followers that have not been caught
//!   up for `replica.lag.time.max.ms`.
//! - Failure reports: a follower whose stream to a leader breaks, or a leader whose
//!   follower's stream ends without a new one, reports the peer to the controller
//!   ([`SuspectReporter`]); the controller probes it and fences it at once if it is
//!   gone. That, not the heartbeat session timeout, is what makes failover after
//!   `kill -9` take about a second.

pub mod follower;
pub mod isr;
pub mod leader;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rafka_kafka::failover_gate::FailoverGate;
use rafka_kafka::ReplicaManager;
use rafka_metadata::controller::{ControllerApi, ControllerRequest, ControllerResponse};
use tracing::{info, Instrument};

/// Replication settings from the broker configuration.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    pub node_id: i32,
    /// Name of the listener that serves gRPC (`inter.broker.listener.name`).
    pub inter_broker_listener: String,
    /// `replica.fetch.wait.max.ms`: how long a leader holds a fetch with no data.
    pub fetch_max_wait: Duration,
    /// `replica.fetch.response.max.bytes`: bound on one fetch response.
    pub fetch_response_max_bytes: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up this long leaves the ISR.
    pub replica_lag_time_max: Duration,
}

impl ReplicationSettings {
    /// How often a leader's session checks and records a follower's unchanged
    /// partitions: often enough that a caught-up follower never looks lagging.
    pub fn follower_refresh(&self) -> Duration {
        (self.replica_lag_time_max / 5).min(Duration::from_millis(100))
    }
}

/// Reports brokers that look dead to the active controller, one report per broker at
/// a time; the controller confirms with a probe before fencing.
#[derive(Clone)]
pub struct SuspectReporter {
    node_id: i32,
    controller: Arc<dyn ControllerApi>,
    replicas: Arc<ReplicaManager>,
    gate: Arc<FailoverGate>,
    in_flight: Arc<Mutex<HashSet<i32>>>,
}

impl std::fmt::Debug for SuspectReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuspectReporter")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl SuspectReporter {
    /// `gate` is held from the report until this broker's image includes the
    /// controller's decision, so Metadata answers name the new leaders.
    pub fn new(
        node_id: i32,
        controller: Arc<dyn ControllerApi>,
        replicas: Arc<ReplicaManager>,
        gate: Arc<FailoverGate>,
    ) -> SuspectReporter {
        SuspectReporter {
            node_id,
            controller,
            replicas,
            gate,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Tells the controller that `broker` seems unreachable (in the background).
    pub fn report(&self, broker: i32, why: &str) {
        if broker == self.node_id || !self.in_flight.lock().insert(broker) {
            return;
        }
        info!(
            broker,
            reason = why,
            "reporting a peer that looks unreachable to the controller"
        );
        let this = self.clone();
        tokio::spawn(
            async move {
                let failover = this.gate.begin();
                let request = ControllerRequest::BrokerUnreachable {
                    broker_id: broker,
                    reporter: this.node_id,
                };
                let answer =
                    tokio::time::timeout(Duration::from_secs(10), this.controller.submit(request))
                        .await;
                match answer {
                    Ok(Ok(ControllerResponse::Done { offset })) => {
                        this.replicas
                            .wait_applied(offset, Duration::from_secs(2))
                            .await;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(broker, error = %e, "unreachable report not taken")
                    }
                    Err(_) => tracing::debug!(broker, "unreachable report not answered in time"),
                }
                drop(failover);
                this.in_flight.lock().remove(&broker);
            }
            .in_current_span(),
        );
    }
}

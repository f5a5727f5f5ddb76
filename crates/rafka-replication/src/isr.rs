//! ISR changes proposed by a partition leader, sent to the controller as AlterPartition.
//!
//! A [`Partition`] allows one proposal in flight; the controller checks the leader and
//! partition epochs, so a stale proposal is refused rather than applied. After an
//! answer the proposal is cleared once this broker's image includes the result (or at
//! once on refusal), and the next fetch or check may propose again.

use std::sync::Arc;
use std::time::Duration;

use rafka_kafka::partition::{IsrProposal, Partition};
use rafka_kafka::ReplicaManager;
use rafka_metadata::controller::{ControllerApi, ControllerRequest, ControllerResponse};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

/// How long a proposal may wait for the controller.
const ALTER_PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends ISR proposals to the controller.
#[derive(Clone)]
pub struct IsrChanges {
    node_id: i32,
    controller: Arc<dyn ControllerApi>,
    replicas: Arc<ReplicaManager>,
}

impl std::fmt::Debug for IsrChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsrChanges")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl IsrChanges {
    pub fn new(
        node_id: i32,
        controller: Arc<dyn ControllerApi>,
        replicas: Arc<ReplicaManager>,
    ) -> IsrChanges {
        IsrChanges {
            node_id,
            controller,
            replicas,
        }
    }

    /// Sends `proposal` in the background.
    pub fn submit(&self, partition: Arc<Partition>, proposal: IsrProposal) {
        let this = self.clone();
        let span = tracing::info_span!("alter_partition", topic = %partition.topic, partition = partition.index);
        tokio::spawn(
            async move {
                let old_isr = partition.state().isr;
                info!(from = ?old_isr, to = ?proposal.new_isr, "proposing an ISR change");
                let request = ControllerRequest::AlterPartition {
                    broker_id: this.node_id,
                    topic_id: partition.topic_id,
                    partition: partition.index,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    new_isr: proposal.new_isr.clone(),
                };
                match tokio::time::timeout(ALTER_PARTITION_TIMEOUT, this.controller.submit(request))
                    .await
                {
                    Ok(Ok(ControllerResponse::PartitionChanged { offset, isr, .. })) => {
                        debug!(?isr, offset, "ISR change committed");
                        this.replicas
                            .wait_applied(offset, ALTER_PARTITION_TIMEOUT)
                            .await;
                    }
                    Ok(Ok(other)) => warn!(answer = ?other, "unexpected AlterPartition answer"),
                    Ok(Err(e)) => {
                        info!(error = %e, "ISR change refused; will retry from the current state")
                    }
                    Err(_) => warn!("ISR change not answered in time; will retry"),
                }
                partition.isr_change_done(&proposal);
            }
            .instrument(span),
        );
    }

    /// Every `max_lag / 2`, proposes removing followers of led partitions that have not
    /// been caught up for `max_lag` (`replica.lag.time.max.ms`).
    pub async fn run_shrink_checks(self, max_lag: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval((max_lag / 2).max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = ticker.tick() => {}
            }
            let now = rafka_kafka::handlers::now_ms();
            for partition in self.replicas.all() {
                if let Some(proposal) =
                    partition.propose_isr_shrink(now, max_lag.as_millis() as i64)
                {
                    info!(topic = %partition.topic, partition = partition.index, isr = ?proposal.new_isr,
                        lag_ms = max_lag.as_millis() as u64, "followers not caught up within replica.lag.time.max.ms leave the ISR");
                    self.submit(partition, proposal);
                }
            }
        }
    }
}

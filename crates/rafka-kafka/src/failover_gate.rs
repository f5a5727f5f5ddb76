//! Holds Metadata answers briefly while this broker knows a leader failover is under way.
//!
//! When a peer's replication stream breaks, this broker reports the peer to the
//! controller, which probes it and, if it is gone, fences it and elects new leaders.
//! A client that lost its connection to the dead leader asks some live broker for
//! Metadata at once, usually a millisecond before the new leaders are committed; the
//! answer would still name the dead broker, and librdkafka then waits for its next
//! one-second leader query. So while a report is in flight (until the controller has
//! answered and this broker's image includes the result) Metadata waits for it, up to
//! a bound, and then answers with the new leaders.

use std::time::Duration;

use tokio::sync::watch;

/// Counts failure reports in flight; Metadata waits for it to reach zero.
#[derive(Debug)]
pub struct FailoverGate {
    pending: watch::Sender<usize>,
}

impl Default for FailoverGate {
    fn default() -> Self {
        FailoverGate { pending: watch::channel(0).0 }
    }
}

/// A report in flight; dropping it ends it.
#[derive(Debug)]
pub struct FailoverInProgress<'a> {
    gate: &'a FailoverGate,
}

impl Drop for FailoverInProgress<'_> {
    fn drop(&mut self) {
        self.gate.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl FailoverGate {
    pub fn new() -> FailoverGate {
        FailoverGate::default()
    }

    /// Marks a failure report in flight until the guard is dropped.
    pub fn begin(&self) -> FailoverInProgress<'_> {
        self.pending.send_modify(|n| *n += 1);
        FailoverInProgress { gate: self }
    }

    /// Whether a report is in flight.
    pub fn in_progress(&self) -> bool {
        *self.pending.borrow() > 0
    }

    /// Waits until no report is in flight, or `bound` passes.
    pub async fn settle(&self, bound: Duration) {
        let mut rx = self.pending.subscribe();
        let _ = tokio::time::timeout(bound, rx.wait_for(|n| *n == 0)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_when_every_report_ends_or_at_the_bound() {
        let gate = FailoverGate::new();
        gate.settle(Duration::from_secs(5)).await; // nothing in flight: at once
        let guard = gate.begin();
        assert!(gate.in_progress());
        let started = tokio::time::Instant::now();
        gate.settle(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50), "held while a report is in flight");
        drop(guard);
        assert!(!gate.in_progress());
        gate.settle(Duration::from_secs(5)).await;
    }
}

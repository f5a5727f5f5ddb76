//! The Raft metadata quorum's storage, on [openraft] 0.9.
//!
//! Every metadata change is a [`MetadataRecord`]; the active controller commits
//! them in atomic batches ([`MetadataBatch`]) through Raft, and every node applies
//! the committed batches, in log order, to its [`MetadataImage`] — as in Kafka's
//! KRaft mode. This crate supplies what openraft needs from us, plus the adapter
//! that lets the controller use the quorum like any other metadata log:
//!
//! - [`TypeConfig`], [`Raft`], [`NodeId`]: the openraft type configuration.
//! - [`log_store`]: [`LogStore`], the durable Raft log, vote and committed log id
//!   (an append-only, checksummed file plus an atomically replaced vote file; an
//!   entry is acknowledged to openraft only after it is fsynced).
//! - [`state_machine`]: [`StateMachine`], which applies committed entries to the
//!   image, publishes each new image on a watch channel, and keeps the latest
//!   snapshot (the serialised image) on disk so a restart starts from it.
//! - [`metadata_log`]: [`RaftMetadataLog`], the [`rafka_metadata::MetadataLog`]
//!   implementation on top of a running [`Raft`].
//! - [`raft_config`]: the openraft configuration recommended for the quorum.
//!
//! The network (openraft's `RaftNetworkFactory`) and the node wiring live in the
//! server crate; nothing here knows about gRPC.
//!
//! [`MetadataRecord`]: rafka_metadata::MetadataRecord
//! [`MetadataImage`]: rafka_metadata::MetadataImage

pub mod error;
mod fsutil;
pub mod log_store;
pub mod metadata_log;
pub mod state_machine;

use std::io::Cursor;

use rafka_metadata::MetadataRecord;
use serde::{Deserialize, Serialize};

pub use error::RaftStorageError;
pub use log_store::{LogStore, LogStoreReader};
pub use metadata_log::RaftMetadataLog;
pub use openraft;
pub use state_machine::{SnapshotBuilder, StateMachine};

/// Identifies a node of the quorum (Kafka's `node.id`).
pub type NodeId = u64;

/// The command replicated through Raft: one atomic batch of metadata records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

/// What applying a batch returns to the proposer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BatchApplied {
    /// The Raft log index the batch was applied at; the image's `offset` from then on.
    pub log_index: u64,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata quorum.
    pub TypeConfig:
        D = MetadataBatch,
        R = BatchApplied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft node of the metadata quorum.
pub type Raft = openraft::Raft<TypeConfig>;

/// Heartbeat interval of the leader, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
/// Lower bound of the randomised election timeout, in milliseconds.
///
/// openraft also treats `ELECTION_TIMEOUT_MAX_MS` as the leader lease: a follower
/// neither starts nor grants an election until that long after the leader's last
/// heartbeat, so a dead controller is replaced after lease + timeout, 450–600 ms.
/// That bounds the failover of a partition whose leader was also the controller.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 150;
/// Upper bound of the randomised election timeout, in milliseconds.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 300;
/// A snapshot is taken after this many entries since the last one.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;
/// Entries kept in the log behind a snapshot, so a briefly lagging follower catches
/// up from the log rather than by receiving the whole snapshot.
pub const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 500;
/// Time allowed to send and install a snapshot, in milliseconds.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 5_000;

/// The openraft configuration recommended for the metadata quorum: heartbeat every
/// 50 ms, election timeout 150–300 ms (plus the 300 ms leader lease), a snapshot every 1000 entries with 500
/// entries kept behind it. Already validated.
pub fn raft_config(cluster_name: &str) -> openraft::Config {
    let config = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        ..openraft::Config::default()
    };
    match config.clone().validate() {
        Ok(valid) => valid,
        Err(e) => {
            // The values above are constants that satisfy every rule `validate`
            // checks (a unit test proves it); reaching this is a programming error.
            unreachable!("the built-in raft configuration {config:?} is invalid: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommended_config_is_valid_and_as_documented() {
        let config = raft_config("rafka-test");
        assert_eq!(config.cluster_name, "rafka-test");
        assert_eq!(config.heartbeat_interval, 50);
        assert_eq!(
            (config.election_timeout_min, config.election_timeout_max),
            (150, 300)
        );
        assert_eq!(
            config.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(1000)
        );
        assert_eq!(config.max_in_snapshot_log_to_keep, 500);
        assert!(config.validate().is_ok());
    }
}

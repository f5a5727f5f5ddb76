//! [`RaftMetadataLog`]: the [`MetadataLog`] seam implemented by the Raft quorum.
//!
//! The controller commits a batch of records with [`MetadataLog::commit`]; here that
//! is one `client_write` of a [`MetadataBatch`]. openraft answers once the entry is
//! committed by a majority and applied by the local [`StateMachine`]; the commit
//! then also waits until the published image holds the entry, so a caller that
//! committed reads its own write. Only the leader (the active controller) accepts
//! writes: on any other node the commit fails with [`MetadataError::NotController`].
//!
//! [`StateMachine`]: crate::StateMachine

use std::sync::Arc;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use rafka_metadata::log::BoxFuture;
use rafka_metadata::{MetadataError, MetadataImage, MetadataLog, MetadataRecord};
use tokio::sync::watch;

use crate::{MetadataBatch, NodeId, Raft};

/// The metadata log backed by the Raft quorum.
pub struct RaftMetadataLog {
    raft: Raft,
    images: watch::Receiver<Arc<MetadataImage>>,
}

impl std::fmt::Debug for RaftMetadataLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftMetadataLog")
            .field("offset", &self.images.borrow().offset)
            .finish_non_exhaustive()
    }
}

impl RaftMetadataLog {
    /// Wraps a running Raft node; `images` is its state machine's
    /// [`subscribe`](crate::StateMachine::subscribe) receiver.
    pub fn new(raft: Raft, images: watch::Receiver<Arc<MetadataImage>>) -> RaftMetadataLog {
        RaftMetadataLog { raft, images }
    }

    /// The node this node believes is the leader (the active controller), if any.
    pub async fn current_leader(&self) -> Option<NodeId> {
        self.raft.current_leader().await
    }

    /// The Raft node, for membership changes, metrics and shutdown.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

/// Maps a failed `client_write` to the metadata layer's error.
fn write_error(
    err: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> MetadataError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            tracing::debug!(leader = ?forward.leader_id, "metadata commit refused: not the raft leader");
            MetadataError::NotController
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            // Only membership entries can fail this way, and a batch is never one.
            MetadataError::Io {
                path: "raft".into(),
                message: format!("unexpected membership error for a metadata batch: {e}"),
            }
        }
        RaftError::Fatal(fatal) => {
            match &fatal {
                Fatal::Stopped => tracing::debug!("metadata commit failed: raft has stopped"),
                Fatal::StorageError(_) | Fatal::Panicked => {
                    tracing::error!(error = %fatal, "metadata commit failed: raft stopped on a fatal error")
                }
            }
            MetadataError::ShutDown
        }
    }
}

impl MetadataLog for RaftMetadataLog {
    fn commit(&self, records: Vec<MetadataRecord>) -> BoxFuture<'_, Result<u64, MetadataError>> {
        Box::pin(async move {
            let response = self
                .raft
                .client_write(MetadataBatch { records })
                .await
                .map_err(write_error)?;
            let index = response.data.log_index;
            let mut images = self.images.clone();
            images
                .wait_for(|image| image.offset >= index)
                .await
                .map_err(|_| MetadataError::ShutDown)?;
            Ok(index)
        })
    }

    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }
}

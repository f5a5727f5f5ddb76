//! Errors of the Raft storage layer.
//!
//! [`RaftStorageError`] is what opening a store returns; every variant names the
//! file it concerns and what was wrong with it. Inside the openraft traits the same
//! errors are carried as [`openraft::StorageError`] (wrapping the message and source),
//! which openraft treats as fatal: the node stops rather than run on a log it can
//! no longer trust.

use std::io;
use std::path::{Path, PathBuf};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::NodeId;

/// A failure to read, write or make sense of the on-disk Raft state.
#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    /// An operating-system I/O call failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What we were doing, e.g. "fsync raft log".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file holds bytes that cannot be what we wrote (and are not a torn tail).
    #[error("corrupt {what} in {} at byte {offset}: {reason}", .path.display())]
    Corrupt {
        /// Which kind of file, e.g. "raft log record" or "snapshot".
        what: &'static str,
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A value could not be encoded for writing.
    #[error("cannot encode {what} for {}: {source}", .path.display())]
    Encode {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// One record is larger than the log format allows.
    #[error("{what} for {} is {size} bytes, more than the limit of {limit} bytes", .path.display())]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        size: usize,
        limit: usize,
    },
    /// An earlier write failed, so the log file's state is unknown and nothing more
    /// is written to it until the store is reopened (which re-validates the file).
    #[error("raft log {} stopped accepting writes after an earlier failure: {reason}", .path.display())]
    WriterFailed { path: PathBuf, reason: String },
}

impl RaftStorageError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> RaftStorageError {
        RaftStorageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Wraps one of our errors as the openraft error for `subject`/`verb`, keeping the
/// message (with its path) and the source chain.
pub(crate) fn to_storage_error(
    err: &RaftStorageError,
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(err)),
    }
}

//! openraft's storage conformance suite, run against [`LogStore`] and
//! [`StateMachine`] in fresh temporary directories.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use rafka_raft::{LogStore, NodeId, StateMachine, TypeConfig};
use tempfile::TempDir;

/// Builds a store pair in a new temporary directory, removed when the guard drops.
struct TempDirStores;

fn open_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Read,
        openraft::AnyError::new(&e),
    )
    .into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempDirStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(open_error)?;
        let log = LogStore::open(&dir.path().join("raft")).map_err(open_error)?;
        let sm = StateMachine::open(&dir.path().join("snapshots")).map_err(open_error)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_stores_pass_the_openraft_storage_suite() {
    Suite::test_all(TempDirStores).expect("openraft storage conformance suite");
}

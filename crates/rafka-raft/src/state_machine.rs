//! The Raft state machine: committed entries in, [`MetadataImage`]s out.
//!
//! [`StateMachine`] implements openraft's [`RaftStateMachine`]. Applying the entry
//! at log index `i` applies each of its records with `image.apply(i, record)`, so
//! `image.offset` is always the Raft log index of the last applied entry (blank and
//! membership entries move it too). After every `apply` call the new image is
//! published, as an `Arc<MetadataImage>`, on a watch channel ([`StateMachine::subscribe`]).
//!
//! The state machine itself is not written to disk on every apply; its snapshot is.
//!
//! # Snapshots
//!
//! `<dir>/snapshot.json` holds the latest snapshot:
//! `{"format":1,"meta":<openraft SnapshotMeta>,"image":<MetadataImage>}` — the
//! image, the last applied log id and the last membership. It is replaced
//! atomically (`.tmp` + fsync + rename + fsync of the directory), which also removes
//! the previous one. The bytes exchanged with other nodes (openraft's
//! `SnapshotData`) are the JSON of the image alone; the metadata travels beside it.
//!
//! [`StateMachine::open`] restores the image from that file, so the image is
//! available at start-up before Raft replays the committed log tail on top of it.
//! A snapshot is built from a view taken when openraft asks for the builder, and
//! never replaces a newer one (a build runs concurrently with apply and install).

use std::fmt::Debug;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership,
};
use parking_lot::Mutex;
use rafka_metadata::MetadataImage;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{to_storage_error, RaftStorageError};
use crate::fsutil;
use crate::{BatchApplied, NodeId, TypeConfig};

/// Name of the snapshot file inside the state machine's directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
/// Version of the snapshot file layout.
const SNAPSHOT_FORMAT: u32 = 1;

/// The snapshot file. `M` and `I` are references when writing, owned when reading.
#[derive(Serialize, Deserialize)]
struct SnapshotFile<M, I> {
    format: u32,
    meta: M,
    image: I,
}

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The latest snapshot: its metadata and the bytes sent to other nodes.
#[derive(Clone)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

/// What the state machine has applied.
struct Applied {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
}

struct Shared {
    dir: PathBuf,
    snapshot_path: PathBuf,
    applied: Mutex<Applied>,
    published: watch::Sender<Arc<MetadataImage>>,
    current: Mutex<Option<StoredSnapshot>>,
    /// Serialises snapshot file writes; only ever taken on a blocking thread.
    write_lock: Mutex<()>,
}

/// Applies committed entries to a [`MetadataImage`] and publishes every new image.
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

/// Builds a snapshot from the state as it was when openraft asked for the builder.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
}

impl Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// Opens the state machine in `dir` (created if absent), restoring the image
    /// from the latest snapshot there if any.
    pub fn open(dir: &Path) -> Result<StateMachine, RaftStorageError> {
        fsutil::ensure_dir(dir)?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        fsutil::remove_stale_tmp(&snapshot_path)?;
        let mut applied = Applied {
            image: Arc::new(MetadataImage::default()),
            last_applied: None,
            last_membership: StoredMembership::default(),
        };
        let mut current = None;
        if let Some(bytes) = fsutil::read_if_exists(&snapshot_path)? {
            let corrupt = |reason: String| RaftStorageError::Corrupt {
                what: "snapshot",
                path: snapshot_path.clone(),
                offset: 0,
                reason,
            };
            let file: SnapshotFile<Meta, MetadataImage> =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            if file.format != SNAPSHOT_FORMAT {
                return Err(corrupt(format!(
                    "unknown snapshot format {} (this version reads {SNAPSHOT_FORMAT})",
                    file.format
                )));
            }
            let mut image = file.image;
            image.offset = file.meta.last_log_id.map_or(0, |id| id.index);
            let data = serde_json::to_vec(&image).map_err(|source| RaftStorageError::Encode {
                what: "snapshot data",
                path: snapshot_path.clone(),
                source,
            })?;
            tracing::info!(
                path = %snapshot_path.display(),
                snapshot_id = %file.meta.snapshot_id,
                last_log_id = ?file.meta.last_log_id,
                offset = image.offset,
                brokers = image.brokers.len(),
                topics = image.topics.len(),
                "restored the metadata image from the snapshot"
            );
            applied.last_applied = file.meta.last_log_id;
            applied.last_membership = file.meta.last_membership.clone();
            applied.image = Arc::new(image);
            current = Some(StoredSnapshot {
                meta: file.meta,
                data,
            });
        }
        let (published, _) = watch::channel(applied.image.clone());
        Ok(StateMachine {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                snapshot_path,
                applied: Mutex::new(applied),
                published,
                current: Mutex::new(current),
                write_lock: Mutex::new(()),
            }),
        })
    }

    /// A receiver of every published image, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.shared.published.subscribe()
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.shared.applied.lock().image.clone()
    }

    /// The directory the state machine keeps its snapshot in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// How a snapshot write relates to the one already current.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Install: always becomes current.
    Always,
    /// Build: becomes current unless the current one is as new or newer.
    IfNewer,
}

impl Shared {
    /// Writes a snapshot and makes it current (see [`Replace`]). Blocking.
    /// Returns the snapshot that is current afterwards if it is not the given one.
    fn persist(
        &self,
        meta: Meta,
        image: &MetadataImage,
        data: Vec<u8>,
        replace: Replace,
    ) -> Result<Option<StoredSnapshot>, RaftStorageError> {
        let _writing = self.write_lock.lock();
        if replace == Replace::IfNewer {
            if let Some(current) = self.current.lock().as_ref() {
                if current.meta.last_log_id >= meta.last_log_id {
                    return Ok(Some(current.clone()));
                }
            }
        }
        let file = SnapshotFile {
            format: SNAPSHOT_FORMAT,
            meta: &meta,
            image,
        };
        let bytes = serde_json::to_vec(&file).map_err(|source| RaftStorageError::Encode {
            what: "snapshot",
            path: self.snapshot_path.clone(),
            source,
        })?;
        fsutil::write_atomic(&self.dir, &self.snapshot_path, &bytes)?;
        tracing::info!(
            path = %self.snapshot_path.display(),
            snapshot_id = %meta.snapshot_id,
            last_log_id = ?meta.last_log_id,
            bytes = bytes.len(),
            "saved the metadata snapshot"
        );
        *self.current.lock() = Some(StoredSnapshot { meta, data });
        Ok(None)
    }

    /// Runs [`Shared::persist`] on a blocking thread.
    async fn persist_blocking(
        self: &Arc<Self>,
        meta: Meta,
        image: Arc<MetadataImage>,
        data: Vec<u8>,
        replace: Replace,
    ) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
        let signature = meta.signature();
        let shared = self.clone();
        let joined =
            tokio::task::spawn_blocking(move || shared.persist(meta, &image, data, replace)).await;
        let err = |e: RaftStorageError| {
            to_storage_error(
                &e,
                ErrorSubject::Snapshot(Some(signature.clone())),
                ErrorVerb::Write,
            )
        };
        match joined {
            Ok(result) => result.map_err(err),
            Err(join) => Err(err(RaftStorageError::Io {
                action: "write snapshot (the writing task failed)",
                path: self.snapshot_path.clone(),
                source: std::io::Error::other(join.to_string()),
            })),
        }
    }
}

fn to_snapshot(stored: StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: stored.meta,
        snapshot: Box::new(Cursor::new(stored.data)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{millis}", id.leader_id.term, id.index),
            None => format!("0-0-{millis}"),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let data = serde_json::to_vec(&*self.image).map_err(|source| {
            let e = RaftStorageError::Encode {
                what: "snapshot data",
                path: self.shared.snapshot_path.clone(),
                source,
            };
            to_storage_error(
                &e,
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })?;
        let built = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        match self
            .shared
            .persist_blocking(meta, self.image.clone(), data, Replace::IfNewer)
            .await?
        {
            None => Ok(to_snapshot(built)),
            // The current snapshot is as new as this view: hand that one out, so that
            // what is built and what is current agree.
            Some(current) if current.meta.last_log_id == built.meta.last_log_id => {
                Ok(to_snapshot(current))
            }
            // A newer snapshot was installed meanwhile; this one is returned but not kept.
            Some(_) => Ok(to_snapshot(built)),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let applied = self.shared.applied.lock();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchApplied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.shared.applied.lock();
        let mut image: Option<MetadataImage> = None;
        let mut replies = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let image = image.get_or_insert_with(|| MetadataImage::clone(&applied.image));
            image.offset = index;
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for record in &batch.records {
                        image.apply(index, record);
                    }
                }
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            applied.last_applied = Some(entry.log_id);
            replies.push(BatchApplied { log_index: index });
        }
        if let Some(image) = image {
            tracing::trace!(
                offset = image.offset,
                entries = replies.len(),
                "applied metadata entries"
            );
            let image = Arc::new(image);
            applied.image = image.clone();
            // Published under the lock, so images are published in apply order.
            self.shared.published.send_replace(image);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let applied = self.shared.applied.lock();
        SnapshotBuilder {
            shared: self.shared.clone(),
            image: applied.image.clone(),
            last_applied: applied.last_applied,
            last_membership: applied.last_membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut image: MetadataImage = serde_json::from_slice(&data).map_err(|e| {
            let e = RaftStorageError::Corrupt {
                what: "received snapshot",
                path: self.shared.snapshot_path.clone(),
                offset: 0,
                reason: e.to_string(),
            };
            to_storage_error(
                &e,
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
            )
        })?;
        image.offset = meta.last_log_id.map_or(0, |id| id.index);
        let image = Arc::new(image);
        self.shared
            .persist_blocking(meta.clone(), image.clone(), data, Replace::Always)
            .await?;
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            last_log_id = ?meta.last_log_id,
            "installed a metadata snapshot from the leader"
        );
        let mut applied = self.shared.applied.lock();
        applied.image = image.clone();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        self.shared.published.send_replace(image);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.shared.current.lock().clone().map(to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::testing::log_id;
    use openraft::Membership;
    use rafka_metadata::MetadataRecord;
    use tokio::io::AsyncReadExt;
    use uuid::Uuid;

    use super::*;
    use crate::MetadataBatch;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
        }
    }

    fn normal(index: u64, records: Vec<MetadataRecord>) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(MetadataBatch { records }),
        }
    }

    fn membership(index: u64) -> Entry<TypeConfig> {
        let nodes = BTreeMap::from([(1, BasicNode::new("n1")), (2, BasicNode::new("n2"))]);
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], nodes)),
        }
    }

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn apply_builds_the_image_and_answers_with_each_log_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let mut images = sm.subscribe();
        let replies = sm
            .apply([
                membership(0),
                blank(1),
                normal(2, vec![topic("a"), topic("b")]),
                normal(3, vec![topic("c")]),
            ])
            .await
            .unwrap();
        let indexes: Vec<u64> = replies.iter().map(|r| r.log_index).collect();
        assert_eq!(indexes, vec![0, 1, 2, 3]);

        assert!(
            images.has_changed().unwrap(),
            "one image is published per apply"
        );
        let image = images.borrow_and_update().clone();
        assert_eq!(image.offset, 3);
        assert_eq!(image.topics.len(), 3);
        assert!(image.topic_by_name("b").is_some());

        let (last_applied, last_membership) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(1, 1, 3)));
        assert_eq!(*last_membership.log_id(), Some(log_id(1, 1, 0)));

        // A blank entry moves the offset too.
        sm.apply([blank(4)]).await.unwrap();
        assert_eq!(images.borrow_and_update().offset, 4);
        assert_eq!(sm.image().topics.len(), 3);
    }

    #[tokio::test]
    async fn a_snapshot_round_trips_and_a_reopened_state_machine_starts_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, image) = {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply([
                membership(0),
                normal(1, vec![topic("a")]),
                normal(2, vec![topic("b")]),
            ])
            .await
            .unwrap();
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 2)));
            assert_eq!(
                *snapshot.meta.last_membership.log_id(),
                Some(log_id(1, 1, 0))
            );
            let current = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta, snapshot.meta);
            let mut data = Vec::new();
            current
                .snapshot
                .clone()
                .read_to_end(&mut data)
                .await
                .unwrap();
            let decoded: MetadataImage = serde_json::from_slice(&data).unwrap();
            assert_eq!(decoded, *sm.image());
            // Entries applied after the snapshot are not in it.
            sm.apply([normal(3, vec![topic("c")])]).await.unwrap();
            (snapshot.meta, decoded)
        };

        let mut sm = StateMachine::open(dir.path()).unwrap();
        let restored = sm.subscribe().borrow().clone();
        assert_eq!(*restored, image);
        assert_eq!(restored.offset, 2);
        assert!(restored.topic_by_name("c").is_none());
        let (last_applied, last_membership) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(1, 1, 2)));
        assert_eq!(last_membership, meta.last_membership);
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_and_publishes_the_image_and_survives_reopen() {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let mut leader = StateMachine::open(leader_dir.path()).unwrap();
        leader
            .apply([membership(0), normal(1, vec![topic("a"), topic("b")])])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let mut follower = StateMachine::open(follower_dir.path()).unwrap();
        follower
            .apply([normal(0, vec![topic("stale")])])
            .await
            .unwrap();
        let mut images = follower.subscribe();
        images.borrow_and_update();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        *receiving = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .unwrap();

        assert!(images.has_changed().unwrap());
        assert_eq!(*images.borrow_and_update().clone(), *leader.image());
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            Some(log_id(1, 1, 1))
        );
        drop(follower);

        let reopened = StateMachine::open(follower_dir.path()).unwrap();
        assert_eq!(*reopened.image(), *leader.image());
        assert!(reopened.image().topic_by_name("stale").is_none());
    }

    #[tokio::test]
    async fn a_build_from_an_older_view_does_not_replace_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply([membership(0), normal(1, vec![topic("a")])])
            .await
            .unwrap();
        let mut old_view = sm.get_snapshot_builder().await;
        sm.apply([normal(2, vec![topic("b")])]).await.unwrap();
        let newer = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let older = old_view.build_snapshot().await.unwrap();
        assert_eq!(older.meta.last_log_id, Some(log_id(1, 1, 1)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer.meta);
        drop(sm);
        let reopened = StateMachine::open(dir.path()).unwrap();
        assert!(reopened.image().topic_by_name("b").is_some());
    }

    #[test]
    fn a_damaged_snapshot_fails_the_open_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"{\"format\":1,\"meta\":").unwrap();
        let err = StateMachine::open(dir.path()).unwrap_err();
        assert!(matches!(err, RaftStorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
    }
}

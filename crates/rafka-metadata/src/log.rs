//! The metadata log: the single ordered, durable sequence of metadata records.
//!
//! [`MetadataLog`] is the seam between deciding (the controller) and ordering and
//! persisting (the Raft quorum, `rafka-raft`). A commit resolves only after the
//! records are durable on a majority *and* applied to the published image, so a
//! caller that committed can immediately read its own write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::MetadataError;
use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// A boxed, sendable future (keeps the trait object-safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Orders, persists and applies metadata records.
pub trait MetadataLog: Send + Sync + 'static {
    /// Appends `records` atomically and durably, then applies them to the image.
    /// Resolves with the offset of the last record once the published image holds it.
    fn commit(&self, records: Vec<MetadataRecord>) -> BoxFuture<'_, Result<u64, MetadataError>>;

    /// A receiver of every published image, starting with the current one.
    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>>;

    /// The current image.
    fn image(&self) -> Arc<MetadataImage> {
        self.subscribe().borrow().clone()
    }
}

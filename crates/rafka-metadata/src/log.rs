//! The metadata log: the single ordered, durable sequence of metadata records.
//!
//! [`MetadataLog`] is the seam between deciding (the controller) and ordering and
//! persisting (this module, or the Raft quorum). A commit resolves only after the
//! records are durable *and* applied to the published image, so a caller that
//! committed can immediately read its own write.
//!
//! [`LocalMetadataLog`] is the single-node implementation: one JSON line per
//! committed batch in `<dir>/metadata.log`, fsynced before the commit resolves.
//! A batch is one line, so a crash mid-write leaves at most one torn last line,
//! which recovery drops (that batch was never acknowledged).

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
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

#[derive(Serialize, Deserialize)]
struct LoggedBatch {
    /// Offset of the first record in the batch (records are numbered from 1).
    base_offset: u64,
    records: Vec<MetadataRecord>,
}

struct Writer {
    file: File,
    next_offset: u64,
    image: MetadataImage,
}

/// The single-node metadata log, kept in one file.
pub struct LocalMetadataLog {
    path: PathBuf,
    writer: tokio::sync::Mutex<Writer>,
    published: watch::Sender<Arc<MetadataImage>>,
}

impl std::fmt::Debug for LocalMetadataLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMetadataLog").field("path", &self.path).finish()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> MetadataError {
    MetadataError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl LocalMetadataLog {
    /// Opens (or creates) the log in `dir` and replays it into an image.
    pub fn open(dir: &Path) -> Result<LocalMetadataLog, MetadataError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join("metadata.log");
        let mut image = MetadataImage::default();
        let mut next_offset = 1;
        let mut valid_len: u64 = 0;
        let mut torn = false;
        if path.exists() {
            let file = File::open(&path).map_err(|e| io_err(&path, e))?;
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            let mut line_no = 0;
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(|e| io_err(&path, e))?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                let complete = line.ends_with('\n');
                match serde_json::from_str::<LoggedBatch>(line.trim_end()) {
                    Ok(batch) if complete && batch.base_offset == next_offset => {
                        for (i, record) in batch.records.iter().enumerate() {
                            image.apply(batch.base_offset + i as u64, record);
                        }
                        next_offset = batch.base_offset + batch.records.len() as u64;
                        valid_len += n as u64;
                    }
                    Ok(_) | Err(_) => {
                        // Only the last line may be damaged (a crash mid-write).
                        let mut rest = String::new();
                        let more = reader.read_line(&mut rest).map_err(|e| io_err(&path, e))?;
                        if more == 0 {
                            torn = true;
                            break;
                        }
                        return Err(MetadataError::Corrupt {
                            path: path.display().to_string(),
                            line: line_no,
                            message: "unreadable record batch before the end of the log".into(),
                        });
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        if torn {
            tracing::warn!(path = %path.display(), valid_len, "dropping a torn last metadata batch left by a crash");
            file.set_len(valid_len).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
        }
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(|e| io_err(&path, e))?;
        let (published, _) = watch::channel(Arc::new(image.clone()));
        Ok(LocalMetadataLog {
            path,
            writer: tokio::sync::Mutex::new(Writer {
                file,
                next_offset,
                image,
            }),
            published,
        })
    }
}

impl MetadataLog for LocalMetadataLog {
    fn commit(&self, records: Vec<MetadataRecord>) -> BoxFuture<'_, Result<u64, MetadataError>> {
        Box::pin(async move {
            let mut writer = self.writer.lock().await;
            if records.is_empty() {
                return Ok(writer.next_offset - 1);
            }
            let batch = LoggedBatch {
                base_offset: writer.next_offset,
                records,
            };
            let mut line = serde_json::to_string(&batch).map_err(|e| MetadataError::Io {
                path: self.path.display().to_string(),
                message: format!("cannot encode record: {e}"),
            })?;
            line.push('\n');
            let write_and_sync = |file: &mut File| -> std::io::Result<()> {
                file.write_all(line.as_bytes())?;
                file.sync_data()
            };
            tokio::task::block_in_place(|| write_and_sync(&mut writer.file))
                .map_err(|e| io_err(&self.path, e))?;
            let mut last = batch.base_offset;
            for (i, record) in batch.records.iter().enumerate() {
                last = batch.base_offset + i as u64;
                writer.image.apply(last, record);
            }
            writer.next_offset = last + 1;
            self.published.send_replace(Arc::new(writer.image.clone()));
            Ok(last)
        })
    }

    fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn committed_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LocalMetadataLog::open(dir.path()).unwrap();
            assert_eq!(log.commit(vec![topic("a"), topic("b")]).await.unwrap(), 2);
            assert_eq!(log.commit(vec![topic("c")]).await.unwrap(), 3);
            assert!(log.image().topic_by_name("c").is_some());
        }
        let log = LocalMetadataLog::open(dir.path()).unwrap();
        let image = log.image();
        assert_eq!(image.offset, 3);
        assert_eq!(image.topics.len(), 3);
        assert_eq!(log.commit(vec![topic("d")]).await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_torn_last_batch_is_dropped_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LocalMetadataLog::open(dir.path()).unwrap();
            log.commit(vec![topic("kept")]).await.unwrap();
        }
        let path = dir.path().join("metadata.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"base_offset\":2,\"records\":[{\"type\":\"To").unwrap();
        drop(f);
        let log = LocalMetadataLog::open(dir.path()).unwrap();
        assert_eq!(log.image().topics.len(), 1);
        assert_eq!(log.commit(vec![topic("next")]).await.unwrap(), 2);
        drop(log);
        let log = LocalMetadataLog::open(dir.path()).unwrap();
        assert_eq!(log.image().topics.len(), 2);
    }

    #[test]
    fn a_damaged_line_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metadata.log"),
            "garbage\n{\"base_offset\":1,\"records\":[]}\n",
        )
        .unwrap();
        assert!(matches!(
            LocalMetadataLog::open(dir.path()),
            Err(MetadataError::Corrupt { line: 1, .. })
        ));
    }
}

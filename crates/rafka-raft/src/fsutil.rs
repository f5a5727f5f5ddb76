//! Small file-system helpers shared by the log store and the state machine.
//!
//! [`write_atomic`] is the one way a whole file is replaced: the new bytes go to
//! `<name>.tmp`, which is fsynced, renamed over `<name>`, and then the directory is
//! fsynced so that the rename itself survives a crash. A reader therefore sees
//! either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::RaftStorageError;

/// Suffix of the temporary file a replacement is written to first.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The temporary path used while replacing `path`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// Replaces `path` (in directory `dir`) with `bytes`, durably and atomically.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), RaftStorageError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| RaftStorageError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| RaftStorageError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| RaftStorageError::io("fsync", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| RaftStorageError::io("rename into place", path, e))?;
    sync_dir(dir)
}

/// Fsyncs a directory, making renames and file creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), RaftStorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RaftStorageError::io("fsync directory", dir, e))
}

/// Removes a leftover temporary file from an interrupted replacement, if any.
pub(crate) fn remove_stale_tmp(path: &Path) -> Result<(), RaftStorageError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::info!(path = %tmp.display(), "removed a temporary file left by an interrupted write");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RaftStorageError::io("remove stale temporary file", &tmp, e)),
    }
}

/// Reads a whole file, or `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, RaftStorageError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RaftStorageError::io("read", path, e)),
    }
}

/// Creates `dir` (and its parents) if it does not exist. A new directory's entry in
/// its parent is fsynced too, or a crash could lose the directory with everything
/// acknowledged inside it.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), RaftStorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| RaftStorageError::io("create directory", dir, e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

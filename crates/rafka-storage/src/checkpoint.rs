//! Small text checkpoint files, in Kafka's format, replaced atomically.
//!
//! Kafka's checkpoint files are text: a version line (`0`), an entry count,
//! then one entry per line. Rafka keeps them per partition directory:
//!
//! | file | entries |
//! |---|---|
//! | `leader-epoch-checkpoint` | `<epoch> <start offset>` |
//! | `recovery-point-offset-checkpoint` | `<offset>` |
//! | `log-start-offset-checkpoint` | `<offset>` |
//! | `high-watermark` | `<offset>` |
//!
//! (Kafka's per-log-dir offset checkpoints use `<topic> <partition> <offset>`
//! lines; a partition directory needs only the offset. The reader accepts
//! either form by taking the last field.)
//!
//! Writes go to `<name>.tmp`, are fsynced, renamed over the old file, and the
//! directory is fsynced, so a crash leaves either the old or the new file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::io::sync_dir;
use crate::StorageError;

pub(crate) const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
pub(crate) const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub(crate) const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
pub(crate) const HIGH_WATERMARK_CHECKPOINT: &str = "high-watermark";
/// Suffix of a checkpoint being written; leftovers are removed on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
const VERSION: &str = "0";

/// Writes `lines` as a version-0 checkpoint `name` in `dir`, atomically.
pub(crate) fn write_lines(dir: &Path, name: &str, lines: &[String]) -> Result<(), StorageError> {
    let mut text = String::with_capacity(16 + lines.iter().map(|l| l.len() + 1).sum::<usize>());
    text.push_str(VERSION);
    text.push('\n');
    text.push_str(&lines.len().to_string());
    text.push('\n');
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    {
        let mut file = File::create(&tmp).ctx("creating", &tmp)?;
        file.write_all(text.as_bytes()).ctx("writing", &tmp)?;
        file.sync_all().ctx("syncing", &tmp)?;
    }
    std::fs::rename(&tmp, &path).ctx("renaming into place", &path)?;
    sync_dir(dir).ctx("syncing directory", dir)?;
    Ok(())
}

/// Reads a version-0 checkpoint; `Ok(None)` if the file does not exist.
pub(crate) fn read_lines(dir: &Path, name: &str) -> Result<Option<Vec<String>>, StorageError> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StorageError::IoAt {
                op: "reading",
                path,
                source: e,
            })
        }
    };
    let corrupt = |reason: String| StorageError::CorruptCheckpoint {
        path: path.clone(),
        reason,
    };
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some(VERSION) => {}
        other => {
            return Err(corrupt(format!(
                "unsupported version line {other:?}, expected \"0\""
            )))
        }
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt("missing or malformed entry count".to_string()))?;
    let entries: Vec<String> = lines
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if entries.len() != count {
        return Err(corrupt(format!(
            "declares {count} entries but has {}",
            entries.len()
        )));
    }
    Ok(Some(entries))
}

/// Writes a single-offset checkpoint.
pub(crate) fn write_offset(dir: &Path, name: &str, offset: i64) -> Result<(), StorageError> {
    write_lines(dir, name, &[offset.to_string()])
}

/// Reads a single-offset checkpoint; `Ok(None)` if absent.
pub(crate) fn read_offset(dir: &Path, name: &str) -> Result<Option<i64>, StorageError> {
    let Some(entries) = read_lines(dir, name)? else {
        return Ok(None);
    };
    let path: PathBuf = dir.join(name);
    match entries.as_slice() {
        [line] => line
            .split_whitespace()
            .last()
            .and_then(|f| f.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| StorageError::CorruptCheckpoint {
                path,
                reason: format!("malformed offset line {line:?}"),
            }),
        other => Err(StorageError::CorruptCheckpoint {
            path,
            reason: format!("expected exactly one entry, found {}", other.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_checkpoint_round_trips_in_kafka_text_format() {
        let dir = tempfile::tempdir().unwrap();
        write_offset(dir.path(), "x", 42).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x")).unwrap(),
            "0\n1\n42\n"
        );
        assert_eq!(read_offset(dir.path(), "x").unwrap(), Some(42));
        assert!(!dir.path().join("x.tmp").exists());
    }

    #[test]
    fn missing_checkpoint_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_offset(dir.path(), "absent").unwrap(), None);
    }

    #[test]
    fn kafka_style_topic_partition_offset_line_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "0\n1\ntopic 3 77\n").unwrap();
        assert_eq!(read_offset(dir.path(), "x").unwrap(), Some(77));
    }

    #[test]
    fn malformed_checkpoint_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "0\n2\n5\n").unwrap();
        let err = read_offset(dir.path(), "x").unwrap_err().to_string();
        assert!(err.contains("declares 2 entries but has 1"), "{err}");
    }
}

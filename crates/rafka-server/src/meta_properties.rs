//! `meta.properties`: the identity stamped into every log directory, as in Kafka's KRaft
//! mode (`version=1`, `node.id`, `cluster.id`, `directory.id`). A directory that
//! belongs to another node or another cluster is refused at start-up, so a mis-mounted
//! volume can never be served as if it were this node's data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;
use uuid::Uuid;

use crate::properties;

pub const FILE_NAME: &str = "meta.properties";

#[derive(Debug, Error)]
pub enum MetaPropertiesError {
    #[error("{path} belongs to node {found}, but this node is configured as node.id={configured}")]
    NodeIdMismatch { path: String, found: i32, configured: i32 },
    #[error("{path} belongs to cluster {found}, but this node's cluster is {expected}")]
    ClusterIdMismatch { path: String, found: String, expected: String },
    #[error("cannot use {path}: {message}")]
    Io { path: String, message: String },
}

/// The identity read from (or written to) one log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: i32,
    pub cluster_id: String,
    pub directory_id: String,
}

fn io(path: &Path, e: impl std::fmt::Display) -> MetaPropertiesError {
    MetaPropertiesError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A Kafka-style id: a random UUID in URL-safe base64 without padding (22 characters).
pub fn new_kafka_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Reads `meta.properties` from `dir`, if present.
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaPropertiesError> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, e)),
    };
    let props: BTreeMap<String, String> = properties::parse(&text, &path.display().to_string())
        .map_err(|e| io(&path, e))?
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    let node_id = props
        .get("node.id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io(&path, "no valid node.id"))?;
    let cluster_id = props.get("cluster.id").cloned().ok_or_else(|| io(&path, "no cluster.id"))?;
    Ok(Some(MetaProperties {
        node_id,
        cluster_id,
        directory_id: props.get("directory.id").cloned().unwrap_or_default(),
    }))
}

/// Writes `meta.properties` atomically.
pub fn write(dir: &Path, meta: &MetaProperties) -> Result<(), MetaPropertiesError> {
    let path = dir.join(FILE_NAME);
    let tmp: PathBuf = dir.join(format!("{FILE_NAME}.tmp"));
    let text = format!(
        "#\n#Written by rafka\nnode.id={}\ndirectory.id={}\nversion=1\ncluster.id={}\n",
        meta.node_id, meta.directory_id, meta.cluster_id
    );
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Checks every directory's identity against the node id; returns the cluster id they
/// agree on, if any has one.
pub fn check_dirs(dirs: &[PathBuf], node_id: i32) -> Result<Option<String>, MetaPropertiesError> {
    let mut cluster: Option<(String, PathBuf)> = None;
    for dir in dirs {
        if let Some(meta) = read(dir)? {
            let path = dir.join(FILE_NAME).display().to_string();
            if meta.node_id != node_id {
                return Err(MetaPropertiesError::NodeIdMismatch { path, found: meta.node_id, configured: node_id });
            }
            match &cluster {
                Some((expected, _)) if *expected != meta.cluster_id => {
                    return Err(MetaPropertiesError::ClusterIdMismatch {
                        path,
                        found: meta.cluster_id,
                        expected: expected.clone(),
                    })
                }
                Some(_) => {}
                None => cluster = Some((meta.cluster_id, dir.clone())),
            }
        }
    }
    Ok(cluster.map(|(c, _)| c))
}

/// Stamps every directory with the node and cluster id (keeping existing directory ids).
pub fn stamp_dirs(dirs: &[PathBuf], node_id: i32, cluster_id: &str) -> Result<(), MetaPropertiesError> {
    for dir in dirs {
        let existing = read(dir)?;
        if let Some(meta) = &existing {
            if meta.cluster_id != cluster_id {
                return Err(MetaPropertiesError::ClusterIdMismatch {
                    path: dir.join(FILE_NAME).display().to_string(),
                    found: meta.cluster_id.clone(),
                    expected: cluster_id.to_string(),
                });
            }
            continue;
        }
        write(
            dir,
            &MetaProperties {
                node_id,
                cluster_id: cluster_id.to_string(),
                directory_id: new_kafka_id(),
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_ids_are_22_url_safe_characters() {
        let id = new_kafka_id();
        assert_eq!(id.len(), 22);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, new_kafka_id());
    }

    #[test]
    fn stamped_dirs_are_checked_on_the_next_start() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(check_dirs(&dirs, 3).unwrap(), None);
        stamp_dirs(&dirs, 3, "clusterA").unwrap();
        assert_eq!(check_dirs(&dirs, 3).unwrap().as_deref(), Some("clusterA"));
        let e = check_dirs(&dirs, 4).unwrap_err().to_string();
        assert!(e.contains("node 3") && e.contains("node.id=4"), "{e}");
        assert!(stamp_dirs(&dirs, 3, "clusterB").is_err());
    }
}

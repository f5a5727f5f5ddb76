//! Cluster metadata for Rafka.
//!
//! Everything a broker knows about the cluster — brokers, topics, partitions and
//! their configuration — lives in one ordered log of [`MetadataRecord`]s, as in
//! Kafka's KRaft mode. Replaying the records in order builds a [`MetadataImage`],
//! a read-only view that request handlers read and the broker reacts to.
//!
//! The parts:
//! - [`records`]: the versioned, serde-encoded record types. They only ever grow.
//! - [`image`]: the in-memory image and the deterministic `apply` of one record.
//! - [`topic_config`]: the topic-level configuration keys, their types, defaults
//!   and validation (shared by CreateTopics, AlterConfigs and DescribeConfigs).
//! - [`controller`]: pure decisions. Each takes the current image and a request and
//!   returns the records to commit plus the per-item results; nothing changes until
//!   the records are committed and replayed, so decisions are testable without I/O.
//! - [`log`]: the [`MetadataLog`] seam that orders and persists records; the Raft
//!   quorum (`rafka-raft`) implements it.
//! - [`names`]: Kafka's topic-name rules.

pub mod controller;
pub mod error;
pub mod image;
pub mod log;
pub mod names;
pub mod records;
pub mod topic_config;

pub use controller::Controller;
pub use error::{ControllerError, MetadataError};
pub use image::{BrokerImage, MetadataImage, PartitionImage, TopicImage};
pub use log::MetadataLog;
pub use records::{BrokerEndpoint, BrokerRegistration, MetadataRecord};

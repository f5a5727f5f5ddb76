//! Kafka's group coordinator for Rafka: consumer groups (the classic JoinGroup /
//! SyncGroup protocol, with static membership and the cooperative rebalancing that
//! clients run on top of it) and committed offsets.
//!
//! - [`records`]: the `__consumer_offsets` key and value formats (Kafka's own);
//! - [`group`]: one group's state machine, free of I/O;
//! - [`coordinator`]: the broker's coordinator, which loads the groups of the offsets
//!   partitions this broker leads and answers the group APIs.
//!
//! Storage is reached through [`coordinator::OffsetsLog`], which the Kafka front
//! implements on its partitions: this crate knows nothing of logs or replication.

pub mod coordinator;
pub mod group;
pub mod records;

pub use coordinator::{partition_for, CoordinatorSettings, GroupCoordinator, OffsetsLog, OFFSETS_TOPIC};
pub use group::GroupSettings;

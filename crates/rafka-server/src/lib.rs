//! Node wiring for Rafka: configuration, start-up, background duties and graceful
//! shutdown.
//!
//! - [`properties`]: Java `.properties` syntax.
//! - [`config`]: Kafka broker keys from file, environment and flags into a typed,
//!   validated [`config::BrokerConfig`].
//! - [`meta_properties`]: the node/cluster identity stamped into every log directory.
//! - [`raft_network`]: the metadata quorum's Raft RPCs over gRPC.
//! - [`quorum`]: the active controller as the node sees it, and command forwarding.
//! - [`node`]: starting a node in dependency order and stopping it in reverse.

pub mod config;
pub mod meta_properties;
pub mod node;
pub mod properties;
pub mod quorum;
pub mod raft_network;

pub use config::{BrokerConfig, ConfigError};
pub use node::{log_configuration, run, Node, NodeError};

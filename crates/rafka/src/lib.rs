//! The library half of the `rafka` binary: the small Kafka client the command-line
//! tools are built on (`client`) and the local-cluster layout of `rafka dev` (`dev`).
//! They are a library so that the benchmark harness (`crates/rafka-bench`) starts and
//! inspects clusters exactly the way `rafka dev` and the tools do.

pub mod client;
pub mod dev;

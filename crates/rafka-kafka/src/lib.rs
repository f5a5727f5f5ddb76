//! The Kafka wire-protocol front of a Rafka broker.
//!
//! Bytes become frames, frames become typed requests, requests become responses:
//!
//! - [`codec`]: length-prefixed frames (bounded by `socket.request.max.bytes` before
//!   any decoding), request-header parsing and response encoding, all through the
//!   `kafka-protocol` crate's generated codecs.
//! - [`connection`]: one task per client connection. Requests are started in arrival
//!   order and answered in arrival order; a request's waiting part (an `acks=all`
//!   produce, a long-poll fetch) may overlap the next request's start. A malformed
//!   frame ends that connection only.
//! - [`server`]: listener accept loops, a connection limit, graceful drain.
//! - [`versions`]: the table of implemented APIs and versions; ApiVersions is computed
//!   from it, and a request outside it is refused.
//! - [`handlers`]: one module per API family.
//! - [`partition`] and [`replica_manager`]: the partitions this broker hosts, created,
//!   reconfigured and deleted as the metadata image changes.
//! - [`alloc_guard`]: the global allocator that keeps a hostile array count in a
//!   request from aborting the process (the codec pre-allocates from wire counts).
//! - [`errors`]: the one place where internal errors become Kafka error codes.
//! - [`context`]: what every handler can see (node identity, metadata, controller,
//!   partitions, limits).

pub mod alloc_guard;
pub mod codec;
pub mod connection;
pub mod context;
pub mod errors;
pub mod failover_gate;
pub mod group_log;
pub mod handlers;
pub mod partition;
pub mod replica_manager;
pub mod server;
pub mod versions;

#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc_guard::GuardedAllocator = alloc_guard::GuardedAllocator;

pub use context::{BrokerContext, BrokerLimits, ConfigEntry, Listener};
pub use replica_manager::ReplicaManager;
pub use server::{serve_listener, ConnectionTracker};

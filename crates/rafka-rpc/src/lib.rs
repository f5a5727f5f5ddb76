//! gRPC stubs for Rafka's node-to-node services, generated from `proto/rafka.proto`:
//! the Raft transport of the metadata quorum and the active controller's command
//! service, and partition replication. See the `.proto` file for what each call carries.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("rafka.v1");

//! The consumer-group APIs, answered by this broker's group coordinator
//! ([`rafka_group::GroupCoordinator`]): JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete.

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::Pending;
use crate::connection::ConnectionInfo;
use crate::context::BrokerContext;

/// Whether `request` is one of the group APIs [`start`] answers.
pub fn handles(request: &RequestKind) -> bool {
    matches!(
        request,
        RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
            | RequestKind::OffsetFetch(_)
            | RequestKind::DescribeGroups(_)
            | RequestKind::ListGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::OffsetDelete(_)
    )
}

/// Starts a group request (one for which [`handles`] is true).
pub fn start(ctx: &Arc<BrokerContext>, conn: &ConnectionInfo, client_id: String, request: RequestKind, version: i16) -> Pending {
    let groups = ctx.groups.clone();
    // Kafka shows a member's host as "/address".
    let client_host = format!("/{}", conn.peer.ip());
    let pending: Pending = match request {
        RequestKind::JoinGroup(r) => Box::pin(async move {
            Some(ResponseKind::JoinGroup(groups.join_group(r, version, &client_id, &client_host).await))
        }),
        RequestKind::SyncGroup(r) => Box::pin(async move { Some(ResponseKind::SyncGroup(groups.sync_group(r, version).await)) }),
        RequestKind::Heartbeat(r) => super::ready(ResponseKind::Heartbeat(groups.heartbeat(r))),
        RequestKind::LeaveGroup(r) => super::ready(ResponseKind::LeaveGroup(groups.leave_group(r, version))),
        RequestKind::OffsetCommit(r) => {
            let ctx = ctx.clone();
            Box::pin(async move {
                let image = ctx.image();
                let exists = |topic: &str, partition: i32| image.partition(topic, partition).is_some();
                Some(ResponseKind::OffsetCommit(groups.offset_commit(r, &exists).await))
            })
        }
        RequestKind::OffsetFetch(r) => super::ready(ResponseKind::OffsetFetch(groups.offset_fetch(r, version))),
        RequestKind::DescribeGroups(r) => super::ready(ResponseKind::DescribeGroups(groups.describe_groups(r))),
        RequestKind::ListGroups(r) => super::ready(ResponseKind::ListGroups(groups.list_groups(r))),
        RequestKind::DeleteGroups(r) => Box::pin(async move { Some(ResponseKind::DeleteGroups(groups.delete_groups(r).await)) }),
        RequestKind::OffsetDelete(r) => Box::pin(async move { Some(ResponseKind::OffsetDelete(groups.offset_delete(r).await)) }),
        other => unreachable!("not a group request: {other:?}"),
    };
    pending
}

//! The group state machine, driven with explicit times.

use super::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn settings(initial_delay_ms: i64) -> GroupSettings {
    GroupSettings { initial_rebalance_delay_ms: initial_delay_ms, ..GroupSettings::default() }
}

fn params(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinParams {
    JoinParams {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".to_string(),
        protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

fn now_result<T: std::fmt::Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(r) => r,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
    match reply {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected a parked answer"),
    }
}

/// A dynamic member's two-step join (KIP-394); returns its id and parked answer.
fn join_new(g: &mut Group, name: &str, now: i64, s: &GroupSettings) -> (String, oneshot::Receiver<JoinResult>) {
    let first = now_result(g.join(params("", None, &["range"]), format!("{name}-id"), now, s));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    let id = first.member_id;
    let rx = later(g.join(params(&id, None, &["range"]), "unused".into(), now, s));
    (id, rx)
}

fn stored(g: &mut Group, leader: &str, generation: i32, assignments: &[(&str, &str)], now: i64) -> Vec<oneshot::Receiver<SyncResult>> {
    let mut receivers = Vec::new();
    let outcome = g.sync(
        leader,
        None,
        generation,
        None,
        None,
        assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        now,
    );
    match outcome {
        SyncOutcome::Store { generation, reply, .. } => {
            receivers.push(reply);
            g.finish_assignment(generation, Ok(()), now);
        }
        other => panic!("leader sync should store, got {other:?}"),
    }
    receivers
}

#[test]
fn two_members_join_get_one_generation_and_their_assignments() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, mut rx_a) = join_new(&mut g, "a", 0, &s);
    // One member: the join completes at once.
    let ja = rx_a.try_recv().unwrap();
    assert_eq!((ja.generation, ja.leader.as_str(), ja.members.len()), (1, a.as_str(), 1));
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let mut rx = stored(&mut g, &a, 1, &[(&a, "p0-p5")], 1);
    assert_eq!(rx.remove(0).try_recv().unwrap().assignment, Bytes::from("p0-p5"));
    assert_eq!(g.state(), GroupState::Stable);

    // A second member triggers a rebalance; the first learns it from its heartbeat.
    let (b, mut rx_b) = join_new(&mut g, "b", 10, &s);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(rx_b.try_recv().is_err());
    assert_eq!(g.heartbeat(&a, None, 1, 11), Err(ResponseError::RebalanceInProgress));
    let mut rx_a = later(g.join(params(&a, None, &["range"]), "x".into(), 12, &s));
    let (ja, jb) = (rx_a.try_recv().unwrap(), rx_b.try_recv().unwrap());
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.leader, a);
    assert_eq!((ja.members.len(), jb.members.len()), (2, 0), "only the leader sees the members");
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));

    let rx_follower = match g.sync(&b, None, 2, Some("consumer"), Some("range"), vec![], 13) {
        SyncOutcome::Reply(Reply::Later(rx)) => rx,
        other => panic!("follower should wait for the leader: {other:?}"),
    };
    stored(&mut g, &a, 2, &[(&a, "p0-p2"), (&b, "p3-p5")], 14);
    let mut rx_follower = rx_follower;
    assert_eq!(rx_follower.try_recv().unwrap().assignment, Bytes::from("p3-p5"));
    assert_eq!(g.heartbeat(&b, None, 2, 15), Ok(()));
    assert_eq!(g.heartbeat(&b, None, 1, 15), Err(ResponseError::IllegalGeneration));
    assert_eq!(g.heartbeat("nobody", None, 2, 15), Err(ResponseError::UnknownMemberId));
}

#[test]
fn a_silent_member_expires_and_the_rest_rebalance() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, _rx) = join_new(&mut g, "a", 0, &s);
    stored(&mut g, &a, 1, &[], 0);
    let (b, _rx_b) = join_new(&mut g, "b", 0, &s);
    let _rx_a = later(g.join(params(&a, None, &["range"]), "x".into(), 0, &s));
    stored(&mut g, &a, 2, &[], 0);
    assert_eq!(g.member_count(), 2);
    // b heartbeats, a does not.
    assert_eq!(g.heartbeat(&b, None, 2, 6_000), Ok(()));
    let expired = g.tick(SESSION as i64 + 1);
    assert_eq!(expired, vec![a.clone()]);
    assert_eq!(g.member_count(), 1);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let mut rx_b = later(g.join(params(&b, None, &["range"]), "x".into(), SESSION as i64 + 2, &s));
    let jb = rx_b.try_recv().unwrap();
    assert_eq!((jb.generation, jb.leader.as_str()), (3, b.as_str()), "b leads once a has gone");
}

#[test]
fn a_member_that_does_not_rejoin_in_the_rebalance_timeout_is_dropped() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, _) = join_new(&mut g, "a", 0, &s);
    stored(&mut g, &a, 1, &[], 0);
    let (_b, mut rx_b) = join_new(&mut g, "b", 100, &s);
    // a keeps heartbeating but never rejoins.
    for t in (1_000..REBALANCE as i64).step_by(3_000) {
        let _ = g.heartbeat(&a, None, 1, t);
    }
    g.tick(100 + REBALANCE as i64 + 1);
    let jb = rx_b.try_recv().unwrap();
    assert_eq!(jb.generation, 2);
    assert_eq!(g.member_count(), 1);
    assert_eq!(g.heartbeat(&a, None, 1, REBALANCE as i64 + 200), Err(ResponseError::UnknownMemberId));
}

#[test]
fn leaving_members_rebalance_and_the_last_one_empties_the_group() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, _) = join_new(&mut g, "a", 0, &s);
    stored(&mut g, &a, 1, &[], 0);
    assert_eq!(g.leave(&a, None, 5), Ok(()));
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 2);
    assert!(g.take_needs_store(), "an emptied group's new generation is written");
    assert_eq!(g.leave(&a, None, 6), Err(ResponseError::UnknownMemberId));
}

#[test]
fn the_initial_delay_waits_for_more_members_before_the_first_generation() {
    let s = settings(3_000);
    let mut g = Group::new("g".into(), 0, &s);
    let (_a, mut rx_a) = join_new(&mut g, "a", 0, &s);
    assert!(rx_a.try_recv().is_err(), "the first join waits out the delay");
    let (_b, mut rx_b) = join_new(&mut g, "b", 1_000, &s);
    g.tick(3_000);
    // b joined during the delay: it is extended once more.
    assert!(rx_a.try_recv().is_err());
    g.tick(6_000);
    let (ja, jb) = (rx_a.try_recv().unwrap(), rx_b.try_recv().unwrap());
    assert_eq!((ja.generation, jb.generation), (1, 1));
}

#[test]
fn protocols_must_overlap_and_session_timeouts_be_in_range() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, _) = join_new(&mut g, "a", 0, &s);
    stored(&mut g, &a, 1, &[], 0);
    let r = now_result(g.join(params("", None, &["roundrobin"]), "b".into(), 1, &s));
    assert_eq!(r.error, Some(ResponseError::InconsistentGroupProtocol));
    let mut short = params("", None, &["range"]);
    short.session_timeout_ms = 10;
    assert_eq!(now_result(g.join(short, "c".into(), 1, &s)).error, Some(ResponseError::InvalidSessionTimeout));
    assert_eq!(
        now_result(g.join(params("ghost", None, &["range"]), "d".into(), 1, &s)).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn the_most_voted_common_protocol_is_chosen() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let rx_a = later(g.join(
        JoinParams { require_known_member_id: false, ..params("", None, &["cooperative-sticky", "range"]) },
        "a".into(),
        0,
        &s,
    ));
    drop(rx_a);
    assert_eq!(g.protocol(), Some("cooperative-sticky"));
}

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let mut rx = later(g.join(params("", Some("i-1"), &["range"]), "old".into(), 0, &s));
    assert_eq!(rx.try_recv().unwrap().member_id, "old", "static members skip MEMBER_ID_REQUIRED");
    stored(&mut g, "old", 1, &[("old", "mine")], 0);
    // The client restarts: a new member id, same instance id, same subscription.
    let r = now_result(g.join(params("", Some("i-1"), &["range"]), "new".into(), 100, &s));
    assert_eq!((r.error, r.generation, r.member_id.as_str()), (None, 1, "new"));
    assert_eq!(g.state(), GroupState::Stable);
    assert!(g.take_needs_store());
    match g.sync("new", Some("i-1"), 1, None, None, vec![], 101) {
        SyncOutcome::Reply(Reply::Now(r)) => assert_eq!(r.assignment, Bytes::from("mine")),
        other => panic!("{other:?}"),
    }
    // The old incarnation is fenced.
    assert_eq!(g.heartbeat("old", Some("i-1"), 1, 102), Err(ResponseError::FencedInstanceId));
    assert_eq!(g.leave("old", Some("i-1"), 103), Err(ResponseError::FencedInstanceId));
}

#[test]
fn commits_follow_kafkas_membership_rules() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    // A standalone consumer (never joins) commits with generation -1.
    assert_eq!(g.validate_commit("", None, -1, 0), Ok(()));
    let (a, _) = join_new(&mut g, "a", 0, &s);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.validate_commit(&a, None, 1, 1), Err(ResponseError::RebalanceInProgress));
    stored(&mut g, &a, 1, &[], 1);
    assert_eq!(g.validate_commit(&a, None, 1, 2), Ok(()));
    assert_eq!(g.validate_commit(&a, None, 0, 2), Err(ResponseError::IllegalGeneration));
    assert_eq!(g.validate_commit("", None, -1, 2), Err(ResponseError::UnknownMemberId));
}

#[test]
fn later_offset_records_win_whatever_order_writes_finish_in() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let value = |offset| OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0 };
    g.apply_offset("t", 0, Some(value(20)), 11);
    g.apply_offset("t", 0, Some(value(10)), 10);
    assert_eq!(g.offset("t", 0).unwrap().value.offset, 20);
    g.apply_offset("t", 0, None, 12);
    assert!(g.offset("t", 0).is_none());
    assert!(g.is_vacant());
}

#[test]
fn a_stored_group_loads_as_stable_and_its_members_must_heartbeat() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, _) = join_new(&mut g, "a", 0, &s);
    stored(&mut g, &a, 1, &[(&a, "asg")], 0);
    let value = g.to_value(5);
    let mut loaded = Group::new("g".into(), 1_000, &s);
    loaded.load(crate::records::GroupValue::decode(value.encode()).unwrap(), 1_000);
    assert_eq!((loaded.state(), loaded.generation(), loaded.leader()), (GroupState::Stable, 1, Some(a.as_str())));
    match loaded.sync(&a, None, 1, None, None, vec![], 1_001) {
        SyncOutcome::Reply(Reply::Now(r)) => assert_eq!(r.assignment, Bytes::from("asg")),
        other => panic!("{other:?}"),
    }
    loaded.tick(1_001 + SESSION as i64 + 1);
    assert_eq!(loaded.state(), GroupState::Empty, "a member that never reached the new coordinator expires");
}

#[test]
fn a_failed_assignment_write_sends_everyone_back_to_rejoin() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    let (a, _) = join_new(&mut g, "a", 0, &s);
    let mut reply = match g.sync(&a, None, 1, None, None, vec![], 1) {
        SyncOutcome::Store { reply, generation, .. } => {
            g.finish_assignment(generation, Err(ResponseError::NotCoordinator), 2);
            reply
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(reply.try_recv().unwrap().error, Some(ResponseError::NotCoordinator));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn only_empty_groups_can_be_deleted() {
    let s = settings(0);
    let mut g = Group::new("g".into(), 0, &s);
    assert_eq!(g.check_deletable(), Ok(()));
    let (_a, _) = join_new(&mut g, "a", 0, &s);
    assert_eq!(g.check_deletable(), Err(ResponseError::NonEmptyGroup));
    g.mark_dead(ResponseError::NotCoordinator);
    assert_eq!(g.check_deletable(), Err(ResponseError::GroupIdNotFound));
}

//! High watermark, ISR proposals and divergence checks of a partition, as leader and
//! as follower, driven directly (no network).

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use rafka_storage::batch::test_support::simple_batch;
use rafka_storage::LogConfig;
use uuid::Uuid;

use super::*;

const ME: i32 = 1;

fn state(leader: i32, leader_epoch: i32, isr: &[i32], min_insync: usize) -> ReplicaState {
    ReplicaState {
        leader,
        leader_epoch,
        partition_epoch: leader_epoch,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        min_insync_replicas: min_insync,
    }
}

fn open(dir: &tempfile::TempDir, initial: ReplicaState) -> Partition {
    Partition::open(dir.path().join("t-0"), "t", Uuid::new_v4(), 0, ME, LogConfig::default(), initial).unwrap()
}

fn append(p: &Partition, records: usize) -> i64 {
    let info = p.append_as_leader(BytesMut::from(&simple_batch(records, 1_000)[..]), 1, 1_000).unwrap();
    info.last_offset + 1
}

#[test]
fn high_watermark_is_the_smallest_log_end_over_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1, 2, 3], 1));
    let leo = append(&p, 5);
    assert_eq!(p.high_watermark(), 0, "followers have not fetched yet");
    p.record_follower_fetch(2, leo, 10);
    assert_eq!(p.high_watermark(), 0, "follower 3 is still unknown");
    p.record_follower_fetch(3, 3, 10);
    assert_eq!(p.high_watermark(), 3);
    p.record_follower_fetch(3, leo, 11);
    assert_eq!(p.high_watermark(), leo);
    // Never backwards, even if a follower reports less.
    p.record_follower_fetch(2, 1, 12);
    assert_eq!(p.high_watermark(), leo);
}

#[test]
fn sole_isr_member_advances_alone_but_not_below_min_insync() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1], 1));
    let leo = append(&p, 3);
    assert_eq!(p.high_watermark(), leo);

    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1], 2));
    let err = p.append_as_leader(BytesMut::from(&simple_batch(1, 1_000)[..]), -1, 1_000).unwrap_err();
    assert_eq!(err.code, ResponseError::NotEnoughReplicas);
    append(&p, 3); // acks=1 is still written...
    assert_eq!(p.high_watermark(), 0, "...but not committed while the ISR is below min.insync.replicas");
}

#[test]
fn a_caught_up_follower_is_proposed_for_the_isr_once_and_counts_before_commit() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1, 2], 1));
    let leo = append(&p, 4);
    p.record_follower_fetch(2, leo, 10);
    assert_eq!(p.high_watermark(), leo);
    assert_eq!(p.record_follower_fetch(3, 1, 10), None, "behind the HW: not in sync");
    let proposal = p.record_follower_fetch(3, leo, 11).expect("caught up: proposed");
    assert_eq!(proposal.new_isr, vec![1, 2, 3]);
    assert_eq!(proposal.partition_epoch, 1);
    assert_eq!(p.record_follower_fetch(3, leo, 12), None, "one proposal in flight");
    // While pending, the joining follower holds the HW back (maximal ISR).
    let leo2 = append(&p, 2);
    p.record_follower_fetch(2, leo2, 13);
    assert_eq!(p.high_watermark(), leo);
    p.record_follower_fetch(3, leo2, 13);
    assert_eq!(p.high_watermark(), leo2);
    // The committed change clears the proposal.
    p.set_state(ReplicaState { partition_epoch: 2, ..state(ME, 1, &[1, 2, 3], 1) }).unwrap();
    let leo3 = append(&p, 1);
    p.record_follower_fetch(2, leo3, 14);
    assert_eq!(p.high_watermark(), leo2, "follower 3 is an ISR member now");
}

#[test]
fn followers_not_caught_up_within_the_lag_are_proposed_for_removal() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1, 2, 3], 1));
    let now = crate::handlers::now_ms();
    let leo = append(&p, 2);
    p.record_follower_fetch(2, leo, now + 100);
    p.record_follower_fetch(3, 0, now + 100);
    assert_eq!(p.propose_isr_shrink(now + 1_000, 5_000), None, "within the lag");
    // Follower 2 keeps fetching at the end; follower 3 stays behind.
    p.record_follower_fetch(2, leo, now + 6_000);
    p.record_follower_fetch(3, 0, now + 6_000);
    let proposal = p.propose_isr_shrink(now + 6_001, 5_000).expect("3 lags");
    assert_eq!(proposal.new_isr, vec![1, 2]);
    assert_eq!(p.propose_isr_shrink(now + 6_002, 5_000), None, "one proposal in flight");
    p.isr_change_done(&proposal);
    assert!(p.propose_isr_shrink(now + 6_003, 5_000).is_some(), "may propose again after an answer");
}

#[test]
fn a_follower_that_fetched_up_to_the_previous_end_counts_as_caught_up_then() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1, 2], 1));
    let now = crate::handlers::now_ms();
    let leo = append(&p, 2);
    p.record_follower_fetch(2, leo, now + 1_000); // caught up at +1000
    append(&p, 2); // the leader moves on
    p.record_follower_fetch(2, leo, now + 9_000); // reached the end of +1000 only
    assert!(p.propose_isr_shrink(now + 9_001, 5_000).is_some(), "caught up last at +1000");
}

#[test]
fn divergence_is_detected_from_the_epoch_history() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1], 1));
    append(&p, 3); // epoch 1: offsets 0..3
    p.set_state(state(ME, 3, &[1], 1)).unwrap();
    append(&p, 2); // epoch 3: offsets 3..5
    assert_eq!(p.check_follower_position(3, 1).unwrap(), FollowerPosition::Consistent);
    assert_eq!(p.check_follower_position(5, 3).unwrap(), FollowerPosition::Consistent);
    // A follower that wrote offsets 3..6 in epoch 2 (which we never had).
    assert_eq!(p.check_follower_position(6, 2).unwrap(), FollowerPosition::Diverging { epoch: 1, end_offset: 3 });
    // A follower with more of epoch 1 than we have.
    assert_eq!(p.check_follower_position(4, 1).unwrap(), FollowerPosition::Diverging { epoch: 1, end_offset: 3 });
    assert_eq!(p.check_follower_position(0, -1).unwrap(), FollowerPosition::Consistent);
}

#[test]
fn a_follower_follows_the_leaders_high_watermark_within_its_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(2, 1, &[1, 2], 1));
    let leader = tempfile::tempdir().unwrap();
    let l = Partition::open(leader.path().join("t-0"), "t", Uuid::new_v4(), 0, 2, LogConfig::default(), state(2, 1, &[2], 1)).unwrap();
    l.append_as_leader(BytesMut::from(&simple_batch(4, 1_000)[..]), 1, 1_000).unwrap();
    let batches = l.log().unwrap().read(0, 1 << 20, i64::MAX, true).unwrap().records;
    p.update_follower_high_watermark(4);
    assert_eq!(p.high_watermark(), 0, "nothing of ours to expose yet");
    assert!(p.append_as_follower(batches.clone(), 3, 1).is_err(), "not our leader");
    p.append_as_follower(batches, 2, 1).unwrap();
    p.update_follower_high_watermark(2);
    assert_eq!(p.high_watermark(), 2);
    p.update_follower_high_watermark(10);
    assert_eq!(p.high_watermark(), 4, "bounded by our own log end");
    assert!(p.truncate_as_follower(1, 3, 1).is_err(), "not our leader");
    assert_eq!(p.log().unwrap().log_end_offset(), 4);
    p.truncate_as_follower(1, 2, 1).unwrap();
    assert!(p.high_watermark() <= p.log().unwrap().log_end_offset());
    // Once this broker leads, a late divergence answer from the old leader cuts nothing.
    p.set_state(state(ME, 2, &[1, 2], 1)).unwrap();
    let end = append(&p, 3);
    assert!(p.truncate_as_follower(0, 2, 1).is_err(), "we lead now");
    assert!(p.restart_as_follower_at(100, 2, 1).is_err());
    assert_eq!(p.log().unwrap().log_end_offset(), end);
}

#[test]
fn losing_leadership_wakes_state_watchers_and_stops_hw_tracking() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(&dir, state(ME, 1, &[1, 2], 1));
    let mut watcher = p.watch_state();
    watcher.borrow_and_update();
    p.set_state(state(2, 2, &[2], 1)).unwrap();
    assert!(watcher.has_changed().unwrap());
    assert!(!p.is_leader());
    assert_eq!(p.record_follower_fetch(2, 0, 1), None);
    assert_eq!(
        p.append_as_leader(BytesMut::from(&simple_batch(1, 1_000)[..]), 1, 1_000).unwrap_err().code,
        ResponseError::NotLeaderOrFollower
    );
}

// --------------------------------------------------------------------------- flush policy

fn open_with_flush(dir: &tempfile::TempDir, initial: ReplicaState, flush_messages: i64) -> Arc<Partition> {
    let config = LogConfig { flush_messages, ..LogConfig::default() };
    Arc::new(Partition::open(dir.path().join("t-0"), "t", Uuid::new_v4(), 0, ME, config, initial).unwrap())
}

/// A sync hook that holds the first sync until the returned sender sends (or drops).
fn hold_first_sync(p: &Partition) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(Some(held));
    p.log().unwrap().set_sync_hook(Some(Arc::new(move || {
        if let Some(rx) = held.lock().take() {
            rx.recv().ok();
        }
        Ok(())
    })));
    release
}

fn far_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(30)
}

#[test]
fn durable_mode_the_high_watermark_waits_for_the_leaders_sync() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 1);
    assert!(p.is_durable());
    let leo = append(&p, 5);
    assert_eq!(p.high_watermark(), 0, "appended, not fsynced: not committed");
    assert_eq!(p.sync_log().unwrap(), leo);
    assert_eq!(p.high_watermark(), leo);

    // With followers: their fetch offsets count, and so does the leader's durable end.
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1, 2, 3], 1), 1);
    let leo = append(&p, 4);
    p.record_follower_fetch(2, leo, 10);
    p.record_follower_fetch(3, leo, 10);
    assert_eq!(p.high_watermark(), 0, "followers have it, the leader has not synced it");
    p.sync_log().unwrap();
    assert_eq!(p.high_watermark(), leo);
}

#[test]
fn default_mode_counts_the_log_end_and_never_syncs_per_append() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), rafka_storage::NO_FLUSH);
    assert!(!p.is_durable());
    let leo = append(&p, 5);
    assert_eq!(p.high_watermark(), leo);
    assert_eq!(p.sync_after_append(leo), None);
    let log = p.log().unwrap();
    assert_eq!((log.synced_end_offset(), log.appended_syncs()), (0, 0));
}

#[test]
fn leaving_the_durable_mode_lets_the_high_watermark_count_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 1);
    let leo = append(&p, 3);
    assert_eq!(p.high_watermark(), 0);
    p.update_log_config(LogConfig::default());
    assert!(!p.is_durable());
    assert_eq!(p.high_watermark(), leo);
}

#[tokio::test]
async fn a_durable_append_is_acknowledged_only_after_its_sync_round() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 1);
    let release = hold_first_sync(&p);
    let end = append(&p, 2);
    let round = p.sync_after_append(end).expect("durable: a round to wait for");
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.wait_synced(round, end, far_deadline()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "acknowledged before the fsync completed");
    assert_eq!(p.high_watermark(), 0);
    release.send(()).unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(p.high_watermark(), end);
    assert_eq!(p.sync_after_append(end), None, "already durable: nothing to wait for");
}

#[tokio::test]
async fn concurrent_durable_appends_share_sync_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 1);
    let release = hold_first_sync(&p);
    let first_end = append(&p, 1);
    let first = p.sync_after_append(first_end).unwrap();
    while p.log().unwrap().appended_syncs() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await; // until the fsync is in flight
    }
    let mut waits = vec![(first, first_end)];
    for _ in 0..10 {
        let end = append(&p, 1);
        waits.push((p.sync_after_append(end).unwrap(), end));
    }
    assert!(waits[1..].iter().all(|(round, _)| *round == first + 1), "{waits:?}");
    release.send(()).unwrap();
    for (round, end) in waits {
        p.wait_synced(round, end, far_deadline()).await.unwrap();
    }
    assert_eq!(p.log().unwrap().appended_syncs(), 2, "11 appends, 2 fsyncs");
    assert_eq!(p.high_watermark(), 11);
}

#[tokio::test]
async fn a_failed_durable_sync_is_a_storage_error_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 1);
    p.log().unwrap().set_sync_hook(Some(Arc::new(|| Err(std::io::Error::other("injected EIO")))));
    let end = append(&p, 3);
    let round = p.sync_after_append(end).unwrap();
    let err = p.wait_synced(round, end, far_deadline()).await.unwrap_err();
    assert_eq!(err.code, ResponseError::KafkaStorageError);
    assert!(err.message.as_deref().unwrap_or("").contains("injected EIO"), "{err:?}");
    assert_eq!(p.high_watermark(), 0);

    p.log().unwrap().set_sync_hook(None);
    let round = p.sync_after_append(end).expect("still not durable");
    p.wait_synced(round, end, far_deadline()).await.unwrap();
    assert_eq!(p.high_watermark(), end);
}

#[tokio::test]
async fn a_sync_that_outlasts_the_request_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 1);
    let release = hold_first_sync(&p);
    let end = append(&p, 1);
    let round = p.sync_after_append(end).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
    assert_eq!(p.wait_synced(round, end, deadline).await.unwrap_err().code, ResponseError::RequestTimedOut);
    drop(release);
}

#[tokio::test]
async fn flush_messages_n_syncs_in_the_background_once_n_are_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(ME, 1, &[1], 1), 3);
    let end = append(&p, 2);
    assert_eq!(p.sync_after_append(end), None);
    assert_eq!(p.high_watermark(), end, "not the durable mode: the HW counts the log end");
    assert_eq!(p.unsynced_messages(), 2);
    let end = append(&p, 1);
    assert_eq!(p.sync_after_append(end), None, "acks never wait for it");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while p.log().unwrap().synced_end_offset() < end {
        assert!(std::time::Instant::now() < deadline, "no background sync");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(p.unsynced_messages(), 0);
}

#[test]
fn durable_follower_high_watermark_stays_within_its_durable_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_with_flush(&dir, state(2, 1, &[1, 2], 1), 1);
    let leader = tempfile::tempdir().unwrap();
    let l = Partition::open(leader.path().join("t-0"), "t", Uuid::new_v4(), 0, 2, LogConfig::default(), state(2, 1, &[2], 1)).unwrap();
    l.append_as_leader(BytesMut::from(&simple_batch(4, 1_000)[..]), 1, 1_000).unwrap();
    let batches = l.log().unwrap().read(0, 1 << 20, i64::MAX, true).unwrap().records;
    p.append_as_follower(batches, 2, 1).unwrap();
    p.update_follower_high_watermark(4);
    assert_eq!(p.high_watermark(), 0, "nothing of ours is on disk yet");
    assert_eq!(p.sync_log().unwrap(), 4);
    assert_eq!(p.high_watermark(), 4, "follows the leader's HW up to the durable end");
}

/// Becoming leader and a late answer from the previous leader race: the new epoch must
/// start after every batch the old leader's answer appended, never under one (or the
/// epoch history would claim the old epoch ended before batches that carry it, and every
/// follower would truncate and re-fetch them forever).
#[test]
fn a_new_leader_epoch_starts_after_every_batch_appended_as_follower() {
    let leader = tempfile::tempdir().unwrap();
    let l = Partition::open(leader.path().join("t-0"), "t", Uuid::new_v4(), 0, 2, LogConfig::default(), state(2, 1, &[2], 1)).unwrap();
    for _ in 0..400 {
        l.append_as_leader(BytesMut::from(&simple_batch(1, 1_000)[..]), 1, 1_000).unwrap();
    }
    let log = l.log().unwrap();
    let batches: Vec<bytes::Bytes> = (0..400).map(|o| log.read(o, 1, i64::MAX, true).unwrap().records).collect();
    drop(log);
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(open(&dir, state(2, 1, &[1, 2], 1)));
        let follower = {
            let (p, batches) = (p.clone(), batches.clone());
            std::thread::spawn(move || {
                for b in batches {
                    if p.append_as_follower(b, 2, 1).is_err() {
                        break;
                    }
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_micros(200 + 37 * round));
        p.set_state(state(ME, 2, &[1, 2], 1)).unwrap();
        follower.join().unwrap();
        let log = p.log().unwrap();
        assert_eq!(
            log.end_offset_for_epoch(1),
            (1, log.log_end_offset()),
            "round {round}: epoch 2 must start at the log end, after every epoch-1 batch"
        );
    }
}

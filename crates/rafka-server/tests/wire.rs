//! Request handling over the wire: a real node, requests encoded with the Kafka codecs.

mod support;

/// The broker's allocator, as in the `rafka` binary: without it the hostile-count test
/// aborts this whole test process (which is the bug the guard exists for).
#[global_allocator]
static ALLOCATOR: rafka_kafka::alloc_guard::GuardedAllocator = rafka_kafka::alloc_guard::GuardedAllocator;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_storage::batch::test_support::{build_batch, records_of};
use support::{Client, TestBroker};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_topic(client: &mut Client, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let request = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )]);
    match client.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(request)).await {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        other => panic!("{other:?}"),
    }
}

fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default().with_acks(acks).with_timeout_ms(5_000).with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])]),
    )
}

async fn produce(client: &mut Client, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    match client.call(ApiKey::Produce, 9, produce_request(topic, partition, -1, records)).await {
        ResponseKind::Produce(r) => {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        }
        other => panic!("{other:?}"),
    }
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_current_leader_epoch(-1)
            .with_partition_max_bytes(1 << 20)])])
}

async fn fetch(client: &mut Client, topic: &str, partition: i32, offset: i64) -> fetch_response::PartitionData {
    match client.call(ApiKey::Fetch, 11, RequestKind::Fetch(fetch_request(topic, partition, offset, 0))).await {
        ResponseKind::Fetch(mut r) => r.responses.remove(0).partitions.remove(0),
        other => panic!("{other:?}"),
    }
}

fn batch(values: &[&str], ts: i64) -> Bytes {
    let records: Vec<(Option<&[u8]>, Option<&[u8]>, i64)> =
        values.iter().map(|v| (Some(b"k".as_slice()), Some(v.as_bytes()), ts)).collect();
    build_batch(ts, &records).freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_answers_the_implemented_table_in_every_version() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    for version in [0, 1, 2, 3, 4] {
        match client.call(ApiKey::ApiVersions, version, RequestKind::ApiVersions(ApiVersionsRequest::default())).await {
            ResponseKind::ApiVersions(r) => {
                assert_eq!(r.error_code, 0);
                let keys: Vec<i16> = r.api_keys.iter().map(|k| k.api_key).collect();
                let expected: Vec<i16> = rafka_kafka::versions::SUPPORTED_APIS.iter().map(|a| a.key as i16).collect();
                assert_eq!(keys, expected);
            }
            other => panic!("{other:?}"),
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_api_versions_version_gets_a_v0_answer_with_unsupported_version() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    // ApiVersions v99: header fields are fixed-position, the body is irrelevant.
    let mut frame = vec![];
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&99i16.to_be_bytes());
    frame.extend_from_slice(&42i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    client.send_raw_frame(&frame).await;
    let (correlation, response) = client.recv(ApiKey::ApiVersions, 0).await;
    assert_eq!(correlation, 42);
    match response {
        ResponseKind::ApiVersions(r) => {
            assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
            assert!(r.api_keys.iter().any(|k| k.api_key == 18 && k.max_version == 4));
        }
        other => panic!("{other:?}"),
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_batches_are_fetched_back_with_assigned_offsets() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "orders", 2, &[]).await, 0);
    assert_eq!(produce(&mut client, "orders", 1, batch(&["a", "b", "c"], 1_000)).await, (0, 0));
    assert_eq!(produce(&mut client, "orders", 1, batch(&["d"], 2_000)).await, (0, 3));
    let data = fetch(&mut client, "orders", 1, 0).await;
    assert_eq!(data.error_code, 0);
    assert_eq!(data.high_watermark, 4);
    let bytes = data.records.unwrap();
    let mut values = vec![];
    for item in rafka_storage::batch::batches(&bytes) {
        let (_, range) = item.unwrap();
        for (offset, _, _, value) in records_of(&bytes[range]) {
            values.push((offset, String::from_utf8(value.unwrap()).unwrap()));
        }
    }
    assert_eq!(values, vec![(0, "a".into()), (1, "b".into()), (2, "c".into()), (3, "d".into())]);
    // Reading from the middle returns the batch that holds the offset.
    let data = fetch(&mut client, "orders", 1, 3).await;
    assert_eq!(records_of(&data.records.unwrap())[0].0, 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_fetch_returns_as_soon_as_data_arrives() {
    let broker = TestBroker::start(&[]).await;
    let mut admin = broker.client().await;
    assert_eq!(create_topic(&mut admin, "poll", 1, &[]).await, 0);
    let mut consumer = broker.client().await;
    let started = Instant::now();
    let id = consumer.send(ApiKey::Fetch, 11, &RequestKind::Fetch(fetch_request("poll", 0, 0, 10_000))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(produce(&mut admin, "poll", 0, batch(&["x"], 1)).await.0, 0);
    let (got, response) = consumer.recv(ApiKey::Fetch, 11).await;
    assert_eq!(got, id);
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the produce, not the 10 s timeout");
    match response {
        ResponseKind::Fetch(r) => assert!(!r.responses[0].partitions[0].records.as_ref().unwrap().is_empty()),
        other => panic!("{other:?}"),
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_gets_no_response_and_later_requests_still_answer_in_order() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "fire", 1, &[]).await, 0);
    client.send(ApiKey::Produce, 9, &produce_request("fire", 0, 0, batch(&["x"], 1))).await;
    let id = client.send(ApiKey::ApiVersions, 3, &RequestKind::ApiVersions(ApiVersionsRequest::default())).await;
    let (got, _) = client.recv(ApiKey::ApiVersions, 3).await;
    assert_eq!(got, id, "the next response is the ApiVersions one: acks=0 is silent");
    assert_eq!(fetch(&mut client, "fire", 0, 0).await.high_watermark, 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_kafka_error_codes_and_nothing_is_written() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "strict", 1, &[("max.message.bytes", "200")]).await, 0);
    let mut corrupt = batch(&["abc"], 1).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(produce(&mut client, "strict", 0, Bytes::from(corrupt)).await.0, ResponseError::CorruptMessage.code());
    let big = "x".repeat(500);
    assert_eq!(produce(&mut client, "strict", 0, batch(&[&big], 1)).await.0, ResponseError::MessageTooLarge.code());
    assert_eq!(produce(&mut client, "nope", 0, batch(&["a"], 1)).await.0, ResponseError::UnknownTopicOrPartition.code());
    assert_eq!(produce(&mut client, "strict", 7, batch(&["a"], 1)).await.0, ResponseError::UnknownTopicOrPartition.code());
    let bad_acks = client.call(ApiKey::Produce, 9, produce_request("strict", 0, 5, batch(&["a"], 1))).await;
    match bad_acks {
        ResponseKind::Produce(r) => {
            assert_eq!(r.responses[0].partition_responses[0].error_code, ResponseError::InvalidRequiredAcks.code())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fetch(&mut client, "strict", 0, 0).await.high_watermark, 0);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validates_like_kafka() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "dup", 1, &[]).await, 0);
    assert_eq!(create_topic(&mut client, "dup", 1, &[]).await, ResponseError::TopicAlreadyExists.code());
    assert_eq!(create_topic(&mut client, "bad/name", 1, &[]).await, ResponseError::InvalidTopicException.code());
    assert_eq!(create_topic(&mut client, &"x".repeat(250), 1, &[]).await, ResponseError::InvalidTopicException.code());
    assert_eq!(create_topic(&mut client, "zero", 0, &[]).await, ResponseError::InvalidPartitions.code());
    assert_eq!(create_topic(&mut client, "cfg", 1, &[("retention.ms", "soon")]).await, ResponseError::InvalidConfig.code());
    let rf3 = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("rf3"))
        .with_num_partitions(1)
        .with_replication_factor(3)]);
    match client.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(rf3)).await {
        ResponseKind::CreateTopics(r) => {
            assert_eq!(r.topics[0].error_code, ResponseError::InvalidReplicationFactor.code());
            assert!(r.topics[0].error_message.as_ref().unwrap().contains("replication factor 3"));
        }
        other => panic!("{other:?}"),
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_auto_creates_topics_only_when_allowed() {
    let broker = TestBroker::start(&["num.partitions=3"]).await;
    let mut client = broker.client().await;
    let request = |topic: &str, allow: bool| {
        RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))]))
                .with_allow_auto_topic_creation(allow),
        )
    };
    match client.call(ApiKey::Metadata, 12, request("manual", false)).await {
        ResponseKind::Metadata(r) => assert_eq!(r.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code()),
        other => panic!("{other:?}"),
    }
    match client.call(ApiKey::Metadata, 12, request("auto", true)).await {
        ResponseKind::Metadata(r) => {
            assert_eq!(r.topics[0].error_code, 0);
            assert_eq!(r.topics[0].partitions.len(), 3);
            assert!(r.topics[0].partitions.iter().all(|p| p.leader_id.0 == 1));
            assert_eq!(r.brokers.len(), 1);
            assert_eq!(r.brokers[0].port, broker.addr.port() as i32);
            assert!(r.cluster_id.is_some());
        }
        other => panic!("{other:?}"),
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_finds_earliest_latest_and_by_timestamp() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "times", 1, &[]).await, 0);
    produce(&mut client, "times", 0, batch(&["a", "b"], 1_000)).await;
    produce(&mut client, "times", 0, batch(&["c"], 5_000)).await;
    let lookup = |ts: i64| {
        RequestKind::ListOffsets(ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(name("times")).with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(-1)
                .with_timestamp(ts)]),
        ]))
    };
    let mut answers = vec![];
    for ts in [-2, -1, 3_000, 1_000, 9_999] {
        match client.call(ApiKey::ListOffsets, 7, lookup(ts)).await {
            ResponseKind::ListOffsets(r) => {
                let p = &r.topics[0].partitions[0];
                assert_eq!(p.error_code, 0);
                answers.push(p.offset);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answers, vec![0, 3, 2, 0, -1]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_are_described_altered_and_survive_restart() {
    let mut broker = TestBroker::start(&["log.retention.hours=1"]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "conf", 1, &[("segment.bytes", "4096")]).await, 0);
    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("conf"))
        .with_configs(vec![AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_config_operation(0)
            .with_value(Some(StrBytes::from_static_str("60000")))])]);
    match client.call(ApiKey::IncrementalAlterConfigs, 1, RequestKind::IncrementalAlterConfigs(alter)).await {
        ResponseKind::IncrementalAlterConfigs(r) => assert_eq!(r.responses[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    drop(client);
    broker.restart().await;
    let mut client = broker.client().await;
    let describe = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("conf"))
        .with_configuration_keys(None)]);
    match client.call(ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(describe)).await {
        ResponseKind::DescribeConfigs(r) => {
            assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0].error_message);
            let configs = &r.results[0].configs;
            let find = |k: &str| configs.iter().find(|c| c.name.as_str() == k).unwrap_or_else(|| panic!("{k} missing from {configs:?}"));
            assert_eq!(find("retention.ms").value.as_deref(), Some("60000"));
            assert_eq!(find("retention.ms").config_source, 1);
            assert_eq!(find("segment.bytes").value.as_deref(), Some("4096"));
            assert_eq!(find("max.message.bytes").config_source, 5);
        }
        other => panic!("{other:?}"),
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_their_own_connection() {
    let broker = TestBroker::start(&["socket.request.max.bytes=100000"]).await;
    let mut healthy = broker.client().await;
    assert_eq!(create_topic(&mut healthy, "alive", 1, &[]).await, 0);

    // A negative length prefix.
    let mut bad = broker.client().await;
    tokio::io::AsyncWriteExt::write_all(&mut bad.stream, &(-5i32).to_be_bytes()).await.unwrap();
    assert!(bad.is_closed(Duration::from_secs(5)).await);
    // A frame larger than socket.request.max.bytes.
    let mut bad = broker.client().await;
    tokio::io::AsyncWriteExt::write_all(&mut bad.stream, &200_000i32.to_be_bytes()).await.unwrap();
    assert!(bad.is_closed(Duration::from_secs(5)).await);
    // An unknown API key.
    let mut bad = broker.client().await;
    bad.send_raw_frame(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]).await;
    assert!(bad.is_closed(Duration::from_secs(5)).await);
    // Metadata v1 declaring 2^31-1 topics in a 14-byte request: must not allocate for them.
    let mut bad = broker.client().await;
    bad.send_raw_frame(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]).await;
    assert!(bad.is_closed(Duration::from_secs(5)).await);
    // Garbage inside a well-sized frame.
    let mut bad = broker.client().await;
    bad.send_raw_frame(&[0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 1, 2, 3]).await;
    assert!(bad.is_closed(Duration::from_secs(5)).await);

    assert_eq!(produce(&mut healthy, "alive", 0, batch(&["still here"], 1)).await, (0, 0));
    let mut fresh = broker.client().await;
    assert_eq!(fetch(&mut fresh, "alive", 0, 0).await.high_watermark, 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topics_are_gone_and_their_names_reusable() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "temp", 1, &[]).await, 0);
    produce(&mut client, "temp", 0, batch(&["old"], 1)).await;
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![name("temp")]).with_timeout_ms(5_000);
    match client.call(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(delete)).await {
        ResponseKind::DeleteTopics(r) => assert_eq!(r.responses[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(create_topic(&mut client, "temp", 1, &[]).await, 0);
    assert_eq!(fetch(&mut client, "temp", 0, 0).await.high_watermark, 0, "new topic starts empty");
    broker.stop().await;
}

/// Every advertised version of every API must encode its answers, including the error
/// paths that carry version-specific fields (a field that a version lacks must keep its
/// default, or the codec refuses to encode and the connection would drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_answers_success_and_error_paths() {
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client().await;
    assert_eq!(create_topic(&mut client, "versions", 1, &[]).await, 0);
    produce(&mut client, "versions", 0, batch(&["a"], 1)).await;
    let topic_id = match client
        .call(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None)))
        .await
    {
        ResponseKind::Metadata(r) => r.topics.iter().find(|t| t.name == Some(name("versions"))).unwrap().topic_id,
        other => panic!("{other:?}"),
    };
    let range = |key: ApiKey| {
        let a = rafka_kafka::versions::supported(key).unwrap();
        a.min..=a.max
    };
    for v in range(ApiKey::Produce) {
        // Partition 0 succeeds, partition 5 fails (with a leader hint from v10).
        let mut topic = TopicProduceData::default().with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch(&["v"], 1))),
            PartitionProduceData::default().with_index(5).with_records(Some(batch(&["v"], 1))),
        ]);
        topic = if v >= 13 { topic.with_topic_id(topic_id) } else { topic.with_name(name("versions")) };
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5_000).with_topic_data(vec![topic]);
        match client.call(ApiKey::Produce, v, RequestKind::Produce(request)).await {
            ResponseKind::Produce(r) => {
                let codes: Vec<i16> = r.responses[0].partition_responses.iter().map(|p| p.error_code).collect();
                assert_eq!(codes, vec![0, ResponseError::UnknownTopicOrPartition.code()], "produce v{v}");
            }
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::Fetch) {
        let partitions = vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 16),
            FetchPartition::default().with_partition(5).with_fetch_offset(0).with_partition_max_bytes(1 << 16),
        ];
        let topic = FetchTopic::default().with_partitions(partitions);
        let topic = if v >= 13 { topic.with_topic_id(topic_id) } else { topic.with_topic(name("versions")) };
        let request = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![topic]);
        match client.call(ApiKey::Fetch, v, RequestKind::Fetch(request)).await {
            ResponseKind::Fetch(r) => {
                let p = &r.responses[0].partitions;
                assert_eq!(p[0].error_code, 0, "fetch v{v}");
                assert!(!p[0].records.as_ref().unwrap().is_empty(), "fetch v{v}");
                assert_eq!(p[1].error_code, ResponseError::UnknownTopicOrPartition.code(), "fetch v{v}");
            }
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::ListOffsets) {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("versions"))
            .with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1),
                ListOffsetsPartition::default().with_partition_index(5).with_timestamp(-1),
            ])]);
        match client.call(ApiKey::ListOffsets, v, RequestKind::ListOffsets(request)).await {
            ResponseKind::ListOffsets(r) => {
                let p = &r.topics[0].partitions;
                assert_eq!((p[0].error_code, p[0].offset), (0, 1 + (range(ApiKey::Produce).count() as i64)), "list v{v}");
                assert_eq!(p[1].error_code, ResponseError::UnknownTopicOrPartition.code());
            }
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::Metadata) {
        let topics = if v == 0 { Some(vec![]) } else { None };
        match client.call(ApiKey::Metadata, v, RequestKind::Metadata(MetadataRequest::default().with_topics(topics))).await {
            ResponseKind::Metadata(r) => assert_eq!(r.topics.len(), 1, "metadata v{v}"),
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("versions"))
                .with_configuration_keys(None),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1"))
                .with_configuration_keys(None),
        ]);
        match client.call(ApiKey::DescribeConfigs, v, RequestKind::DescribeConfigs(request)).await {
            ResponseKind::DescribeConfigs(r) => {
                assert!(r.results.iter().all(|x| x.error_code == 0 && !x.configs.is_empty()), "describe v{v}")
            }
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::DescribeCluster) {
        match client.call(ApiKey::DescribeCluster, v, RequestKind::DescribeCluster(DescribeClusterRequest::default())).await {
            ResponseKind::DescribeCluster(r) => assert_eq!(r.brokers.len(), 1, "describe cluster v{v}"),
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::FindCoordinator) {
        let request = FindCoordinatorRequest::default()
            .with_key(if v < 4 { StrBytes::from_static_str("group") } else { StrBytes::default() })
            .with_coordinator_keys(if v >= 4 { vec![StrBytes::from_static_str("group")] } else { vec![] });
        match client.call(ApiKey::FindCoordinator, v, RequestKind::FindCoordinator(request)).await {
            ResponseKind::FindCoordinator(r) => {
                let code = if v < 4 { r.error_code } else { r.coordinators[0].error_code };
                assert_eq!(code, ResponseError::CoordinatorNotAvailable.code(), "find coordinator v{v}");
            }
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::DescribeQuorum) {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(name("__cluster_metadata"))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        match client.call(ApiKey::DescribeQuorum, v, RequestKind::DescribeQuorum(request)).await {
            ResponseKind::DescribeQuorum(r) => {
                let p = &r.topics[0].partitions[0];
                assert_eq!((p.error_code, p.leader_id.0), (0, 1), "describe quorum v{v}");
                assert_eq!(p.current_voters.len(), 1);
                assert!(p.high_watermark > 0 && p.current_voters[0].log_end_offset >= p.high_watermark);
            }
            other => panic!("{other:?}"),
        }
    }
    for v in range(ApiKey::OffsetForLeaderEpoch) {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
        let request = OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name("versions"))
            .with_partitions(vec![OffsetForLeaderPartition::default().with_partition(0).with_leader_epoch(0)])]);
        match client.call(ApiKey::OffsetForLeaderEpoch, v, RequestKind::OffsetForLeaderEpoch(request)).await {
            ResponseKind::OffsetForLeaderEpoch(r) => {
                let p = &r.topics[0].partitions[0];
                assert_eq!((p.error_code, p.leader_epoch), (0, 0), "epoch v{v}");
            }
            other => panic!("{other:?}"),
        }
    }
    broker.stop().await;
}

//! A three-node quorum in one process: formation, forwarding, and leader loss.
//! (Failure tests with real processes and `kill -9` live in the top-level `tests/`.)

mod support;

#[global_allocator]
static ALLOCATOR: rafka_kafka::alloc_guard::GuardedAllocator = rafka_kafka::alloc_guard::GuardedAllocator;

use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rafka_server::{BrokerConfig, Node};
use support::Client;

/// A port that was free a moment ago, for a node that binds it itself later. Taken
/// below the kernel's ephemeral range (32768 and up on Linux), from a block chosen by
/// this process's id and then counted up: a port the kernel handed out for `:0` could be
/// handed out again, as the local end of another test's outgoing connection, before the
/// node binds it (a CI run failed on "Address already in use" that way).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(SPAN / 200)) as u16 * 200;
    for _ in 0..SPAN {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}

struct Cluster {
    nodes: Vec<Option<Node>>,
    kafka_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn node_config(dir: &std::path::Path, id: usize, kafka: &[u16], grpc: &[u16]) -> BrokerConfig {
    let voters: Vec<String> = grpc.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect();
    let overrides = vec![
        format!("node.id={id}"),
        format!("listeners=PLAINTEXT://127.0.0.1:{},BROKER://127.0.0.1:{}", kafka[id - 1], grpc[id - 1]),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT".to_string(),
        "inter.broker.listener.name=BROKER".to_string(),
        format!("controller.quorum.voters={}", voters.join(",")),
        format!("log.dirs={}", dir.join(format!("node{id}")).display()),
        "broker.session.timeout.ms=2000".to_string(),
    ];
    BrokerConfig::load(None, vec![], &overrides).unwrap()
}

/// `RAFKA_LOG=debug cargo test …` shows the nodes' logs.
fn init_logs() {
    if let Ok(filter) = std::env::var("RAFKA_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_test_writer().try_init();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let kafka: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let configs: Vec<BrokerConfig> = (1..=3).map(|id| node_config(dir.path(), id, &kafka, &grpc)).collect();
        let started = futures::future::join_all(configs.into_iter().map(Node::start)).await;
        Cluster {
            nodes: started.into_iter().map(|n| Some(n.expect("node starts"))).collect(),
            kafka_ports: kafka,
            _dir: dir,
        }
    }

    async fn client(&self, id: usize) -> Client {
        Client::connect(format!("127.0.0.1:{}", self.kafka_ports[id - 1]).parse().unwrap()).await
    }

    async fn metadata(&self, id: usize) -> MetadataResponse {
        let mut client = self.client(id).await;
        match client.call(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))).await {
            ResponseKind::Metadata(r) => r,
            other => panic!("{other:?}"),
        }
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_agree_forward_creates_and_survive_the_controller() {
    let mut cluster = Cluster::start().await;
    // Every node sees all three brokers (each start waits only for its own
    // registration, so the others' may reach its image a little later) and a controller.
    for id in 1..=3 {
        wait_until(&format!("node {id} sees every broker"), Duration::from_secs(10), || async {
            cluster.metadata(id).await.brokers.len() == 3
        })
        .await;
        assert!(cluster.metadata(id).await.controller_id.0 >= 1);
    }
    let controller = cluster.metadata(1).await.controller_id.0 as usize;
    let other = (1..=3).find(|id| *id != controller).unwrap();

    // CreateTopics through a node that is not the controller.
    let mut client = cluster.client(other).await;
    let create = |name: &str, rf: i16| {
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(6)
            .with_replication_factor(rf)]))
    };
    match client.call(ApiKey::CreateTopics, 7, create("orders", 3)).await {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message),
        other => panic!("{other:?}"),
    }
    match client.call(ApiKey::CreateTopics, 7, create("too-wide", 4)).await {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, ResponseError::InvalidReplicationFactor.code()),
        other => panic!("{other:?}"),
    }
    // Every node returns the same placement, with leaders balanced 2/2/2.
    let reference = cluster.metadata(1).await.topics;
    for id in 2..=3 {
        wait_until("metadata converges", Duration::from_secs(5), || async { cluster.metadata(id).await.topics == reference }).await;
    }
    let mut leaders = std::collections::BTreeMap::new();
    for p in &reference[0].partitions {
        assert_eq!(p.replica_nodes.len(), 3);
        *leaders.entry(p.leader_id.0).or_insert(0) += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);

    // Lose the controller (dropped without shutdown: no handoff, like a crash).
    let started = Instant::now();
    drop(cluster.nodes[controller - 1].take());
    let survivor = other;
    wait_until("a new controller is elected", Duration::from_secs(10), || async {
        let c = cluster.metadata(survivor).await.controller_id.0;
        c > 0 && c as usize != controller
    })
    .await;
    eprintln!("new controller after {:?}", started.elapsed());
    let mut client = cluster.client(survivor).await;
    match client.call(ApiKey::CreateTopics, 7, create("after-failover", 2)).await {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message),
        other => panic!("{other:?}"),
    }
    // The silent broker is fenced: it leaves Metadata and every ISR.
    wait_until("the lost broker is fenced", Duration::from_secs(10), || async {
        let m = cluster.metadata(survivor).await;
        m.brokers.len() == 2
            && m.topics.iter().all(|t| t.partitions.iter().all(|p| !p.isr_nodes.contains(&BrokerId(controller as i32)) && p.leader_id.0 != controller as i32))
    })
    .await;
    for node in cluster.nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_only_node_joins_as_a_learner_and_holds_the_metadata() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let kafka: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let grpc: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let voters = &grpc[..3];
    let mut configs: Vec<BrokerConfig> = (1..=3).map(|id| node_config(dir.path(), id, &kafka, voters)).collect();
    let voter_list: Vec<String> = voters.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect();
    configs.push(
        BrokerConfig::load(
            None,
            vec![],
            &[
                "node.id=4".to_string(),
                "process.roles=broker".to_string(),
                format!("listeners=PLAINTEXT://127.0.0.1:{},BROKER://127.0.0.1:{}", kafka[3], grpc[3]),
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT".to_string(),
                "inter.broker.listener.name=BROKER".to_string(),
                format!("controller.quorum.voters={}", voter_list.join(",")),
                format!("log.dirs={}", dir.path().join("node4").display()),
            ],
        )
        .unwrap(),
    );
    let nodes: Vec<Node> = futures::future::join_all(configs.into_iter().map(Node::start))
        .await
        .into_iter()
        .map(|n| n.expect("node starts"))
        .collect();
    let cluster = Cluster { nodes: nodes.into_iter().map(Some).collect(), kafka_ports: kafka, _dir: dir };

    // Each node's start waits for its own registration in its own image; the others'
    // registrations reach node 4's image when they are committed, maybe a little later.
    wait_until("node 4 sees all four brokers, itself included", Duration::from_secs(10), || async {
        cluster.metadata(4).await.brokers.len() == 4
    })
    .await;
    let mut client = cluster.client(4).await;
    let create = RequestKind::CreateTopics(CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("from-learner")))
            .with_num_partitions(4)
            .with_replication_factor(2),
    ]));
    match client.call(ApiKey::CreateTopics, 7, create).await {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message),
        other => panic!("{other:?}"),
    }
    // The learner's own image has it (it replicates the metadata log), and the quorum
    // lists it as an observer, not a voter.
    assert!(cluster.metadata(4).await.topics.iter().any(|t| t.name == Some(TopicName(StrBytes::from_static_str("from-learner")))));
    let controller = cluster.metadata(4).await.controller_id.0 as usize;
    let state = cluster.nodes[controller - 1].as_ref().unwrap().quorum().clone();
    wait_until("node 4 observes the quorum", Duration::from_secs(10), || {
        let state = state.clone();
        async move {
            let m = state.raft().metrics();
            let m = m.borrow();
            let members = m.membership_config.membership();
            members.learner_ids().any(|id| id == 4) && !members.voter_ids().any(|id| id == 4)
        }
    })
    .await;
    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

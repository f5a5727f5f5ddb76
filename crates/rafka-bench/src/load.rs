//! The measured client work, done by librdkafka through the `rdkafka` crate with its
//! defaults except where a scenario names a setting: producing as fast as the
//! cluster acknowledges, consuming from the beginning, a paced produce → consume
//! round trip for latency, and a steady producer that reports the first
//! acknowledgement after a broker was killed.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::RngCore;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// librdkafka settings a scenario names on top of the defaults.
pub type Settings<'a> = &'a [(&'a str, &'a str)];

fn client_config(bootstrap: &str, settings: Settings<'_>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config
}

/// Random (incompressible) record values.
fn payload(size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Counts delivery reports.
#[derive(Default)]
struct Counting {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Counting {}

impl Counting {
    /// Fails, with the first error, if any record was not acknowledged.
    fn all_acknowledged(&self, topic: &str) -> anyhow::Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self.first_error.lock().unwrap().clone().unwrap_or_default();
            bail!("{failed} records to {topic} were not acknowledged; the first error: {first}");
        }
        Ok(())
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// What a produce run achieved.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
    /// Two runs taken as one: their records and bytes over their summed time.
    pub fn plus(self, other: Throughput) -> Throughput {
        Throughput {
            records: self.records + other.records,
            bytes: self.bytes + other.bytes,
            elapsed: self.elapsed + other.elapsed,
        }
    }
}

fn is_queue_full(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
}

/// Produces `record_size`-byte records (no key) to `topic` as fast as the cluster
/// takes them for `duration`, then waits for every outstanding acknowledgement.
/// The rate counts acknowledged records over the whole time, including that wait.
/// Any failed delivery fails the run.
pub fn produce_flat_out(
    bootstrap: &str,
    topic: &str,
    record_size: usize,
    duration: Duration,
    settings: Settings<'_>,
) -> anyhow::Result<Throughput> {
    let producer: ThreadedProducer<Counting> = client_config(bootstrap, settings)
        .create_with_context(Counting::default())
        .context("cannot create the producer")?;
    let value = payload(record_size);
    let start = Instant::now();
    while start.elapsed() < duration {
        // Enqueue in bursts to keep the clock reads off the hot path.
        for _ in 0..256 {
            let mut record = BaseRecord::<(), [u8], ()>::to(topic).payload(&value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if is_queue_full(&e) => {
                        record = r;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((e, _)) => bail!("produce to {topic} failed: {e}"),
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).context("flushing the producer")?;
    let elapsed = start.elapsed();
    producer.context().all_acknowledged(topic)?;
    let records = producer.context().acked.load(Ordering::Relaxed);
    Ok(Throughput { records, bytes: records * record_size as u64, elapsed })
}

/// Produces exactly `count` records (`acks=1`, otherwise librdkafka's defaults):
/// data for a consume run, not a measurement. Any failed delivery fails it.
pub fn produce_exactly(bootstrap: &str, topic: &str, record_size: usize, count: u64) -> anyhow::Result<()> {
    let producer: ThreadedProducer<Counting> = client_config(bootstrap, &[("acks", "1")])
        .create_with_context(Counting::default())
        .context("cannot create the producer")?;
    let value = payload(record_size);
    let mut sent = 0;
    while sent < count {
        match producer.send(BaseRecord::<(), [u8], ()>::to(topic).payload(&value)) {
            Ok(()) => sent += 1,
            Err((e, _)) if is_queue_full(&e) => std::thread::sleep(Duration::from_micros(500)),
            Err((e, _)) => bail!("loading {topic} failed: {e}"),
        }
    }
    producer.flush(Duration::from_secs(300)).context("flushing the producer")?;
    producer.context().all_acknowledged(topic)
}

/// The partition's log end offset. Right after a topic is created, the broker that
/// the metadata names as leader may not have applied its leadership yet and answers
/// NOT_LEADER_OR_FOLLOWER, which librdkafka's watermark query does not retry: retry
/// such answers for up to 10 s, as a client would on its next metadata refresh.
fn log_end_offset(consumer: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok((_, high)) => return Ok(high),
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable | RDKafkaErrorCode::UnknownTopicOrPartition,
            )) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).with_context(|| format!("cannot read the log end offset of {topic}-{partition}")),
        }
    }
}

/// Reads `partitions` partitions of `topic` from the beginning until `expected`
/// records have arrived (librdkafka consumer defaults; `assign`, no group).
pub fn consume_from_beginning(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<Throughput> {
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[("group.id", "rafka-bench-consume"), ("enable.auto.commit", "false")],
    )
    .create()
    .context("cannot create the consumer")?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < expected {
        if start.elapsed() > timeout {
            bail!("consumed only {records} of {expected} records of {topic} in {timeout:?}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consuming {topic} failed: {e}"),
            None => {}
        }
    }
    Ok(Throughput { records, bytes, elapsed: start.elapsed() })
}

/// Monotonic nanoseconds since the first call, shared by producer and consumer
/// threads of this process (the record carries its send time).
fn now_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Delivery reports of the latency producer: the time from `send` to the
/// acknowledgement, microseconds.
struct AckTiming {
    histogram: Mutex<Histogram<u64>>,
    failed: AtomicU64,
    counted_from: u64,
}

impl ClientContext for AckTiming {}

impl ProducerContext for AckTiming {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_nanos: Box<u64>) {
        match result {
            Ok(_) if *sent_nanos >= self.counted_from => {
                let micros = now_nanos().saturating_sub(*sent_nanos) / 1000;
                self.histogram.lock().unwrap().saturating_record(micros.max(1));
            }
            Ok(_) => {}
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// End-to-end latency figures, microseconds.
#[derive(Debug)]
pub struct Latency {
    /// Send → consumed.
    pub histogram: Histogram<u64>,
    /// Send → acknowledged.
    pub acks: Histogram<u64>,
    pub sent: u64,
    /// The rate actually produced, MB/s.
    pub achieved_mb_s: f64,
}

/// Produces `record_size`-byte records at `mb_per_s` for `duration` while a consumer
/// in this process reads them; records sent during the first `warmup` are not
/// counted. Producer settings: librdkafka's defaults plus `settings`.
pub fn end_to_end_latency(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    record_size: usize,
    mb_per_s: f64,
    duration: Duration,
    warmup: Duration,
    settings: Settings<'_>,
) -> anyhow::Result<Latency> {
    anyhow::ensure!(record_size >= 8, "latency records carry an 8-byte timestamp");
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[("group.id", "rafka-bench-latency"), ("enable.auto.commit", "false")],
    )
    .create()
    .context("cannot create the consumer")?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let high = log_end_offset(&consumer, topic, p)?;
        assignment.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;

    let counted_from = now_nanos() + warmup.as_nanos() as u64;
    let producer: ThreadedProducer<AckTiming> = client_config(bootstrap, settings)
        .create_with_context(AckTiming {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3)?),
            failed: AtomicU64::new(0),
            counted_from,
        })
        .context("cannot create the producer")?;
    let per_second = mb_per_s * 1e6 / record_size as f64;
    let producing_done = Arc::new(AtomicBool::new(false));

    let reader = {
        let producing_done = producing_done.clone();
        std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, u64)> {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut received = 0u64;
            let mut idle_since: Option<Instant> = None;
            loop {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(message)) => {
                        idle_since = None;
                        let Some(bytes) = message.payload() else { continue };
                        let Some(stamp) = bytes.get(..8) else { continue };
                        let sent = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                        received += 1;
                        if sent >= counted_from {
                            let micros = now_nanos().saturating_sub(sent) / 1000;
                            histogram.saturating_record(micros.max(1));
                        }
                    }
                    Some(Err(e)) => bail!("consuming for latency failed: {e}"),
                    None => {
                        if producing_done.load(Ordering::Acquire) {
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(2) {
                                return Ok((histogram, received));
                            }
                        }
                    }
                }
            }
        })
    };

    let mut value = payload(record_size);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        let due = (start.elapsed().as_secs_f64() * per_second) as u64;
        while sent < due {
            let stamp = now_nanos();
            value[..8].copy_from_slice(&stamp.to_le_bytes());
            match producer.send(BaseRecord::<(), [u8], Box<u64>>::with_opaque_to(topic, Box::new(stamp)).payload(&value[..])) {
                Ok(()) => sent += 1,
                Err((e, _)) if is_queue_full(&e) => break,
                Err((e, _)) => bail!("produce to {topic} failed: {e}"),
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let produced_for = start.elapsed();
    producer.flush(Duration::from_secs(60)).context("flushing the producer")?;
    producing_done.store(true, Ordering::Release);
    let (histogram, received) = reader.join().map_err(|_| anyhow::anyhow!("the latency consumer panicked"))??;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} latency records were not acknowledged");
    }
    if received < sent {
        bail!("sent {sent} latency records but consumed only {received}");
    }
    let acks = producer.context().histogram.lock().unwrap().clone();
    Ok(Latency {
        histogram,
        acks,
        sent,
        achieved_mb_s: sent as f64 * record_size as f64 / 1e6 / produced_for.as_secs_f64(),
    })
}

/// Delivery reports of the steady producer: it watches for the first
/// acknowledgement of a record enqueued after a given instant.
#[derive(Default)]
struct Watching {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// (since, first ack of a record enqueued at or after `since`).
    watch: Mutex<Option<(Instant, Option<Instant>)>>,
}

impl ClientContext for Watching {}

impl ProducerContext for Watching {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, enqueued: Box<Instant>) {
        let now = Instant::now();
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Some((since, first @ None)) = self.watch.lock().unwrap().as_mut() {
                    if *enqueued >= *since {
                        *first = Some(now);
                    }
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// A producer sending one record every `interval` to one chosen partition of a
/// topic (idempotent, `acks=all`) until dropped.
pub struct SteadyProducer {
    producer: Arc<ThreadedProducer<Watching>>,
    target: Arc<AtomicI32>,
    stop: Arc<AtomicBool>,
    sender: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl SteadyProducer {
    pub fn start(bootstrap: &str, topic: &str, record_size: usize, interval: Duration, settings: Settings<'_>) -> anyhow::Result<SteadyProducer> {
        let producer: Arc<ThreadedProducer<Watching>> = Arc::new(
            client_config(bootstrap, settings)
                .create_with_context(Watching::default())
                .context("cannot create the producer")?,
        );
        let target = Arc::new(AtomicI32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (producer, target, stop, topic) = (producer.clone(), target.clone(), stop.clone(), topic.to_string());
            let value = payload(record_size);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut next = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    let record = BaseRecord::with_opaque_to(&topic, Box::new(Instant::now()))
                        .partition(target.load(Ordering::Acquire))
                        .payload(&value[..]);
                    let record: BaseRecord<'_, (), [u8], Box<Instant>> = record;
                    match producer.send(record) {
                        Ok(()) => {}
                        Err((e, _)) if is_queue_full(&e) => {}
                        Err((e, _)) => bail!("steady produce to {topic} failed: {e}"),
                    }
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                Ok(())
            })
        };
        Ok(SteadyProducer { producer, target, stop, sender: Some(sender) })
    }

    pub fn set_partition(&self, partition: i32) {
        self.target.store(partition, Ordering::Release);
    }

    /// From now on, remember the first acknowledgement of a record enqueued at or after `since`.
    pub fn watch_from(&self, since: Instant) {
        *self.producer.context().watch.lock().unwrap() = Some((since, None));
    }

    /// Waits up to `timeout` for that acknowledgement; the time from `since` to it.
    pub fn wait_for_watched_ack(&self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((since, Some(first))) = *self.producer.context().watch.lock().unwrap() {
                return Some(first.duration_since(since));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops sending, waits for what is in flight; (acknowledged, failed, first error).
    pub fn finish(mut self) -> anyhow::Result<(u64, u64, Option<String>)> {
        self.stop.store(true, Ordering::Release);
        if let Some(sender) = self.sender.take() {
            sender.join().map_err(|_| anyhow::anyhow!("the steady producer panicked"))??;
        }
        self.producer.flush(Duration::from_secs(60))?;
        let context = self.producer.context();
        Ok((
            context.acked.load(Ordering::Relaxed),
            context.failed.load(Ordering::Relaxed),
            context.first_error.lock().unwrap().clone(),
        ))
    }
}

impl Drop for SteadyProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

//! The benchmark scenarios of issue #7, each turning real cluster runs into rows of
//! the result table. They share one three-node cluster (started fresh by the run);
//! the start-up scenario makes its own clusters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::{machine_cpu_ticks, proc_stats, write_back_dirty_pages, BenchCluster};
use crate::limits::{quantile, FdatasyncProbe, MachineLimits};
use crate::load::{self, SteadyProducer, Throughput};
use crate::report::{millis, thousands, Row};

pub const BROKERS: u16 = 3;
/// The rate the end-to-end latency target is set at (issue #7).
const TARGET_LATENCY_RATE_MB_S: f64 = 50.0;
/// Partitions of the produce, consume and latency topics: two leaders per broker.
const PARTITIONS: i32 = 6;

/// Sizes and durations; `quick` is the one-minute smoke run of the test suite.
#[derive(Debug, Clone)]
pub struct Plan {
    pub produce_for: Duration,
    pub consume_records: [(usize, u64); 2],
    pub latency_for: Duration,
    pub latency_warmup: Duration,
    /// The latency runs, in order.
    pub latency_runs: Vec<LatencyRun>,
    pub failover_rounds: usize,
    pub startup_partitions: Vec<i32>,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                produce_for: Duration::from_secs(2),
                consume_records: [(100, 50_000), (1024, 20_000)],
                latency_for: Duration::from_secs(3),
                latency_warmup: Duration::from_secs(1),
                latency_runs: vec![
                    LatencyRun::rf3(5.0, 1),
                    LatencyRun { client_yields: true, ..LatencyRun::rf3(5.0, 1) },
                    LatencyRun { preallocate: true, ..LatencyRun::rf3(5.0, 1) },
                ],
                failover_rounds: 1,
                startup_partitions: vec![100],
            }
        } else {
            Plan {
                produce_for: Duration::from_secs(15),
                consume_records: [(100, 3_000_000), (1024, 1_000_000)],
                latency_for: Duration::from_secs(30),
                latency_warmup: Duration::from_secs(5),
                latency_runs: vec![
                    LatencyRun::rf3(TARGET_LATENCY_RATE_MB_S, 1),
                    LatencyRun { preallocate: true, ..LatencyRun::rf3(TARGET_LATENCY_RATE_MB_S, 1) },
                    LatencyRun { client_yields: true, ..LatencyRun::rf3(TARGET_LATENCY_RATE_MB_S, 1) },
                    LatencyRun { replication: 1, ..LatencyRun::rf3(TARGET_LATENCY_RATE_MB_S, 1) },
                    LatencyRun::rf3(30.0, 1),
                    LatencyRun::rf3(5.0, 1),
                    LatencyRun::rf3(5.0, 0),
                ],
                failover_rounds: 10,
                startup_partitions: vec![1_000, 10_000],
            }
        }
    }
}

/// One end-to-end latency run: 1 KiB records at a fixed rate into 6 partitions.
#[derive(Debug, Clone, Copy)]
pub struct LatencyRun {
    pub mb_per_s: f64,
    pub linger_ms: u32,
    /// 3 for the measured figure; 1 for the floor beside it: the same client load with
    /// no replication, so a third of the writes and none of the follower traffic.
    pub replication: i16,
    /// The client's threads run at the lowest CPU priority (nice 19), so that
    /// librdkafka's busy-waiting gets only what the brokers leave: the nearest this
    /// one machine comes to a client on a machine of its own. A diagnosis, not a target.
    pub client_yields: bool,
    /// The topic sets `preallocate=true`: blocks are reserved ahead of each active
    /// segment, so ext4 does not allocate them during write-back while appends run.
    pub preallocate: bool,
}

impl LatencyRun {
    fn rf3(mb_per_s: f64, linger_ms: u32) -> LatencyRun {
        LatencyRun { mb_per_s, linger_ms, replication: 3, client_yields: false, preallocate: false }
    }
}

/// What the scenarios share in one run.
pub struct Bench {
    pub plan: Plan,
    pub rafka_bin: PathBuf,
    pub data_dir: PathBuf,
    pub base_port: u16,
    /// The open-file limit the brokers inherit from this process.
    pub open_file_limit: u64,
    pub limits: MachineLimits,
    pub rows: Vec<Row>,
    cluster: Option<BenchCluster>,
    topic_serial: usize,
    /// The RF=3 acks=all runs of each record size, for scenario 6.
    durable_pairs: Vec<DurablePair>,
}

/// The three produce modes of scenario 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceMode {
    Rf1Acks1,
    Rf3AcksAllIdempotent,
    Rf3AcksAllFsync,
}

impl ProduceMode {
    fn label(self) -> &'static str {
        match self {
            ProduceMode::Rf1Acks1 => "RF=1 acks=1",
            ProduceMode::Rf3AcksAllIdempotent => "RF=3 acks=all idempotent",
            ProduceMode::Rf3AcksAllFsync => "RF=3 acks=all idempotent, fsync before ack",
        }
    }
    fn replication(self) -> i16 {
        if self == ProduceMode::Rf1Acks1 {
            1
        } else {
            3
        }
    }
    fn topic_configs(self) -> Vec<(&'static str, &'static str)> {
        match self {
            ProduceMode::Rf1Acks1 => vec![],
            ProduceMode::Rf3AcksAllIdempotent => vec![("min.insync.replicas", "2")],
            ProduceMode::Rf3AcksAllFsync => vec![("min.insync.replicas", "2"), ("flush.messages", "1")],
        }
    }
    fn producer_settings(self) -> Vec<(&'static str, &'static str)> {
        match self {
            ProduceMode::Rf1Acks1 => vec![("acks", "1")],
            _ => vec![("acks", "all"), ("enable.idempotence", "true")],
        }
    }
}

/// The order in which the two RF=3 modes (0: page-cache acks, 1: fsync before ack)
/// take their slices of the produce time: A B B A B A A B puts both modes' slices at
/// the same mean position in the run.
const COMPARED_SLICE_ORDER: [usize; 8] = [0, 1, 1, 0, 1, 0, 0, 1];

/// One produce mode's topic and what its slices added up to.
struct ModeRun {
    mode: ProduceMode,
    /// The diagnosis pair: the client at nice 19.
    client_yields: bool,
    topic: String,
    total: Option<Throughput>,
    cpu_seconds: f64,
    peak_rss: u64,
    /// The fdatasync probe's latencies (µs) beside this mode's slices (RF=3 only).
    probe_micros: Vec<f64>,
}

/// Scenario 6's inputs for one record size: the rates of the two RF=3 modes, the
/// fdatasync probe's latencies (µs, sorted) beside each, and the niced pair's rates.
#[derive(Clone)]
struct DurablePair {
    size: usize,
    page_cache: Option<(f64, Vec<f64>)>,
    fsync: Option<(f64, Vec<f64>)>,
    /// The rates of the same two modes with the client at nice 19.
    niced: (Option<f64>, Option<f64>),
}

/// Samples the RSS of some processes every 100 ms and keeps the largest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut max = 0;
                while !stop.load(Ordering::Acquire) {
                    for pid in &pids {
                        if let Some(stats) = proc_stats(*pid) {
                            max = max.max(stats.rss_bytes);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                max
            })
        };
        RssSampler { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or(0)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn size_label(size: usize) -> &'static str {
    if size == 100 {
        "100 B"
    } else {
        "1 KiB"
    }
}

impl Bench {
    pub fn new(plan: Plan, rafka_bin: PathBuf, data_dir: PathBuf, base_port: u16, open_file_limit: u64, limits: MachineLimits) -> Bench {
        Bench {
            plan,
            rafka_bin,
            data_dir,
            base_port,
            open_file_limit,
            limits,
            rows: Vec::new(),
            cluster: None,
            topic_serial: 0,
            durable_pairs: Vec::new(),
        }
    }

    /// The shared cluster, started on first use; its idle RSS is recorded then.
    fn cluster(&mut self) -> anyhow::Result<&mut BenchCluster> {
        if self.cluster.is_none() {
            eprintln!("starting a {BROKERS}-node cluster ({})", self.rafka_bin.display());
            let mut cluster =
                BenchCluster::start(&self.rafka_bin, &self.data_dir.join("cluster"), BROKERS, self.base_port, "")?;
            cluster.wait_ready(Duration::from_secs(60))?;
            // Let start-up allocations settle before reading the idle footprint.
            std::thread::sleep(Duration::from_secs(3));
            let idle: Vec<u64> = cluster.ids().iter().map(|id| cluster.stats(*id).rss_bytes).collect();
            let max = idle.iter().copied().max().unwrap_or(0);
            let all: Vec<String> = idle.iter().map(|b| mib(*b)).collect();
            self.rows.push(
                Row::new("footprint", "broker RSS, idle (largest of 3)", mib(max))
                    .at_most(max as f64, 64.0 * (1u64 << 20) as f64, "≤ 64 MiB")
                    .versus(format!("each: {}", all.join(", "))),
            );
            self.cluster = Some(cluster);
        }
        Ok(self.cluster.as_mut().expect("started above"))
    }

    fn next_topic(&mut self, what: &str) -> String {
        self.topic_serial += 1;
        format!("bench-{what}-{}", self.topic_serial)
    }

    /// Scenario 1 (and the runs scenario 6 compares): produce flat out, each mode into
    /// a topic of its own for `produce_for` in all. When both RF=3 modes run, their
    /// time is cut into slices taken in the order [`COMPARED_SLICE_ORDER`], so that a
    /// machine that speeds up or slows down during the run weighs on both alike and
    /// the durability cost compares like with like; then the same pair runs again with
    /// the client at nice 19 (a diagnosis: how much of the cost is librdkafka's
    /// busy-waiting taking CPU from the brokers).
    pub fn produce(&mut self, modes: &[ProduceMode]) -> anyhow::Result<()> {
        let duration = self.plan.produce_for;
        let compared: Vec<ProduceMode> = modes.iter().copied().filter(|m| m.replication() == 3).collect();
        let mut schedule: Vec<(ProduceMode, bool, Duration)> =
            modes.iter().filter(|m| m.replication() != 3).map(|m| (*m, false, duration)).collect();
        if compared.len() == 2 {
            let per_slice = duration / (COMPARED_SLICE_ORDER.len() as u32 / 2);
            for client_yields in [false, true] {
                schedule.extend(COMPARED_SLICE_ORDER.iter().map(|i| (compared[*i], client_yields, per_slice)));
            }
        } else {
            schedule.extend(compared.iter().map(|m| (*m, false, duration)));
        }
        for size in [100usize, 1024] {
            let mut runs: Vec<ModeRun> = Vec::new();
            for &(mode, client_yields, _) in &schedule {
                if runs.iter().any(|r| (r.mode, r.client_yields) == (mode, client_yields)) {
                    continue;
                }
                let topic = self.next_topic("produce");
                self.cluster()?.create_topic(&topic, PARTITIONS, mode.replication(), &mode.topic_configs())?;
                runs.push(ModeRun { mode, client_yields, topic, total: None, cpu_seconds: 0.0, peak_rss: 0, probe_micros: Vec::new() });
            }
            for (slice, &(mode, client_yields, slice_for)) in schedule.iter().enumerate() {
                let run = runs
                    .iter_mut()
                    .find(|r| (r.mode, r.client_yields) == (mode, client_yields))
                    .expect("every scheduled mode has a topic");
                let cluster = self.cluster.as_mut().expect("started above");
                let pids: Vec<u32> = cluster.ids().iter().filter_map(|id| cluster.pid(*id)).collect();
                let cpu_before = cluster.total_stats().cpu_seconds;
                let sampler = RssSampler::start(pids);
                let probe = if mode.replication() == 3 && !client_yields { Some(FdatasyncProbe::start(&self.data_dir)?) } else { None };
                eprintln!(
                    "produce: {} {}{} for {slice_for:?} (slice {} of {})",
                    mode.label(),
                    size_label(size),
                    if client_yields { ", client at nice 19" } else { "" },
                    slice + 1,
                    schedule.len()
                );
                let (bootstrap, settings) = (cluster.bootstrap(), mode.producer_settings());
                let produce = || load::produce_flat_out(&bootstrap, &run.topic, size, slice_for, &settings);
                let result = run_client(client_yields, produce);
                run.peak_rss = run.peak_rss.max(sampler.finish());
                if let Some(probe) = probe {
                    run.probe_micros.extend(probe.finish()?);
                }
                run.cpu_seconds += cluster.total_stats().cpu_seconds - cpu_before;
                cluster.check_alive()?;
                let t = result?;
                run.total = Some(run.total.map_or(t, |sum| sum.plus(t)));
            }
            for run in &runs {
                self.cluster()?.delete_topic(&run.topic)?;
            }
            let mut pair = DurablePair { size, page_cache: None, fsync: None, niced: (None, None) };
            for mut run in runs {
                let t = run.total.expect("every mode ran at least once");
                run.probe_micros.sort_by(f64::total_cmp);
                if run.client_yields {
                    match run.mode {
                        ProduceMode::Rf3AcksAllIdempotent => pair.niced.0 = Some(t.records_per_s()),
                        ProduceMode::Rf3AcksAllFsync => pair.niced.1 = Some(t.records_per_s()),
                        ProduceMode::Rf1Acks1 => {}
                    }
                    continue;
                }
                self.produce_rows(run.mode, size, t);
                match run.mode {
                    ProduceMode::Rf3AcksAllIdempotent => {
                        pair.page_cache = Some((t.records_per_s(), std::mem::take(&mut run.probe_micros)));
                        if size == 1024 {
                            let gb = t.bytes as f64 / 1e9;
                            self.rows.push(Row::new(
                                "footprint",
                                "broker RSS under load (largest of 3, RF=3 1 KiB)",
                                mib(run.peak_rss),
                            ));
                            self.rows.push(
                                Row::new(
                                    "footprint",
                                    "broker CPU-seconds per GB ingested (RF=3 1 KiB, 3 brokers)",
                                    format!("{:.1} CPU-s/GB", run.cpu_seconds / gb),
                                )
                                .versus(format!("{:.1} CPU-s for {gb:.2} GB", run.cpu_seconds)),
                            );
                        }
                    }
                    ProduceMode::Rf3AcksAllFsync => pair.fsync = Some((t.records_per_s(), run.probe_micros)),
                    ProduceMode::Rf1Acks1 => {}
                }
            }
            self.durable_pairs.push(pair);
        }
        Ok(())
    }

    fn produce_rows(&mut self, mode: ProduceMode, size: usize, t: Throughput) {
        let figure = format!("{}, {}", mode.label(), size_label(size));
        let result = format!("{} rec/s, {:.1} MB/s", thousands(t.records_per_s()), t.mb_per_s());
        let mut row = Row::new("produce", figure, result);
        if size == 100 {
            match mode {
                ProduceMode::Rf1Acks1 => row = row.at_least(t.records_per_s(), 1_000_000.0, "≥ 1,000,000 rec/s"),
                ProduceMode::Rf3AcksAllIdempotent => row = row.at_least(t.records_per_s(), 420_000.0, "≥ 420,000 rec/s"),
                ProduceMode::Rf3AcksAllFsync => {}
            }
        }
        // Every byte crosses loopback (client → leader, and leader → each follower)
        // and is written once per replica.
        let replicas = f64::from(mode.replication());
        let disk_limit = if mode == ProduceMode::Rf3AcksAllFsync {
            self.limits.synced_write_mb_s
        } else {
            self.limits.seq_write_mb_s
        };
        row = row.versus(format!(
            "{:.1}% of loopback, {:.1}% of {} writes (×{replicas} replicas)",
            100.0 * t.mb_per_s() * replicas / self.limits.loopback_mb_s,
            100.0 * t.mb_per_s() * replicas / disk_limit,
            if mode == ProduceMode::Rf3AcksAllFsync { "fdatasync'd" } else { "page-cache" },
        ));
        self.rows.push(row);
    }

    /// Scenario 6 from the runs of scenario 1: the cost, and what the fdatasync probe
    /// met beside each mode (the disk the brokers' fsyncs met, against the idle figure).
    pub fn durability_rows(&mut self) {
        for pair in self.durable_pairs.clone() {
            let (Some((page_cache, pc_probe)), Some((fsync, fsync_probe))) = (pair.page_cache, pair.fsync) else { continue };
            let size = size_label(pair.size);
            let cost = 1.0 - fsync / page_cache;
            self.rows.push(
                Row::new("durability", format!("fsync-before-ack cost, RF=3 acks=all {size}"), format!("{:.1}% fewer rec/s", 100.0 * cost))
                    .at_most(cost, 0.25, "≤ 25%")
                    .versus(format!("{} vs {} rec/s", thousands(fsync), thousands(page_cache))),
            );
            if let (Some(niced_page_cache), Some(niced_fsync)) = pair.niced {
                self.rows.push(
                    Row::new(
                        "durability",
                        format!("diagnosis: fsync-before-ack cost, {size}, client at nice 19"),
                        format!("{:.1}% fewer rec/s", 100.0 * (1.0 - niced_fsync / niced_page_cache)),
                    )
                    .versus(format!("{} vs {} rec/s", thousands(niced_fsync), thousands(niced_page_cache))),
                );
            }
            let latency = |micros: &[f64]| {
                format!("p50 {}, p99 {}", millis(quantile(micros, 0.5) / 1e3), millis(quantile(micros, 0.99) / 1e3))
            };
            self.rows.push(
                Row::new("durability", format!("fdatasync of a 4 KiB append beside the fsync-before-ack run, {size}"), latency(&fsync_probe))
                    .versus(format!(
                        "beside the page-cache run {}; idle p50 {}, p99 {}",
                        latency(&pc_probe),
                        millis(self.limits.fdatasync_p50_us / 1e3),
                        millis(self.limits.fdatasync_p99_us / 1e3)
                    )),
            );
        }
    }

    /// Scenario 2: consume from the beginning of a topic loaded beforehand.
    pub fn consume(&mut self) -> anyhow::Result<()> {
        for (size, count) in self.plan.consume_records {
            let topic = self.next_topic("consume");
            let partitions = PARTITIONS * 2;
            let cluster = self.cluster()?;
            cluster.create_topic(&topic, partitions, 3, &[])?;
            eprintln!("consume: loading {count} records of {}", size_label(size));
            load::produce_exactly(&cluster.bootstrap(), &topic, size, count)?;
            eprintln!("consume: reading them back");
            let t = load::consume_from_beginning(&cluster.bootstrap(), &topic, partitions, count, Duration::from_secs(600))?;
            cluster.delete_topic(&topic)?;
            self.rows.push(
                Row::new(
                    "consume",
                    format!("from the beginning, {partitions} partitions RF=3, {}", size_label(size)),
                    format!("{} rec/s, {:.1} MB/s", thousands(t.records_per_s()), t.mb_per_s()),
                )
                .versus(format!("{:.1}% of loopback", 100.0 * t.mb_per_s() / self.limits.loopback_mb_s)),
            );
        }
        Ok(())
    }

    /// Scenario 3: end-to-end latency at fixed rates (the target is read at 50 MB/s).
    ///
    /// The producer is configured as the OpenMessaging Benchmark's Kafka latency
    /// driver configures Kafka's Java client for the published latency figures:
    /// acks=all, linger.ms=1, batch.size=128 KiB, min.insync.replicas=2; idempotent, as
    /// that client is by default. One run uses linger.ms=0 for contrast: librdkafka then
    /// busy-polls whenever a partition has 5 requests in flight (the idempotence cap)
    /// and more records waiting, which burns a core the brokers share.
    pub fn latency(&mut self) -> anyhow::Result<()> {
        for run in self.plan.latency_runs.clone() {
            self.latency_at(run)?;
        }
        Ok(())
    }

    fn latency_at(&mut self, run: LatencyRun) -> anyhow::Result<()> {
        let LatencyRun { mb_per_s: rate, linger_ms, replication, client_yields, preallocate } = run;
        let topic = self.next_topic("latency");
        let (duration, warmup) = (self.plan.latency_for, self.plan.latency_warmup);
        let cluster = self.cluster()?;
        let min_insync = if replication >= 3 { "2" } else { "1" };
        let mut topic_configs = vec![("min.insync.replicas", min_insync)];
        if preallocate {
            topic_configs.push(("preallocate", "true"));
        }
        cluster.create_topic(&topic, PARTITIONS, replication, &topic_configs)?;
        let variant = match (client_yields, preallocate) {
            (true, _) => ", client at nice 19",
            (false, true) => ", preallocate=true",
            (false, false) => "",
        };
        let synced = write_back_dirty_pages();
        eprintln!(
            "latency: {rate} MB/s of 1 KiB records, RF={replication}, linger.ms={linger_ms}{variant}, for {duration:?} \
             (after {} writing back what earlier runs left dirty)",
            millis(synced.as_secs_f64() * 1000.0)
        );
        let linger = linger_ms.to_string();
        let settings = [
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", linger.as_str()),
            ("batch.size", "131072"),
        ];
        let machine_before = machine_cpu_ticks();
        let started = Instant::now();
        let client_cpu = proc_stats(std::process::id()).unwrap_or_default().cpu_seconds;
        let broker_cpu = cluster.total_stats().cpu_seconds;
        let bootstrap = cluster.bootstrap();
        let measure = || load::end_to_end_latency(&bootstrap, &topic, PARTITIONS, 1024, rate, duration + warmup, warmup, &settings);
        let l = run_client(client_yields, measure)?;
        let wall = started.elapsed().as_secs_f64();
        let client_cpu = proc_stats(std::process::id()).unwrap_or_default().cpu_seconds - client_cpu;
        let broker_cpu = cluster.total_stats().cpu_seconds - broker_cpu;
        let stolen = match (machine_before, machine_cpu_ticks()) {
            (Some((total0, steal0)), Some((total1, steal1))) if total1 > total0 => {
                format!(", {:.0}% of the machine's CPU stolen by the hypervisor", 100.0 * (steal1 - steal0) as f64 / (total1 - total0) as f64)
            }
            _ => String::new(),
        };
        cluster.check_alive()?;
        cluster.delete_topic(&topic)?;
        let h = &l.histogram;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let figure = if client_yields {
            format!("diagnosis: produce → consume, {rate} MB/s of 1 KiB, RF=3 acks=all, linger.ms={linger_ms}, client at nice 19")
        } else if replication >= 3 && preallocate {
            format!("produce → consume, {rate} MB/s of 1 KiB, RF=3 acks=all, linger.ms={linger_ms}, preallocate=true")
        } else if replication >= 3 {
            format!("produce → consume, {rate} MB/s of 1 KiB, RF=3 acks=all, linger.ms={linger_ms}")
        } else {
            format!("floor: produce → consume, {rate} MB/s of 1 KiB, RF={replication} (no replication), linger.ms={linger_ms}")
        };
        // The target is read on the default configuration; the variants are beside it.
        let is_target = rate == TARGET_LATENCY_RATE_MB_S && linger_ms == 1 && replication >= 3 && !client_yields && !preallocate;
        self.rows.push(
            Row::new("latency", figure.clone(), format!("p50 {}", millis(ms(0.5))))
                .versus(format!("{} records at {:.1} MB/s", thousands(l.sent as f64), l.achieved_mb_s)),
        );
        let p99 = Row::new("latency", figure.clone(), format!("p99 {}", millis(ms(0.99))));
        self.rows.push(if is_target { p99.at_most(ms(0.99), 5.0, "p99 ≤ 5 ms") } else { p99 });
        self.rows.push(Row::new("latency", figure.clone(), format!("p99.9 {}", millis(ms(0.999)))));
        self.rows.push(Row::new("latency", figure, format!("max {}", millis(h.max() as f64 / 1000.0))).versus(format!(
            "CPU busy: client (librdkafka) {:.0}%, 3 brokers {:.0}% of one core{stolen}",
            100.0 * client_cpu / wall,
            100.0 * broker_cpu / wall
        )));
        let a = &l.acks;
        let ack_ms = |q: f64| a.value_at_quantile(q) as f64 / 1000.0;
        self.rows.push(Row::new(
            "latency",
            format!("of which produce → acknowledged, {rate} MB/s, RF={replication}, linger.ms={linger_ms}{variant}"),
            format!("p50 {}, p99 {}, max {}", millis(ack_ms(0.5)), millis(ack_ms(0.99)), millis(a.max() as f64 / 1000.0)),
        ));
        Ok(())
    }

    /// Scenario 4: kill -9 a partition leader (then the active controller) under a
    /// steady idempotent producer; time to the first acknowledgement of a record
    /// sent after the kill.
    pub fn failover(&mut self) -> anyhow::Result<()> {
        let topic = self.next_topic("failover");
        let rounds = self.plan.failover_rounds;
        let cluster = self.cluster()?;
        cluster.create_topic(&topic, 3, 3, &[("min.insync.replicas", "2")])?;
        let steady = SteadyProducer::start(
            &cluster.bootstrap(),
            &topic,
            100,
            Duration::from_millis(1),
            &[("acks", "all"), ("enable.idempotence", "true")],
        )?;
        steady.watch_from(Instant::now());
        steady
            .wait_for_watched_ack(Duration::from_secs(30))
            .context("the steady producer got no acknowledgement")?;
        let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for (kind, kill_controller) in [(0, false), (1, true)] {
            for round in 0..rounds {
                settle(cluster, &topic)?;
                let controller = cluster.controller()?;
                let partitions = cluster.partitions(&topic)?;
                let chosen = partitions.iter().find(|p| (p.leader == controller) == kill_controller);
                let Some(chosen) = chosen else {
                    anyhow::bail!(
                        "no partition of {topic} is led by {} the controller (node {controller}): {partitions:?}",
                        if kill_controller { "" } else { "anyone but" }
                    );
                };
                let victim = chosen.leader;
                steady.set_partition(chosen.partition);
                std::thread::sleep(Duration::from_millis(300));
                let killed_at = Instant::now();
                steady.watch_from(killed_at);
                cluster.kill9(victim)?;
                let took = steady.wait_for_watched_ack(Duration::from_secs(60));
                let took = took.with_context(|| format!("no acknowledgement within 60 s of killing node {victim}"))?;
                eprintln!(
                    "failover: round {} killed node {victim} ({}) leading partition {}: next ack after {}",
                    round + 1,
                    if kill_controller { "leader and active controller" } else { "leader" },
                    chosen.partition,
                    millis(took.as_secs_f64() * 1000.0)
                );
                samples[kind].push(took.as_secs_f64() * 1000.0);
                cluster.restart(victim)?;
                cluster.wait_ready(Duration::from_secs(60))?;
            }
        }
        settle(cluster, &topic)?;
        let (acked, failed, first_error) = steady.finish()?;
        anyhow::ensure!(failed == 0, "{failed} of the steady producer's records failed: {first_error:?}");
        for (kind, label) in [(0, "kill -9 partition leader"), (1, "kill -9 leader that is the active controller")] {
            let mut s = samples[kind].clone();
            s.sort_by(f64::total_cmp);
            let (p50, max) = (quantile(&s, 0.5), s.last().copied().unwrap_or(f64::NAN));
            let figure = format!("{label} → next ack ({} kills)", s.len());
            self.rows.push(
                Row::new("failover", figure.clone(), format!("p50 {}", millis(p50)))
                    .at_most(p50, 1500.0, "p50 ≤ 1.5 s")
                    .versus(format!("{} records acked, 0 failed", thousands(acked as f64))),
            );
            self.rows.push(Row::new("failover", figure, format!("max {}", millis(max))).at_most(max, 3000.0, "max ≤ 3 s"));
        }
        Ok(())
    }

    /// Scenario 5's start-up part: fresh clusters with N partitions.
    pub fn startup(&mut self) -> anyhow::Result<()> {
        // The shared cluster's idle footprint is recorded when it starts; then it is
        // not needed here, so stop it to free the machine.
        self.cluster()?;
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop_all()?;
        }
        for n in self.plan.startup_partitions.clone() {
            // Each partition replica keeps three files open (segment and two indexes),
            // and all three brokers share this machine: RF=3 only where the open-file
            // limit the brokers inherit leaves room for it.
            let replication: i16 = if self.open_file_limit >= 3 * u64::try_from(n)? + 4096 { 3 } else { 1 };
            let why = if replication == 3 {
                String::new()
            } else {
                format!("; RF=1 because RF=3 needs over {} open files per broker, above this machine's limit of {}", 3 * n, self.open_file_limit)
            };
            let dir = self.data_dir.join(format!("startup-{n}"));
            let mut cluster = BenchCluster::start(&self.rafka_bin, &dir, BROKERS, self.base_port, "")?;
            eprintln!("footprint: creating {n} partitions (RF={replication})");
            let created = cluster.create_topic("bench-partitions", n, replication, &[])?;
            self.rows.push(
                Row::new(
                    "footprint",
                    format!("create {} partitions RF={replication} (until all have leaders and full ISRs)", thousands(f64::from(n))),
                    millis(created.as_secs_f64() * 1000.0),
                )
                .versus(format!("{:.0} partitions/s{why}", f64::from(n) / created.as_secs_f64())),
            );
            std::thread::sleep(Duration::from_secs(2));
            let rss = cluster.ids().iter().map(|id| cluster.stats(*id).rss_bytes).max().unwrap_or(0);
            cluster.stop_all()?;
            eprintln!("footprint: restarting with {n} partitions");
            let started = Instant::now();
            cluster.start_all()?;
            cluster.wait_until(Duration::from_secs(600), "every partition to have a leader", || {
                let live: Vec<i32> = cluster.metadata(Some(&[]))?.brokers.iter().map(|b| b.node_id.0).collect();
                let views = cluster.partitions("bench-partitions")?;
                Ok(views.len() == n as usize && views.iter().all(|p| live.contains(&p.leader)))
            })?;
            let took = started.elapsed();
            self.rows.push(
                Row::new("footprint", format!("start-up to serving, {} partitions RF={replication}", thousands(f64::from(n))), millis(took.as_secs_f64() * 1000.0))
                    .versus(format!("idle RSS with them: {} (largest of 3)", mib(rss))),
            );
            cluster.stop_all()?;
            drop(cluster);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }

    /// Stops the shared cluster (controlled shutdown) and removes the data.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop_all()?;
        }
        Ok(())
    }
}

/// Runs client work on this thread, or with `client_yields` on a thread of its own at
/// nice 19. Nice is per thread and inherited by the threads a thread creates: that
/// thread and librdkafka's threads for the work are lowered; the brokers are not.
fn run_client<T: Send>(client_yields: bool, work: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    if !client_yields {
        return work();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                lower_this_threads_priority()?;
                work()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    })
}

/// Sets the calling thread (only: Linux keeps nice per thread) to nice 19.
fn lower_this_threads_priority() -> anyhow::Result<()> {
    // SAFETY: plain system calls on the calling thread, no memory is shared.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    anyhow::ensure!(rc == 0, "setpriority(nice 19) failed: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Waits until every partition of `topic` has its full ISR back and is led by its
/// preferred replica (the cluster moves leadership back after a restart).
fn settle(cluster: &BenchCluster, topic: &str) -> anyhow::Result<()> {
    cluster.wait_until(Duration::from_secs(60), &format!("{topic} to have full ISRs and preferred leaders"), || {
        let views = cluster.partitions(topic)?;
        Ok(views.iter().all(|p| p.isr.len() == p.replicas.len() && p.replicas.first() == Some(&p.leader)))
    })
}

impl MachineLimits {
    pub fn rows(&self) -> Vec<Row> {
        vec![
            Row::new("machine", "sequential write, page cache (1 MiB writes)", format!("{:.0} MB/s", self.seq_write_mb_s)),
            Row::new("machine", "sequential write, fdatasync after each 1 MiB", format!("{:.0} MB/s", self.synced_write_mb_s)),
            Row::new(
                "machine",
                "fdatasync of a 4 KiB append",
                format!("p50 {:.2} ms, p99 {:.2} ms", self.fdatasync_p50_us / 1000.0, self.fdatasync_p99_us / 1000.0),
            ),
            Row::new("machine", "loopback TCP, one stream", format!("{:.0} MB/s", self.loopback_mb_s)),
            Row::new("machine", "memcpy", format!("{:.0} MB/s", self.memcpy_mb_s)),
            Row::new("machine", "sequential rewrite of pages already in the page cache", format!("{:.0} MB/s", self.rewrite_mb_s))
                .versus(format!("{:.1}× the first write: what new pages cost", self.rewrite_mb_s / self.seq_write_mb_s)),
        ]
    }
}

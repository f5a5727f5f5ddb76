//! `rafka-bench`: throughput, latency, failover and footprint of a real three-node
//! Rafka cluster on loopback, driven by librdkafka, printed beside this machine's
//! own limits measured in the same run.
//!
//! `limits.rs` measures the machine, `cluster.rs` runs the brokers, `load.rs` is
//! the client work, `scenarios.rs` turns runs into rows and `report.rs` prints them.

mod cluster;
mod limits;
mod load;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::scenarios::{Bench, Plan, ProduceMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// produce (with the durability rows), consume, latency, failover, footprint, in this order.
    All,
    /// Produce flat out: RF=1 acks=1, RF=3 acks=all idempotent, and RF=3 with fsync before ack (the two RF=3 modes in interleaved slices); 100 B and 1 KiB; with the durability rows.
    Produce,
    /// Consume a loaded topic from the beginning.
    Consume,
    /// End-to-end latency at fixed rates (HdrHistogram), RF=3: 50 MB/s, the same with the topic set to preallocate=true, the same with the client at nice 19 (a diagnosis), 50 MB/s at RF=1 (the floor: no replication), 30 MB/s and 5 MB/s with linger.ms=1, 5 MB/s with linger.ms=0; 5 MB/s plain, with preallocate=true and with the client at nice 19, with --quick.
    Latency,
    /// kill -9 of a partition leader, then of the active controller, under a steady producer.
    Failover,
    /// Start-up time and time to create many partitions (idle RSS comes with every run; RSS under load and CPU per GB with produce).
    Footprint,
    /// Page-cache acks against fsync-before-ack (group commit), RF=3, in interleaved slices; the same pair with the client at nice 19 (a diagnosis); an fdatasync probe beside each mode.
    Durability,
}

#[derive(Debug, Parser)]
#[command(
    name = "rafka-bench",
    about = "Benchmark a real 3-node Rafka cluster with librdkafka and compare with this machine's limits",
    long_about = "Benchmark a real 3-node Rafka cluster on loopback with librdkafka (the rdkafka crate), \
                  and measure in the same run this machine's limits (sequential writes with and without \
                  fdatasync on the data directory's filesystem, fdatasync latency, loopback TCP, memcpy, rewriting page-cache pages), \
                  so that every figure can be read as a ratio. Prints one table; --markdown also writes it \
                  as Markdown. Build the broker first: cargo build --release -p rafka"
)]
struct Args {
    /// What to run (default: all). The machine's limits are always measured.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// A smoke run of about a minute (tiny sizes, one failover round): checks that
    /// every scenario works; its figures mean nothing.
    #[arg(long)]
    quick: bool,
    /// The rafka binary to run (default: the `rafka` beside this program, e.g. target/release/rafka).
    #[arg(long, value_name = "PATH")]
    rafka_bin: Option<PathBuf>,
    /// Scratch directory for the brokers' data and the disk probes; wiped at start, removed after a successful run
    /// (unless --keep-data).
    #[arg(long, value_name = "DIR", default_value = "rafka-bench-data")]
    data_dir: PathBuf,
    /// Keep the data directory, with each broker's log (cluster/nodeN/rafka.log), after a successful run too.
    #[arg(long)]
    keep_data: bool,
    /// First port to try: node i listens on P+i-1 (Kafka) and P+100+i-1 (gRPC).
    #[arg(long, value_name = "P", default_value_t = 24092)]
    base_port: u16,
    /// Also write the table as Markdown to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

fn default_rafka_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this program")?;
    let sibling = me.with_file_name("rafka");
    anyhow::ensure!(
        sibling.is_file(),
        "no rafka binary at {} (build it with `cargo build --release -p rafka`, or pass --rafka-bin)",
        sibling.display()
    );
    Ok(sibling)
}

/// Lets the brokers (our children) hold many files: each partition replica keeps
/// three open, so 10,000 partitions at RF=3 on three local brokers need over 30,000
/// per broker. Raises the hard limit too where permitted (as root), else the soft
/// limit to the hard one; returns the soft limit the brokers inherit.
#[allow(unsafe_code)]
fn raise_open_file_limit() -> u64 {
    const WANTED: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let raised = libc::rlimit { rlim_cur: WANTED.max(limit.rlim_cur), rlim_max: WANTED.max(limit.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            return limit.rlim_cur;
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let open_files = raise_open_file_limit();
    let rafka_bin = match args.rafka_bin {
        Some(path) => path,
        None => default_rafka_bin()?,
    };
    anyhow::ensure!(rafka_bin.is_file(), "--rafka-bin {} is not a file", rafka_bin.display());
    let rafka_bin = std::path::absolute(&rafka_bin)?;
    let mut scenarios = args.scenarios.clone();
    if scenarios.is_empty() || scenarios.contains(&Scenario::All) {
        scenarios = vec![Scenario::Produce, Scenario::Consume, Scenario::Latency, Scenario::Failover, Scenario::Footprint];
    }
    if rafka_bin.components().any(|c| c.as_os_str() == "debug") && !args.quick {
        eprintln!("warning: {} looks like a debug build; its figures will be far below a release build's", rafka_bin.display());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "rafka-bench{}: {} on {cores} cores; broker {} (open file limit {open_files})",
        if args.quick { " --quick (smoke run: figures are meaningless)" } else { "" },
        scenarios.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>().join(", "),
        rafka_bin.display()
    );

    let data_dir = std::path::absolute(&args.data_dir)?;
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("cannot clear {}", data_dir.display()))?;
    }
    let plan = Plan::new(args.quick);
    eprintln!("measuring this machine's limits in {}", data_dir.display());
    let limits = limits::measure(&data_dir, limits::LimitSizes::new(args.quick))?;
    let mut bench = Bench::new(plan, rafka_bin, data_dir.clone(), args.base_port, open_files, limits);
    bench.rows.extend(limits.rows());

    let outcome = (|| -> anyhow::Result<()> {
        for scenario in &scenarios {
            match scenario {
                Scenario::All => unreachable!("expanded above"),
                Scenario::Produce => {
                    bench.produce(&[ProduceMode::Rf1Acks1, ProduceMode::Rf3AcksAllIdempotent, ProduceMode::Rf3AcksAllFsync])?;
                    bench.durability_rows();
                }
                Scenario::Durability => {
                    bench.produce(&[ProduceMode::Rf3AcksAllIdempotent, ProduceMode::Rf3AcksAllFsync])?;
                    bench.durability_rows();
                }
                Scenario::Consume => bench.consume()?,
                Scenario::Latency => bench.latency()?,
                Scenario::Failover => bench.failover()?,
                Scenario::Footprint => bench.startup()?,
            }
        }
        bench.finish()
    })();

    println!();
    print!("{}", report::text_table(&bench.rows));
    println!("\n({:.0} s in all)", started.elapsed().as_secs_f64());
    if let Some(path) = &args.markdown {
        std::fs::write(path, report::markdown_table(&bench.rows)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    outcome?;
    if !args.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

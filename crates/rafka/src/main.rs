//! The `rafka` binary: a Kafka-compatible broker and its command-line tools.
//!
//! `server` runs a broker; `topics` is the `kafka-topics.sh` equivalent (`topics.rs`,
//! over the small Kafka client in `client.rs`); `dev` runs a local multi-node
//! cluster of `server` child processes (`dev.rs`). This file only parses the
//! command line and dispatches.

mod consumer_groups;
mod healthcheck;
mod topics;

use rafka::{client, dev};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rafka_server::BrokerConfig;

#[global_allocator]
static ALLOCATOR: rafka_kafka::alloc_guard::GuardedAllocator = rafka_kafka::alloc_guard::GuardedAllocator;

#[derive(Debug, Parser)]
#[command(name = "rafka", version, about = "A Kafka-compatible broker written in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker. With no configuration at all it serves localhost:9092 with data in ./rafka-data.
    ///
    /// Settings use Kafka's server.properties keys. Sources, later ones winning: the
    /// --config file, KAFKA_* / KAFKA_CFG_* environment variables (KAFKA_LOG_DIRS sets
    /// log.dirs: '_' is '.', '__' is '_', '___' is '-'), then --override flags.
    /// Log verbosity: RAFKA_LOG (e.g. debug, or rafka_kafka=debug), default info.
    Server {
        /// A server.properties file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Set one key, e.g. --override log.dirs=/data (repeatable).
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Create, list, describe, alter or delete topics, like Kafka's kafka-topics.sh
    ///
    /// Same flags and output as kafka-topics.sh. Examples:
    ///   rafka topics --bootstrap-server localhost:9092 --create --topic orders --partitions 6 --config retention.ms=86400000
    ///   rafka topics --bootstrap-server localhost:9092 --describe --topic orders
    /// Errors print "Error while executing topic command : <message>" on stderr and exit 1.
    #[command(verbatim_doc_comment)]
    Topics(topics::TopicsArgs),
    /// List, describe, reset the offsets of, or delete consumer groups, like Kafka's kafka-consumer-groups.sh
    ///
    /// Kafka's flag names, tables and messages (a subset of kafka-consumer-groups.sh). Examples:
    ///   rafka consumer-groups --bootstrap-server localhost:9092 --list
    ///   rafka consumer-groups --bootstrap-server localhost:9092 --describe --group billing
    ///   rafka consumer-groups --bootstrap-server localhost:9092 --reset-offsets --group billing --topic orders --to-earliest --execute
    /// Failures print "Error: <message>" on stderr and exit 1; so do wrong flag combinations
    /// (without the "Error: " prefix), before connecting.
    #[command(verbatim_doc_comment)]
    ConsumerGroups(consumer_groups::ConsumerGroupsArgs),
    /// Run a local multi-node cluster (broker+controller nodes as child processes) until Ctrl-C.
    ///
    /// Node i serves Kafka clients on 127.0.0.1:P+i-1 and node-to-node gRPC on
    /// 127.0.0.1:P+100+i-1, keeps its data and log in DIR/node<i>/, and the bootstrap
    /// string is printed once every node answers. Ctrl-C or SIGTERM stops the nodes
    /// (controlled shutdown, SIGKILL after 30 s); the data stays for the next start.
    Dev(dev::DevArgs),
    /// Exit 0 when the broker at --bootstrap-server answers ApiVersions and Metadata and lists itself as a live registered broker (for health checks and readiness probes); else exit 1 with one line saying why.
    Healthcheck(healthcheck::HealthcheckArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFKA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

fn server(config: Option<PathBuf>, overrides: Vec<String>) -> anyhow::Result<()> {
    let config = BrokerConfig::load(config.as_deref(), std::env::vars(), &overrides)?;
    init_logging();
    raise_open_file_limit();
    rafka_server::log_configuration(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(rafka_server::run(config, shutdown_signal()))?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one, as the JVM does for Kafka: every
/// hosted partition replica keeps its segment and two index files open, so the usual
/// soft limit of 1024 runs out at a few hundred partitions.
#[allow(unsafe_code)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        (before, before == limit.rlim_max || libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0)
    };
    match raised {
        (before, true) => tracing::info!(
            from = before,
            to = limit.rlim_max,
            "open file limit (each partition replica keeps 3 files open)"
        ),
        (before, false) => tracing::warn!(limit = before, "cannot raise the open file limit"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server { config, overrides } => server(config, overrides),
        Command::Topics(args) => return topics::run(args),
        Command::ConsumerGroups(args) => return consumer_groups::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Healthcheck(args) => return healthcheck::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rafka: {e}");
            ExitCode::FAILURE
        }
    }
}

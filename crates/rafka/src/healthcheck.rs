//! `rafka healthcheck`: is this node serving? For container health checks and
//! Kubernetes readiness probes, where the image has no shell and no other tool.
//!
//! It asks one broker, over the Kafka protocol like any client, for ApiVersions and
//! then Metadata, and succeeds only when the broker answers both, names an active
//! controller, and lists itself among the live brokers: registered with the active
//! controller and not fenced. A node that is starting, has been fenced, or knows no
//! active controller (the metadata quorum has lost its majority) is therefore not
//! healthy, even though its port accepts TCP.
//!
//! "Itself" is the node id given with `--node-id`; without it, the `node.id` that
//! `rafka server` would resolve from the same environment (and `--config`), which is
//! what a probe running inside the broker's container or pod sees; failing both, the
//! listed broker whose advertised address is the one checked.
//!
//! Exit 0 with one line on stdout when healthy; exit 1 with one line on stderr
//! saying why not.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rafka_server::config::Settings;

use crate::client::{Connection, Timeouts};

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The broker to check, HOST:PORT (one node: the check is about that node).
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// The node id the broker must list itself under (default: see below).
    #[arg(long, value_name = "ID")]
    node_id: Option<i32>,
    /// The broker's server.properties, to read its node.id from when --node-id is not given.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Give up after this many milliseconds (connecting and each request).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout_ms: u64,
}

/// The node a probe checks, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Node(i32),
    /// Not configured anywhere: the broker advertised at the checked address.
    AtAddress,
}

pub fn run(args: HealthcheckArgs) -> ExitCode {
    match check(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &HealthcheckArgs) -> Result<String, String> {
    let expected = match args.node_id {
        Some(id) => Expected::Node(id),
        None => {
            let settings = Settings::collect(args.config.as_deref(), std::env::vars(), &[])
                .map_err(|e| format!("cannot tell which node to check from the configuration: {e}"))?;
            match settings.explicit_node_id().map_err(|e| e.to_string())? {
                Some(id) => Expected::Node(id),
                None => Expected::AtAddress,
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    runtime.block_on(ask(&args.bootstrap_server, expected, Duration::from_millis(args.timeout_ms.max(1))))
}

async fn ask(addr: &str, expected: Expected, timeout: Duration) -> Result<String, String> {
    crate::client::parse_bootstrap(addr).map_err(|e| e.to_string())?;
    let timeouts = Timeouts { connect: timeout, request: timeout };
    let mut connection = Connection::open(addr, timeouts).await.map_err(|e| e.to_string())?;
    let metadata = connection.metadata(Some(&[])).await.map_err(|e| e.to_string())?;
    let live: Vec<(i32, String)> =
        metadata.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
    let ids: Vec<i32> = live.iter().map(|(id, _)| *id).collect();
    let me = match expected {
        Expected::Node(id) => live.iter().find(|(listed, _)| *listed == id).map(|(id, _)| *id).ok_or_else(|| {
            format!(
                "node {id} answered at {addr} but is not a live registered broker (live: {ids:?}); \
                 it is starting, cannot reach the metadata quorum, is fenced or is shutting down"
            )
        })?,
        Expected::AtAddress => live
            .iter()
            .find(|(_, advertised)| advertised.eq_ignore_ascii_case(addr))
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                format!(
                    "{addr} answered, but no live broker advertises {addr} (live: {live:?}) and no node.id \
                     is configured here; pass --node-id"
                )
            })?,
    };
    let controller = metadata.controller_id.0;
    if controller < 0 {
        return Err(format!(
            "node {me} answered at {addr} but knows no active controller: the metadata quorum has no leader it can reach"
        ));
    }
    Ok(format!(
        "healthy: node {me} answers at {addr} and is a live registered broker ({} live, controller {})",
        live.len(),
        controller
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_listening_is_unhealthy_with_the_address_in_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let reason = ask(&addr, Expected::Node(1), Duration::from_millis(500)).await.unwrap_err();
        assert!(reason.contains(&addr), "{reason}");
        assert!(!reason.contains('\n'));
    }

    #[tokio::test]
    async fn a_port_that_never_answers_is_unhealthy_within_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let started = std::time::Instant::now();
        let reason = ask(&addr, Expected::AtAddress, Duration::from_millis(300)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(reason.contains("did not answer"), "{reason}");
    }

    #[tokio::test]
    async fn a_bad_address_is_refused_before_connecting() {
        let reason = ask("no-port", Expected::Node(1), Duration::from_millis(100)).await.unwrap_err();
        assert!(reason.contains("HOST:PORT"), "{reason}");
    }
}

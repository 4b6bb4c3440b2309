//! `hostpath-provisioner`: node-local volumes, a drop-in replacement for rancher's
//! local-path-provisioner without helper pods. Without a subcommand it runs this node's
//! provisioner (`NODE_NAME` from the downward API, local-path's `config.json`); every
//! setting is also a flag (`--help`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use provisioner_bin::explain::{self, ExplainArgs};
use provisioner_bin::hostpath::{self, HostPathArgs};
use provisioner_bin::runtime::{self, CommonArgs};

/// Node-local volumes for Kubernetes PersistentVolumeClaims: one directory per claim on the
/// disks of the node the scheduler picked, configured with local-path-provisioner's
/// config.json.
///
/// Started without a subcommand, it runs as one instance per node (a DaemonSet): each
/// instance provisions and deletes the volumes of its own node, in-process; one of them,
/// elected with a Lease, also does the work of no single node (shared-filesystem claims,
/// volumes of vanished nodes). A flag wins over its variable.
#[derive(Debug, Parser)]
#[command(
    name = "hostpath-provisioner",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    hostpath: HostPathArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain which PersistentVolume Kubernetes would bind a claim to, and why every other
    /// volume was passed over (no cluster needed).
    Explain(ExplainArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::Explain(args)) = cli.command {
        let answered = explain::run(&args, &mut std::io::stdout(), &mut std::io::stderr())?;
        return Ok(if answered {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    // Setting errors are reported before anything else starts.
    let settings = match cli.hostpath.resolve() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("hostpath-provisioner: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    runtime::init_logging();
    tokio::runtime::Runtime::new()?.block_on(hostpath::run::run(&cli.common, settings))?;
    Ok(ExitCode::SUCCESS)
}

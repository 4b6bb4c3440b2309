//! `nfs-provisioner`: dynamic NFS subdirectory provisioner.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use provisioner_bin::explain::{self, ExplainArgs};

/// Dynamic provisioning of NFS subdirectories for Kubernetes PersistentVolumeClaims.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain which PersistentVolume Kubernetes would bind a claim to, and why every other
    /// volume was passed over (no cluster needed).
    Explain(ExplainArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Explain(args)) => {
            let answered = explain::run(&args, &mut std::io::stdout(), &mut std::io::stderr())?;
            Ok(if answered {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => anyhow::bail!(
            "running the provisioner is not available in this build yet; use a subcommand (see --help)"
        ),
    }
}

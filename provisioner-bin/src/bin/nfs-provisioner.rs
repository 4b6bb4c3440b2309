//! `nfs-provisioner`: dynamic provisioning of NFS subdirectories, a drop-in replacement
//! for nfs-subdir-external-provisioner. Without a subcommand it runs the provisioner,
//! configured like the Go image (`PROVISIONER_NAME`, `NFS_SERVER`, `NFS_PATH`, the export
//! mounted at `/persistentvolumes`); every setting is also a flag (`--help`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use provisioner_bin::explain::{self, ExplainArgs};
use provisioner_bin::nfs::{self, NfsArgs};
use provisioner_bin::runtime::{self, CommonArgs};

/// Dynamic provisioning of NFS subdirectories for Kubernetes PersistentVolumeClaims.
///
/// Started without a subcommand, it provisions one directory per claim on an NFS export
/// for the StorageClasses whose `provisioner` is PROVISIONER_NAME. Configure it with the
/// environment variables of nfs-subdir-external-provisioner's image or with the flags
/// below (a flag wins over its variable).
#[derive(Debug, Parser)]
#[command(
    name = "nfs-provisioner",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    nfs: NfsArgs,
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
    // Configuration errors are reported before anything else starts.
    let settings = match cli.nfs.resolve() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("nfs-provisioner: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    runtime::init_logging();
    tokio::runtime::Runtime::new()?.block_on(nfs::run::run(&cli.common, settings))?;
    Ok(ExitCode::SUCCESS)
}

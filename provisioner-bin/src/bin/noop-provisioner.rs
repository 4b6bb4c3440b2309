//! `noop-provisioner`: a provisioner whose backend creates nothing, for tests of the
//! runtime (leader election, shutdown, metrics) and for benchmarks.

use std::time::Duration;

use clap::Parser;
use provisioner_bin::runtime::args::parse_duration;
use provisioner_bin::runtime::noop::NoopBackend;
use provisioner_bin::runtime::{self, CommonArgs, RunOptions};

/// A provisioner that creates nothing: each volume is a hostPath that is never made.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The provisioner name StorageClasses refer to.
    #[arg(long, env = "PROVISIONER_NAME")]
    provisioner_name: String,

    /// How long each provisioning takes (to test shutdown with work in flight).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    provision_delay: Duration,

    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_logging();
    let cli = Cli::parse();
    runtime::run_provisioner(
        &cli.common,
        &cli.provisioner_name,
        NoopBackend::new(cli.provision_delay),
        RunOptions::default(),
    )
    .await?;
    Ok(())
}

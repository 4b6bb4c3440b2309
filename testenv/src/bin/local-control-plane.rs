//! `local-control-plane`: starts the same local Kubernetes control plane the tests use,
//! writes an admin kubeconfig and runs until Ctrl-C or SIGTERM, then cleans up.
//!
//! ```text
//! cargo run -p testenv --bin local-control-plane -- --kubeconfig /tmp/kc \
//!     [--controller-manager] [--scheduler] [--fake-nodes N]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use testenv::{Binaries, ControlPlane, RunningComponent};
use tokio::signal::unix::{SignalKind, signal};

/// How often the command checks that every component still runs.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);
/// Log lines shown when a component dies.
const LOG_TAIL_LINES: usize = 30;

/// Start a local Kubernetes control plane (etcd + kube-apiserver, optionally
/// kube-controller-manager, kube-scheduler and kwok fake nodes) until interrupted.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to write the admin kubeconfig (client certificate in `system:masters`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Run kube-controller-manager with the PV binder and PV/PVC protection controllers.
    #[arg(long)]
    controller_manager: bool,
    /// Run kube-scheduler.
    #[arg(long)]
    scheduler: bool,
    /// Number of kwok-simulated Ready nodes, named fake-node-0, fake-node-1, ...
    #[arg(long, default_value_t = 0)]
    fake_nodes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node_names: Vec<String> = (0..args.fake_nodes)
        .map(|i| format!("fake-node-{i}"))
        .collect();
    let node_refs: Vec<&str> = node_names.iter().map(String::as_str).collect();

    // Found (or built) before the clock starts: the start time printed is the plane's own.
    let binaries = Binaries::locate()
        .await
        .context("finding the control-plane binaries")?;
    let started = Instant::now();
    let mut plane = ControlPlane::builder()
        .binaries(binaries)
        .controller_manager(args.controller_manager)
        .scheduler(args.scheduler)
        .fake_nodes(&node_refs)
        .start()
        .await
        .context("starting the control plane")?;
    let ready_after = started.elapsed();
    std::fs::copy(plane.admin_kubeconfig(), &args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;

    print_usage(&plane, &args.kubeconfig, ready_after, &node_names);

    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            _ = liveness.tick() => {
                if let Some((component, status)) = plane.exited_component() {
                    let tail = plane.log_tail(component, LOG_TAIL_LINES).unwrap_or_default();
                    break Err(anyhow::anyhow!(
                        "{component} exited with {status}; last lines of its log:\n{tail}"
                    ));
                }
            }
        }
    };

    println!("\nStopping. Peak memory (VmHWM) of each component:");
    for line in memory_report(plane.components()) {
        println!("  {line}");
    }
    let dir = plane.dir().to_owned();
    drop(plane);
    println!("Stopped; removed {}.", dir.display());
    outcome
}

fn print_usage(plane: &ControlPlane, kubeconfig: &Path, ready_after: Duration, nodes: &[String]) {
    println!(
        "Control plane ready in {:.1} s: {}",
        ready_after.as_secs_f64(),
        plane.server_url()
    );
    for c in plane.components() {
        println!(
            "  {:<24} pid {:<8} log {}",
            c.component,
            c.pid,
            c.log.display()
        );
    }
    if !nodes.is_empty() {
        println!("  fake nodes: {}", nodes.join(", "));
    }
    println!("\nAdmin kubeconfig: {}\n", kubeconfig.display());
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get --raw /readyz");
    println!("  kubectl get nodes,storageclasses,pv,pvc -A");
    match find_on_path("kubectl") {
        Some(path) => println!("\n(kubectl is at {})", path.display()),
        None => println!(
            "\nkubectl is not installed on this machine; install it (any version within one minor\n\
             of the apiserver) or use any other client that reads a kubeconfig."
        ),
    }
    println!(
        "Programs under test can use the same kubeconfig (KUBECONFIG={}).",
        kubeconfig.display()
    );
    println!("\nPress Ctrl-C (or send SIGTERM) to stop and clean up.");
}

/// The first executable named `program` in `$PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// One line per component: peak and current resident memory, from /proc.
fn memory_report(components: &[RunningComponent]) -> Vec<String> {
    let mut total_peak_kib = 0;
    let mut lines: Vec<String> = components
        .iter()
        .map(
            |c| match std::fs::read_to_string(format!("/proc/{}/status", c.pid)) {
                Ok(status) => {
                    let peak = status_field_kib(&status, "VmHWM").unwrap_or(0);
                    let now = status_field_kib(&status, "VmRSS").unwrap_or(0);
                    total_peak_kib += peak;
                    format!(
                        "{:<24} peak {:>6} MiB, now {:>6} MiB",
                        c.component,
                        peak / 1024,
                        now / 1024
                    )
                }
                Err(err) => format!("{:<24} (not readable: {err})", c.component),
            },
        )
        .collect();
    lines.push(format!(
        "{:<24} peak {:>6} MiB (sum of the peaks)",
        "all",
        total_peak_kib / 1024
    ));
    lines
}

/// The value in KiB of a `Name:   1234 kB` line of /proc/PID/status.
fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_of_proc_status() {
        let status = "Name:\tetcd\nVmHWM:\t  51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_field_kib(status, "VmHWM"), Some(51200));
        assert_eq!(status_field_kib(status, "VmRSS"), Some(40960));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
    }

    #[test]
    fn the_flags_match_the_documented_command() {
        let args = Args::try_parse_from([
            "local-control-plane",
            "--kubeconfig",
            "/tmp/kc",
            "--controller-manager",
            "--fake-nodes",
            "2",
        ])
        .unwrap();
        assert_eq!(args.kubeconfig, Path::new("/tmp/kc"));
        assert!(args.controller_manager && !args.scheduler);
        assert_eq!(args.fake_nodes, 2);
        assert!(
            Args::try_parse_from(["local-control-plane"]).is_err(),
            "--kubeconfig is required"
        );
    }
}

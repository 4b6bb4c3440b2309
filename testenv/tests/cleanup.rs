//! However the owner of a control plane ends — drop, panic, SIGTERM to the command, SIGKILL —
//! no process of the plane survives and its directory is removed.
//!
//! The case of a plane in a never-dropped `static` is the SIGKILL case (the kernel closes
//! the watchdog's pipe when the process exits either way); `testenv/scripts/check-no-orphans.sh`
//! checks it on a whole `cargo test` run, whose `cluster_flows` tests share a static plane.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use testenv::ControlPlane;

/// Failure guard for the watchdog (it normally needs well under a second) and for the
/// command's start-up on a busy machine.
const PATIENCE: Duration = Duration::from_secs(180);

/// Pids of live (not zombie) processes other than this one whose command line mentions
/// `needle`: a plane's components and watchdog all name its directory.
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z ") && !stat.contains(") X "));
            running && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// Waits (bounded) until no process mentions `dir` and `dir` is gone.
fn wait_until_cleaned_up(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = processes_mentioning(dir);
        if left.is_empty() && !dir.exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after {PATIENCE:?}: processes {left:?} still run, directory exists: {}",
                dir.exists()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_cleaned_up_now(dir: &Path) {
    assert_eq!(
        processes_mentioning(dir),
        Vec::<u32>::new(),
        "survivors of {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn dropping_a_plane_stops_every_process_and_removes_its_directory() -> anyhow::Result<()> {
    let plane = ControlPlane::builder().start().await?;
    let dir = plane.dir().to_owned();
    let running = processes_mentioning(&dir);
    for component in plane.components() {
        assert!(
            running.contains(&component.pid),
            "{component:?} is not running"
        );
    }
    drop(plane);
    // The drop itself kills and reaps: nothing is left even a moment later.
    assert_cleaned_up_now(&dir);
    Ok(())
}

#[test]
fn a_test_that_panics_while_holding_a_plane_still_cleans_up() {
    let (started, dir) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let plane = ControlPlane::builder().start().await;
            let plane = plane.map_err(|err| err.to_string());
            let _ = started.send(
                plane
                    .as_ref()
                    .map(|p| p.dir().to_owned())
                    .map_err(Clone::clone),
            );
            panic!("a deliberate panic while holding a control plane");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let dir = dir
        .recv()
        .expect("the thread reports its plane")
        .expect("the plane started");
    assert_cleaned_up_now(&dir);
}

/// `local-control-plane` running with a kubeconfig in `scratch`, plus its plane's directory.
struct RunningCommand {
    child: Child,
    plane_dir: PathBuf,
}

impl RunningCommand {
    fn start(scratch: &Path) -> anyhow::Result<Self> {
        let kubeconfig = scratch.join("admin.kubeconfig");
        let output = std::fs::File::create(scratch.join("output.log"))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_local-control-plane"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        let deadline = Instant::now() + PATIENCE;
        // The kubeconfig appears once the plane is ready; its CA file lives in the plane's
        // directory.
        let plane_dir = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "local-control-plane exited with {status}: {}",
                    output_of(scratch)
                );
            }
            let ca = kube::config::Kubeconfig::read_from(&kubeconfig)
                .ok()
                .and_then(|k| {
                    k.clusters
                        .into_iter()
                        .next()?
                        .cluster?
                        .certificate_authority
                });
            if let Some(ca) = ca {
                break Path::new(&ca)
                    .parent()
                    .context("CA path has a parent")?
                    .to_owned();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("no kubeconfig after {PATIENCE:?}: {}", output_of(scratch));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(Self { child, plane_dir })
    }

    fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("local-control-plane still runs after {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        // Only matters when a test failed half-way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output_of(scratch: &Path) -> String {
    std::fs::read_to_string(scratch.join("output.log")).unwrap_or_default()
}

fn pid_of(child: &Child) -> rustix::process::Pid {
    let raw = i32::try_from(child.id()).expect("pids fit in i32");
    rustix::process::Pid::from_raw(raw).expect("a child's pid is positive")
}

#[test]
fn the_command_cleans_up_when_it_gets_sigterm() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut command = RunningCommand::start(scratch.path())?;
    assert!(!processes_mentioning(&command.plane_dir).is_empty());

    rustix::process::kill_process(pid_of(&command.child), rustix::process::Signal::TERM)?;
    let status = command.wait()?;
    assert!(status.success(), "{status}: {}", output_of(scratch.path()));
    assert_cleaned_up_now(&command.plane_dir);
    assert!(output_of(scratch.path()).contains("Peak memory"));
    Ok(())
}

#[test]
fn the_watchdog_cleans_up_when_the_command_is_killed() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut command = RunningCommand::start(scratch.path())?;
    assert!(!processes_mentioning(&command.plane_dir).is_empty());

    // SIGKILL: no destructor runs, exactly like a process that exits with a plane in a static.
    command.child.kill()?;
    command.wait()?;
    wait_until_cleaned_up(&command.plane_dir)
}

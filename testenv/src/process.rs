//! A program under test, run as a child process that cannot outlive the test.
//!
//! [`ChildProcess`] kills the program when dropped, and (through the same watchdog as the
//! control plane) when the test process dies without dropping it. Its stdout and stderr go to
//! a log file; a test that panics while holding it gets the log's last lines on stderr.
//!
//! To run a provisioner binary as a ServiceAccount, use
//! [`ControlPlane::spawn_as_service_account`](crate::ControlPlane::spawn_as_service_account),
//! or write the kubeconfig yourself:
//!
//! ```no_run
//! # async fn demo(plane: &testenv::ControlPlane, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use testenv::process::ChildProcess;
//!
//! let kubeconfig = dir.join("provisioner.kubeconfig");
//! plane.service_account_kubeconfig("my-ns", "provisioner", &kubeconfig).await?;
//! // In an integration test of the binary's own crate: env!("CARGO_BIN_EXE_<name>").
//! let mut command = std::process::Command::new("target/debug/provisioner");
//! command.env("KUBECONFIG", &kubeconfig);
//! let mut provisioner = ChildProcess::spawn("provisioner", &mut command, &dir.join("provisioner.log"))?;
//! // ... drive the test ...
//! assert!(provisioner.try_exit_status().is_none(), "{}", provisioner.log_tail(50));
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::logs;
use crate::reaper::{ProcessGroup, SpawnError};

/// Lines of the log printed when a test panics while the process runs.
const PANIC_TAIL_LINES: usize = 40;

/// Failure to start or inspect a [`ChildProcess`].
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process (or its watchdog) could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// A running program under test; dropping it kills the program (and anything it started in
/// its process group).
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    group: ProcessGroup,
}

impl ChildProcess {
    /// Starts `command` with stdin closed and stdout + stderr written to a new file `log`.
    /// `name` is used in messages.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Self, ProcessError> {
        let mut group = ProcessGroup::new(None)?;
        let pid = group.spawn(name, command, log)?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            log: log.to_owned(),
            group,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        logs::tail(&self.log, lines)
    }

    /// `Some(status)` once the program has exited, `None` while it runs.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.group.exited().map(|(_, status)| status)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}\n---",
                self.name,
                self.log.display(),
                self.log_tail(PANIC_TAIL_LINES)
            );
        }
        // `group` is dropped next and kills the process.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reports_exit_and_keeps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = ChildProcess::spawn(
            "greeter",
            Command::new("sh").args(["-c", "echo hello from the child; exit 7"]),
            &dir.path().join("greeter.log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_exit_status() {
                break status;
            }
            assert!(Instant::now() < deadline, "never exited");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(7));
        assert_eq!(child.log_tail(1), "hello from the child");
        assert_eq!(child.name(), "greeter");
    }

    #[test]
    fn a_running_program_is_killed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = ChildProcess::spawn(
            "sleeper",
            Command::new("sleep").arg("1000"),
            &dir.path().join("sleeper.log"),
        )
        .unwrap();
        assert!(child.try_exit_status().is_none());
        let pid = child.pid();
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

//! Child processes that cannot outlive the process that started them.
//!
//! Every child joins the process group of a small `sh` watchdog. The watchdog's stdin is a
//! pipe whose only write end this process holds (std opens pipes close-on-exec, so no other
//! child inherits it). However this process ends — a drop, a normal exit that never drops a
//! `static`, an abort, SIGKILL — the kernel closes that pipe; the watchdog reads end-of-file,
//! kills the children, waits until they are gone, removes the cleanup directory and kills
//! whatever else is left in the group, itself included. A drop kills and reaps the children
//! directly, then lets the watchdog clear the rest of the group (the children's children).
//!
//! This needs no `unsafe` (unlike `PR_SET_PDEATHSIG`, which is also per-thread), and the
//! group anchored by the watchdog cannot be reused by unrelated processes while it lives.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a drop waits for the watchdog to clear the group; it takes milliseconds unless
/// the machine is badly overloaded.
const WATCHDOG_EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads child pids until end-of-file, then kills the group; `$1` is a directory to remove
/// (may be empty). Listed children get SIGKILL at once (a SIGTERM'd etcd waits for the
/// apiserver's watches to close); anything else in the group gets SIGTERM, which the
/// watchdog itself ignores, then SIGKILL with the watchdog at the end.
const WATCHDOG_SCRIPT: &str = r#"
in_group() {
  stat=
  read -r stat 2>/dev/null </proc/"$1"/stat || return 1
  set -- ${stat##*) }
  [ "$1" != Z ] && [ "$1" != X ] && [ "$3" = "$$" ]
}
trap '' INT TERM HUP
pids=
while read -r pid; do pids="$pids $pid"; done
for pid in $pids; do in_group "$pid" && kill -KILL "$pid" 2>/dev/null; done
kill -TERM 0 2>/dev/null
tries=0
while [ "$tries" -lt 100 ]; do
  alive=
  for pid in $pids; do in_group "$pid" && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1
  tries=$((tries + 1))
done
[ -z "$1" ] || rm -rf -- "$1"
kill -KILL 0
"#;

/// Failure to start the watchdog or a child in its group.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `sh` could not be started.
    #[error("starting the watchdog shell (`sh`): {0}")]
    Watchdog(#[source] io::Error),
    /// The child's log file could not be created.
    #[error("creating log file {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The watchdog is gone, so the child could not be put under its protection.
    #[error("registering {program} with the watchdog: {source}")]
    Register {
        /// The program.
        program: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// A child started by [`ProcessGroup::spawn`].
#[derive(Debug)]
pub(crate) struct Member {
    /// Short name used in messages (`etcd`, `kube-apiserver`, the program under test).
    pub name: String,
    /// File that receives the child's stdout and stderr.
    pub log: PathBuf,
    child: Child,
}

/// A watchdog plus the children in its process group; dropping it kills and reaps them all.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    // Declared first so children die before the watchdog is taken down.
    members: Vec<Member>,
    watchdog: Child,
    /// Never written to after the pids; `None` only in tests that imitate this process dying.
    watchdog_input: Option<ChildStdin>,
}

impl ProcessGroup {
    /// Starts the watchdog. `cleanup_dir` is removed by the watchdog if this process ends
    /// without dropping the group.
    pub fn new(cleanup_dir: Option<&Path>) -> Result<Self, SpawnError> {
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("testenv-watchdog")
            .arg(cleanup_dir.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a terminal's Ctrl-C reaches the test process, not the children,
            // and the watchdog outlives the test process long enough to clean up.
            .process_group(0)
            .spawn()
            .map_err(SpawnError::Watchdog)?;
        let watchdog_input = watchdog.stdin.take();
        Ok(Self {
            members: Vec::new(),
            watchdog,
            watchdog_input,
        })
    }

    /// Starts `command` in the watchdog's group with stdout and stderr going to a new file
    /// `log`; returns the child's pid.
    pub fn spawn(
        &mut self,
        name: &str,
        command: &mut Command,
        log: &Path,
    ) -> Result<u32, SpawnError> {
        let log_error = |source| SpawnError::Log {
            path: log.to_owned(),
            source,
        };
        let stdout = File::create(log).map_err(log_error)?;
        let stderr = stdout.try_clone().map_err(log_error)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(pid_as_pgid(self.watchdog.id()))
            .spawn()
            .map_err(|source| SpawnError::Spawn {
                program: name.to_owned(),
                source,
            })?;
        let pid = child.id();
        let mut member = Member {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
        };
        let registered = match self.watchdog_input.as_mut() {
            Some(input) => writeln!(input, "{pid}"),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        if let Err(source) = registered {
            kill_and_reap(&mut member.child);
            return Err(SpawnError::Register {
                program: name.to_owned(),
                source,
            });
        }
        self.members.push(member);
        Ok(pid)
    }

    /// The first child (in start order) that has exited, with its exit status.
    pub fn exited(&mut self) -> Option<(&Member, ExitStatus)> {
        let index = self
            .members
            .iter_mut()
            .position(|m| matches!(m.child.try_wait(), Ok(Some(_))))?;
        let member = &mut self.members[index];
        // try_wait reaped it above; std remembers the status.
        let status = member.child.try_wait().ok().flatten()?;
        Some((&self.members[index], status))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        for member in &mut self.members {
            kill_and_reap(&mut member.child);
        }
        // End of input: the watchdog now kills what the children left in the group (their
        // own children) and exits. It needs milliseconds once the children are gone.
        drop(self.watchdog_input.take());
        let deadline = Instant::now() + WATCHDOG_EXIT_TIMEOUT;
        while matches!(self.watchdog.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_and_reap(&mut self.watchdog);
    }
}

/// SIGKILL (a no-op if it already exited), then reap so no zombie is left behind.
fn kill_and_reap(child: &mut Child) {
    // Errors mean it is already gone; there is nothing else to do about them in a drop.
    let _ = child.kill();
    let _ = child.wait();
}

/// Pids handed out by the kernel fit in `i32` (`pid_max` is at most 2^22).
fn pid_as_pgid(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z ") && !stat.contains(") X "))
            .unwrap_or(false)
    }

    fn wait_until_gone(pid: u32) -> bool {
        // A failure guard, not a speed assertion: the watchdog itself gives children 10 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if !is_running(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn sleeper() -> Command {
        let mut command = Command::new("sleep");
        command.arg("1000");
        command
    }

    #[test]
    fn drop_kills_every_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut group = ProcessGroup::new(None).unwrap();
        let a = group
            .spawn("a", &mut sleeper(), &dir.path().join("a.log"))
            .unwrap();
        let b = group
            .spawn("b", &mut sleeper(), &dir.path().join("b.log"))
            .unwrap();
        assert!(is_running(a) && is_running(b));
        drop(group);
        assert!(!is_running(a) && !is_running(b));
    }

    #[test]
    fn drop_also_kills_the_children_of_children() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("parent.log");
        let mut group = ProcessGroup::new(None).unwrap();
        group
            .spawn(
                "parent",
                Command::new("sh").args(["-c", "sleep 1000 & echo $!; wait"]),
                &log,
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let grandchild = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(pid) = text.trim().parse::<u32>() {
                break pid;
            }
            assert!(Instant::now() < deadline, "no pid in the log");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(is_running(grandchild));
        drop(group);
        assert!(wait_until_gone(grandchild));
    }

    #[test]
    fn closing_the_pipe_makes_the_watchdog_kill_the_group_and_remove_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let doomed = dir.path().join("doomed");
        std::fs::create_dir(&doomed).unwrap();
        let mut group = ProcessGroup::new(Some(&doomed)).unwrap();
        let pid = group
            .spawn("a", &mut sleeper(), &doomed.join("a.log"))
            .unwrap();
        // What the kernel does when this process dies: the write end of the pipe goes away.
        drop(group.watchdog_input.take());
        group.watchdog.wait().unwrap();
        assert!(wait_until_gone(pid));
        assert!(!doomed.exists());
    }

    #[test]
    fn output_goes_to_the_log_file_and_exits_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("echo.log");
        let mut group = ProcessGroup::new(None).unwrap();
        group
            .spawn(
                "echo",
                Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
                &log,
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some((member, status)) = group.exited() {
                assert_eq!(member.name, "echo");
                break status;
            }
            assert!(Instant::now() < deadline, "child never exited");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(3));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out") && text.contains("err"), "{text}");
    }

    #[test]
    fn a_missing_program_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut group = ProcessGroup::new(None).unwrap();
        let err = group
            .spawn(
                "nope",
                &mut Command::new("/nonexistent/testenv-nope"),
                &dir.path().join("nope.log"),
            )
            .unwrap_err();
        assert!(err.to_string().contains("starting nope"), "{err}");
    }
}

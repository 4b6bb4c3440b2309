//! Where the control-plane programs are: `$PROVISIONER_TESTBIN_DIR`, or the cache that
//! `scripts/build-control-plane.sh` fills (building it on first use).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crate::component::Component;

/// Environment variable naming a directory that already holds the binaries; when set, the
/// build script is not run.
pub const BIN_DIR_ENV: &str = "PROVISIONER_TESTBIN_DIR";

/// A cold build takes about 15 minutes on two cores; this only guards against a hang.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Subdirectory of the binary directory with kwok's Stage files (copied by the build script).
const KWOK_STAGES_DIR: &str = "kwok-stages";

/// Failure to find or build the control-plane binaries.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// The build script could not be started.
    #[error("running {}: {source}", script.display())]
    ScriptStart {
        /// The script.
        script: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The build script failed; its own message (on stderr, above) says why.
    #[error("{} failed with {status}; its messages above say why", script.display())]
    ScriptFailed {
        /// The script.
        script: PathBuf,
        /// How it exited.
        status: ExitStatus,
    },
    /// The build script ran longer than its limit (an hour; a cold build takes minutes).
    #[error("{} did not finish within {timeout:?}", script.display())]
    ScriptTimeout {
        /// The script.
        script: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The build script succeeded but printed no directory.
    #[error("{} printed no binary directory", script.display())]
    NoOutput {
        /// The script.
        script: PathBuf,
    },
    /// A program is missing from the binary directory.
    #[error("{} is missing (set {BIN_DIR_ENV} to a complete directory, or unset it to build one)", path.display())]
    Missing {
        /// The expected path.
        path: PathBuf,
    },
    /// The kwok stage directory could not be listed.
    #[error("listing kwok stages in {}: {source}", dir.display())]
    Stages {
        /// The directory.
        dir: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
/// and kwok's stage files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Uses `$PROVISIONER_TESTBIN_DIR` if set; otherwise runs the build script, which returns
    /// the cached directory at once or builds it (minutes; progress goes to stderr).
    pub async fn locate() -> Result<Self, BinariesError> {
        match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Ok(Self::in_dir(dir)),
            _ => Self::build(&build_script()).await,
        }
    }

    /// The binaries in `dir`, as laid out by the build script.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Runs `script` (the build script or a stand-in) and uses the directory named on the
    /// last line of its stdout.
    pub async fn build(script: &Path) -> Result<Self, BinariesError> {
        let child = tokio::process::Command::new("bash")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Progress and errors go straight to the person (or CI log) watching.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BinariesError::ScriptStart {
                script: script.to_owned(),
                source,
            })?;
        let output = tokio::time::timeout(BUILD_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| BinariesError::ScriptTimeout {
                script: script.to_owned(),
                timeout: BUILD_TIMEOUT,
            })?
            .map_err(|source| BinariesError::ScriptStart {
                script: script.to_owned(),
                source,
            })?;
        if !output.status.success() {
            return Err(BinariesError::ScriptFailed {
                script: script.to_owned(),
                status: output.status,
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = last_nonempty_line(&stdout).ok_or_else(|| BinariesError::NoOutput {
            script: script.to_owned(),
        })?;
        Ok(Self::in_dir(dir))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a component's program; an error if it is not there.
    pub fn program(&self, component: Component) -> Result<PathBuf, BinariesError> {
        let path = self.dir.join(component.program());
        if path.is_file() {
            Ok(path)
        } else {
            Err(BinariesError::Missing { path })
        }
    }

    /// kwok's Stage files, sorted by name.
    pub fn kwok_stages(&self) -> Result<Vec<PathBuf>, BinariesError> {
        let dir = self.dir.join(KWOK_STAGES_DIR);
        let entries = std::fs::read_dir(&dir).map_err(|source| BinariesError::Stages {
            dir: dir.clone(),
            source,
        })?;
        let mut stages = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| BinariesError::Stages {
                    dir: dir.clone(),
                    source,
                })?
                .path();
            if path.extension().is_some_and(|ext| ext == "yaml") {
                stages.push(path);
            }
        }
        stages.sort();
        if stages.is_empty() {
            return Err(BinariesError::Missing {
                path: dir.join("*.yaml"),
            });
        }
        Ok(stages)
    }
}

/// `scripts/build-control-plane.sh` of this workspace.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("build-control-plane.sh")
}

fn last_nonempty_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_the_last_line_printed() {
        assert_eq!(
            last_nonempty_line("noise\n/cache/bin/key\n\n"),
            Some("/cache/bin/key")
        );
        assert_eq!(last_nonempty_line("\n \n"), None);
    }

    #[test]
    fn the_build_script_is_in_the_workspace() {
        assert!(build_script().is_file(), "{}", build_script().display());
    }

    #[tokio::test]
    async fn a_script_that_prints_a_directory_locates_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-build.sh");
        std::fs::write(&script, "echo noise\necho /some/bin\n").unwrap();
        let binaries = Binaries::build(&script).await.unwrap();
        assert_eq!(binaries.dir(), Path::new("/some/bin"));
    }

    #[tokio::test]
    async fn a_failing_script_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-build.sh");
        std::fs::write(&script, "echo /some/bin\nexit 1\n").unwrap();
        let err = Binaries::build(&script).await.unwrap_err();
        assert!(matches!(err, BinariesError::ScriptFailed { .. }), "{err}");
    }

    #[test]
    fn missing_programs_and_stages_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let binaries = Binaries::in_dir(dir.path());
        let err = binaries.program(Component::Etcd).unwrap_err();
        assert!(err.to_string().contains("etcd is missing"), "{err}");
        std::fs::create_dir(dir.path().join(KWOK_STAGES_DIR)).unwrap();
        std::fs::write(dir.path().join(KWOK_STAGES_DIR).join("b.yaml"), "").unwrap();
        std::fs::write(dir.path().join(KWOK_STAGES_DIR).join("a.yaml"), "").unwrap();
        std::fs::write(dir.path().join(KWOK_STAGES_DIR).join("notes.txt"), "").unwrap();
        let stages = binaries.kwok_stages().unwrap();
        let names: Vec<_> = stages.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.yaml", "b.yaml"]);
    }
}

//! Re-reading `config.json` when it changes.
//!
//! A thin I/O layer around the pure [`ProvisionerConfig::parse`]: [`ConfigReloader`] polls
//! the file, and publishes each new valid configuration on a [`watch`] channel. An invalid
//! new file never replaces the last good configuration; the poll reports why
//! ([`ReloadOutcome::Rejected`]) and [`ReloadStatus`] keeps the reason until a valid file
//! appears. The first load must succeed.
//!
//! Change detection: each poll looks at the file's modification time, size and inode (a
//! ConfigMap update swaps in a new file, so its inode changes), and reads the file only
//! when they changed, when the modification time is too recent to trust (a write within
//! the filesystem's timestamp granularity leaves it unchanged), or every
//! [`FULL_READ_EVERY`] polls regardless. A read file is applied only when its content hash
//! differs from the last one seen, so touching the file changes nothing and an invalid file
//! is reported once, not on every poll. Every read runs under a timeout.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{ConfigError, ConfigWarning, ProvisionerConfig};

/// Polls after which the file is read even if its metadata did not change.
pub const FULL_READ_EVERY: u32 = 10;

/// A modification time this close to the time of the last read cannot prove the file
/// unchanged since then.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Why a configuration file could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading did not finish in time.
    #[error("reading {path} did not finish within {after:?}")]
    Timeout {
        /// The config file.
        path: PathBuf,
        /// The deadline.
        after: Duration,
    },
    /// The content is not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotUtf8 {
        /// The config file.
        path: PathBuf,
    },
    /// The content is not a valid configuration.
    #[error("{path}: {source}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Why it is invalid.
        source: ConfigError,
    },
}

/// What one poll did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// Nothing new.
    Unchanged,
    /// A new configuration is in effect; it was accepted with these warnings.
    Applied {
        /// Warnings of the new configuration.
        warnings: Vec<ConfigWarning>,
    },
    /// The file changed but cannot be used; the last good configuration stays in effect.
    Rejected(ReloadError),
}

/// The reloader's state, for health reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// How many configurations have been applied, the first load included.
    pub generation: u64,
    /// Why the latest change was rejected, until a valid file is applied.
    pub last_error: Option<String>,
}

/// What was seen at the last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: (u64, u64),
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: (meta.dev(), meta.ino()),
        }
    }
}

/// Whether a file whose metadata is `now` must be read, given what was seen at the last
/// read (`None` if never) and when that read happened.
fn must_read(last: Option<(FileStamp, SystemTime)>, now: FileStamp, polls_since_read: u32) -> bool {
    let Some((stamp, read_at)) = last else {
        return true;
    };
    if stamp != now || polls_since_read >= FULL_READ_EVERY {
        return true;
    }
    // Racily clean (as git calls it): modified so close to the read that a later write in
    // the same timestamp tick would not show.
    match now.modified {
        Some(modified) => read_at
            .duration_since(modified)
            .map_or(true, |age| age < RACY_WINDOW),
        None => true,
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Keeps the configuration from one `config.json` up to date.
#[derive(Debug)]
pub struct ConfigReloader {
    path: PathBuf,
    read_timeout: Duration,
    config: watch::Sender<Arc<ProvisionerConfig>>,
    status: watch::Sender<ReloadStatus>,
    last_read: Option<(FileStamp, SystemTime)>,
    polls_since_read: u32,
    last_hash: u64,
}

impl ConfigReloader {
    /// Loads `path`, which must hold a valid configuration. Each read of the file must
    /// finish within `read_timeout`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), backend_hostpath::reload::ReloadError> {
    /// use std::time::Duration;
    /// use backend_hostpath::reload::ConfigReloader;
    ///
    /// let reloader = ConfigReloader::load("/etc/config/config.json", Duration::from_secs(5)).await?;
    /// let config = reloader.subscribe();
    /// tokio::spawn(reloader.run(Duration::from_secs(10), std::future::pending::<()>()));
    /// println!("{} warnings", config.borrow().warnings().len());
    /// # Ok(()) }
    /// ```
    pub async fn load(path: impl AsRef<Path>, read_timeout: Duration) -> Result<Self, ReloadError> {
        let path = path.as_ref().to_owned();
        let (stamp, bytes) = read_file(&path, read_timeout).await?;
        let config = parse(&path, &bytes)?;
        Ok(Self {
            last_read: Some((stamp, SystemTime::now())),
            polls_since_read: 0,
            last_hash: content_hash(&bytes),
            config: watch::Sender::new(Arc::new(config)),
            status: watch::Sender::new(ReloadStatus {
                generation: 1,
                last_error: None,
            }),
            path,
            read_timeout,
        })
    }

    /// A receiver that always holds the configuration in effect.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ProvisionerConfig>> {
        self.config.subscribe()
    }

    /// A receiver of the reloader's status.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// The configuration in effect.
    pub fn current(&self) -> Arc<ProvisionerConfig> {
        Arc::clone(&self.config.borrow())
    }

    /// Checks the file once and applies a valid change.
    pub async fn poll(&mut self) -> ReloadOutcome {
        let stamp =
            match tokio::time::timeout(self.read_timeout, tokio::fs::metadata(&self.path)).await {
                Ok(Ok(meta)) => FileStamp::of(&meta),
                Ok(Err(source)) => {
                    return self.reject(ReloadError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
                Err(_) => return self.reject(self.timeout()),
            };
        if !must_read(self.last_read, stamp, self.polls_since_read) {
            self.polls_since_read += 1;
            return ReloadOutcome::Unchanged;
        }
        let read_at = SystemTime::now();
        let (stamp, bytes) = match read_file(&self.path, self.read_timeout).await {
            Ok(read) => read,
            Err(error) => return self.reject(error),
        };
        self.last_read = Some((stamp, read_at));
        self.polls_since_read = 0;
        let hash = content_hash(&bytes);
        if hash == self.last_hash {
            return ReloadOutcome::Unchanged;
        }
        self.last_hash = hash;
        match parse(&self.path, &bytes) {
            Ok(config) => {
                let warnings = config.warnings().to_vec();
                self.config.send_replace(Arc::new(config));
                self.status.send_modify(|status| {
                    status.generation += 1;
                    status.last_error = None;
                });
                ReloadOutcome::Applied { warnings }
            }
            Err(error) => self.reject(error),
        }
    }

    /// Polls every `interval` until `shutdown` completes, logging what happens.
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            match self.poll().await {
                ReloadOutcome::Unchanged => {}
                ReloadOutcome::Applied { warnings } => {
                    tracing::info!(path = %self.path.display(), "applied the new configuration");
                    for warning in warnings {
                        tracing::warn!(path = %self.path.display(), "{warning}");
                    }
                }
                ReloadOutcome::Rejected(error) => {
                    tracing::error!(
                        path = %self.path.display(),
                        "keeping the last good configuration: {error}"
                    );
                }
            }
        }
    }

    fn timeout(&self) -> ReloadError {
        ReloadError::Timeout {
            path: self.path.clone(),
            after: self.read_timeout,
        }
    }

    fn reject(&mut self, error: ReloadError) -> ReloadOutcome {
        let message = error.to_string();
        self.status
            .send_modify(|status| status.last_error = Some(message));
        ReloadOutcome::Rejected(error)
    }
}

async fn read_file(
    path: &Path,
    read_timeout: Duration,
) -> Result<(FileStamp, Vec<u8>), ReloadError> {
    let read = async {
        // Metadata first: if the file changes in between, the next poll sees a new stamp.
        let meta = tokio::fs::metadata(path).await?;
        let bytes = tokio::fs::read(path).await?;
        Ok::<_, std::io::Error>((FileStamp::of(&meta), bytes))
    };
    match tokio::time::timeout(read_timeout, read).await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(source)) => Err(ReloadError::Read {
            path: path.to_owned(),
            source,
        }),
        Err(_) => Err(ReloadError::Timeout {
            path: path.to_owned(),
            after: read_timeout,
        }),
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<ProvisionerConfig, ReloadError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ReloadError::NotUtf8 {
        path: path.to_owned(),
    })?;
    ProvisionerConfig::parse(text).map_err(|source| ReloadError::Invalid {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClassStorage;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn node_config(path: &str) -> String {
        format!(
            r#"{{"nodePathMap":[{{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["{path}"]}}]}}"#
        )
    }

    fn default_path(config: &ProvisionerConfig) -> String {
        match config.storage_for_class("any").unwrap() {
            ClassStorage::NodeLocal(map) => map.paths_for("n").unwrap()[0].to_string(),
            ClassStorage::SharedFileSystem(path) => path.to_string(),
        }
    }

    #[test]
    fn stamps_decide_when_to_read() {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stamp = FileStamp {
            modified: Some(old),
            len: 10,
            inode: (1, 2),
        };
        let read_at = old + Duration::from_secs(60);
        assert!(must_read(None, stamp, 0));
        assert!(!must_read(Some((stamp, read_at)), stamp, 0));
        assert!(must_read(Some((stamp, read_at)), stamp, FULL_READ_EVERY));
        assert!(must_read(
            Some((stamp, read_at)),
            FileStamp { len: 11, ..stamp },
            0
        ));
        assert!(must_read(
            Some((stamp, read_at)),
            FileStamp {
                inode: (1, 3),
                ..stamp
            },
            0
        ));
        // Read within the racy window after the last write: cannot trust the stamp.
        let racy_read = old + Duration::from_millis(500);
        assert!(must_read(Some((stamp, racy_read)), stamp, 0));
        assert!(must_read(
            Some((
                FileStamp {
                    modified: None,
                    ..stamp
                },
                read_at
            )),
            FileStamp {
                modified: None,
                ..stamp
            },
            0
        ));
    }

    #[tokio::test]
    async fn applies_valid_changes_and_keeps_the_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, node_config("/one")).unwrap();
        let mut reloader = ConfigReloader::load(&file, TIMEOUT).await.unwrap();
        let receiver = reloader.subscribe();
        let status = reloader.status();
        assert!(matches!(reloader.poll().await, ReloadOutcome::Unchanged));

        std::fs::write(&file, node_config("/two")).unwrap();
        assert!(matches!(
            reloader.poll().await,
            ReloadOutcome::Applied { .. }
        ));
        assert_eq!(default_path(&receiver.borrow()), "/two");
        assert_eq!(status.borrow().generation, 2);

        std::fs::write(
            &file,
            r#"{"nodePathMap":[{"node":"n","paths":["relative"]}]}"#,
        )
        .unwrap();
        match reloader.poll().await {
            ReloadOutcome::Rejected(ReloadError::Invalid { source, .. }) => {
                assert!(matches!(source, ConfigError::InvalidPath { .. }));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(default_path(&reloader.current()), "/two");
        assert!(
            status
                .borrow()
                .last_error
                .as_deref()
                .unwrap()
                .contains("not absolute")
        );
        // The same bad content is reported once.
        assert!(matches!(reloader.poll().await, ReloadOutcome::Unchanged));

        std::fs::write(&file, node_config("/three")).unwrap();
        assert!(matches!(
            reloader.poll().await,
            ReloadOutcome::Applied { .. }
        ));
        assert_eq!(default_path(&receiver.borrow()), "/three");
        assert_eq!(
            *status.borrow(),
            ReloadStatus {
                generation: 3,
                last_error: None
            }
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_reported_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, node_config("/one")).unwrap();
        let mut reloader = ConfigReloader::load(&file, TIMEOUT).await.unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            reloader.poll().await,
            ReloadOutcome::Rejected(ReloadError::Read { .. })
        ));
        assert_eq!(default_path(&reloader.current()), "/one");
        std::fs::write(&file, node_config("/one")).unwrap();
        assert!(
            matches!(reloader.poll().await, ReloadOutcome::Unchanged),
            "same content as before"
        );
    }

    #[tokio::test]
    async fn the_first_load_must_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        assert!(matches!(
            ConfigReloader::load(&file, TIMEOUT).await,
            Err(ReloadError::Read { .. })
        ));
        std::fs::write(&file, "{").unwrap();
        assert!(matches!(
            ConfigReloader::load(&file, TIMEOUT).await,
            Err(ReloadError::Invalid { .. })
        ));
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            ConfigReloader::load(&file, TIMEOUT).await,
            Err(ReloadError::NotUtf8 { .. })
        ));
    }

    #[tokio::test]
    async fn follows_a_configmap_style_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("..2024_v1");
        let v2 = dir.path().join("..2024_v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("config.json"), node_config("/one")).unwrap();
        std::fs::write(v2.join("config.json"), node_config("/two")).unwrap();
        std::os::unix::fs::symlink("..2024_v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.json", dir.path().join("config.json")).unwrap();
        let mut reloader = ConfigReloader::load(dir.path().join("config.json"), TIMEOUT)
            .await
            .unwrap();

        let swap = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink("..2024_v2", &swap).unwrap();
        std::fs::rename(&swap, dir.path().join("..data")).unwrap();
        assert!(matches!(
            reloader.poll().await,
            ReloadOutcome::Applied { .. }
        ));
        assert_eq!(default_path(&reloader.current()), "/two");
    }

    #[tokio::test]
    async fn an_edit_that_keeps_size_and_mtime_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, node_config("/aaa")).unwrap();
        let mut reloader = ConfigReloader::load(&file, TIMEOUT).await.unwrap();
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        // Same length, same inode, and the modification time put back: only the racy
        // window (the file was written just before it was read) or the periodic full read
        // can notice.
        std::fs::write(&file, node_config("/bbb")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let mut outcome = reloader.poll().await;
        for _ in 0..FULL_READ_EVERY {
            if matches!(outcome, ReloadOutcome::Applied { .. }) {
                break;
            }
            outcome = reloader.poll().await;
        }
        assert!(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            "{outcome:?}"
        );
        assert_eq!(default_path(&reloader.current()), "/bbb");
    }

    #[tokio::test]
    async fn run_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, node_config("/one")).unwrap();
        let reloader = ConfigReloader::load(&file, TIMEOUT).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reloader.run(Duration::from_secs(30), async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

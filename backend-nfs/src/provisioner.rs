//! [`NfsProvisioner`]: one directory per claim on an NFS export.
//!
//! **Provision** renders the claim's directory ([`crate::path_pattern`], or the default
//! `<namespace>-<claim>-<pv name>`), refuses it if another volume already uses it (or a
//! directory inside or around it) unless the class allows sharing ([`crate::conflict`]),
//! creates it with the class's exact mode and owner, and returns an NFS volume
//! `{server, path: share/<directory>}` that records the directory, the share and the delete
//! policy in annotations ([`crate::record`]).
//!
//! **Delete** reads that record, never the StorageClass as it is now and never a string
//! replacement of `NFS_PATH`, and then retains, removes or archives the directory (to
//! `archived-<name>` beside it, numbered when that exists). A directory another volume
//! still uses is left in place.
//!
//! **An asset without a PersistentVolume** (the claim was deleted mid-provisioning, or the
//! class changed between two failed attempts) has no record on a volume: its directory is
//! rendered again from the recorded class parameters and the claim object the controller
//! hands over (so patterns over claim labels and annotations work), then retained, removed
//! or archived per the recorded delete policy, like a Released volume's. The claim's labels
//! are those of now: a label edited after the directory was made leads to the directory the
//! edited label renders.
//!
//! **Volumes made by nfs-subdir-external-provisioner** (or nfs-client-provisioner) carry no
//! record. Their directory is computed as nfs-subdir v4.0.3 did — `spec.nfs.path` relative
//! to `NFS_PATH` — but by whole path segments (`/sharedfoo/x` is not below `/shared`),
//! refusing paths that are not strictly below the share, and only when the volume's server
//! is this provisioner's. nfs-subdir took the delete policy from the live StorageClass;
//! the controller hands none for such volumes, so [`NfsConfig::legacy_delete_policy`]
//! decides (archive by default: the data is kept under `archived-<name>`).
//!
//! Every export call has a timeout ([`crate::export`]); a hung server fails the one
//! operation, never the provisioner, and classes on other exports keep working.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};
use provisioner_core::volume_path::VolumePath;

use crate::conflict::{ExportDirectory, Overlap, find_overlap};
use crate::export::{
    DEFAULT_OPERATION_TIMEOUT, DirectConfig, DirectExport, DirectoryAttributes, Export,
    ExportError, FsStats, MountedExport,
};
use crate::naming::{NamingError, archive_candidates, default_directory, legacy_directory};
use crate::parameters::{self, DeletePolicy, ExportLocation, NfsParameters, normalize_share};
use crate::path_pattern::{PathPatternError, PatternInput};
use crate::record::{RecordError, VolumeRecord};

/// The mount point nfs-subdir-external-provisioner requires.
pub const DEFAULT_MOUNT_ROOT: &str = "/persistentvolumes";

/// How the provisioner reaches its export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The export is mounted at `root` (nfs-subdir's contract: `/persistentvolumes`).
    Mounted {
        /// The mount point.
        root: PathBuf,
    },
    /// A userspace NFSv3 client talks to the servers; classes may name their own
    /// `server` and `share`.
    Direct(DirectOptions),
}

/// Connection settings of direct access. They apply to every server it talks to: the
/// provisioner's own and those StorageClasses name (explicit ports are meant for test
/// servers; real servers are found through their portmapper).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectOptions {
    /// NFS port; asked from the portmapper when `None`.
    pub nfs_port: Option<u16>,
    /// MOUNT port; asked from the portmapper when `None`.
    pub mount_port: Option<u16>,
    /// The portmapper's port.
    pub portmapper_port: u16,
    /// Connect from a privileged source port (`secure` exports require it).
    pub privileged_source_port: bool,
    /// User id presented to servers.
    pub uid: u32,
    /// Group id presented to servers.
    pub gid: u32,
}

impl Default for DirectOptions {
    fn default() -> Self {
        Self {
            nfs_port: None,
            mount_port: None,
            portmapper_port: 111,
            privileged_source_port: true,
            uid: 0,
            gid: 0,
        }
    }
}

impl DirectOptions {
    /// Uses these NFS and MOUNT ports instead of asking the portmapper.
    #[must_use]
    pub fn with_ports(mut self, nfs_port: u16, mount_port: u16) -> Self {
        self.nfs_port = Some(nfs_port);
        self.mount_port = Some(mount_port);
        self
    }

    /// Connects from an unprivileged source port (`false`) or a privileged one (`true`).
    #[must_use]
    pub fn with_privileged_source_port(mut self, privileged: bool) -> Self {
        self.privileged_source_port = privileged;
        self
    }

    /// Asks the portmapper on this port instead of 111.
    #[must_use]
    pub fn with_portmapper_port(mut self, port: u16) -> Self {
        self.portmapper_port = port;
        self
    }

    /// Presents these credentials to servers instead of root's.
    #[must_use]
    pub fn with_credentials(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    fn config_for(&self, server: &str, share: &str, timeout: Duration) -> DirectConfig {
        let mut config = DirectConfig::new(server, share)
            .with_timeout(timeout)
            .with_privileged_source_port(self.privileged_source_port)
            .with_credentials(self.uid, self.gid);
        config.nfs_port = self.nfs_port;
        config.mount_port = self.mount_port;
        config.portmapper_port = self.portmapper_port;
        config
    }
}

/// Settings of an [`NfsProvisioner`] (the binary fills them from `NFS_SERVER`,
/// `NFS_PATH` and flags).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NfsConfig {
    /// The NFS server written into PersistentVolumes (`NFS_SERVER`).
    pub server: String,
    /// The exported path on that server (`NFS_PATH`).
    pub share: String,
    /// How the export is reached.
    pub access: Access,
    /// Time limit of each export operation.
    pub operation_timeout: Duration,
    /// Delete policy for volumes without a record (made by the Go provisioners).
    pub legacy_delete_policy: DeletePolicy,
}

impl NfsConfig {
    /// Access through the export mounted at `root`.
    pub fn mounted(
        server: impl Into<String>,
        share: impl Into<String>,
        root: impl Into<PathBuf>,
    ) -> Self {
        Self::new(server, share, Access::Mounted { root: root.into() })
    }

    /// Direct access with a userspace NFS client.
    pub fn direct(
        server: impl Into<String>,
        share: impl Into<String>,
        options: DirectOptions,
    ) -> Self {
        Self::new(server, share, Access::Direct(options))
    }

    fn new(server: impl Into<String>, share: impl Into<String>, access: Access) -> Self {
        Self {
            server: server.into(),
            share: share.into(),
            access,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            legacy_delete_policy: DeletePolicy::Archive,
        }
    }

    /// Sets the time limit of each export operation.
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets the delete policy for volumes without a record.
    #[must_use]
    pub fn with_legacy_delete_policy(mut self, policy: DeletePolicy) -> Self {
        self.legacy_delete_policy = policy;
        self
    }
}

/// Every PersistentVolume in the cluster (typically a reflector store's snapshot), so the
/// provisioner can refuse directories that other volumes use.
pub trait VolumeLister: Send + Sync + 'static {
    /// The current PersistentVolumes.
    fn volumes(&self) -> Vec<Arc<PersistentVolume>>;
}

impl<F> VolumeLister for F
where
    F: Fn() -> Vec<Arc<PersistentVolume>> + Send + Sync + 'static,
{
    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self()
    }
}

/// Why the NFS backend failed.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// `NFS_PATH` (or a configured share) is not an absolute path.
    #[error(
        "invalid export path {share:?}: expected an absolute path without '.' or '..' segments"
    )]
    InvalidShare {
        /// The rejected path.
        share: String,
    },
    /// The claim's directory cannot be rendered safely.
    #[error(transparent)]
    Directory(#[from] PathPatternError),
    /// A derived directory name is invalid.
    #[error(transparent)]
    Naming(#[from] NamingError),
    /// Another volume uses the directory (or one inside or around it).
    #[error(
        "claim {claim}: directory {directory:?} on {export} overlaps directory {existing:?} \
         of volume {volume}; volumes never share a directory unless the StorageClass sets \
         allowSharedDirectory: \"true\""
    )]
    SharedDirectory {
        /// The claim, `namespace/name`.
        claim: String,
        /// The directory the claim would get.
        directory: String,
        /// `server:share`.
        export: String,
        /// The volume already using it.
        volume: String,
        /// That volume's directory.
        existing: String,
    },
    /// The export failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The volume's record cannot be used.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The volume lives on an export this provisioner does not serve.
    #[error(
        "volume {volume} is on {server}:{share}, but this provisioner serves {served} and \
         reaches other exports only with direct access; not deleting anything"
    )]
    ForeignExport {
        /// The volume's name.
        volume: String,
        /// Its server.
        server: String,
        /// Its export path.
        share: String,
        /// `server:share` this provisioner serves.
        served: String,
    },
    /// Every archive name is taken.
    #[error("cannot archive {directory:?}: {attempts} archive names are all taken")]
    ArchiveExhausted {
        /// The directory.
        directory: String,
        /// How many names were tried.
        attempts: usize,
    },
}

impl NfsError {
    fn into_provision_error(self) -> ProvisionError {
        match self {
            // Nothing changes until the claim or the class does.
            Self::Directory(_) | Self::Naming(_) | Self::SharedDirectory { .. } => {
                ProvisionError::Infeasible(Box::new(self))
            }
            // A stuck mkdir may still complete: the retry finds and finishes it.
            Self::Export(ExportError::TimedOut { .. }) => {
                ProvisionError::InBackground(Box::new(self))
            }
            Self::Export(ExportError::Unreachable { .. } | ExportError::Refused { .. }) => {
                ProvisionError::NoChange(Box::new(self))
            }
            other => ProvisionError::Final(Box::new(other)),
        }
    }
}

/// A directory claimed by a volume that may not have a PersistentVolume yet.
#[derive(Debug, Clone)]
struct Reservation {
    volume_name: String,
    server: String,
    share: String,
    directory: VolumePath,
}

/// The NFS subdirectory provisioner. See the [module documentation](self).
///
/// ```no_run
/// use backend_nfs::{NfsConfig, NfsProvisioner};
///
/// let config = NfsConfig::mounted("10.0.0.5", "/shared", "/persistentvolumes");
/// let provisioner = NfsProvisioner::new(config)?;
/// // hand `provisioner` to the provisioning controller
/// # Ok::<(), backend_nfs::provisioner::NfsError>(())
/// ```
pub struct NfsProvisioner {
    config: NfsConfig,
    default_export: Arc<dyn Export>,
    direct_exports: Mutex<HashMap<ExportLocation, Arc<dyn Export>>>,
    volumes: Option<Arc<dyn VolumeLister>>,
    reservations: Mutex<Vec<Reservation>>,
}

impl std::fmt::Debug for NfsProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsProvisioner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NfsProvisioner {
    /// A provisioner for `config`; direct access connects lazily.
    pub fn new(mut config: NfsConfig) -> Result<Self, NfsError> {
        config.share = normalize_share(&config.share).ok_or_else(|| NfsError::InvalidShare {
            share: config.share.clone(),
        })?;
        let default_export: Arc<dyn Export> = match &config.access {
            Access::Mounted { root } => {
                Arc::new(MountedExport::new(root.clone(), config.operation_timeout))
            }
            Access::Direct(options) => Arc::new(DirectExport::new(options.config_for(
                &config.server,
                &config.share,
                config.operation_timeout,
            ))),
        };
        Ok(Self {
            config,
            default_export,
            direct_exports: Mutex::new(HashMap::new()),
            volumes: None,
            reservations: Mutex::new(Vec::new()),
        })
    }

    /// Lets the provisioner see every PersistentVolume, so a directory another volume uses
    /// is refused (and never removed while another volume uses it). Without it, only the
    /// volumes this process provisioned are known.
    #[must_use]
    pub fn with_volume_lister(mut self, lister: impl VolumeLister) -> Self {
        self.volumes = Some(Arc::new(lister));
        self
    }

    /// The settings.
    pub fn config(&self) -> &NfsConfig {
        &self.config
    }

    /// Probes every export in use (the default one and those of classes with their own
    /// server) with an FSSTAT, for readiness checks: `(location, result)` per export.
    pub async fn check_exports(&self) -> Vec<(String, Result<FsStats, ExportError>)> {
        let mut exports = vec![Arc::clone(&self.default_export)];
        exports.extend(lock(&self.direct_exports).values().cloned());
        let mut results = Vec::with_capacity(exports.len());
        for export in exports {
            results.push((export.location().to_owned(), export.fs_stats().await));
        }
        results
    }

    fn is_default(&self, server: &str, share: &str) -> bool {
        server == self.config.server && share == self.config.share
    }

    /// The export at `server:share`.
    fn export_at(
        &self,
        volume: &str,
        server: &str,
        share: &str,
    ) -> Result<Arc<dyn Export>, NfsError> {
        if self.is_default(server, share) {
            return Ok(Arc::clone(&self.default_export));
        }
        let Access::Direct(options) = &self.config.access else {
            return Err(NfsError::ForeignExport {
                volume: volume.to_owned(),
                server: server.to_owned(),
                share: share.to_owned(),
                served: format!("{}:{}", self.config.server, self.config.share),
            });
        };
        let location = ExportLocation {
            server: server.to_owned(),
            share: share.to_owned(),
        };
        let mut exports = lock(&self.direct_exports);
        let export = exports.entry(location).or_insert_with(|| {
            Arc::new(DirectExport::new(options.config_for(
                server,
                share,
                self.config.operation_timeout,
            )))
        });
        Ok(Arc::clone(export))
    }

    /// The server and share a class's volumes go to.
    fn location_of<'p>(&'p self, parameters: &'p NfsParameters) -> (&'p str, &'p str) {
        match &parameters.export {
            Some(export) => (&export.server, &export.share),
            None => (&self.config.server, &self.config.share),
        }
    }

    /// Another volume (a PersistentVolume or an in-flight reservation) whose directory
    /// overlaps `target`.
    fn overlap(
        &self,
        target: &ExportDirectory<'_>,
        own_volume_name: &str,
        reservations: &[Reservation],
    ) -> Option<Overlap> {
        if let Some(lister) = &self.volumes {
            let volumes = lister.volumes();
            if let Some(overlap) =
                find_overlap(target, own_volume_name, volumes.iter().map(Arc::as_ref))
            {
                return Some(overlap);
            }
        }
        reservations.iter().find_map(|reservation| {
            let same_export =
                reservation.server == target.server && reservation.share == target.share;
            (same_export
                && reservation.volume_name != own_volume_name
                && reservation.directory.overlaps(target.directory))
            .then(|| Overlap {
                volume_name: reservation.volume_name.clone(),
                directory: reservation.directory.clone(),
            })
        })
    }

    /// Checks that no other volume uses `directory` and reserves it for `volume_name`, in
    /// one step so two claims provisioned at once cannot both pass.
    fn reserve(
        &self,
        claim: &str,
        volume_name: &str,
        server: &str,
        share: &str,
        directory: &VolumePath,
        shared: bool,
    ) -> Result<(), NfsError> {
        let mut reservations = lock(&self.reservations);
        let target = ExportDirectory {
            server,
            share,
            directory,
        };
        if !shared && let Some(overlap) = self.overlap(&target, volume_name, &reservations) {
            return Err(NfsError::SharedDirectory {
                claim: claim.to_owned(),
                directory: directory.to_string(),
                export: format!("{server}:{share}"),
                volume: overlap.volume_name,
                existing: overlap.directory.to_string(),
            });
        }
        if !reservations.iter().any(|r| r.volume_name == volume_name) {
            reservations.push(Reservation {
                volume_name: volume_name.to_owned(),
                server: server.to_owned(),
                share: share.to_owned(),
                directory: directory.clone(),
            });
        }
        Ok(())
    }

    fn release(&self, volume_name: &str) {
        lock(&self.reservations).retain(|reservation| reservation.volume_name != volume_name);
    }

    async fn provision_directory(
        &self,
        request: &ProvisionRequest<NfsParameters>,
    ) -> Result<ProvisionedVolume, NfsError> {
        let parameters = &request.parameters;
        let (server, share) = self.location_of(parameters);
        let empty = BTreeMap::new();
        let input = PatternInput {
            namespace: request.claim_namespace(),
            name: request.claim_name(),
            labels: request.claim.metadata.labels.as_ref().unwrap_or(&empty),
            annotations: request
                .claim
                .metadata
                .annotations
                .as_ref()
                .unwrap_or(&empty),
            volume_name: &request.volume_name,
        };
        let directory = match &parameters.path_pattern {
            Some(pattern) => pattern.render(&input)?,
            None => default_directory(input.namespace, input.name, input.volume_name)?,
        };
        let claim = format!("{}/{}", input.namespace, input.name);
        self.reserve(
            &claim,
            &request.volume_name,
            server,
            share,
            &directory,
            parameters.allow_shared_directory,
        )?;

        let export = self.export_at(&request.volume_name, server, share)?;
        let attributes = DirectoryAttributes {
            mode: parameters.mode,
            uid: parameters.uid,
            gid: parameters.gid,
        };
        let creation = export.create_dir_all(&directory, attributes).await?;
        tracing::info!(volume = %request.volume_name, %claim, export = export.location(), %directory, ?creation, "volume directory ready");

        let record = VolumeRecord {
            server: server.to_owned(),
            share: share.to_owned(),
            directory,
            delete_policy: parameters.delete_policy,
        };
        let mut volume = ProvisionedVolume::nfs(record.nfs_source());
        volume.annotations.extend(record.annotations());
        Ok(volume)
    }

    /// Where a saved volume's directory is and what to do with it.
    fn target_of(
        &self,
        volume: &PersistentVolume,
        parameters: Option<&NfsParameters>,
    ) -> Result<VolumeRecord, NfsError> {
        if let Some(record) = VolumeRecord::from_volume(volume)? {
            return Ok(record);
        }
        // Made by nfs-subdir (or by hand): compute the directory as nfs-subdir did.
        let name = volume.metadata.name.clone().unwrap_or_default();
        let source = volume
            .spec
            .as_ref()
            .and_then(|spec| spec.nfs.as_ref())
            .ok_or_else(|| RecordError::NoNfsSource {
                volume: name.clone(),
            })?;
        if source.server != self.config.server {
            return Err(NfsError::ForeignExport {
                volume: name,
                server: source.server.clone(),
                share: source.path.clone(),
                served: format!("{}:{}", self.config.server, self.config.share),
            });
        }
        Ok(VolumeRecord {
            server: self.config.server.clone(),
            share: self.config.share.clone(),
            directory: legacy_directory(&source.path, &self.config.share)?,
            delete_policy: parameters.map_or(self.config.legacy_delete_policy, |p| p.delete_policy),
        })
    }

    /// Whether another volume still uses `record`'s directory (then it is left alone).
    fn still_in_use(&self, record: &VolumeRecord, volume_name: &str) -> Option<Overlap> {
        let target = ExportDirectory {
            server: &record.server,
            share: &record.share,
            directory: &record.directory,
        };
        let reservations = lock(&self.reservations);
        self.overlap(&target, volume_name, &reservations)
    }

    async fn delete_volume(
        &self,
        volume: &PersistentVolume,
        request: &DeleteRequest<NfsParameters>,
    ) -> Result<(), NfsError> {
        let record = self.target_of(volume, request.parameters.as_ref())?;
        let name = &request.volume_name;
        if record.delete_policy == DeletePolicy::Retain {
            tracing::info!(volume = %name, directory = %record.directory, "onDelete is retain: directory kept");
            return Ok(());
        }
        if let Some(overlap) = self.still_in_use(&record, name) {
            tracing::warn!(volume = %name, directory = %record.directory, other = %overlap.volume_name,
                "directory still used by another volume: left in place");
            return Ok(());
        }
        let export = self.export_at(name, &record.server, &record.share)?;
        match record.delete_policy {
            DeletePolicy::Delete => {
                let removal = export.remove_all(&record.directory).await?;
                tracing::info!(volume = %name, directory = %record.directory, ?removal, "volume directory deleted");
            }
            DeletePolicy::Archive => archive(export.as_ref(), name, &record.directory).await?,
            DeletePolicy::Retain => {}
        }
        Ok(())
    }

    /// Cleans up the directory of a volume whose PersistentVolume was never saved, per the
    /// recorded delete policy (see the [module documentation](self)).
    async fn delete_unfinished(
        &self,
        request: &DeleteRequest<NfsParameters>,
    ) -> Result<(), NfsError> {
        let name = &request.volume_name;
        let Some(parameters) = &request.parameters else {
            tracing::warn!(volume = %name, "no recorded parameters for an unfinished volume: nothing removed");
            return Ok(());
        };
        if parameters.delete_policy == DeletePolicy::Retain {
            return Ok(());
        }
        let Some(directory) = unfinished_directory(request, parameters) else {
            return Ok(());
        };
        let (server, share) = self.location_of(parameters);
        let record = VolumeRecord {
            server: server.to_owned(),
            share: share.to_owned(),
            directory,
            delete_policy: parameters.delete_policy,
        };
        if let Some(overlap) = self.still_in_use(&record, name) {
            tracing::warn!(volume = %name, directory = %record.directory, other = %overlap.volume_name,
                "directory of an unfinished volume is used by another volume: left in place");
            return Ok(());
        }
        let export = self.export_at(name, server, share)?;
        match record.delete_policy {
            DeletePolicy::Delete => {
                let removal = export.remove_all(&record.directory).await?;
                tracing::info!(volume = %name, directory = %record.directory, ?removal, "directory of an unfinished volume deleted");
            }
            DeletePolicy::Archive => archive(export.as_ref(), name, &record.directory).await?,
            DeletePolicy::Retain => {}
        }
        Ok(())
    }
}

/// The directory provisioning rendered for a volume without a PersistentVolume, rendered
/// again from the claim; `None` when it cannot be: then provisioning could not render it
/// either and made nothing, or (a pattern over claim metadata without the claim object) it
/// cannot be found.
fn unfinished_directory(
    request: &DeleteRequest<NfsParameters>,
    parameters: &NfsParameters,
) -> Option<VolumePath> {
    let name = &request.volume_name;
    let claim = &request.claim;
    if let Some(pattern) = &parameters.path_pattern
        && pattern.uses_claim_metadata()
        && request.claim_object.is_none()
    {
        tracing::warn!(volume = %name, pattern = %pattern,
            "the directory of an unfinished volume depends on claim labels or annotations, and the claim was not given: nothing removed");
        return None;
    }
    let input = PatternInput {
        namespace: &claim.namespace,
        name: &claim.name,
        labels: request.claim_labels(),
        annotations: request.claim_annotations(),
        volume_name: name,
    };
    let rendered = match &parameters.path_pattern {
        Some(pattern) => pattern.render(&input).map_err(NfsError::from),
        None => default_directory(input.namespace, input.name, name).map_err(NfsError::from),
    };
    match rendered {
        Ok(directory) => Some(directory),
        Err(error) => {
            tracing::info!(volume = %name, %error, "no directory can be rendered for an unfinished volume: nothing to remove");
            None
        }
    }
}

/// Renames `directory` to the first free archive name beside it.
async fn archive(
    export: &dyn Export,
    volume: &str,
    directory: &VolumePath,
) -> Result<(), NfsError> {
    if export.status(directory).await?.is_none() {
        tracing::info!(volume, %directory, "volume directory already gone: nothing to archive");
        return Ok(());
    }
    for candidate in archive_candidates(directory) {
        match export.rename_no_replace(directory, &candidate).await {
            Ok(()) => {
                tracing::info!(volume, %directory, archive = %candidate, "volume directory archived");
                return Ok(());
            }
            Err(ExportError::AlreadyExists { .. }) => continue,
            Err(ExportError::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
    Err(NfsError::ArchiveExhausted {
        directory: directory.to_string(),
        attempts: crate::naming::MAX_ARCHIVE_ATTEMPTS,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: every critical
    // section is a single push, retain or lookup.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Provisioner for NfsProvisioner {
    type Parameters = NfsParameters;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<NfsParameters, ParameterError> {
        let parameters = NfsParameters::parse(raw)?;
        if let (Access::Mounted { root }, Some(export)) = (&self.config.access, &parameters.export)
            && !self.is_default(&export.server, &export.share)
        {
            return Err(ParameterError::invalid(
                parameters::SERVER,
                format!(
                    "{}:{} needs direct NFS access; this provisioner only reaches {}:{} through the mount at {}",
                    export.server,
                    export.share,
                    self.config.server,
                    self.config.share,
                    root.display()
                ),
            ));
        }
        Ok(parameters)
    }

    async fn provision(
        &self,
        request: ProvisionRequest<NfsParameters>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        self.provision_directory(&request)
            .await
            .map_err(NfsError::into_provision_error)
    }

    async fn delete(
        &self,
        request: DeleteRequest<NfsParameters>,
    ) -> Result<DeleteOutcome, DeleteError> {
        let result = match &request.volume {
            Some(volume) => self.delete_volume(volume, &request).await,
            None => self.delete_unfinished(&request).await,
        };
        match result {
            Ok(()) => {
                self.release(&request.volume_name);
                Ok(DeleteOutcome::Deleted)
            }
            Err(error) => Err(DeleteError::failed(error)),
        }
    }
}

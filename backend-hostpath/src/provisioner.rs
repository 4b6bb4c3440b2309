//! [`HostPathProvisioner`]: the [`Provisioner`] of one node.
//!
//! It ties the pure modules together around the filesystem layer:
//!
//! 1. **Ownership** ([`crate::ownership`]): act only on this node's claims and volumes (and
//!    on cluster-wide work when this instance holds [`ClusterDuties`]); return
//!    [`ProvisionError::Ignored`] / [`DeleteError::Ignored`] otherwise, which the controller
//!    keeps silent.
//! 2. **Checks before side effects**: the class's config entry, its annotations, the claim's
//!    `volumeType`, access modes, the rendered directory. Each failure is
//!    [`ProvisionError::Infeasible`] with a message naming the cause; nothing is created.
//! 3. **Placement** ([`crate::placement`]): measure the node's paths, pick the emptiest that
//!    fits, or return [`ProvisionError::Reschedule`] saying why.
//! 4. **Marker, then directory** ([`crate::fs`]): a retried provision reuses the directory
//!    an interrupted one chose.
//! 5. **The volume** ([`crate::volume`]): source, node affinity and the record annotations
//!    that [`Provisioner::delete`] later reads back, never the StorageClass or the config.
//!
//! # Error mapping
//!
//! | cause | provision | delete |
//! |---|---|---|
//! | another node's claim or volume | `Ignored` | `Ignored` |
//! | bad annotation, hostile `pathPattern` value, class not in config, access mode | `Infeasible` | — |
//! | node-local class, Immediate binding, no selected node | `Infeasible` (cluster-wide instance only) | — |
//! | no configured path or no room on the node | `Reschedule` (node-local), `Infeasible` (shared) | — |
//! | symlink or non-directory in the way | `Infeasible` | `Failed` |
//! | filesystem call timed out | `InBackground` | `Failed` |
//! | other filesystem error | `Final` | `Failed` |
//! | volume's node gone (cluster-wide instance) | — | `Ok(Forgotten)` without touching the data (default policy: a Warning Event on the volume says so), or `Failed` (keep policy) |
//! | volume's node unreadable from its affinity (cluster-wide instance) | — | `Failed` |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use provisioner_core::plan::claim::selected_node;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};
use provisioner_core::quantity::Quantity;
use provisioner_core::volume_path::VolumePath;
use tokio::sync::watch;

use crate::base_path::BasePath;
use crate::config::{ClassStorage, ConfigError, ProvisionerConfig};
use crate::fs::{FsError, HostFilesystem, MARKER_DIR, Removed, TimedFilesystem, VolumeFilesystem};
use crate::ownership::{
    ClaimDecision, DeleteDecision, NodeExistence, NodeGonePolicy, NodeIdentity, VolumeNode,
    claim_is_ours, decide_claim, decide_delete,
};
use crate::params::{HostPathParams, ParamError};
use crate::pattern::{PatternError, PatternInput, default_dir};
use crate::placement::{Candidate, PlacementError, Space, candidate_paths, choose_path};
use crate::volume::{
    NodeBinding, RecordError, VolumeLocation, check_node_local_access_modes, provisioned_volume,
    read_recorded, volume_node,
};

/// Why a hostPath operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    /// The config has no entry for the class.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A class annotation or the claim's `volumeType` is unusable.
    #[error(transparent)]
    Parameter(#[from] ParamError),
    /// The directory could not be rendered for this claim.
    #[error("claim {namespace}/{name}: {source}")]
    Directory {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        name: String,
        /// Why.
        source: Box<PatternError>,
    },
    /// The rendered directory would be the marker directory.
    #[error("the directory {dir} is reserved for the provisioner's markers")]
    Reserved {
        /// The refused directory.
        dir: String,
    },
    /// A node-local class with Immediate binding got a claim without a selected node.
    #[error(
        "StorageClass {class} keeps volumes on node-local disks (nodePathMap), so it needs \
         volumeBindingMode: WaitForFirstConsumer; with Immediate binding no node is chosen \
         before provisioning. Set volumeBindingMode: WaitForFirstConsumer on the class (or \
         use a sharedFileSystemPath class)"
    )]
    NeedsWaitForFirstConsumer {
        /// The class.
        class: String,
    },
    /// The claim asks for something a node-local volume cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The claim's storage request does not parse.
    #[error("the claim's storage request {request:?} is not a quantity: {reason}")]
    Request {
        /// The request.
        request: String,
        /// Why.
        reason: String,
    },
    /// No path can take the volume.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// A filesystem call failed.
    #[error(transparent)]
    Filesystem(#[from] FsError),
    /// The PersistentVolume's record cannot be read.
    #[error("volume {volume}: {source}")]
    Record {
        /// The volume.
        volume: String,
        /// Why.
        source: RecordError,
    },
    /// The volume's node is gone and the policy keeps the volume until it returns.
    #[error(
        "volume {volume} is on node {node}, which no longer exists; keeping the volume until \
         the node returns (node-gone policy: keep the volume)"
    )]
    NodeGone {
        /// The volume.
        volume: String,
        /// The node.
        node: String,
    },
}

/// Whether this instance does the work that belongs to no node: claims without a selected
/// node, shared-filesystem volumes and volumes of vanished nodes. Exactly one instance
/// should hold it at a time (the binary can tie it to a Lease). Cheap to clone; all clones
/// share the flag.
#[derive(Debug, Clone, Default)]
pub struct ClusterDuties(Arc<AtomicBool>);

impl ClusterDuties {
    /// A flag that starts as `held`.
    pub fn new(held: bool) -> Self {
        Self(Arc::new(AtomicBool::new(held)))
    }

    /// Takes or gives up the duties.
    pub fn set(&self, held: bool) {
        self.0.store(held, Ordering::SeqCst);
    }

    /// Whether the duties are held.
    pub fn held(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Tells whether a volume's node still exists (the binary answers from its Node cache).
pub trait NodeDirectory: Send + Sync + 'static {
    /// Whether the node of `node` exists.
    fn existence(&self, node: &VolumeNode) -> NodeExistence;
}

/// A [`NodeDirectory`] that knows nothing: vanished nodes are never detected.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNodeDirectory;

impl NodeDirectory for NoNodeDirectory {
    fn existence(&self, _: &VolumeNode) -> NodeExistence {
        NodeExistence::Unknown
    }
}

/// The hostPath provisioner for one node.
pub struct HostPathProvisioner<F = HostFilesystem> {
    node: NodeIdentity,
    config: watch::Receiver<Arc<ProvisionerConfig>>,
    fs: TimedFilesystem<F>,
    duties: ClusterDuties,
    nodes: Arc<dyn NodeDirectory>,
    node_gone_policy: NodeGonePolicy,
}

impl<F> std::fmt::Debug for HostPathProvisioner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPathProvisioner")
            .field("node", &self.node.name)
            .field("cluster_duties", &self.duties.held())
            .field("node_gone_policy", &self.node_gone_policy)
            .finish_non_exhaustive()
    }
}

impl<F: VolumeFilesystem> HostPathProvisioner<F> {
    /// The provisioner for `node`, reading the configuration from `config` (see
    /// [`crate::reload::ConfigReloader::subscribe`]) and the disks through `fs`. It starts
    /// without cluster-wide duties, without a node directory and with the default
    /// [`NodeGonePolicy`].
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use backend_hostpath::fs::{HostFilesystem, TimedFilesystem};
    /// use backend_hostpath::ownership::NodeIdentity;
    /// use backend_hostpath::provisioner::{ClusterDuties, HostPathProvisioner};
    /// use backend_hostpath::reload::ConfigReloader;
    ///
    /// let reloader = ConfigReloader::load("/etc/config/config.json", Duration::from_secs(5)).await?;
    /// let duties = ClusterDuties::new(false);
    /// let provisioner = HostPathProvisioner::new(
    ///     NodeIdentity::new(std::env::var("NODE_NAME")?),
    ///     reloader.subscribe(),
    ///     TimedFilesystem::new(HostFilesystem),
    /// )
    /// .with_cluster_duties(duties.clone());
    /// // Hand `provisioner` to the controller; run `reloader.run(..)` alongside it.
    /// # let _ = provisioner; Ok(()) }
    /// ```
    pub fn new(
        node: NodeIdentity,
        config: watch::Receiver<Arc<ProvisionerConfig>>,
        fs: TimedFilesystem<F>,
    ) -> Self {
        Self {
            node,
            config,
            fs,
            duties: ClusterDuties::default(),
            nodes: Arc::new(NoNodeDirectory),
            node_gone_policy: NodeGonePolicy::default(),
        }
    }

    /// Shares a cluster-wide duties flag with the binary.
    #[must_use]
    pub fn with_cluster_duties(mut self, duties: ClusterDuties) -> Self {
        self.duties = duties;
        self
    }

    /// Answers "does this volume's node still exist?".
    #[must_use]
    pub fn with_node_directory(mut self, nodes: Arc<dyn NodeDirectory>) -> Self {
        self.nodes = nodes;
        self
    }

    /// What to do with volumes of vanished nodes.
    #[must_use]
    pub fn with_node_gone_policy(mut self, policy: NodeGonePolicy) -> Self {
        self.node_gone_policy = policy;
        self
    }

    fn config(&self) -> Arc<ProvisionerConfig> {
        Arc::clone(&self.config.borrow())
    }

    async fn provision_volume(
        &self,
        request: &ProvisionRequest<HostPathParams>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        let config = self.config();
        let class_meta = &request.storage_class.metadata;
        let class = class_meta.name.as_deref().unwrap_or_default();
        let storage = config.storage_for_class(class).map_err(infeasible)?;
        let node_local = matches!(storage, ClassStorage::NodeLocal(_));
        let selected = request.selected_node.as_deref();
        match decide_claim(&self.node, self.duties.held(), selected, node_local) {
            ClaimDecision::Provision => {}
            ClaimDecision::Ignore(reason) => return Err(ProvisionError::Ignored(reason)),
            ClaimDecision::NeedsWaitForFirstConsumer => {
                return Err(infeasible(HostPathError::NeedsWaitForFirstConsumer {
                    class: class.to_owned(),
                }));
            }
        }

        let no_annotations = BTreeMap::new();
        let params = request
            .parameters
            .clone()
            .with_class_annotations(class_meta.annotations.as_ref().unwrap_or(&no_annotations))
            .map_err(infeasible)?;
        for ignored in &params.ignored {
            tracing::warn!(class, "{ignored}");
        }
        let claim = &request.claim;
        let claim_annotations = claim
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&no_annotations);
        let volume_type = params
            .volume_type_for_claim(claim_annotations)
            .map_err(infeasible)?;
        if node_local {
            check_claim_for_node_local(claim).map_err(infeasible)?;
        }
        let dir = self.render_dir(request, &params).map_err(infeasible)?;
        let request_bytes = requested_bytes(request).map_err(infeasible)?;

        let node = node_local.then_some(self.node.name.as_str());
        let (location, marker_is_new) = match self.find_marker(&config, &request.volume_name).await
        {
            Some(location) => (location, false),
            None => {
                let placement = self.place(storage, node, &params, request_bytes).await;
                // Another node may have room; a shared filesystem is the same everywhere.
                let base = placement.map_err(|e| {
                    if node_local {
                        ProvisionError::Reschedule(Box::new(e))
                    } else {
                        infeasible(e)
                    }
                })?;
                self.fs
                    .write_marker(&base, &request.volume_name, &dir)
                    .await
                    .map_err(provision_fs_error)?;
                (VolumeLocation { base, dir }, true)
            }
        };
        let created = match self
            .fs
            .create_volume_dir(&location.base, &location.dir, params.directory)
            .await
        {
            Ok(created) => created,
            Err(error @ (FsError::Symlink { .. } | FsError::NotADirectory { .. })) => {
                // Nothing was created at the volume's path, so a marker written just now
                // would only make a later delete trip over the same obstacle.
                if marker_is_new
                    && let Err(cleanup) = self
                        .fs
                        .remove_marker(&location.base, &request.volume_name)
                        .await
                {
                    tracing::warn!(volume = %request.volume_name, "{cleanup}");
                }
                return Err(provision_fs_error(error));
            }
            Err(error) => return Err(provision_fs_error(error)),
        };
        tracing::info!(
            volume = %request.volume_name,
            path = %location.path().display(),
            ?created,
            "volume directory ready"
        );
        let binding = node.map(|name| NodeBinding {
            node: name,
            key: &params.node_affinity_key,
            value: self.node.affinity_value(&params.node_affinity_key),
        });
        Ok(provisioned_volume(&location, volume_type, binding))
    }

    fn render_dir(
        &self,
        request: &ProvisionRequest<HostPathParams>,
        params: &HostPathParams,
    ) -> Result<VolumePath, HostPathError> {
        let meta = &request.claim.metadata;
        let no_labels = BTreeMap::new();
        let input = PatternInput {
            pv_name: &request.volume_name,
            namespace: request.claim_namespace(),
            name: request.claim_name(),
            uid: meta.uid.as_deref().unwrap_or_default(),
            labels: meta.labels.as_ref().unwrap_or(&no_labels),
            annotations: meta.annotations.as_ref().unwrap_or(&no_labels),
        };
        let rendered = match &params.path_pattern {
            Some(pattern) => pattern.render(&input, params.prefix_rule),
            None => default_dir(input.pv_name, input.namespace, input.name),
        };
        let dir = rendered.map_err(|source| HostPathError::Directory {
            namespace: input.namespace.to_owned(),
            name: input.name.to_owned(),
            source: Box::new(source),
        })?;
        if dir.segments().next() == Some(MARKER_DIR) {
            return Err(HostPathError::Reserved {
                dir: dir.to_string(),
            });
        }
        Ok(dir)
    }

    /// The location an earlier attempt recorded for `volume_name` on this node, if any.
    async fn find_marker(
        &self,
        config: &ProvisionerConfig,
        volume_name: &str,
    ) -> Option<VolumeLocation> {
        let bases = unique(config.base_paths_on_node(&self.node.name));
        let reads = bases
            .iter()
            .map(|base| self.fs.read_marker(base, volume_name));
        let results = futures::future::join_all(reads).await;
        for (base, result) in bases.iter().zip(results) {
            match result {
                Ok(Some(dir)) => {
                    return Some(VolumeLocation {
                        base: base.clone(),
                        dir,
                    });
                }
                Ok(None) => {}
                // A dead disk is skipped here as it is by placement; the directory an
                // earlier attempt may have made there is found again once it answers.
                Err(error) => tracing::warn!(volume = volume_name, "{error}"),
            }
        }
        None
    }

    async fn place(
        &self,
        storage: &ClassStorage,
        node: Option<&str>,
        params: &HostPathParams,
        request_bytes: u64,
    ) -> Result<BasePath, PlacementError> {
        let paths = candidate_paths(storage, node, params.node_path.as_ref())?;
        let measured =
            futures::future::join_all(paths.iter().map(|p| self.fs.available_bytes(p))).await;
        let candidates: Vec<Candidate<'_>> = paths
            .iter()
            .zip(measured)
            .map(|(path, space)| Candidate {
                path,
                space: match space {
                    Ok(bytes) => Space::Available(bytes),
                    Err(error) => Space::Unknown(error.to_string()),
                },
            })
            .collect();
        choose_path(&candidates, request_bytes, node).cloned()
    }

    fn decide(&self, node: &VolumeNode) -> DeleteDecision {
        let existence = match node {
            VolumeNode::Shared | VolumeNode::Unreadable(_) => NodeExistence::Unknown,
            other => self.nodes.existence(other),
        };
        decide_delete(
            &self.node,
            self.duties.held(),
            node,
            existence,
            self.node_gone_policy,
        )
    }

    async fn delete_volume(
        &self,
        request: &DeleteRequest<HostPathParams>,
    ) -> Result<DeleteOutcome, DeleteError> {
        let config = self.config();
        let (node, recorded) = match &request.volume {
            Some(pv) => {
                let bases = unique(config.all_base_paths());
                let base_refs: Vec<&BasePath> = bases.iter().collect();
                let recorded = read_recorded(pv, &base_refs).map_err(|source| {
                    DeleteError::failed(HostPathError::Record {
                        volume: request.volume_name.clone(),
                        source,
                    })
                })?;
                (recorded.node, Some(recorded.location))
            }
            // No volume was saved (an interrupted provisioning, or a stale record): the
            // scheduler's node, and a marker if a directory was made. The marker records the
            // directory, so a pathPattern over claim labels needs no re-rendering.
            None => (
                request
                    .selected_node
                    .clone()
                    .map_or(VolumeNode::Shared, VolumeNode::Named),
                None,
            ),
        };
        match self.decide(&node) {
            DeleteDecision::Ignore(reason) => Err(DeleteError::Ignored(reason)),
            DeleteDecision::Refuse(reason) => Err(DeleteError::failed(HostPathError::Unsupported(
                format!("volume {}: {reason}", request.volume_name),
            ))),
            DeleteDecision::Forget { node } => {
                let message = format!(
                    "node {node} no longer exists: volume {} deleted without its data, which \
                     stays on that node's disk (node-gone policy: forget the volume)",
                    request.volume_name
                );
                tracing::warn!(volume = %request.volume_name, node, "{message}");
                Ok(DeleteOutcome::forgotten(message))
            }
            DeleteDecision::WaitForNode { node } => {
                Err(DeleteError::failed(HostPathError::NodeGone {
                    volume: request.volume_name.clone(),
                    node,
                }))
            }
            DeleteDecision::RemoveDirectory => {
                let location = match recorded {
                    Some(location) => Some(location),
                    None => self.find_marker(&config, &request.volume_name).await,
                };
                let Some(location) = location else {
                    // The marker is written before the directory: no marker, no directory.
                    return Ok(DeleteOutcome::Deleted);
                };
                let removed = self
                    .fs
                    .remove_volume_dir(&location.base, &location.dir)
                    .await
                    .map_err(delete_fs_error)?;
                self.fs
                    .remove_marker(&location.base, &request.volume_name)
                    .await
                    .map_err(delete_fs_error)?;
                tracing::info!(
                    volume = %request.volume_name,
                    path = %location.path().display(),
                    already_gone = removed == Removed::AlreadyGone,
                    "volume directory removed"
                );
                Ok(DeleteOutcome::Deleted)
            }
        }
    }
}

impl<F: VolumeFilesystem> Provisioner for HostPathProvisioner<F> {
    type Parameters = HostPathParams;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<HostPathParams, ParameterError> {
        HostPathParams::parse(raw).map_err(ParameterError::from)
    }

    async fn provision(
        &self,
        request: ProvisionRequest<HostPathParams>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        self.provision_volume(&request).await
    }

    async fn delete(
        &self,
        request: DeleteRequest<HostPathParams>,
    ) -> Result<DeleteOutcome, DeleteError> {
        self.delete_volume(&request).await
    }

    fn should_provision(&self, claim: &PersistentVolumeClaim) -> bool {
        claim_is_ours(&self.node, self.duties.held(), selected_node(claim))
    }

    fn should_delete(&self, volume: &PersistentVolume) -> bool {
        !matches!(self.decide(&volume_node(volume)), DeleteDecision::Ignore(_))
    }
}

fn infeasible(error: impl Into<HostPathError>) -> ProvisionError {
    ProvisionError::Infeasible(Box::new(error.into()))
}

fn provision_fs_error(error: FsError) -> ProvisionError {
    match error {
        FsError::Timeout { .. } => {
            ProvisionError::InBackground(Box::new(HostPathError::from(error)))
        }
        FsError::Symlink { .. } | FsError::NotADirectory { .. } | FsError::BadMarker { .. } => {
            infeasible(error)
        }
        other => ProvisionError::Final(Box::new(HostPathError::from(other))),
    }
}

fn delete_fs_error(error: FsError) -> DeleteError {
    DeleteError::failed(HostPathError::from(error))
}

/// Node-local volumes support what local-path supports: RWO/RWOP, no selector.
fn check_claim_for_node_local(claim: &PersistentVolumeClaim) -> Result<(), HostPathError> {
    let Some(spec) = &claim.spec else {
        return Ok(());
    };
    if spec.selector.is_some() {
        return Err(HostPathError::Unsupported(
            "a claim with spec.selector cannot be provisioned on a node-local disk".to_owned(),
        ));
    }
    check_node_local_access_modes(spec.access_modes.as_deref().unwrap_or_default())
        .map_err(HostPathError::Unsupported)
}

fn requested_bytes(request: &ProvisionRequest<HostPathParams>) -> Result<u64, HostPathError> {
    let Some(quantity) = request.requested_storage() else {
        return Ok(0);
    };
    let parsed = Quantity::parse(&quantity.0).map_err(|e| HostPathError::Request {
        request: quantity.0.clone(),
        reason: e.to_string(),
    })?;
    Ok(u64::try_from(parsed.ceil_value().max(0)).unwrap_or(u64::MAX))
}

fn unique<'a>(paths: impl Iterator<Item = &'a BasePath>) -> Vec<BasePath> {
    let mut seen: Vec<BasePath> = Vec::new();
    for path in paths {
        if !seen.contains(path) {
            seen.push(path.clone());
        }
    }
    seen
}

//! An in-memory cluster that applies plans with the API server's update semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::claim::VolumeStore;
use super::meta::claim_ref;
use super::plan::{ClaimKey, Event, Write};
use super::volume::ClaimLookup;

/// Why [`ObjectSet::apply`] refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The volume to update does not exist.
    #[error("persistentvolumes {0:?} not found")]
    VolumeNotFound(String),
    /// The claim to update does not exist.
    #[error("persistentvolumeclaims {0} not found")]
    ClaimNotFound(ClaimKey),
}

/// Volumes, claims and recorded events, updated the way the API server updates them.
///
/// `Update*` writes replace metadata and spec and keep the stored status; `Update*Status`
/// writes replace the status only. Every object write bumps `metadata.resourceVersion`.
/// Optimistic concurrency is not checked: a plan's writes are computed together from one
/// snapshot, and the controller sends each with the version the previous write returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectSet {
    /// Sorted by name, so that the slice is also the search input in a stable order.
    volumes: Vec<PersistentVolume>,
    claims: BTreeMap<ClaimKey, PersistentVolumeClaim>,
    events: Vec<Event>,
}

impl ObjectSet {
    /// A cluster holding these objects (a later object with the same name replaces an
    /// earlier one).
    pub fn new(
        volumes: impl IntoIterator<Item = PersistentVolume>,
        claims: impl IntoIterator<Item = PersistentVolumeClaim>,
    ) -> ObjectSet {
        let mut set = ObjectSet::default();
        for volume in volumes {
            set.put_volume(volume);
        }
        for claim in claims {
            set.put_claim(claim);
        }
        set
    }

    /// Creates or replaces a volume as it is (e.g. one an external provisioner created).
    pub fn put_volume(&mut self, volume: PersistentVolume) {
        match self.volume_index(volume.metadata.name.as_deref().unwrap_or("")) {
            Ok(index) => self.volumes[index] = volume,
            Err(index) => self.volumes.insert(index, volume),
        }
    }

    /// Creates or replaces a claim as it is.
    pub fn put_claim(&mut self, claim: PersistentVolumeClaim) {
        self.claims.insert(ClaimKey::of(&claim), claim);
    }

    /// Deletes a volume (as a user or a deleter would); returns it if it existed.
    pub fn delete_volume(&mut self, name: &str) -> Option<PersistentVolume> {
        self.volume_index(name)
            .ok()
            .map(|index| self.volumes.remove(index))
    }

    /// Deletes a claim; returns it if it existed.
    pub fn delete_claim(&mut self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim> {
        self.claims.remove(&ClaimKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// All volumes, sorted by name. A slice is a [`VolumeStore`].
    pub fn volumes(&self) -> &[PersistentVolume] {
        &self.volumes
    }

    /// All claims, sorted by namespace and name.
    pub fn claims(&self) -> impl Iterator<Item = &PersistentVolumeClaim> {
        self.claims.values()
    }

    /// The events recorded so far, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The volume called `name`.
    pub fn volume(&self, name: &str) -> Option<&PersistentVolume> {
        self.volumes.volume(name)
    }

    /// The claim `namespace/name`.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&PersistentVolumeClaim> {
        self.claims.get(&ClaimKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Where `syncVolume` would find `volume`'s claim: this set plays both the cache and the
    /// API server, so both answers are given at once.
    pub fn claim_lookup(&self, volume: &PersistentVolume) -> ClaimLookup<'_> {
        let claim = claim_ref(volume).and_then(|r| {
            self.claim(
                r.namespace.as_deref().unwrap_or(""),
                r.name.as_deref().unwrap_or(""),
            )
        });
        ClaimLookup::cached(claim).with_api(claim)
    }

    /// Applies one write.
    pub fn apply(&mut self, write: &Write) -> Result<(), ApplyError> {
        match write {
            Write::UpdateVolume(new) => {
                let stored = self.stored_volume(new)?;
                stored.metadata = next_metadata(&stored.metadata, &new.metadata);
                stored.spec = new.spec.clone();
            }
            Write::UpdateVolumeStatus(new) => {
                let stored = self.stored_volume(new)?;
                stored.metadata.resource_version = next_version(&stored.metadata);
                stored.status = new.status.clone();
            }
            Write::UpdateClaim(new) => {
                let stored = self.stored_claim(new)?;
                stored.metadata = next_metadata(&stored.metadata, &new.metadata);
                stored.spec = new.spec.clone();
            }
            Write::UpdateClaimStatus(new) => {
                let stored = self.stored_claim(new)?;
                stored.metadata.resource_version = next_version(&stored.metadata);
                stored.status = new.status.clone();
            }
            Write::Event(event) => self.events.push(event.clone()),
        }
        Ok(())
    }

    fn volume_index(&self, name: &str) -> Result<usize, usize> {
        self.volumes
            .binary_search_by(|pv| pv.metadata.name.as_deref().unwrap_or("").cmp(name))
    }

    fn stored_volume(
        &mut self,
        new: &PersistentVolume,
    ) -> Result<&mut PersistentVolume, ApplyError> {
        let name = new.metadata.name.as_deref().unwrap_or("");
        match self.volume_index(name) {
            Ok(index) => Ok(&mut self.volumes[index]),
            Err(_) => Err(ApplyError::VolumeNotFound(name.to_owned())),
        }
    }

    fn stored_claim(
        &mut self,
        new: &PersistentVolumeClaim,
    ) -> Result<&mut PersistentVolumeClaim, ApplyError> {
        let key = ClaimKey::of(new);
        match self.claims.get_mut(&key) {
            Some(stored) => Ok(stored),
            None => Err(ApplyError::ClaimNotFound(key)),
        }
    }
}

/// The metadata an Update stores: the sent metadata, with the server-owned identity kept and
/// the version bumped.
fn next_metadata(stored: &ObjectMeta, sent: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        uid: stored.uid.clone(),
        creation_timestamp: stored.creation_timestamp.clone(),
        deletion_timestamp: stored.deletion_timestamp.clone(),
        resource_version: next_version(stored),
        ..sent.clone()
    }
}

fn next_version(stored: &ObjectMeta) -> Option<String> {
    let current: u64 = stored
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((current + 1).to_string())
}

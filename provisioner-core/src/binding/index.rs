//! An index of volumes for matching at scale.
//!
//! [`VolumeIndex`] answers the same questions as the linear searches in [`super::find`],
//! with exactly the same answers, without looking at every volume:
//!
//! - volumes that could be bound to a claim that does not name them (no `claimRef`, phase
//!   `Available`, not being deleted) sit in buckets keyed by everything a claim must match
//!   exactly (effective class, access-mode set, volume mode, VolumeAttributesClass), each
//!   bucket ordered by capacity, then by insertion order. The answer in a bucket is the
//!   first entry at or above the request that passes the remaining filters (selector,
//!   node affinity, exclusions);
//! - volumes with a `claimRef` are found by the claim it names, for the pre-bound rules.
//!
//! The order of insertion plays the part of the input order of the linear search: the
//! index returns what [`find_best_match_for_claim`](super::find::find_best_match_for_claim)
//! returns when given [`VolumeIndex::volumes`]. Replacing a volume (same name) keeps its
//! place; removing and re-inserting moves it to the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};

use super::access_modes::AccessModeSet;
use super::find::{AVAILABLE_PHASE, ClaimQuery, MatchError, volume_name};
use super::node_affinity::check_node_affinity;
use super::predicates::{
    claim_access_modes, claim_vac, claim_volume_mode, is_volume_bound_to_claim,
    volume_access_modes, volume_capacity, volume_class, volume_phase, volume_vac,
    volume_volume_mode,
};
use crate::quantity::{Quantity, QuantityError};

/// Why a volume cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The volume's `spec.capacity.storage` is not a valid quantity.
    #[error("volume {volume}: spec.capacity.storage: {source}")]
    InvalidCapacity {
        /// The volume's name.
        volume: String,
        /// The parse error.
        source: QuantityError,
    },
}

/// What an unbound claim must match exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    class: String,
    modes: AccessModeSet,
    volume_mode: String,
    attributes_class: String,
}

/// A bucket entry: ordered by capacity, then by insertion order.
type Slot = usize;
type Seq = u64;

#[derive(Debug)]
struct Entry {
    pv: Arc<PersistentVolume>,
    seq: Seq,
    capacity: Quantity,
    class: String,
    modes: AccessModeSet,
    /// `(namespace, name)` in the `claimRef`, if any.
    claim_ref: Option<(String, String)>,
    /// In a bucket: could be bound to a claim that does not name it.
    bucket: Option<BucketKey>,
}

/// Volumes indexed for the PV controller's and the scheduler's searches.
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::index::VolumeIndex;
///
/// let pv = |name: &str, size: &str| -> PersistentVolume {
///     serde_json::from_value(serde_json::json!({
///         "metadata": {"name": name},
///         "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
///         "status": {"phase": "Available"},
///     })).unwrap()
/// };
/// let mut index = VolumeIndex::new();
/// index.insert(pv("big", "100Gi"))?;
/// index.insert(pv("small", "10Gi"))?;
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default"},
///     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
/// }))?;
/// let chosen = index.find_best_match_for_claim(&claim, false, true)?;
/// assert_eq!(chosen.and_then(|pv| pv.metadata.name.as_deref()), Some("small"));
/// index.remove("small");
/// let chosen = index.find_best_match_for_claim(&claim, false, true)?;
/// assert_eq!(chosen.and_then(|pv| pv.metadata.name.as_deref()), Some("big"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct VolumeIndex {
    slots: Vec<Option<Entry>>,
    free: Vec<Slot>,
    by_name: HashMap<String, Slot>,
    /// Insertion order.
    order: BTreeMap<Seq, Slot>,
    next_seq: Seq,
    buckets: HashMap<BucketKey, BTreeSet<(Quantity, Seq, Slot)>>,
    /// Volumes with a `claimRef`, by the claim's `(namespace, name)`, in insertion order.
    by_claim_ref: HashMap<(String, String), BTreeSet<(Seq, Slot)>>,
    /// Volumes of each effective class, in insertion order (the scheduler's listing).
    by_class: HashMap<String, BTreeSet<(Seq, Slot)>>,
    /// How many volumes have each access-mode set (the controller's index keys).
    set_counts: [usize; 16],
}

impl VolumeIndex {
    /// An empty index.
    pub fn new() -> VolumeIndex {
        VolumeIndex::default()
    }

    /// Indexes every volume, in order.
    pub fn from_volumes<I>(volumes: I) -> Result<VolumeIndex, IndexError>
    where
        I: IntoIterator,
        I::Item: Into<Arc<PersistentVolume>>,
    {
        let mut index = VolumeIndex::new();
        for pv in volumes {
            index.insert(pv)?;
        }
        Ok(index)
    }

    /// Adds a volume, or replaces the one with the same name (keeping its place in the
    /// order). Returns the replaced volume.
    pub fn insert(
        &mut self,
        pv: impl Into<Arc<PersistentVolume>>,
    ) -> Result<Option<Arc<PersistentVolume>>, IndexError> {
        let pv: Arc<PersistentVolume> = pv.into();
        let name = volume_name(&pv).to_owned();
        let capacity = volume_capacity(&pv).map_err(|source| IndexError::InvalidCapacity {
            volume: name.clone(),
            source,
        })?;
        let (seq, replaced) = match self.by_name.get(&name).copied() {
            Some(slot) => {
                let old = self.unlink(slot);
                self.free.push(slot);
                (old.seq, Some(old.pv))
            }
            None => {
                self.next_seq += 1;
                (self.next_seq, None)
            }
        };
        let entry = make_entry(pv, seq, capacity);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.link(slot, &entry);
        self.slots[slot] = Some(entry);
        self.by_name.insert(name, slot);
        Ok(replaced)
    }

    /// Removes the volume with this name.
    pub fn remove(&mut self, name: &str) -> Option<Arc<PersistentVolume>> {
        let slot = self.by_name.remove(name)?;
        let entry = self.unlink(slot);
        self.free.push(slot);
        Some(entry.pv)
    }

    /// The volume with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.by_name.get(name).map(|&slot| &self.entry(slot).pv)
    }

    /// How many volumes are indexed.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no volume is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The volumes in the order the searches treat as input order.
    pub fn volumes(&self) -> impl Iterator<Item = &PersistentVolume> {
        self.order.values().map(|&slot| &*self.entry(slot).pv)
    }

    /// The PV controller's search; the same answer as
    /// [`find_best_match_for_claim`](super::find::find_best_match_for_claim) over
    /// [`volumes`](VolumeIndex::volumes).
    pub fn find_best_match_for_claim(
        &self,
        claim: &PersistentVolumeClaim,
        delay_binding: bool,
        vac_enabled: bool,
    ) -> Result<Option<&PersistentVolume>, MatchError> {
        let query = ClaimQuery::new(claim, vac_enabled)?;
        let Some(requested) = AccessModeSet::requested(claim_access_modes(claim)) else {
            return Ok(None);
        };
        let mut sets: Vec<AccessModeSet> = AccessModeSet::all()
            .filter(|s| self.set_counts[usize::from(s.bits())] > 0 && s.contains_all(requested))
            .collect();
        if sets.is_empty() {
            return Ok(None);
        }
        query.check_vac_gate()?;
        sets.sort_by(|a, b| a.search_order(*b));
        let pre_bound = self.pre_bound_candidates(&query, None);
        for set in sets {
            // Within a set, a volume pre-bound to the claim is returned as soon as the walk
            // meets it, whatever came before.
            if let Some(&slot) = pre_bound
                .iter()
                .find(|&&slot| self.entry(slot).modes == set)
            {
                return Ok(Some(&self.entry(slot).pv));
            }
            if delay_binding {
                continue;
            }
            let key = bucket_key_for(&query, set);
            if let Some(slot) = self.first_in_bucket(&key, &query, None, &BTreeSet::new()) {
                return Ok(Some(&self.entry(slot).pv));
            }
        }
        Ok(None)
    }

    /// The scheduler's search for one claim on one node; the same answer as
    /// [`find_matching_volume_for_node`](super::find::find_matching_volume_for_node) over
    /// [`volumes`](VolumeIndex::volumes).
    pub fn find_matching_volume_for_node(
        &self,
        claim: &PersistentVolumeClaim,
        node: &Node,
        excluded: &BTreeSet<String>,
        vac_enabled: bool,
    ) -> Result<Option<&PersistentVolume>, MatchError> {
        let query = ClaimQuery::new(claim, vac_enabled)?;
        query.check_vac_gate()?;
        let no_labels = BTreeMap::new();
        let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
        let node = NodeCheck { labels, excluded };
        // The first pre-bound volume of the class decides alone.
        let pre_bound = self.pre_bound_candidates(&query, Some(excluded));
        if let Some(&slot) = pre_bound
            .iter()
            .find(|&&slot| self.entry(slot).class == query.class)
        {
            let pv = &self.entry(slot).pv;
            return Ok(check_node_affinity(pv, labels).is_ok().then_some(&**pv));
        }
        let Some(requested) = AccessModeSet::requested(claim_access_modes(claim)) else {
            // A mode Kubernetes does not know can still match literally; rare, so walk the
            // class's volumes.
            return Ok(self.scan_class_literally(&query, &node));
        };
        let mut best: Option<(&Quantity, Seq, Slot)> = None;
        for set in AccessModeSet::all().filter(|s| s.contains_all(requested)) {
            let key = bucket_key_for(&query, set);
            if let Some(slot) = self.first_in_bucket(&key, &query, Some(&node), excluded) {
                let entry = self.entry(slot);
                let candidate = (&entry.capacity, entry.seq, slot);
                if best.is_none_or(|b| (candidate.0, candidate.1) < (b.0, b.1)) {
                    best = Some(candidate);
                }
            }
        }
        Ok(best.map(|(_, _, slot)| &*self.entry(slot).pv))
    }

    fn entry(&self, slot: Slot) -> &Entry {
        self.slots[slot]
            .as_ref()
            .expect("index slots referenced by the maps are occupied")
    }

    /// Volumes bound (or pre-bound) to the claim that pass the size, mode, VAC and
    /// deletion checks, in insertion order.
    fn pre_bound_candidates(
        &self,
        query: &ClaimQuery<'_>,
        excluded: Option<&BTreeSet<String>>,
    ) -> Vec<Slot> {
        let claim = query.claim;
        let key = (
            claim.metadata.namespace.clone().unwrap_or_default(),
            claim.metadata.name.clone().unwrap_or_default(),
        );
        let Some(slots) = self.by_claim_ref.get(&key) else {
            return Vec::new();
        };
        slots
            .iter()
            .map(|&(_, slot)| slot)
            .filter(|&slot| {
                let entry = self.entry(slot);
                let pv = &*entry.pv;
                !excluded.is_some_and(|e| e.contains(volume_name(pv)))
                    && is_volume_bound_to_claim(pv, claim)
                    && entry.capacity >= query.request
                    && volume_volume_mode(pv) == claim_volume_mode(claim)
                    && attributes_class_ok(query, volume_vac(pv))
                    && pv.metadata.deletion_timestamp.is_none()
            })
            .collect()
    }

    /// The first volume of a bucket, from the request up, that passes the filters not
    /// part of the key.
    fn first_in_bucket(
        &self,
        key: &BucketKey,
        query: &ClaimQuery<'_>,
        node: Option<&NodeCheck<'_>>,
        excluded: &BTreeSet<String>,
    ) -> Option<Slot> {
        let bucket = self.buckets.get(key)?;
        let start = (query.request.clone(), 0, 0);
        bucket
            .range((Bound::Included(start), Bound::Unbounded))
            .map(|&(_, _, slot)| slot)
            .find(|&slot| {
                let pv = &*self.entry(slot).pv;
                !excluded.contains(volume_name(pv))
                    && selector_ok(query, pv)
                    && node.is_none_or(|n| check_node_affinity(pv, n.labels).is_ok())
            })
    }

    /// The scheduler's walk over the class's volumes for a claim with an unknown access
    /// mode (no pre-bound volume applies here: that was decided before).
    fn scan_class_literally(
        &self,
        query: &ClaimQuery<'_>,
        node: &NodeCheck<'_>,
    ) -> Option<&PersistentVolume> {
        let claim = query.claim;
        let listed = self.by_class.get(query.class)?;
        let mut best: Option<&Entry> = None;
        for &(_, slot) in listed {
            let entry = self.entry(slot);
            let pv = &*entry.pv;
            let Some(key) = &entry.bucket else { continue };
            let offered = volume_access_modes(pv);
            let fits = entry.capacity >= query.request
                && key.volume_mode == claim_volume_mode(claim)
                && attributes_class_ok(query, &key.attributes_class)
                && !node.excluded.contains(volume_name(pv))
                && selector_ok(query, pv)
                && check_node_affinity(pv, node.labels).is_ok()
                && claim_access_modes(claim)
                    .iter()
                    .all(|m| offered.contains(m));
            if fits && best.is_none_or(|b| b.capacity > entry.capacity) {
                best = Some(entry);
            }
        }
        best.map(|e| &*e.pv)
    }

    fn link(&mut self, slot: Slot, entry: &Entry) {
        self.order.insert(entry.seq, slot);
        self.set_counts[usize::from(entry.modes.bits())] += 1;
        self.by_class
            .entry(entry.class.clone())
            .or_default()
            .insert((entry.seq, slot));
        if let Some(claim_ref) = &entry.claim_ref {
            self.by_claim_ref
                .entry(claim_ref.clone())
                .or_default()
                .insert((entry.seq, slot));
        }
        if let Some(key) = &entry.bucket {
            self.buckets.entry(key.clone()).or_default().insert((
                entry.capacity.clone(),
                entry.seq,
                slot,
            ));
        }
    }

    fn unlink(&mut self, slot: Slot) -> Entry {
        let entry = self.slots[slot]
            .take()
            .expect("index slots referenced by the maps are occupied");
        self.order.remove(&entry.seq);
        self.set_counts[usize::from(entry.modes.bits())] -= 1;
        remove_from(&mut self.by_class, &entry.class, &(entry.seq, slot));
        if let Some(claim_ref) = &entry.claim_ref {
            remove_from(&mut self.by_claim_ref, claim_ref, &(entry.seq, slot));
        }
        if let Some(key) = &entry.bucket {
            remove_from(
                &mut self.buckets,
                key,
                &(entry.capacity.clone(), entry.seq, slot),
            );
        }
        entry
    }
}

/// Removes `item` from the set at `key`, dropping the set when it empties.
fn remove_from<K, Q, T>(map: &mut HashMap<K, BTreeSet<T>>, key: &Q, item: &T)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    T: Ord,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

struct NodeCheck<'a> {
    labels: &'a BTreeMap<String, String>,
    excluded: &'a BTreeSet<String>,
}

fn make_entry(pv: Arc<PersistentVolume>, seq: Seq, capacity: Quantity) -> Entry {
    let claim_ref = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .map(|r| {
            (
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
            )
        });
    let modes = AccessModeSet::from_modes(volume_access_modes(&pv));
    let class = volume_class(&pv).to_owned();
    let unbound_candidate = claim_ref.is_none()
        && volume_phase(&pv) == AVAILABLE_PHASE
        && pv.metadata.deletion_timestamp.is_none();
    let bucket = unbound_candidate.then(|| BucketKey {
        class: class.clone(),
        modes,
        volume_mode: volume_volume_mode(&pv).to_owned(),
        attributes_class: volume_vac(&pv).to_owned(),
    });
    Entry {
        pv,
        seq,
        capacity,
        class,
        modes,
        claim_ref,
        bucket,
    }
}

/// The bucket an unbound volume must be in to match the claim in `modes`.
fn bucket_key_for(query: &ClaimQuery<'_>, modes: AccessModeSet) -> BucketKey {
    BucketKey {
        class: query.class.to_owned(),
        modes,
        volume_mode: claim_volume_mode(query.claim).to_owned(),
        // With the gate on the names must be equal; with it off only volumes without a
        // class match (a claim with one was refused before).
        attributes_class: if query.vac_enabled {
            claim_vac(query.claim).to_owned()
        } else {
            String::new()
        },
    }
}

fn attributes_class_ok(query: &ClaimQuery<'_>, volume_attributes_class: &str) -> bool {
    if query.vac_enabled {
        claim_vac(query.claim) == volume_attributes_class
    } else {
        volume_attributes_class.is_empty()
    }
}

fn selector_ok(query: &ClaimQuery<'_>, pv: &PersistentVolume) -> bool {
    let Some(selector) = &query.selector else {
        return true;
    };
    match &pv.metadata.labels {
        Some(labels) => selector.matches(labels),
        None => selector.matches(&BTreeMap::new()),
    }
}

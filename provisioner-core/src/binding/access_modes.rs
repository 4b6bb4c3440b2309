//! Sets of access modes, and the canonical string Kubernetes indexes volumes by.
//!
//! The PV controller keeps its volumes in an index keyed by
//! `GetAccessModesAsString(pv.spec.accessModes)`: the de-duplicated known modes in the fixed
//! order `RWO,ROX,RWX,RWOP`, joined with commas. Modes Kubernetes does not know are left out
//! of that key.

use std::fmt;

/// `ReadWriteOnce`.
pub const READ_WRITE_ONCE: &str = "ReadWriteOnce";
/// `ReadOnlyMany`.
pub const READ_ONLY_MANY: &str = "ReadOnlyMany";
/// `ReadWriteMany`.
pub const READ_WRITE_MANY: &str = "ReadWriteMany";
/// `ReadWriteOncePod`.
pub const READ_WRITE_ONCE_POD: &str = "ReadWriteOncePod";

/// The known modes in key order, with their abbreviations.
const MODES: [(&str, &str); 4] = [
    (READ_WRITE_ONCE, "RWO"),
    (READ_ONLY_MANY, "ROX"),
    (READ_WRITE_MANY, "RWX"),
    (READ_WRITE_ONCE_POD, "RWOP"),
];

/// A set of the four known access modes.
///
/// ```
/// use provisioner_core::binding::access_modes::AccessModeSet;
///
/// let set = AccessModeSet::from_modes(["ReadOnlyMany", "ReadWriteOnce", "ReadOnlyMany"]);
/// assert_eq!(set.key(), "RWO,ROX");
/// assert!(set.contains_all(AccessModeSet::from_modes(["ReadWriteOnce"])));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct AccessModeSet(u8);

impl AccessModeSet {
    /// The empty set (the key `""`).
    pub const EMPTY: AccessModeSet = AccessModeSet(0);

    /// Every one of the 16 possible sets.
    pub fn all() -> impl Iterator<Item = AccessModeSet> {
        (0..16u8).map(AccessModeSet)
    }

    /// The known modes among `modes`; unknown names are ignored, as in the index key.
    pub fn from_modes<S: AsRef<str>>(modes: impl IntoIterator<Item = S>) -> AccessModeSet {
        let mut bits = 0;
        for mode in modes {
            if let Some(bit) = mode_bit(mode.as_ref()) {
                bits |= bit;
            }
        }
        AccessModeSet(bits)
    }

    /// The set `modes` requests, or `None` when one of them is not a known mode (no
    /// index key can contain it, so nothing matches).
    pub fn requested<S: AsRef<str>>(modes: impl IntoIterator<Item = S>) -> Option<AccessModeSet> {
        let mut bits = 0;
        for mode in modes {
            bits |= mode_bit(mode.as_ref())?;
        }
        Some(AccessModeSet(bits))
    }

    /// Whether every mode of `other` is in this set.
    pub fn contains_all(self, other: AccessModeSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// How many modes the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The canonical index key, e.g. `"RWO,ROX"` (`""` for the empty set).
    pub fn key(self) -> String {
        self.to_string()
    }

    /// The order in which the PV controller's search visits sets: fewer modes first.
    ///
    /// Kubernetes sorts only by size, with an unstable sort over a map's keys, so the
    /// order of equal-size sets is undefined there. We break the tie by the canonical key,
    /// compared as a string (`ROX` < `RWO` < `RWOP` < `RWX`).
    pub fn search_order(self, other: AccessModeSet) -> std::cmp::Ordering {
        self.len()
            .cmp(&other.len())
            .then_with(|| self.key().cmp(&other.key()))
    }

    /// Index of this set among the 16 possible sets (its bit pattern).
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Display for AccessModeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (i, (_, short)) in MODES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(short)?;
                first = false;
            }
        }
        Ok(())
    }
}

fn mode_bit(mode: &str) -> Option<u8> {
    MODES
        .iter()
        .position(|(name, _)| *name == mode)
        .map(|i| 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_deduplicated_in_fixed_order() {
        let set =
            AccessModeSet::from_modes([READ_WRITE_ONCE_POD, READ_WRITE_MANY, READ_WRITE_ONCE]);
        assert_eq!(set.key(), "RWO,RWX,RWOP");
        assert_eq!(AccessModeSet::from_modes(Vec::<String>::new()).key(), "");
        assert_eq!(
            AccessModeSet::from_modes(["Bogus", READ_ONLY_MANY]).key(),
            "ROX"
        );
    }

    #[test]
    fn requested_rejects_unknown_modes() {
        assert_eq!(AccessModeSet::requested(["Bogus"]), None);
        assert_eq!(
            AccessModeSet::requested(Vec::<String>::new()),
            Some(AccessModeSet::EMPTY)
        );
    }

    #[test]
    fn search_order_is_size_then_key() {
        let mut sets: Vec<_> = AccessModeSet::all().collect();
        sets.sort_by(|a, b| a.search_order(*b));
        let keys: Vec<_> = sets.iter().take(6).map(|s| s.key()).collect();
        assert_eq!(keys, ["", "ROX", "RWO", "RWOP", "RWX", "ROX,RWOP"]);
        assert_eq!(
            sets.last().map(|s| s.key()).as_deref(),
            Some("RWO,ROX,RWX,RWOP")
        );
    }
}

//! Pure decisions of the provisioning controller: no I/O, plain data in, plain data out.
//!
//! The controller ([`crate::controller`]) reads objects from its caches, asks these functions
//! what to do, and carries the answer out against the API server and the backend. Keeping
//! the decisions here lets them be tested with hand-built objects and a paused clock.
//!
//! - [`keys`]: the annotations and finalizers the controller reads and writes;
//! - [`record`]: the in-flight provisioning record kept on the claim (crash safety);
//! - [`claim`]: what to do with a claim ([`claim::decide_claim`]);
//! - [`volume`]: what to do with a PersistentVolume ([`volume::decide_volume`]) and how to
//!   build one ([`volume::build_volume`]);
//! - [`retry`]: per-claim exponential backoff with jitter, failure thresholds and the slow
//!   path for infeasible requests.

pub mod claim;
pub mod keys;
pub mod record;
pub mod retry;
pub mod volume;

use std::collections::BTreeMap;

/// The names a provisioner answers to: its own, then aliases (for example the name of the
/// provisioner it replaces, so claims and volumes created for that one are served too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionerNames {
    name: String,
    aliases: Vec<String>,
}

impl ProvisionerNames {
    /// A provisioner called `name`, without aliases.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
        }
    }

    /// Adds names this provisioner also answers to.
    #[must_use]
    pub fn with_aliases<I, S>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aliases.extend(aliases.into_iter().map(Into::into));
        self
    }

    /// The provisioner's own name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The aliases.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    /// Whether `name` is this provisioner's name or one of its aliases.
    pub fn is_known(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|alias| alias == name)
    }
}

/// Reads one annotation.
pub(crate) fn annotation<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    annotations.and_then(|map| map.get(key)).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_name_and_aliases_only() {
        let names = ProvisionerNames::new("nfs-test").with_aliases(["old-nfs"]);
        assert!(names.is_known("nfs-test"));
        assert!(names.is_known("old-nfs"));
        assert!(!names.is_known("other"));
        assert!(!names.is_known(""));
    }
}

//! Names that do not collide between tests sharing one control plane.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::TestEnvError;

/// Longest Kubernetes name that fits everywhere (DNS-1123 label, e.g. namespaces).
const MAX_NAME_LEN: usize = 63;

/// A name starting with (a DNS-safe form of) `prefix` that no other call in this process
/// returns: use it for cluster-scoped objects (StorageClasses, PVs, nodes) of one test.
///
/// ```
/// let a = testenv::unique_name("My_Class");
/// let b = testenv::unique_name("My_Class");
/// assert!(a.starts_with("my-class-"));
/// assert_ne!(a, b);
/// ```
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    // The pid keeps test binaries apart when they share a plane (e.g. one started by hand).
    render_unique_name(prefix, &format!("{:x}-{serial}", std::process::id()))
}

/// `prefix` made DNS-1123 safe (lowercase alphanumerics and `-`), cut so that `-suffix`
/// fits in 63 characters.
fn render_unique_name(prefix: &str, suffix: &str) -> String {
    let mut safe: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    safe.truncate(MAX_NAME_LEN.saturating_sub(suffix.len() + 1));
    let safe = safe.trim_matches('-');
    let safe = if safe.is_empty() { "t" } else { safe };
    format!("{safe}-{suffix}")
}

/// Creates a namespace named [`unique_name(prefix)`](unique_name) and returns its name; each
/// test on a shared plane works in its own.
///
/// ```no_run
/// # async fn demo(plane: &testenv::ControlPlane) -> Result<(), testenv::TestEnvError> {
/// let client = plane.admin_client().await?;
/// let namespace = testenv::create_namespace(&client, "pv-binding").await?;
/// # Ok(()) }
/// ```
pub async fn create_namespace(client: &kube::Client, prefix: &str) -> Result<String, TestEnvError> {
    let name = unique_name(prefix);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(TestEnvError::api(format!("creating namespace {name}")))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(name: &str) -> bool {
        name.len() <= MAX_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn prefixes_are_made_dns_safe() {
        assert_eq!(
            render_unique_name("PV_binder test", "1-2"),
            "pv-binder-test-1-2"
        );
        assert_eq!(render_unique_name("--", "9"), "t-9");
        assert_eq!(render_unique_name("", "9"), "t-9");
    }

    #[test]
    fn long_prefixes_are_cut_to_a_valid_label() {
        let name = render_unique_name(&"x".repeat(100), "abcdef-12345");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(is_dns_label(&name), "{name}");
        assert!(name.ends_with("-abcdef-12345"));
        let cut_at_dash = render_unique_name(&format!("{}-y", "x".repeat(49)), "abcdef-12345");
        assert!(is_dns_label(&cut_at_dash), "{cut_at_dash}");
    }

    #[test]
    fn every_call_is_unique() {
        let names: std::collections::HashSet<_> = (0..1000).map(|_| unique_name("t")).collect();
        assert_eq!(names.len(), 1000);
        assert!(names.iter().all(|n| is_dns_label(n)));
    }
}

//! What an API request is, from its method, path and query: the verb and resource the API
//! server's own metrics use. Pure.

use http::Method;

/// The verb and resource of an API request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKind {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// or the lower-case HTTP method for anything else.
    pub verb: String,
    /// The resource, with its subresource after a `/` (`persistentvolumeclaims/status`);
    /// empty for non-resource paths such as `/version`.
    pub resource: String,
}

/// Classifies a request to the Kubernetes API.
///
/// ```
/// use http::Method;
/// use provisioner_bin::runtime::request_kind::classify;
///
/// let kind = classify(&Method::GET, "/api/v1/persistentvolumeclaims", Some("watch=true&resourceVersion=7"));
/// assert_eq!((kind.verb.as_str(), kind.resource.as_str()), ("watch", "persistentvolumeclaims"));
/// ```
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestKind {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // After `/api/v1` or `/apis/<group>/<version>`.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // `namespaces/<ns>/<resource>/...`, except the namespaces resource itself.
    let (resource, name, subresource) = match rest {
        ["namespaces", _namespace, resource, tail @ ..] => {
            (Some(*resource), tail.first(), tail.get(1))
        }
        [resource, tail @ ..] => (Some(*resource), tail.first(), tail.get(1)),
        [] => (None, None, None),
    };
    let resource = match (resource, subresource) {
        (Some(resource), Some(subresource)) => format!("{resource}/{subresource}"),
        (Some(resource), None) => resource.to_owned(),
        (None, _) => String::new(),
    };
    let is_watch = query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    });
    let collection = name.is_none();
    let verb = match *method {
        Method::GET if is_watch => "watch",
        Method::GET if collection && !resource.is_empty() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        ref other => {
            return RequestKind {
                verb: other.as_str().to_ascii_lowercase(),
                resource,
            };
        }
    };
    RequestKind {
        verb: verb.to_owned(),
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: &Method, path: &str, query: Option<&str>) -> (String, String) {
        let kind = classify(method, path, query);
        (kind.verb, kind.resource)
    }

    fn pair(verb: &str, resource: &str) -> (String, String) {
        (verb.to_owned(), resource.to_owned())
    }

    #[test]
    fn core_and_group_resources() {
        assert_eq!(
            kind(
                &Method::GET,
                "/api/v1/namespaces/ns/persistentvolumeclaims/c1",
                None
            ),
            pair("get", "persistentvolumeclaims")
        );
        assert_eq!(
            kind(
                &Method::PUT,
                "/api/v1/namespaces/ns/persistentvolumeclaims/c1",
                None
            ),
            pair("update", "persistentvolumeclaims")
        );
        assert_eq!(
            kind(&Method::POST, "/api/v1/persistentvolumes", None),
            pair("create", "persistentvolumes")
        );
        assert_eq!(
            kind(&Method::DELETE, "/api/v1/persistentvolumes/pvc-1", None),
            pair("delete", "persistentvolumes")
        );
        assert_eq!(
            kind(&Method::PATCH, "/api/v1/namespaces/ns/events/e.1", None),
            pair("patch", "events")
        );
        assert_eq!(
            kind(
                &Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock",
                None
            ),
            pair("update", "leases")
        );
        assert_eq!(
            kind(
                &Method::GET,
                "/apis/storage.k8s.io/v1/storageclasses",
                Some("limit=500")
            ),
            pair("list", "storageclasses")
        );
    }

    #[test]
    fn watches_lists_and_collections() {
        assert_eq!(
            kind(
                &Method::GET,
                "/api/v1/persistentvolumes",
                Some("resourceVersion=5&watch=true")
            ),
            pair("watch", "persistentvolumes")
        );
        assert_eq!(
            kind(
                &Method::GET,
                "/api/v1/namespaces/ns/persistentvolumeclaims",
                None
            ),
            pair("list", "persistentvolumeclaims")
        );
        assert_eq!(
            kind(&Method::DELETE, "/api/v1/namespaces/ns/events", None),
            pair("deletecollection", "events")
        );
    }

    #[test]
    fn namespaces_subresources_and_non_resource_paths() {
        assert_eq!(
            kind(&Method::GET, "/api/v1/namespaces", None),
            pair("list", "namespaces")
        );
        assert_eq!(
            kind(&Method::GET, "/api/v1/namespaces/ns", None),
            pair("get", "namespaces")
        );
        assert_eq!(
            kind(
                &Method::PUT,
                "/api/v1/namespaces/ns/persistentvolumeclaims/c1/status",
                None
            ),
            pair("update", "persistentvolumeclaims/status")
        );
        assert_eq!(
            kind(
                &Method::POST,
                "/api/v1/namespaces/ns/serviceaccounts/sa/token",
                None
            ),
            pair("create", "serviceaccounts/token")
        );
        assert_eq!(kind(&Method::GET, "/version", None), pair("get", ""));
        assert_eq!(
            kind(&Method::HEAD, "/api/v1/nodes", None),
            pair("head", "nodes")
        );
    }
}

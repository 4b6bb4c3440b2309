//! Kubeconfig documents for the admin and for ServiceAccounts (built in memory).

use std::path::Path;

use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

/// Name of the single cluster and context in every kubeconfig testenv writes.
const CONTEXT: &str = "testenv";

/// Failure to render a kubeconfig as text.
#[derive(Debug, thiserror::Error)]
#[error("rendering a kubeconfig: {0}")]
pub struct KubeconfigError(#[from] serde_saphyr::SerializeError);

/// How a kubeconfig user proves who it is.
pub(crate) enum Credentials<'a> {
    /// A client certificate and its key, as files.
    ClientCertificate { cert: &'a Path, key: &'a Path },
    /// A bearer token (from a TokenRequest).
    Token(&'a str),
}

/// A kubeconfig with one cluster, one user and one context that is current.
pub(crate) fn kubeconfig(
    server_url: &str,
    ca_cert: &Path,
    user: &str,
    credentials: &Credentials<'_>,
) -> Kubeconfig {
    let auth_info = match credentials {
        Credentials::ClientCertificate { cert, key } => AuthInfo {
            client_certificate: Some(cert.display().to_string()),
            client_key: Some(key.display().to_string()),
            ..AuthInfo::default()
        },
        Credentials::Token(token) => AuthInfo {
            token: Some((*token).to_owned().into()),
            ..AuthInfo::default()
        },
    };
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: CONTEXT.into(),
            cluster: Some(Cluster {
                server: Some(server_url.into()),
                certificate_authority: Some(ca_cert.display().to_string()),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(auth_info),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: CONTEXT.into(),
            context: Some(Context {
                cluster: CONTEXT.into(),
                user: Some(user.into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(CONTEXT.into()),
        ..Kubeconfig::default()
    }
}

/// The kubeconfig as YAML, the way kubectl and client-go read it.
pub(crate) fn render(config: &Kubeconfig) -> Result<String, KubeconfigError> {
    Ok(serde_saphyr::to_string(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(config: &Kubeconfig) -> Kubeconfig {
        Kubeconfig::from_yaml(&render(config).unwrap()).unwrap()
    }

    #[test]
    fn admin_kubeconfig_points_at_the_certificate_files() {
        let config = kubeconfig(
            "https://127.0.0.1:6443",
            Path::new("/p/ca.crt"),
            "admin",
            &Credentials::ClientCertificate {
                cert: Path::new("/p/admin.crt"),
                key: Path::new("/p/admin.key"),
            },
        );
        let read = roundtrip(&config);
        assert_eq!(read.current_context.as_deref(), Some("testenv"));
        let cluster = read.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority.as_deref(), Some("/p/ca.crt"));
        let user = read.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate.as_deref(), Some("/p/admin.crt"));
        assert_eq!(user.client_key.as_deref(), Some("/p/admin.key"));
        assert_eq!(read.auth_infos[0].name, "admin");
    }

    #[test]
    fn token_kubeconfig_keeps_the_token() {
        let config = kubeconfig(
            "https://127.0.0.1:1",
            Path::new("/p/ca.crt"),
            "sa",
            &Credentials::Token("abc.def"),
        );
        let text = render(&config).unwrap();
        assert!(text.contains("abc.def"), "{text}");
        let read = roundtrip(&config);
        let context = read.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.user.as_deref(), Some("sa"));
    }
}

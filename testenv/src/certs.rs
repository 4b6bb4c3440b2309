//! Certificates and keys of one local control plane: computed in memory, written by the caller.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The group that kube-apiserver's RBAC bootstrap policy binds to `cluster-admin`.
pub(crate) const ADMIN_GROUP: &str = "system:masters";
/// Common name (user name) of the admin client certificate.
pub(crate) const ADMIN_USER: &str = "testenv-admin";

/// Names the serving certificate is valid for: clients connect to 127.0.0.1, people may type
/// `localhost`.
const SERVING_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// Failure to generate a key or certificate.
#[derive(Debug, thiserror::Error)]
#[error("generating the {what}: {source}")]
pub struct CertError {
    what: &'static str,
    #[source]
    source: rcgen::Error,
}

impl CertError {
    fn wrap(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Self { what, source }
    }
}

/// Every PEM file a control plane needs. All certificates are signed by one throw-away CA.
#[derive(Clone)]
pub(crate) struct PlaneCredentials {
    /// CA that signs the serving and client certificates (`--client-ca-file`, kubeconfig CA).
    pub ca_cert_pem: String,
    /// kube-apiserver's serving certificate (`--tls-cert-file`).
    pub serving_cert_pem: String,
    /// Key of the serving certificate (`--tls-private-key-file`).
    pub serving_key_pem: String,
    /// Client certificate of the admin user, in group `system:masters`.
    pub admin_cert_pem: String,
    /// Key of the admin client certificate.
    pub admin_key_pem: String,
    /// Key that signs ServiceAccount tokens (ECDSA P-256, PKCS#8).
    pub service_account_key_pem: String,
    /// Its public half, which verifies them (the apiserver does not read PKCS#8 private keys
    /// as verification keys).
    pub service_account_public_key_pem: String,
}

impl std::fmt::Debug for PlaneCredentials {
    // Keys stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaneCredentials").finish_non_exhaustive()
    }
}

/// Generates a fresh CA, serving certificate, admin client certificate and ServiceAccount key.
pub(crate) fn generate() -> Result<PlaneCredentials, CertError> {
    let ca_key = KeyPair::generate().map_err(CertError::wrap("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = common_name("testenv-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(CertError::wrap("CA certificate"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let serving_key = KeyPair::generate().map_err(CertError::wrap("serving key"))?;
    let mut serving_params = CertificateParams::new(SERVING_NAMES.map(String::from).to_vec())
        .map_err(CertError::wrap("serving certificate names"))?;
    serving_params.distinguished_name = common_name("kube-apiserver");
    serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving_params
        .signed_by(&serving_key, &issuer)
        .map_err(CertError::wrap("serving certificate"))?;

    let admin_key = KeyPair::generate().map_err(CertError::wrap("admin key"))?;
    let mut admin_params = CertificateParams::default();
    // The apiserver maps CN to the user name and O to its groups.
    let mut admin_name = common_name(ADMIN_USER);
    admin_name.push(DnType::OrganizationName, ADMIN_GROUP);
    admin_params.distinguished_name = admin_name;
    admin_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin_params
        .signed_by(&admin_key, &issuer)
        .map_err(CertError::wrap("admin client certificate"))?;

    let service_account_key =
        KeyPair::generate().map_err(CertError::wrap("service account signing key"))?;

    Ok(PlaneCredentials {
        ca_cert_pem: ca_cert.pem(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        service_account_key_pem: service_account_key.serialize_pem(),
        service_account_public_key_pem: service_account_key.public_key_pem(),
    })
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_pem_of_the_right_kind() {
        let creds = generate().unwrap();
        for cert in [
            &creds.ca_cert_pem,
            &creds.serving_cert_pem,
            &creds.admin_cert_pem,
        ] {
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        }
        for key in [
            &creds.serving_key_pem,
            &creds.admin_key_pem,
            &creds.service_account_key_pem,
        ] {
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert!(
            creds
                .service_account_public_key_pem
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[test]
    fn each_plane_gets_its_own_ca() {
        assert_ne!(
            generate().unwrap().ca_cert_pem,
            generate().unwrap().ca_cert_pem
        );
    }

    #[test]
    fn debug_output_hides_keys() {
        let shown = format!("{:?}", generate().unwrap());
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}

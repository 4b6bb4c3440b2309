//! Builders shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::Arc;

use backend_nfs::NfsProvisioner;
use backend_nfs::parameters::NfsParameters;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use provisioner_core::provisioner::{
    ClaimIdentity, DeleteRequest, ProvisionError, ProvisionRequest, ProvisionedVolume, Provisioner,
};

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn mk_claim(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(map(labels)),
            annotations: Some(map(annotations)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteMany".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("50Mi".into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

pub fn mk_class(parameters: &[(&str, &str)]) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some("nfs-storageclass".into()),
            ..ObjectMeta::default()
        },
        provisioner: "nfs-test".into(),
        parameters: Some(map(parameters)),
        ..StorageClass::default()
    }
}

/// A claim ready to provision: the class's parameters parsed by the provisioner.
pub struct Case {
    pub claim: PersistentVolumeClaim,
    pub class: StorageClass,
    pub volume_name: String,
}

impl Case {
    pub fn new(claim: PersistentVolumeClaim, class: StorageClass, volume_name: &str) -> Self {
        Self {
            claim,
            class,
            volume_name: volume_name.into(),
        }
    }

    pub fn parameters(&self, provisioner: &NfsProvisioner) -> NfsParameters {
        provisioner
            .parse_parameters(self.class.parameters.as_ref().unwrap())
            .expect("valid class")
    }

    pub async fn provision(
        &self,
        provisioner: &NfsProvisioner,
    ) -> Result<PersistentVolume, ProvisionError> {
        let request = ProvisionRequest::new(
            self.volume_name.clone(),
            Arc::new(self.claim.clone()),
            Arc::new(self.class.clone()),
            self.parameters(provisioner),
        );
        let volume = provisioner.provision(request).await?;
        Ok(mk_pv(&self.volume_name, volume))
    }

    pub fn delete_request(
        &self,
        provisioner: &NfsProvisioner,
        volume: Option<PersistentVolume>,
    ) -> DeleteRequest<NfsParameters> {
        let claim = ClaimIdentity::new(
            self.claim.metadata.namespace.clone().unwrap(),
            self.claim.metadata.name.clone().unwrap(),
            self.claim.metadata.uid.clone().unwrap(),
        );
        let request = DeleteRequest::new(self.volume_name.clone(), claim, "nfs-storageclass")
            .with_parameters(self.parameters(provisioner));
        // As the controller does: a saved volume, or else the claim it was provisioned for.
        match volume {
            Some(volume) => request.with_volume(Arc::new(volume)),
            None => request.with_claim_object(Arc::new(self.claim.clone())),
        }
    }
}

/// The PersistentVolume the controller would save for `volume` (the parts the backend reads).
pub fn mk_pv(name: &str, volume: ProvisionedVolume) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(volume.annotations),
            labels: Some(volume.labels),
            ..ObjectMeta::default()
        },
        spec: Some(volume.source),
        ..PersistentVolume::default()
    }
}

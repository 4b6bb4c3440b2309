//! A complete dynamic provisioner: one directory per claim under a local folder.
//!
//! Run with `cargo run -p provisioner-examples --example directory_backend` (see the README).
use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::HostPathVolumeSource;
use provisioner_core::controller::ProvisionController;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};

/// The name StorageClasses put in `provisioner:` to use this backend.
const NAME: &str = "example.com/directory";

/// StorageClass parameters: `archiveOnDelete` keeps data as `archived-<name>`.
#[derive(Clone, Debug)]
struct DirectoryParameters {
    archive_on_delete: bool,
}

/// Creates `<root>/<volume name>` per claim.
struct DirectoryBackend {
    root: PathBuf,
}

impl Provisioner for DirectoryBackend {
    type Parameters = DirectoryParameters;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<DirectoryParameters, ParameterError> {
        ParameterError::reject_unknown(raw, &["archiveOnDelete"])?;
        let archive_on_delete = match raw.get("archiveOnDelete").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ParameterError::invalid(
                    "archiveOnDelete",
                    "expected true or false",
                ));
            }
        };
        Ok(DirectoryParameters { archive_on_delete })
    }

    async fn provision(
        &self,
        request: ProvisionRequest<DirectoryParameters>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        // Keyed by the volume name, so a repeated call finds the same directory.
        let path = self.root.join(&request.volume_name);
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(ProvisionError::final_error)?;
        Ok(ProvisionedVolume::host_path(HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some("Directory".to_owned()),
        }))
    }

    async fn delete(
        &self,
        request: DeleteRequest<DirectoryParameters>,
    ) -> Result<DeleteOutcome, DeleteError> {
        let path = self.root.join(&request.volume_name);
        // The parameters recorded when the volume was provisioned, not today's class.
        let archive = request.parameters.is_some_and(|p| p.archive_on_delete);
        let result = if archive {
            let archived = self.root.join(format!("archived-{}", request.volume_name));
            tokio::fs::rename(&path, archived).await
        } else {
            tokio::fs::remove_dir_all(&path).await
        };
        match result {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(DeleteError::failed(error))
            }
            _ => Ok(DeleteOutcome::Deleted), // Deleted now, or already.
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = provisioner_examples::volume_root().await?;
    // $KUBECONFIG's cluster, or (without it) a local control plane started here.
    let cluster = provisioner_examples::Cluster::connect().await?;
    let backend = DirectoryBackend { root: root.clone() };
    let controller = ProvisionController::new(cluster.client(), NAME, backend);
    cluster.run(controller, NAME, &root).await
}

//! `nfs-provisioner`: dynamic NFS subdirectory provisioner.

fn main() -> anyhow::Result<()> {
    Ok(())
}

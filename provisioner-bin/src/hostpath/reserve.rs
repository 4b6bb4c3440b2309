//! [`ReservedSpace`]: space kept free on every disk.

use backend_hostpath::base_path::BasePath;
use backend_hostpath::fs::{Created, FsError, Removed, VolumeFilesystem};
use backend_hostpath::params::DirectorySettings;
use provisioner_core::volume_path::VolumePath;

/// A [`VolumeFilesystem`] that reports `reserved` bytes less free space on every disk than
/// there is, so placement leaves them free: a volume that does not fit beside the reserve
/// goes to another path, or (with *reschedule*) to another node. Everything else is passed
/// through.
///
/// ```
/// use backend_hostpath::fs::{HostFilesystem, TimedFilesystem};
/// use provisioner_bin::hostpath::reserve::ReservedSpace;
///
/// let fs = TimedFilesystem::new(ReservedSpace::new(HostFilesystem, 10 << 30));
/// # let _ = fs;
/// ```
#[derive(Debug, Clone)]
pub struct ReservedSpace<F> {
    inner: F,
    reserved: u64,
}

impl<F: VolumeFilesystem> ReservedSpace<F> {
    /// Wraps `inner`, keeping `reserved` bytes free on every disk.
    pub fn new(inner: F, reserved: u64) -> Self {
        Self { inner, reserved }
    }
}

impl<F: VolumeFilesystem> VolumeFilesystem for ReservedSpace<F> {
    fn create_volume_dir(
        &self,
        base: &BasePath,
        dir: &VolumePath,
        settings: &DirectorySettings,
    ) -> Result<Created, FsError> {
        self.inner.create_volume_dir(base, dir, settings)
    }

    fn remove_volume_dir(&self, base: &BasePath, dir: &VolumePath) -> Result<Removed, FsError> {
        self.inner.remove_volume_dir(base, dir)
    }

    fn available_bytes(&self, base: &BasePath) -> Result<u64, FsError> {
        Ok(self
            .inner
            .available_bytes(base)?
            .saturating_sub(self.reserved))
    }

    fn write_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
        dir: &VolumePath,
    ) -> Result<(), FsError> {
        self.inner.write_marker(base, volume_name, dir)
    }

    fn read_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
    ) -> Result<Option<VolumePath>, FsError> {
        self.inner.read_marker(base, volume_name)
    }

    fn remove_marker(&self, base: &BasePath, volume_name: &str) -> Result<(), FsError> {
        self.inner.remove_marker(base, volume_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records calls; reports a fixed free space.
    #[derive(Default)]
    struct FixedSpace {
        free: u64,
        calls: Mutex<Vec<&'static str>>,
    }

    impl VolumeFilesystem for FixedSpace {
        fn create_volume_dir(
            &self,
            _: &BasePath,
            _: &VolumePath,
            _: &DirectorySettings,
        ) -> Result<Created, FsError> {
            self.calls.lock().unwrap().push("create");
            Ok(Created::New)
        }
        fn remove_volume_dir(&self, _: &BasePath, _: &VolumePath) -> Result<Removed, FsError> {
            self.calls.lock().unwrap().push("remove");
            Ok(Removed::Removed)
        }
        fn available_bytes(&self, _: &BasePath) -> Result<u64, FsError> {
            Ok(self.free)
        }
        fn write_marker(&self, _: &BasePath, _: &str, _: &VolumePath) -> Result<(), FsError> {
            self.calls.lock().unwrap().push("write marker");
            Ok(())
        }
        fn read_marker(&self, _: &BasePath, _: &str) -> Result<Option<VolumePath>, FsError> {
            self.calls.lock().unwrap().push("read marker");
            Ok(None)
        }
        fn remove_marker(&self, _: &BasePath, _: &str) -> Result<(), FsError> {
            self.calls.lock().unwrap().push("remove marker");
            Ok(())
        }
    }

    #[test]
    fn reserved_space_is_subtracted_from_free_space_and_never_below_zero() {
        let base = BasePath::parse("/data").unwrap();
        let fs = ReservedSpace::new(
            FixedSpace {
                free: 100,
                ..FixedSpace::default()
            },
            30,
        );
        assert_eq!(fs.available_bytes(&base).unwrap(), 70);
        let fs = ReservedSpace::new(
            FixedSpace {
                free: 100,
                ..FixedSpace::default()
            },
            300,
        );
        assert_eq!(fs.available_bytes(&base).unwrap(), 0);
    }

    #[test]
    fn reserved_space_passes_everything_else_through() {
        let base = BasePath::parse("/data").unwrap();
        let dir = VolumePath::parse("pvc-1_ns_claim").unwrap();
        let fs = ReservedSpace::new(FixedSpace::default(), 1);
        fs.write_marker(&base, "pvc-1", &dir).unwrap();
        fs.create_volume_dir(&base, &dir, &DirectorySettings::default())
            .unwrap();
        fs.read_marker(&base, "pvc-1").unwrap();
        fs.remove_volume_dir(&base, &dir).unwrap();
        fs.remove_marker(&base, "pvc-1").unwrap();
        assert_eq!(
            *fs.inner.calls.lock().unwrap(),
            [
                "write marker",
                "create",
                "read marker",
                "remove",
                "remove marker"
            ]
        );
    }
}

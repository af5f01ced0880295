//! How full a filesystem is, as `df` counts it: used ÷ (used + available
//! to unprivileged users), the root-reserved blocks left out; and which
//! filesystem it is, so two paths can be told to share one.

use ogel_plugin_sdk::DiskUse;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The use of the filesystem holding `path` (`None`: it cannot be read).
pub fn usage(path: &Path) -> Option<DiskUse> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let block = s.fragment_size().max(1);
    let used = s
        .blocks()
        .saturating_sub(s.blocks_free())
        .saturating_mul(block);
    let usable = used.saturating_add(s.blocks_available().saturating_mul(block));
    let device = std::fs::metadata(path).ok()?.dev();
    Some(DiskUse {
        used_bytes: used,
        size_bytes: usable,
        device,
    })
}

/// The used share (0.0–1.0) of a reading.
pub fn used_ratio(d: &DiskUse) -> f64 {
    if d.size_bytes == 0 {
        return 0.0;
    }
    (d.used_bytes as f64 / d.size_bytes as f64).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_filesystem() {
        let d = usage(Path::new("/")).expect("statvfs of /");
        let ratio = used_ratio(&d);
        assert!(ratio > 0.0 && ratio <= 1.0, "{d:?}");
        assert!(d.size_bytes >= d.used_bytes);
        assert_eq!(usage(Path::new("/")).map(|d| d.device), Some(d.device));
        assert_eq!(usage(Path::new("/no/such/path")), None);
    }
}

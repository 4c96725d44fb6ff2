//! A small tmpfs mounted on a test's directory, so a full disk is the kernel's real ENOSPC. Tests
//! run as root (CAP_SYS_ADMIN); the guard unmounts it when dropped, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::output::describe;

/// A tmpfs of `size` mounted on `dir` for the life of the guard.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`6m`, `64k`) on `dir`, an existing directory; its root is mode
    /// 0755, owned by root.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "this test needs to mount a tmpfs (as root, with CAP_SYS_ADMIN) to fill a disk for real\n{}",
            describe(&output)
        );
        Tmpfs { dir: dir.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
    }
}

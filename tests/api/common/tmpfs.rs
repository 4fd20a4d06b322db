//! A small tmpfs the test mounts itself: a disk that really fills up.
//! Needs root (as in CI); elsewhere the test is skipped loudly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `size` as mount(8) takes it, e.g. `"2m"`.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status();
        if status.is_ok_and(|s| s.success()) {
            return Some(Tmpfs { dir });
        }
        assert!(
            !super::in_ci(),
            "CI=true: cannot mount a tmpfs (the disk-full tests need root)"
        );
        eprintln!(
            "\n!!!!! SKIPPED: disk-full test: cannot mount a tmpfs here (needs root). In CI this fails. !!!!!\n"
        );
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free byte with a file of its own; remove it to free them.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Byte by byte into the last partial block too.
        while file.write(&[0]).is_ok_and(|n| n == 1) {}
        let _ = file.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

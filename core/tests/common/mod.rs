//! Helpers shared by the core's integration tests.

use mcm_core::flow::Domain;

/// A fresh domain in tmpfs, removed when the returned directory drops.
pub fn domain() -> (tempfile::TempDir, Domain) {
    let dir = tempfile::Builder::new()
        .prefix("mcm-test-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let d = Domain::open(dir.path()).unwrap();
    (dir, d)
}

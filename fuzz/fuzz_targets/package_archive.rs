//! Uploaded code packages (tar, tar.gz, zip) unpacked as a deploy does, with small
//! limits: whatever the archive, nothing lands outside the destination.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_runtime::package::{unpack, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("package");
    std::fs::write(&archive, data).unwrap();
    let root = dir.path().join("root");
    let dest = root.join("unpacked");
    std::fs::create_dir(&root).unwrap();
    let limits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let _ = unpack(&archive, &dest, limits);
    // Only the destination may have been written.
    for entry in std::fs::read_dir(&root).unwrap() {
        assert_eq!(entry.unwrap().path(), dest, "something was written beside the destination");
    }
});

//! Where things live in the checkout.

use std::path::PathBuf;

/// Root of the cargo workspace (the folder above `xtask/`).
pub fn root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Folder where `cargo xtask setup` keeps what it provisions (ignored by git, removed by
/// `cargo clean`, rebuilt by the next setup). Symbolic links are resolved, so that checkouts
/// sharing one `target` folder record the same paths (and libtorch is not rebuilt).
pub fn setup_dir() -> PathBuf {
    let target = root().join("target");
    std::fs::canonicalize(&target)
        .unwrap_or(target)
        .join("setup")
}

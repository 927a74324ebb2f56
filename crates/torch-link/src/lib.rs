//! Link settings for packages whose binaries, tests or examples call libtorch through tch.
//!
//! torch-sys links libtorch dynamically but leaves two problems to the final binary:
//! the loader has to find libtorch at run time (we embed an rpath instead of asking for
//! `LD_LIBRARY_PATH`), and the linker's `--as-needed` drops `libtorch_cuda.so`, because no
//! symbol of it is referenced directly, so CUDA silently disappears at run time. Call
//! [`configure`] from the `build.rs` of every package that has such targets; the package must
//! depend on `torch-sys` directly so that cargo hands it `DEP_TCH_LIBTORCH_LIB`.

use std::env;
use std::path::{Path, PathBuf};

/// Environment variable through which torch-sys (`links = "tch"`) publishes its lib folder.
const LIBTORCH_LIB_VAR: &str = "DEP_TCH_LIBTORCH_LIB";

/// Emits the linker arguments: an rpath to libtorch's lib folder, `libtorch_cuda` kept as a
/// needed library when this libtorch has one, and the libtorch version as the compile-time
/// variable `LIBTORCH_BUILD_VERSION`.
pub fn configure() {
    let lib = libtorch_lib_dir();
    println!("cargo:rerun-if-env-changed={LIBTORCH_LIB_VAR}");
    // DT_RPATH (not RUNPATH) so that libtorch's own dependencies resolve from it as well.
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    for cuda_lib in ["torch_cuda", "c10_cuda"] {
        if lib.join(format!("lib{cuda_lib}.so")).exists() {
            println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed");
            println!("cargo:rustc-link-arg=-l{cuda_lib}");
            println!("cargo:rustc-link-arg=-Wl,--pop-state");
        }
    }
    let version = libtorch_version(&lib).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LIBTORCH_BUILD_VERSION={version}");
}

fn libtorch_lib_dir() -> PathBuf {
    match env::var(LIBTORCH_LIB_VAR) {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => panic!(
            "{LIBTORCH_LIB_VAR} is not set: the package calling torch_link::configure() must \
             list torch-sys among its [dependencies]"
        ),
    }
}

/// Version of the libtorch whose `lib` folder is `lib_dir`: the `build-version` file of a
/// libtorch archive, or `version.py` of a PyTorch installation.
pub fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_owned());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix("__version__")?.split_once('=')?.1.trim();
        Some(value.trim_matches(|c| c == '\'' || c == '"').to_owned())
    })
}

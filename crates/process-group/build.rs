//! Compiles the C++ shim over libtorch's c10d against the libtorch that torch-sys links
//! (its `include` folders), gloo's headers from the system (Debian's `libgloo-dev`, which
//! `cargo xtask setup` installs) and, with the `nccl` feature, the NCCL and CUDA headers.

use std::env;
use std::path::{Path, PathBuf};

/// Where torch-sys (`links = "tch"`) publishes libtorch's lib folder.
const LIBTORCH_LIB_VAR: &str = "DEP_TCH_LIBTORCH_LIB";

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed={LIBTORCH_LIB_VAR}");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let lib = PathBuf::from(env::var(LIBTORCH_LIB_VAR).unwrap_or_else(|_| {
        panic!("{LIBTORCH_LIB_VAR} is not set: process-group must depend on torch-sys")
    }));
    let root = lib.parent().expect("libtorch lib folder has a parent");
    let gloo = Path::new("/usr/include/gloo/config.h");
    if !gloo.exists() {
        panic!(
            "{} is missing: install gloo's headers with `cargo xtask setup` (Debian's libgloo-dev)",
            gloo.display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .include("/usr/include")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .file("csrc/shim.cpp")
        .file("csrc/grad_hooks.cpp");
    if env::var_os("CARGO_FEATURE_NCCL").is_some() {
        configure_nccl(&mut build, root, &lib);
    }
    build.compile("process_group_shim");
    // The c10d symbols live in libtorch_cpu (Gloo) and libtorch_cuda (NCCL); gloo itself is
    // compiled into libtorch, so the system's libgloo is never linked.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
    torch_link::configure();
}

/// NCCL needs libtorch_cuda, `nccl.h` and the CUDA runtime headers with `crt/` and CCCL's
/// `nv/target`: a CUDA toolkit (`$CUDA_HOME`, `/usr/local/cuda`) or the `nvidia-*` wheels
/// beside torch in the same site-packages (torch's own bring nccl and the runtime; the
/// `nvidia-cuda-crt` and `nvidia-cuda-cccl` wheels add the rest).
fn configure_nccl(build: &mut cc::Build, torch_root: &Path, lib: &Path) {
    if !lib.join("libtorch_cuda.so").exists() {
        panic!(
            "the nccl feature needs a libtorch with CUDA, but {} has no libtorch_cuda.so",
            lib.display()
        );
    }
    let nvidia = torch_root.parent().map(|p| p.join("nvidia"));
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = env::var_os("CUDA_HOME") {
        roots.push(PathBuf::from(home).join("include"));
    }
    roots.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(nvidia) = &nvidia {
        // CUDA 13 wheels put the runtime, crt and CCCL headers in cu13/include; CUDA 12
        // wheels have one folder per package.
        for dir in [
            "nccl/include",
            "cu13/include",
            "cu13/include/cccl",
            "cuda_runtime/include",
        ] {
            roots.push(nvidia.join(dir));
        }
    }
    let roots: Vec<PathBuf> = roots.into_iter().filter(|r| r.is_dir()).collect();
    for header in ["nccl.h", "cuda_runtime.h", "crt/host_config.h", "nv/target"] {
        if !roots.iter().any(|r| r.join(header).exists()) {
            panic!(
                "the nccl feature needs {header}, found in none of {}; set CUDA_HOME to a CUDA \
                 toolkit or install the nvidia-nccl, nvidia-cuda-runtime, nvidia-cuda-crt and \
                 nvidia-cuda-cccl wheels beside torch",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    build
        .includes(&roots)
        .define("USE_C10D_NCCL", None)
        .define("USE_CUDA", None)
        .file("csrc/nccl.cpp");
    println!("cargo:rustc-link-lib=torch_cuda");
}

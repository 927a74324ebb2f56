//! `cargo xtask device-check`: the bundle for a GPU machine that has torch (CUDA) in a Python
//! environment but no cargo and no libhdf5. The bundle is the stripped release binary of the
//! `device-check` crate, the shared libraries it needs that are neither libtorch's (taken from
//! that machine's torch) nor the C runtime's (HDF5 and its dependencies), and `run.sh`, which
//! points the binary at that machine's `torch/lib` and runs every check. With `--dry-run` it
//! builds the bundle, checks its size and lists the checks; without, it also runs them here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{command, setup, workspace};

/// The bundle folder, relative to the workspace root: the folder to carry to the GPU machine.
pub const BUNDLE_DIR: &str = "target/device-bundle";
/// The most the bundle may weigh (what a device machine's carry takes).
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;
/// The Python environment with torch on the GPU machine (`TORCH_PYTHON` overrides it).
pub const TORCH_PYTHON: &str = "/opt/torch/.venv/bin/python";

/// Libraries the GPU machine provides by name: libtorch's and the C runtime. (Whatever else
/// resolves into the torch wheel's site-packages, CUDA's `nvidia-*` wheels, comes with that
/// machine's torch too.)
const PROVIDED: &[&str] = &[
    "libtorch",
    "libc10",
    "libgomp",
    "libc.so",
    "libm.so",
    "libdl.so",
    "librt.so",
    "libpthread.so",
    "ld-linux",
    "linux-vdso",
    "libstdc++",
    "libgcc_s",
];

/// Builds the bundle; runs it here too unless `dry_run`.
pub fn run(dry_run: bool) -> anyhow::Result<()> {
    let provisioned = setup::ensure()?;
    let root = workspace::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    command::run(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "device-check",
    ]))?;
    let bundle = root.join(BUNDLE_DIR);
    if bundle.exists() {
        fs::remove_dir_all(&bundle).with_context(|| format!("removing {}", bundle.display()))?;
    }
    fs::create_dir_all(bundle.join("bin"))?;
    fs::create_dir_all(bundle.join("lib"))?;
    let binary = bundle.join("bin/device-check");
    fs::copy(root.join("target/release/device-check"), &binary)?;
    command::run(Command::new("strip").arg("--strip-all").arg(&binary))?;
    let site_packages = provisioned
        .libtorch
        .parent()
        .context("libtorch has no parent folder")?;
    for (name, lib) in carried_libraries(&binary, site_packages)? {
        // Under the name the binary asks for, the file behind any symlink.
        fs::copy(&lib, bundle.join("lib").join(&name))
            .with_context(|| format!("copying {}", lib.display()))?;
    }
    let script = bundle.join("run.sh");
    fs::write(&script, RUN_SH)?;
    command::run(Command::new("chmod").arg("+x").arg(&script))?;
    let size = folder_bytes(&bundle)?;
    println!(
        "bundle {} ({:.1} MiB of at most {} MiB)",
        bundle.display(),
        size as f64 / (1 << 20) as f64,
        MAX_BUNDLE_BYTES >> 20
    );
    if size > MAX_BUNDLE_BYTES {
        bail!(
            "{} is {size} bytes, over {MAX_BUNDLE_BYTES}",
            bundle.display()
        );
    }
    // The stripped binary starts with the bundled libraries and lists its checks.
    let listed = command::stdout(Command::new(&binary).arg("--list").env(
        "LD_LIBRARY_PATH",
        library_path(&bundle, &provisioned.libtorch.join("lib")),
    ))?;
    println!("checks:\n{listed}");
    println!(
        "on the GPU machine: carry {BUNDLE_DIR} and run `bash {BUNDLE_DIR}/run.sh` (torch from {TORCH_PYTHON}; \
         the summary goes to $OUT/device-check.json, else {BUNDLE_DIR}/out)"
    );
    if !dry_run {
        command::run(
            Command::new("bash")
                .arg(&script)
                .env("TORCH_PYTHON", &provisioned.python),
        )?;
    }
    Ok(())
}

fn library_path(bundle: &Path, torch_lib: &Path) -> String {
    format!("{}:{}", torch_lib.display(), bundle.join("lib").display())
}

/// The shared libraries `binary` loads that the GPU machine does not provide (not libtorch's,
/// not the C runtime's, not under the torch wheel's `site_packages`): the name it asks for
/// and the file here.
fn carried_libraries(
    binary: &Path,
    site_packages: &Path,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let listing = command::stdout(Command::new("ldd").arg(binary))?;
    let mut libs = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        let Some((name, rest)) = line.split_once(" => ") else {
            continue;
        };
        if PROVIDED.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let path = rest.split(" (").next().unwrap_or("").trim();
        if path.is_empty() || path == "not found" {
            bail!("{} needs {name}, which is not found here", binary.display());
        }
        if Path::new(path).starts_with(site_packages) {
            continue;
        }
        libs.push((name.to_owned(), PathBuf::from(path)));
    }
    Ok(libs)
}

fn folder_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The script of the bundle (no cargo, torch in a Python environment).
const RUN_SH: &str = r#"#!/usr/bin/env bash
# The speech-dino device check on a GPU machine: CUDA against CPU comparisons and timings at
# VoxCeleb size (see `device-check --list`). Needs torch 2.11 with CUDA in $TORCH_PYTHON's
# environment (default /opt/torch/.venv/bin/python); no cargo, no libhdf5 (bundled).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${TORCH_PYTHON:-/opt/torch/.venv/bin/python}"
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The binary was linked against the build machine's libtorch: load this torch's CUDA parts
# first, so that CUDA is there whatever that libtorch had.
preload=""
for lib in libtorch_cuda.so libc10_cuda.so; do
    if [ -e "$torch_lib/$lib" ]; then preload="$preload:$torch_lib/$lib"; fi
done
out="${OUT:-$here/out}"
mkdir -p "$out"
poll=""
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    (while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done) \
        >"$out/gpu-memory.log" 2>/dev/null &
    poll=$!
fi
status=0
LD_PRELOAD="${preload#:}" "$here/bin/device-check" --out "$out/device-check.json" "$@" \
    2>&1 | tee "$out/device-check.log" || status=$?
if [ -n "$poll" ]; then kill "$poll" 2>/dev/null || true; fi
if [ -s "$out/gpu-memory.log" ]; then
    echo "peak GPU memory in use (whole device, MiB): $(sort -n "$out/gpu-memory.log" | tail -1)"
fi
exit "$status"
"#;

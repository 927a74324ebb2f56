//! `cargo xtask setup`: makes libtorch 2.11, the system libraries and the Python reference
//! tools available, with no manual step, and tells cargo where they are.
//!
//! Order of preference for libtorch: `$LIBTORCH`; else the `torch` package seen by the
//! project's Python environment, which is created under `target/setup/pyenv` with the system
//! site-packages visible (so a machine that already has torch 2.11, like the GPU machines,
//! reuses it) and completed with `pip install` from PyPI otherwise. The result is written to
//! `target/setup/cargo-env.toml`, which `.cargo/config.toml` includes, so plain
//! `cargo build` / `cargo test` work in any new shell.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::command;
use crate::workspace;

/// The libtorch release tch 0.24 is built against.
pub const TORCH_VERSION: &str = "2.11.0";

/// The Python environment's packages: torch provides libtorch; the rest compute the
/// reference values that golden tests and benchmarks compare against.
pub const PYTHON_REQUIREMENTS: &[&str] = &[
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    "pyarrow==26.0.1",
    "h5py==3.16.0",
    "faiss-cpu==1.15.1",
    // FFmpeg's libraries (PyAV): the reference decoder and the AAC/M4A encoder of golden tests.
    "av==18.1.0",
];

/// Debian packages needed to build the workspace: HDF5 (through pkg-config), a C++
/// compiler for tch's and process-group's C++ shims, and gloo's headers, which libtorch's
/// `ProcessGroupGloo.hpp` includes but the torch wheel does not ship.
const SYSTEM_PACKAGES: &[(&str, SystemCheck)] = &[
    ("pkg-config", SystemCheck::Program("pkg-config")),
    ("libhdf5-dev", SystemCheck::PkgConfig("hdf5")),
    ("g++", SystemCheck::Program("c++")),
    (
        "libgloo-dev",
        SystemCheck::File("/usr/include/gloo/config.h"),
    ),
];

enum SystemCheck {
    Program(&'static str),
    PkgConfig(&'static str),
    /// A file the package installs (for packages without a pkg-config entry).
    File(&'static str),
}

/// What setup provisioned, as recorded in `target/setup/provisioned.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provisioned {
    /// libtorch root (has `include/` and `lib/`).
    pub libtorch: PathBuf,
    pub libtorch_version: String,
    /// Whether this libtorch ships `libtorch_cuda.so`.
    pub libtorch_cuda: bool,
    /// Python of the project environment (torch, torchaudio, scikit-learn, ...).
    pub python: PathBuf,
    /// `PYTHON_REQUIREMENTS` at the time of provisioning.
    pub requirements: Vec<String>,
}

impl Provisioned {
    fn is_current(&self) -> bool {
        let libtorch_env_matches =
            env::var_os("LIBTORCH").is_none_or(|l| Path::new(&l) == self.libtorch);
        self.requirements == PYTHON_REQUIREMENTS
            && libtorch_env_matches
            && self.libtorch.join("lib").is_dir()
            && self.python.exists()
    }
}

fn record_path() -> PathBuf {
    workspace::setup_dir().join("provisioned.json")
}

/// Returns the provisioned environment, running the full setup only when something is
/// missing or out of date. Every other xtask command starts with this.
pub fn ensure() -> anyhow::Result<Provisioned> {
    if let Ok(text) = fs::read_to_string(record_path())
        && let Ok(record) = serde_json::from_str::<Provisioned>(&text)
        && record.is_current()
        && workspace::setup_dir().join("cargo-env.toml").exists()
    {
        return Ok(record);
    }
    run(false)
}

/// Full, idempotent setup; `force` reinstalls the Python packages.
pub fn run(force: bool) -> anyhow::Result<Provisioned> {
    ensure_system_packages()?;
    let python = ensure_python_env(force)?;
    let (libtorch, libtorch_version) = locate_libtorch(&python)?;
    let libtorch_cuda = libtorch.join("lib").join("libtorch_cuda.so").exists();
    let provisioned = Provisioned {
        libtorch,
        libtorch_version,
        libtorch_cuda,
        python,
        requirements: PYTHON_REQUIREMENTS.iter().map(|s| s.to_string()).collect(),
    };
    write_cargo_env(&provisioned)?;
    stage_kit::write_bytes_atomically(
        &record_path(),
        serde_json::to_string_pretty(&provisioned)?.as_bytes(),
    )?;
    println!(
        "libtorch {} at {}{}\npython environment: {}",
        provisioned.libtorch_version,
        provisioned.libtorch.display(),
        if provisioned.libtorch_cuda {
            " (with CUDA libraries)"
        } else {
            " (CPU only)"
        },
        provisioned.python.display()
    );
    Ok(provisioned)
}

fn ensure_system_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(_, check)| !system_check_passes(check))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() || find_program("apt-get").is_none() {
        bail!(
            "missing system packages: {}. Install them with:\n    sudo apt-get update && sudo {install}",
            missing.join(", ")
        );
    }
    println!("installing system packages: {}", missing.join(" "));
    command::run(Command::new("apt-get").args(["update", "-qq"]))?;
    command::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if let Some((package, _)) = SYSTEM_PACKAGES
        .iter()
        .find(|(_, check)| !system_check_passes(check))
    {
        bail!("{package} is still missing after `{install}`");
    }
    Ok(())
}

fn system_check_passes(check: &SystemCheck) -> bool {
    match check {
        SystemCheck::Program(name) => find_program(name).is_some(),
        SystemCheck::PkgConfig(name) => Command::new("pkg-config")
            .args(["--exists", name])
            .status()
            .is_ok_and(|s| s.success()),
        SystemCheck::File(path) => Path::new(path).exists(),
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn is_root() -> bool {
    command::stdout(Command::new("id").arg("-u")).is_ok_and(|uid| uid == "0")
}

/// Creates `target/setup/pyenv` if needed and installs what `PYTHON_REQUIREMENTS` lists
/// (pip skips what the system site-packages already satisfy).
fn ensure_python_env(force: bool) -> anyhow::Result<PathBuf> {
    let venv = workspace::setup_dir().join("pyenv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let base = env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        println!(
            "creating the Python environment {} from {base}",
            venv.display()
        );
        command::run(
            Command::new(&base)
                .args(["-m", "venv", "--system-site-packages"])
                .arg(&venv),
        )
        .with_context(|| format!("creating a virtual environment with {base} (set $PYTHON to choose another Python >= 3.10)"))?;
    }
    let stamp = workspace::setup_dir().join("python-requirements.txt");
    let wanted = PYTHON_REQUIREMENTS.join("\n");
    if force || fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        println!(
            "installing Python packages: {}",
            PYTHON_REQUIREMENTS.join(" ")
        );
        command::run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    // torch and its CUDA wheels are GBs; a cached copy would only eat the disk.
                    "--no-cache-dir",
                ])
                .args(PYTHON_REQUIREMENTS),
        )?;
        stage_kit::write_bytes_atomically(&stamp, wanted.as_bytes())?;
    }
    Ok(python)
}

/// The libtorch root and its version: `$LIBTORCH` if set, else the environment's torch.
fn locate_libtorch(python: &Path) -> anyhow::Result<(PathBuf, String)> {
    let root = match env::var_os("LIBTORCH") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(command::stdout(Command::new(python).args([
            "-c",
            "import os, torch; print(os.path.dirname(torch.__file__))",
        ]))?),
    };
    let lib = root.join("lib");
    if !lib.join("libtorch_cpu.so").exists() {
        bail!(
            "{} is not a libtorch folder: {} has no libtorch_cpu.so",
            root.display(),
            lib.display()
        );
    }
    let version = torch_link::libtorch_version(&lib).with_context(|| {
        format!(
            "cannot tell the version of the libtorch at {}",
            root.display()
        )
    })?;
    if version.split('+').next() != Some(TORCH_VERSION) {
        bail!(
            "the libtorch at {} is version {version}, but tch 0.24 needs {TORCH_VERSION}; \
             unset $LIBTORCH or point it at a libtorch {TORCH_VERSION}",
            root.display()
        );
    }
    Ok((root, version))
}

/// Writes the cargo configuration fragment that `.cargo/config.toml` includes.
fn write_cargo_env(p: &Provisioned) -> anyhow::Result<()> {
    let mut vars = toml::Table::new();
    vars.insert("LIBTORCH".into(), p.libtorch.display().to_string().into());
    // PyTorch >= 2.7 wheels and libtorch 2.11 archives use the C++11 ABI.
    vars.insert("LIBTORCH_CXX11_ABI".into(), "1".into());
    vars.insert(
        "SPEECH_DINO_PYTHON".into(),
        p.python.display().to_string().into(),
    );
    let mut doc = toml::Table::new();
    doc.insert("env".into(), vars.into());
    let text = format!(
        "# Written by `cargo xtask setup`; do not edit.\n{}",
        toml::to_string(&doc)?
    );
    stage_kit::write_bytes_atomically(
        &workspace::setup_dir().join("cargo-env.toml"),
        text.as_bytes(),
    )?;
    Ok(())
}

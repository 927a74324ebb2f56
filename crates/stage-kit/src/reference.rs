//! Reference tools and data for golden tests and benchmarks: the provisioned Python (torch,
//! torchaudio, scikit-learn, ...) and the real corpora beside the checkout.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Environment variable naming the Python of `target/setup/pyenv` (set through cargo's
/// `[env]` by `cargo xtask setup`).
pub const PYTHON_VAR: &str = "SPEECH_DINO_PYTHON";

/// Environment variable that overrides where the RAVDESS corpus is looked for.
pub const RAVDESS_VAR: &str = "SPEECH_DINO_RAVDESS";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|crates| crates.parent())
        .expect("stage-kit lives in <root>/crates/stage-kit")
        .to_path_buf()
}

/// The provisioned Python interpreter.
pub fn python() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(PYTHON_VAR)
        .map(PathBuf::from)
        .or_else(|| option_env!("SPEECH_DINO_PYTHON").map(PathBuf::from))
        .with_context(|| format!("{PYTHON_VAR} is not set: run `cargo xtask setup` first"))?;
    if !path.exists() {
        bail!(
            "{PYTHON_VAR} points at {}, which does not exist: run `cargo xtask setup`",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `script` (Python source) with `args` in the provisioned Python and returns stdout.
pub fn run_python<S: AsRef<OsStr>>(script: &str, args: &[S]) -> anyhow::Result<String> {
    let python = python()?;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "reference Python script failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).context("reference Python printed non-UTF-8")
}

/// The RAVDESS corpus (`$SPEECH_DINO_RAVDESS`, else `../shared/corpora/ravdess` beside the
/// checkout), or `None` with a "skipped" message on stderr when it is absent, so tests can
/// skip. Under `CI=true` (CI always has the corpus) a missing corpus panics instead, so a test
/// cannot pass there without having run.
pub fn ravdess_root() -> Option<PathBuf> {
    let root = std::env::var_os(RAVDESS_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpora/ravdess"));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match ravdess_at(root, ci) {
        Ok(found) => found,
        Err(message) => panic!("{message}"),
    }
}

/// [`ravdess_root`] for a given place and CI setting: the corpus, `None` (skip, said on
/// stderr), or the message a CI run fails with.
fn ravdess_at(root: PathBuf, ci: bool) -> Result<Option<PathBuf>, String> {
    if root.join("flac16k").is_dir() {
        return Ok(Some(root));
    }
    let missing = format!(
        "RAVDESS not found at {} (set {RAVDESS_VAR})",
        root.display()
    );
    if ci {
        return Err(format!(
            "{missing}, and CI=true: CI has the corpus, so this test must not skip"
        ));
    }
    eprintln!("{missing}: test SKIPPED");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_corpus_skips_outside_ci_and_fails_under_ci() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("ravdess");
        assert_eq!(ravdess_at(absent.clone(), false), Ok(None));
        let err = ravdess_at(absent.clone(), true).unwrap_err();
        assert!(err.contains("CI=true") && err.contains("ravdess"), "{err}");
        std::fs::create_dir_all(absent.join("flac16k")).unwrap();
        assert_eq!(ravdess_at(absent.clone(), true), Ok(Some(absent)));
    }
}

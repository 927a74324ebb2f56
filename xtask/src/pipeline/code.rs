//! Which workspace code a stage's output depends on, hashed into the stage's hash instead of
//! its binaries: a binary changes whenever any crate it links changes (dino-core links
//! downstream-eval for `verify`), or when it is rebuilt with other features, and that reran
//! days of pretraining for an edit to the scoring code. A command's code is its crate and the
//! workspace crates whose functions compute its output; the sources that build them (`src`,
//! `csrc`, `build.rs`, `Cargo.toml`) and `Cargo.lock` (the external crates' versions) are
//! hashed, tests and benchmarks are not.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

use super::state::{file_sha256, sha256_hex};

/// What every stage runs on.
const BASE: [&str; 2] = ["data-manifest", "stage-kit"];

/// The crates (besides [`BASE`]) whose code computes the output of `command`, from its
/// binary and subcommand (the first argument that names one: global flags come first).
pub fn crates_of(command: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let binary = command
        .first()
        .and_then(|b| Path::new(b).file_name())
        .and_then(|n| n.to_str())
        .context("a stage command without a binary")?;
    let training = command[1..]
        .iter()
        .any(|a| a == "pretrain" || a == "finetune");
    let own: &[&str] = match (binary, training) {
        ("data-manifest", _) => &[],
        ("feature-extract", _) => &["feature-extract"],
        ("downstream-eval", _) => &["downstream-eval", "feature-extract"],
        ("pseudo-labeler", _) => &["pseudo-labeler", "downstream-eval", "feature-extract"],
        // Training does not call downstream-eval; embedding's `bundle` does.
        ("dino-core", true) => &["dino-core", "process-group", "feature-extract"],
        ("dino-core", _) => &[
            "dino-core",
            "process-group",
            "feature-extract",
            "downstream-eval",
        ],
        (other, _) => bail!("no code is known for the stage binary {other}"),
    };
    let mut crates: Vec<&str> = own.iter().chain(&BASE).copied().collect();
    crates.sort_unstable();
    crates.dedup();
    Ok(crates)
}

/// Hashes of crates' sources, computed once per crate.
#[derive(Default)]
pub struct CodeHashes(BTreeMap<String, String>);

impl CodeHashes {
    /// The hash of workspace crate `name` (under `root/crates`), or of `Cargo.lock`.
    pub fn of(&mut self, root: &Path, name: &str) -> anyhow::Result<String> {
        if let Some(hash) = self.0.get(name) {
            return Ok(hash.clone());
        }
        let hash = if name == "Cargo.lock" {
            file_sha256(&root.join(name))?
        } else {
            source_hash(&root.join("crates").join(name))?
        };
        self.0.insert(name.to_owned(), hash.clone());
        Ok(hash)
    }
}

/// Content hash of what builds a crate: its `Cargo.toml`, `build.rs`, and every file under
/// `src` and `csrc`, by relative path.
fn source_hash(dir: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for top in ["Cargo.toml", "build.rs", "src", "csrc"] {
        let path = dir.join(top);
        if path.is_dir() {
            list(&path, &mut files)?;
        } else if path.exists() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{}: no crate sources", dir.display());
    }
    files.sort();
    let mut lines = Vec::with_capacity(files.len());
    for file in files {
        let rel = file.strip_prefix(dir).unwrap_or(&file);
        lines.push(format!("{}\t{}", rel.display(), file_sha256(&file)?));
    }
    Ok(sha256_hex(lines.join("\n").as_bytes()))
}

fn list(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            list(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn training_does_not_depend_on_the_evaluation_code() {
        let pretrain = crates_of(&command(&[
            "/b/dino-core",
            "--log-json",
            "/r/l",
            "pretrain",
        ]));
        let pretrain = pretrain.unwrap();
        assert!(!pretrain.contains(&"downstream-eval"), "{pretrain:?}");
        assert!(pretrain.contains(&"dino-core") && pretrain.contains(&"stage-kit"));
        let embed = crates_of(&command(&["/b/dino-core", "bundle"])).unwrap();
        assert!(embed.contains(&"downstream-eval"));
        let scan = crates_of(&command(&["/b/data-manifest", "scan"])).unwrap();
        assert_eq!(scan, ["data-manifest", "stage-kit"]);
        assert!(crates_of(&command(&["/b/other"])).is_err());
    }

    #[test]
    fn sources_count_and_tests_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("crates/a/src")).unwrap();
        std::fs::create_dir_all(root.join("crates/a/tests")).unwrap();
        std::fs::write(root.join("crates/a/Cargo.toml"), "[package]").unwrap();
        std::fs::write(root.join("crates/a/src/lib.rs"), "fn a() {}").unwrap();
        let hash = |root: &Path| CodeHashes::default().of(root, "a").unwrap();
        let before = hash(root);
        std::fs::write(root.join("crates/a/tests/t.rs"), "#[test] fn t() {}").unwrap();
        assert_eq!(hash(root), before, "a test changed the code hash");
        std::fs::write(root.join("crates/a/src/lib.rs"), "fn a() { }").unwrap();
        assert_ne!(hash(root), before);
        // Every crate the stages name exists in this workspace.
        let workspace = crate::workspace::root();
        for name in [
            "dino-core",
            "process-group",
            "feature-extract",
            "downstream-eval",
        ]
        .into_iter()
        .chain(["pseudo-labeler", "data-manifest", "stage-kit"])
        {
            CodeHashes::default().of(&workspace, name).unwrap();
        }
    }
}

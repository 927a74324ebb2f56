//! What the runner remembers about a stage: `stage.json` in the stage's folder, written
//! atomically when the stage succeeds. A stage is up to date when its recorded hash equals the
//! hash of what it would run now (command lines, configuration, the code that computes it
//! (`code`), inputs) and its
//! outputs exist. Upstream stages enter a hash through their own recorded hash, so an edit
//! reruns the stage it touches and everything downstream, nothing else.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Contents of `stage.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    pub stage: String,
    /// Hash of everything the stage depends on.
    pub hash: String,
    /// The parts of the hash, for explaining why a stage reruns.
    pub parts: BTreeMap<String, String>,
    pub commands: Vec<Vec<String>>,
    /// The stage's resolved configuration, if it has one.
    pub config: Option<serde_json::Value>,
    pub wall_seconds: f64,
    pub finished_unix: u64,
    /// Headline metrics read from the stage's reports.
    pub metrics: serde_json::Value,
    /// The Slurm jobs that ran the stage (ids, dependency edges, nodes, exit codes); absent
    /// when it ran locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<serde_json::Value>,
}

impl StageRecord {
    pub fn read(dir: &Path) -> Option<StageRecord> {
        let text = fs::read_to_string(dir.join("stage.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        stage_kit::write_bytes_atomically(
            &dir.join("stage.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }
}

/// Marker written when a stage starts: a rerun with the same hash may resume from the
/// partial outputs (training checkpoints, cache entries); with another hash they are cleared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub hash: String,
}

impl Pending {
    pub fn read(dir: &Path) -> Option<Pending> {
        serde_json::from_str(&fs::read_to_string(dir.join("stage.pending.json")).ok()?).ok()
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        stage_kit::write_bytes_atomically(
            &dir.join("stage.pending.json"),
            serde_json::to_string(self)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Removes the marker; failing to (a read-only folder) is an error, since a stale marker
    /// would let a later run resume from outputs of another hash.
    pub fn clear(dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("stage.pending.json");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// `runner.lock` in a run folder while a runner works in it, holding the runner's pid: a
/// second runner on the same folder stops with a message instead of interleaving with the
/// first (one could clear a folder the other is writing). A lock whose process is gone (a
/// runner killed with -9) is taken over. Removed when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    pub const FILE: &str = "runner.lock";

    /// Takes the lock of `run_dir` (which must exist).
    pub fn take(run_dir: &Path) -> anyhow::Result<RunLock> {
        let path = run_dir.join(Self::FILE);
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    write!(file, "{}", std::process::id())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
                    if alive {
                        anyhow::bail!(
                            "{} is in use by another runner (pid {}, {}); wait for it to finish or stop it",
                            run_dir.display(),
                            holder.trim(),
                            path.display()
                        );
                    }
                    fs::remove_file(&path)
                        .with_context(|| format!("removing the stale lock {}", path.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        anyhow::bail!("could not take {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub use stage_kit::digest::{file_sha256, sha256_hex};

/// Hash of what a stage configuration defines: its how-it-runs keys
/// ([`stage_kit::how_it_runs::KEYS`]: device, loader threads, checkpoint cadence, ...) left
/// out, so that changing them reruns nothing and wipes no checkpoints.
pub fn config_hash(config: &toml::Table) -> anyhow::Result<String> {
    let defining = stage_kit::how_it_runs::defining(&serde_json::to_value(config)?);
    Ok(sha256_hex(serde_json::to_string(&defining)?.as_bytes()))
}

/// Fingerprint of external input data (a corpus folder or a file): the sorted list of
/// relative paths with sizes and modification times. Cheap even for a million files, and it
/// changes when any file is added, removed, or rewritten.
pub fn fingerprint(path: &Path) -> anyhow::Result<String> {
    let mut entries = Vec::new();
    if path.is_dir() {
        collect(path, path, &mut entries)?;
    } else {
        entries.push(describe(path, path)?);
    }
    entries.sort();
    Ok(sha256_hex(entries.join("\n").as_bytes()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            out.push(describe(root, &path)?);
        }
    }
    Ok(())
}

fn describe(root: &Path, path: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let rel = path.strip_prefix(root).unwrap_or(path);
    Ok(format!("{}\t{}\t{modified}", rel.display(), meta.len()))
}

/// Why a stage must run, or `None` when it is up to date.
pub fn rerun_reason(
    record: Option<&StageRecord>,
    hash: &str,
    parts: &BTreeMap<String, String>,
    outputs: &[PathBuf],
) -> Option<String> {
    let Some(record) = record else {
        return Some("never completed".to_owned());
    };
    if record.hash != hash {
        let changed: Vec<&str> = parts
            .iter()
            .filter(|(k, v)| record.parts.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .chain(
                record
                    .parts
                    .keys()
                    .filter(|k| !parts.contains_key(*k))
                    .map(String::as_str),
            )
            .collect();
        return Some(format!("changed: {}", changed.join(", ")));
    }
    outputs
        .iter()
        .find(|p| !p.exists())
        .map(|missing| format!("output missing: {}", missing.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_it_runs_keys_do_not_change_the_config_hash() {
        let table = |text: &str| -> toml::Table { toml::from_str(text).unwrap() };
        let base = config_hash(&table("seed = 1\nworkers = 4\n[optim]\nlr = 0.1")).unwrap();
        let how = config_hash(&table(
            "seed = 1\nworkers = 1\ndevice = \"cuda:1\"\n[optim]\nlr = 0.1",
        ));
        let what = config_hash(&table("seed = 1\nworkers = 4\n[optim]\nlr = 0.2")).unwrap();
        assert_eq!(base, how.unwrap());
        assert_ne!(base, what);
    }

    #[test]
    fn fingerprint_follows_content_changes_only_where_files_change() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.wav"), b"1").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b.wav"), b"22").unwrap();
        let first = fingerprint(dir.path()).unwrap();
        assert_eq!(first, fingerprint(dir.path()).unwrap());
        fs::write(dir.path().join("sub/c.wav"), b"3").unwrap();
        assert_ne!(first, fingerprint(dir.path()).unwrap());
    }

    #[test]
    fn a_second_runner_is_refused_and_a_dead_ones_lock_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::take(dir.path()).unwrap();
        let err = RunLock::take(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("is in use by another runner")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(!dir.path().join(RunLock::FILE).exists());
        // pid 0 has no /proc entry: a lock left by a killed runner.
        fs::write(dir.path().join(RunLock::FILE), "0").unwrap();
        let _lock = RunLock::take(dir.path()).unwrap();
        let holder = fs::read_to_string(dir.path().join(RunLock::FILE)).unwrap();
        assert_eq!(holder, std::process::id().to_string());
    }

    #[test]
    fn clearing_a_pending_marker_that_cannot_be_removed_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        Pending::clear(dir.path()).unwrap();
        // A folder in the marker's place cannot be removed as a file.
        fs::create_dir(dir.path().join("stage.pending.json")).unwrap();
        let err = Pending::clear(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("stage.pending.json"), "{err:#}");
    }

    #[test]
    fn reasons_name_the_changed_parts() {
        let parts = |v: &str| {
            BTreeMap::from([
                ("config".to_owned(), v.to_owned()),
                ("input:scan".to_owned(), "x".to_owned()),
            ])
        };
        let record = StageRecord {
            stage: "pretrain".into(),
            hash: "h1".into(),
            parts: parts("a"),
            commands: vec![],
            config: None,
            wall_seconds: 1.0,
            finished_unix: 0,
            metrics: serde_json::Value::Null,
            slurm: None,
        };
        assert_eq!(
            rerun_reason(None, "h1", &parts("a"), &[]).unwrap(),
            "never completed"
        );
        assert_eq!(rerun_reason(Some(&record), "h1", &parts("a"), &[]), None);
        assert_eq!(
            rerun_reason(Some(&record), "h2", &parts("b"), &[]).unwrap(),
            "changed: config"
        );
        let missing = rerun_reason(
            Some(&record),
            "h1",
            &parts("a"),
            &[PathBuf::from("/nonexistent/x")],
        )
        .unwrap();
        assert!(missing.starts_with("output missing"));
    }
}

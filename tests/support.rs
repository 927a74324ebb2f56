//! Helpers of the end-to-end tests: a shortened copy of the fixture pipeline (same stages,
//! same corpus, a few training steps) and runs of it through the xtask runner.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xtask::pipeline::{self, Options, Outcome};

/// Writes `dir/small.toml`: `pipelines/fixture.toml` with pretraining and fine-tuning cut to
/// a few steps (checkpointed every 2), so that a whole run takes about a minute.
pub fn small_fixture_pipeline(dir: &Path) -> anyhow::Result<PathBuf> {
    let source = xtask::workspace::root().join("pipelines/fixture.toml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let mut file: toml::Table = toml::from_str(&text)?;
    for (stage, epochs) in [("pretrain", 2), ("finetune", 2)] {
        let section = file[stage]
            .as_table_mut()
            .with_context(|| format!("[{stage}] is not a table"))?;
        section.insert("epochs".into(), epochs.into());
        section.insert("max_steps_per_epoch".into(), 4.into());
        section.insert("checkpoint_every".into(), 2.into());
    }
    let path = dir.join("small.toml");
    std::fs::write(&path, toml::to_string(&file)?)?;
    Ok(path)
}

/// Changes `[section.table] key = value` of a pipeline file in place.
pub fn edit(
    pipeline: &Path,
    section: &[&str],
    key: &str,
    value: toml::Value,
) -> anyhow::Result<()> {
    let mut file: toml::Table = toml::from_str(&std::fs::read_to_string(pipeline)?)?;
    let mut table = &mut file;
    for name in section {
        table = table
            .get_mut(*name)
            .and_then(toml::Value::as_table_mut)
            .with_context(|| format!("no table {name} in {}", pipeline.display()))?;
    }
    table.insert(key.into(), value);
    std::fs::write(pipeline, toml::to_string(&file)?)?;
    Ok(())
}

/// Runs `pipeline` in `run_dir` through the library entry point of `cargo xtask pipeline`.
pub fn run(pipeline: &Path, run_dir: &Path, only: Option<&str>) -> anyhow::Result<Outcome> {
    pipeline::run(&Options {
        name: pipeline.display().to_string(),
        run_dir: Some(run_dir.to_path_buf()),
        only: only.map(str::to_owned),
        ..Options::default()
    })
}

/// `cargo run -p xtask -- ARGS` as a command (the real CLI, as a user types it).
pub fn xtask_command<I, S>(args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(xtask::workspace::root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args);
    command
}

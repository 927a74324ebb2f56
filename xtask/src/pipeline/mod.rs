//! `cargo xtask pipeline NAME`: runs the stage graph of `pipelines/NAME.toml` (scan -> prepare
//! -> baseline -> pretrain -> embed -> eval-sv / eval-emotion -> [cluster -> finetune -> embed
//! -> eval] x rounds -> report) as child processes in `runs/NAME/<stage>/`, skipping what is up
//! to date; `cargo xtask status NAME` shows each stage's state. With `--executor slurm` the
//! same stages are submitted to Slurm as jobs instead (`slurm`).

mod check;
mod code;
mod config;
mod execute;
mod plan;
mod report;
mod settings;
mod slurm;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

pub use config::PipelineFile;
use plan::Stage;
pub use settings::Setting;
use state::{Pending, StageRecord};

use crate::{command, setup, workspace};

/// The stage binaries the runner builds and calls.
pub const STAGE_BINARIES: [&str; 5] = [
    "data-manifest",
    "feature-extract",
    "dino-core",
    "pseudo-labeler",
    "downstream-eval",
];

/// Where the stages run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    /// Child processes of the runner, one stage after the other.
    #[default]
    Local,
    /// Slurm jobs (`[slurm]` of the pipeline file gives their resources).
    Slurm,
}

/// Options of `cargo xtask pipeline`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub name: String,
    pub dry_run: bool,
    pub only: Option<String>,
    pub from: Option<String>,
    pub force: bool,
    pub rounds: Option<usize>,
    /// Overrides `[pipeline] nproc_per_node`.
    pub nproc_per_node: Option<usize>,
    pub corpora: BTreeMap<String, PathBuf>,
    /// Changes to the pipeline file (`--set SECTION.KEY=VALUE`).
    pub settings: Vec<Setting>,
    pub run_dir: Option<PathBuf>,
    /// Fail unless the report exists and DINO's EER is below the baseline's on every set.
    pub require_improvement: bool,
    pub executor: Executor,
    /// Slurm: submit every job and return without following them.
    pub submit_and_exit: bool,
}

/// What a run did with each stage, in plan order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Stages run from scratch.
    pub ran: Vec<String>,
    /// Stages continued from the partial work of an interrupted run.
    pub resumed: Vec<String>,
    /// Stages up to date (or not selected), left alone.
    pub skipped: Vec<String>,
    /// Stages handed to Slurm by this run.
    pub submitted: Vec<String>,
}

/// A stage with its hash and what the runner will do with it.
struct Decision<'a> {
    stage: &'a Stage,
    hash: String,
    parts: BTreeMap<String, String>,
    /// Why it runs; `None` to skip.
    reason: Option<String>,
}

/// Runs (or with `dry_run` only plans) a pipeline.
pub fn run(options: &Options) -> anyhow::Result<Outcome> {
    let (name, file) = PipelineFile::load(&options.name, &options.settings)?;
    setup::ensure()?;
    let corpora = config::resolve_corpora(&file, &options.corpora, !options.dry_run)?;
    let present: BTreeSet<String> = corpora.keys().cloned().collect();
    let mut file = file.without_absent(&present);
    file.pipeline.nproc_per_node = options.nproc_per_node.or(file.pipeline.nproc_per_node);
    let run_dir = options
        .run_dir
        .clone()
        .unwrap_or_else(|| workspace::root().join("runs").join(&name));
    for (corpus, resolved) in &corpora {
        println!(
            "corpus {corpus}: {} ({})",
            resolved.root.display(),
            resolved.source
        );
    }
    // Built for a dry run too: their `check-config` checks the stage sections.
    build_binaries()?;
    let rounds = options.rounds.unwrap_or(file.pipeline.rounds);
    let stages = plan::build(&file, &corpora, rounds, &run_dir, &binary_dir())?;
    check::check_configs(&stages)?;
    let slurm = options.executor == Executor::Slurm;
    if slurm && !options.dry_run {
        slurm::refresh(&stages, &run_dir)?;
    }
    let decisions = decide(&stages, &run_dir, options)?;
    print_plan(&decisions, options.dry_run && !slurm);
    if slurm {
        let section = file.slurm.clone().unwrap_or_default();
        if !options.dry_run {
            std::fs::create_dir_all(&run_dir)
                .with_context(|| format!("creating {}", run_dir.display()))?;
        }
        let outcome = slurm::run(
            &name,
            &stages,
            &decisions,
            &section,
            &run_dir,
            &slurm::Submit {
                dry_run: options.dry_run,
                submit_and_exit: options.submit_and_exit,
                nproc_per_node: file.pipeline.nproc_per_node,
            },
        )?;
        if !options.dry_run && (!options.submit_and_exit || outcome.submitted.is_empty()) {
            finish_report(&name, &file, &stages, &run_dir, options)?;
        }
        return Ok(outcome);
    }
    let mut outcome = Outcome::default();
    if options.dry_run {
        outcome.skipped = decisions.iter().map(|d| d.stage.name.clone()).collect();
        return Ok(outcome);
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let _lock = state::RunLock::take(&run_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for decision in &decisions {
        let name = decision.stage.name.clone();
        if decision.reason.is_none() {
            outcome.skipped.push(name);
        } else if runtime.block_on(run_stage(decision, &run_dir))? {
            outcome.resumed.push(name);
        } else {
            outcome.ran.push(name);
        }
    }
    finish_report(&name, &file, &stages, &run_dir, options)?;
    Ok(outcome)
}

fn finish_report(
    name: &str,
    file: &PipelineFile,
    stages: &[Stage],
    run_dir: &Path,
    options: &Options,
) -> anyhow::Result<()> {
    let report = report::write(name, file, stages, run_dir)?;
    println!("report: {}", run_dir.join("report.md").display());
    if options.require_improvement {
        report::require_improvement(&report)?;
    }
    Ok(())
}

/// `cargo xtask status NAME`: each stage's state, wall time and headline metrics.
pub fn status(
    name: &str,
    run_dir: Option<PathBuf>,
    rounds: Option<usize>,
    corpora: &BTreeMap<String, PathBuf>,
    settings: &[Setting],
) -> anyhow::Result<()> {
    let (pipeline, file) = PipelineFile::load(name, settings)?;
    let resolved = config::resolve_corpora(&file, corpora, false)?;
    let present: BTreeSet<String> = resolved.keys().cloned().collect();
    let file = file.without_absent(&present);
    let run_dir = run_dir.unwrap_or_else(|| workspace::root().join("runs").join(&pipeline));
    let rounds = rounds.unwrap_or_else(|| file.pipeline.rounds.max(rounds_run(&run_dir)));
    let stages = plan::build(&file, &resolved, rounds, &run_dir, &binary_dir())?;
    let in_flight = slurm::refresh(&stages, &run_dir)?.in_flight;
    let decisions = decide(&stages, &run_dir, &Options::default())?;
    println!(
        "{:<18} {:<10} {:>9}  metrics / reason",
        "stage", "state", "wall s"
    );
    for d in &decisions {
        let record = StageRecord::read(&run_dir.join(&d.stage.name));
        let queued = in_flight.get(&d.stage.name);
        let state = match (
            &record,
            &d.reason,
            Pending::read(&run_dir.join(&d.stage.name)),
        ) {
            _ if queued.is_some() => "slurm",
            (_, _, Some(_)) => "partial",
            (Some(_), None, _) => "done",
            (Some(_), Some(_), _) => "stale",
            (None, _, _) => "not run",
        };
        let wall = record
            .as_ref()
            .map_or("-".to_owned(), |r| format!("{:.1}", r.wall_seconds));
        let detail = match (&record, &d.reason) {
            _ if queued.is_some() => format!("jobs: {}", queued.unwrap()),
            (Some(r), None) => r.metrics.to_string(),
            (_, Some(reason)) => reason.clone(),
            (None, None) => String::new(),
        };
        println!("{:<18} {:<10} {:>9}  {}", d.stage.name, state, wall, detail);
    }
    Ok(())
}

/// The most pseudo-label rounds whose stages a run folder holds (`cluster-rN` folders).
fn rounds_run(run_dir: &Path) -> usize {
    std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            name.to_str()?.strip_prefix("cluster-r")?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The pipeline's own copies of the stage binaries: `cargo bench` rebuilds
/// `target/release/<binary>` with its dev-dependency features, and a pipeline must not run
/// whatever a benchmark left there.
fn binary_dir() -> PathBuf {
    workspace::root().join("target").join("pipeline-bin")
}

/// Builds the stage binaries (release) and copies them into [`binary_dir`]. The whole
/// workspace is built, so that its dependencies get the features `cargo xtask test` (a
/// release build of the workspace's tests) gives them: one build serves both.
fn build_binaries() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    command::run(Command::new(cargo).current_dir(workspace::root()).args([
        "build",
        "--release",
        "--workspace",
        "--bins",
    ]))
    .context("building the stage binaries")?;
    let release = workspace::root().join("target").join("release");
    let dir = binary_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for bin in STAGE_BINARIES {
        let (from, to) = (release.join(bin), dir.join(bin));
        let same = state::file_sha256(&to).ok() == Some(state::file_sha256(&from)?);
        if !same {
            stage_kit::write_atomically(&to, |partial| {
                std::fs::copy(&from, partial)
                    .map(drop)
                    .map_err(|e| stage_kit::FileError::new(&from, e))
            })?;
        }
    }
    Ok(())
}

fn decide<'a>(
    stages: &'a [Stage],
    run_dir: &Path,
    options: &Options,
) -> anyhow::Result<Vec<Decision<'a>>> {
    let names: BTreeSet<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    for selected in [&options.only, &options.from].into_iter().flatten() {
        if !names.contains(selected.as_str()) {
            bail!(
                "no stage {selected:?}; stages: {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let downstream_of_from = options.from.as_ref().map(|from| downstream(stages, from));
    let (root, mut code) = (workspace::root(), code::CodeHashes::default());
    let mut hashes: HashMap<String, String> = HashMap::new();
    let mut decisions = Vec::new();
    for stage in stages {
        let mut parts = BTreeMap::new();
        parts.insert(
            "commands".to_owned(),
            state::sha256_hex(serde_json::to_string(&stage.commands)?.as_bytes()),
        );
        if let Some(config) = &stage.config {
            parts.insert("config".to_owned(), state::config_hash(config)?);
        }
        let mut crates: Vec<&str> = vec!["Cargo.lock"];
        for command in &stage.commands {
            crates.extend(code::crates_of(command)?);
        }
        crates.sort_unstable();
        crates.dedup();
        for name in crates {
            parts.insert(format!("code {name}"), code.of(&root, name)?);
        }
        for upstream in &stage.upstream {
            let hash = hashes.get(upstream).with_context(|| {
                format!("stage {} needs {upstream}, planned after it", stage.name)
            })?;
            parts.insert(format!("stage {upstream}"), hash.clone());
        }
        for input in &stage.external {
            parts.insert(
                format!("input {}", input.display()),
                state::fingerprint(input)?,
            );
        }
        let hash = state::sha256_hex(serde_json::to_string(&parts)?.as_bytes());
        hashes.insert(stage.name.clone(), hash.clone());
        let record = StageRecord::read(&run_dir.join(&stage.name));
        let stale = state::rerun_reason(record.as_ref(), &hash, &parts, &stage.outputs);
        let reason = match (&options.only, &downstream_of_from) {
            (Some(only), _) if *only == stage.name => {
                Some(stale.unwrap_or_else(|| "selected with --only".to_owned()))
            }
            (Some(_), _) => None,
            (None, Some(forced)) if forced.contains(&stage.name) => {
                Some("selected with --from".to_owned())
            }
            _ if options.force => Some("forced".to_owned()),
            _ => stale,
        };
        decisions.push(Decision {
            stage,
            hash,
            parts,
            reason,
        });
    }
    if let Some(only) = &options.only {
        let upstream = upstream_closure(stages, only);
        let stale: Vec<String> = decisions
            .iter()
            .filter(|d| upstream.contains(&d.stage.name))
            .filter_map(|d| {
                let record = StageRecord::read(&run_dir.join(&d.stage.name));
                state::rerun_reason(record.as_ref(), &d.hash, &d.parts, &d.stage.outputs)
                    .map(|r| format!("{} ({r})", d.stage.name))
            })
            .collect();
        if !stale.is_empty() {
            bail!(
                "--only {only}: upstream stages are out of date: {}; run without --only",
                stale.join(", ")
            );
        }
    }
    Ok(decisions)
}

/// `from` and every stage that depends on it, directly or not.
fn downstream(stages: &[Stage], from: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::from([from.to_owned()]);
    for stage in stages {
        if stage.upstream.iter().any(|u| set.contains(u)) {
            set.insert(stage.name.clone());
        }
    }
    set
}

/// Every stage `name` depends on, directly or not.
fn upstream_closure(stages: &[Stage], name: &str) -> BTreeSet<String> {
    let by_name: HashMap<&str, &Stage> = stages.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut set = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(next) = todo.pop() {
        for up in by_name
            .get(next.as_str())
            .map(|s| s.upstream.clone())
            .unwrap_or_default()
        {
            if set.insert(up.clone()) {
                todo.push(up);
            }
        }
    }
    set
}

fn print_plan(decisions: &[Decision], verbose: bool) {
    println!("{:<18} {:<5} reason", "stage", "plan");
    for d in decisions {
        let plan = if d.reason.is_some() { "run" } else { "skip" };
        println!(
            "{:<18} {:<5} {}",
            d.stage.name,
            plan,
            d.reason.as_deref().unwrap_or("up to date")
        );
    }
    if verbose {
        for d in decisions.iter().filter(|d| d.reason.is_some()) {
            println!("\n== {} ==", d.stage.name);
            if let Some(config) = &d.stage.config {
                println!(
                    "config:\n{}",
                    toml::to_string(config).unwrap_or_default().trim_end()
                );
            }
            for command in &d.stage.commands {
                println!("$ {}", command.join(" "));
            }
        }
    }
}

/// Readies a stage's folder for a run: kept (with its partial work) when an interrupted run
/// with the same hash left it, cleared otherwise; marked pending, with the stage's config.
/// Returns whether the run continues the interrupted one.
fn prepare_stage_dir(decision: &Decision<'_>, dir: &Path) -> anyhow::Result<bool> {
    let resumable = Pending::read(dir).is_some_and(|p| p.hash == decision.hash);
    if !resumable && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Pending {
        hash: decision.hash.clone(),
    }
    .write(dir)?;
    if let Some(config) = &decision.stage.config {
        stage_kit::write_bytes_atomically(
            &dir.join("config.toml"),
            toml::to_string(config)?.as_bytes(),
        )?;
    }
    Ok(resumable)
}

/// The `stage.json` of a stage that finished.
fn stage_record(
    stage: &Stage,
    hash: &str,
    parts: &BTreeMap<String, String>,
    wall_seconds: f64,
    metrics: serde_json::Value,
) -> anyhow::Result<StageRecord> {
    Ok(StageRecord {
        stage: stage.name.clone(),
        hash: hash.to_owned(),
        parts: parts.clone(),
        commands: stage.commands.clone(),
        config: stage
            .config
            .as_ref()
            .map(serde_json::to_value)
            .transpose()?,
        wall_seconds,
        finished_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        metrics,
        slurm: None,
    })
}

/// Runs one stage and records it; returns whether it continued an interrupted attempt.
async fn run_stage(decision: &Decision<'_>, run_dir: &Path) -> anyhow::Result<bool> {
    let stage = decision.stage;
    let dir = run_dir.join(&stage.name);
    let resumable = prepare_stage_dir(decision, &dir)?;
    println!(
        "stage {} ({}){}",
        stage.name,
        decision.reason.as_deref().unwrap_or_default(),
        if resumable { ", resuming" } else { "" }
    );
    let started = Instant::now();
    execute::run_commands(
        &stage.name,
        &stage.runnable_commands(),
        &dir.join("stage.log"),
    )
    .await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let record = stage_record(
        stage,
        &decision.hash,
        &decision.parts,
        wall_seconds,
        stage.read_metrics()?,
    )?;
    record.write(&dir)?;
    Pending::clear(&dir)?;
    println!("stage {} done in {wall_seconds:.1} s", stage.name);
    Ok(resumable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_the_rounds_a_run_folder_holds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(rounds_run(dir.path()), 0);
        for name in [
            "prepare",
            "cluster-r1",
            "cluster-r3",
            "finetune-r3",
            "cluster-rx",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(rounds_run(dir.path()), 3);
        assert_eq!(rounds_run(&dir.path().join("absent")), 0);
    }
}

//! The Slurm executor: the same stage graph, hashes and skipping as the local one, each stage
//! to run handed to Slurm as jobs (see `shape`) chained with `afterok` dependencies, the whole
//! pipeline submitted at once; then followed until every job is done (Ctrl-C cancels them), or
//! left to run (`--submit-and-exit`) and collected by the next `pipeline` or `status` call.

pub mod cluster;
mod record;
pub mod resources;
mod script;
mod shape;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use super::execute::InterruptedError;
use super::plan::Stage;
use super::state::Pending;
use super::{Decision, Outcome};
use cluster::Cluster;
use record::{Dependency, JobRecord, SLURM_DIR, Submission, Verdict};
pub use resources::SlurmSection;
use resources::{DEFAULT_WARNING_SECONDS, Resources};
use shape::Shape;

/// How often a followed pipeline polls the queue.
const POLL: Duration = Duration::from_secs(2);
/// Seconds a warned training job keeps for stopping after its checkpoint wait.
const STOP_MARGIN: u32 = 60;

/// A job about to be submitted: everything but the ids of the jobs it waits for.
struct PlannedJob {
    role: &'static str,
    /// sbatch options without `--dependency`.
    args: Vec<String>,
    script: PathBuf,
    text: String,
    shards: Vec<u32>,
    log: String,
    /// Waits for the stage's previous job too (the merge after its array).
    after_previous: bool,
}

/// How [`run`] hands the stages over.
pub struct Submit {
    /// Print the sbatch lines instead of submitting.
    pub dry_run: bool,
    /// Leave the jobs running; the next `pipeline` or `status` call collects them.
    pub submit_and_exit: bool,
    /// `[pipeline] nproc_per_node`: the ranks per node of a training job (`--ntasks-per-node`).
    pub nproc_per_node: Option<usize>,
}

/// Submits (or, with `dry_run`, prints the sbatch lines of) every stage the decisions run;
/// follows the jobs to the end unless `submit_and_exit`.
pub fn run(
    pipeline: &str,
    stages: &[Stage],
    decisions: &[Decision],
    section: &SlurmSection,
    run_dir: &Path,
    submit: &Submit,
) -> anyhow::Result<Outcome> {
    let Submit {
        dry_run,
        submit_and_exit,
        nproc_per_node,
    } = *submit;
    let names: Vec<&str> = decisions.iter().map(|d| d.stage.name.as_str()).collect();
    let unknown = section.unknown_stages(&names);
    if !unknown.is_empty() {
        bail!(
            "[slurm.stage.{}]: no such stage (stages: {})",
            unknown.join(", "),
            names.join(", ")
        );
    }
    let cluster = if dry_run {
        None
    } else {
        Some(Cluster::find()?)
    };
    if let Some(cluster) = &cluster {
        let mut paths: Vec<PathBuf> = decisions
            .iter()
            .filter(|d| d.reason.is_some())
            .flat_map(|d| d.stage.binaries())
            .collect();
        paths.sort();
        paths.dedup();
        paths.push(crate::workspace::setup_dir());
        cluster::check_shared(cluster, &paths)?;
    }
    let mut outcome = Outcome::default();
    // The job that finishes each stage submitted or in flight, for its dependents.
    let mut finals: BTreeMap<String, String> = BTreeMap::new();
    let mut submitted: Vec<(String, Submission)> = Vec::new();
    for decision in decisions {
        let stage = decision.stage;
        if decision.reason.is_none() {
            outcome.skipped.push(stage.name.clone());
            continue;
        }
        let dir = run_dir.join(&stage.name);
        if let (Some(cluster), Some(previous)) = (&cluster, Submission::read(&dir))
            && let Verdict::InFlight(jobs) =
                previous.verdict(&dir, &cluster.queue(&previous.job_ids())?)
        {
            if previous.hash != decision.hash {
                bail!(
                    "stage {} has jobs in the queue ({}) from a submission with other inputs or \
                     configuration: wait for them or scancel them first",
                    stage.name,
                    previous.job_ids().join(", ")
                );
            }
            println!(
                "stage {}: already submitted, {} job(s) in the queue; not submitted again",
                stage.name,
                jobs.len()
            );
            finals.insert(
                stage.name.clone(),
                previous.jobs.last().unwrap().job_id.clone(),
            );
            submitted.push((stage.name.clone(), previous));
            continue;
        }
        let resources = section.for_stage(&stage.name);
        let ranks = tasks_per_node(nproc_per_node, &resources);
        let shape = shape::of(stage, resources.shards.unwrap_or(1));
        let dependency: Vec<Dependency> = stage
            .upstream
            .iter()
            .filter_map(|up| {
                finals.get(up).map(|id| Dependency {
                    stage: up.clone(),
                    job_id: id.clone(),
                })
            })
            .collect();
        let Some(cluster) = &cluster else {
            let jobs = plan_jobs(pipeline, stage, &shape, &resources, ranks, &dir);
            let last = print_dry_run(stage, &shape, jobs, &dependency);
            finals.insert(stage.name.clone(), last);
            continue;
        };
        let resumed = super::prepare_stage_dir(decision, &dir)?;
        std::fs::create_dir_all(dir.join(SLURM_DIR))?;
        let jobs = plan_jobs(pipeline, stage, &shape, &resources, ranks, &dir);
        let mut records: Vec<JobRecord> = Vec::new();
        for job in jobs {
            let mut deps = dependency.clone();
            if job.after_previous
                && let Some(previous) = records.last()
            {
                deps.push(Dependency {
                    stage: stage.name.clone(),
                    job_id: previous.job_id.clone(),
                });
            }
            let args = with_dependency(&job.args, &deps);
            stage_kit::write_bytes_atomically(&job.script, job.text.as_bytes())?;
            let job_id = cluster.sbatch(&args, &job.script)?;
            println!(
                "stage {}: submitted {}{job_id}{}",
                stage.name,
                match job.role {
                    "job" => "job ".to_owned(),
                    role => format!("{role} job "),
                },
                if job.shards.is_empty() {
                    String::new()
                } else {
                    format!(" (shards {})", compact(&job.shards))
                }
            );
            records.push(JobRecord {
                role: job.role.to_owned(),
                log: job.log.replace("%A", &job_id).replace("%j", &job_id),
                job_id,
                shards: job.shards,
                dependency: deps,
                sbatch: args,
            });
        }
        let submission = Submission {
            stage: stage.name.clone(),
            hash: decision.hash.clone(),
            parts: decision.parts.clone(),
            shards: match &shape {
                Shape::Array(plan) => plan.count,
                _ => 0,
            },
            submitted_unix: now(),
            jobs: records,
        };
        submission.write(&dir)?;
        finals.insert(
            stage.name.clone(),
            submission.jobs.last().unwrap().job_id.clone(),
        );
        if resumed {
            outcome.resumed.push(stage.name.clone());
        }
        outcome.submitted.push(stage.name.clone());
        submitted.push((stage.name.clone(), submission));
    }
    let Some(cluster) = cluster else {
        return Ok(outcome);
    };
    if submit_and_exit || submitted.is_empty() {
        if !submitted.is_empty() {
            println!(
                "submitted; `cargo xtask status {pipeline}` shows the jobs and records the finished stages"
            );
        }
        return Ok(outcome);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(follow(&cluster, stages, &submitted, run_dir))?;
    let collected = collect(stages, run_dir, &cluster)?;
    for stage in stages {
        let name = &stage.name;
        let finished = done.contains(name) || collected.done.contains(name);
        if finished && !outcome.resumed.contains(name) {
            outcome.ran.push(name.clone());
        }
    }
    if !collected.failed.is_empty() {
        bail!(
            "Slurm jobs failed:\n  {}\nrerun the pipeline to resubmit what did not finish",
            collected.failed.join("\n  ")
        );
    }
    Ok(outcome)
}

/// What [`collect`] found.
#[derive(Debug, Default)]
pub struct Collected {
    /// Stages whose jobs all succeeded, now recorded in `stage.json`.
    pub done: Vec<String>,
    /// One line per failed job or shard.
    pub failed: Vec<String>,
    /// Stages with jobs still queued or running, with a short state.
    pub in_flight: BTreeMap<String, String>,
}

/// Records every submitted stage whose jobs have finished: `stage.json` when they succeeded
/// (the cache then works as after a local run), the failures otherwise (the next run submits
/// again what did not finish).
pub fn collect(stages: &[Stage], run_dir: &Path, cluster: &Cluster) -> anyhow::Result<Collected> {
    let submissions: Vec<(&Stage, Submission)> = stages
        .iter()
        .filter_map(|s| Submission::read(&run_dir.join(&s.name)).map(|sub| (s, sub)))
        .collect();
    let mut out = Collected::default();
    if submissions.is_empty() {
        return Ok(out);
    }
    let ids: Vec<String> = submissions.iter().flat_map(|(_, s)| s.job_ids()).collect();
    let queue = cluster.queue(&ids)?;
    for (stage, submission) in submissions {
        let dir = run_dir.join(&stage.name);
        match submission.verdict(&dir, &queue) {
            Verdict::InFlight(jobs) => {
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for (_, state) in jobs {
                    *counts.entry(state.to_lowercase()).or_default() += 1;
                }
                let text: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
                out.in_flight.insert(stage.name.clone(), text.join(", "));
            }
            Verdict::Done => {
                record_done(stage, &submission, &dir)?;
                println!(
                    "stage {} done (Slurm jobs {})",
                    stage.name,
                    submission.job_ids().join(", ")
                );
                out.done.push(stage.name.clone());
            }
            Verdict::Failed(lines) => {
                Submission::retire(&dir)?;
                out.failed.extend(lines);
            }
        }
    }
    Ok(out)
}

/// Writes the `stage.json` of a stage whose jobs succeeded.
fn record_done(stage: &Stage, submission: &Submission, dir: &Path) -> anyhow::Result<()> {
    let metrics = match shape::of(stage, submission.shards) {
        Shape::Array(plan) => Stage {
            metrics: plan.metrics(stage),
            ..stage.clone()
        }
        .read_metrics()?,
        _ => stage.read_metrics()?,
    };
    let wall_seconds: f64 = submission
        .jobs
        .iter()
        .map(|job| {
            let tasks = if job.shards.is_empty() {
                vec![job.job_id.clone()]
            } else {
                job.shards
                    .iter()
                    .map(|s| format!("{}_{s}", job.job_id))
                    .collect()
            };
            tasks
                .iter()
                .filter_map(|t| record::read_result(dir, t))
                .map(|r| r.seconds)
                .fold(0.0, f64::max)
        })
        .sum();
    let mut record = super::stage_record(
        stage,
        &submission.hash,
        &submission.parts,
        wall_seconds,
        metrics,
    )?;
    record.slurm = Some(submission.bookkeeping(dir));
    record.write(dir)?;
    Pending::clear(dir)?;
    Submission::settle(dir)?;
    Ok(())
}

/// Polls the queue until every submitted job has left it, recording each stage as its jobs
/// succeed (returns those); a stage that fails has the jobs of the stages downstream of it
/// cancelled (clusters without `kill_invalid_depend` would keep them pending). Ctrl-C
/// cancels every job of the pipeline; the stages recorded until then stay recorded.
async fn follow(
    cluster: &Cluster,
    stages: &[Stage],
    submitted: &[(String, Submission)],
    run_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let all_ids: Vec<String> = submitted.iter().flat_map(|(_, s)| s.job_ids()).collect();
    let mut open: BTreeSet<&str> = submitted.iter().map(|(n, _)| n.as_str()).collect();
    let mut shown: BTreeMap<&str, String> = BTreeMap::new();
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    while !open.is_empty() {
        let queue = cluster.queue(&all_ids)?;
        for (name, submission) in submitted {
            if !open.contains(name.as_str()) {
                continue;
            }
            let state = match submission.verdict(&run_dir.join(name), &queue) {
                Verdict::InFlight(jobs) => {
                    let running = jobs.iter().filter(|(_, s)| s == "RUNNING").count();
                    format!("{running} running, {} waiting", jobs.len() - running)
                }
                Verdict::Done => {
                    open.remove(name.as_str());
                    let stage = stages
                        .iter()
                        .find(|s| s.name == *name)
                        .context("a submitted stage is not in the plan")?;
                    record_done(stage, submission, &run_dir.join(name))?;
                    done.push(name.clone());
                    "done".to_owned()
                }
                Verdict::Failed(lines) => {
                    open.remove(name.as_str());
                    let downstream = super::downstream(stages, name);
                    let doomed: Vec<String> = submitted
                        .iter()
                        .filter(|(n, _)| n != name && downstream.contains(n))
                        .flat_map(|(_, s)| s.job_ids())
                        .collect();
                    cluster.cancel(&doomed)?;
                    format!("failed: {}", lines.join("; "))
                }
            };
            if shown.get(name.as_str()) != Some(&state) {
                println!("  [slurm] {name}: {state}");
                shown.insert(name.as_str(), state);
            }
        }
        if open.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut ctrl_c => {
                eprintln!("\n  [slurm] interrupted: cancelling jobs {}", all_ids.join(", "));
                cluster.cancel(&all_ids)?;
                return Err(InterruptedError.into());
            }
        }
    }
    Ok(done)
}

/// The jobs of `stage` (`shape`) in submission order, with their scripts; a training job
/// runs `ranks` tasks per node.
fn plan_jobs(
    pipeline: &str,
    stage: &Stage,
    shape: &Shape,
    resources: &Resources,
    ranks: u32,
    dir: &Path,
) -> Vec<PlannedJob> {
    let slurm_dir = dir.join(SLURM_DIR);
    let name = format!("{pipeline}.{}", stage.name);
    let common = |role: &str, log: &str| {
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name={name}.{role}"),
            format!("--chdir={}", dir.display()),
            format!("--output={log}"),
            "--kill-on-invalid-dep=yes".to_owned(),
        ];
        args.extend(resource_args(resources));
        args
    };
    let single_log = dir.join("slurm-%j.log").display().to_string();
    match shape {
        Shape::Single => vec![PlannedJob {
            role: "job",
            args: common("job", &single_log),
            script: slurm_dir.join("job.sh"),
            text: script::render(
                &stage.name,
                &script::Role::Batch,
                &stage.commands,
                &slurm_dir,
            ),
            shards: Vec::new(),
            log: single_log,
            after_previous: false,
        }],
        Shape::Training => {
            let warning = resources.warning_seconds.unwrap_or(DEFAULT_WARNING_SECONDS);
            let mut args = common("training", &single_log);
            args.extend([
                format!("--nodes={}", resources.nodes.unwrap_or(1)),
                format!("--ntasks-per-node={ranks}"),
                format!("--signal=B:USR1@{warning}"),
                "--requeue".to_owned(),
                "--open-mode=append".to_owned(),
            ]);
            let checkpoints = dir.join("checkpoints");
            let role = script::Role::Training {
                checkpoints: &checkpoints,
                grace: warning.saturating_sub(STOP_MARGIN),
            };
            vec![PlannedJob {
                role: "training",
                args,
                script: slurm_dir.join("training.sh"),
                text: script::render(&stage.name, &role, &stage.commands, &slurm_dir),
                shards: Vec::new(),
                log: single_log,
                after_previous: false,
            }]
        }
        Shape::Array(plan) => {
            let mut jobs = Vec::new();
            let missing = plan.missing_shards();
            if !missing.is_empty() {
                let log = dir.join("slurm-%A_%a.log").display().to_string();
                let mut args = common("array", &log);
                let limit = resources
                    .max_parallel
                    .map_or(String::new(), |m| format!("%{m}"));
                args.push(format!("--array={}{limit}", compact(&missing)));
                jobs.push(PlannedJob {
                    role: "array",
                    args,
                    script: slurm_dir.join("array.sh"),
                    text: script::render(
                        &stage.name,
                        &script::Role::ArrayTask,
                        &plan.task,
                        &slurm_dir,
                    ),
                    shards: missing,
                    log,
                    after_previous: false,
                });
            }
            jobs.push(PlannedJob {
                role: "merge",
                args: common("merge", &single_log),
                script: slurm_dir.join("merge.sh"),
                text: script::render(&stage.name, &script::Role::Batch, &plan.merge, &slurm_dir),
                shards: Vec::new(),
                log: single_log,
                after_previous: true,
            });
            jobs
        }
    }
}

/// Ranks per node of a training job: the pipeline's `nproc_per_node` (the one world-size
/// setting, as under the local launcher), else one per GPU the job asks for, else one. Each
/// rank is an `srun` task and finds the others through `SLURM_PROCID`, `SLURM_NTASKS`, ...
fn tasks_per_node(nproc_per_node: Option<usize>, resources: &Resources) -> u32 {
    nproc_per_node
        .map(|n| n as u32)
        .or(resources.gpus_per_node)
        .unwrap_or(1)
        .max(1)
}

/// sbatch options of a job's resources.
fn resource_args(r: &Resources) -> Vec<String> {
    let mut args = Vec::new();
    let mut opt = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            args.push(format!("--{flag}={v}"));
        }
    };
    opt("partition", r.partition.clone());
    opt("account", r.account.clone());
    opt("qos", r.qos.clone());
    opt("time", r.time.clone());
    opt("mem", r.mem.clone());
    opt("cpus-per-task", r.cpus_per_task.map(|c| c.to_string()));
    opt("gpus-per-node", r.gpus_per_node.map(|g| g.to_string()));
    args.extend(r.extra.iter().flatten().cloned());
    args
}

fn with_dependency(args: &[String], deps: &[Dependency]) -> Vec<String> {
    let mut out = args.to_vec();
    if !deps.is_empty() {
        let ids: Vec<&str> = deps.iter().map(|d| d.job_id.as_str()).collect();
        out.push(format!("--dependency=afterok:{}", ids.join(":")));
    }
    out
}

/// `0-3`, `1,3`, `0-2,5`: an sbatch array list.
fn compact(shards: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let mut j = i;
        while j + 1 < shards.len() && shards[j + 1] == shards[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            shards[i].to_string()
        } else {
            format!("{}-{}", shards[i], shards[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Prints the sbatch lines of `stage`'s `jobs` and the commands of each; returns the
/// placeholder standing for the id of its last job.
fn print_dry_run(
    stage: &Stage,
    shape: &Shape,
    jobs: Vec<PlannedJob>,
    dependency: &[Dependency],
) -> String {
    println!("\n== {} (Slurm) ==", stage.name);
    let mut previous: Option<String> = None;
    for job in jobs {
        let mut deps = dependency.to_vec();
        if job.after_previous
            && let Some(p) = &previous
        {
            deps.push(Dependency {
                stage: stage.name.clone(),
                job_id: p.clone(),
            });
        }
        let line = with_dependency(&job.args, &deps);
        println!("$ sbatch {} {}", line.join(" "), job.script.display());
        let commands: &[Vec<String>] = match (shape, job.role) {
            (Shape::Array(plan), "array") => &plan.task,
            (Shape::Array(plan), _) => &plan.merge,
            _ => &stage.commands,
        };
        for command in commands {
            println!(
                "    {}{}",
                if matches!(shape, Shape::Training) {
                    "srun "
                } else {
                    ""
                },
                command.join(" ")
            );
        }
        previous = Some(format!("<{}.{}>", stage.name, job.role));
    }
    previous.unwrap_or_default()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Before planning (`pipeline`, `status`): records the stages whose jobs finished since the
/// last call and prints the failures; a no-op (no cluster needed) when nothing was submitted.
pub fn refresh(stages: &[Stage], run_dir: &Path) -> anyhow::Result<Collected> {
    let any = stages
        .iter()
        .any(|s| Submission::read(&run_dir.join(&s.name)).is_some());
    if !any {
        return Ok(Collected::default());
    }
    let cluster = Cluster::find().context("reading the state of submitted stages")?;
    let collected = collect(stages, run_dir, &cluster)?;
    for line in &collected.failed {
        println!("failed: {line}");
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_jobs_run_one_task_per_rank() {
        let gpus = Resources {
            gpus_per_node: Some(4),
            ..Resources::default()
        };
        assert_eq!(tasks_per_node(Some(2), &gpus), 2);
        assert_eq!(tasks_per_node(None, &gpus), 4);
        assert_eq!(tasks_per_node(None, &Resources::default()), 1);
    }

    #[test]
    fn array_lists_are_compact() {
        assert_eq!(compact(&[0, 1, 2, 3]), "0-3");
        assert_eq!(compact(&[1, 3]), "1,3");
        assert_eq!(compact(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}

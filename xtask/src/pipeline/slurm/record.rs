//! What the executor remembers about a submitted stage (`<stage>/slurm/submission.json`: the
//! stage's hash, its jobs with their dependencies and logs) and what the jobs leave behind
//! (`result-*.json`, see `script`), and the verdict drawn from both and the queue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::cluster::Queued;

/// The executor's folder in a stage folder.
pub const SLURM_DIR: &str = "slurm";
const SUBMISSION: &str = "submission.json";
/// Where a failed submission is moved, for inspection (the next run submits anew).
const FAILED_SUBMISSION: &str = "submission.failed.json";
/// Where a collected submission is moved once its stage is recorded.
const DONE_SUBMISSION: &str = "submission.done.json";

/// One submitted job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// `array`, `merge`, `training` or `job`.
    pub role: String,
    pub job_id: String,
    /// The shards an array job runs (empty for other jobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<u32>,
    /// Jobs this one waits for (`afterok`), with the stage each belongs to.
    pub dependency: Vec<Dependency>,
    /// Log file (`%A_%a` for array tasks: the task id replaces `%a`).
    pub log: String,
    /// The sbatch options it was submitted with.
    pub sbatch: Vec<String>,
}

/// An `afterok` edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub stage: String,
    pub job_id: String,
}

/// `submission.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub stage: String,
    /// The stage hash it was submitted for.
    pub hash: String,
    pub parts: BTreeMap<String, String>,
    /// Shards of the stage's array job (0 when it has none).
    pub shards: u32,
    pub submitted_unix: u64,
    /// The stage's jobs; the last one finishes the stage.
    pub jobs: Vec<JobRecord>,
}

/// A `result-*.json` written by a job's script on exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job: String,
    pub node: String,
    pub exit_code: i32,
    pub restarts: u32,
    /// Seconds the script ran (its last start, after a requeue).
    pub seconds: f64,
}

/// Where a submitted stage stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Jobs are queued or running: (job or task, state) pairs.
    InFlight(Vec<(String, String)>),
    /// Every job finished and the last one succeeded.
    Done,
    /// Finished with failures: one line per failed job or shard, naming its log.
    Failed(Vec<String>),
}

impl Submission {
    pub fn path(stage_dir: &Path) -> PathBuf {
        stage_dir.join(SLURM_DIR).join(SUBMISSION)
    }

    pub fn read(stage_dir: &Path) -> Option<Submission> {
        let text = std::fs::read_to_string(Self::path(stage_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, stage_dir: &Path) -> anyhow::Result<()> {
        stage_kit::write_bytes_atomically(
            &Self::path(stage_dir),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Moves the record aside after a failure, so that the next run submits again.
    pub fn retire(stage_dir: &Path) -> anyhow::Result<()> {
        Self::move_to(stage_dir, FAILED_SUBMISSION)
    }

    /// Moves the record aside once `stage.json` holds its outcome.
    pub fn settle(stage_dir: &Path) -> anyhow::Result<()> {
        Self::move_to(stage_dir, DONE_SUBMISSION)
    }

    fn move_to(stage_dir: &Path, name: &str) -> anyhow::Result<()> {
        let from = Self::path(stage_dir);
        let to = stage_dir.join(SLURM_DIR).join(name);
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))
    }

    /// The job ids of the submission.
    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.job_id.clone()).collect()
    }

    /// The ids each job's tasks have in results and logs: `id` or `id_shard`.
    fn tasks(job: &JobRecord) -> Vec<(String, Option<u32>)> {
        if job.role == "array" {
            job.shards
                .iter()
                .map(|s| (format!("{}_{s}", job.job_id), Some(*s)))
                .collect()
        } else {
            vec![(job.job_id.clone(), None)]
        }
    }

    /// The verdict from the queue (`queued`, as [`super::cluster::Cluster::queue`] gives it)
    /// and the result files in `stage_dir`.
    pub fn verdict(&self, stage_dir: &Path, queued: &BTreeMap<String, Queued>) -> Verdict {
        let mut live = Vec::new();
        for job in &self.jobs {
            for (key, q) in queued {
                if key.split('_').next() == Some(job.job_id.as_str()) {
                    live.push((key.clone(), q.state.clone()));
                }
            }
        }
        let mut failures = Vec::new();
        for job in &self.jobs {
            for (task, shard) in Self::tasks(job) {
                if live.iter().any(|(k, _)| *k == task || *k == job.job_id) {
                    continue;
                }
                let log = job
                    .log
                    .replace("%a", &shard.map_or(String::new(), |s| s.to_string()));
                let what = match shard {
                    Some(s) => format!(
                        "stage {}: shard {s}/{} (array task {task})",
                        self.stage, self.shards
                    ),
                    None => format!("stage {}: {} job {task}", self.stage, job.role),
                };
                match read_result(stage_dir, &task) {
                    Some(r) if r.exit_code == 0 => {}
                    Some(r) => failures.push(format!(
                        "{what} exited with {} on {}; log {log}",
                        r.exit_code, r.node
                    )),
                    None => failures.push(format!(
                        "{what} did not finish (cancelled, killed or never started); log {log}"
                    )),
                }
            }
        }
        if !live.is_empty() {
            return Verdict::InFlight(live);
        }
        if failures.is_empty() {
            Verdict::Done
        } else {
            Verdict::Failed(failures)
        }
    }

    /// For `stage.json`: the jobs with their dependencies, and each task's node and exit code.
    pub fn bookkeeping(&self, stage_dir: &Path) -> serde_json::Value {
        let jobs: Vec<serde_json::Value> = self
            .jobs
            .iter()
            .map(|job| {
                let tasks: Vec<serde_json::Value> = Self::tasks(job)
                    .into_iter()
                    .map(|(task, shard)| {
                        let result = read_result(stage_dir, &task);
                        serde_json::json!({
                            "task": task,
                            "shard": shard,
                            "node": result.as_ref().map(|r| r.node.clone()),
                            "exit_code": result.as_ref().map(|r| r.exit_code),
                            "restarts": result.as_ref().map(|r| r.restarts),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "role": job.role,
                    "job_id": job.job_id,
                    "dependency": job.dependency,
                    "log": job.log,
                    "sbatch": job.sbatch,
                    "tasks": tasks,
                })
            })
            .collect();
        serde_json::json!({ "shards": self.shards, "jobs": jobs })
    }
}

/// The result file of `task` (`id` or `id_shard`), if the job wrote one.
pub fn read_result(stage_dir: &Path, task: &str) -> Option<JobResult> {
    let path = stage_dir
        .join(SLURM_DIR)
        .join(format!("result-{task}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_queue_and_the_result_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SLURM_DIR)).unwrap();
        let job = |role: &str, id: &str, shards: Vec<u32>| JobRecord {
            role: role.into(),
            job_id: id.into(),
            shards,
            dependency: vec![],
            log: format!("/r/slurm-{id}_%a.log"),
            sbatch: vec![],
        };
        let submission = Submission {
            stage: "prepare".into(),
            hash: "h".into(),
            parts: BTreeMap::new(),
            shards: 2,
            submitted_unix: 0,
            jobs: vec![job("array", "7", vec![0, 1]), job("merge", "8", vec![])],
        };
        let result = |task: &str, code: i32| {
            let r = JobResult {
                job: task.into(),
                node: "n1".into(),
                exit_code: code,
                restarts: 0,
                seconds: 1.0,
            };
            std::fs::write(
                dir.path()
                    .join(SLURM_DIR)
                    .join(format!("result-{task}.json")),
                serde_json::to_string(&r).unwrap(),
            )
            .unwrap();
        };
        let running = BTreeMap::from([(
            "7_1".to_owned(),
            Queued {
                state: "RUNNING".into(),
                reason: "None".into(),
            },
        )]);
        result("7_0", 0);
        assert!(matches!(
            submission.verdict(dir.path(), &running),
            Verdict::InFlight(_)
        ));
        result("7_1", 143);
        let Verdict::Failed(lines) = submission.verdict(dir.path(), &BTreeMap::new()) else {
            panic!("not failed")
        };
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("shard 1/2") && lines[0].contains("/r/slurm-7_1.log"));
        assert!(lines[1].contains("merge job 8 did not finish"));
        result("7_1", 0);
        result("8", 0);
        assert_eq!(
            submission.verdict(dir.path(), &BTreeMap::new()),
            Verdict::Done
        );
        let book = submission.bookkeeping(dir.path());
        assert_eq!(book["jobs"][0]["tasks"][1]["node"], "n1");
    }
}

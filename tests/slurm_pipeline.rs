//! The Slurm executor against a real slurmctld and slurmd on this machine (`cargo xtask
//! slurm-local`, 127.0.0.1 only, started by the test and stopped by pid at its end): the
//! shortened fixture pipeline at world size 2 (`nproc_per_node = 2`) with scan, prepare and
//! embed in 2 shards gives the report, the bit-identical embeddings and the training weights
//! of the local executor, whose training stages run 2 ranks through the launcher while the
//! Slurm jobs run 2 `srun` tasks that meet through the Slurm variables; the jobs, their
//! dependency chain and the array tasks are recorded; a second submission submits nothing; a
//! cancelled array task is rerun alone; a training job warned with USR1 checkpoints, requeues
//! itself and ends with the weights of the uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use end_to_end::{edit, run, small_fixture_pipeline};
use xtask::pipeline::{self, Executor, Options, Outcome};
use xtask::slurm_local;

/// Bound on each wait for the scheduler (a job to start, a stage to be recorded).
const WAIT: Duration = Duration::from_secs(300);

/// Stops the local cluster at the end if this test started it.
struct LocalCluster {
    started_here: bool,
}

impl LocalCluster {
    fn start() -> Self {
        let was_running = Command::new("sinfo")
            .env("SLURM_CONF", slurm_local::conf_path())
            .args(["-h", "-o", "%T"])
            .output()
            .is_ok_and(|o| o.status.success());
        slurm_local::start().expect("starting the local Slurm cluster");
        LocalCluster {
            started_here: !was_running,
        }
    }

    fn command(program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", slurm_local::conf_path());
        cmd
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.started_here {
            let _ = slurm_local::stop();
        }
    }
}

fn slurm_run(
    pipeline: &Path,
    run_dir: &Path,
    only: Option<&str>,
    submit_and_exit: bool,
) -> anyhow::Result<Outcome> {
    pipeline::run(&Options {
        name: pipeline.display().to_string(),
        run_dir: Some(run_dir.to_path_buf()),
        only: only.map(str::to_owned),
        executor: Executor::Slurm,
        submit_and_exit,
        ..Options::default()
    })
}

fn without_timings(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(k, _)| k != "wall_seconds")
            .map(|(k, v)| (k, without_timings(v)))
            .collect(),
        serde_json::Value::Array(items) => items.into_iter().map(without_timings).collect(),
        other => other,
    }
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// SHA-256 of the `embeddings` and `utt_id` datasets of each embeddings file (h5py).
fn embedding_digests(files: &[PathBuf]) -> Vec<String> {
    const SCRIPT: &str = r#"
import hashlib, sys, h5py
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        h = hashlib.sha256(f["embeddings"][()].tobytes())
        h.update(b"".join(bytes(x) for x in f["utt_id"][()]))
        print(h.hexdigest(), f["embeddings"].shape)
"#;
    stage_kit::reference::run_python(SCRIPT, files)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn embeddings(run_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["embed", "embed-r1"]
        .iter()
        .flat_map(|stage| std::fs::read_dir(run_dir.join(stage)).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "h5"))
        .filter(|p| !p.to_string_lossy().contains(".shard-"))
        .collect();
    files.sort();
    files
}

/// The tensor bytes of a stage's `model.safetensors`: the file after its JSON header, whose
/// metadata names the run folder (a fine-tuning's `init` path).
fn weights(stage_dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(stage_dir.join("model.safetensors")).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..].to_vec()
}

/// The queue state of `job` (`id` or `id_task`), if queued.
fn queue_state(job: &str) -> Option<String> {
    let out = LocalCluster::command("squeue")
        .args(["-h", "-r", "-o", "%i %T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(id, _)| *id == job)
        .map(|(_, state)| state.to_owned())
}

fn queue_is_empty() -> bool {
    let out = LocalCluster::command("squeue")
        .args(["-h"])
        .output()
        .unwrap();
    out.status.success() && out.stdout.is_empty()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn submission(run_dir: &Path, stage: &str) -> serde_json::Value {
    json(&run_dir.join(stage).join("slurm/submission.json"))
}

#[test]
fn slurm_runs_the_pipeline_as_the_local_executor_does() {
    if std::env::var_os("CI").is_none()
        && unsafe { libc::geteuid() } != 0
        && !Path::new("/usr/sbin/slurmctld").exists()
    {
        eprintln!("skipped: Slurm is not installed and installing it needs root (CI installs it)");
        return;
    }
    let _cluster = LocalCluster::start();
    let work = tempfile::tempdir().unwrap();
    let pipeline = small_fixture_pipeline(work.path()).unwrap();
    edit(&pipeline, &["pipeline"], "nproc_per_node", 2.into()).unwrap();
    let text = std::fs::read_to_string(&pipeline).unwrap();
    // Same threads as the local run: all cores for one-process stages (embed's shards too),
    // the launcher's share (cores / 2) for each training rank; scan and prepare tasks, whose
    // output does not depend on threads, take one core each and run side by side. The ranks
    // meet on 127.0.0.1, not on the address the node's name resolves to.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rank_cores = (cores / 2).max(1);
    std::fs::write(
        &pipeline,
        format!(
            "{text}\n[slurm]\ncpus_per_task = {cores}\nshards = 2\n\
             extra = [\"--export=ALL,MASTER_ADDR=127.0.0.1\"]\n\
             [slurm.stage.scan]\ncpus_per_task = 1\n[slurm.stage.prepare]\ncpus_per_task = 1\n\
             [slurm.stage.pretrain]\ncpus_per_task = {rank_cores}\n\
             [slurm.stage.finetune]\ncpus_per_task = {rank_cores}\n"
        ),
    )
    .unwrap();
    let local_dir = work.path().join("local");
    let slurm_dir = work.path().join("slurm");
    let local = run(&pipeline, &local_dir, None).unwrap();

    let first = slurm_run(&pipeline, &slurm_dir, None, false).unwrap();
    assert_eq!(first.ran, local.ran);
    assert_eq!(first.submitted, local.ran);
    // Every number but the evaluations' own timings.
    let report = |dir: &Path| without_timings(json(&dir.join("report.json"))["systems"].clone());
    assert_eq!(report(&slurm_dir), report(&local_dir));
    assert!(report(&slurm_dir)[1]["sv"]["fixture"]["eer"].is_number());
    assert_eq!(
        embedding_digests(&embeddings(&slurm_dir)),
        embedding_digests(&embeddings(&local_dir))
    );

    // Training at world size 2: one job of 2 srun tasks per node, whose ranks met through
    // the Slurm variables, ending with the local launcher's weights.
    for stage in ["pretrain", "finetune-r1"] {
        let job = &json(&slurm_dir.join(stage).join("stage.json"))["slurm"]["jobs"][0];
        let sbatch: Vec<&str> = job["sbatch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            sbatch.contains(&"--ntasks-per-node=2"),
            "{stage}: {sbatch:?}"
        );
        let log = std::fs::read_to_string(job["log"].as_str().unwrap()).unwrap();
        assert!(log.contains("rank 1 of 2"), "{stage}: {log}");
        assert!(
            weights(&slurm_dir.join(stage)) == weights(&local_dir.join(stage)),
            "{stage}: the weights differ from the local launcher's"
        );
    }
    // Embedding in an array of 2 tasks, merged before the model bundle.
    let embed = json(&slurm_dir.join("embed/stage.json"))["slurm"].clone();
    assert_eq!(embed["jobs"][0]["role"], "array");
    assert_eq!(embed["jobs"][0]["tasks"].as_array().unwrap().len(), 2);

    // The bookkeeping: prepare's array of 2 tasks, its merge after it, pretraining after the
    // merge; the completion log has both array tasks.
    let prepare = json(&slurm_dir.join("prepare/stage.json"))["slurm"].clone();
    let (array, merge) = (&prepare["jobs"][0], &prepare["jobs"][1]);
    assert_eq!(
        (array["role"].as_str(), merge["role"].as_str()),
        (Some("array"), Some("merge"))
    );
    assert_eq!(array["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(array["tasks"][1]["exit_code"], 0);
    let scan = json(&slurm_dir.join("scan/stage.json"))["slurm"].clone();
    let merge_deps: Vec<&str> = merge["dependency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        merge_deps,
        [
            scan["jobs"][1]["job_id"].as_str().unwrap(),
            array["job_id"].as_str().unwrap()
        ]
    );
    let pretrain = json(&slurm_dir.join("pretrain/stage.json"))["slurm"].clone();
    let pretrain_deps: BTreeMap<String, String> = pretrain["jobs"][0]["dependency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["stage"].as_str().unwrap().to_owned(),
                d["job_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pretrain_deps.get("prepare"),
        merge["job_id"].as_str().map(str::to_owned).as_ref()
    );
    let completions = std::fs::read_to_string(slurm_local::jobcomp_path()).unwrap();
    let array_id = array["job_id"].as_str().unwrap();
    for task in 0..2 {
        let line = format!("ArrayJobId={array_id} ArrayTaskId={task} ");
        let entry = completions
            .lines()
            .find(|l| l.contains(&line))
            .unwrap_or_else(|| panic!("{line} not in the completion log"));
        assert!(
            entry.contains("JobState=COMPLETED") && entry.contains("ExitCode=0:0"),
            "{entry}"
        );
    }

    // Nothing to do: nothing submitted.
    let jobs_before = completions.lines().count();
    let second = slurm_run(&pipeline, &slurm_dir, None, false).unwrap();
    assert!(
        second.submitted.is_empty() && second.ran.is_empty(),
        "{second:?}"
    );
    assert_eq!(second.skipped, local.ran);
    let completions = std::fs::read_to_string(slurm_local::jobcomp_path()).unwrap();
    assert_eq!(completions.lines().count(), jobs_before);

    // A shard cancelled while running is the only one the next submission reruns.
    std::fs::remove_file(slurm_dir.join("prepare/stage.json")).unwrap();
    let submitted = slurm_run(&pipeline, &slurm_dir, Some("prepare"), true).unwrap();
    assert_eq!(submitted.submitted, ["prepare"]);
    let array_id = submission(&slurm_dir, "prepare")["jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = format!("{array_id}_1");
    wait_until("shard 1 to run", || {
        queue_state(&task).as_deref() == Some("RUNNING")
    });
    assert!(
        LocalCluster::command("scancel")
            .arg(&task)
            .status()
            .unwrap()
            .success()
    );
    wait_until("the queue to empty", || {
        std::thread::sleep(Duration::from_millis(500));
        queue_is_empty()
    });
    let rerun_outcome = slurm_run(&pipeline, &slurm_dir, Some("prepare"), false).unwrap();
    assert_eq!(rerun_outcome.resumed, ["prepare"]);
    let rerun = json(&slurm_dir.join("prepare/stage.json"))["slurm"].clone();
    assert_eq!(rerun["jobs"][0]["role"], "array");
    let shards: Vec<u64> = rerun["jobs"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["shard"].as_u64().unwrap())
        .collect();
    assert_eq!(shards, [1]);

    // The warning signal: the training job waits for a checkpoint, requeues, resumes and ends
    // with the uninterrupted run's weights.
    let submitted = slurm_run(&pipeline, &slurm_dir, Some("pretrain"), true).unwrap();
    assert_eq!(submitted.submitted, ["pretrain"]);
    let job = submission(&slurm_dir, "pretrain")["jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Warned once its first checkpoint (step 2 of 8) is written: mid-run, with the next
    // checkpoint to wait for still ahead.
    let first_checkpoint = slurm_dir.join("pretrain/checkpoints/step-00000002.safetensors");
    wait_until("pretraining's first checkpoint", || {
        first_checkpoint.exists()
    });
    assert_eq!(queue_state(&job).as_deref(), Some("RUNNING"));
    assert!(
        LocalCluster::command("scancel")
            .args(["--batch", "--signal=USR1", &job])
            .status()
            .unwrap()
            .success()
    );
    // Slurm holds a requeued job for two minutes (its begin time); release it sooner, but
    // not within the second of the requeue: slurmd refuses a credential issued no later than
    // the second its job's previous run was revoked ("Job credential revoked"), and the job
    // then fails without running (seen when released with StartTime=now).
    wait_until("the requeued job to wait", || {
        queue_state(&job).as_deref() == Some("PENDING")
    });
    assert!(
        LocalCluster::command("scontrol")
            .args(["update", &format!("JobId={job}"), "StartTime=now+2"])
            .status()
            .unwrap()
            .success()
    );
    wait_until("pretraining to be recorded", || {
        std::thread::sleep(Duration::from_secs(1));
        pipeline::status(
            &pipeline.display().to_string(),
            Some(slurm_dir.clone()),
            None,
            &BTreeMap::new(),
            &[],
        )
        .unwrap();
        slurm_dir.join("pretrain/stage.json").exists()
    });
    let record = json(&slurm_dir.join("pretrain/stage.json"))["slurm"].clone();
    assert_eq!(record["jobs"][0]["tasks"][0]["restarts"], 1, "{record}");
    let log = std::fs::read_to_string(slurm_dir.join(format!("pretrain/slurm-{job}.log"))).unwrap();
    assert!(
        log.contains("requeueing") && log.contains("resuming from"),
        "{log}"
    );
    assert!(
        weights(&slurm_dir.join("pretrain")) == weights(&local_dir.join("pretrain")),
        "the requeued pretraining ends with other weights than the uninterrupted one"
    );
}

//! The bash scripts the jobs run. Each sets the intra-op threads from `--cpus-per-task`, runs
//! the stage's commands, and on exit leaves a result file in the stage's `slurm/` folder
//! (`result-<job>.json`, `result-<array job>_<task>.json`: exit code, node, restarts), which is
//! how the runner learns a job's outcome without accounting. A training job's script starts
//! its command with `srun`; on the warning signal (USR1, `--signal=B:USR1@...`) it waits for
//! the trainer's next periodic checkpoint (or until shortly before the limit), stops the step
//! and requeues the job, which resumes from that checkpoint (`--resume`).

use std::path::Path;

use super::shape::SHARD;

/// What kind of job a script is for.
pub enum Role<'a> {
    /// An array task: [`SHARD`] in the commands is its task id.
    ArrayTask,
    /// One batch job running its commands in order.
    Batch,
    /// A training job: `srun` tasks; `checkpoints` is the folder the trainer checkpoints
    /// into, `grace` the seconds it may take after the warning.
    Training { checkpoints: &'a Path, grace: u32 },
}

/// The script of a job of `stage` that runs `commands`, writing results into `slurm_dir`.
pub fn render(stage: &str, role: &Role, commands: &[Vec<String>], slurm_dir: &Path) -> String {
    let dir = quote(&slurm_dir.display().to_string());
    let job = match role {
        Role::ArrayTask => "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}",
        _ => "${SLURM_JOB_ID}",
    };
    let mut s = format!(
        "#!/bin/bash\n\
         # Job of stage {stage}, written by `cargo xtask pipeline` (Slurm executor).\n\
         set -uo pipefail\n\
         export OMP_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-${{OMP_NUM_THREADS:-}}}}\"\n\
         [ -n \"$OMP_NUM_THREADS\" ] || unset OMP_NUM_THREADS\n\
         # srun steps get the job's CPUs per task (Slurm 22.05 no longer passes them on).\n\
         [ -z \"${{SLURM_CPUS_PER_TASK:-}}\" ] || export SRUN_CPUS_PER_TASK=\"$SLURM_CPUS_PER_TASK\"\n\
         requeued=0\n\
         finish() {{\n\
         \x20 local code=$?\n\
         \x20 [ \"$requeued\" = 1 ] && return\n\
         \x20 local out={dir}/result-{job}.json\n\
         \x20 printf '{{\"job\": \"%s\", \"node\": \"%s\", \"exit_code\": %d, \"restarts\": %d, \"seconds\": %d}}\\n' \\\n\
         \x20   \"{job}\" \"${{SLURMD_NODENAME:-$(hostname)}}\" \"$code\" \"${{SLURM_RESTART_COUNT:-0}}\" \"$SECONDS\" > \"$out.partial\" \\\n\
         \x20   && mv \"$out.partial\" \"$out\"\n\
         }}\n\
         trap finish EXIT\n\
         echo \"== job {job} of stage {stage} on ${{SLURMD_NODENAME:-$(hostname)}}, restart ${{SLURM_RESTART_COUNT:-0}}\"\n"
    );
    match role {
        Role::ArrayTask | Role::Batch => {
            if matches!(role, Role::ArrayTask) {
                s.push_str("SHARD=\"${SLURM_ARRAY_TASK_ID:?not an array task}\"\n");
            }
            s.push_str("set -e\n");
            for command in commands {
                s.push_str(&line(command));
                s.push('\n');
            }
        }
        Role::Training { checkpoints, grace } => {
            let checkpoints = quote(&checkpoints.display().to_string());
            s.push_str(&format!(
                "warned=0\n\
                 trap 'warned=1' USR1\n\
                 run_step() {{\n\
                 \x20 srun --kill-on-bad-exit=1 \"$@\" &\n\
                 \x20 local step=$! code=0\n\
                 \x20 wait \"$step\" || code=$?\n\
                 \x20 if [ \"$warned\" = 1 ] && kill -0 \"$step\" 2>/dev/null; then\n\
                 \x20   echo \"== warning signal: waiting for the next checkpoint in {checkpoints}, then requeueing\"\n\
                 \x20   local mark={dir}/warned.$SLURM_JOB_ID deadline=$((SECONDS + {grace}))\n\
                 \x20   touch \"$mark\"\n\
                 \x20   while kill -0 \"$step\" 2>/dev/null && [ \"$SECONDS\" -lt \"$deadline\" ] \\\n\
                 \x20     && [ -z \"$(find {checkpoints} -newer \"$mark\" -type f -print -quit 2>/dev/null)\" ]; do\n\
                 \x20     sleep 1\n\
                 \x20   done\n\
                 \x20   rm -f \"$mark\"\n\
                 \x20   if kill -0 \"$step\" 2>/dev/null; then\n\
                 \x20     kill -TERM \"$step\"; wait \"$step\"\n\
                 \x20     requeued=1\n\
                 \x20     echo \"== checkpointed; requeueing job $SLURM_JOB_ID\"\n\
                 \x20     scontrol requeue \"$SLURM_JOB_ID\"\n\
                 \x20     exit 0\n\
                 \x20   fi\n\
                 \x20   code=0; wait \"$step\" || code=$?\n\
                 \x20 fi\n\
                 \x20 return \"$code\"\n\
                 }}\n"
            ));
            for command in commands {
                s.push_str(&format!("run_step {} || exit $?\n", line(command)));
            }
        }
    }
    s
}

/// A command line for bash, every argument quoted and [`SHARD`] expanded from `$SHARD`.
fn line(command: &[String]) -> String {
    command
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` in single quotes (`'` as `'\''`), with [`SHARD`] left to the shell as `$SHARD`.
pub fn quote(arg: &str) -> String {
    let quoted = format!("'{}'", arg.replace('\'', r"'\''"));
    quoted.replace(SHARD, "'\"$SHARD\"'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_and_the_shard_comes_from_the_array_task() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("x.shard-@SHARD@.h5"), "'x.shard-'\"$SHARD\"'.h5'");
        let script = render(
            "scan",
            &Role::ArrayTask,
            &[vec![
                "/b/data-manifest".into(),
                "--shard".into(),
                "@SHARD@/2".into(),
            ]],
            Path::new("/r/scan/slurm"),
        );
        assert!(script.contains("'/b/data-manifest' '--shard' ''\"$SHARD\"'/2'\n"));
        assert!(script.contains("result-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.json"));
        let training = render(
            "pretrain",
            &Role::Training {
                checkpoints: Path::new("/r/pretrain/checkpoints"),
                grace: 240,
            },
            &[vec!["/b/dino-core".into(), "pretrain".into()]],
            Path::new("/r/pretrain/slurm"),
        );
        assert!(training.contains("run_step '/b/dino-core' 'pretrain' || exit $?\n"));
        assert!(training.contains("scontrol requeue"));
    }
}

//! The Slurm client commands the executor calls (`sbatch`, `squeue`, `scancel`, `sinfo`),
//! against the cluster `SLURM_CONF` (or `/etc/slurm/slurm.conf`) names, or else the one
//! `cargo xtask slurm-local start` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{command, slurm_local};

/// Where the client commands find the controller.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `SLURM_CONF` to set for the clients; `None` leaves them to their own lookup.
    conf: Option<PathBuf>,
}

/// A job of the queue: its state (`PENDING`, `RUNNING`, ...) and why it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub state: String,
    pub reason: String,
}

impl Cluster {
    /// The cluster of this machine's configuration, else the local one.
    pub fn find() -> anyhow::Result<Self> {
        if std::env::var_os("SLURM_CONF").is_some() || Path::new("/etc/slurm/slurm.conf").exists() {
            return Ok(Cluster { conf: None });
        }
        let local = slurm_local::conf_path();
        if local.exists() {
            println!(
                "slurm: no SLURM_CONF and no /etc/slurm/slurm.conf; using the local cluster {}",
                local.display()
            );
            return Ok(Cluster { conf: Some(local) });
        }
        bail!(
            "no Slurm configuration: set SLURM_CONF, or start a local cluster with `cargo xtask slurm-local start`"
        )
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(conf) = &self.conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd
    }

    /// Submits `script` with `args`; returns the job id.
    pub fn sbatch(&self, args: &[String], script: &Path) -> anyhow::Result<String> {
        let out = command::stdout(self.command("sbatch").args(args).arg(script))
            .context("submitting with sbatch")?;
        // `--parsable` prints `id` or `id;cluster`.
        let id = out.split(';').next().unwrap_or_default().trim().to_owned();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch printed {out:?}, not a job id");
        }
        Ok(id)
    }

    /// The queued or running jobs among `ids` (array job ids, or plain job ids), keyed by
    /// `id` or `id_task` for array tasks.
    pub fn queue(&self, ids: &[String]) -> anyhow::Result<BTreeMap<String, Queued>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        // The whole queue, filtered here: `squeue -j` fails on ids it has forgotten.
        let out = command::stdout(
            self.command("squeue")
                .args(["-h", "-r", "-o", "%F|%K|%T|%r"]),
        )
        .context("listing the queue")?;
        Ok(parse_queue(&out)
            .into_iter()
            .filter(|(key, _)| {
                ids.iter()
                    .any(|id| key.split('_').next() == Some(id.as_str()))
            })
            .collect())
    }

    /// Cancels `ids` (jobs, arrays or `array_task` ids); ids already gone are ignored.
    pub fn cancel(&self, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let status = self
            .command("scancel")
            .args(ids)
            .status()
            .context("running scancel")?;
        if !status.success() {
            eprintln!("scancel {} exited with {status}", ids.join(" "));
        }
        Ok(())
    }

    /// Number of nodes of the cluster (`sinfo`), to judge whether the build must be on a
    /// shared filesystem.
    pub fn nodes(&self) -> anyhow::Result<usize> {
        let out = command::stdout(self.command("sinfo").args(["-h", "-N", "-o", "%N"]))?;
        let mut names: Vec<&str> = out.lines().map(str::trim).collect();
        names.sort();
        names.dedup();
        Ok(names.len())
    }
}

fn parse_queue(text: &str) -> BTreeMap<String, Queued> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split('|');
            let (job, task, state, reason) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let key = if task == "N/A" || task.is_empty() {
                job.to_owned()
            } else {
                format!("{job}_{task}")
            };
            Some((
                key,
                Queued {
                    state: state.to_owned(),
                    reason: reason.to_owned(),
                },
            ))
        })
        .collect()
}

/// Filesystem types that compute nodes share.
const SHARED_FILESYSTEMS: [&str; 9] = [
    "nfs",
    "nfs4",
    "lustre",
    "gpfs",
    "beegfs",
    "cifs",
    "smb2",
    "ceph",
    "fuse.sshfs",
];

/// Fails when the cluster has more than one node and `path` (the binaries, libtorch) lies on
/// a filesystem that is not a network one: the other nodes could not run the jobs.
pub fn check_shared(cluster: &Cluster, paths: &[PathBuf]) -> anyhow::Result<()> {
    let nodes = cluster.nodes().unwrap_or(1);
    if nodes <= 1 {
        return Ok(());
    }
    for path in paths {
        let kind = command::stdout(Command::new("stat").args(["-f", "-c", "%T"]).arg(path))?;
        if !SHARED_FILESYSTEMS.contains(&kind.as_str()) {
            bail!(
                "{} is on a {kind} filesystem, but the cluster has {nodes} nodes: the binaries and \
                 target/setup (libtorch) must be on a filesystem every compute node mounts \
                 (build in a checkout on a shared filesystem)",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_lines_key_array_tasks_by_task() {
        let q =
            parse_queue("12|N/A|RUNNING|None\n13|0|RUNNING|None\n13|1|PENDING|JobArrayTaskLimit\n");
        assert_eq!(q.len(), 3);
        assert_eq!(q["12"].state, "RUNNING");
        assert_eq!(q["13_1"].reason, "JobArrayTaskLimit");
    }
}

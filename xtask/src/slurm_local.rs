//! `cargo xtask slurm-local start|stop|status`: a one-node Slurm cluster on this machine, for
//! the Slurm executor's tests and for trying it out. Debian's `slurm-wlm` and `munge` (apt-get,
//! as root, when missing); `munged` started as the munge user, then `slurmctld` and `slurmd`
//! by hand (no systemd), all listening on 127.0.0.1 only. Configuration, state, spool, logs
//! and the job-completion log live in `target/slurm-local/`.
//!
//! The configuration avoids what fails in containers and what serialises array tasks: process
//! tracking by /proc (`proctrack/linuxproc`, `task/none`, no cgroups), cores as the only
//! consumable (`cons_tres` with `CR_Core`: jobs do not reserve the node's memory), no
//! accounting database (finished jobs go to a `jobcomp/filetxt` log), and
//! `kill_invalid_depend` so that dependents of a failed job are cancelled, not left pending.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::command;

/// How long `start` waits for the node to be idle.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for a daemon to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Debian packages of the Slurm daemons and clients and of their authentication.
const PACKAGES: [&str; 2] = ["slurm-wlm", "munge"];
/// munged's socket folder (the default where slurm's auth/munge looks).
const MUNGE_RUN_DIR: &str = "/run/munge";
/// The job-completion log's name in [`dir`].
const JOBCOMP_FILE: &str = "jobcomp.txt";

/// The folder of the local cluster: `target/slurm-local`.
pub fn dir() -> PathBuf {
    crate::workspace::setup_dir()
        .parent()
        .map(|target| target.join("slurm-local"))
        .expect("setup_dir lives in target/")
}

/// `slurm.conf` of the local cluster (what `SLURM_CONF` must name for the clients).
pub fn conf_path() -> PathBuf {
    dir().join("slurm.conf")
}

/// The job-completion log of the local cluster (one line per finished job or array task).
pub fn jobcomp_path() -> PathBuf {
    dir().join(JOBCOMP_FILE)
}

/// A daemon of the local cluster and the file holding its pid.
struct Daemon {
    name: &'static str,
    pid_file: PathBuf,
}

fn daemons() -> [Daemon; 2] {
    let dir = dir();
    [
        Daemon {
            name: "slurmd",
            pid_file: dir.join("slurmd.pid"),
        },
        Daemon {
            name: "slurmctld",
            pid_file: dir.join("slurmctld.pid"),
        },
    ]
}

/// munged's pid, recorded only when `start` started it (a munged already running is left
/// alone by `stop`).
fn munged_pid_file() -> PathBuf {
    dir().join("munged.pid")
}

/// Starts the cluster (installing it first when needed) unless it runs; returns when `sinfo`
/// shows the node idle.
pub fn start() -> anyhow::Result<()> {
    ensure_installed()?;
    let dir = dir();
    for sub in ["state", "spool", "log"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    start_munged()?;
    let running: Vec<Option<i32>> = daemons().iter().map(|d| alive_pid(&d.pid_file)).collect();
    if running.iter().all(Option::is_some) {
        println!("slurm-local already running ({})", conf_path().display());
    } else {
        stop_daemons()?;
        let node = NodeSpec::probe()?;
        stage_kit::write_bytes_atomically(&conf_path(), render_conf(&node, &dir).as_bytes())?;
        for program in ["slurmctld", "slurmd"] {
            command::run(
                Command::new(format!("/usr/sbin/{program}"))
                    .arg("-f")
                    .arg(conf_path()),
            )
            .with_context(|| {
                format!(
                    "starting {program} (log: {})",
                    dir.join("log").join(format!("{program}.log")).display()
                )
            })?;
        }
    }
    wait_idle()?;
    println!(
        "slurm-local: node idle; use it with\n  export SLURM_CONF={}",
        conf_path().display()
    );
    Ok(())
}

/// Stops the daemons `start` started, by pid.
pub fn stop() -> anyhow::Result<()> {
    stop_daemons()?;
    if let Some(pid) = alive_pid(&munged_pid_file()) {
        terminate(pid, "munged")?;
    }
    let _ = std::fs::remove_file(munged_pid_file());
    println!("slurm-local stopped");
    Ok(())
}

/// Prints each daemon's pid (or that it is not running) and `sinfo`.
pub fn status() -> anyhow::Result<()> {
    let mut all = true;
    for d in daemons() {
        match alive_pid(&d.pid_file) {
            Some(pid) => println!("{:<10} running, pid {pid}", d.name),
            None => {
                all = false;
                println!("{:<10} not running", d.name);
            }
        }
    }
    if all {
        println!(
            "{}",
            command::stdout(sinfo().args(["-o", "%P %a %D %T %N %c %m"]))?
        );
    }
    Ok(())
}

/// `sinfo` against the local cluster.
fn sinfo() -> Command {
    let mut cmd = Command::new("sinfo");
    cmd.env("SLURM_CONF", conf_path());
    cmd
}

fn ensure_installed() -> anyhow::Result<()> {
    let needed = [
        "/usr/sbin/slurmctld",
        "/usr/sbin/slurmd",
        "/usr/sbin/munged",
        "/usr/bin/sbatch",
    ];
    if needed.iter().all(|p| Path::new(p).exists()) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "Slurm is not installed and this is not root: install Debian's {} (apt-get install {})",
            PACKAGES.join(" and "),
            PACKAGES.join(" ")
        );
    }
    println!("installing {} with apt-get", PACKAGES.join(", "));
    command::run(Command::new("apt-get").args(["update", "-qq"]))?;
    command::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(PACKAGES),
    )
}

/// Starts munged as the munge user unless a munged answers already.
fn start_munged() -> anyhow::Result<()> {
    let answers = || {
        Command::new("munge")
            .arg("-n")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers() {
        return Ok(());
    }
    if !Path::new("/etc/munge/munge.key").exists() {
        command::run(Command::new("runuser").args(["-u", "munge", "--", "mungekey", "--create"]))?;
    }
    command::run(Command::new("install").args([
        "-d",
        "-o",
        "munge",
        "-g",
        "munge",
        "-m",
        "0755",
        MUNGE_RUN_DIR,
    ]))?;
    command::run(Command::new("runuser").args(["-u", "munge", "--", "/usr/sbin/munged"]))?;
    let pid_file = Path::new(MUNGE_RUN_DIR).join("munged.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("munged started but wrote no {}", pid_file.display()))?;
    stage_kit::write_bytes_atomically(&munged_pid_file(), pid.trim().as_bytes())?;
    if !answers() {
        bail!("munged started but `munge -n` fails (see /var/log/munge/munged.log)");
    }
    Ok(())
}

fn stop_daemons() -> anyhow::Result<()> {
    for d in daemons() {
        if let Some(pid) = alive_pid(&d.pid_file) {
            terminate(pid, d.name)?;
        }
        let _ = std::fs::remove_file(&d.pid_file);
    }
    Ok(())
}

/// The pid in `pid_file` if that process is alive (and not a zombie).
fn alive_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    (state != 'Z').then_some(pid)
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
fn terminate(pid: i32, name: &str) -> anyhow::Result<()> {
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    // SAFETY: kill(2) on a pid read from the daemon's own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while !gone() {
        if started.elapsed() > STOP_GRACE {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopped {name} (pid {pid})");
    Ok(())
}

fn wait_idle() -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let out = sinfo().args(["-h", "-o", "%T"]).output();
        let state = out
            .as_ref()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if state == "idle" || state == "mixed" || state == "allocated" {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "the local node is not idle after {} s (sinfo: {state:?}); see {}",
                START_TIMEOUT.as_secs(),
                dir().join("log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The node as `slurmd -C` sees it: its name and the hardware fields of its line.
#[derive(Debug, Clone, PartialEq)]
struct NodeSpec {
    name: String,
    /// `CPUs=.. Boards=.. ... RealMemory=..`, as printed.
    hardware: String,
}

impl NodeSpec {
    fn probe() -> anyhow::Result<Self> {
        let out = command::stdout(Command::new("/usr/sbin/slurmd").arg("-C"))?;
        Self::parse(&out).with_context(|| format!("unexpected `slurmd -C` output: {out:?}"))
    }

    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("NodeName="))?;
        let mut fields = line.split_whitespace();
        let name = fields.next()?.strip_prefix("NodeName=")?.to_owned();
        let hardware: Vec<&str> = fields.collect();
        (!hardware.is_empty()).then(|| NodeSpec {
            name,
            hardware: hardware.join(" "),
        })
    }
}

fn render_conf(node: &NodeSpec, dir: &Path) -> String {
    let d = dir.display();
    let name = &node.name;
    format!(
        "# Written by `cargo xtask slurm-local start`: one node, 127.0.0.1 only.\n\
         ClusterName=speech-dino-local\n\
         SlurmctldHost={name}(127.0.0.1)\n\
         SlurmctldPort=6817\n\
         SlurmdPort=6818\n\
         CommunicationParameters=NoInAddrAny,NoCtldInAddrAny\n\
         AuthType=auth/munge\n\
         SlurmUser=root\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core\n\
         AccountingStorageType=accounting_storage/none\n\
         JobCompType=jobcomp/filetxt\n\
         JobCompLoc={jobcomp}\n\
         DependencyParameters=kill_invalid_depend\n\
         MpiDefault=none\n\
         ReturnToService=2\n\
         StateSaveLocation={d}/state\n\
         SlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/log/slurmctld.log\n\
         SlurmdLogFile={d}/log/slurmd.log\n\
         NodeName={name} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN\n\
         PartitionName=local Nodes={name} Default=YES MaxTime=INFINITE State=UP\n",
        jobcomp = dir.join(JOBCOMP_FILE).display(),
        hardware = node.hardware,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_line_of_slurmd_c_becomes_the_conf_node() {
        let out = "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105\nUpTime=0-00:22:39\n";
        let node = NodeSpec::parse(out).unwrap();
        assert_eq!(node.name, "vm");
        let conf = render_conf(&node, Path::new("/t/slurm-local"));
        assert!(conf.contains("SlurmctldHost=vm(127.0.0.1)\n"));
        assert!(conf.contains(
            "NodeName=vm NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105 State=UNKNOWN\n"
        ));
        assert!(conf.contains("JobCompLoc=/t/slurm-local/jobcomp.txt\n"));
        assert!(NodeSpec::parse("UpTime=1").is_none());
    }
}

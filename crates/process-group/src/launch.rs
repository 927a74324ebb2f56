//! The local launcher, torchrun's standalone mode: starts `nproc` ranks of a program on this
//! machine with torchrun's variables (a free port on 127.0.0.1, `OMP_NUM_THREADS` = cores /
//! ranks), watches them, and on a failure stops the others and returns the exit code of the
//! rank that failed first (by the departures ranks record, see [`crate::departure`]).
//! Children die with the launcher (`PR_SET_PDEATHSIG`), so none is orphaned.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::departure::{self, DEPARTURE_FILE};
use crate::error::{Error, Result};
use crate::rendezvous::torchrun;

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Ranks to start (at least 1).
    pub nproc: usize,
}

/// How long the other ranks get after a failure to end by themselves (those that fail on
/// the lost connection record their departures) before they are stopped.
const SETTLE: Duration = Duration::from_secs(2);
/// How long stopped ranks get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// The exit code of a process: its own, or 128 + the signal that ended it (as shells do).
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Intra-op threads of each of `local_ranks` ranks on this machine: `OMP_NUM_THREADS` when
/// set (the launcher's, torchrun's or a Slurm job's `--cpus-per-task`, already one rank's
/// share), else the rank's share of the cores.
pub fn threads_per_rank(local_ranks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    rank_threads(
        std::env::var("OMP_NUM_THREADS").ok().as_deref(),
        cores,
        local_ranks,
    )
}

/// [`threads_per_rank`] for an `OMP_NUM_THREADS` value and a core count.
fn rank_threads(omp_num_threads: Option<&str>, cores: usize, local_ranks: usize) -> usize {
    omp_num_threads
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| (cores / local_ranks.max(1)).max(1))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Launch(format!("no free port on 127.0.0.1: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Launch(e.to_string()))
}

/// Runs the ranks to completion; returns 0 when all succeeded, else the exit code of the
/// rank that failed first (the others are stopped).
pub fn run(launch: &Launch) -> Result<i32> {
    let nproc = launch.nproc.max(1);
    let port = free_port()?;
    let threads = threads_per_rank(nproc);
    tracing::info!(
        "launching {nproc} ranks of {} on 127.0.0.1:{port}, {threads} thread(s) each",
        launch.program.display()
    );
    let records = std::env::temp_dir().join(format!(
        "process-group-launch-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&records).map_err(|e| {
        Error::Launch(format!(
            "creating the departure folder {}: {e}",
            records.display()
        ))
    })?;
    let outcome = (0..nproc)
        .try_fold(Vec::with_capacity(nproc), |mut ranks, rank| {
            match spawn(launch, rank, nproc, port, threads, &records) {
                Ok(child) => {
                    ranks.push(Some(child));
                    Ok(ranks)
                }
                Err(e) => {
                    stop(&mut ranks);
                    Err(e)
                }
            }
        })
        .and_then(|ranks| watch(ranks, &records));
    let _ = std::fs::remove_dir_all(&records);
    outcome
}

/// The file rank `rank` records its departure in.
fn departure_record(records: &Path, rank: usize) -> PathBuf {
    records.join(format!("rank-{rank}"))
}

fn spawn(
    launch: &Launch,
    rank: usize,
    nproc: usize,
    port: u16,
    threads: usize,
    records: &Path,
) -> Result<Child> {
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env(DEPARTURE_FILE, departure_record(records, rank))
        .env(torchrun::RANK, rank.to_string())
        .env(torchrun::WORLD_SIZE, nproc.to_string())
        .env(torchrun::LOCAL_RANK, rank.to_string())
        .env(torchrun::LOCAL_WORLD_SIZE, nproc.to_string())
        .env(torchrun::MASTER_ADDR, "127.0.0.1")
        .env(torchrun::MASTER_PORT, port.to_string())
        .env("OMP_NUM_THREADS", threads.to_string());
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when the
    // launcher's thread that forked it exits.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| {
        Error::Launch(format!(
            "starting rank {rank} ({}): {e}",
            launch.program.display()
        ))
    })
}

/// A rank that failed: its exit code (the one it chose, else its status's) and when it left
/// (its recorded departure, else when the launcher saw it exit), on [`departure::now`]'s
/// clock.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Failure {
    rank: usize,
    code: i32,
    at: u64,
}

/// The failure that came first: the others are its consequences (peers that lost it, ranks
/// the launcher stopped), whatever order the launcher saw them in.
fn first_failure(failures: &[Failure]) -> Option<Failure> {
    failures.iter().copied().min_by_key(|f| (f.at, f.rank))
}

/// Waits for every rank. After the first failure seen, the others get [`SETTLE`] to end by
/// themselves, then SIGTERM, then SIGKILL after [`GRACE`]; once all have exited the one
/// reported is the rank that left first by the departures they recorded.
fn watch(ranks: Vec<Option<Child>>, records: &Path) -> Result<i32> {
    let (tx, rx) = mpsc::channel();
    let mut running: BTreeMap<usize, u32> = BTreeMap::new();
    for (rank, child) in ranks.into_iter().enumerate() {
        let Some(mut child) = child else { continue };
        running.insert(rank, child.id());
        let tx = tx.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((rank, status, departure::now()));
        });
    }
    drop(tx);
    let mut failures: Vec<Failure> = Vec::new();
    // The next signal to the ranks still running, and when.
    let mut next_signal: Option<(Instant, libc::c_int)> = None;
    while !running.is_empty() {
        let next = match next_signal {
            Some((at, _)) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let (rank, status, seen) = match next {
            Ok(exit) => exit,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Only a pending signal sets a timeout.
                if let Some((_, sig)) = next_signal.take() {
                    signal(&running, sig);
                    next_signal =
                        (sig == libc::SIGTERM).then(|| (Instant::now() + GRACE, libc::SIGKILL));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let pid = running.remove(&rank).unwrap_or_default();
        let status = status.map_err(|e| Error::Launch(format!("watching rank {rank}: {e}")))?;
        let recorded = departure::read(&departure_record(records, rank));
        let code = recorded
            .and_then(|d| d.exit_code)
            .unwrap_or_else(|| exit_code(status));
        if code == 0 {
            continue;
        }
        if failures.is_empty() {
            tracing::error!(
                "rank {rank} (pid {pid}) failed ({}); stopping the other ranks",
                describe(status)
            );
            next_signal = Some((Instant::now() + SETTLE, libc::SIGTERM));
        }
        failures.push(Failure {
            rank,
            code,
            at: recorded.map_or(seen, |d| d.at),
        });
    }
    let Some(first) = first_failure(&failures) else {
        return Ok(0);
    };
    if failures.len() > 1 {
        tracing::error!(
            "rank {} failed first (exit code {}); {} other rank(s) failed after it",
            first.rank,
            first.code,
            failures.len() - 1
        );
    }
    Ok(first.code)
}

/// Sends `sig` to the ranks still running (not yet reaped by their waiting thread).
fn signal(running: &BTreeMap<usize, u32>, sig: libc::c_int) {
    for &pid in running.values() {
        // SAFETY: signalling our own child by pid; it has not been reported as reaped.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// SIGTERM to every running rank, SIGKILL to those still running after [`GRACE`]; reaps all.
fn stop(ranks: &mut [Option<Child>]) {
    for child in ranks.iter().flatten() {
        // SAFETY: signalling our own child by pid; it has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + GRACE;
    for slot in ranks.iter_mut() {
        let Some(child) = slot.as_mut() else { continue };
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(POLL);
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
        *slot = None;
    }
}

/// `args` without the option `name` and its value (`--name V` or `--name=V`), as the
/// launcher hands its own command line to the ranks.
pub fn without_option(args: impl IntoIterator<Item = OsString>, name: &str) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    let with_value = format!("{name}=");
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some(a) if a == name => {
                args.next();
            }
            Some(a) if a.starts_with(&with_value) => {}
            _ => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_option_in_both_spellings() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            without_option(
                args(&["pretrain", "--nproc-per-node", "2", "--seed", "3"]),
                "--nproc-per-node"
            ),
            args(&["pretrain", "--seed", "3"])
        );
        assert_eq!(
            without_option(args(&["--nproc-per-node=4", "x"]), "--nproc-per-node"),
            args(&["x"])
        );
    }

    #[test]
    fn the_first_failure_is_the_earliest_exit_not_the_first_seen() {
        let seen = [
            Failure {
                rank: 0,
                code: 1,
                at: 2_000,
            },
            Failure {
                rank: 2,
                code: 143,
                at: 3_000,
            },
            Failure {
                rank: 1,
                code: 3,
                at: 1_000,
            },
        ];
        assert_eq!(first_failure(&seen).map(|f| (f.rank, f.code)), Some((1, 3)));
        assert_eq!(first_failure(&[]), None);
    }

    #[test]
    fn exit_codes_of_signals_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    }

    #[test]
    fn ranks_take_omp_num_threads_else_their_share_of_the_cores() {
        assert_eq!(rank_threads(None, 16, 4), 4);
        assert_eq!(rank_threads(None, 2, 100_000), 1);
        assert_eq!(rank_threads(Some("3"), 16, 4), 3);
        assert_eq!(rank_threads(Some("0"), 16, 4), 4);
        assert_eq!(rank_threads(Some("x"), 16, 4), 4);
    }
}

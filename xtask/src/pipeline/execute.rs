//! Running a stage's commands as child processes (tokio): output goes to the stage's log
//! file, a short live view to the terminal; Ctrl-C stops the child cleanly (SIGTERM, then
//! SIGKILL after a grace period) and the stage is not recorded as done.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Lines of a failing stage's log shown on the terminal.
const TAIL_LINES: usize = 25;
/// How long a child gets to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(20);
/// Interval of the live view when stderr is not a terminal.
const QUIET_INTERVAL: Duration = Duration::from_secs(30);

/// Error returned when Ctrl-C stopped a stage.
#[derive(Debug)]
pub struct InterruptedError;

impl std::fmt::Display for InterruptedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted")
    }
}

impl std::error::Error for InterruptedError {}

/// Runs `commands` (program and arguments) one after the other, appending their output to
/// `log`. Fails on the first unsuccessful command, showing the end of the log and its path.
pub async fn run_commands(stage: &str, commands: &[Vec<String>], log: &Path) -> anyhow::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
        .with_context(|| format!("opening {}", log.display()))?;
    for command in commands {
        file.write_all(format!("$ {}\n", command.join(" ")).as_bytes())
            .await?;
        let mut tail = VecDeque::new();
        let status = run_one(stage, command, &mut file, &mut tail).await?;
        if !status.success() {
            let shown: Vec<String> = tail.into_iter().collect();
            bail!(
                "stage {stage} failed: `{}` exited with {status}\n--- last lines of {} ---\n{}",
                command.join(" "),
                log.display(),
                shown.join("\n")
            );
        }
    }
    Ok(())
}

async fn run_one(
    stage: &str,
    command: &[String],
    log: &mut tokio::fs::File,
    tail: &mut VecDeque<String>,
) -> anyhow::Result<std::process::ExitStatus> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", command[0]))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    forward_lines(stdout, tx.clone());
    forward_lines(stderr, tx.clone());
    drop(tx);
    let terminal = std::io::stderr().is_terminal();
    let mut last_shown = Instant::now();
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let mut output_open = true;
    loop {
        tokio::select! {
            line = rx.recv(), if output_open => match line {
                Some(line) => {
                    log.write_all(line.as_bytes()).await?;
                    log.write_all(b"\n").await?;
                    if terminal {
                        let shown: String = line.chars().take(100).collect();
                        eprint!("\r\x1b[2K  [{stage}] {shown}");
                    } else if last_shown.elapsed() >= QUIET_INTERVAL {
                        eprintln!("  [{stage}] {line}");
                        last_shown = Instant::now();
                    }
                    tail.push_back(line);
                    if tail.len() > TAIL_LINES {
                        tail.pop_front();
                    }
                }
                None => output_open = false,
            },
            status = child.wait(), if !output_open => {
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                log.flush().await?;
                return Ok(status?);
            }
            _ = &mut ctrl_c => {
                eprintln!("\n  [{stage}] interrupted: stopping the child process");
                terminate(&mut child).await;
                log.write_all(b"--- interrupted ---\n").await?;
                log.flush().await?;
                return Err(InterruptedError.into());
            }
        }
    }
}

/// Sends each line of `reader` to `tx` from a background task.
fn forward_lines(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    tx: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

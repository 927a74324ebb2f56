//! Two ranks over Gloo on 127.0.0.1, started by the launcher from this very test binary:
//! all-reduce, broadcast, all-gather and barrier on f32, f16 and i64 tensors; a launched
//! rank that fails makes the launcher stop the other and return its code; a rank killed
//! mid-collective makes its peer exit non-zero, naming it, well within a minute.
//!
//! Without rendezvous variables the binary is the test driver; with them it is one rank,
//! doing what its first argument names.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use process_group::launch::{self, Launch};
use process_group::{Backend, ProcessGroup, Rendezvous};
use tch::{Device, Kind, Tensor};

/// Bounds each rank's rendezvous and collectives, so that nothing here can hang.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A check of the driver: `Err` says what went wrong.
type Check = fn() -> Result<(), String>;

fn main() -> ExitCode {
    let rendezvous = Rendezvous::from_env().expect("rendezvous variables");
    if rendezvous.world_size > 1 {
        let scenario = std::env::args().nth(1).unwrap_or_default();
        return rank_main(rendezvous.with_timeout(TIMEOUT), &scenario);
    }
    let tests: [(&str, Check); 3] = [
        (
            "collectives_give_the_right_values",
            collectives_give_the_right_values,
        ),
        (
            "a_failing_rank_stops_the_launch",
            a_failing_rank_stops_the_launch,
        ),
        (
            "a_killed_rank_is_named_by_its_peer",
            a_killed_rank_is_named_by_its_peer,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        match test() {
            Ok(()) => println!("test {name} ... ok"),
            Err(why) => {
                failed += 1;
                println!("test {name} ... FAILED: {why}");
            }
        }
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn launch(scenario: &str) -> Result<i32, String> {
    launch::run(&Launch {
        program: std::env::current_exe().map_err(|e| e.to_string())?,
        args: vec![scenario.into()],
        nproc: 2,
    })
    .map_err(|e| e.to_string())
}

fn collectives_give_the_right_values() -> Result<(), String> {
    match launch("collectives")? {
        0 => Ok(()),
        code => Err(format!("a rank exited with {code}")),
    }
}

fn a_failing_rank_stops_the_launch() -> Result<(), String> {
    let started = Instant::now();
    match launch("rank1-fails")? {
        3 => Ok(()),
        code => Err(format!(
            "expected rank 1's exit code 3, got {code} after {:?}",
            started.elapsed()
        )),
    }
}

/// Rank 1 is killed (SIGKILL) while both all-reduce in a loop; rank 0 must exit non-zero
/// with an error naming rank 1 within 60 s.
fn a_killed_rank_is_named_by_its_peer() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let port = launch::free_port().map_err(|e| e.to_string())?;
    let spawn = |rank: usize| {
        Command::new(&exe)
            .arg("all-reduce-forever")
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())
    };
    let mut survivor = spawn(0)?;
    let mut victim = match spawn(1) {
        Ok(child) => child,
        Err(e) => {
            let _ = survivor.kill();
            let _ = survivor.wait();
            return Err(e);
        }
    };
    // Both print "joined" once connected (a read that ends early means a rank died).
    let joined = [&mut survivor, &mut victim].into_iter().all(|child| {
        let mut line = String::new();
        let out = child.stdout.take().expect("piped");
        BufReader::new(out).read_line(&mut line).is_ok() && line.trim() == "joined"
    });
    let _ = victim.kill();
    let _ = victim.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = survivor.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = survivor.kill();
            let _ = survivor.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(err) = survivor.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            stderr.push_str(&line);
            stderr.push('\n');
        }
    }
    if !joined {
        return Err(format!("the ranks did not join: {stderr}"));
    }
    match status {
        None => Err("rank 0 was still running 60 s after rank 1 was killed".into()),
        Some(s) if s.success() => Err("rank 0 exited 0 after losing rank 1".into()),
        Some(_) if !stderr.contains("lost contact with rank 1") => {
            Err(format!("rank 0's error does not name rank 1: {stderr}"))
        }
        Some(_) => Ok(()),
    }
}

fn rank_main(rendezvous: Rendezvous, scenario: &str) -> ExitCode {
    let group = match ProcessGroup::connect(&rendezvous, Backend::Gloo) {
        Ok(group) => group,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match scenario {
        "collectives" => check_collectives(&group),
        "rank1-fails" => {
            if group.rank() == 1 {
                return ExitCode::from(3);
            }
            // Rank 0 would wait here until the timeout; the launcher stops it first.
            group.barrier().map_err(|e| e.to_string())
        }
        "all-reduce-forever" => {
            println!("joined");
            let mut t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
            loop {
                if let Err(e) = group.all_reduce(&mut t) {
                    break Err(e.to_string());
                }
                let _ = t.fill_(1.0);
            }
        }
        other => Err(format!("unknown scenario {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("rank {}: {why}", group.rank());
            ExitCode::FAILURE
        }
    }
}

/// World of two: ranks 0 and 1.
fn check_collectives(group: &ProcessGroup) -> Result<(), String> {
    let rank = group.rank() as f64;
    let err = |e: process_group::Error| e.to_string();
    for kind in [Kind::Float, Kind::Half, Kind::Int64] {
        let base = Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([2, 3]);
        // all_reduce: (rank + 1) * base summed over ranks 0 and 1 is 3 * base.
        let mut t = (&base * (rank + 1.0)).to_kind(kind);
        group.all_reduce(&mut t).map_err(err)?;
        expect(&t, &(&base * 3).to_kind(kind), kind, "all_reduce")?;
        // broadcast from rank 1.
        let mut t = (&base + rank * 100.0).to_kind(kind);
        group.broadcast(&mut t, 1).map_err(err)?;
        expect(&t, &(&base + 100).to_kind(kind), kind, "broadcast")?;
        // all_gather: rank order.
        let t = (&base + rank * 10.0).to_kind(kind);
        let gathered = group.all_gather(&t).map_err(err)?;
        for (r, got) in gathered.iter().enumerate() {
            expect(
                got,
                &(&base + 10 * r as i64).to_kind(kind),
                kind,
                "all_gather",
            )?;
        }
        group.barrier().map_err(err)?;
    }
    let strided = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)).tr();
    match group.all_reduce(&mut strided.shallow_clone()) {
        Err(e) if e.to_string().contains("not contiguous") => Ok(()),
        other => Err(format!("a non-contiguous tensor gave {other:?}")),
    }
}

fn expect(got: &Tensor, want: &Tensor, kind: Kind, op: &str) -> Result<(), String> {
    if got.kind() == kind && got.equal(want) {
        Ok(())
    } else {
        Err(format!("{op} {kind:?}: got {got:?}, want {want:?}"))
    }
}

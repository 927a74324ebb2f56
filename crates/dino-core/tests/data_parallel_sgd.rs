//! Data parallelism against one process: two ranks (Gloo on 127.0.0.1, started by the
//! launcher from this test binary), each with half of every global batch, end 20 SGD steps
//! of a model without batch norm with the weights of one process that sees whole batches
//! (max abs difference <= 1e-5), and with bit-identical weights on both ranks, although rank
//! 1 starts from other weights (rank 0's are broadcast). With the recipe's Adam the
//! difference is printed. A third case checks the averaging of gradients that no hook
//! reports in the synced backward: accumulated in an earlier micro-batch only, or present
//! on one rank only.
//!
//! Without rendezvous variables the binary is the test driver; with them it is one rank.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use dino_core::distributed::{self, GradSync, Replicated};
use dino_core::optim::{OptimConfig, Optimizer, OptimizerKind};
use process_group::ProcessGroup;
use process_group::launch::{self, Launch};
use tch::nn::{Module, VarStore};
use tch::{Device, Kind, Tensor};

const GLOBAL_BATCH: i64 = 16;
const STEPS: usize = 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("RANK").is_some() {
        // A rank: `<optimizer> <out dir>`.
        distributed::set_timeout(std::time::Duration::from_secs(60));
        let group = distributed::world(Device::Cpu).expect("joining the group");
        if args[0] == STRAGGLERS {
            return match stragglers(&group) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("rank {}: {why}", group.rank());
                    ExitCode::FAILURE
                }
            };
        }
        let out = Path::new(&args[1]).join(format!("rank{}.ot", group.rank()));
        let weights = train(&group, kind(&args[0]));
        Tensor::save_multi(&weights, &out).expect("saving weights");
        return ExitCode::SUCCESS;
    }
    let mut failed = 0;
    for (name, optimizer, bound) in [
        ("sgd", OptimizerKind::Sgd, Some(1e-5)),
        ("adam", OptimizerKind::Adam, None),
    ] {
        match compare(name, optimizer, bound) {
            Ok(()) => println!("test two_ranks_match_one_process_{name} ... ok"),
            Err(why) => {
                failed += 1;
                println!("test two_ranks_match_one_process_{name} ... FAILED: {why}");
            }
        }
    }
    let name = "gradients_outside_the_synced_backward_are_averaged_too";
    match launched(STRAGGLERS) {
        Ok(()) => println!("test {name} ... ok"),
        Err(why) => {
            failed += 1;
            println!("test {name} ... FAILED: {why}");
        }
    }
    println!("{} passed, {failed} failed", 3 - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn kind(name: &str) -> OptimizerKind {
    match name {
        "sgd" => OptimizerKind::Sgd,
        _ => OptimizerKind::Adam,
    }
}

const STRAGGLERS: &str = "stragglers";

/// Two ranks of this binary with `case` and a scratch folder (which the case owns).
fn launch_ranks(case: &str, dir: &Path) -> Result<(), String> {
    let code = launch::run(&Launch {
        program: std::env::current_exe().map_err(|e| e.to_string())?,
        args: vec![case.into(), dir.as_os_str().to_owned()],
        nproc: 2,
    })
    .map_err(|e| e.to_string())?;
    match code {
        0 => Ok(()),
        _ => Err(format!("a rank exited with {code}")),
    }
}

fn launched(case: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    launch_ranks(case, dir.path())
}

/// Rank r back-propagates (r + 1)(a + b) (+ c on rank 0 only) in an unsynced micro-batch
/// and (r + 1) a in the synced one, twice (the first synced backward lays the buckets out,
/// the second syncs from the hooks): a's hook fires in the synced backward, b's gradient
/// comes from the earlier micro-batch, and c has a gradient on rank 0 only.
fn stragglers(group: &Arc<ProcessGroup>) -> Result<(), String> {
    let r = group.rank() as f64;
    let param = |n: i64| Tensor::ones([n], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let (a, b, c) = (param(3), param(2), param(2));
    let sync = GradSync::new(
        group.clone(),
        vec![a.shallow_clone(), b.shallow_clone(), c.shallow_clone()],
    )
    .map_err(|e| e.to_string())?;
    let sum = |t: &Tensor| t.sum(Kind::Float);
    for step in 0..2 {
        for t in [&a, &b, &c] {
            let mut grad = t.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        let mut first = (sum(&a) + sum(&b)) * (r + 1.0);
        if r == 0.0 {
            first += sum(&c);
        }
        sync.backward(&first, false).map_err(|e| e.to_string())?;
        sync.backward(&(sum(&a) * (r + 1.0)), true)
            .map_err(|e| e.to_string())?;
        let expect = |t: &Tensor, value: f64, name: &str| -> Result<(), String> {
            let full = Tensor::full(t.size(), value, (Kind::Float, Device::Cpu));
            match t.grad().defined() && t.grad().equal(&full) {
                true => Ok(()),
                false => Err(format!(
                    "step {step}: {name}.grad is {:?}, not {value}",
                    t.grad()
                )),
            }
        };
        // Means over the ranks: a (2 + 4) / 2, b (1 + 2) / 2, c (1 + nothing) / 2.
        expect(&a, 3.0, "a")?;
        expect(&b, 1.5, "b")?;
        if r == 0.0 {
            expect(&c, 0.5, "c")?;
        } else if c.grad().defined() {
            return Err(format!("step {step}: c.grad appeared on rank 1"));
        }
    }
    Ok(())
}

fn compare(name: &str, optimizer: OptimizerKind, bound: Option<f64>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    launch_ranks(name, dir.path())?;
    let load = |rank: usize| -> Result<Vec<(String, Tensor)>, String> {
        let path: PathBuf = dir.path().join(format!("rank{rank}.ot"));
        let mut named =
            Tensor::load_multi(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named)
    };
    let (rank0, rank1) = (load(0)?, load(1)?);
    let mut single = train(&Arc::new(ProcessGroup::single()), optimizer);
    single.sort_by(|a, b| a.0.cmp(&b.0));
    let mut max_diff = 0f64;
    for ((n0, w0), ((n1, w1), (ns, ws))) in rank0.iter().zip(rank1.iter().zip(&single)) {
        if n0 != n1 || n0 != ns {
            return Err(format!("variables differ: {n0} {n1} {ns}"));
        }
        if !w0.equal(w1) {
            return Err(format!("{n0} differs between the two ranks"));
        }
        max_diff = max_diff.max((w0 - ws).abs().max().double_value(&[]));
    }
    eprintln!("{name}: max |2 ranks - 1 process| after {STEPS} steps = {max_diff:.3e}");
    match bound {
        Some(b) if max_diff > b => Err(format!("max abs difference {max_diff:e} > {b:e}")),
        _ => Ok(()),
    }
}

/// A two-layer GELU network without batch norm, trained on this rank's slice of each global
/// batch of a fixed regression problem; returns the final weights.
fn train(group: &Arc<ProcessGroup>, optimizer: OptimizerKind) -> Vec<(String, Tensor)> {
    let (rank, world) = (group.rank() as i64, group.world_size() as i64);
    // Each rank initialises differently: rank 0's weights must reach every rank.
    tch::manual_seed(100 + rank);
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = tch::nn::seq()
        .add(tch::nn::linear(&root / "l1", 8, 16, Default::default()))
        .add_fn(|x| x.gelu("none"))
        .add(tch::nn::linear(&root / "l2", 16, 4, Default::default()));
    let config = OptimConfig {
        kind: optimizer,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = Optimizer::new(&vs, config);
    let grads = GradSync::new(group.clone(), opt.parameters()).expect("gradient hooks");
    Replicated::new(group.clone(), &vs, &[])
        .broadcast_all()
        .expect("broadcast");
    let local = GLOBAL_BATCH / world;
    let target = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0]).view([1, 4]);
    for step in 0..STEPS {
        // The same global batch on every rank, from the step; each takes its slice.
        tch::manual_seed(step as i64);
        let x = Tensor::randn([GLOBAL_BATCH, 8], (Kind::Float, Device::Cpu));
        let y = x.sum_dim_intlist(1, true, Kind::Float).sin() * &target;
        let (x, y) = (
            x.narrow(0, rank * local, local),
            y.narrow(0, rank * local, local),
        );
        opt.zero_grad();
        let loss = (net.forward(&x) - y).square().mean(Kind::Float);
        grads.backward(&loss, true).expect("all-reduce");
        opt.step(0.05, 0.0, |_| false);
    }
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

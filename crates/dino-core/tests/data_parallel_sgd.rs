//! Data parallelism against one process: two ranks (Gloo on 127.0.0.1, started by the
//! launcher from this test binary), each with half of every global batch, end 20 SGD steps
//! of a model without batch norm with the weights of one process that sees whole batches
//! (max abs difference <= 1e-5), and with bit-identical weights on both ranks, although rank
//! 1 starts from other weights (rank 0's are broadcast). With the recipe's Adam the
//! difference is printed.
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
    println!("{} passed, {failed} failed", 2 - failed);
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

fn compare(name: &str, optimizer: OptimizerKind, bound: Option<f64>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let code = launch::run(&Launch {
        program: std::env::current_exe().map_err(|e| e.to_string())?,
        args: vec![name.into(), dir.path().as_os_str().to_owned()],
        nproc: 2,
    })
    .map_err(|e| e.to_string())?;
    if code != 0 {
        return Err(format!("a rank exited with {code}"));
    }
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
    let grads = GradSync::new(group.clone(), opt.parameters());
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
        loss.backward();
        grads.average().expect("all-reduce");
        opt.step(0.05, 0.0, |_| false);
    }
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

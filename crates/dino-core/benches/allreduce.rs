//! `cargo xtask bench allreduce`: the gradient sync of data-parallel training (`GradSync`:
//! gradients copied into ~25 MB buckets from autograd hooks, Gloo all-reduces started as
//! buckets fill, divide, copy back) between two ranks on 127.0.0.1, for the gradient shapes
//! of the DINO bench model (ecapa-512 student) and for single 1, 8 and 25 MB buffers,
//! against PyTorch DDP's own sync of the same parameters with Gloo, both measured the same
//! way (backward time with the sync less without it), in the same run; prints the ratios.
//!
//! Without rendezvous variables the binary is the driver; with them it is one rank.

use std::path::Path;
use std::time::Instant;

use dino_core::distributed::{self, GradSync};
use dino_core::encoder::EncoderConfig;
use dino_core::model::{ModelConfig, Network};
use process_group::launch::{self, Launch};
use tch::{Device, Kind, Tensor};

const WARMUP: usize = 3;
const REPS: usize = 30;

/// The parameter sets: name and shapes.
fn sets() -> Vec<(String, Vec<Vec<i64>>)> {
    let model = ModelConfig {
        encoder: EncoderConfig::preset("ecapa-512").expect("encoder preset"),
        ..ModelConfig::default()
    };
    let network = Network::new(&model, Device::Cpu);
    let mut vars: Vec<(String, Tensor)> = network
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sets = vec![(
        format!("DINO bench model ({} tensors)", vars.len()),
        vars.iter().map(|(_, t)| t.size()).collect(),
    )];
    for mb in [1, 8, 25] {
        sets.push((format!("{mb} MB buffer"), vec![vec![mb * 1024 * 1024 / 4]]));
    }
    sets
}

/// The median of per-iteration times: robust to the other rank's scheduling hiccups on a
/// shared machine, and taken the same way for the reference.
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The sum of every parameter: each gets a gradient of ones from one backward.
fn total(params: &[Tensor]) -> Tensor {
    params
        .iter()
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |acc, p| {
            acc + p.sum(Kind::Float)
        })
}

/// One rank: the seconds of one gradient sync per set, as the reference measures DDP's
/// (median backward with the sync less median backward without), rank 0 writing them to `out`.
fn rank(out: &Path) {
    distributed::set_timeout(std::time::Duration::from_secs(120));
    let group = distributed::world(Device::Cpu).expect("joining the group");
    let mut seconds = Vec::new();
    for (_, shapes) in sets() {
        let params: Vec<Tensor> = shapes
            .iter()
            .map(|s| Tensor::ones(s.as_slice(), (Kind::Float, Device::Cpu)).set_requires_grad(true))
            .collect();
        let sync = GradSync::new(
            group.clone(),
            params.iter().map(Tensor::shallow_clone).collect(),
        )
        .expect("gradient hooks");
        let run = |synced: bool| {
            let mut times = Vec::with_capacity(REPS);
            for i in 0..WARMUP + REPS {
                if i == WARMUP {
                    group.barrier().expect("barrier");
                }
                let started = Instant::now();
                for p in &params {
                    let mut grad = p.grad();
                    if grad.defined() {
                        let _ = grad.zero_();
                    }
                }
                sync.backward(&total(&params), synced).expect("all-reduce");
                if i >= WARMUP {
                    times.push(started.elapsed().as_secs_f64());
                }
            }
            median(times)
        };
        seconds.push((run(true) - run(false)).max(1e-9));
    }
    if group.is_main() {
        std::fs::write(out, serde_json::to_string(&seconds).unwrap()).expect("writing timings");
    }
}

const REFERENCE: &str = r#"
import json, sys, time
import torch, torch.distributed as dist, torch.multiprocessing as mp

class Params(torch.nn.Module):
    """Parameters of the given shapes; the output depends on each, so that every one gets
    a gradient that DDP's reducer syncs."""
    def __init__(self, shapes):
        super().__init__()
        self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(s)) for s in shapes])
    def forward(self, x):
        return sum(p.sum() for p in self.ps) * x

def rank(r, port, sets, warmup, reps, threads, out):
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2)
    one = torch.ones(())
    res = []
    for shapes in sets:
        ddp = torch.nn.parallel.DistributedDataParallel(Params(shapes), bucket_cap_mb=25)
        def run(sync):
            times = []
            for i in range(warmup + reps):
                if i == warmup:
                    dist.barrier()
                t = time.perf_counter()
                ddp.zero_grad(set_to_none=False)  # in place, as ours
                if sync:
                    ddp(one).backward()
                else:
                    with ddp.no_sync():
                        ddp(one).backward()
                if i >= warmup:
                    times.append(time.perf_counter() - t)
            return sorted(times)[len(times) // 2]  # the median, as ours
        # The sync's cost: a backward with DDP's all-reduce less one under no_sync.
        res.append(max(run(True) - run(False), 1e-9))
    if r == 0:
        open(out, "w").write(json.dumps(res))
    dist.destroy_process_group()

if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    # fork: a script given with -c cannot be re-imported by spawned children.
    mp.start_processes(rank, args=(a["port"], a["sets"], a["warmup"], a["reps"], a["threads"],
                                   a["out"]), nprocs=2, start_method="fork")
    print(open(a["out"]).read())
"#;

fn main() {
    if std::env::var_os("RANK").is_some() {
        rank(Path::new(&std::env::args().nth(1).expect("output path")));
        return;
    }
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` lists no tests here
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let ours_path = dir.path().join("ours.json");
    let code = launch::run(&Launch {
        program: std::env::current_exe().expect("this binary"),
        args: vec![ours_path.as_os_str().to_owned()],
        nproc: 2,
    })
    .expect("launching ranks");
    assert_eq!(code, 0, "a rank failed");
    let ours: Vec<f64> =
        serde_json::from_str(&std::fs::read_to_string(&ours_path).unwrap()).unwrap();
    let sets = sets();
    let settings = serde_json::json!({
        "port": launch::free_port().expect("a free port"),
        "sets": sets.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        "warmup": WARMUP,
        "reps": REPS,
        "threads": launch::threads_per_rank(2),
        "out": dir.path().join("ddp.json"),
    });
    let out = stage_kit::reference::run_python(REFERENCE, &[settings.to_string()])
        .expect("PyTorch DDP reference");
    let ddp: Vec<f64> =
        serde_json::from_str(out.lines().last().unwrap_or("")).expect("DDP timings");
    println!("gradient sync, 2 ranks, Gloo on 127.0.0.1, median of {REPS} after {WARMUP} warm-up:");
    for (((name, shapes), o), d) in sets.iter().zip(&ours).zip(&ddp) {
        let mb = shapes
            .iter()
            .map(|s| s.iter().product::<i64>())
            .sum::<i64>() as f64
            * 4.0
            / 1e6;
        println!(
            "  {name:<34} {mb:7.2} MB  ours {:8.2} ms  DDP {:8.2} ms  ours/DDP {:.2}",
            o * 1e3,
            d * 1e3,
            o / d
        );
    }
}

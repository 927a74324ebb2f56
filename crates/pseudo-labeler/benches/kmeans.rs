//! `cargo xtask bench kmeans`: time per k-means iteration on 100k x 192 points with k = 1000,
//! for the batched backend (CPU GEMM engine; libtorch engines beside it), linfa, and
//! faiss-cpu run in the same process run on the same data, from the same initial centroids,
//! with the same number of threads (rayon's; `RAYON_NUM_THREADS` sets it for both). The
//! batched backend and faiss run in alternating rounds; each reports its fastest and median
//! wall time per iteration and its process CPU time per iteration (with one thread the
//! measure least disturbed by other load on the machine). Also shows why the CPU engine
//! multiplies with the `gemm` crate rather than ndarray's `dot` (matrixmultiply), and that
//! the batched backend's inertia follows faiss's iteration by iteration.

use std::path::Path;
use std::time::Instant;

use ndarray::{Array2, Axis};
use pseudo_labeler::config::Init;
use pseudo_labeler::kmeans::{Batched, KMeansBackend, LinfaReference, initial_centroids};
use pseudo_labeler::nearest::Compute;
use pseudo_labeler::preprocess::normalize_rows;
use pseudo_labeler::synthetic::blobs;
use rayon::prelude::*;
use serde::Deserialize;

const POINTS_PER_SPEAKER: usize = 50;
const SPEAKERS: usize = 2000;
const DIM: usize = 192;
const K: usize = 1000;
/// Iterations timed per backend and round (linfa: a few, it takes seconds each).
const ITERATIONS: usize = 10;
/// Alternating rounds of the batched backend and faiss-cpu.
const ROUNDS: usize = 2;
const LINFA_ITERATIONS: usize = 2;

/// faiss's own k-means (`faiss.Kmeans`, no subsampling) from the given centroids; prints the
/// seconds and the objective of every iteration as JSON.
const FAISS: &str = r#"
import json, sys, time
import numpy as np
import faiss
points_file, centroids_file, n, d, k, iterations, threads = sys.argv[1:8]
n, d, k, iterations, threads = int(n), int(d), int(k), int(iterations), int(threads)
faiss.omp_set_num_threads(threads)
x = np.fromfile(points_file, dtype="<f4").reshape(n, d)
c0 = np.fromfile(centroids_file, dtype="<f4").reshape(k, d)
km = faiss.Kmeans(d, k, niter=iterations, seed=1, verbose=False,
                  max_points_per_centroid=n, min_points_per_centroid=1)
cpu = time.process_time()
km.train(x, init_centroids=c0)
cpu = time.process_time() - cpu
stats = list(km.iteration_stats)  # faiss may stop early once nothing moves
times = [s["time"] for s in stats]
print(json.dumps({
    "seconds": [t - p for t, p in zip(times, [0.0] + times[:-1])],
    "objective": [s["obj"] for s in stats],
    "cpu_seconds": cpu,
    "faiss": faiss.__version__,
}))
"#;

#[derive(Deserialize)]
struct FaissRun {
    seconds: Vec<f64>,
    /// Process CPU time of the whole training.
    cpu_seconds: f64,
    objective: Vec<f64>,
    faiss: String,
}

/// Per-iteration seconds and inertia of one backend.
struct Timing {
    name: String,
    seconds: Vec<f64>,
    /// Process CPU seconds over all timed iterations.
    cpu_seconds: f64,
    inertia: Vec<f64>,
}

impl Timing {
    /// Fastest iteration: the machine's speed with the least interference from other work.
    fn best(&self) -> f64 {
        stage_kit::timings::fastest(&self.seconds)
    }

    fn median(&self) -> f64 {
        stage_kit::timings::median(&self.seconds)
    }

    /// Process CPU seconds per iteration: with one thread, the cost least sensitive to
    /// other load (wall time shares the cores; CPU time does not count the waiting).
    fn cpu_per_iteration(&self) -> f64 {
        self.cpu_seconds / self.seconds.len() as f64
    }

    /// Adds the iterations of another round of the same backend.
    fn extend(&mut self, other: Timing) {
        self.seconds.extend(other.seconds);
        self.cpu_seconds += other.cpu_seconds;
    }

    fn print(&self, note: &str) {
        println!(
            "{:<22} {:>8.4} s/iteration best, {:>8.4} median, {:>8.4} CPU s/iteration   ({} iterations{note})",
            self.name,
            self.best(),
            self.median(),
            self.cpu_per_iteration(),
            self.seconds.len()
        );
    }
}

fn time_backend(
    name: &str,
    backend: &mut dyn KMeansBackend,
    initial: &Array2<f32>,
    iterations: usize,
) -> Timing {
    let mut centroids = initial.clone();
    let (mut seconds, mut inertia) = (Vec::new(), Vec::new());
    let cpu_started = stage_kit::cpu_time::process_seconds();
    for _ in 0..iterations {
        let started = Instant::now();
        let step = backend.step(&centroids).expect("k-means step");
        seconds.push(started.elapsed().as_secs_f64());
        inertia.push(step.inertia);
        centroids = step.centroids;
    }
    Timing {
        name: name.to_owned(),
        seconds,
        cpu_seconds: stage_kit::cpu_time::process_seconds() - cpu_started,
        inertia,
    }
}

/// GFLOP/s of the points x centroids products alone with ndarray's `dot` (matrixmultiply,
/// no BLAS), blocked and parallel like the engine.
fn ndarray_dot_gflops(points: &Array2<f32>, centroids: &Array2<f32>) -> f64 {
    let ct = centroids.t();
    let started = Instant::now();
    let checksum: f32 = points
        .axis_chunks_iter(Axis(0), 512)
        .into_par_iter()
        .map(|block| block.dot(&ct)[[0, 0]])
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    flops(points.nrows()) / seconds / 1e9
}

fn flops(n: usize) -> f64 {
    2.0 * n as f64 * K as f64 * DIM as f64
}

fn write_f32(path: &Path, values: &Array2<f32>) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("writing benchmark data");
}

/// Runs faiss-cpu's k-means on the files; `None` (with the reason printed) when the
/// provisioned Python lacks it.
fn run_faiss(args: &[String]) -> Option<(String, Timing)> {
    match stage_kit::reference::run_python(FAISS, args) {
        Ok(out) => {
            let run: FaissRun = serde_json::from_str(&out).expect("faiss output");
            Some((
                run.faiss,
                Timing {
                    name: "faiss-cpu".to_owned(),
                    seconds: run.seconds,
                    cpu_seconds: run.cpu_seconds,
                    inertia: run.objective,
                },
            ))
        }
        Err(e) => {
            println!("faiss-cpu reference unavailable: {e:#}");
            None
        }
    }
}

fn main() {
    let threads = rayon::current_num_threads();
    let mut rng = stage_kit::rng::stream(1, "kmeans-bench");
    let (mut points, _) = blobs(SPEAKERS, POINTS_PER_SPEAKER, DIM, 0.5, &mut rng);
    normalize_rows(&mut points);
    let n = points.nrows();
    let initial = initial_centroids(points.view(), K, Init::Random, &mut rng);
    println!(
        "k-means: {n} points x {DIM} dims, k = {K}, {threads} thread(s), same initial centroids for all"
    );
    println!(
        "batched and faiss-cpu run in alternating rounds; 'best' (fastest iteration) is the \
         least disturbed by other load on the machine\n"
    );

    let dir = tempfile::tempdir().expect("temporary folder");
    let (points_file, centroids_file) = (dir.path().join("x.f32"), dir.path().join("c.f32"));
    write_f32(&points_file, &points);
    write_f32(&centroids_file, &initial);
    let args = [
        points_file.display().to_string(),
        centroids_file.display().to_string(),
        n.to_string(),
        DIM.to_string(),
        K.to_string(),
        ITERATIONS.to_string(),
        threads.to_string(),
    ];

    let cpu = Compute::Cpu.engine(points.view()).expect("CPU engine");
    // Warm the engine once (page faults, kernel selection), untimed.
    cpu.nearest(initial.view()).expect("nearest");
    let started = Instant::now();
    cpu.nearest(initial.view()).expect("nearest");
    let gemm_assign = started.elapsed().as_secs_f64();
    let dot_gflops = ndarray_dot_gflops(&points, &initial);
    println!(
        "assignment step: gemm crate {:.1} GFLOP/s including the argmin; ndarray dot \
         (matrixmultiply) {:.1} GFLOP/s for the products alone\n",
        flops(n) / gemm_assign / 1e9,
        dot_gflops
    );

    let mut batched: Option<Timing> = None;
    let mut faiss: Option<(String, Timing)> = None;
    for _round in 0..ROUNDS {
        let round = time_backend(
            "batched (cpu)",
            &mut Batched::new(points.view(), &*cpu),
            &initial,
            ITERATIONS,
        );
        match &mut batched {
            Some(b) => b.extend(round),
            None => batched = Some(round),
        }
        if let Some((version, round)) = run_faiss(&args) {
            match &mut faiss {
                Some((_, f)) => f.extend(round),
                None => faiss = Some((version, round)),
            }
        }
    }
    let batched = batched.expect("at least one round");
    batched.print("");

    let mut others = Vec::new();
    let mut torch_devices = vec![tch::Device::Cpu];
    if tch::Cuda::is_available() {
        torch_devices.push(tch::Device::Cuda(0));
    }
    for device in torch_devices {
        let compute = Compute::Torch(device);
        let engine = compute.engine(points.view()).expect("libtorch engine");
        engine.nearest(initial.view()).expect("warm-up");
        let timing = time_backend(
            &format!("batched ({})", compute.name()),
            &mut Batched::new(points.view(), &*engine),
            &initial,
            ITERATIONS,
        );
        timing.print("");
        others.push(timing);
    }
    let linfa = time_backend(
        "linfa",
        &mut LinfaReference::new(points.view()),
        &initial,
        LINFA_ITERATIONS,
    );
    linfa.print("");
    let Some((version, faiss)) = faiss else {
        return;
    };
    faiss.print(&format!(", faiss {version}"));

    println!(
        "\nspeed relative to faiss-cpu (faiss time / backend time per iteration; >= 1: as fast or faster):"
    );
    for t in std::iter::once(&batched).chain(&others).chain([&linfa]) {
        println!(
            "  {:<22} {:>7.3} best   {:>7.3} median   {:>7.3} CPU time",
            t.name,
            faiss.best() / t.best(),
            faiss.median() / t.median(),
            faiss.cpu_per_iteration() / t.cpu_per_iteration()
        );
    }
    if threads > 1 {
        println!(
            "  (CPU time counts OpenMP's spinning threads in faiss: compare it with RAYON_NUM_THREADS=1)"
        );
    }
    println!(
        "  linfa is {:.1}x slower than batched (cpu), best iterations",
        linfa.best() / batched.best()
    );
    // Same data, same start, both standard Lloyd: the objectives must track each other.
    println!("\ninertia per iteration, batched (cpu) vs faiss-cpu from the same start:");
    for (i, (a, b)) in batched.inertia.iter().zip(&faiss.inertia).enumerate() {
        println!(
            "  {:>2}  {:>14.4}  {:>14.4}  rel. diff {:.1e}",
            i + 1,
            a,
            b,
            (a - b).abs() / b
        );
    }
}

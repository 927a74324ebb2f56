//! `cargo xtask bench cluster`: the cluster stage at a tenth of VoxCeleb2-dev on the CPU —
//! 100,000 x 256 unit-length synthetic embeddings of 550 planted speakers (about the 182
//! utterances per speaker of VoxCeleb2-dev), k-means to k = N/4 = 25,000 (random init, the
//! batched backend on the CPU GEMM engine), then the cosine centroid merge at the recipe's
//! threshold 0.8. Prints seconds per k-means iteration, the merge's rounds and seconds, the
//! clusters left against the planted speakers, and the process's peak resident memory, and
//! extrapolates the product cost to the paper's 1.1 M x 256 at k = 273,000 (the device check
//! measures that size on a GPU).
//!
//! `CLUSTER_BENCH_SCALE=0.1` (any fraction) shrinks N and k together for a quick look.

use std::time::Instant;

use pseudo_labeler::config::Init;
use pseudo_labeler::kmeans::{Batched, KMeansBackend, initial_centroids};
use pseudo_labeler::merge::merge_clusters;
use pseudo_labeler::nearest::Compute;
use pseudo_labeler::preprocess::normalize_rows;
use pseudo_labeler::synthetic::blobs;

const SPEAKERS: usize = 550;
const PER_SPEAKER: usize = 182;
const DIM: usize = 256;
/// Per-component spread of a speaker's points around its centre (cosine ~0.7 to it).
const SPREAD: f32 = 1.0;
const ITERATIONS: usize = 3;
const THRESHOLD: f32 = 0.8;
/// The paper's regime (VoxCeleb2-dev, k = N/4).
const FULL_N: f64 = 1_092_009.0;
const FULL_K: f64 = 273_000.0;

/// Peak resident set size of this process (`VmHWM`), in GiB.
fn peak_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / (1u64 << 20) as f64)
}

fn main() {
    let scale: f64 = std::env::var("CLUSTER_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let speakers = ((SPEAKERS as f64 * scale).round() as usize).max(2);
    let mut rng = stage_kit::rng::stream(1, "cluster-bench");
    let (mut points, _) = blobs(speakers, PER_SPEAKER, DIM, SPREAD, &mut rng);
    normalize_rows(&mut points);
    let n = points.nrows();
    let k = n / 4;
    println!(
        "cluster stage: {n} x {DIM} embeddings of {speakers} planted speakers, k = {k}, {} thread(s)",
        rayon::current_num_threads()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());

    let started = Instant::now();
    let mut centroids = initial_centroids(points.view(), k, Init::Random, &mut rng);
    let compute = Compute::Cpu;
    let engine = compute.engine(points.view()).expect("engine");
    let mut backend = Batched::new(points.view(), engine.as_ref());
    let mut seconds = Vec::new();
    for i in 0..ITERATIONS {
        let t = Instant::now();
        let step = backend.step(&centroids).expect("k-means step");
        seconds.push(t.elapsed().as_secs_f64());
        println!(
            "  iteration {}: {:.2} s, inertia {:.1}, relocated {}",
            i + 1,
            seconds[i],
            step.inertia,
            step.relocated
        );
        centroids = step.centroids;
    }
    let labels = backend.labels().expect("labels");
    let per_iteration = stage_kit::timings::median(&seconds);
    let kmeans_seconds = started.elapsed().as_secs_f64();

    let t = Instant::now();
    let merged =
        merge_clusters(points.view(), &labels, k, Some(THRESHOLD), compute).expect("merge");
    let merge_seconds = t.elapsed().as_secs_f64();
    let s = &merged.summary;
    println!(
        "\nk-means: {per_iteration:.2} s per iteration (median of {ITERATIONS}), {kmeans_seconds:.1} s with init and labels"
    );
    println!(
        "merge at cosine {THRESHOLD}: {} -> {} clusters ({speakers} planted speakers) in {} rounds, {merge_seconds:.1} s",
        s.clusters_before, s.clusters_after, s.rounds
    );
    println!("peak resident memory: {:.2} GiB", peak_gib());
    let flop_iteration = 2.0 * n as f64 * k as f64 * DIM as f64;
    let flop_round = 2.0 * (s.clusters_before as f64).powi(2) * DIM as f64;
    let (full_iteration, full_round) = (
        2.0 * FULL_N * FULL_K * DIM as f64,
        2.0 * FULL_K.powi(2) * DIM as f64,
    );
    println!(
        "\nachieved: {:.1} GFLOP/s in k-means; at 1.1 M x 256, k = 273,000 one iteration is {:.0} TFLOP \
         ({:.0} s at this rate) and a full merge round {:.0} TFLOP",
        flop_iteration / per_iteration / 1e9,
        full_iteration / 1e12,
        full_iteration / (flop_iteration / per_iteration),
        full_round / 1e12,
    );
    println!(
        "merge cost here: {:.2} full-round equivalents ({:.0} GFLOP per full round)",
        merge_seconds / (flop_round / (flop_iteration / per_iteration)),
        flop_round / 1e9
    );
}

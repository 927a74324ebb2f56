//! `cargo xtask bench loader`: crops per second of the pretraining loader's CPU side, exactly
//! as training runs it — [`Prefetcher`] workers calling [`CropSampler::batch`] (random crops
//! read from the audio cache, each augmented with MUSAN-style noise and RIR reverberation at
//! the recipe's probabilities) for the default crops (2 x 4 s + 4 x 2 s), batches of 32 and the
//! training loop's prefetch depth.
//!
//! The audio cache is generated under `target/bench-loader` (4 GiB of 16 kHz int16 unless
//! `LOADER_BENCH_GIB` says otherwise,
//! utterances of 4-12 s) in both layouts: schema 1 (chunked and deflated, read through HDF5
//! behind one lock: the layout before this benchmark) and schema 2 (contiguous, read with
//! positional reads and no lock). Each layout is timed with 1 and 2 workers, cold (the cache
//! files evicted from the page cache with `posix_fadvise(POSIX_FADV_DONTNEED)` before the
//! pass) and warm (read through once before), with augmentation on the CPU (`cpu`) and on the
//! device (`dev`: the CPU still reads the crops and the noise and draws, as
//! `CropSampler::with_augmentation_on_device` does in training). The worker time is split
//! into reads (speech and noise crops; decompression included for schema 1), waiting for the
//! lock, and the rest (augmentation, int16 -> f32, cropping). The generated files are deleted
//! at the end.
//!
//! Closing figures: the 1 -> 2 worker scaling (goal >= 1.8x on 2 cores) and the loader cores
//! the voxceleb recipe needs for a 15-minute epoch of VoxCeleb2-dev on one GPU.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dino_core::crops::{CropConfig, CropSampler, open_augmenter};
use dino_core::prefetch::Prefetcher;
use feature_extract::augment::AugmentConfig;
use feature_extract::cache::{AudioCache, ReadStats};
use feature_extract::synthetic::{self, Caches};
use rand::Rng;

/// GiB of speech generated (int16 samples), unless `LOADER_BENCH_GIB` says otherwise.
const SPEECH_GIB: f64 = 4.0;

/// int16 samples of speech to generate: `LOADER_BENCH_GIB` GiB, else `SPEECH_GIB`.
fn speech_samples() -> u64 {
    let gib = std::env::var("LOADER_BENCH_GIB")
        .ok()
        .map(|v| v.parse::<f64>().expect("LOADER_BENCH_GIB: a number of GiB"))
        .unwrap_or(SPEECH_GIB);
    (gib * (1u64 << 30) as f64 / 2.0) as u64
}
/// Items (utterances) per timed pass, and per batch (job).
const ITEMS: usize = 384;
const BATCH: usize = 32;
/// Prefetch depth of the training loop's default (`pretrain` `prefetch`).
const PREFETCH: usize = 8;
/// VoxCeleb2-dev utterances, and the epoch time the recipe aims at on one GPU.
const VOXCELEB2_DEV: f64 = 1_092_009.0;
const EPOCH_SECONDS: f64 = 900.0;

/// Generates the caches of one layout.
fn generate(dir: &Path, name: &'static str, schema1: bool, samples: u64) -> (&'static str, Caches) {
    let started = Instant::now();
    let caches = synthetic::write_caches(dir, name, samples, schema1).expect("caches");
    let gib = std::fs::metadata(&caches.speech)
        .expect("speech cache")
        .len() as f64
        / (1u64 << 30) as f64;
    println!(
        "generated {name}: speech cache {gib:.2} GiB in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    (name, caches)
}

/// Drops the file's pages from the page cache (after writing back dirty ones).
fn evict(path: &Path) {
    let file = File::open(path).expect("cache file");
    file.sync_all().expect("sync");
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise on {}", path.display());
}

/// Reads the file once so that it is in the page cache.
fn warm(path: &Path) {
    let mut file = File::open(path).expect("cache file");
    std::io::copy(&mut file, &mut std::io::sink()).expect("read through");
}

/// One timed pass.
struct Pass {
    crops: usize,
    wall: f64,
    busy: f64,
    reads: ReadStats,
}

fn sum_stats(a: ReadStats, b: ReadStats) -> ReadStats {
    ReadStats {
        reads: a.reads + b.reads,
        read_seconds: a.read_seconds + b.read_seconds,
        lock_wait_seconds: a.lock_wait_seconds + b.lock_wait_seconds,
    }
}

fn diff_stats(a: ReadStats, b: ReadStats) -> ReadStats {
    ReadStats {
        reads: a.reads - b.reads,
        read_seconds: a.read_seconds - b.read_seconds,
        lock_wait_seconds: a.lock_wait_seconds - b.lock_wait_seconds,
    }
}

/// Reads of the speech cache and of the augmenter's noise cache so far.
fn stats(sampler: &CropSampler) -> ReadStats {
    let speech = sampler.cache().read_stats();
    match sampler.augmenter().and_then(|a| a.noise_cache()) {
        Some(noise) => sum_stats(speech, noise.read_stats()),
        None => speech,
    }
}

/// Runs the loader over `items` (cache indices) as training does, `workers` threads.
fn pass(sampler: &Arc<CropSampler>, items: &[usize], workers: usize) -> Pass {
    let jobs: Vec<Vec<(usize, usize)>> = items
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, &x)| (b * BATCH + i, x))
                .collect()
        })
        .collect();
    let busy_ns = Arc::new(AtomicU64::new(0));
    let before = stats(sampler);
    let started = Instant::now();
    let (s, busy) = (sampler.clone(), busy_ns.clone());
    let loader = Prefetcher::start(jobs.len(), workers, PREFETCH, move |j| {
        let t = Instant::now();
        let batch = s.batch(0, &jobs[j]).expect("crops");
        busy.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        batch.count()
    });
    let crops = loader.map(|r| r.expect("loader job")).sum();
    Pass {
        crops,
        wall: started.elapsed().as_secs_f64(),
        busy: busy_ns.load(Ordering::Relaxed) as f64 * 1e-9,
        reads: diff_stats(stats(sampler), before),
    }
}

/// Crops/s of each configuration, for the closing figures.
struct Row {
    layout: &'static str,
    augment: bool,
    cold: bool,
    per_workers: [f64; 2],
}

fn run_layout((name, layout): &(&'static str, Caches), rows: &mut Vec<Row>) {
    let crops = CropConfig::default();
    for augment in [true, false] {
        let augmenter = open_augmenter(
            Some(&layout.noise),
            Some(&layout.rir),
            &AugmentConfig::default(),
        )
        .expect("augmenter");
        let sampler = Arc::new(
            CropSampler::new(
                AudioCache::open(&layout.speech).expect("speech cache"),
                augmenter,
                crops.clone(),
                7,
            )
            .with_augmentation_on_device(!augment),
        );
        let n = sampler.cache().len();
        let mut rng = stage_kit::rng::stream(11, "bench-loader-items");
        for cold in [true, false] {
            let mut per_workers = [0.0; 2];
            for workers in [1, 2] {
                // Fresh items for every pass, so a cold pass never finds a crop cached.
                let items: Vec<usize> = (0..ITEMS).map(|_| rng.gen_range(0..n)).collect();
                for path in [&layout.speech, &layout.noise] {
                    if cold { evict(path) } else { warm(path) }
                }
                let p = pass(&sampler, &items, workers);
                let rate = p.crops as f64 / p.wall;
                per_workers[workers - 1] = rate;
                let share = |x: f64| 100.0 * x / p.busy.max(1e-12);
                let rest = p.busy - p.reads.read_seconds - p.reads.lock_wait_seconds;
                println!(
                    "{:<9} {:<5} {:<4} {workers:>7} {rate:>9.0} {:>11.0} {:>7.1} {:>7.1} {:>9.1} {:>9.1}",
                    name,
                    if augment { "cpu" } else { "dev" },
                    if cold { "cold" } else { "warm" },
                    rate / workers as f64,
                    share(p.reads.read_seconds),
                    share(p.reads.lock_wait_seconds),
                    share(rest),
                    100.0 * p.busy / (p.wall * workers as f64),
                );
            }
            rows.push(Row {
                layout: name,
                augment,
                cold,
                per_workers,
            });
        }
    }
}

fn main() {
    let dir = stage_kit::reference::workspace_root().join("target/bench-loader");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench folder");
    let samples = speech_samples();
    let layouts = [
        generate(&dir, "schema1", true, samples),
        generate(&dir, "schema2", false, samples),
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average before timing: {}", load.trim());
    println!(
        "{ITEMS} items x {} crops per pass, batch {BATCH}, prefetch {PREFETCH}\n",
        CropConfig::default().global_crops + CropConfig::default().local_crops
    );
    println!(
        "{:<9} {:<5} {:<4} {:>7} {:>9} {:>11} {:>7} {:>7} {:>9} {:>9}",
        "layout",
        "aug",
        "data",
        "workers",
        "crops/s",
        "per worker",
        "read%",
        "lock%",
        "rest%",
        "busy%"
    );
    let mut rows = Vec::new();
    for layout in &layouts {
        run_layout(layout, &mut rows);
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("\n1 -> 2 workers (goal >= 1.8x on 2 cores):");
    for r in &rows {
        println!(
            "  {:<8} aug {:<3} {:<4}  {:>5.2}x",
            r.layout,
            if r.augment { "cpu" } else { "dev" },
            if r.cold { "cold" } else { "warm" },
            r.per_workers[1] / r.per_workers[0]
        );
    }
    let crops = CropConfig::default();
    let samples = VOXCELEB2_DEV / EPOCH_SECONDS;
    let need = samples * (crops.global_crops + crops.local_crops) as f64;
    println!(
        "\nvoxceleb recipe, one epoch of VoxCeleb2-dev in {:.0} min on one GPU: {samples:.0} samples/s, {need:.0} crops/s",
        EPOCH_SECONDS / 60.0
    );
    for r in rows.iter().filter(|r| r.layout == "schema2") {
        let per_core = r.per_workers[0];
        println!(
            "  augmentation {:<10} {:<4}: {per_core:>6.0} crops/s per core -> {:>5.1} loader cores",
            if r.augment { "on the CPU" } else { "on device" },
            if r.cold { "cold" } else { "warm" },
            need / per_core
        );
    }
}
